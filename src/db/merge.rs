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

/// A `file_fp` row's content: filename, fsha, method_checksums.
pub(super) type Triple = (String, Option<String>, Vec<u8>);

/// The batch in which a single process would have written each test's fingerprints.
pub(crate) struct Batches {
    of_test: HashMap<String, usize>,
    /// Each fingerprint keeps a row of its own content (no batch rule): a shard's datafile,
    /// so that `merge` sees the fingerprints testmon computed and applies the batch rule
    /// over every shard's tests at once.
    verbatim: bool,
}

impl Batches {
    /// `run_list` in testmon's order; `batch_size` is the installed testmon's TEST_BATCH_SIZE.
    pub(crate) fn new(run_list: &[String], batch_size: usize) -> Batches {
        let size = batch_size.max(1);
        let of_test = run_list
            .iter()
            .enumerate()
            .map(|(i, t)| (t.clone(), i / size))
            .collect();
        Batches {
            of_test,
            verbatim: false,
        }
    }

    /// Every fingerprint points to the row of its own content (found or created).
    pub(crate) fn verbatim() -> Batches {
        Batches {
            of_test: HashMap::new(),
            verbatim: true,
        }
    }

    fn of(&self, test: &str) -> usize {
        self.of_test.get(test).copied().unwrap_or(0)
    }
}

/// Merges every spool; returns how many tests they recorded.
pub(crate) fn merge_spools(
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
            let fp_id = if batches.verbatim {
                rows.own(&triple, mtime)?
            } else {
                let first = first_use.get(&triple).copied().unwrap_or(0);
                rows.for_test(&triple, mtime, batches.of(name) > first)?
            };
            link.execute(params![te_id, fp_id])?;
        }
    }
    drop(rows);
    tx.commit()?;
    Ok(tests.len())
}

/// The main `file_fp` row for a fingerprint, found or created the way testmon does.
pub(super) struct FileFpRows<'t> {
    exact: rusqlite::Statement<'t>,
    fallback: rusqlite::Statement<'t>,
    insert: rusqlite::Statement<'t>,
    conn: &'t Connection,
    watermark: i64,
    cache: HashMap<(Triple, bool), i64>,
}

impl<'t> FileFpRows<'t> {
    /// `watermark`: the highest id before this run's results; rows up to it existed before.
    pub(super) fn new(conn: &'t Connection, watermark: i64) -> Result<FileFpRows<'t>> {
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
    pub(super) fn for_test(
        &mut self,
        triple: &Triple,
        mtime: Option<f64>,
        later_batch: bool,
    ) -> Result<i64> {
        let key = (triple.clone(), later_batch);
        if let Some(&id) = self.cache.get(&key) {
            return Ok(id);
        }
        let (filename, _, checksums) = triple;
        let id = match self.exact(triple)? {
            None => {
                let id = self.create(triple, mtime)?;
                if later_batch && triple.1.is_some() {
                    self.fallback(filename, checksums)?.unwrap_or(id)
                } else {
                    id
                }
            }
            // A NULL fsha never clashes in testmon (NULLs are distinct): reuse by content.
            Some(id) if triple.1.is_none() => id,
            Some(id) if id <= self.watermark || later_batch => {
                self.fallback(filename, checksums)?.unwrap_or(id)
            }
            Some(id) => id,
        };
        self.cache.insert(key, id);
        Ok(id)
    }

    /// The row of exactly this content, created when missing.
    fn own(&mut self, triple: &Triple, mtime: Option<f64>) -> Result<i64> {
        match self.exact(triple)? {
            Some(id) => Ok(id),
            None => self.create(triple, mtime),
        }
    }

    /// The first row of exactly this content.
    fn exact(&mut self, (filename, fsha, checksums): &Triple) -> Result<Option<i64>> {
        Ok(self
            .exact
            .query_row(params![filename, fsha, checksums], |r| r.get(0))
            .optional()?
            .flatten())
    }

    fn create(&mut self, (filename, fsha, checksums): &Triple, mtime: Option<f64>) -> Result<i64> {
        self.insert
            .execute(params![filename, checksums, mtime, fsha])?;
        Ok(self.conn.last_insert_rowid())
    }

    fn fallback(&mut self, filename: &str, checksums: &[u8]) -> Result<Option<i64>> {
        Ok(self
            .fallback
            .query_row(params![filename, checksums], |r| r.get(0))
            .optional()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::open_main;

    const ENV: i64 = 1;

    /// A datafile with this run's environment row.
    fn database(path: &Path) -> Connection {
        let conn = open_main(path, 14).unwrap().conn;
        conn.execute(
            "INSERT INTO environment VALUES (?, 'default', 'p', '3.11.7')",
            [ENV],
        )
        .unwrap();
        conn
    }

    /// A spool with tests `t0..tN`, each with one fingerprint of `a.py` (fsha, checksums).
    fn spool(dir: &Path, name: &str, tests: &[(&str, &str, &[u8])]) -> PathBuf {
        let path = dir.join(name);
        let conn = database(&path);
        for (test, fsha, checksums) in tests {
            conn.execute(
                "INSERT INTO test_execution (environment_id, test_name, duration, failed, forced)
                 VALUES (?, ?, 0.1, 0, NULL)",
                params![ENV, test],
            )
            .unwrap();
            let te = conn.last_insert_rowid();
            conn.execute(
                "INSERT OR IGNORE INTO file_fp (filename, method_checksums, fsha) VALUES ('a.py', ?, ?)",
                params![checksums, fsha],
            )
            .unwrap();
            let fp: i64 = conn
                .query_row(
                    "SELECT id FROM file_fp WHERE fsha = ? AND method_checksums = ?",
                    params![fsha, checksums],
                    |r| r.get(0),
                )
                .unwrap();
            conn.execute("INSERT INTO test_execution_file_fp VALUES (?, ?)", [te, fp])
                .unwrap();
        }
        path
    }

    fn fsha_of(conn: &Connection, test: &str) -> String {
        conn.query_row(
            "SELECT f.fsha FROM test_execution te JOIN test_execution_file_fp l ON l.test_execution_id = te.id
             JOIN file_fp f ON f.id = l.fingerprint_id WHERE te.test_name = ?",
            [test],
            |r| r.get(0),
        )
        .unwrap()
    }

    #[test]
    fn file_fp_rows_are_chosen_batch_by_batch_as_testmon_does() {
        let dir = tempfile::tempdir().unwrap();
        let mut main = database(&dir.path().join("main"));
        // An older row with the same checksums and a lower fsha, from an earlier run.
        main.execute(
            "INSERT INTO file_fp (filename, method_checksums, fsha) VALUES ('a.py', x'01', 'aaa')",
            [],
        )
        .unwrap();
        // Two workers; both ran tests whose a.py fingerprint is (new fsha "bbb", checksums 01).
        let spools = [
            spool(
                dir.path(),
                "s0",
                &[("t0", "bbb", &[1]), ("t3", "bbb", &[1])],
            ),
            spool(
                dir.path(),
                "s1",
                &[("t1", "bbb", &[1]), ("t2", "ccc", &[2])],
            ),
        ];
        let run_list: Vec<String> = ["t0", "t1", "t2", "t3"].map(String::from).to_vec();
        // Batches of 2: t0, t1 in batch 0; t2, t3 in batch 1.
        let merged = merge_spools(&mut main, &spools, ENV, &Batches::new(&run_list, 2)).unwrap();
        assert_eq!(merged, 4);
        // Batch 0 created the new row; batch 1 hit testmon's unique constraint and took the
        // first row with those checksums: the older, lower fsha.
        assert_eq!(fsha_of(&main, "t0"), "bbb");
        assert_eq!(fsha_of(&main, "t1"), "bbb");
        assert_eq!(fsha_of(&main, "t3"), "aaa");
        // Nothing older with its checksums: created.
        assert_eq!(fsha_of(&main, "t2"), "ccc");
        // One batch for everything: every test gets the new row.
        let mut again = database(&dir.path().join("main2"));
        merge_spools(&mut again, &spools, ENV, &Batches::new(&run_list, 250)).unwrap();
        assert_eq!(fsha_of(&again, "t3"), "bbb");
    }

    #[test]
    fn verbatim_keeps_each_fingerprints_own_row() {
        let dir = tempfile::tempdir().unwrap();
        let mut main = database(&dir.path().join("main"));
        main.execute(
            "INSERT INTO file_fp (filename, method_checksums, fsha) VALUES ('a.py', x'01', 'aaa')",
            [],
        )
        .unwrap();
        let spools = [spool(
            dir.path(),
            "s0",
            &[("t0", "bbb", &[1]), ("t3", "bbb", &[1])],
        )];
        merge_spools(&mut main, &spools, ENV, &Batches::verbatim()).unwrap();
        // The batch rule would have sent t3 (a later batch of 2) to the older row "aaa".
        assert_eq!(fsha_of(&main, "t0"), "bbb");
        assert_eq!(fsha_of(&main, "t3"), "bbb");
    }

    #[test]
    fn a_rerun_replaces_the_tests_rows() {
        let dir = tempfile::tempdir().unwrap();
        let mut main = database(&dir.path().join("main"));
        let first = spool(dir.path(), "s0", &[("t0", "aaa", &[1])]);
        let second = spool(dir.path(), "s1", &[("t0", "bbb", &[2])]);
        let batches = Batches::new(&["t0".to_string()], 250);
        merge_spools(&mut main, &[first], ENV, &batches).unwrap();
        merge_spools(&mut main, &[second], ENV, &batches).unwrap();
        let count: i64 = main
            .query_row("SELECT count(*) FROM test_execution", [], |r| r.get(0))
            .unwrap();
        assert_eq!(count, 1);
        assert_eq!(fsha_of(&main, "t0"), "bbb");
    }
}
