//! One environment's records of some tests, copied out of a datafile into a spool (a file in
//! testmon's own format) under another environment id: what `merge_spools` takes in. A
//! shard's datafile holds every test's record; the merge takes only its share's.

use std::path::Path;

use anyhow::{Context, Result};
use rusqlite::{params, Connection};

use super::open_main;

/// Copies the records of `tests` in environment `from_env` of `source` into a new spool at
/// `spool`, as environment `env_id`; returns how many tests had a record.
pub(crate) fn extract_tests(
    source: &Path,
    from_env: i64,
    tests: &[String],
    spool: &Path,
    data_version: i64,
    env_id: i64,
) -> Result<usize> {
    let conn = open_main(spool, data_version)?.conn;
    conn.execute(
        "INSERT INTO environment (id, environment_name, system_packages, python_version)
         VALUES (?, 'spool', '', '')",
        [env_id],
    )?;
    conn.execute("ATTACH DATABASE ? AS src", [source.to_string_lossy()])
        .with_context(|| format!("attaching {}", source.display()))?;
    conn.execute_batch("CREATE TEMP TABLE wanted (name TEXT PRIMARY KEY)")?;
    {
        let mut insert = conn.prepare("INSERT OR IGNORE INTO temp.wanted VALUES (?)")?;
        for test in tests {
            insert.execute([test])?;
        }
    }
    let copied = conn.execute(
        "INSERT INTO main.test_execution (id, environment_id, test_name, duration, failed, forced)
         SELECT te.id, ?, te.test_name, te.duration, te.failed, te.forced
         FROM src.test_execution te JOIN temp.wanted w ON w.name = te.test_name
         WHERE te.environment_id = ?",
        params![env_id, from_env],
    )?;
    conn.execute(
        "INSERT INTO main.file_fp (id, filename, method_checksums, mtime, fsha)
         SELECT DISTINCT f.id, f.filename, f.method_checksums, f.mtime, f.fsha
         FROM src.file_fp f JOIN src.test_execution_file_fp l ON l.fingerprint_id = f.id
         JOIN main.test_execution te ON te.id = l.test_execution_id",
        [],
    )?;
    conn.execute(
        "INSERT INTO main.test_execution_file_fp (test_execution_id, fingerprint_id)
         SELECT l.test_execution_id, l.fingerprint_id FROM src.test_execution_file_fp l
         JOIN main.test_execution te ON te.id = l.test_execution_id",
        [],
    )?;
    conn.execute_batch("DETACH DATABASE src")?;
    conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
    Ok(copied)
}

/// Forgets `tests` of environment `env_id` (their rows and links), in one transaction.
pub(crate) fn forget_tests(conn: &mut Connection, env_id: i64, tests: &[String]) -> Result<()> {
    let tx = conn.transaction()?;
    forget(&tx, env_id, tests)?;
    tx.commit()?;
    Ok(())
}

/// Forgets `tests` of environment `env_id`: their links, then their rows.
pub(super) fn forget(conn: &Connection, env_id: i64, tests: &[String]) -> Result<()> {
    {
        let mut unlink = conn.prepare(
            "DELETE FROM test_execution_file_fp WHERE test_execution_id IN
               (SELECT id FROM test_execution WHERE environment_id = ? AND test_name = ?)",
        )?;
        let mut delete =
            conn.prepare("DELETE FROM test_execution WHERE environment_id = ? AND test_name = ?")?;
        for name in tests {
            unlink.execute(params![env_id, name])?;
            delete.execute(params![env_id, name])?;
        }
    }
    Ok(())
}

/// testmon's vacuum: fingerprints no test refers to are removed.
pub(crate) fn vacuum_fingerprints(conn: &Connection) -> Result<()> {
    conn.execute(
        "DELETE FROM file_fp WHERE id NOT IN (SELECT DISTINCT fingerprint_id FROM test_execution_file_fp)",
        [],
    )?;
    Ok(())
}
