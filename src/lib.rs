//! testmon-run: pytest-testmon's test selection on N parallel pytest workers.
//!
//! One run: probe → prepare → spawn → supervise → record → report, the run directory
//! removed on the way out (see `app`).

mod app;
mod artifacts;
mod atomic;
mod cli;
mod db;
mod exit;
#[cfg(test)]
mod fuzz;
mod noop;
mod probe;
mod pycommand;
mod record;
mod report;
mod run;
mod shard;
pub mod ui;
mod why;

pub use app::main_with_args;

/// What the integration tests need of the worker protocol: its version.
pub mod protocol {
    pub use crate::run::protocol::PROTOCOL;
}
