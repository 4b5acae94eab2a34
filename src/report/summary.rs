//! pytest's final line: `==== 1 failed, 41 passed, 120 deselected in 3.02s ====`.

use crate::protocol::CollectError;
use crate::supervisor::TestResult;

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
pub struct Stats {
    pub counts: Vec<(String, usize)>,
}

impl Stats {
    pub fn get(&self, key: &str) -> usize {
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

    fn ordered(&self) -> Vec<(&str, usize)> {
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

pub fn stats(
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
pub fn format_duration(seconds: f64) -> String {
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
pub fn sep(ch: char, title: &str, width: usize) -> String {
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
/// `-q`, none with `-qq`.
pub fn summary_line_for(stats: &Stats, seconds: f64, width: usize, verbose: i64) -> String {
    match verbose {
        v if v < -1 => String::new(),
        -1 => {
            let line = summary_line(stats, seconds, 0);
            let body = line.trim_end().trim_matches('=').trim();
            format!("{body}\n")
        }
        _ => summary_line(stats, seconds, width),
    }
}

/// The final line between `=` signs, exactly in pytest's form.
pub fn summary_line(stats: &Stats, seconds: f64, width: usize) -> String {
    let parts: Vec<String> = stats
        .ordered()
        .into_iter()
        .map(|(k, n)| pluralize(n, k))
        .collect();
    let body = if parts.is_empty() {
        "no tests ran".to_string()
    } else {
        parts.join(", ")
    };
    sep(
        '=',
        &format!("{body} in {}", format_duration(seconds)),
        width,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::Report;

    fn result(categories: &[&str]) -> TestResult {
        let reports = categories
            .iter()
            .map(|c| Report {
                when: "call".into(),
                outcome: "passed".into(),
                category: c.to_string(),
                letter: String::new(),
                word: String::new(),
                duration: 0.0,
                head_line: "t".into(),
                text: None,
                message: None,
                summary_line: None,
                short: Vec::new(),
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
            summary_line(&stats, 3.0234, 80),
            "== 1 failed, 2 passed, 1 skipped, 120 deselected, 1 xfailed, 1 error in 3.02s ==\n"
        );
    }

    #[test]
    fn plurals_and_empty_runs() {
        let two_errors = stats(&[result(&["error"]), result(&["error"])], &[], 0, 0);
        assert_eq!(
            summary_line(&two_errors, 0.5, 40),
            "========== 2 errors in 0.50s ===========\n"
        );
        assert_eq!(
            summary_line(&Stats::default(), 0.01, 40),
            "======== no tests ran in 0.01s =========\n"
        );
        assert_eq!(
            summary_line(&stats(&[], &[], 53, 0), 0.12, 40),
            "======== 53 deselected in 0.12s ========\n"
        );
        assert_eq!(format_duration(75.5), "75.50s (0:01:15)");
    }

    #[test]
    fn quiet_forms_and_warnings() {
        let stats = stats(&[result(&["", "passed", ""])], &[], 2, 3);
        assert_eq!(
            summary_line_for(&stats, 0.5, 60, 0),
            "======= 1 passed, 2 deselected, 3 warnings in 0.50s ========\n"
        );
        assert_eq!(
            summary_line_for(&stats, 0.5, 60, -1),
            "1 passed, 2 deselected, 3 warnings in 0.50s\n"
        );
        assert_eq!(summary_line_for(&stats, 0.5, 60, -2), "");
    }
}
