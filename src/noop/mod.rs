//! The no-op fast path: "nothing to run", answered without starting Python.
//!
//! After a run of a command completes with every selected test passed (exit 0), nothing
//! recorded as failing, and testmon both selecting and recording, single-process testmon run
//! again on the same files, database, command line, configuration and packages selects
//! nothing. The entry of the command (probe::cache) then keeps the state of that run: the
//! manifest of the project's Python files as they were when the run started (plus every file
//! testmon tracks), and the datafile's metadata as the run left it. The next run of the same
//! command answers "nothing to run" when the probe's answer still holds (interpreter,
//! packages, ini files, project plugins), the datafile is untouched and no Python file
//! changed, appeared or disappeared. Anything else runs normally; every run that does
//! forgets the state until it completes.

pub(crate) mod manifest;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::noop::manifest::{Compared, Manifest, Snapshot, Stat};
use crate::probe::Facts;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct NoopState {
    /// The datafile and its journal files, as the completed run left them.
    datafile: BTreeMap<PathBuf, Option<Stat>>,
    rootdir: PathBuf,
    /// The files testmon tracks, looked for wherever they are.
    tracked: Vec<String>,
    manifest: Manifest,
    /// testmon's "unchanged files" count on a run that finds nothing changed.
    pub(crate) unchanged_files: usize,
    /// The tests testmon collects and then deselects on such a run: those whose file it
    /// does not track (the tests of tracked files are not even collected).
    pub(crate) deselected: u64,
}

/// Whether a run of this command can be answered by the fast path: testmon selects and
/// records (no `-k`, `-m`, `--lf`, node ids, `--testmon-noselect`, debugger, coverage),
/// nothing else about the run depends on the collection (`--sw`, `--junitxml`), and no file
/// is named as a path to collect (pytest collects it whatever testmon says: its tests are
/// counted as deselected, which only a collection can tell).
pub(crate) fn eligible(facts: &Facts) -> bool {
    facts.cacheable
        && !facts.file_args
        && !facts.stepwise
        && facts.junitxml.is_none()
        && facts
            .testmon
            .as_ref()
            .is_some_and(|tm| tm.select && tm.collect && !tm.tmnet)
}

/// The datafile's metadata and the size of its write-ahead log and rollback journal (absent
/// counts as empty: a reader may leave an empty log behind). Any write shows: in the log
/// until it is checkpointed, then in the file.
fn datafile_stats(datafile: &Path) -> BTreeMap<PathBuf, Option<Stat>> {
    ["", "-wal", "-journal"]
        .iter()
        .map(|suffix| {
            let mut path = datafile.as_os_str().to_owned();
            path.push(suffix);
            let path = PathBuf::from(path);
            let stat = Stat::of(&path);
            let stat = match suffix {
                &"" => stat,
                _ => stat.filter(|s| s.size > 0).map(|s| Stat {
                    size: s.size,
                    mtime_ns: 0,
                    ctime_ns: 0,
                    ino: 0,
                }),
            };
            (path, stat)
        })
        .collect()
}

/// What the fast path decided.
#[derive(Debug, PartialEq)]
pub(crate) enum Answer {
    /// Nothing to run; `Some`: the state to keep (same contents, new file times).
    NothingToRun(Option<NoopState>),
    /// Something may have changed: run.
    Run(String),
}

impl NoopState {
    /// The state after a completed run, from the snapshot taken before it started; None
    /// when it cannot vouch for the next run (a file moved during the run).
    /// `tests` is every test testmon knows to exist after the run (its collection sync);
    /// `reselected` the tests it selects every time (pytest deselects them).
    pub(crate) fn after_run(
        datafile: &Path,
        snapshot: &Snapshot,
        tracked: Vec<String>,
        tests: &[String],
        reselected: &[String],
    ) -> Option<NoopState> {
        use crate::db::home_file;
        // Files testmon tracks only since this run (a template a test compiled) join too.
        let manifest = Manifest::hash(snapshot)?.with_late_files(snapshot, tracked.clone())?;
        // A run that selects nothing collects the files testmon does not track and those of
        // the tests it selects every time; all their tests end deselected (by testmon, or
        // by pytest).
        let files: std::collections::HashSet<&str> = tracked.iter().map(String::as_str).collect();
        let collected: std::collections::HashSet<&str> =
            reselected.iter().map(|t| home_file(t)).collect();
        let deselected = tests
            .iter()
            .map(|t| home_file(t))
            .filter(|home| !files.contains(home) || collected.contains(home))
            .count() as u64;
        Some(NoopState {
            datafile: datafile_stats(datafile),
            rootdir: snapshot.root.clone(),
            unchanged_files: tracked.len(),
            deselected,
            tracked,
            manifest,
        })
    }

    /// Whether the files and the datafile are as the completed run left them.
    pub(crate) fn answer(&self, datafile: &Path) -> Answer {
        if datafile_stats(datafile) != self.datafile {
            return Answer::Run("the datafile was written".into());
        }
        match self
            .manifest
            .compare(&Snapshot::take(&self.rootdir, &self.tracked))
        {
            Compared::Same => Answer::NothingToRun(None),
            Compared::SameContents(manifest) => Answer::NothingToRun(Some(NoopState {
                manifest,
                ..self.clone()
            })),
            Compared::Changed(what) => Answer::Run(what),
        }
    }
}
