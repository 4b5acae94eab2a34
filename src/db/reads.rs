//! What the supervisor reads from testmon's data before a run.

use std::collections::HashMap;

use anyhow::Result;
use rusqlite::Connection;

/// testmon's recorded duration of every test of the environment that has one.
pub(crate) fn durations(conn: &Connection, env_id: i64) -> Result<HashMap<String, f64>> {
    let mut stmt = conn.prepare(
        "SELECT test_name, duration FROM test_execution
         WHERE environment_id = ? AND duration IS NOT NULL",
    )?;
    let rows = stmt.query_map([env_id], |r| {
        Ok((r.get::<_, String>(0)?, r.get::<_, f64>(1)?))
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// The files testmon tracks for the environment (its `DB.filenames`): what its no-change
/// check reads, and what its header counts as "unchanged files" when nothing changed.
pub(crate) fn tracked_files(conn: &Connection, env_id: i64) -> Result<Vec<String>> {
    let mut stmt = conn.prepare(
        "SELECT DISTINCT f.filename
         FROM file_fp f, test_execution_file_fp te_ffp, test_execution te
         WHERE te.id = te_ffp.test_execution_id AND te_ffp.fingerprint_id = f.id
           AND te.environment_id = ?",
    )?;
    let rows = stmt.query_map([env_id], |r| r.get::<_, String>(0))?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// The names of the environment's recorded tests.
pub(crate) fn test_names(conn: &Connection, env_id: i64) -> Result<Vec<String>> {
    let mut stmt = conn.prepare("SELECT test_name FROM test_execution WHERE environment_id = ?")?;
    let rows = stmt.query_map([env_id], |r| r.get::<_, String>(0))?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// The tests of the environment testmon selects again whatever changes: recorded as
/// failing, or not yet run (a placeholder fingerprint, "0match", that never matches: a test
/// collected but deselected, one whose fingerprints testmon could not compute).
pub(crate) fn reselected(
    conn: &Connection,
    env_id: i64,
    placeholder: &[u8],
) -> Result<Vec<String>> {
    let mut stmt = conn.prepare(
        "SELECT test_name FROM test_execution WHERE environment_id = ?1 AND failed = 1
         UNION
         SELECT te.test_name
         FROM test_execution te, test_execution_file_fp te_ffp, file_fp f
         WHERE te.environment_id = ?1 AND te.id = te_ffp.test_execution_id
           AND te_ffp.fingerprint_id = f.id
           AND (f.fsha IS NULL OR f.method_checksums = ?2)",
    )?;
    let rows = stmt.query_map(rusqlite::params![env_id, placeholder], |r| {
        r.get::<_, String>(0)
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}
