//! The project's Python files as the file system has them: paths, sizes, times, and (once a
//! run has completed) content hashes. Two manifests tell whether any Python file changed,
//! appeared or disappeared in between, without reading a file whose metadata did not move.

use std::collections::BTreeMap;
use std::hash::Hasher;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// What a file's metadata says; any write changes `ctime`, which no tool can set back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Stat {
    pub(crate) size: u64,
    pub(crate) mtime_ns: i64,
    pub(crate) ctime_ns: i64,
    pub(crate) ino: u64,
}

impl Stat {
    pub(crate) fn of(path: &Path) -> Option<Stat> {
        let meta = std::fs::metadata(path).ok()?;
        Some(Stat {
            size: meta.len(),
            mtime_ns: meta.mtime() * 1_000_000_000 + meta.mtime_nsec(),
            ctime_ns: meta.ctime() * 1_000_000_000 + meta.ctime_nsec(),
            ino: meta.ino(),
        })
    }

    /// [size, mtime_ns], as the probe stamps files (os.stat's st_size, st_mtime_ns).
    pub(crate) fn stamp(path: &Path) -> Option<(u64, i64)> {
        Stat::of(path).map(|s| (s.size, s.mtime_ns))
    }
}

/// Directories never searched: version control, caches, virtualenvs, node_modules. Python
/// files testmon tracks inside them are added by name (`Snapshot::take`'s `tracked`).
fn skipped(dir: &Path, name: &str) -> bool {
    matches!(
        name,
        ".git"
            | ".hg"
            | ".svn"
            | "__pycache__"
            | "node_modules"
            | ".pytest_cache"
            | ".mypy_cache"
            | ".ruff_cache"
            | ".tox"
            | ".nox"
    ) || dir.join("pyvenv.cfg").exists()
        || dir.join("conda-meta").join("history").exists()
}

/// The Python files under a root (relative paths) with their metadata, taken before a run.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Snapshot {
    pub(crate) root: PathBuf,
    pub(crate) files: BTreeMap<String, Stat>,
    /// When it was taken (ns since the epoch).
    pub(crate) taken_ns: i64,
    /// The content hashes of the racy files (written just before the snapshot: their
    /// metadata cannot tell a later write apart), taken with the snapshot.
    pub(crate) racy: BTreeMap<String, u64>,
}

/// File times are coarse (a clock tick, up to 10 ms): a file written this close to the
/// snapshot may be written again with the same metadata ("racy git"); its metadata is never
/// trusted: its contents are hashed with the snapshot, and a manifest keeps it with
/// `UNTRUSTED`, so the next comparison hashes it again.
const RACY_NS: i64 = 50_000_000;

/// The metadata kept for a racy file: no file has it, so it never compares equal.
const UNTRUSTED: Stat = Stat {
    size: u64::MAX,
    mtime_ns: i64::MIN,
    ctime_ns: i64::MIN,
    ino: 0,
};

impl Stat {
    /// Written within RACY_NS before `taken_ns`, or after it.
    fn racy(&self, taken_ns: i64) -> bool {
        self.mtime_ns.max(self.ctime_ns) >= taken_ns - RACY_NS
    }
}

fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

impl Snapshot {
    /// Every `*.py` file under `root` (symlinked directories not followed), plus `tracked`:
    /// the files testmon's database names (relative to root), wherever they are.
    pub(crate) fn take(root: &Path, tracked: &[String]) -> Snapshot {
        let taken_ns = now_ns();
        let mut files = BTreeMap::new();
        let mut stack = vec![root.to_path_buf()];
        while let Some(dir) = stack.pop() {
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries.flatten() {
                let Ok(kind) = entry.file_type() else {
                    continue;
                };
                let path = entry.path();
                let name = entry.file_name();
                let name = name.to_string_lossy();
                if kind.is_dir() {
                    if !skipped(&path, &name) {
                        stack.push(path);
                    }
                } else if name.ends_with(".py") {
                    if let (Some(stat), Ok(rel)) = (Stat::of(&path), path.strip_prefix(root)) {
                        files.insert(rel.to_string_lossy().into_owned(), stat);
                    }
                }
            }
        }
        for rel in tracked {
            if !files.contains_key(rel) {
                if let Some(stat) = Stat::of(&root.join(rel)) {
                    files.insert(rel.clone(), stat);
                }
            }
        }
        let racy = files
            .iter()
            .filter(|(_, stat)| stat.racy(taken_ns))
            .filter_map(|(rel, _)| Some((rel.clone(), content_hash(&root.join(rel))?)))
            .collect();
        Snapshot {
            root: root.to_path_buf(),
            files,
            taken_ns,
            racy,
        }
    }
}

/// A snapshot whose files have been hashed: the state a completed run saw.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Manifest {
    pub(crate) files: BTreeMap<String, (Stat, u64)>,
}

/// How the files compare with a manifest.
#[derive(Debug, PartialEq)]
pub(crate) enum Compared {
    Same,
    /// Same contents, but some metadata moved (a checkout, `touch`): the manifest to keep.
    SameContents(Manifest),
    /// The first difference found.
    Changed(String),
}

impl Manifest {
    /// Hashes the snapshot's files as they are now; None when one of them moved since the
    /// snapshot was taken (edited during the run: what the run saw is unknown). A file
    /// written just before the snapshot is kept with the hash taken with the snapshot and
    /// `UNTRUSTED` metadata.
    pub(crate) fn hash(snapshot: &Snapshot) -> Option<Manifest> {
        let mut files = BTreeMap::new();
        for (rel, stat) in &snapshot.files {
            let path = snapshot.root.join(rel);
            if Stat::of(&path).as_ref() != Some(stat) {
                return None;
            }
            if stat.racy(snapshot.taken_ns) {
                files.insert(rel.clone(), (UNTRUSTED, *snapshot.racy.get(rel)?));
                continue;
            }
            let hash = content_hash(&path)?;
            if Stat::of(&path).as_ref() != Some(stat) {
                return None;
            }
            files.insert(rel.clone(), (*stat, hash));
        }
        Some(Manifest { files })
    }

    /// Adds files the run learned about (testmon tracks them only after it): each as it is
    /// now, when it was written before the snapshot's racy window (so the run saw it as it
    /// is); None when one was written later (what the run saw is unknown).
    pub(crate) fn with_late_files(
        mut self,
        snapshot: &Snapshot,
        late: impl IntoIterator<Item = String>,
    ) -> Option<Manifest> {
        for rel in late {
            if self.files.contains_key(&rel) {
                continue;
            }
            let path = snapshot.root.join(&rel);
            // Gone (a file a test made and removed): not in a snapshot either.
            let Some(stat) = Stat::of(&path) else {
                continue;
            };
            if stat.racy(snapshot.taken_ns) {
                return None;
            }
            let hash = content_hash(&path)?;
            if Stat::of(&path) != Some(stat) {
                return None;
            }
            self.files.insert(rel, (stat, hash));
        }
        Some(self)
    }

    /// Compares a fresh snapshot with this manifest, hashing only the files whose metadata
    /// moved.
    pub(crate) fn compare(&self, now: &Snapshot) -> Compared {
        if let Some(gone) = self.files.keys().find(|k| !now.files.contains_key(*k)) {
            return Compared::Changed(format!("{gone} removed"));
        }
        let mut moved = BTreeMap::new();
        for (rel, stat) in &now.files {
            match self.files.get(rel) {
                None => return Compared::Changed(format!("{rel} added")),
                Some((known, _)) if known == stat => {}
                Some((_, hash)) => {
                    if content_hash(&now.root.join(rel)) != Some(*hash) {
                        return Compared::Changed(format!("{rel} changed"));
                    }
                    // A racy time is not kept: the file is hashed again next time.
                    if !stat.racy(now.taken_ns) {
                        moved.insert(rel.clone(), (*stat, *hash));
                    }
                }
            }
        }
        if moved.is_empty() {
            return Compared::Same;
        }
        let mut files = self.files.clone();
        files.extend(moved);
        Compared::SameContents(Manifest { files })
    }
}

/// A 64-bit hash of a file's bytes (SipHash-1-3 with fixed keys; a different Rust release
/// may hash differently, which reads as "changed": safe).
fn content_hash(path: &Path) -> Option<u64> {
    let mut file = std::fs::File::open(path).ok()?;
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut total = 0u64;
    loop {
        let n = file.read(&mut buf).ok()?;
        if n == 0 {
            break;
        }
        hasher.write(&buf[..n]);
        total += n as u64;
    }
    hasher.write_u64(total);
    Some(hasher.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Writes a file and dates it an hour back (older than any racy window).
    fn write(root: &Path, rel: &str, text: &str) {
        let path = root.join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, text).unwrap();
        let file = std::fs::File::options().write(true).open(&path).unwrap();
        file.set_modified(std::time::SystemTime::now() - std::time::Duration::from_secs(3600))
            .unwrap();
    }

    fn backdate_ctime_window() {
        // ctime cannot be set: the racy window must pass after the last write.
        std::thread::sleep(std::time::Duration::from_nanos(RACY_NS as u64 + 10_000_000));
    }

    fn project() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "pkg/a.py", "A = 1\n");
        write(dir.path(), "tests/test_a.py", "def test_a(): pass\n");
        write(dir.path(), "README.md", "not python\n");
        write(dir.path(), ".git/hooks/x.py", "skipped\n");
        write(dir.path(), "venv/pyvenv.cfg", "home = /usr\n");
        write(dir.path(), "venv/lib/site.py", "skipped\n");
        write(dir.path(), ".hidden/tracked.py", "T = 1\n");
        dir
    }

    #[test]
    fn takes_python_files_outside_vcs_and_venvs_plus_tracked_ones() {
        let dir = project();
        let snap = Snapshot::take(dir.path(), &[".hidden/tracked.py".into(), "gone.py".into()]);
        let names: Vec<&str> = snap.files.keys().map(String::as_str).collect();
        assert_eq!(names, [".hidden/tracked.py", "pkg/a.py", "tests/test_a.py"]);
    }

    #[test]
    fn same_files_compare_same_and_edits_additions_removals_do_not() {
        let dir = project();
        let root = dir.path();
        backdate_ctime_window();
        let manifest = Manifest::hash(&Snapshot::take(root, &[])).unwrap();
        assert_eq!(manifest.compare(&Snapshot::take(root, &[])), Compared::Same);

        // Rewritten with the same bytes: same contents, new metadata to keep.
        write(root, "pkg/a.py", "A = 1\n");
        assert_eq!(
            manifest.compare(&Snapshot::take(root, &[])),
            Compared::Same,
            "racy: not kept"
        );
        backdate_ctime_window();
        let Compared::SameContents(kept) = manifest.compare(&Snapshot::take(root, &[])) else {
            // (compare trusts hashes, not times: no racy window applies)
            panic!("a rewrite with the same bytes is not a change");
        };
        assert_eq!(kept.compare(&Snapshot::take(root, &[])), Compared::Same);

        // Same size, different bytes.
        write(root, "pkg/a.py", "A = 2\n");
        assert_eq!(
            kept.compare(&Snapshot::take(root, &[])),
            Compared::Changed("pkg/a.py changed".into())
        );
        write(root, "pkg/a.py", "A = 1\n");
        write(root, "pkg/b.py", "");
        assert_eq!(
            kept.compare(&Snapshot::take(root, &[])),
            Compared::Changed("pkg/b.py added".into())
        );
        std::fs::remove_file(root.join("pkg/b.py")).unwrap();
        std::fs::remove_file(root.join("tests/test_a.py")).unwrap();
        assert_eq!(
            kept.compare(&Snapshot::take(root, &[])),
            Compared::Changed("tests/test_a.py removed".into())
        );
    }

    #[test]
    fn a_file_moved_since_the_snapshot_gives_no_manifest() {
        let dir = project();
        backdate_ctime_window();
        let snap = Snapshot::take(dir.path(), &[]);
        assert!(Manifest::hash(&snap).is_some());
        write(dir.path(), "pkg/a.py", "A = 3\n");
        assert_eq!(Manifest::hash(&snap), None, "moved since the snapshot");
    }

    /// A file written just before the snapshot is kept by the contents it had then, never by
    /// its metadata: the next comparison hashes it again.
    #[test]
    fn a_file_written_just_before_the_snapshot_is_kept_by_its_contents() {
        let dir = project();
        backdate_ctime_window();
        std::fs::write(dir.path().join("pkg/a.py"), "A = 3\n").unwrap();
        let racy = Snapshot::take(dir.path(), &[]);
        assert_eq!(racy.racy.len(), 1, "{:?}", racy.racy);
        let kept = Manifest::hash(&racy).expect("a manifest");
        assert_eq!(kept.files["pkg/a.py"].0, UNTRUSTED);
        // Unchanged: the same contents, and the real metadata is kept once it is not racy.
        backdate_ctime_window();
        match kept.compare(&Snapshot::take(dir.path(), &[])) {
            Compared::SameContents(m) => assert_ne!(m.files["pkg/a.py"].0, UNTRUSTED),
            other => panic!("{other:?}"),
        }
        // Written again with the same size: the contents tell.
        std::fs::write(dir.path().join("pkg/a.py"), "A = 4\n").unwrap();
        assert_eq!(
            kept.compare(&Snapshot::take(dir.path(), &[])),
            Compared::Changed("pkg/a.py changed".into())
        );
    }

    #[test]
    fn files_learned_during_the_run_join_when_written_before_it() {
        let dir = project();
        backdate_ctime_window();
        let snap = Snapshot::take(dir.path(), &[]);
        write(dir.path(), "templates/page.html", "<p>old</p>\n");
        let kept = Manifest::hash(&snap)
            .unwrap()
            .with_late_files(&snap, ["templates/page.html".to_string()]);
        assert_eq!(
            kept, None,
            "written after the snapshot: what the run saw is unknown"
        );
        backdate_ctime_window();
        let snap = Snapshot::take(dir.path(), &[]);
        let kept = Manifest::hash(&snap)
            .unwrap()
            .with_late_files(&snap, ["templates/page.html".to_string()])
            .expect("written before the run");
        let now = Snapshot::take(dir.path(), &["templates/page.html".to_string()]);
        assert_eq!(kept.compare(&now), Compared::Same);
        let missing = Manifest::hash(&snap)
            .unwrap()
            .with_late_files(&snap, ["gone.html".to_string()])
            .unwrap();
        assert!(!missing.files.contains_key("gone.html"));
        let now = Snapshot::take(dir.path(), &["gone.html".to_string()]);
        assert_eq!(missing.compare(&now), Compared::Same);
    }
}
