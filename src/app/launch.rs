//! The launch phase: N workers started with everything they need, then supervised until
//! every one has ended; the live display and the collection file see the run's events.

use std::path::PathBuf;
use std::sync::mpsc::{Receiver, Sender};
use std::time::Instant;

use anyhow::Result;

use crate::app::prepare::Ready;
use crate::atomic;
use crate::cli::Config;
use crate::probe::Facts;
use crate::report::header::Header;
use crate::run::controller::{self, Controller, Feed};
use crate::run::events::Event;
use crate::run::outcome::RunOutcome;
use crate::run::rundir::RunDir;
use crate::run::sink::{Scheduled, Sink, Tee};
use crate::run::supervisor::{Options, Supervisor};
use crate::run::worker::{self, Worker};
use crate::run::zygote::{self, Forks, Process};
use crate::ui::display::Display;
use crate::ui::{self, terminal};

/// What the supervised run left.
pub(crate) struct Launched {
    pub(crate) outcome: RunOutcome,
    /// The workers' names, by index.
    pub(crate) names: Vec<String>,
    /// When the first worker was started.
    pub(crate) spawned: Instant,
    /// Terminal facts the workers and the display used.
    pub(crate) width: usize,
    pub(crate) color: bool,
}

/// How long the controller gets for its plugins' session end (coverage combine and
/// reports, an HTML report) once the workers are done.
const CONTROLLER_PATIENCE: std::time::Duration = std::time::Duration::from_secs(300);

/// Starts the workers and supervises them until every one has ended and been reaped.
pub(crate) fn launch(
    config: &Config,
    facts: &Facts,
    ready: &Ready,
    run_dir: &RunDir,
    datafile: Option<PathBuf>,
    events: (Sender<Event>, Receiver<Event>),
) -> Result<Launched> {
    let (events_tx, events_rx) = events;
    let width = terminal::width();
    let color = terminal::color(&facts.color);
    let testrun_uid = testrun_uid();
    let spawned = Instant::now();
    let worker_datafile = ready.testmon.map(|tm| tm.datafile.clone()).or(datafile);
    let python_path = run_dir.python_path();
    let controller = if wants_controller(facts) {
        Some(Controller::spawn(
            &controller::Spec {
                command: &config.command,
                python_path: &python_path,
                run_dir: run_dir.path(),
                workers: config.workers,
                out: run_dir.log("controller"),
                err: run_dir.err_log("controller"),
                color,
                columns: width,
            },
            events_tx.clone(),
        )?)
    } else {
        None
    };
    let forks = if zygote::wanted(config.workers, facts.stream, &facts.plugin_distributions) {
        Some(Forks::new(run_dir, config.workers)?)
    } else {
        None
    };
    // xdist's workerinput for a worker's incarnation: None when the controller adds to it
    // first (it reaches the worker as an event then).
    let workerinput = |index: usize, generation: u32| {
        let input = serde_json::json!({
            "workerid": worker::name(index),
            "workercount": config.workers,
            "testrunuid": testrun_uid,
            "mainargv": config.command.iter().map(|a| a.to_string_lossy()).collect::<Vec<_>>(),
        });
        match &controller {
            Some(controller) => {
                controller.configure(index, generation, input);
                None
            }
            None => Some(input),
        }
    };
    let start = |index: usize, generation: u32, forks: Option<&Forks>| {
        let stem = worker::stem(index, generation);
        let spec = worker::Spec {
            index,
            count: config.workers,
            command: &config.command,
            python_path: &python_path,
            run_dir: run_dir.path(),
            lock_fd: run_dir.lock_fd(),
            datafile: worker_datafile.as_deref(),
            exec_id: ready.prepared.as_ref().map(|p| p.env.id),
            testrun_uid: &testrun_uid,
            log: run_dir.log(&stem),
            err_log: run_dir.err_log(&stem),
            spool: run_dir.spool(&stem),
            junit: run_dir.junit(&stem),
            stem,
            color,
            columns: width,
            stream: facts.stream,
            workerinput: workerinput(index, generation),
            forks,
        };
        Worker::spawn(&spec, events_tx.clone())
    };
    let spawn =
        |index: usize, generation: u32| start(index, generation, None).map(Process::Started);
    let zygote = forks.is_some();
    let workers = match forks {
        // gw0 forks the others once it has collected.
        Some(forks) => {
            let zygote = start(0, 0, Some(&forks))?;
            let forked = forks.into_handles(zygote.pid(), &events_tx)?;
            for index in 1..config.workers {
                // With a controller, each fork reads its own as its first message.
                let _ = workerinput(index, 0);
            }
            std::iter::once(Process::Started(zygote))
                .chain(forked.into_iter().map(Process::Forked))
                .collect()
        }
        None => (0..config.workers)
            .map(|index| spawn(index, 0))
            .collect::<Result<Vec<Process>>>()?,
    };
    let names: Vec<String> = (0..config.workers).map(worker::name).collect();
    let no_durations = Default::default();
    let durations = ready
        .prepared
        .as_ref()
        .map_or(&no_durations, |p| &p.durations);
    let options = Options {
        dist: config.dist,
        maxfail: facts.stop_after(),
        timeout: config.timeout,
        grace_period: config.grace_period,
        max_worker_restart: config.max_worker_restart,
        shard: ready.shard.as_ref().map(|s| s.shard),
    };
    let ui = ui::Ui::new(
        ui::choose_mode(config.progress, facts.verbose < -1),
        width,
        names.clone(),
    );
    let header = Header::new(config.workers, facts, ready.prepared.as_ref());
    let display = Display::new(ui, names.clone(), facts.verbose, header);
    let mut sink = Tee(
        Tee(display, CollectedFile::new(run_dir.collected_path())),
        Feed(controller.as_ref()),
    );
    let mut outcome = Supervisor::new(
        workers,
        Box::new(spawn),
        events_rx,
        durations,
        options,
        &mut sink,
    )
    .run();
    outcome.zygote = zygote;
    outcome.warnings.extend(sink.0 .1.error);
    if !facts.stream {
        pass_stderr_through(&outcome, run_dir);
    }
    if let Some(controller) = controller {
        // After Ctrl-C, what the plugins write of the tests that finished, but not for long.
        let patience = if outcome.interrupted {
            CONTROLLER_PATIENCE / 10
        } else {
            CONTROLLER_PATIENCE
        };
        let ending = controller.finish(outcome.interrupted, patience);
        outcome.plugins_text = ending.text;
        outcome.plugins_status = ending.exitstatus;
        if ending.exitstatus == Some(i32::from(crate::exit::INTERNAL_ERROR)) {
            outcome.warnings.push(format!(
                "a plugin's controller side failed (INTERNALERROR):\n{}",
                worker::tail(&run_dir.log("controller"), 5)
            ));
        }
        outcome.warnings.extend(ending.problem);
    }
    Ok(Launched {
        outcome,
        names,
        spawned,
        width,
        color,
    })
}

/// What the workers that ended their sessions wrote to stderr outside pytest's capture
/// (pytest-benchmark's warning as a worker unconfigures): shown as xdist shows its workers'
/// stderr. (A crashed worker's is shown with its crash; pytest's usage and internal errors
/// by the finish phase.)
fn pass_stderr_through(outcome: &RunOutcome, run_dir: &RunDir) {
    for (index, status) in outcome.exitstatus.iter().enumerate() {
        if !matches!(status, Some(0 | 1 | 5)) {
            continue;
        }
        let name = worker::name(index);
        let last = outcome
            .stems
            .iter()
            .rev()
            .find(|stem| stem.split('.').next() == Some(name.as_str()));
        let Some(stem) = last else { continue };
        let text = std::fs::read(run_dir.err_log(stem)).unwrap_or_default();
        if !text.is_empty() {
            let _ = std::io::Write::write_all(&mut std::io::stderr(), &text);
        }
    }
}

/// A controller runs when a plugin may act in xdist's controller process (the probe's
/// list); `TESTMON_RUN_CONTROLLER_MODE=always|never` overrides that, for measuring it.
fn wants_controller(facts: &Facts) -> bool {
    match std::env::var("TESTMON_RUN_CONTROLLER_MODE").as_deref() {
        Ok("always") => true,
        Ok("never") => false,
        _ => !facts.controller_side.is_empty(),
    }
}

/// Writes the run's collection into the run directory as soon as it is known, for the
/// recovery of a run killed before its end (record::recover).
struct CollectedFile {
    path: PathBuf,
    /// Why it could not be written.
    error: Option<String>,
}

impl CollectedFile {
    fn new(path: PathBuf) -> CollectedFile {
        CollectedFile { path, error: None }
    }
}

impl Sink for CollectedFile {
    fn scheduled(&mut self, run: &Scheduled) {
        let collected = serde_json::json!({"sync": run.sync, "run_list": run.run_list});
        if let Err(err) = atomic::write_private(&self.path, collected.to_string().as_bytes()) {
            self.error = Some(format!("could not write {}: {err:#}", self.path.display()));
        }
    }
}

/// One id per run, as xdist's PYTEST_XDIST_TESTRUNUID (32 hex digits).
fn testrun_uid() -> String {
    let mut bytes = [0u8; 16];
    if std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut bytes))
        .is_err()
    {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        bytes = (nanos ^ (u128::from(std::process::id()) << 64)).to_le_bytes();
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
