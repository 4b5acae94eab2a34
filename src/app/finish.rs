//! The finish phase, after every worker has ended. Its steps, in this order:
//!
//! 1. **write**: the run recorded in testmon's database, the workers' JUnit documents merged,
//!    pytest's cache written: each step's error is kept, none stops the others;
//! 2. **tell**: the timing line (`TESTMON_RUN_TIMING`), the report (pytest's sections and
//!    final line), pytest's own usage or internal errors from the workers;
//! 3. the exit code, from the outcome; the `--json-report` document (its error ends the run);
//! 4. **surface** what failed in step 1: the database first (an error: no no-op state is
//!    kept); otherwise the no-op state for the next run; then pytest's cache (a warning, as
//!    pytest only warns), then the JUnit report (an error).

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};

use crate::app::cached::Cached;
use crate::app::launch::Launched;
use crate::app::prepare::Ready;
use crate::app::{absolute, fast_path, Timing};
use crate::artifacts::json_report::{self, JsonReport, Marks, Phases};
use crate::artifacts::{junit, junit_lost, pytest_cache};
use crate::cli::Config;
use crate::exit;
use crate::probe::Facts;
use crate::record;
use crate::report::{self, Style};
use crate::run::outcome::RunOutcome;
use crate::run::rundir::RunDir;
use crate::ui::terminal;

/// The moments of the run before the finish phase, and whether to tell them.
pub(crate) struct Clock {
    pub(crate) started: Instant,
    pub(crate) probed: Instant,
    pub(crate) prepared: Instant,
    pub(crate) timing: Timing,
}

/// Records, writes, reports; returns the run's exit code (see the module's order).
pub(crate) fn finish(
    config: &Config,
    facts: &Facts,
    ready: &Ready,
    run_dir: &RunDir,
    launched: &Launched,
    clock: &Clock,
    cached: &mut Cached,
) -> Result<u8> {
    let timing = clock.timing;
    let ran = Instant::now();
    let outcome = &launched.outcome;
    let recorded = record_run(ready, run_dir, outcome);
    let recorded_at = Instant::now();
    let junit = write_junit(facts, run_dir, outcome);
    let cache = write_pytest_cache(outcome);
    let marks = Marks {
        started: clock.started,
        probed: clock.probed,
        prepared: clock.prepared,
        spawned: launched.spawned,
        scheduled: outcome.scheduled_at,
        ran,
        recorded: recorded_at,
    };
    let p = Phases::new(&marks);
    timing.say(&format!(
        "probe {:.3}s, prepare {:.3}s, collect {:.3}s, run {:.3}s, record {:.3}s",
        p.probe, p.prepare, p.collect, p.run, p.merge
    ));
    let style = report_style(facts, launched.width, launched.color);
    let seconds = clock.started.elapsed().as_secs_f64();
    terminal::say(&report::run_report(outcome, &style, seconds));
    show_pytest_errors(outcome, run_dir, &launched.names);
    let code = outcome.exit_code();
    write_json_report(
        config,
        facts,
        config.workers,
        outcome,
        &launched.names,
        code,
        &marks,
    )?;
    recorded?;
    keep_noop_state(code, outcome, ready, cached, timing);
    if let Err(err) = cache {
        // As pytest, which only warns when it cannot write its cache (a read-only tree).
        eprintln!("testmon-run: warning: {err:#}");
    }
    junit?;
    Ok(code)
}

/// How the report is drawn: pytest's output options, as the probe found them.
pub(crate) fn report_style(facts: &Facts, width: usize, color: bool) -> Style {
    Style {
        width,
        verbose: facts.verbose,
        reportchars: facts.reportchars.clone(),
        tbstyle: facts.tbstyle.clone(),
        durations: facts.durations,
        durations_min: facts.durations_min,
        color,
    }
}

/// `--json-report PATH`: the one place the document is built and written.
pub(crate) fn write_json_report(
    config: &Config,
    facts: &Facts,
    workers: usize,
    outcome: &RunOutcome,
    names: &[String],
    code: u8,
    marks: &Marks,
) -> Result<()> {
    let Some(path) = &config.json_report else {
        return Ok(());
    };
    let phases = Phases::new(marks);
    let report = JsonReport::new(facts, workers, outcome, names, code, phases);
    json_report::write(&absolute(path)?, &report).context("writing the JSON report")
}

/// The run in testmon's database: the sync, every worker's spool, the crashed tests.
fn record_run(ready: &Ready, run_dir: &RunDir, outcome: &RunOutcome) -> Result<()> {
    let (Some(tm), Some(prepared)) = (ready.testmon, ready.prepared.as_ref()) else {
        return Ok(());
    };
    let spools: Vec<PathBuf> = outcome.stems.iter().map(|n| run_dir.spool(n)).collect();
    let selected = if ready.shard.is_some() {
        &outcome.selected
    } else {
        &outcome.run_list
    };
    record::record(
        tm,
        prepared.env,
        &record::RunRecord {
            sync: outcome.sync.as_deref(),
            run_list: &outcome.run_list,
            selected,
            spools: &spools,
            crashed: &outcome.crashed,
            shard: ready.shard.as_ref(),
        },
    )
    .map(|_| ())
    .context("recording the run in testmon's database")
}

/// `--junitxml`: the workers' documents merged, with the tests of workers that died before
/// writing theirs.
fn write_junit(facts: &Facts, run_dir: &RunDir, outcome: &RunOutcome) -> Result<()> {
    let Some(dest) = &facts.junitxml else {
        return Ok(());
    };
    let files: Vec<PathBuf> = outcome.stems.iter().map(|n| run_dir.junit(n)).collect();
    let results = outcome.results_of(&[&outcome.cache_orphans, &outcome.crashed]);
    let extra = junit_lost::document(&results, facts.junit_prefix.as_deref());
    junit::merge_files(&files, extra, &outcome.run_list, dest)
        .map(|_| ())
        .context("writing the JUnit report")
}

/// pytest's cache from every worker's share, and the shares of workers that died.
fn write_pytest_cache(outcome: &RunOutcome) -> Result<()> {
    let mut caches = outcome.caches.clone();
    if !outcome.cache_orphans.is_empty() {
        let mut share = pytest_cache::share_of(&outcome.results_of(&[&outcome.cache_orphans]));
        share.dir = caches.first().map(|c| c.dir.clone()).unwrap_or_default();
        caches.push(share);
    }
    pytest_cache::write(&caches, &outcome.crashed).context("writing pytest's cache")
}

/// After a run that completed green, the state that lets the next run answer a no-op.
fn keep_noop_state(
    code: u8,
    outcome: &RunOutcome,
    ready: &Ready,
    cached: &mut Cached,
    timing: Timing,
) {
    let (Some(tm), Some(prepared), Some(snapshot)) = (
        ready.testmon,
        ready.prepared.as_ref(),
        ready.snapshot.as_ref(),
    ) else {
        return;
    };
    if cached.parts().is_none() {
        return;
    }
    match fast_path::state_after(code, outcome, tm, prepared, snapshot) {
        Ok(state) => cached.keep_noop(state),
        Err(why) => timing.say(&format!("no no-op state kept: {why}")),
    }
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
