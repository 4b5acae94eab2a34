//! `testmon-run why -- COMMAND`: why testmon selects what it selects, without running tests.

use anyhow::Result;

use crate::cli::Config;
use crate::exit::Fatal;

/// Prints the explanation; returns the exit code.
pub(crate) fn run(_config: &Config) -> Result<u8> {
    Err(Fatal::Internal("`testmon-run why` is not built yet".into()).into())
}
