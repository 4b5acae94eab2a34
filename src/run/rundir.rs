//! The run directory: the embedded plugins, the plan, the workers' spools and logs.
//! It lives in this user's private base, `$TMPDIR/testmon-run-<uid>` (0700, checked on every
//! use: see `private_base`), is itself 0700 with its files 0600, and is removed when dropped
//! (unless kept); the base goes with the last run directory in it.
//!
//! Its `lock` file is held (flock) by the supervisor and inherited by every worker, so a
//! directory whose lock is free and whose owner is gone was left by a run that was killed
//! (see `recover`).

use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::Serialize;

use crate::exit::Fatal;

/// The probe plugin, imported by pytest as `-p _testmon_run_probe`.
pub(crate) const PROBE_MODULE: &str = "_testmon_run_probe";
/// The worker plugin, imported by pytest as `-p _testmon_run_worker`.
pub(crate) const WORKER_MODULE: &str = "_testmon_run_worker";
/// The controller plugin, imported by pytest as `-p _testmon_run_controller`.
pub(crate) const CONTROLLER_MODULE: &str = "_testmon_run_controller";
const CONTROLLER_SOURCE: &str = include_str!("../../python/controller.py");
const PROBE_SOURCE: &str = include_str!("../../python/probe.py");
const WORKER_SOURCE: &str = include_str!("../../python/worker.py");

/// Run directories are named `testmon-run-<pid>-<stamp>` in the base; the base itself
/// `testmon-run-<uid>` in the system temp directory.
pub(crate) const PREFIX: &str = "testmon-run-";
/// Run directories, and the base: only their owner may enter.
const DIR_MODE: u32 = 0o700;
/// The files testmon-run writes in a run directory: only their owner may read them.
pub(crate) const FILE_MODE: u32 = 0o600;
pub(crate) const LOCK: &str = "lock";
pub(crate) const COLLECTED: &str = "collected.json";
/// The plan workers read (python/worker.py opens it by this name).
pub(crate) const PLAN: &str = "plan.json";

pub(crate) struct RunDir {
    path: PathBuf,
    keep: bool,
    lock: fs::File,
}

impl RunDir {
    /// Creates a fresh run directory holding the plugins, in this user's private base.
    pub(crate) fn create(keep: bool) -> Result<RunDir> {
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let name = format!("{PREFIX}{}-{stamp:x}", std::process::id());
        let path = create_in_base(&name)?;
        let lock = private_file(&path.join(LOCK))
            .and_then(|file| try_lock(&file).map(|_| file))
            .with_context(|| format!("locking run directory {}", path.display()));
        let lock = match lock {
            Ok(lock) => lock,
            Err(err) => {
                let _ = fs::remove_dir_all(&path);
                return Err(err);
            }
        };
        let dir = RunDir { path, keep, lock };
        fs::DirBuilder::new()
            .mode(DIR_MODE)
            .create(dir.python_path())?;
        dir.write_new(
            &dir.python_path().join(format!("{PROBE_MODULE}.py")),
            PROBE_SOURCE.as_bytes(),
        )?;
        dir.write_new(
            &dir.python_path().join(format!("{WORKER_MODULE}.py")),
            WORKER_SOURCE.as_bytes(),
        )?;
        dir.write_new(
            &dir.python_path().join(format!("{CONTROLLER_MODULE}.py")),
            CONTROLLER_SOURCE.as_bytes(),
        )?;
        Ok(dir)
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// The locked file's descriptor, for workers to inherit (they hold the lock too).
    pub(crate) fn lock_fd(&self) -> std::os::fd::RawFd {
        std::os::fd::AsRawFd::as_raw_fd(&self.lock)
    }

    /// The directory to put on the workers' PYTHONPATH.
    pub(crate) fn python_path(&self) -> PathBuf {
        self.path.join("python")
    }

    pub(crate) fn probe_output(&self) -> PathBuf {
        self.path.join("probe.json")
    }

    /// The run's collection (testmon's sync and the run list), written once every worker
    /// collected: what a later run needs to record this one's spools if it is killed.
    pub(crate) fn collected_path(&self) -> PathBuf {
        self.path.join(COLLECTED)
    }

    pub(crate) fn plan_path(&self) -> PathBuf {
        self.path.join(PLAN)
    }

    pub(crate) fn spool(&self, worker: &str) -> PathBuf {
        self.path.join(format!("spool-{worker}.db"))
    }

    pub(crate) fn log(&self, worker: &str) -> PathBuf {
        self.path.join(format!("{worker}.log"))
    }

    pub(crate) fn err_log(&self, worker: &str) -> PathBuf {
        self.path.join(format!("{worker}.err"))
    }

    /// The worker's own `--junitxml` file, merged into the user's after the run.
    pub(crate) fn junit(&self, worker: &str) -> PathBuf {
        self.path.join(format!("junit-{worker}.xml"))
    }

    /// Writes the plan atomically: a temp file, then a rename.
    pub(crate) fn write_plan<T: Serialize>(&self, plan: &T) -> Result<()> {
        crate::atomic::write_private(&self.plan_path(), &serde_json::to_vec_pretty(plan)?)
            .context("writing the run plan")
    }

    fn write_new(&self, path: &Path, data: &[u8]) -> Result<()> {
        let mut file = private_file(path).with_context(|| format!("writing {}", path.display()))?;
        file.write_all(data)?;
        Ok(())
    }
}

/// Takes the exclusive lock on `file` without waiting: Err(WouldBlock) when held elsewhere.
pub(crate) fn try_lock(file: &fs::File) -> std::io::Result<()> {
    let fd = std::os::fd::AsRawFd::as_raw_fd(file);
    // SAFETY: flock on a descriptor we own.
    let rc = unsafe { nix::libc::flock(fd, nix::libc::LOCK_EX | nix::libc::LOCK_NB) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

impl Drop for RunDir {
    fn drop(&mut self) {
        if self.keep {
            eprintln!("testmon-run: run directory kept at {}", self.path.display());
        } else {
            let _ = fs::remove_dir_all(&self.path);
            // The base goes with its last run directory (not while another run's is in it).
            if let Some(base) = self.path.parent() {
                let _ = fs::remove_dir(base);
            }
        }
    }
}

/// A new file only its owner may read and write (truncated if it exists).
pub(crate) fn private_file(path: &Path) -> std::io::Result<fs::File> {
    fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(FILE_MODE)
        .open(path)
}

/// This user's base for run directories: `$TMPDIR/testmon-run-<uid>`, absolute (a test that
/// changes the worker's cwd must not move the spool).
pub(crate) fn base_path() -> Result<PathBuf> {
    let tmp = std::env::temp_dir();
    let tmp = if tmp.is_absolute() {
        tmp
    } else {
        std::env::current_dir()?.join(tmp)
    };
    Ok(tmp.join(format!("{PREFIX}{}", nix::unistd::getuid())))
}

/// The base, created 0700 when missing; an existing one must be a real directory (not a
/// symlink) owned by this user and writable by nobody else, else a usage error: never a
/// silent fallback to a place others share.
pub(crate) fn private_base() -> Result<PathBuf> {
    let base = base_path()?;
    match fs::DirBuilder::new().mode(DIR_MODE).create(&base) {
        Ok(()) => {}
        Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(err) => {
            return Err(err).with_context(|| format!("creating {}", base.display()));
        }
    }
    check_private(&base)?;
    Ok(base)
}

/// `path` is a real directory of this user that nobody else may write; one that others may
/// read or enter is made private (it is ours).
pub(crate) fn check_private(path: &Path) -> Result<()> {
    let unsafe_base = |why: String| -> anyhow::Error {
        Fatal::Usage(format!(
            "{} is not a private directory of this user ({why}): remove it, or set TMPDIR",
            path.display()
        ))
        .into()
    };
    let meta = fs::symlink_metadata(path).with_context(|| format!("reading {}", path.display()))?;
    if meta.file_type().is_symlink() {
        return Err(unsafe_base("a symbolic link".into()));
    }
    if !meta.is_dir() {
        return Err(unsafe_base("not a directory".into()));
    }
    let uid = nix::unistd::getuid().as_raw();
    if meta.uid() != uid {
        return Err(unsafe_base(format!(
            "owned by uid {}, not {uid}",
            meta.uid()
        )));
    }
    let mode = meta.mode() & 0o777;
    if mode & 0o022 != 0 {
        return Err(unsafe_base(format!(
            "mode {mode:o}: others may write in it"
        )));
    }
    if mode & 0o077 != 0 {
        fs::set_permissions(path, fs::Permissions::from_mode(DIR_MODE))
            .with_context(|| format!("making {} private", path.display()))?;
    }
    Ok(())
}

/// Creates the run directory `name` (0700) in the private base. A concurrent run removes an
/// empty base as it ends: then the base is made again.
fn create_in_base(name: &str) -> Result<PathBuf> {
    let mut attempts = 0;
    loop {
        let path = private_base()?.join(name);
        match fs::DirBuilder::new().mode(DIR_MODE).create(&path) {
            Ok(()) => return Ok(path),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound && attempts < 5 => {
                attempts += 1;
            }
            Err(err) => {
                return Err(err)
                    .with_context(|| format!("creating run directory {}", path.display()))
            }
        }
    }
}
