//! pytest's cache after a run: `lastfailed` (and so `--lf`, `--ff`) and `stepwise` merged
//! from every worker, written once by the supervisor, never last-writer-wins.

use std::path::{Path, PathBuf};

use anyhow::Result;
use serde_json::{Map, Value};

use crate::run::outcome::TestResult;
use crate::run::protocol::{CacheReport, Outcome, When};

const LASTFAILED: &str = "v/cache/lastfailed";
const STEPWISE: &str = "v/cache/stepwise";

/// Applies the workers' changes to the `lastfailed` on disk now (each test ran on one
/// worker; the collection's changes are the same in all), plus tests whose worker crashed.
/// Returns the new mapping, in pytest's order: kept entries first, new failures after.
pub(crate) fn merged_lastfailed(
    current: Map<String, Value>,
    reports: &[CacheReport],
    crashed: &[String],
) -> Map<String, Value> {
    let mut merged = current;
    for report in reports {
        for nodeid in &report.lastfailed_removed {
            merged.shift_remove(nodeid);
        }
    }
    let added = reports
        .iter()
        .flat_map(|r| &r.lastfailed_added)
        .chain(crashed);
    for nodeid in added {
        merged.entry(nodeid.clone()).or_insert(Value::Bool(true));
    }
    merged
}

/// The share of pytest's cache a worker would have sent for these results, had it not died:
/// pytest's `LFPlugin.pytest_runtest_logreport` rule, report by report.
pub(crate) fn share_of(results: &[&TestResult]) -> CacheReport {
    let mut share = CacheReport::default();
    for result in results {
        let mut failed = None;
        for report in &result.reports {
            if (report.when == When::Call && report.outcome == Outcome::Passed)
                || report.outcome == Outcome::Skipped
            {
                failed = Some(false);
            } else if report.outcome == Outcome::Failed {
                failed = Some(true);
            }
        }
        match failed {
            Some(true) => share.lastfailed_added.push(result.nodeid.clone()),
            Some(false) => share.lastfailed_removed.push(result.nodeid.clone()),
            None => {}
        }
    }
    share
}

/// Writes the merged cache; nothing when no worker had pytest's cache plugin.
pub(crate) fn write(reports: &[CacheReport], crashed: &[String]) -> Result<()> {
    let Some(first) = reports.first() else {
        return Ok(());
    };
    if first.dir.is_empty() {
        return Ok(());
    }
    let dir = PathBuf::from(&first.dir);
    let path = dir.join(LASTFAILED);
    let current = read_map(&path);
    let merged = merged_lastfailed(current.clone(), reports, crashed);
    if merged != current || (!path.exists() && !merged.is_empty()) {
        write_value(&path, &Value::Object(merged))?;
    }
    // --sw: the value of the worker that stopped at a failure, else the first worker's.
    let stepwise: Vec<&Value> = reports.iter().filter_map(|r| r.stepwise.as_ref()).collect();
    if let Some(value) = stepwise
        .iter()
        .find(|v| stepwise_failed(v))
        .or(stepwise.first())
    {
        write_value(&dir.join(STEPWISE), value)?;
    }
    Ok(())
}

/// pytest 8 stores the failed node id (or null), pytest 9 an object with `last_failed`.
fn stepwise_failed(value: &Value) -> bool {
    match value {
        Value::String(_) => true,
        Value::Object(map) => map.get("last_failed").is_some_and(|v| !v.is_null()),
        _ => false,
    }
}

fn read_map(path: &Path) -> Map<String, Value> {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|text| serde_json::from_str::<Value>(&text).ok())
        .and_then(|value| match value {
            Value::Object(map) => Some(map),
            _ => None,
        })
        .unwrap_or_default()
}

/// As pytest's Cache.set: `json.dumps(value, ensure_ascii=False, indent=2)`; atomically.
fn write_value(path: &Path, value: &Value) -> Result<()> {
    crate::atomic::write(path, to_python_json(value).as_bytes())
}

/// Python's `json.dumps(.., indent=2)`: `{}` for an empty mapping, else two-space indents.
fn to_python_json(value: &Value) -> String {
    match value {
        Value::Object(map) if map.is_empty() => "{}".into(),
        Value::Array(items) if items.is_empty() => "[]".into(),
        _ => serde_json::to_string_pretty(value).unwrap_or_else(|_| "{}".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dead_workers_share_follows_pytests_rule() {
        use crate::run::protocol::Report;
        let result = |nodeid: &str, phases: &[(&str, &str)]| TestResult {
            nodeid: nodeid.into(),
            worker: 0,
            reports: phases
                .iter()
                .map(|(when, outcome)| Report {
                    when: (*when).into(),
                    outcome: (*outcome).into(),
                    ..Report::default()
                })
                .collect(),
        };
        let passed = result(
            "t.py::p",
            &[
                ("setup", "passed"),
                ("call", "passed"),
                ("teardown", "passed"),
            ],
        );
        let failed = result(
            "t.py::f",
            &[
                ("setup", "passed"),
                ("call", "failed"),
                ("teardown", "passed"),
            ],
        );
        let skipped = result("t.py::s", &[("setup", "skipped"), ("teardown", "passed")]);
        let teardown_error = result(
            "t.py::t",
            &[
                ("setup", "passed"),
                ("call", "passed"),
                ("teardown", "failed"),
            ],
        );
        let share = share_of(&[&passed, &failed, &skipped, &teardown_error]);
        assert_eq!(share.lastfailed_removed, ["t.py::p", "t.py::s"]);
        assert_eq!(share.lastfailed_added, ["t.py::f", "t.py::t"]);
    }

    fn report(removed: &[&str], added: &[&str]) -> CacheReport {
        CacheReport {
            dir: String::new(),
            lastfailed_removed: removed.iter().map(|s| s.to_string()).collect(),
            lastfailed_added: added.iter().map(|s| s.to_string()).collect(),
            stepwise: None,
        }
    }

    fn map(keys: &[&str]) -> Map<String, Value> {
        keys.iter()
            .map(|k| (k.to_string(), Value::Bool(true)))
            .collect()
    }

    #[test]
    fn every_workers_change_counts() {
        // Before: a and b failed. gw0 ran a (passes now) and c (fails); gw1 ran b (still
        // fails: no change) and d (fails).
        let merged = merged_lastfailed(
            map(&["t.py::a", "t.py::b"]),
            &[
                report(&["t.py::a"], &["t.py::c"]),
                report(&[], &["t.py::d"]),
            ],
            &["t.py::e".to_string()],
        );
        let keys: Vec<&str> = merged.keys().map(String::as_str).collect();
        assert_eq!(keys, ["t.py::b", "t.py::c", "t.py::d", "t.py::e"]);
    }

    #[test]
    fn written_as_pytest_writes_it() {
        let dir = tempfile::tempdir().unwrap();
        let mut first = report(&[], &["t.py::x", "t.py::ü"]);
        first.dir = dir.path().to_string_lossy().into_owned();
        first.stepwise = Some(Value::Null);
        let mut second = report(&[], &[]);
        second.stepwise = Some(serde_json::json!({"last_failed": "t.py::x"}));
        write(&[first.clone(), second], &[]).unwrap();
        let text = std::fs::read_to_string(dir.path().join(LASTFAILED)).unwrap();
        assert_eq!(text, "{\n  \"t.py::x\": true,\n  \"t.py::ü\": true\n}");
        let stepwise = std::fs::read_to_string(dir.path().join(STEPWISE)).unwrap();
        assert!(
            stepwise.contains("\"last_failed\": \"t.py::x\""),
            "{stepwise}"
        );
        // Everything passes next time: an empty mapping, as pytest writes it.
        first.lastfailed_added.clear();
        first.lastfailed_removed = vec!["t.py::x".into(), "t.py::ü".into()];
        write(&[first], &[]).unwrap();
        let text = std::fs::read_to_string(dir.path().join(LASTFAILED)).unwrap();
        assert_eq!(text, "{}");
    }
}
