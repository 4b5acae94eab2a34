//! The one event loop that owns a run's state: workers' collections, the schedule, results,
//! crashes and signals.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use crate::report::header::Header;
use crate::run::crash_report;
use crate::run::events::{Event, SignalEvent};
use crate::run::protocol::{self, CacheReport, CollectError, FromWorker, Report, ToWorker};
use crate::run::scheduler::Dist;
use crate::run::scheduler::{self, Scheduler, Unit};
use crate::run::worker::{Exit, Worker};
use crate::ui::Ui;

const POLL: Duration = Duration::from_millis(50);
/// How long after a worker's exit its socket may stay open (a forked child holding it).
const LINGER: Duration = Duration::from_secs(2);

#[derive(Debug, Clone)]
pub(crate) struct TestResult {
    pub(crate) nodeid: String,
    pub(crate) worker: usize,
    pub(crate) reports: Vec<Report>,
}

/// Everything the run produced, for the merge and the report.
#[derive(Debug, Default)]
pub(crate) struct RunOutcome {
    /// The run's list: the first worker's collection, in testmon's order.
    pub(crate) run_list: Vec<String>,
    pub(crate) results: Vec<TestResult>,
    pub(crate) collect_errors: Vec<CollectError>,
    pub(crate) deselected: u64,
    /// The tests pytest itself deselected (-k, -m, --deselect), by the first worker.
    pub(crate) user_deselected: Vec<String>,
    pub(crate) sync: Option<Vec<String>>,
    pub(crate) interrupted: bool,
    /// The `-x`/`--maxfail` limit was reached.
    pub(crate) stopped_after: Option<u64>,
    /// Protocol errors, workers lost before collecting, workers that could not be replaced:
    /// the run ends with an internal error.
    pub(crate) problems: Vec<String>,
    /// Workers that crashed or were killed at --timeout after collecting: their test is
    /// reported as an error, the rest of their work ran elsewhere.
    pub(crate) crashes: Vec<String>,
    /// Tests that were due to run but did not (their worker crashed, nobody left to run them).
    pub(crate) not_run: Vec<String>,
    /// Each worker's pytest exit status, when it reported one.
    pub(crate) exitstatus: Vec<Option<i32>>,
    /// Warnings to show (e.g. differing collections).
    pub(crate) warnings: Vec<String>,
    /// pytest's warnings from every worker, deduplicated: (location, message).
    pub(crate) pytest_warnings: Vec<(String, String)>,
    /// Each worker's share of pytest's cache, as it reported it.
    pub(crate) caches: Vec<CacheReport>,
    /// When every worker had collected and the schedule started.
    pub(crate) scheduled_at: Option<Instant>,
    /// The tests' parts of pytest's XFAILURES, PASSES and XPASSES sections:
    /// (node id, title, text).
    pub(crate) sections: Vec<(String, String, String)>,
    /// Tests whose worker crashed while running them (failed, for pytest's cache).
    pub(crate) crashed: Vec<String>,
    /// Every worker process's file stem, replacements included, in the order they started:
    /// their spools, JUnit files and logs.
    pub(crate) stems: Vec<String>,
    /// Workers started to replace crashed ones.
    pub(crate) restarts: u32,
    /// Tests run again because their worker died before writing their records.
    pub(crate) rerun: Vec<String>,
    /// Tests reported by workers that died before sending their share of pytest's cache.
    pub(crate) cache_orphans: Vec<String>,
    /// Tests that were running when the run was interrupted and did not finish:
    /// (node id, worker name).
    pub(crate) cut_short: Vec<(String, String)>,
}

impl RunOutcome {
    /// The results of the tests named in any of `lists`, in the run's order.
    pub(crate) fn results_of(&self, lists: &[&[String]]) -> Vec<&TestResult> {
        let wanted: HashSet<&str> = lists
            .iter()
            .flat_map(|l| l.iter())
            .map(String::as_str)
            .collect();
        self.results
            .iter()
            .filter(|r| wanted.contains(r.nodeid.as_str()))
            .collect()
    }
}

/// How the run is told and when it stops.
pub(crate) struct Options {
    pub(crate) dist: Dist,
    /// Failures after which no new test starts (0: never).
    pub(crate) maxfail: u64,
    /// pytest's verbosity: 1+ a line per test, -1 no header, -2 not even failures as they come.
    pub(crate) verbose: i64,
    pub(crate) header: Header,
    /// A test running longer is stopped: its worker's process group killed and replaced.
    pub(crate) timeout: Option<Duration>,
    /// How long workers get to stop after an interrupt before their process groups are
    /// killed.
    pub(crate) grace_period: Duration,
    /// How many crashed workers are replaced, at most.
    pub(crate) max_worker_restart: u32,
    /// Where the run's collection is written as soon as it is known (RunDir::collected_path).
    pub(crate) collected_file: Option<std::path::PathBuf>,
}

/// Starts worker `index`'s `generation`-th incarnation (0: the first).
pub(crate) type Spawn<'a> = Box<dyn FnMut(usize, u32) -> anyhow::Result<Worker> + 'a>;

/// Why the supervisor killed a worker itself.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Kill {
    /// Its test ran past --timeout.
    Timeout,
    /// It spoke garbage or another protocol: a replacement would too.
    Refused,
}

struct Collected {
    nodeids: Vec<String>,
    deselected: u64,
    user_deselected: Vec<String>,
    sync: Option<Vec<String>>,
    collect_errors: Vec<CollectError>,
    tm_message: Option<String>,
}

struct Slot {
    worker: Worker,
    collected: Option<Collected>,
    /// None: every test of the run list; Some: only these (its collection differed).
    eligible: Option<HashSet<String>>,
    /// The worker asked for work, holding this many tests of its own; with 0 it is idle
    /// and waits (parked) until work is given back or the run is over.
    wants: Option<usize>,
    shut: bool,
    closed: bool,
    finished: Option<i32>,
    exit: Option<(Exit, Instant)>,
    done: bool,
    /// Indices into the run list, handed to this worker, without a result yet.
    assigned: VecDeque<usize>,
    /// The rest of the unit (scope, file) it works on, not handed out yet: a unit goes out a
    /// test or two at a time, so that -x, a crash or a timeout finds the rest here.
    backlog: VecDeque<usize>,
    /// Tests it reported whose fingerprints it has not written yet: run again if it dies.
    provisional: Vec<usize>,
    /// When the test it runs now (the first it holds) started.
    running_since: Option<Instant>,
    killed: Option<Kill>,
    generation: u32,
    /// Tests it reported: if it dies, its share of pytest's cache dies with it.
    reported: Vec<String>,
}

impl Slot {
    fn new(worker: Worker, generation: u32) -> Slot {
        Slot {
            worker,
            collected: None,
            eligible: None,
            wants: None,
            shut: false,
            closed: false,
            finished: None,
            exit: None,
            done: false,
            assigned: VecDeque::new(),
            backlog: VecDeque::new(),
            provisional: Vec::new(),
            running_since: None,
            killed: None,
            generation,
            reported: Vec::new(),
        }
    }
}

pub(crate) struct Supervisor<'a> {
    slots: Vec<Slot>,
    spawn: Spawn<'a>,
    events: Receiver<Event>,
    durations: &'a HashMap<String, f64>,
    options: Options,
    scheduler: Option<Scheduler>,
    /// Each run-list test's expected seconds, for the progress display.
    costs: Vec<f64>,
    index: HashMap<String, usize>,
    failures: u64,
    stopping: bool,
    interrupts: u32,
    kill_at: Option<Instant>,
    ui: Ui,
    out: RunOutcome,
}

impl<'a> Supervisor<'a> {
    pub(crate) fn new(
        workers: Vec<Worker>,
        spawn: Spawn<'a>,
        events: Receiver<Event>,
        durations: &'a HashMap<String, f64>,
        options: Options,
        ui: Ui,
    ) -> Supervisor<'a> {
        let count = workers.len();
        let stems = workers.iter().map(|w| w.stem.clone()).collect();
        let slots = workers.into_iter().map(|w| Slot::new(w, 0)).collect();
        Supervisor {
            slots,
            spawn,
            events,
            durations,
            options,
            scheduler: None,
            costs: Vec::new(),
            index: HashMap::new(),
            failures: 0,
            stopping: false,
            interrupts: 0,
            kill_at: None,
            ui,
            out: RunOutcome {
                exitstatus: vec![None; count],
                stems,
                ..RunOutcome::default()
            },
        }
    }

    /// Runs until every worker has ended and been reaped.
    pub(crate) fn run(mut self) -> RunOutcome {
        while self.slots.iter().any(|s| !s.done) {
            match self.events.recv_timeout(POLL) {
                Ok(event) => self.handle(event),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
            while let Ok(event) = self.events.try_recv() {
                self.handle(event);
            }
            self.reap();
            self.ui.tick();
        }
        self.ui.finish();
        if let Some(mut scheduler) = self.scheduler.take() {
            let mut left: Vec<usize> = scheduler
                .cancel()
                .into_iter()
                .flat_map(|u| u.tests)
                .collect();
            for slot in &mut self.slots {
                left.extend(slot.backlog.drain(..));
            }
            // Tests are "not run" only when a crash left them behind; after collection
            // errors, -x or pytest.exit() pytest itself would not have run them either.
            let lost_workers = !self.out.problems.is_empty() || !self.out.crashes.is_empty();
            if !self.stopping && !self.out.interrupted && lost_workers {
                for i in left {
                    self.out.not_run.push(self.out.run_list[i].clone());
                }
            }
        }
        let finished: HashSet<&str> = self.out.results.iter().map(|r| r.nodeid.as_str()).collect();
        let cut_short = std::mem::take(&mut self.out.cut_short);
        self.out.cut_short = cut_short
            .into_iter()
            .filter(|(nodeid, _)| !finished.contains(nodeid.as_str()))
            .collect();
        // Reported in the run's order, as a single pytest process reports them.
        let position = |nodeid: &str| self.index.get(nodeid).copied().unwrap_or(usize::MAX);
        self.out.results.sort_by_key(|r| position(&r.nodeid));
        self.out
            .sections
            .sort_by_key(|(nodeid, _, _)| position(nodeid));
        self.out
    }

    fn handle(&mut self, event: Event) {
        match event {
            // A worker killed for breaking the protocol is not listened to any more.
            Event::Message { worker, .. } if self.slots[worker].killed == Some(Kill::Refused) => {}
            Event::Message { worker, msg } => self.on_message(worker, msg),
            Event::Garbage { worker, detail } => {
                let name = self.slots[worker].worker.name.clone();
                self.out.problems.push(format!("worker {name}: {detail}"));
                self.kill(worker, Kill::Refused);
            }
            Event::Closed { worker } => self.slots[worker].closed = true,
            Event::Output { worker, line, .. } => {
                let name = &self.slots[worker].worker.name;
                self.ui.line(&format!("[{name}] {line}"));
            }
            Event::Signal(SignalEvent::Interrupt) => self.on_interrupt(),
            Event::Signal(SignalEvent::Suspend) => self.suspend(),
            Event::Signal(SignalEvent::Continue) => self.resume(),
        }
    }

    fn on_message(&mut self, w: usize, msg: FromWorker) {
        match msg {
            FromWorker::Hello { protocol, .. } => {
                if protocol != protocol::PROTOCOL {
                    let name = self.slots[w].worker.name.clone();
                    self.out.problems.push(format!(
                        "worker {name} speaks protocol {protocol}, this testmon-run speaks {}",
                        protocol::PROTOCOL
                    ));
                    self.kill(w, Kill::Refused);
                }
            }
            FromWorker::Collected {
                nodeids,
                deselected,
                sync,
                collect_errors,
                tm_message,
                user_deselected,
            } => {
                self.slots[w].collected = Some(Collected {
                    nodeids,
                    deselected,
                    user_deselected,
                    sync,
                    collect_errors,
                    tm_message,
                });
                if self.scheduler.is_some() {
                    self.replacement_collected(w);
                }
                self.maybe_start_schedule();
            }
            FromWorker::Want { queued } => {
                self.slots[w].wants = Some(queued);
                self.serve(w);
            }
            FromWorker::Result {
                nodeid,
                reports,
                sections,
                durable,
            } => {
                self.out.sections.extend(
                    sections
                        .into_iter()
                        .map(|(title, body)| (nodeid.clone(), title, body)),
                );
                self.on_result(w, nodeid, reports, durable);
            }
            FromWorker::Finished {
                exitstatus,
                warnings,
                cache,
                ..
            } => {
                self.slots[w].finished = Some(exitstatus);
                self.out.exitstatus[w] = Some(exitstatus);
                for warning in warnings {
                    if !self.out.pytest_warnings.contains(&warning) {
                        self.out.pytest_warnings.push(warning);
                    }
                }
                self.out.caches.extend(cache);
            }
        }
    }

    fn maybe_start_schedule(&mut self) {
        if self.scheduler.is_some() || !self.slots.iter().all(|s| s.collected.is_some() || s.done) {
            return;
        }
        // The lowest-numbered worker that collected speaks for the run.
        let Some(first) = self.slots.iter().position(|s| s.collected.is_some()) else {
            return;
        };
        let Some(collected) = self.slots[first].collected.as_mut() else {
            return;
        };
        let run_list = collected.nodeids.clone();
        let tm_message = collected.tm_message.take();
        self.out.deselected = collected.deselected;
        self.out.user_deselected = std::mem::take(&mut collected.user_deselected);
        self.out.sync = collected.sync.take();
        self.out.collect_errors = std::mem::take(&mut collected.collect_errors);
        for i in 0..self.slots.len() {
            if i == first {
                continue;
            }
            let Some(collected) = &self.slots[i].collected else {
                continue;
            };
            if collected.nodeids == run_list {
                continue;
            }
            let name = &self.slots[i].worker.name;
            let first_name = &self.slots[first].worker.name;
            // Another order alone (pytest-randomly's seed per process) is harmless: tests go
            // out by node id.
            if let Some(warning) =
                collection_difference(first_name, &run_list, name, &collected.nodeids)
            {
                self.out.warnings.push(warning);
                self.slots[i].eligible = Some(collected.nodeids.iter().cloned().collect());
            }
        }
        self.index = run_list
            .iter()
            .enumerate()
            .map(|(i, n)| (n.clone(), i))
            .collect();
        self.scheduler = Some(Scheduler::new(&run_list, self.durations, self.options.dist));
        self.costs = scheduler::expected_costs(&run_list, self.durations);
        if self.options.verbose >= 0 {
            let line = self.options.header.line(
                run_list.len(),
                self.out.deselected,
                tm_message.as_deref(),
            );
            self.ui.line(&line);
        }
        if let Some(notice) = self.options.header.notice() {
            self.ui.line(&notice);
        }
        self.out.scheduled_at = Some(Instant::now());
        self.ui.start(run_list.len(), self.costs.iter().sum());
        if let Some(path) = &self.options.collected_file {
            let collected = serde_json::json!({"sync": self.out.sync, "run_list": run_list});
            if let Err(err) = crate::atomic::write(path, collected.to_string().as_bytes()) {
                self.out
                    .warnings
                    .push(format!("could not write {}: {err:#}", path.display()));
            }
        }
        self.out.run_list = run_list;
        if self.stopping {
            if let Some(s) = self.scheduler.as_mut() {
                s.cancel();
            }
        }
        for w in 0..self.slots.len() {
            self.serve(w);
        }
    }

    /// Answers a worker that wants work: its next unit; or, when none is left, "later" to a
    /// worker that still holds a test (it runs it as its last for now); or nothing yet to an
    /// idle worker, parked until a crashed worker's tests come back or the run is over.
    fn serve(&mut self, w: usize) {
        let Some(queued) = self.slots[w].wants else {
            return;
        };
        // A worker that has ended takes nothing more, whatever it asked before.
        if self.slots[w].shut || self.slots[w].exit.is_some() || self.slots[w].done {
            return;
        }
        let Some(scheduler) = self.scheduler.as_mut() else {
            return;
        };
        let run_list = &self.out.run_list;
        if !self.stopping && self.slots[w].backlog.is_empty() {
            let eligible = &self.slots[w].eligible;
            let unit = scheduler.next_for(w, |unit| match eligible {
                None => true,
                Some(set) => unit.tests.iter().all(|&i| set.contains(&run_list[i])),
            });
            self.slots[w]
                .backlog
                .extend(unit.into_iter().flat_map(|u| u.tests));
        }
        let slot = &mut self.slots[w];
        // The worker holds `queued` tests and wants two: one running, one next.
        let give = if self.stopping {
            0
        } else {
            slot.backlog.len().min(2usize.saturating_sub(queued).max(1))
        };
        let tests: Vec<usize> = slot.backlog.drain(..give).collect();
        match tests.is_empty() {
            false => {
                let nodeids = tests.iter().map(|&i| run_list[i].clone()).collect();
                slot.wants = None;
                let was_idle = slot.assigned.is_empty();
                slot.assigned.extend(tests);
                slot.worker.send(&ToWorker::Run { nodeids });
                if was_idle {
                    self.show_running(w);
                }
            }
            true if self.stopping => {
                slot.wants = None;
                slot.shut = true;
                // After -x/--maxfail the test a worker holds as next does not start either.
                let msg = if self.out.stopped_after.is_some() {
                    ToWorker::Stop
                } else {
                    ToWorker::Shutdown
                };
                slot.worker.send(&msg);
            }
            true if queued > 0 => {
                slot.wants = None;
                slot.worker.send(&ToWorker::Later);
            }
            true => self.release_parked(),
        }
    }

    /// Shuts parked workers down once no work can come back: nothing is left to hand out
    /// and no running worker holds tests without results.
    fn release_parked(&mut self) {
        let Some(scheduler) = self.scheduler.as_ref() else {
            return;
        };
        let busy = self
            .slots
            .iter()
            .any(|s| !s.done && !s.shut && (!s.assigned.is_empty() || !s.backlog.is_empty()));
        if scheduler.units_left() > 0 || busy {
            return;
        }
        for slot in self
            .slots
            .iter_mut()
            .filter(|s| s.wants == Some(0) && !s.shut)
        {
            slot.wants = None;
            slot.shut = true;
            slot.worker.send(&ToWorker::Shutdown);
        }
    }

    /// The worker starts the first test it holds now: shown, and timed for --timeout.
    fn show_running(&mut self, w: usize) {
        let front = self.slots[w].assigned.front().copied();
        self.slots[w].running_since = front.map(|_| Instant::now());
        if let Some(i) = front {
            self.ui.started(w, &self.out.run_list[i]);
        }
    }

    /// A replacement worker collected after the schedule started: it may run what it
    /// collected of the run list.
    fn replacement_collected(&mut self, w: usize) {
        let Some(collected) = &self.slots[w].collected else {
            return;
        };
        let name = &self.slots[w].worker.name;
        if let Some(warning) =
            collection_difference("the run", &self.out.run_list, name, &collected.nodeids)
        {
            self.out.warnings.push(warning);
            self.slots[w].eligible = Some(collected.nodeids.iter().cloned().collect());
        }
    }

    /// Kills a worker's process group on purpose; its exit is then reaped as a crash.
    fn kill(&mut self, w: usize, why: Kill) {
        let slot = &mut self.slots[w];
        slot.killed.get_or_insert(why);
        slot.worker.signal(Signal::SIGKILL);
    }

    fn on_result(&mut self, w: usize, nodeid: String, reports: Vec<Report>, durable: bool) {
        let index = self.index.get(&nodeid).copied();
        if let Some(i) = index {
            let slot = &mut self.slots[w];
            slot.assigned.retain(|&a| a != i);
            slot.reported.push(nodeid.clone());
            if durable {
                slot.provisional.clear();
            } else {
                slot.provisional.push(i);
            }
        }
        let name = self.slots[w].worker.name.clone();
        let mut failed = false;
        for report in &reports {
            if report.outcome == "failed" {
                self.failures += 1;
                failed = true;
            }
            if let Some(line) = live_line(&nodeid, report, &name, self.options.verbose) {
                self.ui.line(&line);
            }
        }
        let cost = index
            .and_then(|i| self.costs.get(i))
            .copied()
            .unwrap_or(0.0);
        self.ui.finished(w, &nodeid, cost, failed);
        self.show_running(w);
        let maxfail = self.options.maxfail;
        if maxfail > 0 && self.failures >= maxfail && !self.stopping {
            self.stopping = true;
            self.out.stopped_after = Some(maxfail);
            if let Some(s) = self.scheduler.as_mut() {
                s.cancel();
            }
        }
        self.out.results.push(TestResult {
            nodeid,
            worker: w,
            reports,
        });
        if self.stopping {
            for other in 0..self.slots.len() {
                self.serve(other);
            }
        }
        self.release_parked();
    }

    fn on_interrupt(&mut self) {
        self.interrupts += 1;
        if self.interrupts == 1 {
            for slot in self.slots.iter().filter(|s| s.exit.is_none()) {
                if let Some(&i) = slot.assigned.front() {
                    let nodeid = self.out.run_list[i].clone();
                    self.out.cut_short.push((nodeid, slot.worker.name.clone()));
                }
            }
        }
        self.out.interrupted = true;
        self.stopping = true;
        if let Some(s) = self.scheduler.as_mut() {
            s.cancel();
        }
        let signal = if self.interrupts == 1 {
            Signal::SIGINT
        } else {
            Signal::SIGKILL
        };
        let grace = self.options.grace_period;
        self.kill_at.get_or_insert_with(|| Instant::now() + grace);
        for slot in self.slots.iter().filter(|s| s.exit.is_none()) {
            slot.worker.signal(signal);
        }
        // Workers waiting for work (or its answer) get theirs: shutdown.
        for w in 0..self.slots.len() {
            self.serve(w);
        }
    }

    /// Ctrl-Z: the workers' process groups stop (they are not in the terminal's foreground
    /// group), then this process, as the default action would; on `fg` they go on, and the
    /// time stopped does not count against --timeout.
    fn suspend(&mut self) {
        for slot in self.slots.iter().filter(|s| s.exit.is_none()) {
            slot.worker.signal(Signal::SIGSTOP);
        }
        let stopped = Instant::now();
        let _ = nix::sys::signal::raise(Signal::SIGSTOP);
        let away = stopped.elapsed();
        for slot in &mut self.slots {
            if let Some(at) = slot.running_since.as_mut() {
                *at += away;
            }
        }
        if let Some(at) = self.kill_at.as_mut() {
            *at += away;
        }
        self.resume();
    }

    fn resume(&mut self) {
        for slot in self.slots.iter().filter(|s| s.exit.is_none()) {
            slot.worker.signal(Signal::SIGCONT);
        }
    }

    /// Reaps ended workers; a worker that ended without finishing its session crashed.
    fn reap(&mut self) {
        if self.kill_at.is_some_and(|at| Instant::now() >= at) {
            for slot in self.slots.iter().filter(|s| s.exit.is_none()) {
                slot.worker.signal(Signal::SIGKILL);
            }
        }
        if let Some(timeout) = self.options.timeout {
            for w in 0..self.slots.len() {
                let slot = &self.slots[w];
                let overdue = slot.running_since.is_some_and(|at| at.elapsed() > timeout);
                if overdue && slot.exit.is_none() && slot.killed.is_none() && !slot.done {
                    self.kill(w, Kill::Timeout);
                }
            }
        }
        for w in 0..self.slots.len() {
            let slot = &mut self.slots[w];
            if slot.done {
                continue;
            }
            if slot.exit.is_none() {
                slot.exit = slot.worker.try_exit().map(|e| (e, Instant::now()));
            }
            let Some((exit, at)) = slot.exit else {
                continue;
            };
            if !slot.closed && at.elapsed() < LINGER {
                continue;
            }
            slot.done = true;
            if slot.finished.is_none() {
                self.on_crash(w, exit);
            } else if slot.finished == Some(i32::from(crate::exit::INTERNAL_ERROR)) {
                self.requeue_held(w);
            }
            self.maybe_start_schedule();
            self.release_parked();
        }
    }

    fn on_crash(&mut self, w: usize, exit: Exit) {
        let slot = &mut self.slots[w];
        let name = slot.worker.name.clone();
        let killed = slot.killed;
        let mut assigned: Vec<usize> = slot.assigned.drain(..).collect();
        let backlog: Vec<usize> = slot.backlog.drain(..).collect();
        slot.wants = None;
        let lost: Vec<usize> = slot.provisional.drain(..).collect();
        let reported = std::mem::take(&mut slot.reported);
        slot.running_since = None;
        if self.out.interrupted {
            self.out.cache_orphans.extend(reported);
            return; // killed on purpose; what it finished is kept
        }
        let output = slot.worker.last_output(20);
        let running = if assigned.is_empty() {
            None
        } else {
            Some(assigned.remove(0))
        };
        assigned.extend(backlog);
        let what = match running {
            Some(i) => format!("while running {}", self.out.run_list[i]),
            None if slot.collected.is_none() => "before it finished collecting".to_string(),
            None => "between tests".to_string(),
        };
        let cause = match (killed, self.options.timeout) {
            (Some(Kill::Timeout), Some(t)) => {
                format!("timed out after {}", crash_report::seconds(t))
            }
            _ => format!("crashed ({})", exit.describe()),
        };
        let message = format!("worker {name} {cause} {what}");
        if killed == Some(Kill::Refused) {
            // Its problem already says why it was killed.
        } else if slot.collected.is_none() {
            self.out.problems.push(message);
        } else {
            self.out.crashes.push(message);
        }
        if let Some(i) = running {
            let nodeid = self.out.run_list[i].clone();
            self.out.crashed.push(nodeid.clone());
            let report = match (killed, self.options.timeout) {
                (Some(Kill::Timeout), Some(t)) => crash_report::timeout(&nodeid, &name, t, &output),
                (Some(Kill::Refused), _) => crash_report::refused(&nodeid, &name, &output),
                _ => crash_report::crash(&nodeid, &name, exit, &output),
            };
            let line = format!(
                "{} [{name}]",
                report.summary_line.as_deref().unwrap_or(&nodeid)
            );
            self.out.results.push(TestResult {
                nodeid: nodeid.clone(),
                worker: w,
                reports: vec![report],
            });
            self.ui.line(&line);
            let cost = self.costs.get(i).copied().unwrap_or(0.0);
            self.ui.finished(w, &nodeid, cost, true);
        } else if !output.is_empty() {
            self.out
                .warnings
                .push(format!("last output of worker {name}:\n{output}"));
        }
        // Tests it reported but whose fingerprints died with it run again; for the others,
        // its share of pytest's cache is made from their reports.
        let names: HashSet<&str> = lost
            .iter()
            .map(|&i| self.out.run_list[i].as_str())
            .collect();
        self.out.cache_orphans.extend(
            reported
                .into_iter()
                .filter(|nodeid| !names.contains(nodeid.as_str())),
        );
        if !lost.is_empty() {
            self.out
                .results
                .retain(|r| r.worker != w || !names.contains(r.nodeid.as_str()));
            self.out
                .sections
                .retain(|(nodeid, _, _)| !names.contains(nodeid.as_str()));
            let cost = lost.iter().filter_map(|&i| self.costs.get(i)).sum();
            self.ui.run_again(lost.len(), cost);
            self.ui.line(&format!(
                "testmon-run: {} test(s) reported by worker {name} run again: their records were lost with it",
                lost.len()
            ));
            self.out.rerun.extend(names.iter().map(|n| n.to_string()));
            assigned.splice(0..0, lost);
        }
        if let Some(scheduler) = self.scheduler.as_mut() {
            let cost = assigned
                .iter()
                .map(|&i| {
                    self.durations
                        .get(&self.out.run_list[i])
                        .copied()
                        .unwrap_or(0.0)
                })
                .sum();
            if !assigned.is_empty() {
                scheduler.requeue(Unit {
                    tests: assigned,
                    cost,
                });
            }
        }
        self.maybe_replace(w, killed);
        for other in 0..self.slots.len() {
            self.serve(other);
        }
    }

    /// A worker whose pytest ended with an internal error, holding tests it never started:
    /// they go back to the queue, to a worker that takes its place.
    fn requeue_held(&mut self, w: usize) {
        let held: Vec<usize> = self.slots[w].assigned.drain(..).collect();
        if held.is_empty() || self.stopping || self.out.interrupted {
            return;
        }
        if let Some(scheduler) = self.scheduler.as_mut() {
            let cost = held.iter().filter_map(|&i| self.costs.get(i)).sum();
            scheduler.requeue(Unit { tests: held, cost });
        }
        self.maybe_replace(w, None);
        for other in 0..self.slots.len() {
            self.serve(other);
        }
    }

    /// Starts a worker in place of the one that died, while work is left and restarts are.
    fn maybe_replace(&mut self, w: usize, killed: Option<Kill>) {
        let work_left = self.scheduler.as_ref().is_some_and(|s| s.units_left() > 0);
        if self.stopping || killed == Some(Kill::Refused) || !work_left {
            return;
        }
        let name = self.slots[w].worker.name.clone();
        if self.out.restarts >= self.options.max_worker_restart {
            self.out.warnings.push(format!(
                "worker {name} not replaced: --max-worker-restart {} reached",
                self.options.max_worker_restart
            ));
            return;
        }
        let generation = self.slots[w].generation + 1;
        match (self.spawn)(w, generation) {
            Ok(worker) => {
                self.out.restarts += 1;
                self.out.stems.push(worker.stem.clone());
                // The old slot's worker is dropped: its process group killed.
                self.slots[w] = Slot::new(worker, generation);
                self.ui.line(&format!(
                    "testmon-run: replacing worker {name} ({} of at most {} restarts)",
                    self.out.restarts, self.options.max_worker_restart
                ));
            }
            Err(err) => self
                .out
                .problems
                .push(format!("replacing worker {name}: {err:#}")),
        }
    }
}

/// The line shown as a test's report comes in: with `-v` one per report pytest names
/// (`PASSED tests/x.py::t [gw1]`); otherwise failures only, in their short form.
pub(crate) fn live_line(
    nodeid: &str,
    report: &Report,
    worker: &str,
    verbose: i64,
) -> Option<String> {
    if verbose >= 1 {
        if report.word.is_empty() {
            return None;
        }
        return Some(format!("{} {nodeid} [{worker}]", report.word));
    }
    let failed = report.outcome == "failed";
    if !failed || verbose < -1 {
        return None;
    }
    // Its first line: pytest does not shorten the message when $CI is set.
    let line = report
        .summary_line
        .as_deref()
        .and_then(|l| l.lines().next())
        .map(str::to_string);
    let line = line.unwrap_or_else(|| {
        let word = if report.category == "error" {
            "ERROR"
        } else {
            "FAILED"
        };
        format!("{word} {nodeid}")
    });
    Some(format!("{line} [{worker}]"))
}

/// A warning naming the first differences between two workers' collections; None when they
/// collected the same tests (in whatever order).
pub(crate) fn collection_difference(
    a: &str,
    a_ids: &[String],
    b: &str,
    b_ids: &[String],
) -> Option<String> {
    // The first few of `ids` that `other` lacks.
    let missing = |ids: &[String], other: &[String]| -> Vec<String> {
        let other: HashSet<&String> = other.iter().collect();
        ids.iter()
            .filter(|n| !other.contains(n))
            .take(3)
            .cloned()
            .collect()
    };
    let only_a = missing(a_ids, b_ids);
    let only_b = missing(b_ids, a_ids);
    if only_a.is_empty() && only_b.is_empty() && a_ids.len() == b_ids.len() {
        return None;
    }
    let mut msg = format!(
        "workers {a} and {b} collected different tests ({} vs {})",
        a_ids.len(),
        b_ids.len()
    );
    if !only_a.is_empty() {
        msg.push_str(&format!("; only {a}: {}", only_a.join(", ")));
    }
    if !only_b.is_empty() {
        msg.push_str(&format!("; only {b}: {}", only_b.join(", ")));
    }
    msg.push_str(&format!(
        "; running {a}'s list, each test on a worker that collected it"
    ));
    Some(msg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn live_lines_for_v_and_for_failures() {
        let mut report = crash_report::crash("t.py::x", "gw1", Exit::Signal(9), "");
        report.summary_line = Some("FAILED t.py::x - assert 4 == 5\n +  where 4 = f()".into());
        assert_eq!(
            live_line("t.py::x", &report, "gw1", 0).as_deref(),
            Some("FAILED t.py::x - assert 4 == 5 [gw1]")
        );
        assert_eq!(live_line("t.py::x", &report, "gw1", -2), None);
        assert_eq!(
            live_line("t.py::x", &report, "gw1", 1).as_deref(),
            Some("ERROR t.py::x [gw1]")
        );
        report.outcome = "passed".into();
        report.word = String::new();
        assert_eq!(live_line("t.py::x", &report, "gw1", 0), None);
        assert_eq!(live_line("t.py::x", &report, "gw1", 1), None);
    }

    #[test]
    fn collection_difference_names_tests() {
        let a: Vec<String> = ["t.py::a", "t.py::b", "t.py::c"].map(String::from).to_vec();
        let b: Vec<String> = ["t.py::a", "t.py::x"].map(String::from).to_vec();
        let msg = collection_difference("gw0", &a, "gw1", &b).unwrap();
        assert!(msg.contains("only gw0: t.py::b, t.py::c"), "{msg}");
        assert!(msg.contains("only gw1: t.py::x"), "{msg}");
        let reordered: Vec<String> = a.iter().rev().cloned().collect();
        assert_eq!(collection_difference("gw0", &a, "gw1", &reordered), None);
    }
}
