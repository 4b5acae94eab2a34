//! `testmon-run merge --into DEST SHARD...`.

use anyhow::Result;

use crate::cli::MergeConfig;
use crate::exit::Fatal;

pub(crate) fn run(_config: &MergeConfig) -> Result<u8> {
    Err(Fatal::Internal("not built yet".into()).into())
}
