//! Beyond one machine: a CI job's share of the selected tests (`--shard K/M`), the record a
//! shard leaves in its datafile, and `testmon-run merge`, which makes the shards' datafiles
//! one again.

pub(crate) mod merge;
pub(crate) mod partition;
mod reports;
mod spec;
pub(crate) mod stamp;

pub(crate) use spec::{acknowledge_bazel, Shard, ShardSpec};

/// A shard's run: which shard, and the datafile it started from (`stamp::base_id`).
#[derive(Debug, Clone)]
pub(crate) struct ShardRun {
    pub(crate) shard: Shard,
    pub(crate) base: String,
}
