//! The no-op fast path, the app's side of it (see `noop`): answer "nothing to run" without
//! starting Python when the state kept by the last completed run still holds; and, after a
//! run that completed green, keep that state for the next.

use std::collections::HashSet;
use std::time::Instant;

use anyhow::{Context, Result};

use crate::app::cached::Cached;
use crate::app::finish::{report_style, write_json_report};
use crate::app::Timing;
use crate::artifacts::json_report::Marks;
use crate::cli::Config;
use crate::exit;
use crate::noop::{self, manifest::Snapshot, NoopState};
use crate::probe::Testmon;
use crate::record::{self, Prepared};
use crate::report::{self, header::Header};
use crate::run::outcome::RunOutcome;
use crate::ui::terminal;

/// Some(exit code) when nothing is to run. Otherwise the state kept is forgotten: until
/// this run completes, the database may not match it.
pub(crate) fn answer(
    config: &Config,
    cached: &mut Cached,
    started: Instant,
    timing: Timing,
) -> Result<Option<u8>> {
    let Some((store, entry)) = cached.parts() else {
        return Ok(None);
    };
    let facts = &entry.facts;
    let (Some(tm), Some(state)) = (facts.testmon.as_ref(), entry.noop.as_ref()) else {
        store.forget_noop(entry);
        return Ok(None);
    };
    if facts.passthrough || !noop::eligible(facts) {
        store.forget_noop(entry);
        return Ok(None);
    }
    let (unchanged_files, deselected) = (state.unchanged_files, state.deselected);
    match state.answer(&tm.datafile) {
        noop::Answer::Run(why) => {
            timing.say(&format!(
                "no-op check {:.3}s: {why}",
                started.elapsed().as_secs_f64()
            ));
            store.forget_noop(entry);
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
    if facts.verbose >= 0 {
        let words = format!(
            "changed files: 0, unchanged files: {unchanged_files}, environment: {}",
            tm.environment
        );
        let header = Header::new(0, facts, None);
        terminal::say(&format!("{}\n", header.line(0, deselected, Some(&words))));
    }
    let outcome = RunOutcome {
        exitstatus: vec![Some(0)],
        deselected,
        ..RunOutcome::default()
    };
    let style = report_style(facts, terminal::width(), terminal::color(&facts.color));
    terminal::say(&report::run_report(
        &outcome,
        &style,
        started.elapsed().as_secs_f64(),
    ));
    let code = outcome.exit_code();
    timing.say(&format!(
        "no-op fast path {:.3}s",
        started.elapsed().as_secs_f64()
    ));
    let marks = Marks::all_at(started, Instant::now());
    write_json_report(config, facts, 0, &outcome, &[], code, &marks)?;
    Ok(Some(code))
}

/// The state that lets the next run of this command answer a no-op, when this run
/// completed: every selected test ran and passed, nothing went wrong around them, no test is
/// recorded failing, and no file moved while it ran.
pub(crate) fn state_after(
    code: u8,
    outcome: &RunOutcome,
    tm: &Testmon,
    prepared: &Prepared,
    snapshot: &Snapshot,
) -> std::result::Result<NoopState, &'static str> {
    if code != exit::OK || !outcome.completed() {
        return Err("the run did not complete green");
    }
    let tests = outcome.sync.as_deref().unwrap_or_default();
    let (reselected, tracked) =
        record::settled(tm, &prepared.env, tests).map_err(|_| "the datafile could not be read")?;
    // testmon selects these every time; only pytest's own deselection (--deselect, with the
    // same command line) keeps them from running.
    let by_pytest: HashSet<&str> = outcome.user_deselected.iter().map(String::as_str).collect();
    if !reselected.iter().all(|t| by_pytest.contains(t.as_str())) {
        return Err("tests are recorded as failing or not yet run");
    }
    // No test at all: pytest would exit 5 (no tests collected), not testmon's 0.
    let tests = outcome
        .sync
        .as_deref()
        .filter(|tests| !tests.is_empty())
        .ok_or("testmon reported no tests")?;
    NoopState::after_run(&tm.datafile, snapshot, tracked, tests, &reselected)
        .ok_or("a Python file was written during the run")
}
