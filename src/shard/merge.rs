//! `testmon-run merge --into DEST SHARD...`: the shards' datafiles made one again, equal to
//! what one machine running every selected test would have left.
//!
//! Each shard's datafile holds the base's records, its own share's new ones and a stamp
//! (`stamp::Stamp`) saying which shard it was and what it started from. DEST (the base
//! itself, an earlier merge, or a new file) gets this run's environment row, loses the tests
//! the shards' sync forgot, and takes each shard's share's records — through the same spool
//! merge the workers' spools go through, with the batches of the whole selection, so the
//! fingerprint rows are the ones one process would have chosen. Merging a shard again
//! changes nothing. DEST is replaced atomically: a temporary copy is merged, then renamed.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::{Context, Result};
use rusqlite::{Connection, OpenFlags};

use crate::cli::MergeConfig;
use crate::db::{self, metadata, Semantics};
use crate::exit::{self, Fatal};
use crate::run::signals::interrupt_flag;
use crate::shard::stamp::{Stamp, DATAID};

/// A shard's datafile, checked.
struct Input {
    path: PathBuf,
    stamp: Stamp,
    /// Its environment row's id (the stamp's environment).
    env_id: i64,
}

pub(crate) fn run(config: &MergeConfig) -> Result<u8> {
    // Ctrl-C, SIGTERM, SIGHUP: noted, and the merge stops at its next step with its
    // temporary files removed and DEST as it was (exit 2).
    let stop = Stop::install()?;
    let mut inputs: Vec<Input> = Vec::new();
    for path in &config.datafiles {
        // A testmon datafile without a shard record: its shard stopped before recording
        // (killed by CI's timeout, say) and left the base as it was. Its tests keep their
        // base records, which select them again next time.
        match inspect(path)? {
            Some(input) => inputs.push(input),
            None => eprintln!(
                "testmon-run merge: warning: {} has no shard record (its shard did not record a run): skipped",
                path.display()
            ),
        }
    }
    if inputs.is_empty() {
        return Err(usage(
            "no shard datafile to merge: none of them has a shard record (the datafile of a `testmon-run --shard K/M` run)"
                .into(),
        ));
    }
    agree(&inputs)?;
    let first = inputs[0].stamp.clone();
    check_dest(&config.into, first.data_version)?;
    // Shards merged into DEST before (the same base run) are not merged again: merging
    // them again changes nothing.
    let before =
        Merged::read(&config.into)?.filter(|m| m.base == first.base && m.total == first.total);
    let done: BTreeSet<usize> = before
        .as_ref()
        .map(|m| m.shards.clone())
        .unwrap_or_default();
    let mut seen = BTreeSet::new();
    inputs.retain(|input| {
        let index = input.stamp.index;
        let again = done.contains(&index) || !seen.insert(index);
        if again {
            eprintln!(
                "testmon-run merge: shard {index}/{} ({}) is already merged: skipped",
                input.stamp.total,
                input.path.display()
            );
        }
        !again
    });
    if inputs.is_empty() {
        println!(
            "testmon-run merge: nothing to merge into {}: every shard given is in it",
            config.into.display()
        );
        return Ok(exit::OK);
    }
    let merged = Merged {
        base: first.base.clone(),
        total: first.total,
        shards: done
            .iter()
            .copied()
            .chain(inputs.iter().map(|i| i.stamp.index))
            .collect(),
    };
    let ran = match merge_into(&config.into, &inputs, &merged, &stop) {
        Err(err) if stop.requested() => {
            drop(err);
            eprintln!(
                "testmon-run merge: interrupted: {} left as it was",
                config.into.display()
            );
            return Ok(exit::INTERRUPTED);
        }
        other => other?,
    };
    if let Some((out, reports)) = &config.json_report {
        super::reports::merge(out, reports)?;
    }
    println!(
        "testmon-run merge: {} of {} shards ({} tests of {} selected) into {}",
        merged.shards.len(),
        first.total,
        ran,
        first.selected.len(),
        config.into.display()
    );
    Ok(exit::OK)
}

fn usage(text: String) -> anyhow::Error {
    Fatal::Usage(text).into()
}

/// Opens a datafile without writing it: read-write when it may (closing then removes the
/// `-wal`/`-shm` files a reader of a WAL database makes), else read-only.
fn open_quietly(path: &Path) -> rusqlite::Result<Connection> {
    Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_WRITE)
        .or_else(|_| Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY))
}

/// A SQLite file (or why not), by its first bytes.
fn check_sqlite(path: &Path) -> Result<()> {
    if path.is_dir() {
        return Err(usage(format!("{}: is a directory", path.display())));
    }
    let head = db::head(path).map_err(|err| match err.kind() {
        std::io::ErrorKind::NotFound => usage(format!("{}: no such file", path.display())),
        _ => usage(format!("{}: cannot be read: {err}", path.display())),
    })?;
    if head.as_slice() != db::SQLITE_MAGIC.as_slice() {
        return Err(usage(format!(
            "{} is not a SQLite database (not a testmon datafile)",
            path.display()
        )));
    }
    Ok(())
}

/// A shard's datafile, or None for a testmon datafile without a shard record.
fn inspect(path: &Path) -> Result<Option<Input>> {
    check_sqlite(path)?;
    let conn = open_quietly(path)
        .map_err(|err| usage(format!("{}: cannot be opened: {err}", path.display())))?;
    let data_version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(|err| usage(format!("{}: cannot be read: {err}", path.display())))?;
    if db::schema_sql(data_version).is_none() {
        return Err(usage(format!(
            "{} is testmon data version {data_version}: not a datafile of pytest-testmon 2.1 (13) or 2.2 (14)",
            path.display()
        )));
    }
    let has_metadata: i64 = conn.query_row(
        "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'metadata'",
        [],
        |r| r.get(0),
    )?;
    if has_metadata == 0 {
        return Err(usage(format!(
            "{} is not a testmon datafile (no metadata table)",
            path.display()
        )));
    }
    let Some(stamp) =
        Stamp::read(&conn).map_err(|err| usage(format!("{}: {err}", path.display())))?
    else {
        return Ok(None);
    };
    if stamp.data_version != data_version {
        return Err(usage(format!(
            "{}: its shard record is of data version {}, the file of {data_version}",
            path.display(),
            stamp.data_version
        )));
    }
    let env_id: i64 = conn
        .query_row(
            "SELECT id FROM environment WHERE environment_name = ? AND system_packages = ?
               AND python_version = ? ORDER BY id DESC",
            [
                &stamp.environment,
                &stamp.system_packages,
                &stamp.python_version,
            ],
            |r| r.get(0),
        )
        .map_err(|_| {
            usage(format!(
                "{}: the environment of its shard record ({:?}) is not in it",
                path.display(),
                stamp.environment
            ))
        })?;
    Ok(Some(Input {
        path: path.to_path_buf(),
        stamp,
        env_id,
    }))
}

/// The shards must come from one base run: the same data version, environment, base
/// datafile, number of shards and selection.
fn agree(inputs: &[Input]) -> Result<()> {
    let Some(first) = inputs.first() else {
        return Err(usage("no shard datafiles given".into()));
    };
    let a = &first.stamp;
    let name = |i: &Input| {
        format!(
            "{} (shard {}/{})",
            i.path.display(),
            i.stamp.index,
            i.stamp.total
        )
    };
    for other in &inputs[1..] {
        let b = &other.stamp;
        let differ = |what: String| usage(format!("{} and {} {what}", name(first), name(other)));
        if a.data_version != b.data_version {
            return Err(differ(format!(
                "are of other testmon data versions ({} and {})",
                a.data_version, b.data_version
            )));
        }
        if (&a.environment, &a.system_packages, &a.python_version)
            != (&b.environment, &b.system_packages, &b.python_version)
        {
            return Err(differ(format!(
                "ran in other environments ({:?}, python {} and {:?}, python {}{})",
                a.environment,
                a.python_version,
                b.environment,
                b.python_version,
                if a.system_packages != b.system_packages {
                    "; their packages differ"
                } else {
                    ""
                }
            )));
        }
        if a.base != b.base {
            return Err(differ(format!(
                "started from different datafiles (base {} and {}): every shard must start from the same one",
                a.base, b.base
            )));
        }
        if a.total != b.total || a.selected != b.selected {
            return Err(differ(
                "are not shards of one run: their selections differ (another commit, other arguments, or another number of shards)"
                    .into(),
            ));
        }
    }
    Ok(())
}

/// DEST may be missing (a new file), or a testmon datafile of the shards' data version in a
/// writable directory.
fn check_dest(dest: &Path, data_version: i64) -> Result<()> {
    let dir = match dest.parent().filter(|p| !p.as_os_str().is_empty()) {
        Some(dir) => dir.to_path_buf(),
        None => PathBuf::from("."),
    };
    if !dir.is_dir() {
        return Err(usage(format!(
            "--into {}: directory {} does not exist",
            dest.display(),
            dir.display()
        )));
    }
    if dest.exists() {
        check_sqlite(dest).map_err(|err| usage(format!("--into {err}")))?;
        let conn = open_quietly(dest).map_err(|err| {
            usage(format!(
                "--into {}: cannot be opened: {err}",
                dest.display()
            ))
        })?;
        let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        if version != data_version {
            return Err(usage(format!(
                "--into {} is testmon data version {version}, the shards are {data_version}",
                dest.display()
            )));
        }
    }
    let probe = dir.join(format!(".testmon-run-merge-probe.{}", std::process::id()));
    match std::fs::File::create(&probe) {
        Ok(_) => {
            let _ = std::fs::remove_file(&probe);
            Ok(())
        }
        Err(err) => Err(usage(format!(
            "--into {}: cannot write in {}: {err}",
            dest.display(),
            dir.display()
        ))),
    }
}

/// A stop asked for by a signal, checked between the merge's steps.
struct Stop(Arc<AtomicBool>);

impl Stop {
    fn install() -> Result<Stop> {
        let flag = interrupt_flag(false).context("installing the signal handlers")?;
        Ok(Stop(flag))
    }

    fn requested(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }

    fn check(&self) -> Result<()> {
        if self.requested() {
            anyhow::bail!("interrupted");
        }
        Ok(())
    }
}

/// What DEST says it holds: the shards of one base run merged into it.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct Merged {
    base: String,
    total: usize,
    shards: BTreeSet<usize>,
}

const MERGED_DATAID: &str = "testmon-run:merged";

impl Merged {
    fn read(dest: &Path) -> Result<Option<Merged>> {
        if !dest.exists() {
            return Ok(None);
        }
        let conn = open_quietly(dest).map_err(|err| {
            usage(format!(
                "--into {}: cannot be opened: {err}",
                dest.display()
            ))
        })?;
        let text = metadata::get(&conn, MERGED_DATAID).ok().flatten();
        Ok(text.and_then(|t| serde_json::from_str(&t).ok()))
    }

    fn write(&self, conn: &Connection) -> Result<()> {
        metadata::set(conn, MERGED_DATAID, &serde_json::to_string(self)?)
    }
}

/// A temporary file next to DEST, removed unless it was renamed over DEST.
struct TempFile(PathBuf);

impl Drop for TempFile {
    fn drop(&mut self) {
        for suffix in ["", "-wal", "-shm", "-journal"] {
            let mut name = self.0.as_os_str().to_os_string();
            name.push(suffix);
            let _ = std::fs::remove_file(PathBuf::from(name));
        }
    }
}

/// Merges into a copy of DEST, then renames it over DEST; returns how many tests the shards'
/// shares held records for.
fn merge_into(dest: &Path, inputs: &[Input], merged: &Merged, stop: &Stop) -> Result<usize> {
    let first = &inputs[0].stamp;
    let file_name = dest
        .file_name()
        .with_context(|| format!("--into {}: not a file name", dest.display()))?;
    let tmp = TempFile(dest.with_file_name(format!(
        ".{}.merge.{}.tmp",
        file_name.to_string_lossy(),
        std::process::id()
    )));
    if dest.exists() {
        // The WAL folded into the file first: the copy is the whole database.
        let conn = Connection::open(dest).with_context(|| format!("opening {}", dest.display()))?;
        conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
        drop(conn);
        std::fs::copy(dest, &tmp.0).with_context(|| format!("copying {}", dest.display()))?;
    } else if first.base != "none" {
        // No base at hand: the first shard's file holds it, with that shard's share.
        std::fs::copy(&inputs[0].path, &tmp.0)
            .with_context(|| format!("copying {}", inputs[0].path.display()))?;
    }
    let mut conn = db::open_main(&tmp.0, first.data_version)?.conn;
    let env = db::fetch_or_create_environment(
        &mut conn,
        &first.environment,
        &first.system_packages,
        &first.python_version,
        Semantics::for_data_version(first.data_version),
    )?;
    let dropped: Vec<String> = inputs
        .iter()
        .flat_map(|i| i.stamp.dropped.iter().cloned())
        .collect::<BTreeSet<String>>()
        .into_iter()
        .collect();
    db::forget_tests(&mut conn, env.id, &dropped)?;
    let spool_dir = tempfile_dir(dest)?;
    let mut spools = Vec::new();
    let mut ran = 0;
    for (n, input) in inputs.iter().enumerate() {
        let spool = spool_dir.0.join(format!("shard-{n}.db"));
        stop.check()?;
        ran += db::extract_tests(
            &input.path,
            input.env_id,
            &input.stamp.share,
            &spool,
            first.data_version,
            env.id,
        )
        .with_context(|| format!("reading {}", input.path.display()))?;
        spools.push(spool);
    }
    let batches = db::Batches::new(&first.selected, first.batch_size);
    stop.check()?;
    db::merge_spools(&mut conn, &spools, env.id, &batches)?;
    db::vacuum_fingerprints(&conn)?;
    conn.execute("DELETE FROM metadata WHERE dataid = ?", [DATAID])?;
    merged.write(&conn)?;
    conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
    conn.close()
        .map_err(|(_, err)| err)
        .context("closing the merged datafile")?;
    std::fs::File::open(&tmp.0)
        .and_then(|f| f.sync_all())
        .with_context(|| format!("writing {}", tmp.0.display()))?;
    // The last moment to stop: after the rename DEST is the merged file.
    stop.check()?;
    std::fs::rename(&tmp.0, dest).with_context(|| format!("replacing {}", dest.display()))?;
    Ok(ran)
}

/// A private directory for the extracted spools, removed on the way out.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn tempfile_dir(dest: &Path) -> Result<TempDir> {
    let base = std::env::temp_dir();
    let dir = base.join(format!(
        "testmon-run-merge-{}-{}",
        std::process::id(),
        dest.file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned())
    ));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(TempDir(dir))
}
