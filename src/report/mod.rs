//! What the user reads at the end of a run, as pure functions of the results: pytest's
//! ERRORS and FAILURES sections, its short test summary and its final summary line.

mod summary;

pub use summary::{format_duration, sep, stats, summary_line, Stats};

use crate::protocol::{CollectError, Report};
use crate::supervisor::TestResult;

/// The ERRORS and FAILURES sections and the short test summary, as pytest prints them.
pub fn failures_text(
    results: &[TestResult],
    collect_errors: &[CollectError],
    width: usize,
) -> String {
    let mut out = String::new();
    let errors: Vec<(&str, &Report)> = results
        .iter()
        .flat_map(|r| r.reports.iter().map(move |rep| (r.nodeid.as_str(), rep)))
        .filter(|(_, rep)| rep.category == "error")
        .collect();
    let failures: Vec<(&str, &Report)> = results
        .iter()
        .flat_map(|r| r.reports.iter().map(move |rep| (r.nodeid.as_str(), rep)))
        .filter(|(_, rep)| rep.category == "failed")
        .collect();
    if !collect_errors.is_empty() || !errors.is_empty() {
        out.push_str(&sep('=', "ERRORS", width));
        for error in collect_errors {
            out.push_str(&sep(
                '_',
                &format!("ERROR collecting {}", error.nodeid),
                width,
            ));
            push_text(&mut out, &error.text);
        }
        for (_, rep) in &errors {
            let title = match rep.when.as_str() {
                "setup" => format!("ERROR at setup of {}", rep.head_line),
                "teardown" => format!("ERROR at teardown of {}", rep.head_line),
                _ => format!("ERROR {}", rep.head_line),
            };
            out.push_str(&sep('_', &title, width));
            push_text(&mut out, rep.text.as_deref().unwrap_or(""));
        }
    }
    if !failures.is_empty() {
        out.push_str(&sep('=', "FAILURES", width));
        for (_, rep) in &failures {
            out.push_str(&sep('_', &rep.head_line, width));
            push_text(&mut out, rep.text.as_deref().unwrap_or(""));
        }
    }
    if !failures.is_empty() || !errors.is_empty() || !collect_errors.is_empty() {
        out.push_str(&sep('=', "short test summary info", width));
        for (nodeid, rep) in &failures {
            out.push_str(&summary_entry("FAILED", nodeid, rep));
        }
        for error in collect_errors {
            out.push_str(&format!("ERROR {}", error.nodeid));
            if !error.message.is_empty() {
                out.push_str(&format!(
                    " - {}",
                    error.message.lines().next().unwrap_or("")
                ));
            }
            out.push('\n');
        }
        for (nodeid, rep) in &errors {
            out.push_str(&summary_entry("ERROR", nodeid, rep));
        }
    }
    out
}

fn summary_entry(word: &str, nodeid: &str, rep: &Report) -> String {
    match &rep.summary_line {
        Some(line) => format!("{line}\n"),
        None => match rep.message.as_deref().and_then(|m| m.lines().next()) {
            Some(msg) => format!("{word} {nodeid} - {msg}\n"),
            None => format!("{word} {nodeid}\n"),
        },
    }
}

fn push_text(out: &mut String, text: &str) {
    out.push_str(text);
    if !text.ends_with('\n') {
        out.push('\n');
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(when: &str, outcome: &str, category: &str, text: &str) -> Report {
        Report {
            when: when.into(),
            outcome: outcome.into(),
            category: category.into(),
            letter: String::new(),
            word: String::new(),
            duration: 0.1,
            head_line: "test_x".into(),
            text: Some(text.into()),
            message: Some("AssertionError: boom".into()),
            summary_line: None,
        }
    }

    #[test]
    fn failures_and_errors_as_pytest_prints_them() {
        let results = vec![
            TestResult {
                nodeid: "t.py::test_x".into(),
                worker: 0,
                reports: vec![report(
                    "call",
                    "failed",
                    "failed",
                    "    assert 1 == 2\nE   assert 1 == 2",
                )],
            },
            TestResult {
                nodeid: "t.py::test_y".into(),
                worker: 1,
                reports: vec![report("setup", "failed", "error", "E   RuntimeError")],
            },
        ];
        let text = failures_text(&results, &[], 40);
        let expected = "\
================ ERRORS ================
_______ ERROR at setup of test_x _______
E   RuntimeError
=============== FAILURES ===============
________________ test_x ________________
    assert 1 == 2
E   assert 1 == 2
======= short test summary info ========
FAILED t.py::test_x - AssertionError: boom
ERROR t.py::test_y - AssertionError: boom
";
        assert_eq!(text, expected);
    }

    #[test]
    fn nothing_failed_nothing_printed() {
        let results = vec![TestResult {
            nodeid: "t.py::ok".into(),
            worker: 0,
            reports: vec![report("call", "passed", "passed", "")],
        }];
        assert_eq!(failures_text(&results, &[], 80), "");
    }
}
