//! Merging the workers' spools — private databases in testmon's own format — into the main
//! datafile, one transaction per spool.
//!
//! Which `file_fp` row a test's fingerprint points to follows testmon's
//! `fetch_or_create_file_fp`, as a single process running the same tests in the same order
//! would have called it: fingerprints are written in batches of `TEST_BATCH_SIZE` tests; within
//! a batch a (filename, fsha, method_checksums) row is created once and cached; a row that
//! already exists makes testmon's INSERT fail and fall back to the first row with that
//! filename and those checksums (SQLite's index order: the lowest fsha), which may be an
//! older row with a stale fsha.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};

type Triple = (String, Option<String>, Vec<u8>);

/// The batch in which a single process would have written each test's fingerprints.
pub struct Batches {
    of_test: HashMap<String, usize>,
}

impl Batches {
    /// `run_list` in testmon's order; `batch_size` is the installed testmon's TEST_BATCH_SIZE.
    pub fn new(run_list: &[String], batch_size: usize) -> Batches {
        let size = batch_size.max(1);
        let of_test = run_list
            .iter()
            .enumerate()
            .map(|(i, t)| (t.clone(), i / size))
            .collect();
        Batches { of_test }
    }

    fn of(&self, test: &str) -> usize {
        self.of_test.get(test).copied().unwrap_or(0)
    }
}

/// Merges every spool; returns how many tests they recorded.
pub fn merge_spools(
    conn: &mut Connection,
    spools: &[PathBuf],
    env_id: i64,
    batches: &Batches,
) -> Result<usize> {
    let watermark: i64 =
        conn.query_row("SELECT coalesce(max(id), 0) FROM file_fp", [], |r| r.get(0))?;
    let mut first_use: HashMap<Triple, usize> = HashMap::new();
    for spool in spools {
        for (triple, test) in spool_fingerprints(spool, env_id)? {
            let batch = batches.of(&test);
            first_use
                .entry(triple)
                .and_modify(|b| *b = (*b).min(batch))
                .or_insert(batch);
        }
    }
    let mut merged = 0;
    for spool in spools {
        conn.execute("ATTACH DATABASE ? AS spool", [spool.to_string_lossy()])
            .with_context(|| format!("attaching spool {}", spool.display()))?;
        let result = merge_attached(conn, env_id, watermark, batches, &first_use);
        conn.execute_batch("DETACH DATABASE spool")?;
        merged += result.with_context(|| format!("merging spool {}", spool.display()))?;
    }
    Ok(merged)
}

/// Every (fingerprint, test) pair a spool recorded.
fn spool_fingerprints(spool: &Path, env_id: i64) -> Result<Vec<(Triple, String)>> {
    let conn =
        Connection::open(spool).with_context(|| format!("opening spool {}", spool.display()))?;
    let has_tables: i64 = conn.query_row(
        "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'test_execution'",
        [],
        |r| r.get(0),
    )?;
    if has_tables == 0 {
        return Ok(Vec::new());
    }
    let mut stmt = conn.prepare(
        "SELECT f.filename, f.fsha, f.method_checksums, te.test_name
         FROM test_execution te
         JOIN test_execution_file_fp l ON l.test_execution_id = te.id
         JOIN file_fp f ON f.id = l.fingerprint_id
         WHERE te.environment_id = ?",
    )?;
    let rows = stmt.query_map([env_id], |r| {
        Ok(((r.get(0)?, r.get(1)?, r.get(2)?), r.get(3)?))
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

fn merge_attached(
    conn: &mut Connection,
    env_id: i64,
    watermark: i64,
    batches: &Batches,
    first_use: &HashMap<Triple, usize>,
) -> Result<usize> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let has_tables: i64 = tx.query_row(
        "SELECT count(*) FROM spool.sqlite_master WHERE type = 'table' AND name = 'test_execution'",
        [],
        |r| r.get(0),
    )?;
    if has_tables == 0 {
        return Ok(0);
    }
    // This environment's rows for the spool's tests are replaced.
    tx.execute(
        "DELETE FROM main.test_execution_file_fp WHERE test_execution_id IN
           (SELECT te.id FROM main.test_execution te JOIN spool.test_execution s
              ON s.test_name = te.test_name AND s.environment_id = te.environment_id
            WHERE te.environment_id = ?)",
        [env_id],
    )?;
    tx.execute(
        "DELETE FROM main.test_execution WHERE environment_id = ?1
           AND test_name IN (SELECT test_name FROM spool.test_execution WHERE environment_id = ?1)",
        [env_id],
    )?;
    let mut tests: HashMap<i64, (String, i64)> = HashMap::new();
    {
        let mut read = tx.prepare(
            "SELECT id, test_name, duration, failed, forced FROM spool.test_execution
             WHERE environment_id = ? ORDER BY id",
        )?;
        let mut insert = tx.prepare(
            "INSERT INTO main.test_execution (environment_id, test_name, duration, failed, forced)
             VALUES (?, ?, ?, ?, ?)",
        )?;
        let mut rows = read.query([env_id])?;
        while let Some(row) = rows.next()? {
            let spool_id: i64 = row.get(0)?;
            let name: String = row.get(1)?;
            insert.execute(params![
                env_id,
                name,
                row.get::<_, Option<f64>>(2)?,
                row.get::<_, Option<i64>>(3)?,
                row.get::<_, Option<i64>>(4)?
            ])?;
            tests.insert(spool_id, (name, tx.last_insert_rowid()));
        }
    }
    let mut rows = FileFpRows::new(&tx, watermark)?;
    {
        let mut links = tx.prepare(
            "SELECT l.test_execution_id, f.filename, f.fsha, f.method_checksums, f.mtime
             FROM spool.test_execution_file_fp l JOIN spool.file_fp f ON f.id = l.fingerprint_id",
        )?;
        let mut link = tx.prepare("INSERT INTO main.test_execution_file_fp VALUES (?, ?)")?;
        let mut cursor = links.query([])?;
        while let Some(row) = cursor.next()? {
            let Some((name, te_id)) = tests.get(&row.get::<_, i64>(0)?) else {
                continue;
            };
            let triple: Triple = (row.get(1)?, row.get(2)?, row.get(3)?);
            let mtime: Option<f64> = row.get(4)?;
            let first = first_use.get(&triple).copied().unwrap_or(0);
            let fp_id = rows.for_test(&triple, mtime, batches.of(name) > first)?;
            link.execute(params![te_id, fp_id])?;
        }
    }
    drop(rows);
    tx.commit()?;
    Ok(tests.len())
}

/// The main `file_fp` row for a fingerprint, found or created the way testmon does.
struct FileFpRows<'t> {
    exact: rusqlite::Statement<'t>,
    fallback: rusqlite::Statement<'t>,
    insert: rusqlite::Statement<'t>,
    conn: &'t Connection,
    watermark: i64,
    cache: HashMap<(Triple, bool), i64>,
}

impl<'t> FileFpRows<'t> {
    fn new(conn: &'t Connection, watermark: i64) -> Result<FileFpRows<'t>> {
        Ok(FileFpRows {
            exact: conn.prepare(
                "SELECT min(id) FROM main.file_fp WHERE filename = ? AND fsha IS ? AND method_checksums = ?",
            )?,
            // testmon's own fallback query, verbatim, so SQLite picks the row testmon would.
            fallback: conn.prepare("SELECT id FROM main.file_fp WHERE filename = ? AND method_checksums = ?")?,
            insert: conn.prepare(
                "INSERT INTO main.file_fp (filename, method_checksums, mtime, fsha) VALUES (?, ?, ?, ?)",
            )?,
            conn,
            watermark,
            cache: HashMap::new(),
        })
    }

    /// `later_batch`: a single process would have written this test after the batch that
    /// first wrote this fingerprint, when the row already existed.
    fn for_test(&mut self, triple: &Triple, mtime: Option<f64>, later_batch: bool) -> Result<i64> {
        let key = (triple.clone(), later_batch);
        if let Some(&id) = self.cache.get(&key) {
            return Ok(id);
        }
        let (filename, fsha, checksums) = triple;
        let existing: Option<i64> = self
            .exact
            .query_row(params![filename, fsha, checksums], |r| r.get(0))
            .optional()?
            .flatten();
        let id = match existing {
            None => {
                self.insert
                    .execute(params![filename, checksums, mtime, fsha])?;
                let id = self.conn.last_insert_rowid();
                if later_batch && fsha.is_some() {
                    self.fallback(filename, checksums)?.unwrap_or(id)
                } else {
                    id
                }
            }
            // A NULL fsha never clashes in testmon (NULLs are distinct): reuse by content.
            Some(id) if fsha.is_none() => id,
            Some(id) if id <= self.watermark || later_batch => {
                self.fallback(filename, checksums)?.unwrap_or(id)
            }
            Some(id) => id,
        };
        self.cache.insert(key, id);
        Ok(id)
    }

    fn fallback(&mut self, filename: &str, checksums: &[u8]) -> Result<Option<i64>> {
        Ok(self
            .fallback
            .query_row(params![filename, checksums], |r| r.get(0))
            .optional()?)
    }
}
