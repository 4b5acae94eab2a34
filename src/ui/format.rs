//! The texts of the progress display, as pure functions of the run's numbers.
//!
//! Widths are counted conservatively: an ASCII character is one column, any other character
//! two (no character is wider), so a line that fits by this count fits the terminal, and
//! indicatif never has to wrap a bar line (a wrapped line leaves residue when redrawn).

use std::time::Duration;

/// The longest ETA shown: 99h59m59s.
const MAX_ETA: f64 = (100 * 3600 - 1) as f64;

/// The widest the graphical part of the bar gets, and the narrowest worth showing.
const BAR_MAX: usize = 30;
const BAR_MIN: usize = 5;

/// Time left, from testmon's recorded costs (not from the count of tests): once some cost
/// is done, the remaining cost at the rate seen so far (`remaining * elapsed / done`);
/// before that, the remaining cost spread over the workers. None when the total cost is
/// unknown (0, negative or not a number). Clamped to 0..=99h59m59s.
pub(crate) fn eta(
    elapsed: Duration,
    done_cost: f64,
    total_cost: f64,
    workers: usize,
) -> Option<Duration> {
    if !(total_cost.is_finite() && total_cost > 0.0) {
        return None;
    }
    let done = if done_cost.is_finite() {
        done_cost.clamp(0.0, total_cost)
    } else {
        0.0
    };
    let remaining = total_cost - done;
    let seconds = if done > 0.0 {
        remaining * elapsed.as_secs_f64() / done
    } else {
        remaining / workers.max(1) as f64
    };
    let seconds = if seconds.is_finite() {
        seconds.clamp(0.0, MAX_ETA)
    } else {
        MAX_ETA
    };
    Some(Duration::from_secs_f64(seconds))
}

/// `3.1s`, `1m05s`, `2h03m`: tenths of a second below a minute.
pub(crate) fn elapsed_text(elapsed: Duration) -> String {
    let tenths = (elapsed.as_secs_f64() * 10.0).round() as u64;
    if tenths < 600 {
        format!("{}.{}s", tenths / 10, tenths % 10)
    } else {
        minutes_text(tenths / 10)
    }
}

/// `4s`, `1m05s`, `2h03m`: whole seconds (rounded) below a minute.
pub(crate) fn eta_text(eta: Duration) -> String {
    let seconds = eta.as_secs_f64().round() as u64;
    if seconds < 60 {
        format!("{seconds}s")
    } else {
        minutes_text(seconds)
    }
}

fn minutes_text(seconds: u64) -> String {
    if seconds < 3600 {
        format!("{}m{:02}s", seconds / 60, seconds % 60)
    } else {
        format!("{}h{:02}m", seconds / 3600, seconds % 3600 / 60)
    }
}

/// The run's status in one line: `[12/53] 2 failed, 3.1s elapsed, ETA 4s` (`, ETA …` left
/// out when unknown). The bar shows it as is; plain mode prefixes `testmon-run: `.
pub(crate) fn status_line(
    done: usize,
    total: usize,
    failed: usize,
    elapsed: Duration,
    eta: Option<Duration>,
) -> String {
    let mut line = format!(
        "[{done}/{total}] {failed} failed, {} elapsed",
        elapsed_text(elapsed)
    );
    if let Some(eta) = eta {
        line.push_str(", ETA ");
        line.push_str(&eta_text(eta));
    }
    line
}

/// Plain mode's periodic line: `testmon-run: [12/53] 2 failed, 3.1s elapsed, ETA 4s`.
pub(crate) fn plain_status_line(
    done: usize,
    total: usize,
    failed: usize,
    elapsed: Duration,
    eta: Option<Duration>,
) -> String {
    format!(
        "testmon-run: {}",
        status_line(done, total, failed, elapsed, eta)
    )
}

/// The bar's main line: the status line, then a bar `[=====>    ]` (filled by the count of
/// tests done) when there are at least 5 columns for it; never wider than `width`.
pub(crate) fn bar_line(
    done: usize,
    total: usize,
    failed: usize,
    elapsed: Duration,
    eta: Option<Duration>,
    width: usize,
) -> String {
    let status = status_line(done, total, failed, elapsed, eta);
    let used = text_width(&status);
    // " [" + bar + "]"
    let room = width.saturating_sub(used + 3).min(BAR_MAX);
    if used > width || room < BAR_MIN {
        return fit_start(&status, width);
    }
    let filled = (done.min(total) * room).checked_div(total).unwrap_or(0);
    let mut bar = String::with_capacity(room);
    for i in 0..room {
        bar.push(if i < filled {
            '='
        } else if i == filled && done > 0 {
            '>'
        } else {
            ' '
        });
    }
    format!("{status} [{bar}]")
}

/// A worker's line: `gw0 tests/test_x.py::test_y`, or `gw1 idle`; a node id too long for
/// `width` keeps its end, after an ellipsis: `gw0 …t_x.py::test_y`.
pub(crate) fn worker_line(name: &str, current: Option<&str>, width: usize) -> String {
    let Some(nodeid) = current else {
        return fit_start(&format!("{name} idle"), width);
    };
    let head = format!("{name} ");
    let nodeid = sanitize(nodeid);
    let line = format!("{head}{nodeid}");
    if text_width(&line) <= width {
        return line;
    }
    let room = width.saturating_sub(text_width(&head) + char_width('…'));
    if room == 0 {
        return fit_start(&line, width);
    }
    format!("{head}…{}", keep_end(&nodeid, room))
}

/// The line under the worker lines when there are more workers than room:
/// `+12 more workers, 9 busy`.
pub(crate) fn more_workers_line(hidden: usize, busy: usize, width: usize) -> String {
    fit_start(
        &format!(
            "+{hidden} more worker{}, {busy} busy",
            if hidden == 1 { "" } else { "s" }
        ),
        width,
    )
}

/// Columns `text` takes by the conservative count (ASCII 1, anything else 2).
pub(crate) fn text_width(text: &str) -> usize {
    text.chars().map(char_width).sum()
}

fn char_width(c: char) -> usize {
    if c.is_ascii() {
        1
    } else {
        2
    }
}

/// Control characters (tabs, escapes, newlines) would move the cursor: shown as `?`.
fn sanitize(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

/// The start of `text` that fits `width`, control characters replaced.
pub(crate) fn fit_start(text: &str, width: usize) -> String {
    let mut out = String::new();
    let mut used = 0;
    for c in sanitize(text).chars() {
        used += char_width(c);
        if used > width {
            break;
        }
        out.push(c);
    }
    out
}

/// The end of `text` that fits `width`.
fn keep_end(text: &str, width: usize) -> String {
    let mut kept: Vec<char> = Vec::new();
    let mut used = 0;
    for c in text.chars().rev() {
        used += char_width(c);
        if used > width {
            break;
        }
        kept.push(c);
    }
    kept.iter().rev().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: f64) -> Duration {
        Duration::from_secs_f64(s)
    }

    #[test]
    fn eta_uses_costs_not_counts() {
        // Half the cost done in 10 s: 10 s more, whatever the number of tests.
        assert_eq!(eta(secs(10.0), 50.0, 100.0, 4), Some(secs(10.0)));
        // A quarter done in 5 s: 15 s more.
        assert_eq!(eta(secs(5.0), 25.0, 100.0, 4), Some(secs(15.0)));
    }

    #[test]
    fn eta_before_anything_is_done_spreads_over_workers() {
        assert_eq!(eta(secs(3.0), 0.0, 100.0, 4), Some(secs(25.0)));
        assert_eq!(eta(secs(3.0), 0.0, 100.0, 0), Some(secs(100.0)));
    }

    #[test]
    fn eta_unknown_without_costs() {
        assert_eq!(eta(secs(3.0), 0.0, 0.0, 4), None);
        assert_eq!(eta(secs(3.0), 1.0, -1.0, 4), None);
        assert_eq!(eta(secs(3.0), 1.0, f64::NAN, 4), None);
        assert_eq!(eta(secs(3.0), 1.0, f64::INFINITY, 4), None);
    }

    #[test]
    fn eta_is_clamped() {
        // All done, or more than all (costs of reruns): nothing left.
        assert_eq!(eta(secs(3.0), 100.0, 100.0, 4), Some(Duration::ZERO));
        assert_eq!(eta(secs(3.0), 150.0, 100.0, 4), Some(Duration::ZERO));
        // A sliver done after a long time: at most 99h59m59s.
        assert_eq!(
            eta(secs(1000.0), 1e-9, 100.0, 4),
            Some(Duration::from_secs(359_999))
        );
        assert_eq!(eta(secs(3.0), f64::NAN, 100.0, 4), Some(secs(25.0)));
        assert_eq!(eta(Duration::ZERO, 10.0, 100.0, 4), Some(Duration::ZERO));
    }

    #[test]
    fn durations() {
        assert_eq!(elapsed_text(secs(0.0)), "0.0s");
        assert_eq!(elapsed_text(secs(3.12)), "3.1s");
        assert_eq!(elapsed_text(secs(59.94)), "59.9s");
        assert_eq!(elapsed_text(secs(59.96)), "1m00s");
        assert_eq!(elapsed_text(secs(65.0)), "1m05s");
        assert_eq!(elapsed_text(secs(7384.0)), "2h03m");
        assert_eq!(eta_text(secs(0.4)), "0s");
        assert_eq!(eta_text(secs(4.4)), "4s");
        assert_eq!(eta_text(secs(59.6)), "1m00s");
        assert_eq!(eta_text(secs(125.0)), "2m05s");
        assert_eq!(eta_text(secs(359_999.0)), "99h59m");
    }

    #[test]
    fn status_lines() {
        assert_eq!(
            status_line(12, 53, 2, secs(3.1), Some(secs(4.2))),
            "[12/53] 2 failed, 3.1s elapsed, ETA 4s"
        );
        assert_eq!(
            status_line(0, 7, 0, secs(0.0), None),
            "[0/7] 0 failed, 0.0s elapsed"
        );
        assert_eq!(
            plain_status_line(12, 53, 2, secs(3.1), Some(secs(64.0))),
            "testmon-run: [12/53] 2 failed, 3.1s elapsed, ETA 1m04s"
        );
    }

    #[test]
    fn bar_lines() {
        let eta = Some(secs(4.0));
        assert_eq!(
            bar_line(12, 53, 2, secs(3.1), eta, 80),
            "[12/53] 2 failed, 3.1s elapsed, ETA 4s [======>                       ]"
        );
        assert_eq!(
            bar_line(0, 10, 0, secs(0.0), None, 40),
            "[0/10] 0 failed, 0.0s elapsed [        ]"
        );
        assert_eq!(
            bar_line(10, 10, 0, secs(1.0), eta, 48),
            "[10/10] 0 failed, 1.0s elapsed, ETA 4s [=======]"
        );
        // No room for a bar of 5: the status alone, cut at the width.
        assert_eq!(
            bar_line(12, 53, 2, secs(3.1), eta, 42),
            "[12/53] 2 failed, 3.1s elapsed, ETA 4s"
        );
        assert_eq!(
            bar_line(12, 53, 2, secs(3.1), eta, 20),
            "[12/53] 2 failed, 3."
        );
        for width in 0..100 {
            let line = bar_line(5, 9, 1, secs(3.1), eta, width);
            assert!(text_width(&line) <= width, "{width}: {line}");
        }
    }

    #[test]
    fn worker_lines() {
        assert_eq!(worker_line("gw1", None, 80), "gw1 idle");
        assert_eq!(
            worker_line("gw0", Some("tests/test_x.py::test_y"), 80),
            "gw0 tests/test_x.py::test_y"
        );
        assert_eq!(
            worker_line("gw0", Some("tests/test_x.py::test_y"), 27),
            "gw0 tests/test_x.py::test_y"
        );
        // The ellipsis counts two columns (conservatively).
        assert_eq!(
            worker_line("gw0", Some("tests/test_x.py::test_y"), 20),
            "gw0 …t_x.py::test_y"
        );
        assert_eq!(
            worker_line("gw0", Some("t.py::test[\u{e9}t\u{e9}]"), 12),
            "gw0 …\u{e9}t\u{e9}]"
        );
        assert_eq!(
            worker_line("gw0", Some("t.py::test[a\tb\x1b]"), 80),
            "gw0 t.py::test[a?b?]"
        );
        assert_eq!(worker_line("gw10", Some("tests/a.py::b"), 6), "gw10 t");
        assert_eq!(worker_line("gw1", None, 5), "gw1 i");
        for width in 0..40 {
            let line = worker_line(
                "gw3",
                Some("tests/test_\u{e9}t\u{e9}.py::test_long[1-2]"),
                width,
            );
            assert!(text_width(&line) <= width, "{width}: {line}");
        }
    }

    #[test]
    fn more_workers() {
        assert_eq!(more_workers_line(12, 9, 80), "+12 more workers, 9 busy");
        assert_eq!(more_workers_line(1, 0, 80), "+1 more worker, 0 busy");
        assert_eq!(more_workers_line(12, 9, 10), "+12 more w");
    }
}
