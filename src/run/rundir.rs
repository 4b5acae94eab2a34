//! The run directory: the embedded plugins, the plan, the workers' spools and logs.
//! It lives under the system temp directory and is removed when dropped (unless kept).
//!
//! Its `lock` file is held (flock) by the supervisor and inherited by every worker, so a
//! directory whose lock is free and whose owner is gone was left by a run that was killed
//! (see `recover`).

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::Serialize;

/// The probe plugin, imported by pytest as `-p _testmon_run_probe`.
pub(crate) const PROBE_MODULE: &str = "_testmon_run_probe";
/// The worker plugin, imported by pytest as `-p _testmon_run_worker`.
pub(crate) const WORKER_MODULE: &str = "_testmon_run_worker";
const PROBE_SOURCE: &str = include_str!("../../python/probe.py");
const WORKER_SOURCE: &str = include_str!("../../python/worker.py");

/// Run directories are named `testmon-run-<pid>-<stamp>` in this directory.
pub(crate) const PREFIX: &str = "testmon-run-";
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
    /// Creates a fresh run directory holding the plugins.
    pub(crate) fn create(keep: bool) -> Result<RunDir> {
        // Absolute: a test that changes the worker's cwd must not move the spool.
        let base = std::env::temp_dir();
        let base = if base.is_absolute() {
            base
        } else {
            std::env::current_dir()?.join(base)
        };
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let path = base.join(format!("{PREFIX}{}-{stamp:x}", std::process::id()));
        fs::create_dir(&path)
            .with_context(|| format!("creating run directory {}", path.display()))?;
        let lock = fs::File::create(path.join(LOCK))
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
        fs::create_dir(dir.python_path())?;
        dir.write_new(
            &dir.python_path().join(format!("{PROBE_MODULE}.py")),
            PROBE_SOURCE.as_bytes(),
        )?;
        dir.write_new(
            &dir.python_path().join(format!("{WORKER_MODULE}.py")),
            WORKER_SOURCE.as_bytes(),
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
        crate::atomic::write(&self.plan_path(), &serde_json::to_vec_pretty(plan)?)
            .context("writing the run plan")
    }

    fn write_new(&self, path: &Path, data: &[u8]) -> Result<()> {
        let mut file =
            fs::File::create(path).with_context(|| format!("writing {}", path.display()))?;
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
        }
    }
}
