//! The probe's answer kept between runs, one entry per command: the same directory, pytest
//! command, `--datafile` and pytest/testmon/Python environment variables. An entry is reused
//! while everything it depends on holds: the interpreter, sys.path's directories (a package
//! installed, removed or upgraded touches its directory), the plugin files pytest loaded from
//! the project (conftest.py), and the ini files pytest could pick (pytest.ini, pyproject.toml,
//! tox.ini, setup.cfg in the directory and its ancestors). The entry also holds the no-op
//! state of the last completed run (see `noop`).
//!
//! Entries live in `$TESTMON_RUN_CACHE_DIR`, else `$XDG_CACHE_HOME/testmon-run`, else
//! `~/.cache/testmon-run`; `TESTMON_RUN_CACHE_DIR=` (empty) turns the cache off.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::hash::Hasher;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::noop::manifest::Stat;
use crate::noop::NoopState;
use crate::probe::Facts;

/// Bumped when an entry's meaning changes.
const FORMAT: u32 = 2;

/// The files pytest looks for when it picks its ini file.
/// and the conftest.py files it loads before collecting.
const INI_NAMES: &[&str] = &[
    "pytest.ini",
    ".pytest.ini",
    "pyproject.toml",
    "tox.ini",
    "setup.cfg",
    "conftest.py",
];

/// What identifies a command: its directory, arguments, datafile and environment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Key {
    cwd: PathBuf,
    command: Vec<String>,
    datafile: Option<PathBuf>,
    env: BTreeMap<String, String>,
}

/// Environment variables that can change pytest's or testmon's answer (PYTEST_ADDOPTS,
/// TESTMON_DATAFILE, PYTHONPATH, the PATH that finds `pytest`, colour settings...).
fn relevant(name: &str) -> bool {
    (name.starts_with("PYTEST_") || name.starts_with("PYTHON") || name.starts_with("TESTMON_"))
        && !name.starts_with("TESTMON_RUN_")
        || matches!(
            name,
            "PATH"
                | "HOME"
                | "VIRTUAL_ENV"
                | "CONDA_PREFIX"
                | "PY_COLORS"
                | "NO_COLOR"
                | "FORCE_COLOR"
        )
}

impl Key {
    pub(crate) fn new(command: &[OsString], datafile: Option<&Path>) -> Option<Key> {
        let cwd = std::env::current_dir().ok()?;
        let text = |s: &std::ffi::OsStr| s.to_str().map(str::to_owned);
        let command = command
            .iter()
            .map(|a| text(a))
            .collect::<Option<Vec<_>>>()?;
        let env = std::env::vars_os()
            .filter_map(|(k, v)| Some((text(&k)?, text(&v)?)))
            .filter(|(k, _)| relevant(k))
            .collect();
        Some(Key {
            cwd,
            command,
            datafile: datafile.map(Path::to_path_buf),
            env,
        })
    }

    fn file_name(&self) -> String {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        let json = serde_json::to_string(self).unwrap_or_default();
        hasher.write(json.as_bytes());
        format!("{:016x}.json", hasher.finish())
    }
}

/// Stamps of the ini files pytest could pick for this command: every candidate name in the
/// directory and its ancestors, and in those of the rootdir.
pub(crate) fn ini_stamps(
    cwd: &Path,
    rootdir: Option<&Path>,
) -> BTreeMap<PathBuf, Option<(u64, i64)>> {
    let mut stamps = BTreeMap::new();
    for start in std::iter::once(cwd).chain(rootdir) {
        for dir in start.ancestors() {
            for name in INI_NAMES {
                let path = dir.join(name);
                let stamp = Stat::stamp(&path);
                stamps.insert(path, stamp);
            }
        }
    }
    stamps
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Entry {
    format: u32,
    /// The testmon-run that wrote it (a new build probes afresh).
    version: String,
    key: Key,
    pub(crate) facts: Facts,
    /// The ini candidates, stamped before the probe ran.
    ini: BTreeMap<PathBuf, Option<(u64, i64)>>,
    /// The state after the last completed run of this command, when it may answer a no-op.
    pub(crate) noop: Option<NoopState>,
}

impl Entry {
    pub(crate) fn new(key: Key, facts: Facts, ini: BTreeMap<PathBuf, Option<(u64, i64)>>) -> Entry {
        Entry {
            format: FORMAT,
            version: env!("CARGO_PKG_VERSION").into(),
            key,
            facts,
            ini,
            noop: None,
        }
    }

    /// Whether the probe would still answer the same: nothing it depends on has moved.
    pub(crate) fn holds(&self) -> bool {
        let unmoved = |stamps: &BTreeMap<PathBuf, Option<(u64, i64)>>| {
            stamps
                .iter()
                .all(|(path, stamp)| Stat::stamp(path) == *stamp)
        };
        self.format == FORMAT
            && self.version == env!("CARGO_PKG_VERSION")
            && self.facts.protocol == crate::probe::PROTOCOL
            && self.facts.cacheable
            && unmoved(&self.ini)
            && unmoved(&self.facts.stamps)
            && self
                .facts
                .dists
                .iter()
                .all(|(dir, names)| dist_names(dir) == *names)
    }
}

/// The distributions in a directory, as the probe lists them (python/probe.py dist_names).
fn dist_names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .filter_map(|e| e.file_name().into_string().ok())
                .filter(|n| {
                    n.ends_with(".dist-info")
                        || n.ends_with(".egg-info")
                        || n.ends_with(".egg-link")
                })
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// The directory of entries.
pub(crate) struct Store {
    dir: PathBuf,
}

impl Store {
    pub(crate) fn locate() -> Option<Store> {
        let dir = match std::env::var_os("TESTMON_RUN_CACHE_DIR") {
            Some(dir) if dir.is_empty() => return None,
            Some(dir) => PathBuf::from(dir),
            None => match std::env::var_os("XDG_CACHE_HOME").filter(|d| !d.is_empty()) {
                Some(base) => PathBuf::from(base).join("testmon-run"),
                None => PathBuf::from(std::env::var_os("HOME")?).join(".cache/testmon-run"),
            },
        };
        dir.is_absolute().then_some(Store { dir })
    }

    /// The entry of this command, if one was written and it still holds.
    pub(crate) fn load(&self, key: &Key) -> Option<Entry> {
        let text = std::fs::read(self.dir.join(key.file_name())).ok()?;
        let entry: Entry = serde_json::from_slice(&text).ok()?;
        (entry.key == *key && entry.holds()).then_some(entry)
    }

    /// Writes the entry (whole, or not at all). A cache that cannot be written is no cache:
    /// the run goes on.
    pub(crate) fn save(&self, entry: &Entry) {
        if let Ok(json) = serde_json::to_vec(entry) {
            let _ = crate::atomic::write(&self.dir.join(entry.key.file_name()), &json);
        }
    }

    /// Removes the entry's no-op state: a run is starting, and until it completes the
    /// database may no longer match it.
    pub(crate) fn forget_noop(&self, entry: &mut Entry) {
        if entry.noop.take().is_some() {
            self.save(entry);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_environment_that_can_change_the_answer_is_in_the_key() {
        for name in [
            "PYTEST_ADDOPTS",
            "PYTHONPATH",
            "TESTMON_DATAFILE",
            "PATH",
            "VIRTUAL_ENV",
            "NO_COLOR",
        ] {
            assert!(relevant(name), "{name}");
        }
        for name in [
            "TERM",
            "SHLVL",
            "OLDPWD",
            "TESTMON_RUN_TIMING",
            "CI",
            "COLUMNS",
        ] {
            assert!(!relevant(name), "{name}");
        }
    }

    #[test]
    fn ini_stamps_cover_every_ancestor_and_see_a_new_file() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("a/b");
        std::fs::create_dir_all(&sub).unwrap();
        let before = ini_stamps(&sub, None);
        assert!(before.contains_key(&dir.path().join("a/pytest.ini")));
        assert!(before.contains_key(&PathBuf::from("/setup.cfg")));
        std::fs::write(dir.path().join("a/tox.ini"), "[pytest]\n").unwrap();
        assert_ne!(before, ini_stamps(&sub, None));
    }
}
