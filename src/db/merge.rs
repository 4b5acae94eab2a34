//! Merging one worker's spool — a private database in testmon's own format — into the main
//! datafile, in one transaction.

use std::path::Path;

use anyhow::{Context, Result};
use rusqlite::{params, Connection, TransactionBehavior};

/// How many tests a merged spool recorded.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Merged {
    pub tests: usize,
}

/// Replaces this environment's rows for every test the spool recorded with the spool's:
/// its `test_execution` rows, their links, and `file_fp` rows reused by content
/// (filename, fsha, method_checksums; NULL-safe) or created.
pub fn merge_spool(conn: &mut Connection, spool: &Path, env_id: i64) -> Result<Merged> {
    conn.execute("ATTACH DATABASE ? AS spool", [spool.to_string_lossy()])
        .with_context(|| format!("attaching spool {}", spool.display()))?;
    let result = merge_attached(conn, env_id);
    conn.execute_batch("DETACH DATABASE spool")?;
    result.with_context(|| format!("merging spool {}", spool.display()))
}

fn merge_attached(conn: &mut Connection, env_id: i64) -> Result<Merged> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let has_tables: i64 = tx.query_row(
        "SELECT count(*) FROM spool.sqlite_master WHERE type = 'table' AND name = 'test_execution'",
        [],
        |r| r.get(0),
    )?;
    if has_tables == 0 {
        return Ok(Merged::default());
    }
    tx.execute_batch(
        "CREATE TEMP TABLE IF NOT EXISTS merge_tests (test_name TEXT PRIMARY KEY);
         DELETE FROM merge_tests;",
    )?;
    let tests = tx.execute(
        "INSERT OR IGNORE INTO temp.merge_tests SELECT test_name FROM spool.test_execution
         WHERE environment_id = ?",
        [env_id],
    )?;
    tx.execute(
        "DELETE FROM main.test_execution_file_fp WHERE test_execution_id IN
           (SELECT te.id FROM main.test_execution te JOIN temp.merge_tests m ON m.test_name = te.test_name
            WHERE te.environment_id = ?)",
        [env_id],
    )?;
    tx.execute(
        "DELETE FROM main.test_execution WHERE environment_id = ?
           AND test_name IN (SELECT test_name FROM temp.merge_tests)",
        [env_id],
    )?;
    tx.execute(
        "INSERT INTO main.file_fp (filename, method_checksums, mtime, fsha)
         SELECT s.filename, s.method_checksums, max(s.mtime), s.fsha FROM spool.file_fp s
         WHERE NOT EXISTS (SELECT 1 FROM main.file_fp m WHERE m.filename = s.filename
                             AND m.fsha IS s.fsha AND m.method_checksums = s.method_checksums)
         GROUP BY s.filename, s.fsha, s.method_checksums",
        [],
    )?;
    tx.execute(
        "INSERT INTO main.test_execution (environment_id, test_name, duration, failed, forced)
         SELECT environment_id, test_name, duration, failed, forced FROM spool.test_execution
         WHERE environment_id = ? ORDER BY id",
        [env_id],
    )?;
    tx.execute(
        "INSERT INTO main.test_execution_file_fp (test_execution_id, fingerprint_id)
         SELECT mte.id,
                (SELECT min(mf.id) FROM main.file_fp mf WHERE mf.filename = sf.filename
                   AND mf.fsha IS sf.fsha AND mf.method_checksums = sf.method_checksums)
         FROM spool.test_execution ste
         JOIN spool.test_execution_file_fp sl ON sl.test_execution_id = ste.id
         JOIN spool.file_fp sf ON sf.id = sl.fingerprint_id
         JOIN main.test_execution mte ON mte.environment_id = ste.environment_id
                                      AND mte.test_name = ste.test_name
         WHERE ste.environment_id = ?",
        params![env_id],
    )?;
    tx.commit()?;
    Ok(Merged { tests })
}
