//! Merging one worker's spool — a private database in testmon's own format — into the main
//! datafile, in one transaction.

use std::path::Path;

use anyhow::{Context, Result};
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};

/// How many tests a merged spool recorded.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Merged {
    pub tests: usize,
}

/// The highest `file_fp` id before this run's results are merged: rows up to it existed
/// before the run, rows after it were created by the run.
pub fn file_fp_watermark(conn: &Connection) -> Result<i64> {
    Ok(conn.query_row("SELECT coalesce(max(id), 0) FROM file_fp", [], |r| r.get(0))?)
}

/// Replaces this environment's rows for every test the spool recorded with the spool's:
/// its `test_execution` rows, their links, and their `file_fp` rows, found or created the
/// way testmon's `fetch_or_create_file_fp` does (see `main_file_fp`).
pub fn merge_spool(
    conn: &mut Connection,
    spool: &Path,
    env_id: i64,
    watermark: i64,
) -> Result<Merged> {
    conn.execute("ATTACH DATABASE ? AS spool", [spool.to_string_lossy()])
        .with_context(|| format!("attaching spool {}", spool.display()))?;
    let result = merge_attached(conn, env_id, watermark);
    conn.execute_batch("DETACH DATABASE spool")?;
    result.with_context(|| format!("merging spool {}", spool.display()))
}

fn merge_attached(conn: &mut Connection, env_id: i64, watermark: i64) -> Result<Merged> {
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
         CREATE TEMP TABLE IF NOT EXISTS merge_fps (spool_id INTEGER PRIMARY KEY, main_id INTEGER);
         DELETE FROM merge_tests;
         DELETE FROM merge_fps;",
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
    map_file_fps(&tx, watermark)?;
    tx.execute(
        "INSERT INTO main.test_execution (environment_id, test_name, duration, failed, forced)
         SELECT environment_id, test_name, duration, failed, forced FROM spool.test_execution
         WHERE environment_id = ? ORDER BY id",
        [env_id],
    )?;
    tx.execute(
        "INSERT INTO main.test_execution_file_fp (test_execution_id, fingerprint_id)
         SELECT mte.id, m.main_id
         FROM spool.test_execution ste
         JOIN spool.test_execution_file_fp sl ON sl.test_execution_id = ste.id
         JOIN temp.merge_fps m ON m.spool_id = sl.fingerprint_id
         JOIN main.test_execution mte ON mte.environment_id = ste.environment_id
                                      AND mte.test_name = ste.test_name
         WHERE ste.environment_id = ?",
        params![env_id],
    )?;
    tx.commit()?;
    Ok(Merged { tests })
}

/// Maps every spool `file_fp` row to a main one.
fn map_file_fps(tx: &rusqlite::Transaction, watermark: i64) -> Result<()> {
    let mut spool_fps =
        tx.prepare("SELECT id, filename, fsha, method_checksums, mtime FROM spool.file_fp")?;
    let mut exact = tx.prepare(
        "SELECT min(id) FROM main.file_fp WHERE filename = ? AND fsha IS ? AND method_checksums = ?",
    )?;
    // testmon's own fallback query, verbatim, so SQLite picks the row testmon would.
    let mut testmon_fallback =
        tx.prepare("SELECT id FROM main.file_fp WHERE filename = ? AND method_checksums = ?")?;
    let mut insert = tx.prepare(
        "INSERT INTO main.file_fp (filename, method_checksums, mtime, fsha) VALUES (?, ?, ?, ?)",
    )?;
    let mut map = tx.prepare("INSERT INTO temp.merge_fps VALUES (?, ?)")?;
    let mut rows = spool_fps.query([])?;
    while let Some(row) = rows.next()? {
        let spool_id: i64 = row.get(0)?;
        let filename: String = row.get(1)?;
        let fsha: Option<String> = row.get(2)?;
        let checksums: Vec<u8> = row.get(3)?;
        let mtime: Option<f64> = row.get(4)?;
        let existing: Option<i64> = exact
            .query_row(params![filename, fsha, checksums], |r| r.get(0))
            .optional()?
            .flatten();
        let main_id = match existing {
            // testmon's INSERT fails on the unique triple and it falls back to the first
            // row with this filename and these checksums (index order: lowest fsha first).
            Some(id) if id <= watermark && fsha.is_some() => testmon_fallback
                .query_row(params![filename, checksums], |r| r.get(0))
                .optional()?
                .unwrap_or(id),
            // Created earlier in this run: testmon's per-batch cache returns that row.
            Some(id) => id,
            None => {
                insert.execute(params![filename, checksums, mtime, fsha])?;
                tx.last_insert_rowid()
            }
        };
        map.execute(params![spool_id, main_id])?;
    }
    Ok(())
}
