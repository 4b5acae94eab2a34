//! What the supervisor tells the world while it runs, as typed events: the supervisor never
//! prints or writes a file; a sink turns its events into the live display (ui::Display), a
//! file (the collection for stale-run recovery), or a record for the unit tests.

use crate::run::protocol::Report;
use crate::shard::partition::Share;

/// The schedule starts: every worker has collected.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Scheduled<'a> {
    /// The run's list, in testmon's order.
    pub(crate) run_list: &'a [String],
    /// What testmon's end-of-collection sync keeps (None: no sync).
    pub(crate) sync: Option<&'a [String]>,
    pub(crate) deselected: u64,
    /// testmon's own header words (changed files, unchanged files, environment).
    pub(crate) tm_message: Option<&'a str>,
    /// The run's expected seconds: Σ of the tests' recorded durations (the median for those
    /// unknown); None when testmon has recorded none of them (a new database).
    pub(crate) expected: Option<f64>,
    /// With `--shard`: this shard's part of the selection (`run_list` is that part).
    pub(crate) share: Option<&'a Share>,
}

/// The events of a run, in the order they happen. Workers are named by index.
/// Every method does nothing unless a sink cares for that event.
pub(crate) trait Sink {
    /// Every worker has collected: the run's list is known and the schedule starts.
    fn scheduled(&mut self, _run: &Scheduled) {}
    /// The user's plugins' lines for pytest's header (from the controller).
    fn plugin_header(&mut self, _lines: &[String]) {}
    /// `worker` started `nodeid`, the first test it holds.
    fn test_started(&mut self, _worker: usize, _nodeid: &str) {}
    /// `worker` reported `nodeid`, expected to take `cost` seconds.
    fn test_finished(&mut self, _worker: usize, _nodeid: &str, _reports: &[Report], _cost: f64) {}
    /// `worker` died under `nodeid` (crash, timeout, protocol error): its error report.
    fn test_lost(&mut self, _worker: usize, _nodeid: &str, _report: &Report, _cost: f64) {}
    /// `count` tests `worker` had reported (of `cost` expected seconds) run again: their
    /// records were lost with it.
    fn run_again(&mut self, _worker: usize, _count: usize, _cost: f64) {}
    /// A new worker took the place of `worker`: restart `restarts` of at most `max`.
    fn worker_replaced(&mut self, _worker: usize, _restarts: u32, _max: u32) {}
    /// One complete line a worker printed (`-s`, live logs), without its newline.
    fn output(&mut self, _worker: usize, _line: &str) {}
    /// `worker` has collected `ids` (after testmon's selection); `failed` are its failed
    /// collections' reports in pytest's own serialization (sent only when a controller
    /// runs).
    fn worker_ready(&mut self, _worker: usize, _ids: &[String], _failed: &[serde_json::Value]) {}
    /// A test's reports in pytest's own serialization (sent only when a controller runs).
    fn forward(&mut self, _worker: usize, _reports: &[serde_json::Value]) {}
    /// `worker` has ended: its `workeroutput`, and what went wrong when it crashed.
    fn worker_down(
        &mut self,
        _worker: usize,
        _output: Option<&serde_json::Value>,
        _error: Option<&str>,
    ) {
    }
    /// About every 50 ms while the run goes on.
    fn tick(&mut self) {}
    /// The run is over (every worker reaped).
    fn finish(&mut self) {}
}

/// Two sinks that both see every event, `A`'s first.
pub(crate) struct Tee<A, B>(pub(crate) A, pub(crate) B);

impl<A: Sink, B: Sink> Sink for Tee<A, B> {
    fn scheduled(&mut self, run: &Scheduled) {
        self.0.scheduled(run);
        self.1.scheduled(run);
    }
    fn plugin_header(&mut self, lines: &[String]) {
        self.0.plugin_header(lines);
        self.1.plugin_header(lines);
    }
    fn test_started(&mut self, worker: usize, nodeid: &str) {
        self.0.test_started(worker, nodeid);
        self.1.test_started(worker, nodeid);
    }
    fn test_finished(&mut self, worker: usize, nodeid: &str, reports: &[Report], cost: f64) {
        self.0.test_finished(worker, nodeid, reports, cost);
        self.1.test_finished(worker, nodeid, reports, cost);
    }
    fn test_lost(&mut self, worker: usize, nodeid: &str, report: &Report, cost: f64) {
        self.0.test_lost(worker, nodeid, report, cost);
        self.1.test_lost(worker, nodeid, report, cost);
    }
    fn run_again(&mut self, worker: usize, count: usize, cost: f64) {
        self.0.run_again(worker, count, cost);
        self.1.run_again(worker, count, cost);
    }
    fn worker_replaced(&mut self, worker: usize, restarts: u32, max: u32) {
        self.0.worker_replaced(worker, restarts, max);
        self.1.worker_replaced(worker, restarts, max);
    }
    fn output(&mut self, worker: usize, line: &str) {
        self.0.output(worker, line);
        self.1.output(worker, line);
    }
    fn worker_ready(&mut self, worker: usize, ids: &[String], failed: &[serde_json::Value]) {
        self.0.worker_ready(worker, ids, failed);
        self.1.worker_ready(worker, ids, failed);
    }
    fn forward(&mut self, worker: usize, reports: &[serde_json::Value]) {
        self.0.forward(worker, reports);
        self.1.forward(worker, reports);
    }
    fn worker_down(
        &mut self,
        worker: usize,
        output: Option<&serde_json::Value>,
        error: Option<&str>,
    ) {
        self.0.worker_down(worker, output, error);
        self.1.worker_down(worker, output, error);
    }
    fn tick(&mut self) {
        self.0.tick();
        self.1.tick();
    }
    fn finish(&mut self) {
        self.0.finish();
        self.1.finish();
    }
}
