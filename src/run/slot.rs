//! One worker place in the run: the worker process behind a handle, its lifecycle, what it
//! collected and what it asked for. (Which tests it holds is the ledger's.)

use std::collections::HashSet;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use crate::run::protocol::{CollectError, ToWorker};
use crate::run::worker::Exit;

/// How long after a worker's exit its socket may stay open (a forked child holding it).
pub(crate) const LINGER: Duration = Duration::from_secs(2);

/// What the supervisor needs of a worker process: the real one (run::worker::Worker) or a
/// fake in the supervisor's unit tests.
pub(crate) trait WorkerHandle {
    /// `gw0`, `gw1`, ...: a replacement keeps the name of the worker it replaces.
    fn name(&self) -> &str;
    /// Names its files in the run directory: `gw0`, `gw0.1` for its first replacement, ...
    fn stem(&self) -> &str;
    /// Sends one message; a worker that is gone is not an error here (its exit is).
    fn send(&mut self, msg: &ToWorker);
    /// Signals its whole process group.
    fn signal(&self, signal: Signal);
    /// Its exit, once the process has ended (reaped then).
    fn try_exit(&mut self) -> Option<Exit>;
    /// The last lines it printed, for crash reports.
    fn last_output(&self, lines: usize) -> String;
    /// Not yet a process of its own: a fork gw0 has not made, or that has not said hello
    /// (run::zygote). Once its socket has closed it never will be: it is started afresh in
    /// its place, not a crash.
    fn unborn(&self) -> bool {
        false
    }
}

/// A worker's lifecycle, in this order.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Lifecycle {
    /// Running; it may ask for work and get it.
    Live,
    /// Told to shut down (or to stop): it gets nothing more and ends its session.
    ShuttingDown,
    /// Its process ended; it is reaped once its socket closed, or LINGER after the exit.
    Exited { exit: Exit, at: Instant },
    /// Reaped: how it ended has been dealt with.
    Reaped,
}

/// Why the supervisor killed a worker itself.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Kill {
    /// Its test ran past --timeout.
    Timeout,
    /// It spoke garbage or another protocol: a replacement would too.
    Refused,
}

/// A worker's collection, as it reported it.
pub(crate) struct Collected {
    pub(crate) nodeids: Vec<String>,
    pub(crate) deselected: u64,
    pub(crate) user_deselected: Vec<String>,
    pub(crate) sync: Option<Vec<String>>,
    pub(crate) collect_errors: Vec<CollectError>,
    pub(crate) tm_message: Option<String>,
    /// Files scheduled whole under `--dist loadscope` (protocol: `whole_files`).
    pub(crate) whole_files: Vec<String>,
    /// Scopes and files whose units are never split (protocol: `bound`).
    pub(crate) bound: Vec<String>,
}

pub(crate) struct Slot<W> {
    pub(crate) worker: W,
    pub(crate) lifecycle: Lifecycle,
    /// Its incarnation: 0 for the first worker, n for its n-th replacement.
    pub(crate) generation: u32,
    pub(crate) collected: Option<Collected>,
    /// None: every test of the run list; Some: only these (its collection differed).
    pub(crate) eligible: Option<HashSet<String>>,
    /// The worker asked for work, holding this many tests of its own; with 0 it is idle
    /// and waits (parked) until work is given back or the run is over.
    pub(crate) wants: Option<usize>,
    /// Its end of the socket closed.
    pub(crate) closed: bool,
    /// The pytest exit status it reported at the end of its session.
    pub(crate) finished: Option<i32>,
    /// xdist's `config.workeroutput` it reported at the end of its session.
    pub(crate) workeroutput: Option<serde_json::Value>,
    /// When the test it runs now (the first it holds) started.
    pub(crate) running_since: Option<Instant>,
    pub(crate) killed: Option<Kill>,
}

impl<W: WorkerHandle> Slot<W> {
    pub(crate) fn new(worker: W, generation: u32) -> Slot<W> {
        Slot {
            worker,
            lifecycle: Lifecycle::Live,
            generation,
            collected: None,
            eligible: None,
            wants: None,
            closed: false,
            finished: None,
            workeroutput: None,
            running_since: None,
            killed: None,
        }
    }

    /// Its process has not ended (as far as the supervisor knows).
    pub(crate) fn running(&self) -> bool {
        matches!(self.lifecycle, Lifecycle::Live | Lifecycle::ShuttingDown)
    }

    pub(crate) fn reaped(&self) -> bool {
        self.lifecycle == Lifecycle::Reaped
    }

    /// May get work: its process runs and it was not told to shut down.
    pub(crate) fn live(&self) -> bool {
        self.lifecycle == Lifecycle::Live
    }

    /// Tells it to end its session ([`ToWorker::Shutdown`] or [`ToWorker::Stop`]).
    pub(crate) fn shut_down(&mut self, msg: ToWorker) {
        self.wants = None;
        if self.lifecycle == Lifecycle::Live {
            self.lifecycle = Lifecycle::ShuttingDown;
        }
        self.worker.send(&msg);
    }

    /// Signals its process group unless it has ended.
    pub(crate) fn signal(&self, signal: Signal) {
        if self.running() {
            self.worker.signal(signal);
        }
    }

    /// Kills its process group on purpose; its exit is then reaped as a crash.
    pub(crate) fn kill(&mut self, why: Kill) {
        self.killed.get_or_insert(why);
        self.worker.signal(Signal::SIGKILL);
    }

    /// Notes the exit of its process, if it ended now.
    pub(crate) fn poll_exit(&mut self) {
        if self.running() {
            if let Some(exit) = self.worker.try_exit() {
                self.lifecycle = Lifecycle::Exited {
                    exit,
                    at: Instant::now(),
                };
            }
        }
    }

    /// Its exit, once it may be reaped: the socket closed (all its messages read), or
    /// LINGER after the exit (a forked child holds the socket open).
    pub(crate) fn reapable(&self) -> Option<Exit> {
        match self.lifecycle {
            Lifecycle::Exited { exit, at } if self.closed || at.elapsed() >= LINGER => Some(exit),
            _ => None,
        }
    }

    /// Its test ran past `timeout` and it was not killed yet.
    pub(crate) fn overdue(&self, timeout: Duration) -> bool {
        self.running()
            && self.killed.is_none()
            && self.running_since.is_some_and(|at| at.elapsed() > timeout)
    }
}
