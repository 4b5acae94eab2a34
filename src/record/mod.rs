//! Preparing testmon's database before a run and recording the run in it afterwards.
//! The supervisor is the only writer; workers only read the main datafile.

pub(crate) mod recover;

use std::collections::HashMap;
use std::path::PathBuf;

use anyhow::{Context, Result};

use crate::db::{self, EnvironmentRow, Semantics};
use crate::probe::Testmon;
use crate::shard::{stamp::Stamp, ShardRun};

pub(crate) struct Prepared {
    pub(crate) env: EnvironmentRow,
    /// testmon's "new DB".
    pub(crate) created: bool,
    pub(crate) durations: HashMap<String, f64>,
    /// The files testmon tracks for the environment (relative to the rootdir), when asked.
    pub(crate) tracked: Vec<String>,
}

/// Opens or creates the datafile and fetches or creates this run's environment row.
/// `tracked`: also read the files testmon tracks (for the no-op state; empty otherwise).
pub(crate) fn prepare(tm: &Testmon, tracked: bool) -> Result<Prepared> {
    let mut opened = db::open_main(&tm.datafile, tm.data_version)?;
    let env = db::fetch_or_create_environment(
        &mut opened.conn,
        &tm.environment,
        &tm.system_packages,
        &tm.python_version,
        Semantics::for_data_version(tm.data_version),
    )
    .context("preparing testmon's environment")?;
    db::touch_survey_date(&opened.conn, today())?;
    let durations = db::durations(&opened.conn, env.id)?;
    let tracked = if tracked {
        db::tracked_files(&opened.conn, env.id)?
    } else {
        Vec::new()
    };
    close(opened.conn)?;
    Ok(Prepared {
        env,
        created: opened.created,
        durations,
        tracked,
    })
}

/// After a completed run: the tests testmon would select again with nothing changed
/// (failing, not yet run, and those of `tests` without a row: never run, deselected by
/// pytest), and the files it tracks.
pub(crate) fn settled(
    tm: &Testmon,
    env: &EnvironmentRow,
    tests: &[String],
) -> Result<(Vec<String>, Vec<String>)> {
    let conn = db::open_main(&tm.datafile, tm.data_version)?.conn;
    let mut failing = db::reselected(&conn, env.id, &hex(&tm.placeholder_checksums)?)?;
    let known: std::collections::HashSet<String> =
        db::test_names(&conn, env.id)?.into_iter().collect();
    failing.extend(tests.iter().filter(|t| !known.contains(*t)).cloned());
    let tracked = db::tracked_files(&conn, env.id)?;
    close(conn)?;
    Ok((failing, tracked))
}

/// What a run leaves for the record.
pub(crate) struct RunRecord<'a> {
    /// testmon's end-of-collection sync, when a worker reported one.
    pub(crate) sync: Option<&'a [String]>,
    /// The tests this run was to run, in testmon's order.
    pub(crate) run_list: &'a [String],
    /// Every selected test in testmon's order (with `--shard`, all shards' tests; else
    /// `run_list`): the batches in which one process would have written them.
    pub(crate) selected: &'a [String],
    pub(crate) spools: &'a [PathBuf],
    /// Tests whose worker died under them.
    pub(crate) crashed: &'a [String],
    /// With `--shard`: the stamp that tells `merge` what this shard ran.
    pub(crate) shard: Option<&'a ShardRun>,
}

/// Records the run (returns how many tests the spools held): testmon's end-of-collection
/// sync, every spool, the tests whose worker died under them marked failed, then the
/// statistics and the vacuum, and a shard's stamp. With `collect` off (testmon only
/// selects), nothing is written; the file is only checkpointed.
pub(crate) fn record(tm: &Testmon, env: EnvironmentRow, run: &RunRecord) -> Result<usize> {
    let mut conn = db::open_main(&tm.datafile, tm.data_version)?.conn;
    let mut merged = 0;
    if tm.collect {
        let mut dropped = Vec::new();
        if let Some(collected) = run.sync {
            let placeholder = hex(&tm.placeholder_checksums)?;
            dropped = db::sync_tests(&mut conn, env.id, collected, run.run_list, &placeholder)
                .context("syncing collected tests")?;
        }
        // A worker that died before testmon made its spool leaves none, or an empty file.
        let spools: Vec<PathBuf> = run
            .spools
            .iter()
            .filter(|p| p.metadata().is_ok_and(|m| m.len() > 0))
            .cloned()
            .collect();
        // A shard keeps the fingerprints as testmon computed them: `merge` chooses their rows
        // over every shard's tests at once, as one process would have.
        let batches = match run.shard {
            Some(_) => db::Batches::verbatim(),
            None => db::Batches::new(run.selected, tm.batch_size),
        };
        merged = db::merge_spools(&mut conn, &spools, env.id, &batches)?;
        db::mark_failed(&mut conn, env.id, run.crashed).context("marking crashed tests failed")?;
        db::finish_execution(&mut conn, env.id, tm.select).context("finishing the execution")?;
        if let Some(shard) = run.shard {
            Stamp::new(
                shard.shard,
                &shard.base,
                tm,
                run.selected,
                run.run_list,
                dropped,
            )
            .write(&conn)?;
        }
    }
    close(conn)?;
    Ok(merged)
}

/// Leaves one self-contained file: the WAL checkpointed into it and removed.
fn close(conn: rusqlite::Connection) -> Result<()> {
    conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
    conn.close()
        .map_err(|(_, err)| err)
        .context("closing the datafile")
}

fn hex(text: &str) -> Result<Vec<u8>> {
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2).unwrap_or("zz"), 16))
        .collect::<Result<_, _>>()
        .context("reading the probe's placeholder checksums")
}

/// Days since 1970-01-01, UTC.
fn today() -> i64 {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    (secs / 86_400) as i64
}
