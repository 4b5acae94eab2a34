//! pytest's exit codes, which testmon-run uses as its own, and how a run's outcome maps to one.

use thiserror::Error;

/// All selected tests passed, or testmon deselected every test.
pub(crate) const OK: u8 = 0;
/// Some tests failed or errored.
pub(crate) const TESTS_FAILED: u8 = 1;
/// The run was interrupted (Ctrl-C, SIGTERM) or collection failed.
pub(crate) const INTERRUPTED: u8 = 2;
/// An internal error: a worker crashed, the database could not be written, ...
pub(crate) const INTERNAL_ERROR: u8 = 3;
/// A usage error: bad testmon-run or pytest arguments, a datafile that cannot be used.
pub(crate) const USAGE_ERROR: u8 = 4;
/// No tests were collected.
pub(crate) const NO_TESTS_COLLECTED: u8 = 5;

/// An error that ends the run with a documented exit code and a one-line message.
#[derive(Debug, Error)]
pub(crate) enum Fatal {
    #[error("{0}")]
    Usage(String),
    #[error("{0}")]
    Internal(String),
    /// pytest itself ended the probe with this code; its own message was already shown.
    #[error("pytest exited with code {0}")]
    Pytest(u8),
}

impl Fatal {
    pub(crate) fn code(&self) -> u8 {
        match self {
            Fatal::Usage(_) => USAGE_ERROR,
            Fatal::Internal(_) => INTERNAL_ERROR,
            Fatal::Pytest(code) => *code,
        }
    }
}

/// The exit code of an error from `run`: a `Fatal` carries its own, anything else is internal.
pub(crate) fn code_of(error: &anyhow::Error) -> u8 {
    error
        .chain()
        .find_map(|cause| cause.downcast_ref::<Fatal>())
        .map_or(INTERNAL_ERROR, Fatal::code)
}

/// What a run ended with, in pytest's precedence.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Outcome {
    /// Interrupted, or stopped by errors during collection (pytest's exit 2).
    pub(crate) interrupted: bool,
    pub(crate) internal_error: bool,
    pub(crate) usage_error: bool,
    pub(crate) failures: bool,
    pub(crate) tests_run: usize,
    pub(crate) deselected_by_testmon: bool,
}

impl Outcome {
    /// pytest's exit code for this outcome.
    pub(crate) fn exit_code(&self) -> u8 {
        if self.usage_error {
            USAGE_ERROR
        } else if self.internal_error {
            INTERNAL_ERROR
        } else if self.interrupted {
            INTERRUPTED
        } else if self.failures {
            TESTS_FAILED
        } else if self.tests_run == 0 && !self.deselected_by_testmon {
            NO_TESTS_COLLECTED
        } else {
            OK
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn precedence_follows_pytest() {
        let base = Outcome {
            tests_run: 3,
            ..Outcome::default()
        };
        assert_eq!(base.exit_code(), OK);
        assert_eq!(
            Outcome {
                failures: true,
                ..base
            }
            .exit_code(),
            TESTS_FAILED
        );
        assert_eq!(
            Outcome {
                failures: true,
                interrupted: true,
                ..base
            }
            .exit_code(),
            INTERRUPTED
        );
        assert_eq!(
            Outcome {
                internal_error: true,
                interrupted: true,
                ..base
            }
            .exit_code(),
            INTERNAL_ERROR
        );
        assert_eq!(
            Outcome {
                tests_run: 0,
                ..base
            }
            .exit_code(),
            NO_TESTS_COLLECTED
        );
        assert_eq!(
            Outcome {
                tests_run: 0,
                deselected_by_testmon: true,
                ..base
            }
            .exit_code(),
            OK
        );
    }

    #[test]
    fn fatal_codes_survive_context() {
        let err = anyhow::Error::new(Fatal::Usage("bad".into())).context("while probing");
        assert_eq!(code_of(&err), USAGE_ERROR);
        assert_eq!(code_of(&anyhow::anyhow!("io")), INTERNAL_ERROR);
    }
}
