//! The one event loop that owns a run's state: workers' collections, the schedule, results,
//! crashes and signals. It prints nothing and writes no file: what happens goes to a
//! [`Sink`] as typed events, and the run ends as a [`RunOutcome`].
//!
//! Generic over the worker handle, so that its crash, timeout and interrupt logic is
//! unit-tested with fake workers (below), without starting a process.

use std::collections::{HashMap, HashSet};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use crate::exit;
use crate::run::crash_report;
use crate::run::events::{Event, SignalEvent};
use crate::run::ledger::Ledger;
use crate::run::outcome::{CutShort, RunOutcome, Section, TestResult};
use crate::run::protocol::{self, FromWorker, Report, ToWorker};
use crate::run::scheduler::{self, Dist, Scheduler};
use crate::run::sink::{Scheduled, Sink};
use crate::run::slot::{Collected, Kill, Lifecycle, Slot, WorkerHandle};
use crate::run::worker::Exit;

const POLL: Duration = Duration::from_millis(50);

/// When the run stops and how it tells its workers.
pub(crate) struct Options {
    pub(crate) dist: Dist,
    /// Failures after which no new test starts (0: never).
    pub(crate) maxfail: u64,
    /// A test running longer is stopped: its worker's process group killed and replaced.
    pub(crate) timeout: Option<Duration>,
    /// How long workers get to stop after an interrupt before their process groups are
    /// killed.
    pub(crate) grace_period: Duration,
    /// How many crashed workers are replaced, at most.
    pub(crate) max_worker_restart: u32,
}

/// Starts worker `index`'s `generation`-th incarnation (0: the first).
pub(crate) type Spawn<'a, W> = Box<dyn FnMut(usize, u32) -> anyhow::Result<W> + 'a>;

/// How far the run is from its natural end; each state only moves down.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Course {
    /// Tests go out.
    Running,
    /// `-x`/`--maxfail` reached: nothing new starts; running tests finish and are recorded.
    MaxFail,
    /// Ctrl-C, SIGTERM, SIGHUP: the workers got SIGINT; their process groups are killed at
    /// `kill_at` (the grace period).
    Interrupted { kill_at: Instant },
    /// A second interrupt, or the grace period is over: SIGKILL until every worker is gone.
    Killing,
}

pub(crate) struct Supervisor<'a, W, S> {
    slots: Vec<Slot<W>>,
    ledger: Ledger,
    spawn: Spawn<'a, W>,
    events: Receiver<Event>,
    durations: &'a HashMap<String, f64>,
    options: Options,
    scheduler: Option<Scheduler>,
    index: HashMap<String, usize>,
    failures: u64,
    course: Course,
    sink: &'a mut S,
    out: RunOutcome,
}

impl<'a, W: WorkerHandle, S: Sink> Supervisor<'a, W, S> {
    pub(crate) fn new(
        workers: Vec<W>,
        spawn: Spawn<'a, W>,
        events: Receiver<Event>,
        durations: &'a HashMap<String, f64>,
        options: Options,
        sink: &'a mut S,
    ) -> Supervisor<'a, W, S> {
        let count = workers.len();
        let stems = workers.iter().map(|w| w.stem().to_string()).collect();
        Supervisor {
            slots: workers.into_iter().map(|w| Slot::new(w, 0)).collect(),
            ledger: Ledger::new(count),
            spawn,
            events,
            durations,
            options,
            scheduler: None,
            index: HashMap::new(),
            failures: 0,
            course: Course::Running,
            sink,
            out: RunOutcome {
                exitstatus: vec![None; count],
                stems,
                ..RunOutcome::default()
            },
        }
    }

    /// Runs until every worker has ended and been reaped.
    pub(crate) fn run(mut self) -> RunOutcome {
        while self.slots.iter().any(|s| !s.reaped()) {
            match self.events.recv_timeout(POLL) {
                Ok(event) => self.handle(event),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
            while let Ok(event) = self.events.try_recv() {
                self.handle(event);
            }
            self.reap();
            self.sink.tick();
        }
        self.sink.finish();
        self.conclude()
    }

    fn stopping(&self) -> bool {
        self.course != Course::Running
    }

    /// The outcome, once every worker is reaped: what was left not run, and the results in
    /// the run's order, as a single pytest process reports them.
    fn conclude(mut self) -> RunOutcome {
        if let Some(mut scheduler) = self.scheduler.take() {
            let mut left: Vec<usize> = scheduler
                .cancel()
                .into_iter()
                .flat_map(|u| u.tests)
                .collect();
            left.extend(self.ledger.drain_backlogs());
            // Tests are "not run" only when a crash left them behind; after collection
            // errors, -x or pytest.exit() pytest itself would not have run them either.
            let lost_workers = !self.out.problems.is_empty() || !self.out.crashes.is_empty();
            if !self.stopping() && lost_workers {
                for i in left {
                    self.out.not_run.push(self.out.run_list[i].clone());
                }
            }
        }
        let finished: HashSet<&str> = self.out.results.iter().map(|r| r.nodeid.as_str()).collect();
        let cut_short = std::mem::take(&mut self.out.cut_short);
        self.out.cut_short = cut_short
            .into_iter()
            .filter(|c| !finished.contains(c.nodeid.as_str()))
            .collect();
        let position = |nodeid: &str| self.index.get(nodeid).copied().unwrap_or(usize::MAX);
        self.out.results.sort_by_key(|r| position(&r.nodeid));
        self.out.sections.sort_by_key(|s| position(&s.nodeid));
        self.out
    }

    fn handle(&mut self, event: Event) {
        match event {
            // A worker killed for breaking the protocol is not listened to any more.
            Event::Message { worker, .. } if self.slots[worker].killed == Some(Kill::Refused) => {}
            Event::Message { worker, msg } => self.on_message(worker, msg),
            Event::Garbage { worker, detail } => {
                let name = self.slots[worker].worker.name().to_string();
                self.out.problems.push(format!("worker {name}: {detail}"));
                self.slots[worker].kill(Kill::Refused);
            }
            Event::Closed { worker } => self.slots[worker].closed = true,
            Event::Output { worker, line } => self.sink.output(worker, &line),
            Event::Signal(SignalEvent::Interrupt) => self.on_interrupt(),
            Event::Signal(SignalEvent::Suspend) => self.suspend(),
            Event::Signal(SignalEvent::Continue) => self.signal_running(Signal::SIGCONT),
        }
    }

    fn on_message(&mut self, w: usize, msg: FromWorker) {
        match msg {
            FromWorker::Hello { protocol, .. } => {
                if protocol != protocol::PROTOCOL {
                    let name = self.slots[w].worker.name();
                    self.out.problems.push(format!(
                        "worker {name} speaks protocol {protocol}, this testmon-run speaks {}",
                        protocol::PROTOCOL
                    ));
                    self.slots[w].kill(Kill::Refused);
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
                self.out
                    .sections
                    .extend(sections.into_iter().map(|part| Section {
                        nodeid: nodeid.clone(),
                        title: part.title,
                        text: part.text,
                    }));
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

    /// Once every worker has collected (or ended): the first one's collection becomes the
    /// run's list, and the schedule starts.
    fn maybe_start_schedule(&mut self) {
        let all_in = self
            .slots
            .iter()
            .all(|s| s.collected.is_some() || s.reaped());
        if self.scheduler.is_some() || !all_in {
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
        self.compare_collections(first, &run_list);
        self.index = run_list
            .iter()
            .enumerate()
            .map(|(i, n)| (n.clone(), i))
            .collect();
        let mut scheduler = Scheduler::new(&run_list, self.durations, self.options.dist);
        if self.stopping() {
            scheduler.cancel();
        }
        self.scheduler = Some(scheduler);
        self.ledger
            .set_costs(scheduler::expected_costs(&run_list, self.durations));
        self.out.scheduled_at = Some(Instant::now());
        self.sink.scheduled(&Scheduled {
            run_list: &run_list,
            sync: self.out.sync.as_deref(),
            deselected: self.out.deselected,
            tm_message: tm_message.as_deref(),
            expected: self.ledger.expected_total(),
        });
        self.out.run_list = run_list;
        self.serve_all();
    }

    /// Workers whose collection differs from the run's list run only what they collected.
    fn compare_collections(&mut self, first: usize, run_list: &[String]) {
        for i in (0..self.slots.len()).filter(|&i| i != first) {
            let Some(collected) = &self.slots[i].collected else {
                continue;
            };
            if collected.nodeids == run_list {
                continue;
            }
            let name = self.slots[i].worker.name();
            let first_name = self.slots[first].worker.name();
            // Another order alone (pytest-randomly's seed per process) is harmless: tests go
            // out by node id.
            if let Some(warning) =
                collection_difference(first_name, run_list, name, &collected.nodeids)
            {
                self.out.warnings.push(warning);
                self.slots[i].eligible = Some(collected.nodeids.iter().cloned().collect());
            }
        }
    }

    fn serve_all(&mut self) {
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
        if !self.slots[w].live() {
            return;
        }
        let stopping = self.stopping();
        let Some(scheduler) = self.scheduler.as_mut() else {
            return;
        };
        let run_list = &self.out.run_list;
        if !stopping && self.ledger.backlog_empty(w) {
            let eligible = &self.slots[w].eligible;
            let unit = scheduler.next_for(w, |unit| match eligible {
                None => true,
                Some(set) => unit.tests.iter().all(|&i| set.contains(&run_list[i])),
            });
            if let Some(unit) = unit {
                self.ledger.take(w, unit);
            }
        }
        // The worker holds `queued` tests and wants two: one running, one next.
        let give = if stopping {
            0
        } else {
            2usize.saturating_sub(queued).max(1)
        };
        let was_idle = self.ledger.running(w).is_none();
        let tests = self.ledger.hand_out(w, give);
        let slot = &mut self.slots[w];
        if !tests.is_empty() {
            let nodeids = tests.iter().map(|&i| run_list[i].clone()).collect();
            slot.wants = None;
            slot.worker.send(&ToWorker::Run { nodeids });
            if was_idle {
                self.show_running(w);
            }
        } else if stopping {
            // After -x/--maxfail the test a worker holds as next does not start either.
            let msg = if self.out.stopped_after.is_some() {
                ToWorker::Stop
            } else {
                ToWorker::Shutdown
            };
            slot.shut_down(msg);
        } else if queued > 0 {
            slot.wants = None;
            slot.worker.send(&ToWorker::Later);
        } else {
            self.release_parked();
        }
    }

    /// Shuts parked workers down once no work can come back: nothing is left to hand out
    /// and no running worker holds tests without results.
    fn release_parked(&mut self) {
        let Some(scheduler) = self.scheduler.as_ref() else {
            return;
        };
        let busy = (0..self.slots.len()).any(|w| {
            let slot = &self.slots[w];
            matches!(slot.lifecycle, Lifecycle::Live | Lifecycle::Exited { .. })
                && self.ledger.holds_work(w)
        });
        if scheduler.units_left() > 0 || busy {
            return;
        }
        for slot in self
            .slots
            .iter_mut()
            .filter(|s| s.wants == Some(0) && s.live())
        {
            slot.shut_down(ToWorker::Shutdown);
        }
    }

    /// The worker starts the first test it holds now: shown, and timed for --timeout.
    fn show_running(&mut self, w: usize) {
        let running = self.ledger.running(w);
        self.slots[w].running_since = running.map(|_| Instant::now());
        if let Some(i) = running {
            self.sink.test_started(w, &self.out.run_list[i]);
        }
    }

    /// A replacement worker collected after the schedule started: it may run what it
    /// collected of the run list.
    fn replacement_collected(&mut self, w: usize) {
        let Some(collected) = &self.slots[w].collected else {
            return;
        };
        let name = self.slots[w].worker.name();
        if let Some(warning) =
            collection_difference("the run", &self.out.run_list, name, &collected.nodeids)
        {
            self.out.warnings.push(warning);
            self.slots[w].eligible = Some(collected.nodeids.iter().cloned().collect());
        }
    }

    fn on_result(&mut self, w: usize, nodeid: String, reports: Vec<Report>, durable: bool) {
        let index = self.index.get(&nodeid).copied();
        if let Some(i) = index {
            self.ledger.reported(w, i, durable);
        }
        let failed = reports.iter().filter(|r| r.outcome.is_failed()).count();
        self.failures += failed as u64;
        let cost = index.map_or(0.0, |i| self.ledger.cost(i));
        self.sink.test_finished(w, &nodeid, &reports, cost);
        self.show_running(w);
        let maxfail = self.options.maxfail;
        if maxfail > 0 && self.failures >= maxfail && !self.stopping() {
            self.course = Course::MaxFail;
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
        if self.stopping() {
            self.serve_all();
        }
        self.release_parked();
    }

    /// The first interrupt asks every worker to stop (SIGINT, as Ctrl-C would); another one
    /// kills them, as does the end of the grace period.
    fn on_interrupt(&mut self) {
        match self.course {
            Course::Running | Course::MaxFail => {
                for (w, slot) in self.slots.iter().enumerate().filter(|(_, s)| s.running()) {
                    if let Some(i) = self.ledger.running(w) {
                        self.out.cut_short.push(CutShort {
                            nodeid: self.out.run_list[i].clone(),
                            worker: slot.worker.name().to_string(),
                        });
                    }
                }
                self.course = Course::Interrupted {
                    kill_at: Instant::now() + self.options.grace_period,
                };
                self.signal_running(Signal::SIGINT);
            }
            Course::Interrupted { .. } | Course::Killing => {
                self.course = Course::Killing;
                self.signal_running(Signal::SIGKILL);
            }
        }
        self.out.interrupted = true;
        if let Some(s) = self.scheduler.as_mut() {
            s.cancel();
        }
        // Workers waiting for work (or its answer) get theirs: shutdown.
        self.serve_all();
    }

    fn signal_running(&self, signal: Signal) {
        for slot in &self.slots {
            slot.signal(signal);
        }
    }

    /// Ctrl-Z: the workers' process groups stop (they are not in the terminal's foreground
    /// group), then this process, as the default action would; on `fg` they go on, and the
    /// time stopped does not count against --timeout.
    fn suspend(&mut self) {
        self.signal_running(Signal::SIGSTOP);
        let stopped = Instant::now();
        let _ = nix::sys::signal::raise(Signal::SIGSTOP);
        let away = stopped.elapsed();
        for slot in &mut self.slots {
            if let Some(at) = slot.running_since.as_mut() {
                *at += away;
            }
        }
        if let Course::Interrupted { kill_at } = &mut self.course {
            *kill_at += away;
        }
        self.signal_running(Signal::SIGCONT);
    }

    /// Kills what must die (past the grace period, past --timeout), then reaps ended
    /// workers; a worker that ended without finishing its session crashed.
    fn reap(&mut self) {
        if let Course::Interrupted { kill_at } = self.course {
            if Instant::now() >= kill_at {
                self.course = Course::Killing;
            }
        }
        if self.course == Course::Killing {
            self.signal_running(Signal::SIGKILL);
        }
        if let Some(timeout) = self.options.timeout {
            for slot in self.slots.iter_mut().filter(|s| s.overdue(timeout)) {
                slot.kill(Kill::Timeout);
            }
        }
        for w in 0..self.slots.len() {
            self.slots[w].poll_exit();
            let Some(exit) = self.slots[w].reapable() else {
                continue;
            };
            self.slots[w].lifecycle = Lifecycle::Reaped;
            match self.slots[w].finished {
                None => self.on_crash(w, exit),
                Some(status) if status == i32::from(exit::INTERNAL_ERROR) => self.give_back(w),
                Some(_) => {}
            }
            self.maybe_start_schedule();
            self.release_parked();
        }
    }

    /// A worker ended without finishing its session (a crash, or killed by us): the test it
    /// ran gets an error report, its records lost with it run again, the rest goes back to
    /// the queue, and a new worker takes its place.
    fn on_crash(&mut self, w: usize, exit: Exit) {
        let loss = self.ledger.lose(w);
        let slot = &mut self.slots[w];
        slot.wants = None;
        slot.running_since = None;
        if self.out.interrupted {
            // Killed on purpose; what it finished is kept.
            let reported = loss.rerun.iter().chain(&loss.orphaned);
            let names: Vec<String> = reported.map(|&i| self.out.run_list[i].clone()).collect();
            self.out.cache_orphans.extend(names);
            return;
        }
        let name = slot.worker.name().to_string();
        let killed = slot.killed;
        let collected = slot.collected.is_some();
        let output = slot.worker.last_output(20);
        self.note_crash(&name, exit, killed, collected, loss.running);
        match loss.running {
            Some(i) => self.lost_test(w, i, exit, killed, &output),
            None if !output.is_empty() => self
                .out
                .warnings
                .push(format!("last output of worker {name}:\n{output}")),
            None => {}
        }
        let orphans: Vec<String> = loss
            .orphaned
            .iter()
            .map(|&i| self.out.run_list[i].clone())
            .collect();
        self.out.cache_orphans.extend(orphans);
        if !loss.rerun.is_empty() {
            self.run_again(w, &loss.rerun);
        }
        if let (Some(scheduler), Some(unit)) = (self.scheduler.as_mut(), loss.requeue) {
            scheduler.requeue(unit);
        }
        self.maybe_replace(w, killed);
        self.serve_all();
    }

    /// The one line that says how a worker was lost: a problem before it collected, a crash
    /// after (a worker refused for its protocol has its problem already).
    fn note_crash(
        &mut self,
        name: &str,
        exit: Exit,
        killed: Option<Kill>,
        collected: bool,
        running: Option<usize>,
    ) {
        let what = match running {
            Some(i) => format!("while running {}", self.out.run_list[i]),
            None if !collected => "before it finished collecting".to_string(),
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
        } else if !collected {
            self.out.problems.push(message);
        } else {
            self.out.crashes.push(message);
        }
    }

    /// The test a worker died under: an error report naming the cause.
    fn lost_test(&mut self, w: usize, i: usize, exit: Exit, killed: Option<Kill>, output: &str) {
        let nodeid = self.out.run_list[i].clone();
        let name = self.slots[w].worker.name();
        let report = match (killed, self.options.timeout) {
            (Some(Kill::Timeout), Some(t)) => crash_report::timeout(&nodeid, name, t, output),
            (Some(Kill::Refused), _) => crash_report::refused(&nodeid, name, output),
            _ => crash_report::crash(&nodeid, name, exit, output),
        };
        self.out.crashed.push(nodeid.clone());
        self.sink
            .test_lost(w, &nodeid, &report, self.ledger.cost(i));
        self.out.results.push(TestResult {
            nodeid,
            worker: w,
            reports: vec![report],
        });
    }

    /// Tests a lost worker had reported but whose records died with it: their results are
    /// dropped, and they run again.
    fn run_again(&mut self, w: usize, rerun: &[usize]) {
        let names: HashSet<&str> = rerun
            .iter()
            .map(|&i| self.out.run_list[i].as_str())
            .collect();
        self.out
            .results
            .retain(|r| r.worker != w || !names.contains(r.nodeid.as_str()));
        self.out
            .sections
            .retain(|s| !names.contains(s.nodeid.as_str()));
        self.sink
            .run_again(w, rerun.len(), self.ledger.cost_of(rerun));
    }

    /// A worker whose pytest ended with an internal error, holding tests it never started:
    /// they go back to the queue, to a worker that takes its place.
    fn give_back(&mut self, w: usize) {
        let held = self.ledger.give_back(w);
        let Some(unit) = held.filter(|_| !self.stopping()) else {
            return;
        };
        if let Some(scheduler) = self.scheduler.as_mut() {
            scheduler.requeue(unit);
        }
        self.maybe_replace(w, None);
        self.serve_all();
    }

    /// Starts a worker in place of the one that died, while work is left and restarts are.
    fn maybe_replace(&mut self, w: usize, killed: Option<Kill>) {
        let work_left = self.scheduler.as_ref().is_some_and(|s| s.units_left() > 0);
        if self.stopping() || killed == Some(Kill::Refused) || !work_left {
            return;
        }
        let name = self.slots[w].worker.name().to_string();
        let max = self.options.max_worker_restart;
        if self.out.restarts >= max {
            self.out.warnings.push(format!(
                "worker {name} not replaced: --max-worker-restart {max} reached"
            ));
            return;
        }
        let generation = self.slots[w].generation + 1;
        match (self.spawn)(w, generation) {
            Ok(worker) => {
                self.out.restarts += 1;
                self.out.stems.push(worker.stem().to_string());
                // The old slot's worker is dropped: its process group killed.
                self.slots[w] = Slot::new(worker, generation);
                self.sink.worker_replaced(w, self.out.restarts, max);
            }
            Err(err) => self
                .out
                .problems
                .push(format!("replacing worker {name}: {err:#}")),
        }
    }
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
