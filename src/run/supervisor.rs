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
use crate::shard::partition;
use crate::shard::Shard;

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
    /// This CI job's shard: only its share of the selected tests runs.
    pub(crate) shard: Option<Shard>,
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
            Event::PluginHeader(lines) => self.sink.plugin_header(&lines),
            Event::WorkerInput {
                worker,
                generation,
                input,
            } => {
                let slot = &mut self.slots[worker];
                if slot.generation == generation && slot.running() {
                    slot.worker.send(&ToWorker::WorkerInput { input });
                }
            }
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
                forward,
                whole_files,
                bound,
            } => {
                self.sink.worker_ready(w, &nodeids, &forward);
                self.slots[w].collected = Some(Collected {
                    nodeids,
                    deselected,
                    user_deselected,
                    sync,
                    collect_errors,
                    tm_message,
                    whole_files,
                    bound,
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
                forward,
            } => {
                if !forward.is_empty() {
                    self.sink.forward(w, &forward);
                }
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
                workeroutput,
            } => {
                self.slots[w].finished = Some(exitstatus);
                self.slots[w].workeroutput = workeroutput;
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
        let selected = collected.nodeids.clone();
        let tm_message = collected.tm_message.take();
        self.out.deselected = collected.deselected;
        self.out.user_deselected = std::mem::take(&mut collected.user_deselected);
        self.out.sync = collected.sync.take();
        self.out.collect_errors = std::mem::take(&mut collected.collect_errors);
        let hints = scheduler::Hints {
            whole_files: std::mem::take(&mut collected.whole_files)
                .into_iter()
                .collect(),
            bound: std::mem::take(&mut collected.bound).into_iter().collect(),
            workers: self.slots.len(),
        };
        self.compare_collections(first, &selected);
        let share = self.options.shard.map(|shard| {
            partition::share(&selected, self.durations, self.options.dist, &hints, shard)
        });
        let run_list: Vec<String> = match &share {
            Some(share) => share.tests.iter().map(|&i| selected[i].clone()).collect(),
            None => selected.clone(),
        };
        self.index = run_list
            .iter()
            .enumerate()
            .map(|(i, n)| (n.clone(), i))
            .collect();
        let mut scheduler = Scheduler::new(&run_list, self.durations, self.options.dist, &hints);
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
            expected: run_list
                .iter()
                .any(|t| self.durations.contains_key(t))
                .then(|| self.ledger.expected_total()),
            share: share.as_ref(),
        });
        // As pytest-split counts them: the other shards' tests are deselected here.
        self.out.deselected += (selected.len() - run_list.len()) as u64;
        self.out.run_list = run_list;
        self.out.selected = selected;
        self.out.share = share;
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
            let slot = &self.slots[w];
            if slot.closed && slot.running() && slot.worker.unborn() {
                self.start_afresh(w);
                continue;
            }
            self.slots[w].poll_exit();
            let Some(exit) = self.slots[w].reapable() else {
                continue;
            };
            self.slots[w].lifecycle = Lifecycle::Reaped;
            let error = match self.slots[w].finished {
                None => Some(format!(
                    "worker ended before its session did ({})",
                    exit.describe()
                )),
                Some(_) => None,
            };
            self.sink
                .worker_down(w, self.slots[w].workeroutput.as_ref(), error.as_deref());
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

    /// A worker that never came to be (WorkerHandle::unborn) is started in its place, the
    /// same incarnation, unless the run is stopping.
    fn start_afresh(&mut self, w: usize) {
        let started = if self.stopping() {
            None
        } else {
            let name = self.slots[w].worker.name().to_string();
            match (self.spawn)(w, self.slots[w].generation) {
                Ok(worker) => Some(worker),
                Err(err) => {
                    self.out
                        .problems
                        .push(format!("starting worker {name}: {err:#}"));
                    None
                }
            }
        };
        match started {
            Some(worker) => self.slots[w] = Slot::new(worker, self.slots[w].generation),
            None => {
                self.slots[w].lifecycle = Lifecycle::Reaped;
                self.sink.worker_down(w, None, None);
            }
        }
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

#[cfg(test)]
mod tests {
    //! The supervisor's crash, timeout, interrupt and replacement logic with fake workers and
    //! a recording sink: events go in through `handle`, time passes through `reap`; no
    //! process is started.

    use std::cell::RefCell;
    use std::rc::Rc;
    use std::sync::mpsc;

    use super::*;

    /// What a fake worker was sent and signalled, and how its process ends.
    #[derive(Default)]
    struct FakeState {
        sent: Vec<ToWorker>,
        signals: Vec<Signal>,
        exit: Option<Exit>,
        /// A fork that never came (run::zygote).
        unborn: bool,
    }

    type Shared = Rc<RefCell<FakeState>>;

    struct Fake {
        name: String,
        stem: String,
        state: Shared,
    }

    impl WorkerHandle for Fake {
        fn name(&self) -> &str {
            &self.name
        }
        fn stem(&self) -> &str {
            &self.stem
        }
        fn send(&mut self, msg: &ToWorker) {
            self.state.borrow_mut().sent.push(msg.clone());
        }
        fn signal(&self, signal: Signal) {
            let mut state = self.state.borrow_mut();
            state.signals.push(signal);
            // SIGKILL ends a process group at once.
            if signal == Signal::SIGKILL && state.exit.is_none() {
                state.exit = Some(Exit::Signal(9));
            }
        }
        fn try_exit(&mut self) -> Option<Exit> {
            self.state.borrow().exit
        }
        fn last_output(&self, _lines: usize) -> String {
            format!("last words of {}", self.stem)
        }
        fn unborn(&self) -> bool {
            self.state.borrow().unborn
        }
    }

    /// The sink's events as short lines.
    #[derive(Default)]
    struct Recorder(Vec<String>);

    impl Sink for Recorder {
        fn scheduled(&mut self, run: &Scheduled) {
            self.0.push(format!(
                "scheduled {} {:?}",
                run.run_list.len(),
                run.expected
            ));
        }
        fn test_started(&mut self, worker: usize, nodeid: &str) {
            self.0.push(format!("started {worker} {nodeid}"));
        }
        fn test_finished(&mut self, worker: usize, nodeid: &str, _: &[Report], _: f64) {
            self.0.push(format!("finished {worker} {nodeid}"));
        }
        fn test_lost(&mut self, worker: usize, nodeid: &str, report: &Report, _: f64) {
            let message = report.message.clone().unwrap_or_default();
            self.0.push(format!("lost {worker} {nodeid}: {message}"));
        }
        fn run_again(&mut self, worker: usize, count: usize, _: f64) {
            self.0.push(format!("run again {worker} {count}"));
        }
        fn worker_replaced(&mut self, worker: usize, restarts: u32, max: u32) {
            self.0.push(format!("replaced {worker} {restarts}/{max}"));
        }
        fn worker_ready(&mut self, worker: usize, ids: &[String], failed: &[serde_json::Value]) {
            self.0
                .push(format!("ready {worker} {} {}", ids.len(), failed.len()));
        }
        fn forward(&mut self, worker: usize, reports: &[serde_json::Value]) {
            self.0.push(format!("forward {worker} {}", reports.len()));
        }
        fn worker_down(
            &mut self,
            worker: usize,
            output: Option<&serde_json::Value>,
            error: Option<&str>,
        ) {
            let output = output.map(ToString::to_string);
            self.0.push(format!("down {worker} {output:?} {error:?}"));
        }
        fn plugin_header(&mut self, lines: &[String]) {
            self.0.push(format!("header {lines:?}"));
        }
    }

    const TESTS: [&str; 4] = ["t.py::a", "t.py::b", "u.py::c", "u.py::d"];

    /// Every fake worker started, the replacements included, by stem.
    type Started = Rc<RefCell<Vec<(String, Shared)>>>;

    struct Harness {
        started: Started,
        durations: HashMap<String, f64>,
        recorder: Recorder,
        _events: mpsc::Sender<Event>,
        receiver: Option<mpsc::Receiver<Event>>,
    }

    fn fake(index: usize, generation: u32, started: &Started) -> Fake {
        let stem = crate::run::worker::stem(index, generation);
        let state = Shared::default();
        started.borrow_mut().push((stem.clone(), state.clone()));
        Fake {
            name: crate::run::worker::name(index),
            stem,
            state,
        }
    }

    impl Harness {
        fn new() -> Harness {
            let (tx, rx) = mpsc::channel();
            Harness {
                started: Started::default(),
                durations: HashMap::new(),
                recorder: Recorder::default(),
                _events: tx,
                receiver: Some(rx),
            }
        }

        /// A supervisor of `workers` fakes; replacements are fakes too.
        fn supervisor(
            &mut self,
            workers: usize,
            options: Options,
        ) -> Supervisor<'_, Fake, Recorder> {
            let fakes = (0..workers).map(|i| fake(i, 0, &self.started)).collect();
            let started = self.started.clone();
            let spawn: Spawn<Fake> =
                Box::new(move |i, generation| Ok(fake(i, generation, &started)));
            let events = self.receiver.take().expect("one supervisor per harness");
            Supervisor::new(
                fakes,
                spawn,
                events,
                &self.durations,
                options,
                &mut self.recorder,
            )
        }
    }

    fn options() -> Options {
        Options {
            dist: Dist::Load,
            maxfail: 0,
            timeout: None,
            grace_period: Duration::from_secs(600),
            max_worker_restart: 4,
            shard: None,
        }
    }

    fn state(started: &Started, stem: &str) -> Shared {
        let started = started.borrow();
        let found = started.iter().find(|(s, _)| s == stem);
        found
            .map(|(_, state)| state.clone())
            .expect("a worker of that stem")
    }

    /// The node ids a worker was told to run, in order.
    fn runs(state: &Shared) -> Vec<String> {
        state
            .borrow()
            .sent
            .iter()
            .flat_map(|m| match m {
                ToWorker::Run { nodeids } => nodeids.clone(),
                _ => Vec::new(),
            })
            .collect()
    }

    fn last_sent(state: &Shared) -> Option<ToWorker> {
        state.borrow().sent.last().cloned()
    }

    fn msg(worker: usize, json: serde_json::Value) -> Event {
        let msg = protocol::parse(&json.to_string()).expect("a message of the protocol");
        Event::Message { worker, msg }
    }

    fn collected(worker: usize, nodeids: &[&str]) -> Event {
        msg(
            worker,
            serde_json::json!({"t": "collected", "nodeids": nodeids, "deselected": 0,
                               "sync": nodeids, "collect_errors": []}),
        )
    }

    fn want(worker: usize, queued: usize) -> Event {
        msg(worker, serde_json::json!({"t": "want", "queued": queued}))
    }

    fn result(worker: usize, nodeid: &str, outcome: &str, durable: bool) -> Event {
        let report = serde_json::json!({"when": "call", "outcome": outcome, "category": outcome,
                                        "duration": 0.1, "head_line": nodeid});
        msg(
            worker,
            serde_json::json!({"t": "result", "nodeid": nodeid, "reports": [report],
                               "durable": durable}),
        )
    }

    fn finished(worker: usize, exitstatus: i32) -> Event {
        msg(
            worker,
            serde_json::json!({"t": "finished", "exitstatus": exitstatus}),
        )
    }

    /// Every worker collects TESTS and asks for work.
    fn start(sup: &mut Supervisor<'_, Fake, Recorder>, workers: usize) {
        for w in 0..workers {
            sup.handle(collected(w, &TESTS));
        }
        for w in 0..workers {
            sup.handle(want(w, 0));
        }
    }

    /// Worker `w`'s process ends (its socket closed), and the supervisor reaps it.
    fn dies(sup: &mut Supervisor<'_, Fake, Recorder>, state: &Shared, w: usize, exit: Exit) {
        state.borrow_mut().exit = Some(exit);
        sup.handle(Event::Closed { worker: w });
        sup.reap();
    }

    /// The workers that are alive (the latest incarnation of each index) run what they are
    /// given, a test per step, asking for more; told to shut down, they finish and exit.
    /// Steps until nothing moves. `fails`: these tests fail.
    fn play(sup: &mut Supervisor<'_, Fake, Recorder>, started: &Started, fails: &[&str]) {
        let mut done: HashMap<String, usize> = HashMap::new();
        for _ in 0..1000 {
            sup.reap();
            let mut moved = false;
            let current: Vec<(usize, String, Shared)> = {
                let all = started.borrow();
                let mut latest: Vec<Option<(String, Shared)>> = Vec::new();
                for (stem, state) in all.iter() {
                    let index: usize = stem[2..].split('.').next().unwrap().parse().unwrap();
                    if latest.len() <= index {
                        latest.resize(index + 1, None);
                    }
                    latest[index] = Some((stem.clone(), state.clone()));
                }
                latest
                    .into_iter()
                    .enumerate()
                    .filter_map(|(i, s)| s.map(|(stem, state)| (i, stem, state)))
                    .collect()
            };
            for (w, stem, state) in current {
                if state.borrow().exit.is_some() {
                    continue;
                }
                let ran = runs(&state);
                let n = done.entry(stem).or_default();
                let told_to_end = matches!(
                    last_sent(&state),
                    Some(ToWorker::Shutdown) | Some(ToWorker::Stop)
                );
                if *n < ran.len() && !told_to_end {
                    let outcome = if fails.contains(&ran[*n].as_str()) {
                        "failed"
                    } else {
                        "passed"
                    };
                    sup.handle(result(w, &ran[*n], outcome, true));
                    *n += 1;
                    sup.handle(want(w, ran.len() - *n));
                    moved = true;
                } else if told_to_end {
                    sup.handle(finished(w, 0));
                    dies(sup, &state, w, Exit::Code(0));
                    moved = true;
                }
            }
            if !moved {
                return;
            }
        }
        panic!("the run did not settle");
    }

    fn workerinputs(state: &Shared) -> Vec<serde_json::Value> {
        let sent = &state.borrow().sent;
        sent.iter()
            .filter_map(|m| match m {
                ToWorker::WorkerInput { input } => Some(input.clone()),
                _ => None,
            })
            .collect()
    }

    /// The controller's side of a run: each worker's workerinput goes to the incarnation it
    /// was asked for (never to its replacement), and the sink hears each worker's collection,
    /// forwarded reports and end, with its workeroutput or what went wrong.
    #[test]
    fn controller_events_reach_the_sink_and_workerinput_its_incarnation() {
        let mut h = Harness::new();
        let started = h.started.clone();
        let mut sup = h.supervisor(2, options());
        let input = |id: &str| serde_json::json!({"workerid": id, "cov_master_host": "h"});
        sup.handle(Event::WorkerInput {
            worker: 0,
            generation: 0,
            input: input("gw0"),
        });
        sup.handle(Event::PluginHeader(vec!["Using --randomly-seed=1".into()]));
        let gw0 = state(&started, "gw0");
        let gw1 = state(&started, "gw1");
        assert_eq!(workerinputs(&gw0), [input("gw0")]);
        assert!(workerinputs(&gw1).is_empty());
        sup.handle(msg(
            0,
            serde_json::json!({"t": "collected", "nodeids": TESTS, "deselected": 0,
                               "sync": TESTS, "collect_errors": [],
                               "forward": [{"nodeid": "bad.py", "outcome": "failed"}]}),
        ));
        sup.handle(collected(1, &TESTS));
        sup.handle(want(0, 0));
        sup.handle(want(1, 0));
        let first = runs(&gw0)[0].clone();
        let report = serde_json::json!({"when": "call", "outcome": "passed",
                                        "category": "passed", "duration": 0.1,
                                        "head_line": first});
        sup.handle(msg(
            0,
            serde_json::json!({"t": "result", "nodeid": first, "reports": [report],
                               "forward": [{"nodeid": first, "when": "setup"},
                                           {"nodeid": first, "when": "call"},
                                           {"nodeid": first, "when": "teardown"}]}),
        ));
        // gw1 crashes; its replacement's workerinput is asked for anew.
        dies(&mut sup, &gw1, 1, Exit::Signal(9));
        let gw1_1 = state(&started, "gw1.1");
        sup.handle(Event::WorkerInput {
            worker: 1,
            generation: 0,
            input: input("stale"),
        });
        assert!(workerinputs(&gw1_1).is_empty(), "the crashed one's input");
        sup.handle(Event::WorkerInput {
            worker: 1,
            generation: 1,
            input: input("gw1"),
        });
        assert_eq!(workerinputs(&gw1_1), [input("gw1")]);
        sup.handle(msg(
            0,
            serde_json::json!({"t": "finished", "exitstatus": 0,
                               "workeroutput": {"cov_worker_node_id": "gw0"}}),
        ));
        dies(&mut sup, &gw0, 0, Exit::Code(0));
        drop(sup);
        let events = &h.recorder.0;
        for expected in [
            "header [\"Using --randomly-seed=1\"]",
            "ready 0 4 1",
            "ready 1 4 0",
            "forward 0 3",
            "down 1 None Some(\"worker ended before its session did (killed by SIGKILL)\")",
            "down 0 Some(\"{\\\"cov_worker_node_id\\\":\\\"gw0\\\"}\") None",
        ] {
            assert!(
                events.iter().any(|e| e == expected),
                "{expected} not in {events:#?}"
            );
        }
    }

    #[test]
    fn a_shard_runs_only_its_share_of_the_selection() {
        let mut parts = Vec::new();
        for index in 1..=2 {
            let mut h = Harness::new();
            let started = h.started.clone();
            let shard = Some(Shard { index, total: 2 });
            let mut sup = h.supervisor(2, Options { shard, ..options() });
            start(&mut sup, 2);
            play(&mut sup, &started, &[]);
            let out = sup.conclude();
            let share = out.share.clone().expect("a shard's share");
            assert_eq!(out.selected, TESTS);
            assert_eq!(share.selected, 4);
            let mut ran: Vec<String> = ["gw0", "gw1"]
                .iter()
                .flat_map(|w| runs(&state(&started, w)))
                .collect();
            ran.sort();
            let mut listed = out.run_list.clone();
            listed.sort();
            assert_eq!(ran, listed, "shard {index} runs exactly its run list");
            assert_eq!(out.results.len(), out.run_list.len());
            assert!(out.completed());
            parts.push(out.run_list);
        }
        // The two shards' lists split the selection, each test on one of them.
        let mut all: Vec<String> = parts.concat();
        all.sort();
        assert_eq!(all, TESTS);
        assert!(!parts[0].is_empty() && !parts[1].is_empty());
    }

    #[test]
    fn a_crash_while_running_reports_an_error_and_requeues_the_rest() {
        let mut h = Harness::new();
        let started = h.started.clone();
        let by_file = Options {
            dist: Dist::Loadfile,
            ..options()
        };
        let mut sup = h.supervisor(2, by_file);
        start(&mut sup, 2);
        let gw0 = state(&started, "gw0");
        // A file's two tests: one running, one held as next.
        let held = runs(&gw0);
        assert_eq!(held.len(), 2, "{held:?}");
        let first = held[0].clone();
        dies(&mut sup, &gw0, 0, Exit::Signal(11));
        // A replacement takes gw0's place and collects.
        let gw0_1 = state(&started, "gw0.1");
        sup.handle(collected(0, &TESTS));
        sup.handle(want(0, 0));
        play(&mut sup, &started, &[]);
        let out = sup.conclude();
        assert_eq!(out.crashed, std::slice::from_ref(&first));
        assert_eq!(out.crashes.len(), 1, "{:?}", out.crashes);
        assert!(out.crashes[0].contains("crashed (killed by SIGSEGV) while running"));
        let errors: Vec<&TestResult> = out.results.iter().filter(|r| r.failed()).collect();
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].nodeid, first);
        assert!(errors[0].reports[0]
            .text
            .as_deref()
            .unwrap()
            .contains("last words of gw0"));
        // Every test has exactly one result; the crashed one is not run again.
        let mut ran: Vec<&str> = out.results.iter().map(|r| r.nodeid.as_str()).collect();
        ran.sort_unstable();
        assert_eq!(ran, TESTS);
        let elsewhere = [runs(&gw0_1), runs(&state(&started, "gw1"))].concat();
        assert!(
            !elsewhere.contains(&first),
            "{first} ran again: {elsewhere:?}"
        );
        assert!(elsewhere.contains(&held[1]), "{} was not requeued", held[1]);
        assert_eq!(out.restarts, 1);
        assert_eq!(out.stems, ["gw0", "gw1", "gw0.1"]);
        assert!(out.not_run.is_empty());
        assert_eq!(out.exit_code(), exit::TESTS_FAILED);
        assert!(h
            .recorder
            .0
            .iter()
            .any(|e| e.starts_with(&format!("lost 0 {first}: worker 'gw0' crashed"))));
        assert!(h.recorder.0.contains(&"replaced 0 1/4".to_string()));
    }

    fn by_file() -> Options {
        Options {
            dist: Dist::Loadfile,
            ..options()
        }
    }

    #[test]
    fn a_crash_after_a_result_not_yet_durable_runs_that_test_again() {
        let mut h = Harness::new();
        let started = h.started.clone();
        let mut sup = h.supervisor(2, by_file());
        start(&mut sup, 2);
        let gw0 = state(&started, "gw0");
        let held = runs(&gw0);
        // The first test's records are not in the spool yet when the worker dies.
        sup.handle(result(0, &held[0], "passed", false));
        sup.handle(want(0, 1));
        dies(&mut sup, &gw0, 0, Exit::Code(1));
        sup.handle(collected(0, &TESTS));
        sup.handle(want(0, 0));
        play(&mut sup, &started, &[]);
        let out = sup.conclude();
        let rerun = [
            runs(&state(&started, "gw0.1")),
            runs(&state(&started, "gw1")),
        ]
        .concat();
        assert!(
            rerun.contains(&held[0]),
            "{} not run again: {rerun:?}",
            held[0]
        );
        let results: Vec<&str> = out.results.iter().map(|r| r.nodeid.as_str()).collect();
        assert_eq!(
            results.iter().filter(|n| **n == held[0]).count(),
            1,
            "{results:?}"
        );
        assert_eq!(out.crashed, [held[1].clone()]);
        assert!(
            h.recorder.0.contains(&"run again 0 1".to_string()),
            "{:?}",
            h.recorder.0
        );
        assert!(!out.cache_orphans.contains(&held[0]));
    }

    #[test]
    fn maxfail_stops_every_worker_and_interrupt_shuts_them_down() {
        let mut h = Harness::new();
        let started = h.started.clone();
        let options = Options {
            maxfail: 1,
            ..by_file()
        };
        let mut sup = h.supervisor(2, options);
        start(&mut sup, 2);
        let (gw0, gw1) = (state(&started, "gw0"), state(&started, "gw1"));
        let failing = runs(&gw0)[0].clone();
        sup.handle(result(0, &failing, "failed", true));
        // gw0 holds its next test: it asks with one queued and is told to stop.
        sup.handle(want(0, 1));
        assert_eq!(last_sent(&gw0), Some(ToWorker::Stop));
        // gw1 finishes the test it runs; the one it holds as next never starts.
        let [running, next] = <[String; 2]>::try_from(runs(&gw1)).unwrap();
        sup.handle(result(1, &running, "passed", true));
        sup.handle(want(1, 1));
        assert_eq!(last_sent(&gw1), Some(ToWorker::Stop));
        play(&mut sup, &started, &[]);
        let out = sup.conclude();
        assert_eq!(out.stopped_after, Some(1));
        assert!(
            !out.results.iter().any(|r| r.nodeid == next),
            "{next} started"
        );
        assert!(
            out.not_run.is_empty(),
            "-x is not a crash: {:?}",
            out.not_run
        );
        assert_eq!(out.exit_code(), exit::TESTS_FAILED);

        let mut h = Harness::new();
        let started = h.started.clone();
        let mut sup = h.supervisor(2, by_file());
        start(&mut sup, 2);
        sup.handle(Event::Signal(SignalEvent::Interrupt));
        sup.handle(want(1, 1));
        assert_eq!(last_sent(&state(&started, "gw1")), Some(ToWorker::Shutdown));
    }

    #[test]
    fn the_first_interrupt_asks_workers_to_stop_the_second_kills_them() {
        let mut h = Harness::new();
        let started = h.started.clone();
        let mut sup = h.supervisor(2, options());
        start(&mut sup, 2);
        let (gw0, gw1) = (state(&started, "gw0"), state(&started, "gw1"));
        let running = [runs(&gw0)[0].clone(), runs(&gw1)[0].clone()];
        sup.handle(Event::Signal(SignalEvent::Interrupt));
        assert_eq!(gw0.borrow().signals, [Signal::SIGINT]);
        assert_eq!(gw1.borrow().signals, [Signal::SIGINT]);
        sup.reap();
        assert_eq!(gw0.borrow().exit, None, "the grace period is not over");
        sup.handle(Event::Signal(SignalEvent::Interrupt));
        assert_eq!(gw0.borrow().signals, [Signal::SIGINT, Signal::SIGKILL]);
        assert_eq!(gw1.borrow().signals, [Signal::SIGINT, Signal::SIGKILL]);
        sup.handle(Event::Closed { worker: 0 });
        sup.handle(Event::Closed { worker: 1 });
        sup.reap();
        assert!(sup.slots.iter().all(Slot::reaped));
        assert_eq!(
            started.borrow().len(),
            2,
            "no replacement after an interrupt"
        );
        let out = sup.conclude();
        assert!(out.interrupted);
        let cut: Vec<&str> = out.cut_short.iter().map(|c| c.nodeid.as_str()).collect();
        assert_eq!(cut, running.iter().map(String::as_str).collect::<Vec<_>>());
        assert!(out.crashes.is_empty() && out.crashed.is_empty());
        assert_eq!(out.exit_code(), exit::INTERRUPTED);
    }

    #[test]
    fn the_grace_period_ends_in_sigkill() {
        let mut h = Harness::new();
        let started = h.started.clone();
        let options = Options {
            grace_period: Duration::ZERO,
            ..options()
        };
        let mut sup = h.supervisor(1, options);
        start(&mut sup, 1);
        sup.handle(Event::Signal(SignalEvent::Interrupt));
        sup.reap();
        let gw0 = state(&started, "gw0");
        assert_eq!(gw0.borrow().signals, [Signal::SIGINT, Signal::SIGKILL]);
    }

    #[test]
    fn parked_workers_get_requeued_work_or_are_released_after_a_crash() {
        // One file: gw0 takes both its tests, gw1 finds nothing and waits, parked.
        let one_file = ["t.py::a", "t.py::b"];
        let mut h = Harness::new();
        let started = h.started.clone();
        let options = Options {
            max_worker_restart: 0,
            ..by_file()
        };
        let mut sup = h.supervisor(2, options);
        sup.handle(collected(0, &one_file));
        sup.handle(collected(1, &one_file));
        sup.handle(want(0, 0));
        sup.handle(want(1, 0));
        let (gw0, gw1) = (state(&started, "gw0"), state(&started, "gw1"));
        assert_eq!(runs(&gw0), one_file);
        assert_eq!(last_sent(&gw1), None, "parked");
        dies(&mut sup, &gw0, 0, Exit::Signal(9));
        // The parked worker gets the test the dead one held as next.
        assert_eq!(runs(&gw1), ["t.py::b"]);
        sup.handle(result(1, "t.py::b", "passed", true));
        sup.handle(want(1, 0));
        assert_eq!(last_sent(&gw1), Some(ToWorker::Shutdown));

        // A crash that leaves nothing to hand out releases the parked worker.
        let mut h = Harness::new();
        let started = h.started.clone();
        let mut sup = h.supervisor(2, by_file());
        let single = ["t.py::a"];
        sup.handle(collected(0, &single));
        sup.handle(collected(1, &single));
        sup.handle(want(0, 0));
        sup.handle(want(1, 0));
        let (gw0, gw1) = (state(&started, "gw0"), state(&started, "gw1"));
        assert_eq!(last_sent(&gw1), None, "parked");
        dies(&mut sup, &gw0, 0, Exit::Signal(9));
        assert_eq!(last_sent(&gw1), Some(ToWorker::Shutdown));
        assert_eq!(started.borrow().len(), 2, "nothing left: no replacement");
    }

    #[test]
    fn a_test_past_the_timeout_is_killed_and_its_worker_replaced() {
        let mut h = Harness::new();
        let started = h.started.clone();
        let options = Options {
            timeout: Some(Duration::from_millis(1)),
            ..by_file()
        };
        let mut sup = h.supervisor(1, options);
        start(&mut sup, 1);
        let gw0 = state(&started, "gw0");
        let held = runs(&gw0);
        std::thread::sleep(Duration::from_millis(20));
        sup.reap();
        assert_eq!(gw0.borrow().signals, [Signal::SIGKILL]);
        sup.handle(Event::Closed { worker: 0 });
        sup.reap();
        let gw0_1 = state(&started, "gw0.1");
        sup.handle(collected(0, &TESTS));
        // The replacement gets the killed worker's next test first.
        sup.handle(want(0, 0));
        assert_eq!(runs(&gw0_1)[0], held[1]);
        sup.options.timeout = None;
        play(&mut sup, &started, &[]);
        let out = sup.conclude();
        assert_eq!(out.crashed, [held[0].clone()]);
        assert_eq!(
            out.crashes,
            [format!(
                "worker gw0 timed out after 0.001s while running {}",
                held[0]
            )]
        );
        let lost = out.results.iter().find(|r| r.nodeid == held[0]).unwrap();
        assert!(lost.reports[0]
            .message
            .as_deref()
            .unwrap()
            .starts_with("Timeout:"));
        assert_eq!(out.restarts, 1);
        assert_eq!(out.results.len(), TESTS.len());
    }

    #[test]
    fn past_the_restart_limit_the_rest_is_listed_not_run() {
        let mut h = Harness::new();
        let started = h.started.clone();
        let options = Options {
            max_worker_restart: 0,
            ..by_file()
        };
        let mut sup = h.supervisor(1, options);
        start(&mut sup, 1);
        let gw0 = state(&started, "gw0");
        let held = runs(&gw0);
        dies(&mut sup, &gw0, 0, Exit::Signal(9));
        assert!(sup.slots.iter().all(Slot::reaped));
        let out = sup.conclude();
        assert_eq!(out.crashed, [held[0].clone()]);
        let mut not_run = out.not_run.clone();
        not_run.sort();
        let expected: Vec<String> = TESTS
            .iter()
            .filter(|t| **t != held[0])
            .map(|t| t.to_string())
            .collect();
        assert_eq!(not_run, expected);
        assert_eq!(
            out.warnings,
            ["worker gw0 not replaced: --max-worker-restart 0 reached"]
        );
        assert_eq!(out.exit_code(), exit::INTERNAL_ERROR);
    }

    #[test]
    fn tests_held_by_a_worker_ending_in_an_internal_error_go_to_its_replacement() {
        let mut h = Harness::new();
        let started = h.started.clone();
        let mut sup = h.supervisor(1, by_file());
        start(&mut sup, 1);
        let gw0 = state(&started, "gw0");
        let held = runs(&gw0);
        sup.handle(finished(0, i32::from(exit::INTERNAL_ERROR)));
        dies(&mut sup, &gw0, 0, Exit::Code(3));
        sup.handle(collected(0, &TESTS));
        sup.handle(want(0, 0));
        assert_eq!(runs(&state(&started, "gw0.1")), held);
        play(&mut sup, &started, &[]);
        let out = sup.conclude();
        assert!(out.crashed.is_empty());
        assert_eq!(out.results.len(), TESTS.len());
        assert_eq!(out.exitstatus, [Some(0)], "the replacement's status");
    }

    #[test]
    fn a_worker_that_speaks_garbage_is_killed_not_replaced() {
        let mut h = Harness::new();
        let started = h.started.clone();
        let mut sup = h.supervisor(2, options());
        start(&mut sup, 2);
        let gw1 = state(&started, "gw1");
        let running = runs(&gw1)[0].clone();
        sup.handle(Event::Garbage {
            worker: 1,
            detail: "unreadable".into(),
        });
        assert_eq!(gw1.borrow().signals, [Signal::SIGKILL]);
        // What it says after that is not listened to.
        sup.handle(result(1, &running, "passed", true));
        sup.handle(Event::Closed { worker: 1 });
        play(&mut sup, &started, &[]);
        let out = sup.conclude();
        assert_eq!(out.problems, ["worker gw1: unreadable"]);
        assert!(out.crashes.is_empty());
        let lost = out.results.iter().find(|r| r.nodeid == running).unwrap();
        assert!(lost.failed());
        assert_eq!(
            started.borrow().len(),
            2,
            "a replacement would speak garbage too"
        );
        assert_eq!(out.exit_code(), exit::INTERNAL_ERROR);
    }

    #[test]
    fn a_worker_whose_collection_differs_runs_only_what_it_collected() {
        let mut h = Harness::new();
        let started = h.started.clone();
        let mut sup = h.supervisor(2, options());
        sup.handle(collected(0, &TESTS));
        sup.handle(collected(1, &["t.py::a"]));
        for _ in 0..4 {
            sup.handle(want(1, 0));
        }
        assert_eq!(runs(&state(&started, "gw1")), ["t.py::a"]);
        sup.handle(want(0, 0));
        play(&mut sup, &started, &[]);
        let out = sup.conclude();
        assert_eq!(out.warnings.len(), 1);
        assert!(
            out.warnings[0].contains("only gw0: t.py::b, u.py::c, u.py::d"),
            "{}",
            out.warnings[0]
        );
        assert_eq!(out.results.len(), TESTS.len());
    }

    #[test]
    fn the_expected_time_comes_from_recorded_durations_only() {
        let mut h = Harness::new();
        let mut sup = h.supervisor(1, options());
        start(&mut sup, 1);
        drop(sup);
        assert_eq!(
            scheduled(&h.recorder),
            "scheduled 4 None",
            "a new database: no estimate"
        );

        let mut h = Harness::new();
        h.durations = [("t.py::a", 3.0), ("u.py::c", 1.0)]
            .map(|(t, d)| (t.to_string(), d))
            .into();
        let mut sup = h.supervisor(1, options());
        start(&mut sup, 1);
        drop(sup);
        // The two unknown tests cost the median of the known ones: 3 + 1 + 2 × 2.
        assert_eq!(scheduled(&h.recorder), "scheduled 4 Some(8.0)");
    }

    fn scheduled(recorder: &Recorder) -> &str {
        let found = recorder.0.iter().find(|e| e.starts_with("scheduled"));
        found.expect("the schedule started")
    }

    /// A fork gw0 never made (gw0 ended before its collection) is started afresh as the same
    /// incarnation, not reported as a crash nor counted as a restart; then the run goes on.
    #[test]
    fn a_fork_that_never_came_is_started_afresh_unless_the_run_is_stopping() {
        let mut h = Harness::new();
        let started = h.started.clone();
        let mut sup = h.supervisor(2, options());
        let gw1 = state(&started, "gw1");
        gw1.borrow_mut().unborn = true;
        dies(&mut sup, &gw1, 1, Exit::Code(-1));
        let stems: Vec<String> = started.borrow().iter().map(|(s, _)| s.clone()).collect();
        assert_eq!(stems, ["gw0", "gw1", "gw1"]);
        assert!(sup.out.problems.is_empty(), "{:?}", sup.out.problems);
        assert_eq!(sup.out.restarts, 0);
        assert!(sup.slots[1].live());
        // The new gw1 is the one that collects and runs.
        start(&mut sup, 2);
        play(&mut sup, &started, &[]);
        let outcome = sup.conclude();
        assert_eq!(outcome.results.len(), TESTS.len());
        assert!(outcome.crashes.is_empty() && outcome.problems.is_empty());

        // Interrupted before gw0 forked: nothing is started, nothing reported.
        let mut h = Harness::new();
        let started = h.started.clone();
        let mut sup = h.supervisor(2, options());
        sup.handle(Event::Signal(SignalEvent::Interrupt));
        let gw1 = state(&started, "gw1");
        gw1.borrow_mut().unborn = true;
        dies(&mut sup, &gw1, 1, Exit::Code(-1));
        assert_eq!(
            started.borrow().len(),
            2,
            "no worker started while stopping"
        );
        assert!(sup.slots[1].reaped());
        assert!(sup.out.problems.is_empty(), "{:?}", sup.out.problems);
    }
}
