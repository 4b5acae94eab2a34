//! The record a shard leaves in its datafile (testmon's `metadata` table, under a key of
//! testmon-run's own): which shard it was, the datafile it started from, the environment,
//! the whole selection in testmon's order and its own share of it. `merge` reads it.

use std::io::Read;
use std::path::Path;

use anyhow::{Context, Result};
use rusqlite::Connection;
use serde::{Deserialize, Serialize};

use crate::db::metadata;

/// The `metadata.dataid` of the stamp.
pub(crate) const DATAID: &str = "testmon-run:shard";
const FORMAT: u32 = 1;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Stamp {
    pub(crate) format: u32,
    /// 1-based.
    pub(crate) index: usize,
    pub(crate) total: usize,
    /// The datafile every shard started from: `base_id`.
    pub(crate) base: String,
    pub(crate) environment: String,
    pub(crate) system_packages: String,
    pub(crate) python_version: String,
    pub(crate) data_version: i64,
    /// testmon's TEST_BATCH_SIZE, for the fingerprint rows' choice.
    pub(crate) batch_size: usize,
    /// Every selected test (all shards), in testmon's order.
    pub(crate) selected: Vec<String>,
    /// This shard's tests: the merge takes their records from this file.
    pub(crate) share: Vec<String>,
    /// Tests the end-of-collection sync forgot (no longer collected).
    pub(crate) dropped: Vec<String>,
}

impl Stamp {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        shard: super::Shard,
        base: &str,
        tm: &crate::probe::Testmon,
        selected: &[String],
        share: &[String],
        dropped: Vec<String>,
    ) -> Stamp {
        Stamp {
            format: FORMAT,
            index: shard.index,
            total: shard.total,
            base: base.to_string(),
            environment: tm.environment.clone(),
            system_packages: tm.system_packages.clone(),
            python_version: tm.python_version.clone(),
            data_version: tm.data_version,
            batch_size: tm.batch_size,
            selected: selected.to_vec(),
            share: share.to_vec(),
            dropped,
        }
    }

    pub(crate) fn write(&self, conn: &Connection) -> Result<()> {
        metadata::set(conn, DATAID, &serde_json::to_string(self)?)
            .context("writing the shard's record")
    }

    /// The stamp in `conn`'s datafile: None when there is none; an error when it is not one
    /// this version understands.
    pub(crate) fn read(conn: &Connection) -> Result<Option<Stamp>> {
        let Some(text) = metadata::get(conn, DATAID)? else {
            return Ok(None);
        };
        let stamp: Stamp = serde_json::from_str(&text)
            .ok()
            .filter(|s: &Stamp| s.format == FORMAT)
            .context("its shard record is of another testmon-run version")?;
        Ok(Some(stamp))
    }
}

/// Identifies a datafile by its content (with its `-wal`, when there is one): FNV-1a, 64
/// bits, and the length. "none" when there is no file.
pub(crate) fn base_id(datafile: &Path) -> Result<String> {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut length: u64 = 0;
    let mut found = false;
    for path in [datafile.to_path_buf(), wal_of(datafile)] {
        let mut file = match std::fs::File::open(&path) {
            Ok(file) => file,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => continue,
            Err(err) => return Err(err).with_context(|| format!("reading {}", path.display())),
        };
        found = true;
        let mut buf = vec![0u8; 1 << 16];
        loop {
            let n = file
                .read(&mut buf)
                .with_context(|| format!("reading {}", path.display()))?;
            if n == 0 {
                break;
            }
            length += n as u64;
            for &b in &buf[..n] {
                hash ^= u64::from(b);
                hash = hash.wrapping_mul(0x0100_0000_01b3);
            }
        }
    }
    Ok(if found {
        format!("{hash:016x}-{length}")
    } else {
        "none".into()
    })
}

fn wal_of(datafile: &Path) -> std::path::PathBuf {
    let mut name = datafile.as_os_str().to_os_string();
    name.push("-wal");
    name.into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_base_is_its_content() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a");
        assert_eq!(base_id(&a).unwrap(), "none");
        std::fs::write(&a, b"same").unwrap();
        let b = dir.path().join("b");
        std::fs::write(&b, b"same").unwrap();
        assert_eq!(base_id(&a).unwrap(), base_id(&b).unwrap());
        std::fs::write(dir.path().join("b-wal"), b"more").unwrap();
        assert_ne!(base_id(&a).unwrap(), base_id(&b).unwrap());
        std::fs::write(&a, b"other").unwrap();
        assert_ne!(
            base_id(&a).unwrap(),
            base_id(&dir.path().join("c")).unwrap()
        );
    }
}
