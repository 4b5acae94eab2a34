//! The controller: one more run of the user's command with python/controller.py, the
//! controller side of xdist's contract for the user's plugins (pytest-cov combining the
//! workers' coverage, pytest-html writing one report, `pytest_configure_node` filling each
//! worker's `workerinput`). It runs beside the workers; the supervisor feeds it the run's
//! events as a [`Sink`] and it answers with each worker's `workerinput` and, at the end,
//! what the plugins printed and the session's exit status.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::pycommand;
use crate::run::events::Event;
use crate::run::rundir::{private_file, CONTROLLER_MODULE};
use crate::run::sink::Sink;
use crate::run::worker;

/// Bumped with python/controller.py's PROTOCOL.
const PROTOCOL: u32 = 1;

/// What the controller needs to start.
pub(crate) struct Spec<'a> {
    pub(crate) command: &'a [std::ffi::OsString],
    pub(crate) python_path: &'a Path,
    pub(crate) run_dir: &'a Path,
    pub(crate) workers: usize,
    /// Its stdout: pytest's terminal output, of which the plugins' part is shown.
    pub(crate) out: PathBuf,
    pub(crate) err: PathBuf,
    pub(crate) color: bool,
    pub(crate) columns: usize,
}

#[derive(Debug, Deserialize)]
#[serde(tag = "t", rename_all = "snake_case")]
enum FromController {
    Hello {
        protocol: u32,
    },
    Workerinput {
        worker: String,
        generation: u32,
        input: Value,
    },
    Header {
        lines: Vec<String>,
    },
    Done {
        exitstatus: Option<i32>,
        #[serde(default)]
        text: String,
    },
}

/// How the controller's session ended.
#[derive(Debug, Default)]
pub(crate) struct Ending {
    /// pytest's exit status of its session (1 when a plugin failed the run:
    /// `--cov-fail-under`).
    pub(crate) exitstatus: Option<i32>,
    /// What the plugins printed at the end (the coverage table), as pytest shows it.
    pub(crate) text: String,
    /// Why it did not end as it should.
    pub(crate) problem: Option<String>,
}

/// Requests for a worker's `workerinput` the controller has not answered: by worker name,
/// (index, generation, the input without the plugins' part). None once the controller is
/// gone: a request is then answered at once with the input as it is.
type Pending = Arc<Mutex<Option<HashMap<String, Request>>>>;

/// A worker waiting for its `workerinput`.
struct Request {
    index: usize,
    generation: u32,
    /// The input without the plugins' part: what the worker gets should no answer come.
    input: Value,
    asked: Instant,
}

/// How long a worker waits for the controller's answer at most (its plugins configure
/// first: Django's setup may take a while); then it starts without the plugins' part.
const ANSWER_WAIT: Duration = Duration::from_secs(60);

pub(crate) struct Controller {
    child: Child,
    events: Sender<Event>,
    lines: Sender<String>,
    pending: Pending,
    /// A worker's request went unanswered for ANSWER_WAIT.
    late: Arc<AtomicBool>,
    done: Receiver<Ending>,
    err: PathBuf,
}

impl Controller {
    pub(crate) fn spawn(spec: &Spec, events: Sender<Event>) -> Result<Controller> {
        let (ours, theirs) = UnixStream::pair().context("creating the controller's socket")?;
        let their_fd: OwnedFd = theirs.into();
        let raw = their_fd.as_raw_fd();
        let out = private_file(&spec.out)
            .and_then(|_| std::fs::OpenOptions::new().append(true).open(&spec.out))
            .with_context(|| format!("creating {}", spec.out.display()))?;
        let mut err = private_file(&spec.err)
            .and_then(|_| std::fs::OpenOptions::new().append(true).open(&spec.err))
            .with_context(|| format!("creating {}", spec.err.display()))?;
        let mut cmd =
            pycommand::with_plugin(spec.command, CONTROLLER_MODULE, spec.python_path, None);
        cmd.env("TESTMON_RUN_DIR", spec.run_dir)
            .env("TESTMON_RUN_CONTROLLER", "1")
            .env("TESTMON_RUN_FD", raw.to_string())
            .env("TESTMON_RUN_WORKERS", spec.workers.to_string())
            .env("TESTMON_RUN_CONTROLLER_OUT", &spec.out)
            .env("COLUMNS", spec.columns.to_string())
            .env_remove("PYTEST_XDIST_WORKER")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(Stdio::piped())
            .process_group(0);
        if spec.color {
            cmd.env("PY_COLORS", "1");
        }
        worker::inherit_and_reset(&mut cmd, vec![raw]);
        let mut child = cmd
            .spawn()
            .map_err(|err| pycommand::start_error(spec.command, err))
            .context("starting the controller")?;
        drop(their_fd);
        if let Some(mut pipe) = child.stderr.take() {
            // As xdist's controller, whose stderr is the terminal (pytest-github-actions-
            // annotate-failures prints there); a copy is kept for the run's problems.
            std::thread::Builder::new()
                .name("controller-stderr".into())
                .spawn(move || {
                    let mut chunk = [0u8; 8192];
                    loop {
                        match std::io::Read::read(&mut pipe, &mut chunk) {
                            Ok(0) | Err(_) => break,
                            Ok(n) => {
                                let _ = err.write_all(&chunk[..n]);
                                let _ = std::io::stderr().write_all(&chunk[..n]);
                            }
                        }
                    }
                })?;
        }

        let (lines, to_send) = mpsc::channel::<String>();
        let mut writer = ours.try_clone()?;
        std::thread::Builder::new()
            .name("controller-writer".into())
            .spawn(move || {
                // Its own thread: a slow controller never holds up the supervisor.
                for line in to_send {
                    if writer.write_all(line.as_bytes()).is_err() {
                        break;
                    }
                }
            })?;
        let pending: Pending = Arc::new(Mutex::new(Some(HashMap::new())));
        let (done_tx, done) = mpsc::channel();
        let reader_pending = Arc::clone(&pending);
        let reader_events = events.clone();
        std::thread::Builder::new()
            .name("controller-reader".into())
            .spawn(move || read(ours, &reader_events, &reader_pending, &done_tx))?;
        let late = Arc::new(AtomicBool::new(false));
        let (watched, watch_events, watch_late) =
            (Arc::clone(&pending), events.clone(), Arc::clone(&late));
        std::thread::Builder::new()
            .name("controller-watch".into())
            .spawn(move || watch(&watched, &watch_events, &watch_late, ANSWER_WAIT))?;
        Ok(Controller {
            child,
            events,
            lines,
            pending,
            late,
            done,
            err: spec.err.clone(),
        })
    }

    fn send(&self, msg: &Value) {
        let _ = self.lines.send(format!("{msg}\n"));
    }

    /// Asks for the `workerinput` of worker `index`'s `generation`-th incarnation; it comes
    /// back as an [`Event::WorkerInput`] (`input` as it is, should the controller be gone).
    pub(crate) fn configure(&self, index: usize, generation: u32, input: Value) {
        let name = worker::name(index);
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        let Some(waiting) = pending.as_mut() else {
            let _ = self.events.send(Event::WorkerInput {
                worker: index,
                generation,
                input,
            });
            return;
        };
        waiting.insert(
            name.clone(),
            Request {
                index,
                generation,
                input: input.clone(),
                asked: Instant::now(),
            },
        );
        drop(pending);
        self.send(
            &json!({"t": "configure", "worker": name, "generation": generation, "input": input}),
        );
    }

    /// Ends the controller's session (its plugins' `pytest_sessionfinish` and terminal
    /// summary run now; as after Ctrl-C when the run was `interrupted`) and waits for what
    /// it printed, `patience` at most.
    pub(crate) fn finish(mut self, interrupted: bool, patience: Duration) -> Ending {
        self.send(&json!({"t": "finish", "interrupted": interrupted}));
        let deadline = Instant::now() + patience;
        let mut ending = self
            .done
            .recv_timeout(patience)
            .unwrap_or_else(|_| Ending::default());
        if self.late.load(Ordering::Relaxed) && ending.problem.is_none() {
            ending.problem = Some(format!(
                "the controller did not answer within {} s: workers started without its \
                 plugins' workerinput",
                ANSWER_WAIT.as_secs()
            ));
        }
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) => {
                    if ending.exitstatus.is_none() && ending.problem.is_none() {
                        return Ending {
                            problem: Some(format!(
                                "the controller (plugins' xdist-controller side) ended with {}: {}",
                                worker::Exit::from_status(status).describe(),
                                worker::tail(&self.err, 1)
                            )),
                            ..ending
                        };
                    }
                    return ending;
                }
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(10));
                }
                _ => {
                    self.kill();
                    return Ending {
                        problem: Some(format!(
                            "the controller (plugins' xdist-controller side) did not end within {} s",
                            patience.as_secs()
                        )),
                        ..ending
                    };
                }
            }
        }
    }

    fn kill(&mut self) {
        let _ = killpg(Pid::from_raw(self.child.id() as i32), Signal::SIGKILL);
        let _ = self.child.wait();
    }
}

impl Drop for Controller {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            self.kill();
        }
    }
}

/// The controller's messages: `workerinput` to the supervisor's loop, the end to
/// [`Controller::finish`]; once it is gone, every request not answered is answered with the
/// input as it was.
fn read(stream: UnixStream, events: &Sender<Event>, pending: &Pending, done: &Sender<Ending>) {
    for line in BufReader::new(stream).lines() {
        let Ok(line) = line else { break };
        match serde_json::from_str::<FromController>(&line) {
            Ok(FromController::Hello { protocol }) if protocol != PROTOCOL => {
                let _ = done.send(Ending {
                    problem: Some(format!(
                        "the controller speaks protocol {protocol}, this testmon-run {PROTOCOL}"
                    )),
                    ..Ending::default()
                });
                break;
            }
            Ok(FromController::Hello { .. }) => {}
            Ok(FromController::Workerinput {
                worker,
                generation,
                input,
            }) => {
                let index = pending
                    .lock()
                    .ok()
                    .and_then(|mut p| p.as_mut().and_then(|p| p.remove(&worker)))
                    .map(|request| request.index);
                if let Some(index) = index {
                    let _ = events.send(Event::WorkerInput {
                        worker: index,
                        generation,
                        input,
                    });
                }
            }
            Ok(FromController::Header { lines }) => {
                let _ = events.send(Event::PluginHeader(lines));
            }
            Ok(FromController::Done { exitstatus, text }) => {
                let _ = done.send(Ending {
                    exitstatus,
                    text,
                    problem: None,
                });
            }
            Err(_) => {}
        }
    }
    let left: Vec<_> = pending
        .lock()
        .map(|mut p| p.take().unwrap_or_default().into_values().collect())
        .unwrap_or_default();
    for request in left {
        answer_as_is(events, request);
    }
}

fn answer_as_is(events: &Sender<Event>, request: Request) {
    let _ = events.send(Event::WorkerInput {
        worker: request.index,
        generation: request.generation,
        input: request.input,
    });
}

/// Answers, with the input as it is, a request the controller has left unanswered for
/// ANSWER_WAIT (a plugin's configure that hangs must not hang the run); ends with the
/// controller.
fn watch(pending: &Pending, events: &Sender<Event>, late: &AtomicBool, wait: Duration) {
    loop {
        std::thread::sleep(Duration::from_millis(200));
        let mut guard = pending.lock().unwrap_or_else(|e| e.into_inner());
        let Some(waiting) = guard.as_mut() else {
            return;
        };
        let overdue: Vec<String> = waiting
            .iter()
            .filter(|(_, request)| request.asked.elapsed() >= wait)
            .map(|(name, _)| name.clone())
            .collect();
        for name in overdue {
            if let Some(request) = waiting.remove(&name) {
                late.store(true, Ordering::Relaxed);
                answer_as_is(events, request);
            }
        }
    }
}

/// The run's events, as the controller hears them (None: no controller runs, nothing is
/// sent).
pub(crate) struct Feed<'a>(pub(crate) Option<&'a Controller>);

impl Feed<'_> {
    /// Sends the message `msg` makes, when a controller runs.
    fn send(&self, msg: impl FnOnce() -> Value) {
        if let Some(controller) = self.0 {
            controller.send(&msg());
        }
    }
}

impl Sink for Feed<'_> {
    fn worker_ready(&mut self, worker: usize, ids: &[String], failed: &[Value]) {
        let name = worker::name(worker);
        for report in failed {
            self.send(|| json!({"t": "collectreport", "worker": name, "report": report}));
        }
        self.send(|| json!({"t": "ready", "worker": name, "ids": ids}));
    }

    fn test_lost(
        &mut self,
        worker: usize,
        nodeid: &str,
        _report: &crate::run::protocol::Report,
        _cost: f64,
    ) {
        self.send(|| json!({"t": "crashed", "worker": worker::name(worker), "nodeid": nodeid}));
    }

    fn forward(&mut self, worker: usize, reports: &[Value]) {
        self.send(|| json!({"t": "reports", "worker": worker::name(worker), "reports": reports}));
    }

    fn worker_down(&mut self, worker: usize, output: Option<&Value>, error: Option<&str>) {
        self.send(|| {
            json!({
                "t": "down",
                "worker": worker::name(worker),
                "output": output,
                "error": error,
            })
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pending(entries: &[(&str, usize, u32)]) -> Pending {
        let map = entries
            .iter()
            .map(|&(name, index, generation)| {
                let request = Request {
                    index,
                    generation,
                    input: json!({"workerid": name}),
                    asked: Instant::now(),
                };
                (name.to_string(), request)
            })
            .collect();
        Arc::new(Mutex::new(Some(map)))
    }

    /// The controller answers gw0 and ends: gw0 gets the controller's input, gw1 (never
    /// answered) its input as it was; the session's end is handed over; a request after the
    /// controller is gone is answered at once.
    #[test]
    fn a_controller_that_ends_leaves_no_worker_waiting() {
        let (ours, mut theirs) = UnixStream::pair().unwrap();
        let (events, heard) = mpsc::channel();
        let (done, ending) = mpsc::channel();
        let waiting = pending(&[("gw0", 0, 0), ("gw1", 1, 2)]);
        let lines = [
            json!({"t": "hello", "protocol": PROTOCOL}),
            json!({"t": "header", "lines": ["Using --randomly-seed=7"]}),
            json!({"t": "workerinput", "worker": "gw0", "generation": 0,
                   "input": {"workerid": "gw0", "cov_master_host": "h"}}),
            json!({"t": "done", "exitstatus": 1, "text": "TOTAL 8 3 62%\n"}),
        ];
        for line in lines {
            writeln!(theirs, "{line}").unwrap();
        }
        writeln!(theirs, "not json").unwrap();
        drop(theirs);
        read(ours, &events, &waiting, &done);
        let got: Vec<String> = heard.try_iter().map(|e| format!("{e:?}")).collect();
        assert_eq!(got.len(), 3, "{got:#?}");
        assert!(got[0].contains("Using --randomly-seed=7"), "{got:#?}");
        assert!(got[1].contains("worker: 0") && got[1].contains("cov_master_host"));
        assert!(got[2].contains("worker: 1") && got[2].contains("generation: 2"));
        assert!(!got[2].contains("cov_master_host"));
        let end = ending.try_recv().unwrap();
        assert_eq!(end.exitstatus, Some(1));
        assert_eq!(end.text, "TOTAL 8 3 62%\n");
        assert!(waiting.lock().unwrap().is_none(), "gone: no request waits");
    }

    /// A controller that never answers (a plugin's configure hangs) does not hang the run:
    /// past the wait, the worker gets its input as it is, and the run hears it was late.
    #[test]
    fn a_silent_controller_leaves_no_worker_waiting() {
        let (events, heard) = mpsc::channel();
        let waiting = pending(&[("gw0", 0, 0)]);
        let late = Arc::new(AtomicBool::new(false));
        let (watched, watch_late) = (Arc::clone(&waiting), Arc::clone(&late));
        let watcher =
            std::thread::spawn(move || watch(&watched, &events, &watch_late, Duration::ZERO));
        let answer = heard.recv_timeout(Duration::from_secs(30)).unwrap();
        assert!(
            matches!(&answer, Event::WorkerInput { worker: 0, generation: 0, input }
                     if input["workerid"] == "gw0"),
            "{answer:?}"
        );
        assert!(late.load(Ordering::Relaxed));
        // The controller is gone: the watch ends.
        waiting.lock().unwrap().take();
        watcher.join().unwrap();
    }

    #[test]
    fn a_controller_of_another_protocol_is_refused() {
        let (ours, mut theirs) = UnixStream::pair().unwrap();
        let (events, heard) = mpsc::channel();
        let (done, ending) = mpsc::channel();
        writeln!(
            theirs,
            "{}",
            json!({"t": "hello", "protocol": PROTOCOL + 1})
        )
        .unwrap();
        drop(theirs);
        read(ours, &events, &pending(&[("gw0", 0, 0)]), &done);
        let problem = ending.try_recv().unwrap().problem.unwrap();
        assert!(problem.contains("protocol"), "{problem}");
        // gw0 is not left waiting for an answer that never comes.
        assert_eq!(heard.try_iter().count(), 1);
    }
}
