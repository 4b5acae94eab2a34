//! Opening (or creating) the main datafile, as testmon's `DB.__init__` does, without ever
//! touching a file that is not a SQLite database.

use std::fs;
use std::io::Read;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use rusqlite::Connection;

use super::schema_sql;
use crate::exit::Fatal;

pub(crate) struct Opened {
    pub(crate) conn: Connection,
    /// The file was created now, or recreated because it held another testmon's data
    /// version (testmon's "new DB").
    pub(crate) created: bool,
}

pub(crate) const SQLITE_MAGIC: &[u8; 16] = b"SQLite format 3\0";

/// A file's first bytes, as many as SQLite's header string has (fewer for a shorter file).
pub(crate) fn head(path: &Path) -> std::io::Result<Vec<u8>> {
    let mut head = Vec::with_capacity(SQLITE_MAGIC.len());
    fs::File::open(path)?
        .take(SQLITE_MAGIC.len() as u64)
        .read_to_end(&mut head)?;
    Ok(head)
}

/// Opens the datafile read-write with testmon's connection options; creates it with the
/// schema of `data_version` when missing; replaces it, as testmon does, when it holds
/// another data version.
pub(crate) fn open_main(path: &Path, data_version: i64) -> Result<Opened> {
    let schema = schema_sql(data_version)
        .ok_or_else(|| Fatal::Usage(format!("unsupported testmon data version {data_version}")))?;
    check_usable(path)?;
    let existed = path.exists();
    let conn = connect(path)?;
    let stored: i64 = conn
        .query_row("PRAGMA user_version", [], |row| row.get(0))
        .map_err(|err| not_a_database(path, &err))?;
    if existed && stored == data_version {
        return Ok(Opened {
            conn,
            created: false,
        });
    }
    let conn = if existed {
        // testmon removes a datafile of another data version and starts afresh.
        drop(conn);
        for suffix in ["", "-wal", "-shm"] {
            let file = format!("{}{suffix}", path.display());
            if Path::new(&file).exists() {
                fs::remove_file(&file).with_context(|| format!("removing {file}"))?;
            }
        }
        connect(path)?
    } else {
        conn
    };
    conn.execute_batch(schema)
        .context("creating testmon's tables")?;
    conn.execute_batch(&format!("PRAGMA user_version = {data_version}"))?;
    Ok(Opened {
        conn,
        created: true,
    })
}

fn connect(path: &Path) -> Result<Connection> {
    let conn = Connection::open(path).with_context(|| format!("opening {}", path.display()))?;
    conn.busy_timeout(Duration::from_secs(60))?;
    conn.query_row("PRAGMA journal_mode = WAL", [], |_| Ok(()))
        .map_err(|err| not_a_database(path, &err))?;
    conn.execute_batch("PRAGMA foreign_keys = TRUE; PRAGMA recursive_triggers = TRUE;")?;
    Ok(conn)
}

/// Refuses a datafile path that cannot hold a database, before SQLite touches it.
pub(crate) fn check_usable(path: &Path) -> Result<()> {
    if path.is_dir() {
        return Err(Fatal::Usage(format!("datafile {} is a directory", path.display())).into());
    }
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() && !parent.is_dir() => {
            return Err(Fatal::Usage(format!(
                "datafile {}: directory {} does not exist",
                path.display(),
                parent.display()
            ))
            .into());
        }
        _ => {}
    }
    if path.exists() {
        let head = head(path).with_context(|| format!("reading {}", path.display()))?;
        if !head.is_empty() && head.as_slice() != SQLITE_MAGIC.as_slice() {
            return Err(Fatal::Usage(format!(
                "datafile {} is not a SQLite database; left as it is",
                path.display()
            ))
            .into());
        }
    }
    Ok(())
}

fn not_a_database(path: &Path, err: &rusqlite::Error) -> anyhow::Error {
    Fatal::Usage(format!("datafile {} cannot be used: {err}", path.display())).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creates_then_reopens() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(".testmondata");
        let first = open_main(&path, 14).unwrap();
        assert!(first.created);
        drop(first);
        let second = open_main(&path, 14).unwrap();
        assert!(!second.created);
        let version: i64 = second
            .conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(version, 14);
    }

    #[test]
    fn other_data_version_is_replaced_as_testmon_does() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(".testmondata");
        drop(open_main(&path, 13).unwrap());
        let reopened = open_main(&path, 14).unwrap();
        assert!(reopened.created);
    }

    #[test]
    fn not_sqlite_is_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(".testmondata");
        fs::write(&path, "not a database at all").unwrap();
        let err = open_main(&path, 14).err().unwrap();
        assert_eq!(crate::exit::code_of(&err), crate::exit::USAGE_ERROR);
        assert_eq!(fs::read_to_string(&path).unwrap(), "not a database at all");
    }

    #[test]
    fn directory_and_missing_parent_are_usage_errors() {
        let dir = tempfile::tempdir().unwrap();
        for path in [
            dir.path().to_path_buf(),
            dir.path().join("missing/.testmondata"),
        ] {
            let err = open_main(&path, 14).err().unwrap();
            assert_eq!(
                crate::exit::code_of(&err),
                crate::exit::USAGE_ERROR,
                "{path:?}"
            );
        }
    }
}
