//! What a supervised run produced, for the record, the artifacts and the report; and the
//! run-level decisions made from it (did it complete, its exit code).

use std::collections::HashSet;
use std::time::Instant;

use crate::exit;
use crate::run::protocol::{CacheReport, CollectError, PytestWarning, Report};
use crate::shard::partition::Share;

/// One test's reports (setup, call, teardown), and the worker (index) that ran it.
#[derive(Debug, Clone)]
pub(crate) struct TestResult {
    pub(crate) nodeid: String,
    pub(crate) worker: usize,
    pub(crate) reports: Vec<Report>,
}

impl TestResult {
    /// Failed or errored in any phase.
    pub(crate) fn failed(&self) -> bool {
        self.reports.iter().any(|rep| {
            rep.outcome.is_failed() || rep.category == "failed" || rep.category == "error"
        })
    }
}

/// A test's part of pytest's XFAILURES, PASSES or XPASSES section.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Section {
    pub(crate) nodeid: String,
    pub(crate) title: String,
    pub(crate) text: String,
}

/// A test that was running when the run was interrupted and did not finish.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct CutShort {
    pub(crate) nodeid: String,
    pub(crate) worker: String,
}

/// Everything the run produced, for the merge and the report.
#[derive(Debug, Default)]
pub(crate) struct RunOutcome {
    /// What the user's plugins printed at the end in the controller (the coverage table),
    /// shown where pytest's terminal summary shows it.
    pub(crate) plugins_text: String,
    /// The controller's session exit status (1: a plugin failed the run, as
    /// `--cov-fail-under`; 3: a plugin's internal error).
    pub(crate) plugins_status: Option<i32>,
    /// The run's list: the first worker's collection, in testmon's order (with `--shard`,
    /// this shard's part of it).
    pub(crate) run_list: Vec<String>,
    /// Every selected test, in testmon's order: `run_list`, or all shards' parts together.
    pub(crate) selected: Vec<String>,
    /// With `--shard`: this shard's part of the selection.
    pub(crate) share: Option<Share>,
    pub(crate) results: Vec<TestResult>,
    pub(crate) collect_errors: Vec<CollectError>,
    pub(crate) deselected: u64,
    /// The tests pytest itself deselected (-k, -m, --deselect), by the first worker.
    pub(crate) user_deselected: Vec<String>,
    pub(crate) sync: Option<Vec<String>>,
    pub(crate) interrupted: bool,
    /// The `-x`/`--maxfail` limit was reached.
    pub(crate) stopped_after: Option<u64>,
    /// Protocol errors, workers lost before collecting, workers that could not be replaced:
    /// the run ends with an internal error.
    pub(crate) problems: Vec<String>,
    /// Workers that crashed or were killed at --timeout after collecting: their test is
    /// reported as an error, the rest of their work ran elsewhere.
    pub(crate) crashes: Vec<String>,
    /// Tests that were due to run but did not (their worker crashed, nobody left to run them).
    pub(crate) not_run: Vec<String>,
    /// Each worker's pytest exit status, when it reported one.
    pub(crate) exitstatus: Vec<Option<i32>>,
    /// Warnings to show (e.g. differing collections).
    pub(crate) warnings: Vec<String>,
    /// pytest's warnings from every worker, deduplicated.
    pub(crate) pytest_warnings: Vec<PytestWarning>,
    /// Each worker's share of pytest's cache, as it reported it.
    pub(crate) caches: Vec<CacheReport>,
    /// When every worker had collected and the schedule started.
    pub(crate) scheduled_at: Option<Instant>,
    /// The tests' parts of pytest's XFAILURES, PASSES and XPASSES sections.
    pub(crate) sections: Vec<Section>,
    /// Tests whose worker crashed while running them (failed, for pytest's cache).
    pub(crate) crashed: Vec<String>,
    /// Every worker process's file stem, replacements included, in the order they started:
    /// their spools, JUnit files and logs.
    pub(crate) stems: Vec<String>,
    /// Workers started to replace crashed ones.
    pub(crate) restarts: u32,
    /// gw0 forked the other workers (run::zygote).
    pub(crate) zygote: bool,
    /// Tests reported by workers that died before sending their share of pytest's cache.
    pub(crate) cache_orphans: Vec<String>,
    /// Tests that were running when the run was interrupted and did not finish.
    pub(crate) cut_short: Vec<CutShort>,
}

impl RunOutcome {
    /// The results of the tests named in any of `lists`, in the run's order.
    pub(crate) fn results_of(&self, lists: &[&[String]]) -> Vec<&TestResult> {
        let wanted: HashSet<&str> = lists
            .iter()
            .flat_map(|l| l.iter())
            .map(String::as_str)
            .collect();
        self.results
            .iter()
            .filter(|r| wanted.contains(r.nodeid.as_str()))
            .collect()
    }

    /// Every selected test ran and nothing went wrong around them: no interrupt, no lost or
    /// replaced worker, no collection error, no warning of testmon-run's own.
    pub(crate) fn completed(&self) -> bool {
        !self.interrupted
            && self.problems.is_empty()
            && self.crashes.is_empty()
            && self.crashed.is_empty()
            && self.not_run.is_empty()
            && self.cut_short.is_empty()
            && self.collect_errors.is_empty()
            && self.warnings.is_empty()
            && self.restarts == 0
            && self.results.len() == self.run_list.len()
    }

    /// pytest's exit code for the whole run, from every worker's status and every result.
    pub(crate) fn exit_code(&self) -> u8 {
        let statuses: Vec<i32> = self.exitstatus.iter().flatten().copied().collect();
        exit::Outcome {
            usage_error: statuses.contains(&i32::from(exit::USAGE_ERROR)),
            internal_error: !self.problems.is_empty()
                || !self.not_run.is_empty()
                || statuses.contains(&i32::from(exit::INTERNAL_ERROR))
                || self.plugins_status == Some(i32::from(exit::INTERNAL_ERROR)),
            interrupted: self.interrupted || statuses.contains(&i32::from(exit::INTERRUPTED)),
            failures: self.results.iter().any(TestResult::failed)
                || !self.collect_errors.is_empty()
                || self.plugins_status == Some(i32::from(exit::TESTS_FAILED)),
            tests_run: self.run_list.len(),
            deselected_by_testmon: self.exitstatus.first().copied().flatten() == Some(0),
        }
        .exit_code()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::run::protocol::Outcome;

    fn result(nodeid: &str, outcome: Outcome, category: &str) -> TestResult {
        TestResult {
            nodeid: nodeid.into(),
            worker: 0,
            reports: vec![Report {
                outcome,
                category: category.into(),
                ..Report::default()
            }],
        }
    }

    fn green(tests: &[&str]) -> RunOutcome {
        RunOutcome {
            run_list: tests.iter().map(|t| t.to_string()).collect(),
            results: tests
                .iter()
                .map(|t| result(t, Outcome::Passed, "passed"))
                .collect(),
            exitstatus: vec![Some(0), Some(0)],
            ..RunOutcome::default()
        }
    }

    #[test]
    fn a_green_run_completes_with_exit_0() {
        let run = green(&["t.py::a", "t.py::b"]);
        assert!(run.completed());
        assert_eq!(run.exit_code(), exit::OK);
    }

    #[test]
    fn a_failure_is_exit_1_and_an_error_category_counts() {
        let mut run = green(&["t.py::a", "t.py::b"]);
        run.results[1] = result("t.py::b", Outcome::Passed, "error");
        assert_eq!(run.exit_code(), exit::TESTS_FAILED);
        run.results[1] = result("t.py::b", Outcome::Failed, "failed");
        assert_eq!(run.exit_code(), exit::TESTS_FAILED);
        // Failed tests still complete the run; the no-op state checks the exit code too.
        assert!(run.completed());
    }

    #[test]
    fn what_keeps_a_run_from_completing() {
        let spoil: [fn(&mut RunOutcome); 9] = [
            |r| r.interrupted = true,
            |r| r.problems.push("p".into()),
            |r| r.crashes.push("c".into()),
            |r| r.crashed.push("t.py::a".into()),
            |r| r.not_run.push("t.py::a".into()),
            |r| {
                r.cut_short.push(CutShort {
                    nodeid: "t.py::a".into(),
                    worker: "gw0".into(),
                })
            },
            |r| r.warnings.push("w".into()),
            |r| r.restarts = 1,
            |r| {
                r.results.pop();
            },
        ];
        for (i, f) in spoil.iter().enumerate() {
            let mut run = green(&["t.py::a", "t.py::b"]);
            f(&mut run);
            assert!(!run.completed(), "case {i}");
        }
    }

    #[test]
    fn exit_codes_in_pytests_precedence() {
        let mut run = green(&[]);
        assert_eq!(run.exit_code(), exit::OK, "testmon deselected everything");
        run.exitstatus = vec![Some(5), Some(5)];
        assert_eq!(run.exit_code(), exit::NO_TESTS_COLLECTED);
        let mut run = green(&["t.py::a"]);
        run.not_run.push("t.py::a".into());
        run.interrupted = true;
        assert_eq!(run.exit_code(), exit::INTERNAL_ERROR);
        run.not_run.clear();
        assert_eq!(run.exit_code(), exit::INTERRUPTED);
        run.exitstatus[1] = Some(4);
        assert_eq!(run.exit_code(), exit::USAGE_ERROR);
    }
}
