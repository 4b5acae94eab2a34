//! The run as its phases: probe (cached) → the no-op fast path → the run directory →
//! prepare the database → launch and supervise the workers → finish (record, artifacts,
//! report, exit code).

use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Instant;

use anyhow::{Context, Result};

use crate::artifacts::{json_report, junit, junit_lost, pytest_cache};
use crate::noop::{self, manifest};
use crate::probe::{self, cache as probe_cache};
use crate::record::{self, recover};
use crate::report::{self, header};
use crate::run::{events, signals, supervisor, worker};
use crate::ui::{self, terminal};
use crate::{cli, db, exit, pycommand};

use crate::cli::{Config, Parsed};
use crate::exit::Fatal;
use crate::probe::Testmon;
use crate::run::plan::Plan;
use crate::run::rundir::RunDir;
use crate::run::supervisor::{RunOutcome, Supervisor};

/// Parses the arguments, runs, and returns the exit code; errors are printed as one line.
pub fn main_with_args<I: IntoIterator<Item = OsString>>(args: I) -> u8 {
    let config = match cli::parse(args) {
        Ok(Parsed::Run(config)) => config,
        Ok(Parsed::Info(text)) => {
            terminal::say(&text);
            if !text.ends_with('\n') {
                terminal::say("\n");
            }
            return exit::OK;
        }
        Err(err) => {
            eprintln!("testmon-run: error: {err}");
            return err.code();
        }
    };
    match run(&config) {
        Ok(code) => code,
        Err(err) => {
            if !matches!(err.downcast_ref::<Fatal>(), Some(Fatal::Pytest(_))) {
                let chain: Vec<String> = err.chain().map(ToString::to_string).collect();
                eprintln!(
                    "testmon-run: error: {}",
                    chain.join(": ").replace('\n', " ")
                );
            }
            exit::code_of(&err)
        }
    }
}

pub(crate) fn run(config: &Config) -> Result<u8> {
    let started = Instant::now();
    let datafile = config.datafile.as_deref().map(absolute).transpose()?;
    if config.workers == 0 {
        return Err(passthrough(&config.command, datafile.as_deref()));
    }
    // Signals become events from here on: the run directory is always cleaned up.
    let (events_tx, events_rx) = mpsc::channel();
    let _signals = signals::SignalForwarder::start(events_tx.clone())?;
    let store = probe_cache::Store::locate();
    let key = probe_cache::Key::new(&config.command, datafile.as_deref());
    let mut entry = store
        .as_ref()
        .zip(key.as_ref())
        .and_then(|(s, k)| s.load(k));
    if let (Some(store), Some(entry)) = (&store, entry.as_mut()) {
        if let Some(code) = fast_path(config, entry, store, started)? {
            return Ok(code);
        }
        // Until this run completes, the database may not match the state kept.
        store.forget_noop(entry);
    }
    let run_dir = RunDir::create(config.keep_run_dir)?;
    let facts = match &entry {
        Some(entry) => entry.facts.clone(),
        None => {
            let cwd = std::env::current_dir().context("reading the current directory")?;
            let mut ini = probe_cache::ini_stamps(&cwd, None);
            let facts = probe::run(&config.command, &run_dir, datafile.as_deref())?;
            if let (Some(store), Some(key)) = (&store, key) {
                if facts.cacheable {
                    ini.extend(probe_cache::ini_stamps(&facts.rootdir, None));
                    let fresh = probe_cache::Entry::new(key, facts.clone(), ini);
                    store.save(&fresh);
                    entry = Some(fresh);
                }
            }
            facts
        }
    };
    let probed = Instant::now();
    if facts.passthrough {
        drop(run_dir);
        return Err(passthrough(&config.command, datafile.as_deref()));
    }
    let testmon = facts.testmon.as_ref().filter(|tm| tm.active());
    if let Some(tm) = testmon {
        check_supported(tm)?;
        if tm.collect {
            if let Some(base) = run_dir.path().parent() {
                for line in recover::recover(base, tm) {
                    eprintln!("{line}");
                }
            }
        }
    }
    // A run that may leave a no-op state (noop) reads the files testmon tracks.
    let may_keep_noop = entry.is_some() && noop::eligible(&facts);
    let prepared = testmon
        .map(|tm| record::prepare(tm, may_keep_noop))
        .transpose()?;
    // The files as this run starts, for the no-op state it may leave.
    let snapshot = match prepared.as_ref() {
        Some(prepared) if may_keep_noop => {
            Some(manifest::Snapshot::take(&facts.rootdir, &prepared.tracked))
        }
        _ => None,
    };
    let ready = Instant::now();
    run_dir.write_plan(&Plan::new(
        testmon.zip(prepared.as_ref().map(|p| p.env)),
        facts.stream,
    ))?;

    let width = terminal::width();
    let color = terminal::color(&facts.color);
    if let Ok(events::Event::Signal(_)) = events_rx.try_recv() {
        eprintln!("testmon-run: interrupted before the workers started");
        return Ok(exit::INTERRUPTED);
    }
    let testrun_uid = testrun_uid();
    let spawned = Instant::now();
    let worker_datafile = testmon.map(|tm| tm.datafile.clone()).or(datafile);
    let python_path = run_dir.python_path();
    let spawn = |index: usize, generation: u32| {
        let stem = worker::stem(index, generation);
        let spec = worker::Spec {
            index,
            count: config.workers,
            command: &config.command,
            python_path: &python_path,
            run_dir: run_dir.path(),
            lock_fd: run_dir.lock_fd(),
            datafile: worker_datafile.as_deref(),
            exec_id: prepared.as_ref().map(|p| p.env.id),
            testrun_uid: &testrun_uid,
            log: run_dir.log(&stem),
            err_log: run_dir.err_log(&stem),
            spool: run_dir.spool(&stem),
            junit: run_dir.junit(&stem),
            stem,
            color,
            columns: width,
            stream: facts.stream,
        };
        worker::Worker::spawn(&spec, events_tx.clone())
    };
    let mut workers = Vec::with_capacity(config.workers);
    for index in 0..config.workers {
        workers.push(spawn(index, 0)?);
    }
    let names: Vec<String> = workers.iter().map(|w| w.name.clone()).collect();
    let no_durations = Default::default();
    let durations = prepared.as_ref().map_or(&no_durations, |p| &p.durations);
    let options = supervisor::Options {
        dist: config.dist,
        maxfail: facts.stop_after(),
        verbose: facts.verbose,
        header: header::Header::new(config.workers, &facts, prepared.as_ref()),
        timeout: config.timeout,
        grace_period: config.grace_period,
        max_worker_restart: config.max_worker_restart,
        collected_file: Some(run_dir.collected_path()),
    };
    let ui = ui::Ui::new(
        ui::choose_mode(config.progress, facts.verbose < -1),
        width,
        names.clone(),
    );
    let outcome =
        Supervisor::new(workers, Box::new(spawn), events_rx, durations, options, ui).run();
    let ran = Instant::now();

    // Written before the report; a failure to write is reported after the results.
    let recorded = match (testmon, prepared.as_ref()) {
        (Some(tm), Some(prepared)) => {
            let spools: Vec<PathBuf> = outcome.stems.iter().map(|n| run_dir.spool(n)).collect();
            record::record(
                tm,
                prepared.env,
                outcome.sync.as_deref(),
                &outcome.run_list,
                &spools,
                &outcome.crashed,
            )
            .map(|_| ())
            .context("recording the run in testmon's database")
        }
        _ => Ok(()),
    };
    let recorded_at = Instant::now();
    let junit = match &facts.junitxml {
        Some(dest) => {
            let files: Vec<PathBuf> = outcome.stems.iter().map(|n| run_dir.junit(n)).collect();
            // Tests of workers that died before writing their document.
            let results = outcome.results_of(&[&outcome.cache_orphans, &outcome.crashed]);
            let extra = junit_lost::document(&results, facts.junit_prefix.as_deref());
            junit::merge_files(&files, extra, &outcome.run_list, dest)
                .map(|_| ())
                .context("writing the JUnit report")
        }
        None => Ok(()),
    };
    let mut caches = outcome.caches.clone();
    if !outcome.cache_orphans.is_empty() {
        let mut share = pytest_cache::share_of(&outcome.results_of(&[&outcome.cache_orphans]));
        share.dir = caches.first().map(|c| c.dir.clone()).unwrap_or_default();
        caches.push(share);
    }
    let cached = pytest_cache::write(&caches, &outcome.crashed).context("writing pytest's cache");
    let marks = json_report::Marks {
        started,
        probed,
        prepared: ready,
        spawned,
        scheduled: outcome.scheduled_at,
        ran,
        recorded: recorded_at,
    };
    if std::env::var_os("TESTMON_RUN_TIMING").is_some() {
        let p = json_report::Phases::new(&marks);
        eprintln!(
            "testmon-run: timing: probe {:.3}s, prepare {:.3}s, collect {:.3}s, run {:.3}s, \
             record {:.3}s",
            p.probe, p.prepare, p.collect, p.run, p.merge
        );
    }
    let style = report_style(&facts, width, color);
    terminal::say(&report::run_report(
        &outcome,
        &style,
        started.elapsed().as_secs_f64(),
    ));
    show_pytest_errors(&outcome, &run_dir, &names);
    let code = exit_code(&outcome);
    if let Some(path) = &config.json_report {
        let phases = json_report::Phases::new(&marks);
        let report =
            json_report::JsonReport::new(&facts, config.workers, &outcome, &names, code, phases);
        json_report::write(&absolute(path)?, &report).context("writing the JSON report")?;
    }
    recorded?;
    if let (Some(store), Some(entry), Some(snapshot), Some(tm), Some(prepared)) = (
        &store,
        entry.as_mut(),
        &snapshot,
        testmon,
        prepared.as_ref(),
    ) {
        let kept = keep_noop_state(code, &outcome, tm, prepared, snapshot).map(|state| {
            entry.noop = Some(state);
            store.save(entry);
        });
        if let (Err(why), true) = (kept, std::env::var_os("TESTMON_RUN_TIMING").is_some()) {
            eprintln!("testmon-run: timing: no no-op state kept: {why}");
        }
    }
    if let Err(err) = cached {
        // As pytest, which only warns when it cannot write its cache (a read-only tree).
        eprintln!("testmon-run: warning: {err:#}");
    }
    junit?;
    Ok(code)
}

/// How the report is drawn: pytest's output options, as the probe found them.
fn report_style(facts: &probe::Facts, width: usize, color: bool) -> report::Style {
    report::Style {
        width,
        verbose: facts.verbose,
        reportchars: facts.reportchars.clone(),
        tbstyle: facts.tbstyle.clone(),
        durations: facts.durations,
        durations_min: facts.durations_min,
        color,
    }
}

/// The state that lets the next run of this command answer a no-op (see `noop`), when this
/// run completed: every selected test ran and passed, nothing went wrong around them, no test
/// is recorded failing, and no file moved while it ran.
fn keep_noop_state(
    code: u8,
    outcome: &RunOutcome,
    tm: &Testmon,
    prepared: &record::Prepared,
    snapshot: &manifest::Snapshot,
) -> std::result::Result<noop::NoopState, &'static str> {
    let completed = !outcome.interrupted
        && outcome.problems.is_empty()
        && outcome.crashes.is_empty()
        && outcome.crashed.is_empty()
        && outcome.not_run.is_empty()
        && outcome.cut_short.is_empty()
        && outcome.collect_errors.is_empty()
        && outcome.warnings.is_empty()
        && outcome.restarts == 0
        && outcome.results.len() == outcome.run_list.len();
    if code != exit::OK || !completed {
        return Err("the run did not complete green");
    }
    let (reselected, tracked) =
        record::settled(tm, &prepared.env).map_err(|_| "the datafile could not be read")?;
    // testmon selects these every time; only pytest's own deselection (--deselect, with the
    // same command line) keeps them from running.
    let by_pytest: std::collections::HashSet<&str> =
        outcome.user_deselected.iter().map(String::as_str).collect();
    if !reselected.iter().all(|t| by_pytest.contains(t.as_str())) {
        return Err("tests are recorded as failing or not yet run");
    }
    // No test at all: pytest would exit 5 (no tests collected), not testmon's 0.
    let tests = outcome
        .sync
        .as_deref()
        .filter(|tests| !tests.is_empty())
        .ok_or("testmon reported no tests")?;
    noop::NoopState::after_run(&tm.datafile, snapshot, tracked, tests, &reselected)
        .ok_or("a Python file was written just before or during the run")
}

/// The no-op fast path (see `noop`): Some(exit code) when nothing is to run.
fn fast_path(
    config: &Config,
    entry: &mut probe_cache::Entry,
    store: &probe_cache::Store,
    started: Instant,
) -> Result<Option<u8>> {
    let facts = &entry.facts;
    let (Some(tm), Some(state)) = (facts.testmon.as_ref(), entry.noop.as_ref()) else {
        return Ok(None);
    };
    if facts.passthrough || !noop::eligible(facts) {
        return Ok(None);
    }
    let timing = std::env::var_os("TESTMON_RUN_TIMING").is_some();
    let (unchanged_files, deselected) = (state.unchanged_files, state.deselected);
    match state.answer(&tm.datafile) {
        noop::Answer::Run(why) => {
            if timing {
                eprintln!(
                    "testmon-run: timing: no-op check {:.3}s: {why}",
                    started.elapsed().as_secs_f64()
                );
            }
            return Ok(None);
        }
        noop::Answer::NothingToRun(Some(kept)) => {
            entry.noop = Some(kept);
            store.save(entry);
        }
        noop::Answer::NothingToRun(None) => {}
    }
    let facts = &entry.facts;
    let tm = facts.testmon.as_ref().context("testmon facts")?;
    let width = terminal::width();
    if facts.verbose >= 0 {
        let words = format!(
            "changed files: 0, unchanged files: {unchanged_files}, environment: {}",
            tm.environment
        );
        let header = header::Header::new(0, facts, None);
        terminal::say(&format!("{}\n", header.line(0, deselected, Some(&words))));
    }
    let outcome = RunOutcome {
        exitstatus: vec![Some(0)],
        deselected,
        ..RunOutcome::default()
    };
    let style = report_style(facts, width, terminal::color(&facts.color));
    terminal::say(&report::run_report(
        &outcome,
        &style,
        started.elapsed().as_secs_f64(),
    ));
    let code = exit_code(&outcome);
    if timing {
        eprintln!(
            "testmon-run: timing: no-op fast path {:.3}s",
            started.elapsed().as_secs_f64()
        );
    }
    if let Some(path) = &config.json_report {
        let now = Instant::now();
        let marks = json_report::Marks {
            started,
            probed: now,
            prepared: now,
            spawned: now,
            scheduled: None,
            ran: now,
            recorded: now,
        };
        let phases = json_report::Phases::new(&marks);
        let report = json_report::JsonReport::new(facts, 0, &outcome, &[], code, phases);
        json_report::write(&absolute(path)?, &report).context("writing the JSON report")?;
    }
    Ok(Some(code))
}

/// Runs the command as it is, in place of this process (`-n 0`, `--help`, `--collect-only`).
fn passthrough(command: &[OsString], datafile: Option<&Path>) -> anyhow::Error {
    let mut cmd = std::process::Command::new(&command[0]);
    cmd.args(&command[1..]);
    if let Some(datafile) = datafile {
        cmd.env("TESTMON_DATAFILE", datafile);
    }
    let err = cmd.exec();
    if err.kind() == std::io::ErrorKind::NotFound {
        return Fatal::Usage(format!(
            "command not found: {}",
            command[0].to_string_lossy()
        ))
        .into();
    }
    anyhow::Error::new(err).context(format!("running {}", pycommand::display(command)))
}

fn absolute(path: &Path) -> Result<PathBuf> {
    if path.is_absolute() {
        Ok(path.to_path_buf())
    } else {
        Ok(std::env::current_dir()
            .context("reading the current directory")?
            .join(path))
    }
}

fn check_supported(tm: &Testmon) -> Result<()> {
    if tm.tmnet {
        return Err(Fatal::Usage("--tmnet is not supported by testmon-run".into()).into());
    }
    if db::schema_sql(tm.data_version).is_none() {
        return Err(Fatal::Usage(format!(
            "unsupported pytest-testmon {} (data version {}); supported: 2.1.x and 2.2.x",
            tm.version, tm.data_version
        ))
        .into());
    }
    Ok(())
}

/// pytest's own words when a worker's pytest ended with a usage or internal error (the same
/// in every worker, so shown once): its stderr, or its INTERNALERROR lines.
fn show_pytest_errors(outcome: &RunOutcome, run_dir: &RunDir, names: &[String]) {
    let first_with = |code: u8| {
        outcome
            .exitstatus
            .iter()
            .position(|s| *s == Some(i32::from(code)))
            .map(|i| &names[i])
    };
    if let Some(name) = first_with(exit::USAGE_ERROR) {
        let text = std::fs::read_to_string(run_dir.err_log(name)).unwrap_or_default();
        eprint!("{text}");
    } else if let Some(name) = first_with(exit::INTERNAL_ERROR) {
        let text = std::fs::read_to_string(run_dir.log(name)).unwrap_or_default();
        for line in text.lines().filter(|l| l.starts_with("INTERNALERROR>")) {
            eprintln!("{line}");
        }
        eprint!(
            "{}",
            std::fs::read_to_string(run_dir.err_log(name)).unwrap_or_default()
        );
    }
}

fn exit_code(outcome: &RunOutcome) -> u8 {
    let statuses: Vec<i32> = outcome.exitstatus.iter().flatten().copied().collect();
    let failed =
        outcome.results.iter().flat_map(|r| &r.reports).any(|rep| {
            rep.outcome == "failed" || rep.category == "failed" || rep.category == "error"
        });
    exit::Outcome {
        usage_error: statuses.contains(&i32::from(exit::USAGE_ERROR)),
        internal_error: !outcome.problems.is_empty()
            || !outcome.not_run.is_empty()
            || statuses.contains(&i32::from(exit::INTERNAL_ERROR)),
        interrupted: outcome.interrupted || statuses.contains(&i32::from(exit::INTERRUPTED)),
        failures: failed || !outcome.collect_errors.is_empty(),
        tests_run: outcome.run_list.len(),
        deselected_by_testmon: outcome.exitstatus.first().copied().flatten() == Some(0),
    }
    .exit_code()
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
