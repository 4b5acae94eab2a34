//! The lines printed while the run goes on, as pure functions: a test's line as its report
//! comes in, a lost test's error, a worker's output, a replaced worker, tests run again.

use crate::run::protocol::Report;

/// The line shown as a test's report comes in: with `-v` one per report pytest names
/// (`PASSED tests/x.py::t [gw1]`); otherwise failures only, in their short form.
pub(crate) fn live_line(
    nodeid: &str,
    report: &Report,
    worker: &str,
    verbose: i64,
) -> Option<String> {
    if verbose >= 1 {
        if report.word.is_empty() {
            return None;
        }
        return Some(format!("{} {nodeid} [{worker}]", report.word));
    }
    if !report.outcome.is_failed() || verbose < -1 {
        return None;
    }
    // Its first line: pytest does not shorten the message when $CI is set.
    let line = report
        .summary_line
        .as_deref()
        .and_then(|l| l.lines().next())
        .map(str::to_string);
    let line = line.unwrap_or_else(|| {
        let word = if report.category == "error" {
            "ERROR"
        } else {
            "FAILED"
        };
        format!("{word} {nodeid}")
    });
    Some(format!("{line} [{worker}]"))
}

/// The line a test gets when its worker dies under it, whatever the verbosity.
pub(crate) fn lost_line(nodeid: &str, report: &Report, worker: &str) -> String {
    format!(
        "{} [{worker}]",
        report.summary_line.as_deref().unwrap_or(nodeid)
    )
}

/// One line a worker printed (`-s`, live logs), tagged with its name.
pub(crate) fn output_line(worker: &str, line: &str) -> String {
    format!("[{worker}] {line}")
}

pub(crate) fn run_again_line(worker: &str, count: usize) -> String {
    format!(
        "testmon-run: {count} test(s) reported by worker {worker} run again: their records were lost with it"
    )
}

pub(crate) fn replaced_line(worker: &str, restarts: u32, max: u32) -> String {
    format!("testmon-run: replacing worker {worker} ({restarts} of at most {max} restarts)")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::run::crash_report;
    use crate::run::protocol::Outcome;
    use crate::run::worker::Exit;

    #[test]
    fn live_lines_for_v_and_for_failures() {
        let mut report = crash_report::crash("t.py::x", "gw1", Exit::Signal(9), "");
        report.summary_line = Some("FAILED t.py::x - assert 4 == 5\n +  where 4 = f()".into());
        assert_eq!(
            live_line("t.py::x", &report, "gw1", 0).as_deref(),
            Some("FAILED t.py::x - assert 4 == 5 [gw1]")
        );
        assert_eq!(live_line("t.py::x", &report, "gw1", -2), None);
        assert_eq!(
            live_line("t.py::x", &report, "gw1", 1).as_deref(),
            Some("ERROR t.py::x [gw1]")
        );
        report.outcome = Outcome::Passed;
        report.word = String::new();
        assert_eq!(live_line("t.py::x", &report, "gw1", 0), None);
        assert_eq!(live_line("t.py::x", &report, "gw1", 1), None);
    }

    #[test]
    fn a_lost_test_is_shown_by_its_summary_line_at_any_verbosity() {
        let report = crash_report::crash("t.py::x", "gw1", Exit::Signal(9), "");
        assert_eq!(
            lost_line("t.py::x", &report, "gw1"),
            "ERROR t.py::x - worker 'gw1' crashed while running 't.py::x' (killed by SIGKILL) [gw1]"
        );
        assert_eq!(output_line("gw0", "hello"), "[gw0] hello");
        assert_eq!(
            replaced_line("gw1", 2, 8),
            "testmon-run: replacing worker gw1 (2 of at most 8 restarts)"
        );
        assert_eq!(
            run_again_line("gw1", 3),
            "testmon-run: 3 test(s) reported by worker gw1 run again: their records were lost with it"
        );
    }
}
