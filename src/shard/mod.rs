//! Beyond one machine: a CI job's share of the selected tests (`--shard K/M`), the record a
//! shard leaves in its datafile, and `testmon-run merge`, which makes the shards' datafiles
//! one again.

pub(crate) mod merge;
pub(crate) mod partition;
mod spec;

pub(crate) use spec::{acknowledge_bazel, Shard, ShardSpec};
