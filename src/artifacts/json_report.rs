//! `--json-report PATH`: the run as one JSON document, for tools (CI dashboards, scripts).

use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result};
use serde::Serialize;

use crate::probe::Facts;
use crate::run::outcome::{RunOutcome, TestResult};

pub(crate) const FORMAT: u32 = 1;

#[derive(Debug, Serialize)]
pub(crate) struct JsonReport {
    pub(crate) format: u32,
    pub(crate) testmon_run: String,
    pub(crate) pytest: String,
    /// pytest-testmon's version; None when testmon is off.
    pub(crate) testmon: Option<String>,
    pub(crate) workers: usize,
    /// gw0 forked the other workers after its collection (src/run/zygote.rs).
    pub(crate) zygote: bool,
    pub(crate) selected: usize,
    pub(crate) deselected: u64,
    pub(crate) exit_code: u8,
    /// pytest's summary counts by category ("passed", "failed", ...).
    pub(crate) summary: Vec<(String, usize)>,
    /// Seconds per phase.
    pub(crate) phases: Phases,
    pub(crate) tests: Vec<TestEntry>,
    /// Workers started in place of crashed or timed-out ones.
    pub(crate) worker_restarts: u32,
    /// One line per worker lost after collecting (crashed, timed out).
    pub(crate) crashes: Vec<String>,
    /// Tests due to run that did not (workers lost past --max-worker-restart).
    pub(crate) not_run: Vec<String>,
    /// What the supervisor itself cost, and its workers (and probe) together.
    pub(crate) supervisor: Usage,
    /// With `--shard`: which shard this run was; `selected` counts its tests only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) shard: Option<ShardEntry>,
}

#[derive(Debug, Clone, Copy, Serialize)]
pub(crate) struct ShardEntry {
    pub(crate) index: usize,
    pub(crate) total: usize,
    /// Selected on all shards together.
    pub(crate) selected_all: usize,
}

/// CPU time and peak memory, from getrusage.
#[derive(Debug, Default, Clone, Copy, Serialize)]
pub(crate) struct Usage {
    /// The supervisor's own user + system time.
    pub(crate) cpu_seconds: f64,
    /// The supervisor's peak resident set.
    pub(crate) max_rss_kb: i64,
    /// The ended children's (workers', the probe's) user + system time.
    pub(crate) children_cpu_seconds: f64,
}

impl Usage {
    pub(crate) fn now() -> Usage {
        use nix::sys::resource::{getrusage, UsageWho};
        let secs = |t: nix::sys::time::TimeVal| t.tv_sec() as f64 + t.tv_usec() as f64 / 1e6;
        let (Ok(own), Ok(children)) = (
            getrusage(UsageWho::RUSAGE_SELF),
            getrusage(UsageWho::RUSAGE_CHILDREN),
        ) else {
            return Usage::default();
        };
        Usage {
            cpu_seconds: secs(own.user_time()) + secs(own.system_time()),
            max_rss_kb: own.max_rss(),
            children_cpu_seconds: secs(children.user_time()) + secs(children.system_time()),
        }
    }
}

#[derive(Debug, Default, Clone, Copy, Serialize)]
pub(crate) struct Phases {
    pub(crate) probe: f64,
    pub(crate) prepare: f64,
    /// From starting the workers until they all collected.
    pub(crate) collect: f64,
    pub(crate) run: f64,
    /// Merging the workers' results into testmon's database.
    pub(crate) merge: f64,
    pub(crate) total: f64,
}

/// The moments that divide a run into its phases.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Marks {
    pub(crate) started: Instant,
    pub(crate) probed: Instant,
    pub(crate) prepared: Instant,
    pub(crate) spawned: Instant,
    /// Every worker had collected (None: they never all did).
    pub(crate) scheduled: Option<Instant>,
    pub(crate) ran: Instant,
    pub(crate) recorded: Instant,
}

impl Marks {
    /// A run that ended at `now` without phases (the no-op fast path).
    pub(crate) fn all_at(started: Instant, now: Instant) -> Marks {
        Marks {
            started,
            probed: now,
            prepared: now,
            spawned: now,
            scheduled: None,
            ran: now,
            recorded: now,
        }
    }
}

impl Phases {
    pub(crate) fn new(marks: &Marks) -> Phases {
        let secs = |from: Instant, to: Instant| to.saturating_duration_since(from).as_secs_f64();
        let scheduled = marks.scheduled.unwrap_or(marks.ran);
        Phases {
            probe: secs(marks.started, marks.probed),
            prepare: secs(marks.probed, marks.prepared),
            collect: secs(marks.spawned, scheduled),
            run: secs(scheduled, marks.ran),
            merge: secs(marks.ran, marks.recorded),
            total: secs(marks.started, Instant::now()),
        }
    }
}

impl JsonReport {
    /// The report of a finished run; `names` are the workers' names by index.
    pub(crate) fn new(
        facts: &Facts,
        workers: usize,
        outcome: &RunOutcome,
        names: &[String],
        exit_code: u8,
        phases: Phases,
    ) -> JsonReport {
        let stats = crate::report::stats(
            &outcome.results,
            &outcome.collect_errors,
            outcome.deselected,
            outcome.pytest_warnings.len(),
        );
        JsonReport {
            format: FORMAT,
            testmon_run: env!("CARGO_PKG_VERSION").into(),
            pytest: facts.pytest_version.clone(),
            testmon: facts
                .testmon
                .as_ref()
                .filter(|tm| tm.active())
                .map(|tm| tm.version.clone()),
            workers,
            zygote: outcome.zygote,
            selected: outcome.run_list.len(),
            deselected: outcome.deselected,
            exit_code,
            summary: stats
                .ordered()
                .into_iter()
                .map(|(k, n)| (k.to_string(), n))
                .collect(),
            phases,
            tests: tests(outcome, names),
            worker_restarts: outcome.restarts,
            crashes: outcome.crashes.clone(),
            not_run: outcome.not_run.clone(),
            supervisor: Usage::now(),
            shard: outcome.share.as_ref().map(|share| ShardEntry {
                index: share.shard.index,
                total: share.shard.total,
                selected_all: share.selected,
            }),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct TestEntry {
    pub(crate) nodeid: String,
    /// pytest's word for the test as a whole: passed, failed, error, skipped, xfailed, xpassed.
    pub(crate) outcome: String,
    /// Setup + call + teardown, seconds.
    pub(crate) duration: f64,
    pub(crate) worker: String,
}

/// One test's outcome as pytest's summary counts it (an error in any phase wins).
pub(crate) fn test_outcome(result: &TestResult) -> String {
    let categories: Vec<&str> = result
        .reports
        .iter()
        .map(|r| r.category.as_str())
        .filter(|c| !c.is_empty())
        .collect();
    for wanted in ["error", "failed", "xfailed", "xpassed", "skipped", "passed"] {
        if categories.contains(&wanted) {
            return wanted.into();
        }
    }
    categories.first().map_or("passed", |c| c).to_string()
}

pub(crate) fn tests(outcome: &RunOutcome, names: &[String]) -> Vec<TestEntry> {
    outcome
        .results
        .iter()
        .map(|result| TestEntry {
            nodeid: result.nodeid.clone(),
            outcome: test_outcome(result),
            duration: result.reports.iter().map(|r| r.duration).sum(),
            worker: names.get(result.worker).cloned().unwrap_or_default(),
        })
        .collect()
}

/// Written atomically; the parent directory is created.
pub(crate) fn write(path: &Path, report: &JsonReport) -> Result<()> {
    let text = serde_json::to_string_pretty(report).context("encoding the JSON report")?;
    crate::atomic::write(path, (text + "\n").as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::run::protocol::Report;

    fn result(categories: &[&str]) -> TestResult {
        TestResult {
            nodeid: "t.py::x".into(),
            worker: 1,
            reports: categories
                .iter()
                .map(|c| Report {
                    when: "call".into(),
                    outcome: "passed".into(),
                    category: c.to_string(),
                    duration: 0.5,
                    head_line: "x".into(),
                    ..Report::default()
                })
                .collect(),
        }
    }

    #[test]
    fn outcome_of_a_test_as_pytest_counts_it() {
        assert_eq!(test_outcome(&result(&["", "passed", ""])), "passed");
        assert_eq!(test_outcome(&result(&["", "passed", "error"])), "error");
        assert_eq!(test_outcome(&result(&["", "failed", ""])), "failed");
        assert_eq!(test_outcome(&result(&["skipped", ""])), "skipped");
        assert_eq!(test_outcome(&result(&["", "xfailed", ""])), "xfailed");
    }

    #[test]
    fn summary_in_the_final_lines_order() {
        let outcome = RunOutcome {
            results: vec![result(&["", "passed", ""]), result(&["", "failed", ""])],
            deselected: 2,
            ..RunOutcome::default()
        };
        let facts: Facts = serde_json::from_str(
            r#"{"protocol":1,"pytest_version":"9.0.2","rootdir":"/p","inipath":null,
                "xdist":false,"passthrough":false,"maxfail":0,"verbose":0,"color":"auto",
                "testmon":null}"#,
        )
        .unwrap();
        let report = JsonReport::new(&facts, 2, &outcome, &[], 1, Phases::default());
        assert_eq!(
            report.summary,
            [
                ("failed".to_string(), 1),
                ("passed".to_string(), 1),
                ("deselected".to_string(), 2)
            ]
        );
        assert_eq!(report.testmon, None);
        assert_eq!(report.selected, 0);
    }

    #[test]
    fn written_with_every_field() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/report.json");
        let outcome = RunOutcome {
            results: vec![result(&["", "passed", ""])],
            ..RunOutcome::default()
        };
        let report = JsonReport {
            format: FORMAT,
            testmon_run: "0.1.0".into(),
            pytest: "9.0.2".into(),
            testmon: Some("2.2.0".into()),
            workers: 2,
            zygote: true,
            selected: 1,
            deselected: 3,
            exit_code: 0,
            summary: vec![("passed".into(), 1)],
            phases: Phases::default(),
            tests: tests(&outcome, &["gw0".into(), "gw1".into()]),
            worker_restarts: 1,
            crashes: vec!["worker gw0 crashed (killed by SIGKILL) while running t.py::x".into()],
            not_run: vec![],
            supervisor: Usage::now(),
            shard: None,
        };
        write(&path, &report).unwrap();
        let value: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(value["tests"][0]["worker"], "gw1");
        assert_eq!(value["tests"][0]["duration"], 1.5);
        assert_eq!(value["deselected"], 3);
        assert_eq!(value["zygote"], true);
        assert_eq!(value["summary"][0][0], "passed");
        assert!(value["phases"]["merge"].is_number());
        assert_eq!(value["worker_restarts"], 1);
        assert!(value["crashes"][0].as_str().unwrap().contains("crashed"));
        assert_eq!(value["not_run"], serde_json::json!([]));
        assert!(value["supervisor"]["cpu_seconds"].as_f64().unwrap() > 0.0);
        assert!(value["supervisor"]["max_rss_kb"].as_i64().unwrap() > 0);
    }
}
