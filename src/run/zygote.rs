//! Workers forked from the first one after its collection (the zygote): one interpreter
//! start, plugin import and collection instead of N.
//!
//! gw0 is started as every worker is, with one more socket for each worker it forks
//! (`TESTMON_RUN_FORKS`). Once it has collected and testmon has selected, it forks gw1 ...
//! gwN-1 (python/worker.py `Zygote`): each its own process group, socket, logs, spool, JUnit
//! file and pytest capture; nothing SQLite opened before the fork is used after it. The forks
//! are double-forked and this process is their subreaper, so each fork is this process's
//! child: reaped, signalled and interrupted (parent-death signal) as a started worker is.
//! From its hello on, a fork is a worker like any other; one that replaces it is started
//! afresh, and so is a fork that never came (gw0 ended before its collection: a usage
//! error, a crash; or the fork died before its hello), unless the run is stopping. With
//! the plugins' controller a fork's `workerinput` is its own (its first message, as a
//! started worker's), though plugins that read it while configuring saw gw0's.

use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::mpsc::Sender;
use std::sync::Arc;

use anyhow::{Context, Result};
use nix::errno::Errno;
use nix::sys::signal::{kill, killpg, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use crate::run::events::Event;
use crate::run::protocol::{self, ToWorker};
use crate::run::rundir::RunDir;
use crate::run::slot::WorkerHandle;
use crate::run::worker::{self, Exit, Worker};

/// `TESTMON_RUN_ZYGOTE=0` starts every worker on its own; `=1` forks them even with
/// installed plugins.
const SWITCH: &str = "TESTMON_RUN_ZYGOTE";

/// Installed plugins whose parity with xdist the plugin suite checks with the zygote
/// (tests/integration/plugins.rs: every test but pytest-benchmark's and pytest-randomly's
/// runs with only these loaded). pytest-benchmark and pytest-randomly are not: the first
/// takes its worker from `PYTEST_XDIST_WORKER` as it configures (its gw0-only warning comes
/// from every fork), the second seeds `random` at session start, which Python reseeds in
/// each forked child.
const FORK_SAFE: &[&str] = &[
    "allure-pytest",
    "pytest-cov",
    "pytest-django",
    "pytest-github-actions-annotate-failures",
    "pytest-html",
    "pytest-json-report",
    "pytest-metadata",
    "pytest-rerunfailures",
    "pytest-timeout",
    "syrupy",
];

/// Whether gw0 forks the other workers (see `decide`), and this process can be the forks'
/// subreaper.
pub(crate) fn wanted(workers: usize, stream: bool, plugins: &[String]) -> bool {
    let switch = std::env::var(SWITCH).ok();
    decide(switch.as_deref(), workers, stream, plugins) && become_subreaper()
}

/// Two or more workers; no streamed output (each worker's stdout is a pipe of its own then);
/// every installed pytest plugin loaded (`plugins`: testmon and xdist aside) one whose parity
/// under the zygote is tested (FORK_SAFE): plugins act as pytest configures, in gw0 alone.
/// `TESTMON_RUN_ZYGOTE=1` forks whatever is installed, `=0` never.
fn decide(switch: Option<&str>, workers: usize, stream: bool, plugins: &[String]) -> bool {
    let on = match switch {
        Some("0" | "never" | "off") => false,
        Some("1" | "always" | "on") => true,
        _ => plugins.iter().all(|p| fork_safe(p)),
    };
    workers >= 2 && !stream && on
}

fn fork_safe(plugin: &str) -> bool {
    let name = plugin.to_ascii_lowercase().replace('_', "-");
    FORK_SAFE.contains(&name.as_str())
}

/// Orphans among this process's descendants (a fork whose intermediate parent exited) become
/// its children.
fn become_subreaper() -> bool {
    // SAFETY: prctl with integer arguments only.
    unsafe { nix::libc::prctl(nix::libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0 }
}

/// One fork's place, before gw0 starts.
struct End {
    index: usize,
    ours: UnixStream,
    theirs: OwnedFd,
    log: PathBuf,
    err_log: PathBuf,
}

/// The sockets and files of the workers gw0 forks.
pub(crate) struct Forks {
    ends: Vec<End>,
    value: String,
}

impl Forks {
    /// Sockets and log files for workers 1..count (their first incarnation).
    pub(crate) fn new(run_dir: &RunDir, count: usize) -> Result<Forks> {
        let mut ends = Vec::new();
        let mut listed = Vec::new();
        for index in 1..count {
            let stem = worker::stem(index, 0);
            let (ours, theirs) = UnixStream::pair().context("creating a worker socket")?;
            let theirs: OwnedFd = theirs.into();
            let (log, err_log) = (run_dir.log(&stem), run_dir.err_log(&stem));
            worker::append_log(&log)?;
            worker::append_log(&err_log)?;
            listed.push(serde_json::json!({
                "name": worker::name(index),
                "fd": theirs.as_raw_fd(),
                "spool": run_dir.spool(&stem),
                "junit": run_dir.junit(&stem),
                "log": log,
                "err": err_log,
            }));
            ends.push(End {
                index,
                ours,
                theirs,
                log,
                err_log,
            });
        }
        let zygote = worker::stem(0, 0);
        let value = serde_json::json!({
            "supervisor": std::process::id(),
            "log": run_dir.log(&zygote),
            "err": run_dir.err_log(&zygote),
            "forks": listed,
        })
        .to_string();
        Ok(Forks { ends, value })
    }

    /// `TESTMON_RUN_FORKS` for gw0.
    pub(crate) fn env_value(&self) -> &str {
        &self.value
    }

    /// The forks' ends of their sockets, which gw0 inherits.
    pub(crate) fn fds(&self) -> Vec<RawFd> {
        self.ends.iter().map(|end| end.theirs.as_raw_fd()).collect()
    }

    /// Once gw0 (`zygote`, its pid) runs: the forks' handles, their sockets read from now on.
    pub(crate) fn into_handles(self, zygote: i32, events: &Sender<Event>) -> Result<Vec<Forked>> {
        let mut handles = Vec::new();
        for end in self.ends {
            drop(end.theirs);
            let pid = Arc::new(AtomicI32::new(0));
            let reader = end.ours.try_clone()?;
            let (index, events) = (end.index, events.clone());
            let pid_seen = pid.clone();
            let name = worker::name(end.index);
            std::thread::Builder::new()
                .name(format!("reader-{name}"))
                .spawn(move || worker::read_lines(index, reader, &events, Some(&pid_seen)))?;
            handles.push(Forked {
                stem: worker::stem(end.index, 0),
                name,
                writer: end.ours,
                pid,
                zygote,
                log: end.log,
                err_log: end.err_log,
            });
        }
        Ok(handles)
    }
}

/// A worker gw0 forked: known by the pid its hello names.
pub(crate) struct Forked {
    name: String,
    stem: String,
    writer: UnixStream,
    /// 0 until its hello.
    pid: Arc<AtomicI32>,
    /// gw0's pid (and process group): the fork's group until it has its own.
    zygote: i32,
    log: PathBuf,
    err_log: PathBuf,
}

impl Forked {
    fn pid(&self) -> Option<Pid> {
        match self.pid.load(Ordering::SeqCst) {
            0 => None,
            pid => Some(Pid::from_raw(pid)),
        }
    }
}

impl WorkerHandle for Forked {
    fn name(&self) -> &str {
        &self.name
    }

    fn stem(&self) -> &str {
        &self.stem
    }

    fn send(&mut self, msg: &ToWorker) {
        let _ = std::io::Write::write_all(&mut self.writer, protocol::encode(msg).as_bytes());
    }

    fn signal(&self, signal: Signal) {
        // Before its hello the fork is still in gw0's process group, or not forked yet.
        let group = self.pid().unwrap_or(Pid::from_raw(self.zygote));
        let _ = killpg(group, signal);
    }

    fn try_exit(&mut self) -> Option<Exit> {
        // Not forked yet, or never (`unborn`): no process of its own to reap.
        let pid = self.pid()?;
        match waitpid(pid, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(_, code)) => Some(Exit::Code(code)),
            Ok(WaitStatus::Signaled(_, signal, _)) => Some(Exit::Signal(signal as i32)),
            Ok(_) => None,
            // Not this process's child yet: its intermediate parent is exiting.
            Err(Errno::ECHILD) => match kill(pid, None) {
                Err(Errno::ESRCH) => Some(Exit::Code(-1)),
                _ => None,
            },
            Err(_) => Some(Exit::Code(-1)),
        }
    }

    fn unborn(&self) -> bool {
        self.pid().is_none()
    }

    fn last_output(&self, lines: usize) -> String {
        worker::last_output(&self.log, &self.err_log, lines)
    }
}

impl Drop for Forked {
    fn drop(&mut self) {
        if let Some(pid) = self.pid() {
            let _ = killpg(pid, Signal::SIGKILL);
            let _ = waitpid(pid, None);
        }
    }
}

/// A worker the supervisor holds: started by it, or forked by gw0.
pub(crate) enum Process {
    Started(Worker),
    Forked(Forked),
}

impl WorkerHandle for Process {
    fn name(&self) -> &str {
        match self {
            Process::Started(w) => w.name(),
            Process::Forked(w) => w.name(),
        }
    }

    fn stem(&self) -> &str {
        match self {
            Process::Started(w) => w.stem(),
            Process::Forked(w) => w.stem(),
        }
    }

    fn send(&mut self, msg: &ToWorker) {
        match self {
            Process::Started(w) => w.send(msg),
            Process::Forked(w) => w.send(msg),
        }
    }

    fn signal(&self, signal: Signal) {
        match self {
            Process::Started(w) => w.signal(signal),
            Process::Forked(w) => w.signal(signal),
        }
    }

    fn try_exit(&mut self) -> Option<Exit> {
        match self {
            Process::Started(w) => w.try_exit(),
            Process::Forked(w) => w.try_exit(),
        }
    }

    fn unborn(&self) -> bool {
        match self {
            Process::Started(_) => false,
            Process::Forked(w) => w.unborn(),
        }
    }

    fn last_output(&self, lines: usize) -> String {
        match self {
            Process::Started(w) => w.last_output(lines),
            Process::Forked(w) => w.last_output(lines),
        }
    }
}

#[cfg(test)]
mod tests {
    //! Forks' handles with real processes: a child of this test process says hello with its
    //! pid on a fork's socket (as a fork of gw0 would), or the socket closes without one.

    use std::io::Write;
    use std::os::fd::FromRawFd;
    use std::sync::mpsc;
    use std::time::Instant;

    use super::*;

    fn env(forks: &Forks) -> serde_json::Value {
        serde_json::from_str(forks.env_value()).unwrap()
    }

    #[test]
    fn the_zygote_is_used_with_two_workers_no_stream_and_tested_plugins_only() {
        let none: Vec<String> = Vec::new();
        let tested = vec!["pytest-cov".to_string(), "pytest_django".to_string()];
        let untested = vec!["pytest-cov".to_string(), "hypothesis".to_string()];
        let benchmark = vec!["pytest-benchmark".to_string()];
        assert!(decide(None, 2, false, &none));
        assert!(
            decide(None, 8, false, &tested),
            "names as pip spells them or not"
        );
        assert!(!decide(None, 2, false, &untested));
        assert!(!decide(None, 2, false, &benchmark));
        assert!(
            !decide(None, 1, false, &none),
            "one worker: nothing to fork"
        );
        assert!(!decide(None, 2, true, &none), "-s: each worker's own pipe");
        assert!(decide(Some("1"), 2, false, &untested));
        assert!(!decide(Some("1"), 2, true, &none));
        assert!(!decide(Some("0"), 2, false, &none));
        assert!(decide(Some(""), 2, false, &none), "empty: as unset");
    }

    #[test]
    fn forks_are_told_their_names_sockets_and_files_and_known_by_their_hello() {
        let run_dir = RunDir::create(false).unwrap();
        let forks = Forks::new(&run_dir, 3).unwrap();
        let value = env(&forks);
        assert_eq!(value["supervisor"], std::process::id());
        assert_eq!(value["log"], serde_json::json!(run_dir.log("gw0")));
        let listed = value["forks"].as_array().unwrap();
        let names: Vec<&str> = listed.iter().map(|f| f["name"].as_str().unwrap()).collect();
        assert_eq!(names, ["gw1", "gw2"]);
        let fds: Vec<i64> = listed.iter().map(|f| f["fd"].as_i64().unwrap()).collect();
        assert_eq!(
            fds,
            forks
                .fds()
                .iter()
                .map(|&fd| i64::from(fd))
                .collect::<Vec<_>>()
        );
        for f in listed {
            let stem = f["name"].as_str().unwrap();
            assert_eq!(f["spool"], serde_json::json!(run_dir.spool(stem)));
            assert_eq!(f["junit"], serde_json::json!(run_dir.junit(stem)));
            // The fork appends to its logs: they exist, empty.
            for key in ["log", "err"] {
                let path = PathBuf::from(f[key].as_str().unwrap());
                assert_eq!(std::fs::read(&path).unwrap(), b"", "{}", path.display());
            }
        }
        // What gw0 would hold: its ends of the two sockets.
        let theirs: Vec<std::fs::File> = forks
            .fds()
            .iter()
            .map(|&fd| unsafe { std::fs::File::from_raw_fd(nix::unistd::dup(fd).unwrap()) })
            .collect();
        let (tx, rx) = mpsc::channel();
        let mut handles = forks.into_handles(0, &tx).unwrap();
        let [mut theirs1, theirs2]: [std::fs::File; 2] = theirs.try_into().unwrap();

        // gw1 forked: a real process (this test's child, as a fork is the supervisor's).
        let mut child = std::process::Command::new("sleep")
            .arg("60")
            .spawn()
            .unwrap();
        let hello = format!(
            r#"{{"t":"hello","protocol":1,"worker":"gw1","pid":{}}}"#,
            child.id()
        );
        theirs1.write_all(format!("{hello}\n").as_bytes()).unwrap();
        let event = rx.recv_timeout(std::time::Duration::from_secs(10)).unwrap();
        assert!(
            matches!(event, Event::Message { worker: 1, .. }),
            "{event:?}"
        );
        assert!(!handles[0].unborn());
        assert_eq!(handles[0].try_exit(), None, "running");
        // Its own process group is its pid: signalled there. (`sleep` shares this test's
        // group, so it is killed by pid here.)
        nix::sys::signal::kill(Pid::from_raw(child.id() as i32), Signal::SIGKILL).unwrap();
        let deadline = Instant::now() + std::time::Duration::from_secs(10);
        let exit = loop {
            if let Some(exit) = handles[0].try_exit() {
                break exit;
            }
            assert!(Instant::now() < deadline, "never reaped");
            std::thread::sleep(std::time::Duration::from_millis(10));
        };
        assert_eq!(exit, Exit::Signal(9));
        assert!(child.try_wait().is_err(), "reaped by the handle");

        // gw2 never came: no process of its own; its socket closes without a hello (the
        // supervisor then starts it afresh: supervisor.rs).
        assert!(handles[1].unborn());
        assert_eq!(handles[1].try_exit(), None);
        drop(theirs2);
        let event = rx.recv_timeout(std::time::Duration::from_secs(10)).unwrap();
        assert!(matches!(event, Event::Closed { worker: 2 }), "{event:?}");
        assert!(handles[1].unborn());
        assert_eq!(handles[1].try_exit(), None);
    }
}
