//! One run of the user's command with the why plugin (python/why.py): testmon's own
//! selection on the private copy of the datafile, collected, nothing run.

use std::ffi::OsString;
use std::io::Write;
use std::path::Path;
use std::process::Stdio;

use anyhow::{Context, Result};
use serde::Deserialize;

use crate::exit::Fatal;
use crate::pycommand;
use crate::run::rundir::{private_file, RunDir};

/// The plugin, imported by pytest as `-p _testmon_run_why`.
const WHY_MODULE: &str = "_testmon_run_why";
const WHY_SOURCE: &str = include_str!("../../python/why.py");
/// The JSON answer's version (python/why.py PROTOCOL).
const PROTOCOL: u32 = 1;

/// What testmon selected from the collection, and why (python/why.py `answer`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub(crate) struct Report {
    pub(crate) protocol: u32,
    /// testmon's selection is on (off: every collected test runs).
    pub(crate) select: bool,
    /// The environment row testmon used (testmon 2.1 may go back to an older one).
    pub(crate) exec_id: Option<i64>,
    pub(crate) selected: usize,
    /// Collected, then deselected by testmon.
    pub(crate) deselected: usize,
    /// Deselected by pytest's own options (`--deselect`).
    pub(crate) user_deselected: usize,
    /// Recorded tests in files testmon did not even collect (nothing in them changed).
    pub(crate) skipped: usize,
    /// The files testmon tracks for the environment.
    pub(crate) tracked_files: usize,
    pub(crate) changed: Vec<ChangedFile>,
    /// Selected tests recorded as failed.
    pub(crate) failed: usize,
    /// Selected tests without a record, or with testmon's placeholder (never ran).
    pub(crate) no_record: usize,
    /// Selected for none of the reasons above (should not happen).
    pub(crate) other: usize,
    /// The collectors that failed (pytest stops before running anything).
    pub(crate) collect_errors: Vec<String>,
}

/// A tracked file whose content is not what testmon recorded.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub(crate) struct ChangedFile {
    pub(crate) file: String,
    /// Removed (or unreadable).
    pub(crate) gone: bool,
    /// The selected tests whose fingerprint of this file no longer matches it.
    pub(crate) selected: usize,
    /// Tests whose fingerprint no longer matches, that are no longer collected.
    pub(crate) not_collected: usize,
}

/// Runs the command with the plugin, testmon's datafile being `copy`.
pub(crate) fn run(command: &[OsString], run_dir: &RunDir, copy: &Path) -> Result<Report> {
    let plugin = run_dir.python_path().join(format!("{WHY_MODULE}.py"));
    private_file(&plugin)
        .and_then(|mut file| file.write_all(WHY_SOURCE.as_bytes()))
        .with_context(|| format!("writing {}", plugin.display()))?;
    let out = run_dir.path().join("why.json");
    let mut cmd = pycommand::with_plugin(command, WHY_MODULE, &run_dir.python_path(), Some(copy));
    cmd.env("TESTMON_RUN_WHY_OUT", &out)
        .env("TESTMON_RUN_WHY_DATAFILE", copy)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .stdin(Stdio::null());
    let output = cmd
        .output()
        .map_err(|err| pycommand::start_error(command, err))?;
    if !out.exists() {
        let status = output
            .status
            .code()
            .map_or_else(|| "killed by a signal".to_string(), |c| format!("exit {c}"));
        let stderr = String::from_utf8_lossy(&output.stderr);
        let stdout = String::from_utf8_lossy(&output.stdout);
        let last = stderr
            .lines()
            .chain(stdout.lines())
            .map(str::trim)
            .rfind(|l| !l.is_empty())
            .unwrap_or("no output");
        return Err(Fatal::Internal(format!(
            "pytest ended before its collection was explained ({status}): {last}"
        ))
        .into());
    }
    read_answer(&std::fs::read_to_string(&out).context("reading the why plugin's answer")?)
}

fn read_answer(text: &str) -> Result<Report> {
    let report: Report = serde_json::from_str(text).context("parsing the why plugin's answer")?;
    if report.protocol != PROTOCOL {
        return Err(Fatal::Internal(format!(
            "why plugin protocol {} does not match this testmon-run ({PROTOCOL})",
            report.protocol
        ))
        .into());
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_plugins_answer() {
        let text = r#"{"protocol": 1, "select": true, "exec_id": 3, "selected": 5,
            "deselected": 2, "user_deselected": 0, "skipped": 4, "tracked_files": 6,
            "changed": [{"file": "calc.py", "gone": false, "selected": 2, "not_collected": 1}],
            "failed": 1, "no_record": 2, "other": 0, "collect_errors": []}"#;
        let report = read_answer(text).unwrap();
        assert_eq!(report.exec_id, Some(3));
        assert_eq!(report.changed[0].file, "calc.py");
        assert_eq!(report.changed[0].not_collected, 1);
        let other = text.replacen("\"protocol\": 1", "\"protocol\": 9", 1);
        assert!(read_answer(&other).is_err());
    }
}
