//! `merge --json-report OUT --report R...`: the shards' `--json-report` documents as one.
//! Counts add up, the tests are listed shard after shard, the phases are the slowest
//! shard's, and the exit code is the one pytest's precedence picks (usage error, internal
//! error, interrupted, failed; "no tests" only when every shard had none).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde_json::{json, Map, Value};

use crate::atomic;
use crate::exit::Fatal;

pub(crate) fn merge(out: &Path, reports: &[PathBuf]) -> Result<()> {
    let documents = reports
        .iter()
        .map(|path| read(path))
        .collect::<Result<Vec<Value>>>()?;
    let merged = combine(&documents).map_err(Fatal::Usage)?;
    atomic::write(out, serde_json::to_string_pretty(&merged)?.as_bytes())
        .with_context(|| format!("writing {}", out.display()))
}

fn read(path: &Path) -> Result<Value> {
    let text = std::fs::read_to_string(path)
        .map_err(|err| Fatal::Usage(format!("--report {}: {err}", path.display())))?;
    let value: Value = serde_json::from_str(&text).map_err(|_| {
        Fatal::Usage(format!(
            "--report {}: not a testmon-run --json-report document",
            path.display()
        ))
    })?;
    if value.get("format").and_then(Value::as_u64) != Some(1) || !value["tests"].is_array() {
        return Err(Fatal::Usage(format!(
            "--report {}: not a testmon-run --json-report document (format 1)",
            path.display()
        ))
        .into());
    }
    Ok(value)
}

/// pytest's precedence of exit codes, most important first.
const PRECEDENCE: [u64; 5] = [4, 3, 2, 1, 0];

fn combine(documents: &[Value]) -> Result<Value, String> {
    let first = documents.first().ok_or("no reports given")?;
    let sum = |key: &str| -> u64 { documents.iter().filter_map(|d| d[key].as_u64()).sum() };
    let concat = |key: &str| -> Vec<Value> {
        documents
            .iter()
            .flat_map(|d| d[key].as_array().cloned().unwrap_or_default())
            .collect()
    };
    let codes: Vec<u64> = documents
        .iter()
        .filter_map(|d| d["exit_code"].as_u64())
        .collect();
    let exit_code = if !codes.is_empty() && codes.iter().all(|&c| c == 5) {
        5
    } else {
        PRECEDENCE
            .into_iter()
            .find(|p| codes.contains(p))
            .unwrap_or(0)
    };
    // Each shard counts the other shards' tests as deselected: testmon's own deselected
    // tests are a shard's count less those.
    let deselected = first["deselected"].as_u64().map(|d| {
        let others = first["shard"]["selected_all"]
            .as_u64()
            .zip(first["selected"].as_u64())
            .map_or(0, |(all, mine)| all.saturating_sub(mine));
        d.saturating_sub(others)
    });
    let mut summary: Vec<(String, u64)> = Vec::new();
    for document in documents {
        for pair in document["summary"].as_array().into_iter().flatten() {
            let (Some(name), Some(count)) = (pair[0].as_str(), pair[1].as_u64()) else {
                continue;
            };
            let count = match (name, deselected) {
                ("deselected", Some(d)) => d,
                _ => count,
            };
            match summary.iter_mut().find(|(n, _)| n == name) {
                Some((n, c)) if n != "deselected" => *c += count,
                Some(_) => {}
                None => summary.push((name.to_string(), count)),
            }
        }
    }
    let mut phases = Map::new();
    for document in documents {
        for (phase, value) in document["phases"].as_object().into_iter().flatten() {
            let seconds = value.as_f64().unwrap_or(0.0);
            let slowest = phases.get(phase).and_then(Value::as_f64).unwrap_or(0.0);
            phases.insert(phase.clone(), json!(seconds.max(slowest)));
        }
    }
    let shards: Vec<Value> = documents
        .iter()
        .map(|d| {
            json!({
                "index": d["shard"]["index"],
                "total": d["shard"]["total"],
                "selected": d["selected"],
                "exit_code": d["exit_code"],
                "seconds": d["phases"]["total"],
            })
        })
        .collect();
    Ok(json!({
        "format": 1,
        "testmon_run": first["testmon_run"],
        "pytest": first["pytest"],
        "testmon": first["testmon"],
        "workers": sum("workers"),
        "selected": sum("selected"),
        "deselected": deselected,
        "exit_code": exit_code,
        "summary": summary
            .into_iter()
            .filter(|(n, c)| n != "deselected" || *c > 0)
            .map(|(n, c)| json!([n, c]))
            .collect::<Vec<_>>(),
        "phases": phases,
        "tests": concat("tests"),
        "worker_restarts": sum("worker_restarts"),
        "crashes": concat("crashes"),
        "not_run": concat("not_run"),
        "shards": shards,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A shard's report: 4 tests selected on all shards, testmon deselected 7; the other
    /// shards' tests count as deselected here too (in `deselected` and in `summary`).
    fn report(index: u64, code: u64, tests: &[(&str, &str)], summary: Value) -> Value {
        json!({
            "format": 1, "testmon_run": "0.1.0", "pytest": "9.2.0", "testmon": "2.2.0",
            "workers": 2, "selected": tests.len(), "deselected": 7 + 4 - tests.len(),
            "exit_code": code,
            "summary": summary,
            "phases": {"probe": 0.1, "run": index as f64, "total": 1.0 + index as f64},
            "tests": tests.iter().map(|(n, o)| json!({"nodeid": n, "outcome": o})).collect::<Vec<_>>(),
            "worker_restarts": 0, "crashes": [], "not_run": [],
            "shard": {"index": index, "total": 3, "selected_all": 4},
        })
    }

    #[test]
    fn counts_add_up_and_the_worst_exit_code_wins() {
        let merged = combine(&[
            report(
                1,
                0,
                &[("a", "passed"), ("b", "passed")],
                json!([["passed", 2], ["deselected", 9]]),
            ),
            report(
                2,
                1,
                &[("c", "failed"), ("d", "passed")],
                json!([["failed", 1], ["passed", 1], ["deselected", 9]]),
            ),
            report(3, 5, &[], json!([["deselected", 11]])),
        ])
        .unwrap();
        assert_eq!(merged["exit_code"], 1);
        assert_eq!(merged["selected"], 4);
        assert_eq!(merged["deselected"], 7, "testmon's own, once");
        assert_eq!(
            merged["summary"],
            json!([["passed", 3], ["deselected", 7], ["failed", 1]])
        );
        let names: Vec<&str> = merged["tests"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["nodeid"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["a", "b", "c", "d"]);
        assert_eq!(merged["phases"]["run"], 3.0);
        assert_eq!(merged["shards"][1]["exit_code"], 1);
        let interrupted =
            combine(&[report(1, 2, &[], json!([])), report(2, 1, &[], json!([]))]).unwrap();
        assert_eq!(interrupted["exit_code"], 2);
        let none = combine(&[report(1, 5, &[], json!([])), report(2, 5, &[], json!([]))]).unwrap();
        assert_eq!(none["exit_code"], 5);
    }

    #[test]
    fn a_file_that_is_not_a_report_is_a_usage_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.json");
        std::fs::write(&path, "{\"tests\": 3}").unwrap();
        let err = read(&path).unwrap_err();
        assert_eq!(crate::exit::code_of(&err), crate::exit::USAGE_ERROR);
        assert!(!err.to_string().contains('\n'));
        let err = read(&dir.path().join("missing.json")).unwrap_err();
        assert_eq!(crate::exit::code_of(&err), crate::exit::USAGE_ERROR);
    }
}
