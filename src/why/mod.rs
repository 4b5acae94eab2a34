//! `testmon-run why -- COMMAND`: why testmon selects what it selects, without running tests.
//!
//! The probe's answer (from its cache while it holds) names the datafile, the environment
//! and what the installed testmon computes for this run; the datafile is copied into the
//! private run directory (`datafile`) and read there; one run of the command with the why
//! plugin lets testmon's own code select on that copy, collecting and running nothing
//! (`session`); the explanation is printed (`format`). The user's datafile and tree are only
//! read (no bytecode either), and the run directory goes when `why` ends.

mod datafile;
mod format;
mod session;

use std::path::Path;
use std::sync::atomic::Ordering;

use anyhow::Result;

use crate::cli::Config;
use crate::exit::{self, Fatal};
use crate::probe::cache::{Key, Store};
use crate::probe::{self, Facts, Testmon};
use crate::pycommand;
use crate::run::rundir::RunDir;

use datafile::State;
use format::{count_packages, diff_packages, Explanation, Start};
use session::Report;

/// Prints the explanation; returns the exit code.
pub(crate) fn run(config: &Config) -> Result<u8> {
    let datafile = config
        .datafile
        .as_deref()
        .map(crate::app::absolute)
        .transpose()?;
    // The cache is looked up with the environment as the user has it.
    let cached = cached_facts(config, datafile.as_deref());
    // Neither the probe nor the collection writes bytecode into the user's tree.
    std::env::set_var("PYTHONDONTWRITEBYTECODE", "1");
    // A first Ctrl-C (SIGTERM, SIGHUP) lets pytest end and the run directory go; a second
    // one ends testmon-run at once.
    let interrupted = crate::run::signals::interrupt_flag(true)?;
    let run_dir = RunDir::create(config.keep_run_dir)?;
    let facts = match cached {
        Some(facts) => Ok(facts),
        None => probe::run(&config.command, &run_dir, datafile.as_deref()),
    };
    if interrupted.load(Ordering::SeqCst) {
        return Ok(stopped());
    }
    let facts = facts?;
    let tm = explainable(&facts, config)?;
    let shown = shown_path(&tm.datafile);
    if !tm.active() {
        let reason = tm.message.as_deref().map_or("", strip_testmon_prefix);
        crate::ui::terminal::say(&format::format_inactive(
            &shown,
            &tm.environment,
            &tm.version,
            reason,
        ));
        return Ok(exit::OK);
    }
    let inspected = datafile::inspect(&tm.datafile, &tm.environment, tm.data_version, &run_dir)?;
    let report = session::run(&config.command, &run_dir, &inspected.copy);
    if interrupted.load(Ordering::SeqCst) {
        return Ok(stopped());
    }
    let report = report?;
    let explanation = Explanation {
        datafile: shown,
        environment: tm.environment.clone(),
        testmon_version: tm.version.clone(),
        data_version: tm.data_version,
        wal_bytes: inspected.wal_bytes,
        start: start_of(&inspected.state, tm, &report),
        selection_off: (!tm.select).then(|| selection_off_reason(tm.message.as_deref())),
        report,
    };
    crate::ui::terminal::say(&format::format(&explanation));
    Ok(exit::OK)
}

fn stopped() -> u8 {
    eprintln!("testmon-run: interrupted");
    exit::INTERRUPTED
}

/// The probe's answer from its cache, only read (why writes no cache entry).
fn cached_facts(config: &Config, datafile: Option<&Path>) -> Option<Facts> {
    let store = Store::locate()?;
    let key = Key::new(&config.command, datafile)?;
    store.load(&key).map(|entry| entry.facts)
}

/// testmon as the command runs it, when there is a selection to explain.
fn explainable<'f>(facts: &'f Facts, config: &Config) -> Result<&'f Testmon> {
    let command = pycommand::display(&config.command);
    if facts.passthrough {
        return Err(Fatal::Usage(format!(
            "`{command}` is not a test run (--help, --version, --collect-only, ...): \
             nothing for why to explain"
        ))
        .into());
    }
    let Some(tm) = facts.testmon.as_ref() else {
        return Err(Fatal::Usage(format!(
            "pytest-testmon is not loaded by `{command}`: install it where the command \
             runs, or drop -p no:testmon"
        ))
        .into());
    };
    if !tm.active() && tm.message.is_none() {
        return Err(Fatal::Usage(format!(
            "`{command}` does not turn testmon on: add --testmon \
             (testmon-run why -- pytest --testmon ...)"
        ))
        .into());
    }
    if tm.tmnet {
        return Err(Fatal::Usage("--tmnet is not supported by testmon-run".into()).into());
    }
    if crate::db::schema_sql(tm.data_version).is_none() {
        return Err(Fatal::Usage(format!(
            "unsupported pytest-testmon {} (data version {}); supported: 2.1.x and 2.2.x",
            tm.version, tm.data_version
        ))
        .into());
    }
    Ok(tm)
}

/// What testmon starts from, by the datafile's state and the row testmon used.
fn start_of(state: &State, tm: &Testmon, report: &Report) -> Start {
    match state {
        State::New(reason) => Start::NewDatabase(reason.clone()),
        State::NoEnvironment { others } => Start::NewEnvironment {
            others: others.clone(),
        },
        State::Environment { row, ids } => {
            let same_packages = row.packages.as_deref() == Some(tm.system_packages.as_str());
            let same_python = row.python.as_deref() == Some(tm.python_version.as_str());
            if same_packages && same_python {
                return Start::Unchanged {
                    python: tm.python_version.clone(),
                    packages: count_packages(&tm.system_packages),
                };
            }
            Start::Changed {
                packages: if same_packages {
                    Vec::new()
                } else {
                    diff_packages(row.packages.as_deref().unwrap_or(""), &tm.system_packages)
                },
                python: (!same_python).then(|| {
                    (
                        row.python.clone().unwrap_or_default(),
                        tm.python_version.clone(),
                    )
                }),
                // testmon 2.1 falls back to an older row of these packages when one exists.
                older_row: report.exec_id.filter(|id| ids.contains(id)),
            }
        }
    }
}

/// testmon's header message without its `testmon: ` and trailing `, `.
fn strip_testmon_prefix(message: &str) -> &str {
    message
        .strip_prefix("testmon: ")
        .unwrap_or(message)
        .trim_end_matches([',', ' '])
}

/// Why testmon's selection is off, from its header message
/// (`selection automatically deactivated because -k was used, `).
fn selection_off_reason(message: Option<&str>) -> String {
    const BECAUSE: &str = "selection automatically deactivated because ";
    let message = message.unwrap_or("");
    if let Some(at) = message.find(BECAUSE) {
        let rest = &message[at + BECAUSE.len()..];
        return rest.split(", ").next().unwrap_or(rest).trim().to_string();
    }
    if message.contains("selection deactivated") {
        return "--testmon-noselect".into();
    }
    let stripped = strip_testmon_prefix(message);
    if stripped.is_empty() {
        "testmon's own choice".into()
    } else {
        stripped.to_string()
    }
}

/// The datafile as the user names it: relative to the current directory when inside it.
fn shown_path(path: &Path) -> String {
    std::env::current_dir()
        .ok()
        .and_then(|cwd| path.strip_prefix(cwd).ok().map(Path::to_path_buf))
        .filter(|rel| !rel.as_os_str().is_empty())
        .unwrap_or_else(|| path.to_path_buf())
        .display()
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selection_off_reasons_in_testmons_words() {
        assert_eq!(
            selection_off_reason(Some(
                "testmon: selection automatically deactivated because -k was used, "
            )),
            "-k was used"
        );
        assert_eq!(
            selection_off_reason(Some(
                "testmon: collection automatically deactivated because it's not compatible \
                 with debugger, selection automatically deactivated because --lf was used, "
            )),
            "--lf was used"
        );
        assert_eq!(
            selection_off_reason(Some("testmon: selection deactivated, ")),
            "--testmon-noselect"
        );
        assert_eq!(
            strip_testmon_prefix("testmon: deactivated through --no-testmon"),
            "deactivated through --no-testmon"
        );
    }
}
