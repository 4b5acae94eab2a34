//! One pytest worker: the user's command plus the worker plugin, in its own process group,
//! talking JSON lines over a socketpair; a reader thread turns its lines into events.

use std::ffi::OsString;
use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus, Stdio};
use std::sync::mpsc::Sender;

use anyhow::{Context, Result};
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;

use crate::pycommand;
use crate::run::events::Event;
use crate::run::protocol::{self, ToWorker};
use crate::run::rundir::WORKER_MODULE;
use crate::run::slot::WorkerHandle;

/// What one worker needs to start.
pub(crate) struct Spec<'a> {
    pub(crate) index: usize,
    /// Names this worker's files in the run directory: `gw0`, and `gw0.1`, `gw0.2`, ... for
    /// the workers that replace it.
    pub(crate) stem: String,
    /// Where the worker's testmon writes fingerprints (RunDir::spool).
    pub(crate) spool: PathBuf,
    /// Where the worker's pytest writes its JUnit XML (RunDir::junit).
    pub(crate) junit: PathBuf,
    pub(crate) count: usize,
    pub(crate) command: &'a [OsString],
    pub(crate) python_path: &'a Path,
    pub(crate) run_dir: &'a Path,
    /// The run directory's lock, held by every worker too (RunDir::lock_fd).
    pub(crate) lock_fd: std::os::fd::RawFd,
    pub(crate) datafile: Option<&'a Path>,
    pub(crate) exec_id: Option<i64>,
    pub(crate) testrun_uid: &'a str,
    /// The worker's stdout (pytest's own terminal output).
    pub(crate) log: PathBuf,
    /// The worker's stderr (pytest's usage errors, Python's fatal errors).
    pub(crate) err_log: PathBuf,
    pub(crate) color: bool,
    pub(crate) columns: usize,
    /// Stream the worker's stdout and stderr line by line as events (`-s`, live logs), a
    /// copy kept in the logs.
    pub(crate) stream: bool,
    /// xdist's `config.workerinput`, sent as the worker's first message; None when the
    /// controller adds to it first (the supervisor sends it then).
    pub(crate) workerinput: Option<serde_json::Value>,
    /// The workers it forks after its collection (the zygote: run::zygote), if any.
    pub(crate) forks: Option<&'a crate::run::zygote::Forks>,
}

/// How a worker process ended, classified once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Exit {
    Code(i32),
    Signal(i32),
}

impl Exit {
    pub(crate) fn from_status(status: ExitStatus) -> Exit {
        match (status.code(), status.signal()) {
            (Some(code), _) => Exit::Code(code),
            (None, Some(signal)) => Exit::Signal(signal),
            (None, None) => Exit::Code(-1),
        }
    }

    pub(crate) fn describe(self) -> String {
        match self {
            Exit::Code(code) => format!("exit code {code}"),
            Exit::Signal(sig) => match Signal::try_from(sig) {
                Ok(signal) => format!("killed by {signal}"),
                Err(_) => format!("killed by signal {sig}"),
            },
        }
    }
}

/// A running worker: its process group, its end of the socket, its log.
pub(crate) struct Worker {
    name: String,
    stem: String,
    child: Child,
    writer: UnixStream,
    log: PathBuf,
    err_log: PathBuf,
}

pub(crate) fn name(index: usize) -> String {
    format!("gw{index}")
}

/// The file stem of worker `index`'s `generation`-th replacement (0: the first worker).
pub(crate) fn stem(index: usize, generation: u32) -> String {
    if generation == 0 {
        name(index)
    } else {
        format!("{}.{generation}", name(index))
    }
}

impl Worker {
    pub(crate) fn spawn(spec: &Spec, events: Sender<Event>) -> Result<Worker> {
        let name = name(spec.index);
        let (ours, theirs) = UnixStream::pair().context("creating a worker socket")?;
        let their_fd: OwnedFd = theirs.into();
        let raw = their_fd.as_raw_fd();
        let lock_fd = spec.lock_fd;
        // Appending: with -s the worker's pytest writes its own output to the same log.
        let log = append_log(&spec.log)?;
        let err_log = append_log(&spec.err_log)?;
        let mut cmd =
            pycommand::with_plugin(spec.command, WORKER_MODULE, spec.python_path, spec.datafile);
        cmd.env("TESTMON_RUN_DIR", spec.run_dir)
            .env("TESTMON_RUN_WORKER", &name)
            .env("TESTMON_RUN_FD", raw.to_string())
            .env("TESTMON_RUN_SPOOL", &spec.spool)
            .env("TESTMON_RUN_JUNIT", &spec.junit)
            .env("PYTEST_XDIST_WORKER", &name)
            .env("PYTEST_XDIST_WORKER_COUNT", spec.count.to_string())
            .env("PYTEST_XDIST_TESTRUNUID", spec.testrun_uid)
            .env("COLUMNS", spec.columns.to_string())
            .stdin(Stdio::null())
            .process_group(0);
        if spec.stream {
            cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        } else {
            cmd.stdout(log.try_clone()?).stderr(err_log.try_clone()?);
        }
        if spec.workerinput.is_none() {
            // A controller runs: every report goes to it too, in pytest's serialization.
            cmd.env("TESTMON_RUN_FORWARD", "1");
        } else {
            cmd.env_remove("TESTMON_RUN_FORWARD");
        }
        if let Some(exec_id) = spec.exec_id {
            cmd.env("TESTMON_RUN_EXEC_ID", exec_id.to_string());
        }
        if spec.color {
            cmd.env("TESTMON_RUN_COLOR", "1");
        } else {
            cmd.env_remove("TESTMON_RUN_COLOR");
        }
        let mut fds = vec![raw, lock_fd];
        if let Some(forks) = spec.forks {
            cmd.env("TESTMON_RUN_FORKS", forks.env_value());
            fds.extend(forks.fds());
        } else {
            cmd.env_remove("TESTMON_RUN_FORKS");
        }
        inherit_and_reset(&mut cmd, fds);
        let mut child = cmd
            .spawn()
            .map_err(|err| pycommand::start_error(spec.command, err))
            .with_context(|| format!("starting worker {name}"))?;
        drop(their_fd);
        if let Some(stdout) = child.stdout.take() {
            stream_lines(spec.index, stdout, log, events.clone(), &name)?;
        }
        if let Some(stderr) = child.stderr.take() {
            stream_lines(spec.index, stderr, err_log, events.clone(), &name)?;
        }
        let mut writer = ours.try_clone()?;
        if let Some(input) = &spec.workerinput {
            let msg = ToWorker::WorkerInput {
                input: input.clone(),
            };
            // Into the socket's buffer: read once the worker's pytest configures.
            let _ = writer.write_all(protocol::encode(&msg).as_bytes());
        }
        let reader = ours.try_clone()?;
        let index = spec.index;
        std::thread::Builder::new()
            .name(format!("reader-{name}"))
            .spawn(move || read_lines(index, reader, &events, None))?;
        Ok(Worker {
            name,
            stem: spec.stem.clone(),
            child,
            writer,
            log: spec.log.clone(),
            err_log: spec.err_log.clone(),
        })
    }

    /// Its process id, which is also its process group's.
    pub(crate) fn pid(&self) -> i32 {
        self.child.id() as i32
    }
}

impl WorkerHandle for Worker {
    fn name(&self) -> &str {
        &self.name
    }

    fn stem(&self) -> &str {
        &self.stem
    }

    fn send(&mut self, msg: &ToWorker) {
        let _ = self.writer.write_all(protocol::encode(msg).as_bytes());
    }

    fn signal(&self, signal: Signal) {
        let _ = killpg(Pid::from_raw(self.pid()), signal);
    }

    fn try_exit(&mut self) -> Option<Exit> {
        match self.child.try_wait() {
            Ok(Some(status)) => Some(Exit::from_status(status)),
            Ok(None) => None,
            Err(_) => Some(Exit::Code(-1)),
        }
    }

    fn last_output(&self, lines: usize) -> String {
        last_output(&self.log, &self.err_log, lines)
    }
}

/// The last `lines` of a worker's stdout log and of its stderr log, for crash reports.
pub(crate) fn last_output(log: &Path, err_log: &Path, lines: usize) -> String {
    [log, err_log]
        .iter()
        .map(|path| tail(path, lines))
        .filter(|text| !text.is_empty())
        .collect::<Vec<_>>()
        .join("\n")
}

/// Between fork and exec: the worker keeps `fds` (its socket, the run directory's lock), and
/// starts with default signal dispositions and an empty mask, interrupted when this process
/// dies.
pub(crate) fn inherit_and_reset(cmd: &mut std::process::Command, fds: Vec<std::os::fd::RawFd>) {
    // SAFETY: only async-signal-safe calls (fcntl, signal, sigprocmask, prctl) between fork
    // and exec.
    unsafe {
        cmd.pre_exec(move || {
            for &fd in &fds {
                let flags = nix::libc::fcntl(fd, nix::libc::F_GETFD);
                if flags < 0
                    || nix::libc::fcntl(fd, nix::libc::F_SETFD, flags & !nix::libc::FD_CLOEXEC) < 0
                {
                    return Err(std::io::Error::last_os_error());
                }
            }
            // Whatever we inherited (a background job starts with SIGINT ignored),
            // workers start with default dispositions: pytest relies on SIGINT.
            for sig in [
                nix::libc::SIGINT,
                nix::libc::SIGTERM,
                nix::libc::SIGHUP,
                nix::libc::SIGQUIT,
            ] {
                nix::libc::signal(sig, nix::libc::SIG_DFL);
            }
            // ... and an empty signal mask (a blocked SIGINT would never reach pytest).
            let mut empty: nix::libc::sigset_t = std::mem::zeroed();
            nix::libc::sigemptyset(&mut empty);
            nix::libc::sigprocmask(nix::libc::SIG_SETMASK, &empty, std::ptr::null_mut());
            // A worker whose supervisor dies (kill -9) is interrupted as by Ctrl-C: it
            // writes what it finished and exits instead of running on.
            nix::libc::prctl(nix::libc::PR_SET_PDEATHSIG, nix::libc::SIGINT);
            Ok(())
        });
    }
}

/// The last `lines` lines of a file.
pub(crate) fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read(path).unwrap_or_default();
    let text = String::from_utf8_lossy(&text);
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

impl Drop for Worker {
    fn drop(&mut self) {
        // No worker, nor anything it started in its process group (a test's forked child),
        // outlives the supervisor's handle on it.
        self.signal(Signal::SIGKILL);
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.wait();
        }
    }
}

/// An empty log opened for appending (O_APPEND: two writers never overwrite each other).
pub(crate) fn append_log(path: &Path) -> Result<File> {
    crate::run::rundir::private_file(path)
        .and_then(|_| std::fs::OpenOptions::new().append(true).open(path))
        .with_context(|| format!("creating {}", path.display()))
}

/// Forwards a worker's output line by line (never a partial line), copying it to its log.
fn stream_lines(
    worker: usize,
    pipe: impl std::io::Read + Send + 'static,
    mut log: File,
    events: Sender<Event>,
    name: &str,
) -> Result<()> {
    std::thread::Builder::new()
        .name(format!("output-{name}"))
        .spawn(move || {
            each_line(pipe, |line| {
                let _ = log.write_all(line);
                let text = String::from_utf8_lossy(line);
                let text = text.strip_suffix('\n').unwrap_or(&text);
                let text = text.strip_suffix('\r').unwrap_or(text).to_string();
                let _ = events.send(Event::Output { worker, line: text });
                true // keep draining: a writer left behind must never block on a full pipe
            });
        })?;
    Ok(())
}

/// Turns a worker's lines into events until its socket closes; `pid`, when given, learns the
/// worker's process id from its hello (a forked worker: run::zygote).
pub(crate) fn read_lines(
    worker: usize,
    stream: UnixStream,
    events: &Sender<Event>,
    pid: Option<&std::sync::atomic::AtomicI32>,
) {
    let mut supervisor_listens = true;
    each_line(stream, |line| {
        if !line.ends_with(b"\n") {
            // The worker died in the middle of a message: its exit tells the rest.
            return false;
        }
        let text = String::from_utf8_lossy(line);
        let event = match protocol::parse(text.trim_end()) {
            Ok(msg) => {
                if let (Some(cell), protocol::FromWorker::Hello { pid: Some(id), .. }) = (pid, &msg)
                {
                    cell.store(*id, std::sync::atomic::Ordering::SeqCst);
                }
                Event::Message { worker, msg }
            }
            Err(detail) => Event::Garbage { worker, detail },
        };
        supervisor_listens = events.send(event).is_ok();
        supervisor_listens
    });
    if supervisor_listens {
        let _ = events.send(Event::Closed { worker });
    }
}

/// Calls `f` with each line read (newline included; the last may lack one) until the end,
/// a read error, or `f` returning false.
fn each_line(reader: impl std::io::Read, mut f: impl FnMut(&[u8]) -> bool) {
    let mut reader = BufReader::new(reader);
    let mut line = Vec::new();
    loop {
        line.clear();
        match reader.read_until(b'\n', &mut line) {
            Ok(0) | Err(_) => break,
            Ok(_) => {
                if !f(&line) {
                    break;
                }
            }
        }
    }
}
