//! Run directories left behind by a supervisor that was killed (kill -9, a crash, a power
//! cut of the terminal): the next run on the same datafile merges their spools, so no test
//! its workers finished is lost, and removes them.
//!
//! A directory is stale when the process that created it (its name holds the pid) is gone
//! and nobody holds its lock: the supervisor and every worker hold it while they run.
//!
//! Only this user's own are trusted: they live in the private base (rundir), and each is
//! considered only when it, and every file read from it, is a real directory or file (no
//! symlink) owned by this user, its plan names this datafile, and every spool passes
//! `db::check_spool` (testmon's format and data version, intact, only tests of that run's
//! collection). A directory that fails is reported in one line and removed, unmerged.

use std::collections::HashSet;
use std::fs;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::db::{self, EnvironmentRow};
use crate::probe::Testmon;
use crate::record;
use crate::run::plan::{Plan, PlanTestmon};
use crate::run::rundir::{self, COLLECTED, LOCK, PLAN, PREFIX};

/// What a stale directory is to this run.
#[derive(Debug, PartialEq, Eq)]
enum Fate {
    /// It recorded into our datafile, under this environment row: merge its spools, then
    /// remove it.
    Merge(i64),
    /// Nothing to merge (killed before its plan, or testmon was off): remove it.
    Remove,
    /// Not what our runs leave (a symlink, another owner's file, a foreign spool): remove it
    /// unmerged, saying why.
    Distrust(String),
    /// Another project's: its own next run will recover it.
    Leave,
}

/// Recovers every stale run directory in `base` that recorded into `tm`'s datafile; returns
/// one line per directory handled, for the user.
pub(crate) fn recover(base: &Path, tm: &Testmon) -> Vec<String> {
    let mut lines = Vec::new();
    for dir in stale_dirs(base) {
        let line = match recover_one(&dir, tm) {
            Ok(None) => continue,
            Ok(Some(line)) => line,
            Err(err) => format!(
                "testmon-run: could not recover the interrupted run in {}: {err:#}",
                dir.display()
            ),
        };
        lines.push(line);
    }
    lines
}

fn recover_one(dir: &Path, tm: &Testmon) -> Result<Option<String>> {
    if let Some(why) = not_ours(dir) {
        return Ok(Some(format!(
            "testmon-run: left alone {}: {why}, not a run directory of this user",
            dir.display()
        )));
    }
    // Held from here on: no other run recovers it at the same time.
    let lock = fs::OpenOptions::new()
        .append(true)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .open(dir.join(LOCK));
    let _lock = match lock {
        Ok(file) => match rundir::try_lock(&file) {
            Ok(()) => Some(file),
            Err(_) => return Ok(None), // its workers still run, or another run recovers it
        },
        Err(_) if !dir.exists() => return Ok(None), // another run recovered it just now
        Err(_) => None,                             // killed before it made its lock
    };
    if !dir.exists() {
        return Ok(None); // recovered by another run between our listing and our lock
    }
    let owner = owner_pid(dir).map_or_else(|| "?".to_string(), |p| p.to_string());
    let fate = match untrusted_entry(dir) {
        Some(why) => Fate::Distrust(why),
        None => read_plan(dir).map_or(Fate::Remove, |plan| fate(&plan, tm)),
    };
    let fate = match fate {
        Fate::Merge(env_id) => match foreign_spool(dir, tm) {
            Some(why) => Fate::Distrust(why),
            None => Fate::Merge(env_id),
        },
        fate => fate,
    };
    match fate {
        Fate::Leave => Ok(None),
        Fate::Distrust(why) => {
            fs::remove_dir_all(dir).with_context(|| format!("removing {}", dir.display()))?;
            Ok(Some(format!(
                "testmon-run: removed the run directory of an interrupted run (pid {owner}) without recovering it: {why}"
            )))
        }
        Fate::Remove => {
            fs::remove_dir_all(dir).with_context(|| format!("removing {}", dir.display()))?;
            Ok(Some(format!(
                "testmon-run: removed the run directory of an interrupted run (pid {owner}): nothing to recover"
            )))
        }
        Fate::Merge(env_id) => {
            let merged = merge(dir, tm, env_id)?;
            fs::remove_dir_all(dir).with_context(|| format!("removing {}", dir.display()))?;
            Ok(Some(format!(
                "testmon-run: recovered {merged} test result(s) from an interrupted run (pid {owner}) and removed its run directory"
            )))
        }
    }
}

/// Why a run directory is not one of ours as our runs leave them: an entry that is a
/// symlink, or not owned by this user. None: every entry is a real file or directory of ours.
fn untrusted_entry(dir: &Path) -> Option<String> {
    let uid = nix::unistd::getuid().as_raw();
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(err) => return Some(format!("unreadable: {err}")),
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        match fs::symlink_metadata(entry.path()) {
            Ok(meta) if meta.file_type().is_symlink() => {
                return Some(format!("{name} is a symbolic link"))
            }
            Ok(meta) if meta.uid() != uid => {
                return Some(format!("{name} is owned by uid {}", meta.uid()))
            }
            Ok(_) => {}
            Err(err) => return Some(format!("{name}: {err}")),
        }
    }
    None
}

/// Why one of the directory's spools may not be merged, if one may not.
fn foreign_spool(dir: &Path, tm: &Testmon) -> Option<String> {
    let collected = read_collected(dir);
    let allowed: HashSet<&str> = collected
        .run_list
        .iter()
        .chain(collected.sync.iter().flatten())
        .map(String::as_str)
        .collect();
    // An empty spool: its worker died before testmon made it (nothing to merge).
    spools(dir)
        .ok()?
        .iter()
        .filter(|spool| spool.metadata().is_ok_and(|m| m.len() > 0))
        .find_map(|spool| {
            let why = db::check_spool(spool, tm.data_version, &allowed).err()?;
            let name = spool.file_name().unwrap_or_default().to_string_lossy();
            Some(format!("{name}: {why}"))
        })
}

/// The plan the killed run wrote, read with the type it was written with.
fn read_plan(dir: &Path) -> Option<PlanTestmon> {
    let text = fs::read(dir.join(PLAN)).ok()?;
    serde_json::from_slice::<Plan>(&text)
        .ok()
        .map(|plan| plan.testmon)
}

fn fate(plan: &PlanTestmon, tm: &Testmon) -> Fate {
    let Some(datafile) = plan.datafile.as_deref().filter(|_| plan.active) else {
        return Fate::Remove;
    };
    if same_file(datafile, &tm.datafile) {
        match plan.exec_id {
            Some(env_id) if plan.data_version == Some(tm.data_version) => Fate::Merge(env_id),
            // The datafile was replaced since (another testmon data version).
            _ => Fate::Remove,
        }
    } else if datafile.exists() {
        Fate::Leave
    } else {
        Fate::Remove
    }
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (fs::canonicalize(a), fs::canonicalize(b)) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    }
}

/// Records the directory's spools (every worker's and replacement's, in name order) as the
/// run itself would have: with its collection (testmon's sync: tests not run yet get their
/// placeholder) when it got that far.
fn merge(dir: &Path, tm: &Testmon, env_id: i64) -> Result<usize> {
    let spools = spools(dir)?;
    let collected = read_collected(dir);
    if spools.is_empty() && collected.sync.is_none() {
        return Ok(0);
    }
    let conn = db::open_main(&tm.datafile, tm.data_version)?.conn;
    let known: i64 = conn.query_row(
        "SELECT count(*) FROM environment WHERE id = ?",
        [env_id],
        |r| r.get(0),
    )?;
    drop(conn);
    if known == 0 {
        return Ok(0); // its environment is gone from the datafile: nothing to attach to
    }
    let env = EnvironmentRow {
        id: env_id,
        packages_changed: false,
    };
    record::record(
        tm,
        env,
        &record::RunRecord {
            sync: collected.sync.as_deref(),
            run_list: &collected.run_list,
            selected: &collected.run_list,
            spools: &spools,
            crashed: &[],
            shard: None,
        },
    )
}

/// The directory's spools (every worker's and replacement's), in name order.
fn spools(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut spools: Vec<PathBuf> = fs::read_dir(dir)?
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("spool-") && n.ends_with(".db"))
        })
        .collect();
    spools.sort();
    Ok(spools)
}

/// The run's collection, as the killed run wrote it (empty when it did not get that far).
fn read_collected(dir: &Path) -> Collected {
    fs::read(dir.join(COLLECTED))
        .ok()
        .and_then(|text| serde_json::from_slice(&text).ok())
        .unwrap_or_default()
}

#[derive(Debug, Default, serde::Deserialize)]
struct Collected {
    sync: Option<Vec<String>>,
    #[serde(default)]
    run_list: Vec<String>,
}

/// A symlink, or another user's: why `dir` is not ours (None when it is).
fn not_ours(dir: &Path) -> Option<String> {
    let meta = match fs::symlink_metadata(dir) {
        Ok(meta) => meta,
        // Recovered by another run since the listing: `recover_one` finds it gone.
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return None,
        Err(err) => return Some(err.to_string()),
    };
    let uid = nix::unistd::getuid().as_raw();
    if meta.file_type().is_symlink() {
        Some("a symbolic link".into())
    } else if meta.uid() != uid {
        Some(format!("owned by uid {}", meta.uid()))
    } else {
        None
    }
}

/// Run directories in `base` whose owner is gone and whose lock is free (and whatever else
/// has their name: `recover_one` says what it is).
fn stale_dirs(base: &Path) -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(base) else {
        return Vec::new();
    };
    let mut dirs: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| fs::symlink_metadata(p).is_ok_and(|m| m.is_dir() || m.is_symlink()))
        .filter(|p| owner_pid(p).is_some_and(|pid| pid != std::process::id() && !alive(pid)))
        .collect();
    dirs.sort();
    dirs
}

/// The pid in a run directory's name (`testmon-run-<pid>-<stamp>`).
fn owner_pid(dir: &Path) -> Option<u32> {
    let name = dir.file_name()?.to_str()?;
    let rest = name.strip_prefix(PREFIX)?;
    let (pid, stamp) = rest.split_once('-')?;
    if stamp.is_empty() || !stamp.chars().all(|c| c.is_ascii_hexdigit()) {
        return None;
    }
    pid.parse().ok()
}

fn alive(pid: u32) -> bool {
    let Ok(pid) = i32::try_from(pid) else {
        return false;
    };
    match nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None) {
        Ok(()) => true,
        Err(errno) => errno != nix::errno::Errno::ESRCH,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_pid_from_the_name() {
        assert_eq!(
            owner_pid(Path::new("/tmp/testmon-run-1234-18f00a")),
            Some(1234)
        );
        assert_eq!(owner_pid(Path::new("/tmp/testmon-run-1234-")), None);
        assert_eq!(owner_pid(Path::new("/tmp/testmon-run-x-18f")), None);
        assert_eq!(owner_pid(Path::new("/tmp/other-1234-18f")), None);
        assert_eq!(owner_pid(Path::new("/tmp/testmon-run-12-zz")), None);
    }

    #[test]
    fn a_locked_directory_is_not_stale_and_a_dead_owners_is() {
        let base = tempfile::tempdir().unwrap();
        // pid 0x7fffffff: beyond pid_max, never alive.
        let dead = base.path().join(format!("{PREFIX}2147483647-abc"));
        fs::create_dir(&dead).unwrap();
        fs::write(dead.join(LOCK), "").unwrap();
        let mine = base
            .path()
            .join(format!("{PREFIX}{}-abc", std::process::id()));
        fs::create_dir(&mine).unwrap();
        assert_eq!(stale_dirs(base.path()), vec![dead.clone()]);
        let held = fs::File::open(dead.join(LOCK)).unwrap();
        rundir::try_lock(&held).unwrap();
        let again = fs::File::open(dead.join(LOCK)).unwrap();
        assert!(rundir::try_lock(&again).is_err(), "the lock is exclusive");
    }

    #[test]
    fn what_is_not_ours_and_what_is_gone() {
        let base = tempfile::tempdir().unwrap();
        let mine = base.path().join(format!("{PREFIX}2147483647-abc"));
        fs::create_dir(&mine).unwrap();
        assert_eq!(not_ours(&mine), None);
        let link = base.path().join(format!("{PREFIX}2147483646-abc"));
        std::os::unix::fs::symlink(&mine, &link).unwrap();
        assert_eq!(not_ours(&link).as_deref(), Some("a symbolic link"));
        // Recovered by another run since the listing: nothing to say about it.
        fs::remove_dir(&mine).unwrap();
        assert_eq!(not_ours(&mine), None);
    }
}
