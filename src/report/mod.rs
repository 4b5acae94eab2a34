//! What the user reads at the end of a run, as pure functions of the results: pytest's
//! ERRORS and FAILURES sections, warnings summary, durations, short test summary and its
//! final summary line, in pytest's order.

pub(crate) mod header;
pub(crate) mod live;

mod summary;
mod tables;

pub(crate) use summary::{sep, stats, summary_line_for};
pub(crate) use tables::{durations_text, warnings_text};

use crate::run::outcome::{RunOutcome, Section, TestResult};
use crate::run::protocol::{CollectError, Report};

/// pytest's options that shape the end-of-run report.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Style {
    pub(crate) width: usize,
    pub(crate) verbose: i64,
    /// `-r` characters, as pytest resolved them (default "fE" plus "w").
    pub(crate) reportchars: String,
    pub(crate) tbstyle: String,
    pub(crate) durations: Option<u64>,
    pub(crate) durations_min: Option<f64>,
    /// pytest's colours for the final line.
    pub(crate) color: bool,
}

impl Default for Style {
    fn default() -> Style {
        Style {
            width: 80,
            verbose: 0,
            reportchars: "wfE".into(),
            tbstyle: "auto".into(),
            durations: None,
            durations_min: None,
            color: false,
        }
    }
}

/// The ERRORS and FAILURES sections (none with `--tb=no`), as pytest prints them.
pub(crate) fn sections_text(
    results: &[TestResult],
    collect_errors: &[CollectError],
    style: &Style,
) -> String {
    let width = style.width;
    let mut out = String::new();
    if style.tbstyle == "no" {
        return out;
    }
    let errors = reports_in(results, "error");
    let failures = reports_in(results, "failed");
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
            if style.tbstyle != "line" {
                out.push_str(&sep('_', &title, width));
            }
            push_text(&mut out, rep.text.as_deref().unwrap_or(""));
        }
    }
    if !failures.is_empty() {
        out.push_str(&sep('=', "FAILURES", width));
        for (_, rep) in &failures {
            if style.tbstyle != "line" {
                out.push_str(&sep('_', &rep.head_line, width));
            }
            push_text(&mut out, rep.text.as_deref().unwrap_or(""));
        }
    }
    out
}

/// pytest's XFAILURES, PASSES and XPASSES sections (`--xfail-tb`, `-rP`, `-rX`) with these
/// `titles`, in that order; each test's part was made by pytest in its worker.
pub(crate) fn extra_sections(sections: &[Section], titles: &[&str], width: usize) -> String {
    let mut out = String::new();
    for &title in titles {
        let parts: Vec<&String> = sections
            .iter()
            .filter(|s| s.title == title)
            .map(|s| &s.text)
            .collect();
        if parts.is_empty() {
            continue;
        }
        out.push_str(&sep('=', title, width));
        for body in parts {
            out.push_str(body);
        }
    }
    out
}

/// pytest's "short test summary info": for each `-r` character, the lines of its reports
/// (the workers produced each line with pytest's own code), skips folded by location.
pub(crate) fn short_summary(
    results: &[TestResult],
    collect_errors: &[CollectError],
    style: &Style,
) -> String {
    let mut lines: Vec<String> = Vec::new();
    for char in style.reportchars.chars() {
        let category = match char {
            'f' => "failed",
            'E' => "error",
            's' => "skipped",
            'x' => "xfailed",
            'X' => "xpassed",
            'p' => "passed",
            _ => continue,
        };
        if char == 'E' {
            for error in collect_errors {
                lines.push(collect_error_line(error));
            }
        }
        let mut of_char: Vec<String> = Vec::new();
        for (nodeid, rep) in reports_in(results, category) {
            if rep.short.is_empty() {
                if let Some(line) = fallback_line(nodeid, rep) {
                    of_char.push(line);
                }
            } else {
                of_char.extend(rep.short.iter().cloned());
            }
        }
        if char == 's' {
            of_char = fold_skips(&of_char);
        }
        lines.extend(of_char);
    }
    if lines.is_empty() {
        return String::new();
    }
    let mut out = sep('=', "short test summary info", style.width);
    for line in lines {
        out.push_str(&line);
        out.push('\n');
    }
    out
}

/// For reports without pytest's own line (a crashed worker's): failures and errors only.
fn fallback_line(nodeid: &str, rep: &Report) -> Option<String> {
    let word = match rep.category.as_str() {
        "failed" => "FAILED",
        "error" => "ERROR",
        _ => return None,
    };
    Some(match &rep.summary_line {
        Some(line) => line.clone(),
        None => match rep.message.as_deref().and_then(|m| m.lines().next()) {
            Some(msg) => format!("{word} {nodeid} - {msg}"),
            None => format!("{word} {nodeid}"),
        },
    })
}

fn collect_error_line(error: &CollectError) -> String {
    match error.message.lines().next() {
        Some(msg) if !msg.is_empty() => format!("ERROR {} - {msg}", error.nodeid),
        _ => format!("ERROR {}", error.nodeid),
    }
}

/// `SKIPPED [1] t.py:3: why` lines from several workers, counted as pytest folds them.
pub(crate) fn fold_skips(lines: &[String]) -> Vec<String> {
    let mut folded: Vec<(String, u64, String)> = Vec::new();
    for line in lines {
        let parsed = line.split_once(" [").and_then(|(word, rest)| {
            let (count, place) = rest.split_once("] ")?;
            Some((
                word.to_string(),
                count.parse::<u64>().ok()?,
                place.to_string(),
            ))
        });
        let Some((word, count, place)) = parsed else {
            folded.push((line.clone(), 0, String::new()));
            continue;
        };
        match folded
            .iter_mut()
            .find(|(w, n, p)| *n > 0 && *w == word && *p == place)
        {
            Some(entry) => entry.1 += count,
            None => folded.push((word, count, place)),
        }
    }
    folded
        .into_iter()
        .map(|(word, count, place)| {
            if count == 0 {
                word
            } else {
                format!("{word} [{count}] {place}")
            }
        })
        .collect()
}

fn reports_in<'a>(results: &'a [TestResult], category: &str) -> Vec<(&'a str, &'a Report)> {
    results
        .iter()
        .flat_map(|r| r.reports.iter().map(move |rep| (r.nodeid.as_str(), rep)))
        .filter(|(_, rep)| rep.category == category)
        .collect()
}

/// Everything after the run, in pytest's order: ERRORS, FAILURES, warnings summary,
/// durations, short test summary, our own problems, "stopping after", the final line.
pub(crate) fn run_report(outcome: &RunOutcome, style: &Style, seconds: f64) -> String {
    let width = style.width;
    let mut out = String::new();
    for warning in &outcome.warnings {
        out.push_str(&format!("testmon-run: warning: {warning}\n"));
    }
    out.push_str(&sections_text(
        &outcome.results,
        &outcome.collect_errors,
        style,
    ));
    out.push_str(&extra_sections(&outcome.sections, &["XFAILURES"], width));
    if style.reportchars.contains('w') {
        out.push_str(&warnings_text(&outcome.pytest_warnings, width));
    }
    out.push_str(&extra_sections(
        &outcome.sections,
        &["PASSES", "XPASSES"],
        width,
    ));
    out.push_str(&durations_text(
        &outcome.results,
        style.durations,
        style.durations_min,
        style.verbose,
        width,
    ));
    out.push_str(&outcome.plugins_text);
    out.push_str(&short_summary(
        &outcome.results,
        &outcome.collect_errors,
        style,
    ));
    out.push_str(&own_lines(outcome));
    out.push_str(&stop_lines(outcome, width));
    let stats = stats(
        &outcome.results,
        &outcome.collect_errors,
        outcome.deselected,
        outcome.pytest_warnings.len(),
    );
    out.push_str(&summary_line_for(
        &stats,
        seconds,
        width,
        style.verbose,
        style.color,
    ));
    out
}

/// testmon-run's own lines after pytest's sections: lost workers, problems, tests not run.
fn own_lines(outcome: &RunOutcome) -> String {
    let mut out = String::new();
    for crash in &outcome.crashes {
        out.push_str(&format!("testmon-run: {crash}\n"));
    }
    for problem in &outcome.problems {
        out.push_str(&format!("testmon-run: error: {problem}\n"));
    }
    if !outcome.not_run.is_empty() {
        out.push_str(&format!(
            "testmon-run: {} tests were not run:\n",
            outcome.not_run.len()
        ));
        for nodeid in outcome.not_run.iter().take(20) {
            out.push_str(&format!("  {nodeid}\n"));
        }
    }
    out
}

/// How the run stopped early, in pytest's words: `-x`, the interrupt, collection errors.
fn stop_lines(outcome: &RunOutcome, width: usize) -> String {
    let mut out = String::new();
    if let Some(n) = outcome.stopped_after {
        // pytest's own wording, plural included.
        out.push_str(&sep('!', &format!("stopping after {n} failures"), width));
    }
    for cut in &outcome.cut_short {
        out.push_str(&format!(
            "testmon-run: interrupted while running {} [{}]\n",
            cut.nodeid, cut.worker
        ));
    }
    if outcome.interrupted {
        out.push_str(&sep('!', "KeyboardInterrupt", width));
    } else if !outcome.collect_errors.is_empty()
        && outcome.exitstatus.iter().flatten().any(|&s| s == 2)
    {
        let n = outcome.collect_errors.len();
        out.push_str(&sep(
            '!',
            &format!(
                "Interrupted: {n} error{} during collection",
                if n == 1 { "" } else { "s" }
            ),
            width,
        ));
    }
    out
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

    /// ERRORS and FAILURES, then the short test summary.
    fn failures_text(
        results: &[TestResult],
        collect_errors: &[CollectError],
        width: usize,
    ) -> String {
        let style = Style {
            width,
            ..Style::default()
        };
        let mut out = sections_text(results, collect_errors, &style);
        out.push_str(&short_summary(results, collect_errors, &style));
        out
    }

    fn report(when: &str, outcome: &str, category: &str, text: &str) -> Report {
        Report {
            when: when.into(),
            outcome: outcome.into(),
            category: category.into(),
            duration: 0.1,
            head_line: "test_x".into(),
            text: Some(text.into()),
            message: Some("AssertionError: boom".into()),
            ..Report::default()
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

    #[test]
    fn report_chars_pick_and_order_the_short_summary() {
        let mut skipped = report("setup", "skipped", "skipped", "");
        skipped.short = vec!["SKIPPED [1] t.py:3: no db".into()];
        let mut passed = report("call", "passed", "passed", "");
        passed.short = vec!["PASSED t.py::p".into()];
        let mut failed = report("call", "failed", "failed", "E boom");
        failed.short = vec!["FAILED t.py::f - boom".into()];
        let results: Vec<TestResult> = [
            ("t.py::s1", skipped.clone()),
            ("t.py::p", passed),
            ("t.py::s2", skipped),
            ("t.py::f", failed),
        ]
        .into_iter()
        .map(|(nodeid, rep)| TestResult {
            nodeid: nodeid.into(),
            worker: 0,
            reports: vec![rep],
        })
        .collect();
        let style = |chars: &str| Style {
            width: 40,
            reportchars: chars.into(),
            ..Style::default()
        };
        assert_eq!(
            short_summary(&results, &[], &style("sfp")),
            "======= short test summary info ========\n\
             SKIPPED [2] t.py:3: no db\n\
             FAILED t.py::f - boom\n\
             PASSED t.py::p\n"
        );
        assert_eq!(short_summary(&results, &[], &style("")), "");
        assert_eq!(
            short_summary(&results, &[], &style("wfE")),
            "======= short test summary info ========\nFAILED t.py::f - boom\n"
        );
        let no_tb = Style {
            tbstyle: "no".into(),
            ..style("fE")
        };
        assert_eq!(sections_text(&results, &[], &no_tb), "");
        assert!(sections_text(&results, &[], &style("fE")).contains("E boom"));
    }

    #[test]
    fn extra_sections_gather_every_tests_part_under_one_title() {
        let sections: Vec<Section> = [
            ("PASSES", "___ a ___\nout a\n"),
            ("XPASSES", ""),
            ("PASSES", ""),
            ("PASSES", "___ b ___\nout b\n"),
        ]
        .map(|(t, b)| Section {
            nodeid: "t.py::x".to_string(),
            title: t.to_string(),
            text: b.to_string(),
        })
        .to_vec();
        assert_eq!(
            extra_sections(&sections, &["XFAILURES", "PASSES", "XPASSES"], 20),
            "====== PASSES ======\n___ a ___\nout a\n___ b ___\nout b\n\
             ===== XPASSES ======\n"
        );
        assert_eq!(extra_sections(&sections, &["XFAILURES"], 20), "");
    }

    #[test]
    fn skips_fold_across_workers() {
        let lines: Vec<String> = [
            "SKIPPED [2] a.py:1: x",
            "SKIPPED [1] b.py: y",
            "SKIPPED [3] a.py:1: x",
            "odd line",
        ]
        .map(String::from)
        .to_vec();
        assert_eq!(
            fold_skips(&lines),
            ["SKIPPED [5] a.py:1: x", "SKIPPED [1] b.py: y", "odd line"]
        );
    }
}
