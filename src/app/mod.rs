//! The run as its phases: probe (cached) → the no-op fast path → the run directory →
//! prepare the database → launch and supervise the workers → finish (record, artifacts,
//! report, exit code).

mod cached;
mod fast_path;
mod finish;
mod launch;
mod passthrough;
mod prepare;

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Instant;

use anyhow::{Context, Result};

use crate::cli::{self, Config, Parsed};
use crate::exit::{self, Fatal};
use crate::run::events::Event;
use crate::run::rundir::RunDir;
use crate::run::signals::SignalForwarder;
use crate::shard::Shard;
use crate::ui::terminal;

/// Parses the arguments, runs, and returns the exit code; errors are printed as one line.
pub fn main_with_args<I: IntoIterator<Item = OsString>>(args: I) -> u8 {
    let config = match cli::parse(args) {
        Ok(Parsed::Run(config)) => config,
        Ok(Parsed::Why(config)) => return report_error(crate::why::run(&config)),
        Ok(Parsed::Merge(merge)) => return report_error(crate::shard::merge::run(&merge)),
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
    report_error(run(&config))
}

/// The exit code of a command; its error printed as one line (pytest's own errors were
/// already shown by pytest).
fn report_error(result: Result<u8>) -> u8 {
    match result {
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

/// One run, phase by phase; the run directory is removed when it goes out of scope.
fn run(config: &Config) -> Result<u8> {
    let started = Instant::now();
    let timing = Timing::from_env();
    let datafile = config.datafile.as_deref().map(absolute).transpose()?;
    let shard = resolve_shard(config)?;
    if config.workers == 0 {
        if shard.is_some() {
            return Err(Fatal::Usage("--shard needs workers: -n 1 or more".into()).into());
        }
        return Err(passthrough::exec(&config.command, datafile.as_deref()));
    }
    // Signals become events from here on: the run directory is always cleaned up.
    let (events_tx, events_rx) = mpsc::channel();
    let _signals = SignalForwarder::start(events_tx.clone())?;
    let mut cached = cached::Cached::look_up(config, datafile.as_deref());
    // A shard always runs: its datafile must say what it ran, for the merge.
    if shard.is_none() {
        if let Some(code) = fast_path::answer(config, &mut cached, started, timing)? {
            return Ok(code);
        }
    }
    let run_dir = RunDir::create(config.keep_run_dir)?;
    let facts = cached.facts(config, &run_dir, datafile.as_deref())?;
    let probed = Instant::now();
    if facts.passthrough {
        drop(run_dir);
        return Err(passthrough::exec(&config.command, datafile.as_deref()));
    }
    let may_keep_noop = shard.is_none() && cached.may_keep_noop(&facts);
    let ready = prepare::prepare(&facts, may_keep_noop, &run_dir, shard)?;
    let prepared = Instant::now();
    prepare::write_plan(&ready, &facts, &run_dir)?;
    if let Ok(Event::Signal(_)) = events_rx.try_recv() {
        eprintln!("testmon-run: interrupted before the workers started");
        return Ok(exit::INTERRUPTED);
    }
    let events = (events_tx, events_rx);
    let launched = launch::launch(config, &facts, &ready, &run_dir, datafile, events)?;
    let clock = finish::Clock {
        started,
        probed,
        prepared,
        timing,
    };
    finish::finish(
        config,
        &facts,
        &ready,
        &run_dir,
        &launched,
        &clock,
        &mut cached,
    )
}

/// `--shard` (or pyproject.toml's `shard`) as this job's shard; `auto` from the CI system's
/// variables, None when they name one job of one.
fn resolve_shard(config: &Config) -> Result<Option<Shard>> {
    let Some(spec) = config.shard else {
        return Ok(None);
    };
    let shard = spec
        .resolve(|name| std::env::var(name).ok())
        .map_err(Fatal::Usage)?;
    if shard.is_some() {
        crate::shard::acknowledge_bazel();
    }
    Ok(shard)
}

/// `TESTMON_RUN_TIMING=1`: how long each phase took, on stderr.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Timing(bool);

impl Timing {
    fn from_env() -> Timing {
        Timing(std::env::var_os("TESTMON_RUN_TIMING").is_some())
    }

    /// `testmon-run: timing: {text}` when timing is on.
    pub(crate) fn say(self, text: &str) {
        if self.0 {
            eprintln!("testmon-run: timing: {text}");
        }
    }
}

pub(crate) fn absolute(path: &Path) -> Result<PathBuf> {
    if path.is_absolute() {
        Ok(path.to_path_buf())
    } else {
        Ok(std::env::current_dir()
            .context("reading the current directory")?
            .join(path))
    }
}
