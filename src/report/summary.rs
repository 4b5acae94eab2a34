//! pytest's final line: `==== 1 failed, 41 passed, 120 deselected in 3.02s ====`.

use crate::run::outcome::TestResult;
use crate::run::protocol::CollectError;

/// pytest's KNOWN_TYPES: the order of the summary line.
const KNOWN_TYPES: [&str; 11] = [
    "failed",
    "passed",
    "skipped",
    "deselected",
    "xfailed",
    "xpassed",
    "warnings",
    "error",
    "subtests passed",
    "subtests failed",
    "subtests skipped",
];

/// Counts by pytest category, in the summary line's order (unknown categories last, in the
/// order first seen).
#[derive(Debug, Default, Clone, PartialEq)]
pub(crate) struct Stats {
    pub(crate) counts: Vec<(String, usize)>,
}

impl Stats {
    pub(crate) fn get(&self, key: &str) -> usize {
        self.counts
            .iter()
            .find(|(k, _)| k == key)
            .map_or(0, |(_, n)| *n)
    }

    fn add(&mut self, key: &str, n: usize) {
        if n == 0 || key.is_empty() {
            return;
        }
        match self.counts.iter_mut().find(|(k, _)| k == key) {
            Some((_, count)) => *count += n,
            None => self.counts.push((key.to_string(), n)),
        }
    }

    /// The counts in the final line's order.
    pub(crate) fn ordered(&self) -> Vec<(&str, usize)> {
        let known = KNOWN_TYPES
            .iter()
            .filter_map(|k| self.counts.iter().find(|(c, _)| c == k));
        let unknown = self
            .counts
            .iter()
            .filter(|(c, _)| !KNOWN_TYPES.contains(&c.as_str()));
        known
            .chain(unknown)
            .map(|(k, n)| (k.as_str(), *n))
            .collect()
    }
}

pub(crate) fn stats(
    results: &[TestResult],
    collect_errors: &[CollectError],
    deselected: u64,
    warnings: usize,
) -> Stats {
    let mut stats = Stats::default();
    for report in results.iter().flat_map(|r| &r.reports) {
        stats.add(&report.category, 1);
    }
    stats.add("deselected", deselected as usize);
    stats.add("warnings", warnings);
    stats.add("error", collect_errors.len());
    stats
}

fn pluralize(count: usize, noun: &str) -> String {
    match noun {
        "error" | "warnings" | "test" => {
            let singular = noun.replace("warnings", "warning");
            if count == 1 {
                format!("{count} {singular}")
            } else {
                format!("{count} {singular}s")
            }
        }
        _ => format!("{count} {noun}"),
    }
}

/// pytest's `format_session_duration`.
pub(crate) fn format_duration(seconds: f64) -> String {
    if seconds < 60.0 {
        format!("{seconds:.2}s")
    } else {
        let whole = seconds as u64;
        format!(
            "{seconds:.2}s ({}:{:02}:{:02})",
            whole / 3600,
            whole / 60 % 60,
            whole % 60
        )
    }
}

/// pytest's TerminalWriter.sep: `==== title ====` as wide as fits in `width`.
pub(crate) fn sep(ch: char, title: &str, width: usize) -> String {
    let title_len = title.chars().count();
    let n = (width.saturating_sub(title_len + 2) / 2).max(1);
    let fill: String = std::iter::repeat_n(ch, n).collect();
    let mut line = format!("{fill} {title} {fill}");
    if line.chars().count() < width {
        line.push(ch);
    }
    line.push('\n');
    line
}

/// The final line, exactly in pytest's form: between `=` at verbosity 0 and up, bare with
/// `-q`, none with `-qq`; in pytest's colours when `color`.
pub(crate) fn summary_line_for(
    stats: &Stats,
    seconds: f64,
    width: usize,
    verbose: i64,
    color: bool,
) -> String {
    if verbose < -1 {
        return String::new();
    }
    let plain_body = body(stats, seconds, false);
    let line = if verbose == -1 {
        format!("{plain_body}\n")
    } else {
        sep('=', &plain_body, width)
    };
    if !color {
        return line;
    }
    // pytest pads as if uncoloured, then colours the parts and wraps the line in the main
    // colour, the end-of-separator code included.
    let main = esc(main_color(stats));
    let mut coloured = body(stats, seconds, true);
    if verbose >= 0 {
        coloured.push_str(main);
    }
    let line = line
        .trim_end_matches('\n')
        .replacen(&plain_body, &coloured, 1);
    format!("{main}{line}\x1b[0m\n")
}

const RED: &str = "\x1b[31m";
const GREEN: &str = "\x1b[32m";
const YELLOW: &str = "\x1b[33m";
const BOLD: &str = "\x1b[1m";
const RESET: &str = "\x1b[0m";

/// pytest's _determine_main_color, at the end of the run.
fn main_color(stats: &Stats) -> &'static str {
    let has = |k: &str| stats.get(k) > 0;
    let unknown = stats
        .ordered()
        .iter()
        .any(|(k, _)| !KNOWN_TYPES.contains(k));
    if has("failed") || has("error") {
        "red"
    } else if has("warnings") || has("xpassed") || unknown {
        "yellow"
    } else if has("passed") {
        "green"
    } else {
        "yellow"
    }
}

fn esc(color: &str) -> &'static str {
    match color {
        "red" => RED,
        "green" => GREEN,
        _ => YELLOW,
    }
}

/// pytest's _color_for_type.
fn color_for(key: &str) -> &'static str {
    match key {
        "failed" | "error" => "red",
        "passed" => "green",
        _ => "yellow",
    }
}

/// `1 failed, 2 passed in 0.50s`, each part in its colour (bold in the main one) when asked.
fn body(stats: &Stats, seconds: f64, color: bool) -> String {
    let main = main_color(stats);
    let parts: Vec<String> = stats
        .ordered()
        .into_iter()
        .map(|(k, n)| {
            let text = pluralize(n, k);
            if !color {
                return text;
            }
            let c = color_for(k);
            let bold = if c == main { BOLD } else { "" };
            format!("{}{bold}{text}{RESET}", esc(c))
        })
        .collect();
    let duration = format!(" in {}", format_duration(seconds));
    match (parts.is_empty(), color) {
        (true, false) => format!("no tests ran{duration}"),
        (true, true) => format!("{YELLOW}no tests ran{RESET}{}{duration}{RESET}", esc(main)),
        (false, false) => format!("{}{duration}", parts.join(", ")),
        (false, true) => format!("{}{}{duration}{RESET}", parts.join(", "), esc(main)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::run::protocol::Report;

    fn result(categories: &[&str]) -> TestResult {
        let reports = categories
            .iter()
            .map(|c| Report {
                when: "call".into(),
                outcome: "passed".into(),
                category: c.to_string(),
                head_line: "t".into(),
                ..Report::default()
            })
            .collect();
        TestResult {
            nodeid: "t.py::t".into(),
            worker: 0,
            reports,
        }
    }

    #[test]
    fn line_matches_pytest() {
        let results = vec![
            result(&["", "passed", ""]),
            result(&["", "passed", ""]),
            result(&["", "failed", ""]),
            result(&["error", "", ""]),
            result(&["skipped", ""]),
            result(&["", "xfailed", ""]),
        ];
        let stats = stats(&results, &[], 120, 0);
        assert_eq!(
            summary_line_for(&stats, 3.0234, 80, 0, false),
            "== 1 failed, 2 passed, 1 skipped, 120 deselected, 1 xfailed, 1 error in 3.02s ==\n"
        );
    }

    #[test]
    fn plurals_and_empty_runs() {
        let two_errors = stats(&[result(&["error"]), result(&["error"])], &[], 0, 0);
        assert_eq!(
            summary_line_for(&two_errors, 0.5, 40, 0, false),
            "========== 2 errors in 0.50s ===========\n"
        );
        assert_eq!(
            summary_line_for(&Stats::default(), 0.01, 40, 0, false),
            "======== no tests ran in 0.01s =========\n"
        );
        assert_eq!(
            summary_line_for(&stats(&[], &[], 53, 0), 0.12, 40, 0, false),
            "======== 53 deselected in 0.12s ========\n"
        );
        assert_eq!(format_duration(75.5), "75.50s (0:01:15)");
    }

    #[test]
    fn coloured_as_pytest_colours_it() {
        let failing = stats(
            &[result(&["", "failed", ""]), result(&["", "passed", ""])],
            &[],
            0,
            0,
        );
        assert_eq!(
            summary_line_for(&failing, 0.5, 40, 0, true),
            // pytest 9.0.2's own line for this run, COLUMNS=40 --color=yes.
            "\x1b[31m===== \x1b[31m\x1b[1m1 failed\x1b[0m, \x1b[32m1 passed\x1b[0m\x1b[31m in 0.50s\x1b[0m\x1b[31m ======\x1b[0m\n"
        );
        assert_eq!(
            summary_line_for(&failing, 0.5, 40, -1, true),
            "\x1b[31m\x1b[31m\x1b[1m1 failed\x1b[0m, \x1b[32m1 passed\x1b[0m\x1b[31m in 0.50s\x1b[0m\x1b[0m\n"
        );
        let deselected = stats(&[], &[], 2, 0);
        assert_eq!(
            summary_line_for(&deselected, 0.01, 40, 0, true),
            "\x1b[33m======== \x1b[33m\x1b[1m2 deselected\x1b[0m\x1b[33m in 0.01s\x1b[0m\x1b[33m =========\x1b[0m\n"
        );
        let nothing = Stats::default();
        assert_eq!(
            summary_line_for(&nothing, 0.01, 40, 0, true),
            "\x1b[33m======== \x1b[33mno tests ran\x1b[0m\x1b[33m in 0.01s\x1b[0m\x1b[33m =========\x1b[0m\n"
        );
    }

    #[test]
    fn quiet_forms_and_warnings() {
        let stats = stats(&[result(&["", "passed", ""])], &[], 2, 3);
        assert_eq!(
            summary_line_for(&stats, 0.5, 60, 0, false),
            "======= 1 passed, 2 deselected, 3 warnings in 0.50s ========\n"
        );
        assert_eq!(
            summary_line_for(&stats, 0.5, 60, -1, false),
            "1 passed, 2 deselected, 3 warnings in 0.50s\n"
        );
        assert_eq!(summary_line_for(&stats, 0.5, 60, -2, false), "");
    }
}
