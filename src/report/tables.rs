//! pytest's "warnings summary" and "slowest durations" sections, over every worker's reports.

use super::sep;
use crate::run::outcome::TestResult;
use crate::run::protocol::PytestWarning;

const WARNINGS_DOCS: &str =
    "-- Docs: https://docs.pytest.org/en/stable/how-to/capture-warnings.html";

/// pytest's warnings summary: warnings grouped by message, each with its locations (by file
/// from ten on). `warnings` are (location, message) pairs, already deduplicated.
pub(crate) fn warnings_text(warnings: &[PytestWarning], width: usize) -> String {
    if warnings.is_empty() {
        return String::new();
    }
    let mut by_message: Vec<(&str, Vec<&str>)> = Vec::new();
    for PytestWarning { location, message } in warnings {
        match by_message.iter_mut().find(|(m, _)| m == message) {
            Some((_, locations)) => locations.push(location),
            None => by_message.push((message, vec![location])),
        }
    }
    let mut out = sep('=', "warnings summary", width);
    for (message, locations) in by_message {
        let locations: Vec<&str> = locations.into_iter().filter(|l| !l.is_empty()).collect();
        if locations.is_empty() {
            out.push_str(message.trim_end());
        } else {
            if locations.len() < 10 {
                out.push_str(&locations.join("\n"));
            } else {
                let mut counts: Vec<(&str, usize)> = Vec::new();
                for location in &locations {
                    let file = location.split("::").next().unwrap_or(location);
                    match counts.iter_mut().find(|(f, _)| *f == file) {
                        Some((_, n)) => *n += 1,
                        None => counts.push((file, 1)),
                    }
                }
                let lines: Vec<String> = counts
                    .iter()
                    .map(|(file, n)| {
                        format!("{file}: {n} warning{}", if *n > 1 { "s" } else { "" })
                    })
                    .collect();
                out.push_str(&lines.join("\n"));
            }
            out.push('\n');
            let indented: Vec<String> = message.lines().map(|l| format!("  {l}")).collect();
            out.push_str(indented.join("\n").trim_end());
        }
        out.push_str("\n\n");
    }
    out.push_str(WARNINGS_DOCS);
    out.push('\n');
    out
}

/// `--durations N`: the slowest setup/call/teardown phases of the whole run.
pub(crate) fn durations_text(
    results: &[TestResult],
    durations: Option<u64>,
    durations_min: Option<f64>,
    verbose: i64,
    width: usize,
) -> String {
    let Some(n) = durations else {
        return String::new();
    };
    let min = durations_min.unwrap_or(if verbose < 2 { 0.005 } else { 0.0 });
    let mut phases: Vec<(f64, &str, &str)> = results
        .iter()
        .flat_map(|r| {
            r.reports
                .iter()
                .map(move |rep| (rep.duration, rep.when.as_str(), r.nodeid.as_str()))
        })
        .collect();
    if phases.is_empty() {
        return String::new();
    }
    phases.sort_by(|a, b| b.0.total_cmp(&a.0));
    let mut out = if n == 0 {
        sep('=', "slowest durations", width)
    } else {
        phases.truncate(n as usize);
        sep('=', &format!("slowest {n} durations"), width)
    };
    let total = phases.len();
    for (i, (duration, when, nodeid)) in phases.iter().enumerate() {
        if *duration < min {
            out.push('\n');
            let mut message = format!("({} durations < {}s hidden.", total - i, python_g(min));
            if durations_min.is_none() {
                message.push_str("  Use -vv to show these durations.");
            }
            message.push_str(")\n");
            out.push_str(&message);
            break;
        }
        out.push_str(&format!("{duration:.2}s {when:<8} {nodeid}\n"));
    }
    out
}

/// Python's `{:g}` for the small thresholds pytest prints (0.005, 0, 1).
fn python_g(value: f64) -> String {
    let text = format!("{value}");
    text.strip_suffix(".0").map(str::to_string).unwrap_or(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::run::protocol::Report;
    use crate::run::protocol::When;

    fn result(nodeid: &str, phases: &[(&str, f64)]) -> TestResult {
        TestResult {
            nodeid: nodeid.into(),
            worker: 0,
            reports: phases
                .iter()
                .map(|(when, duration)| Report {
                    when: When::from(*when),
                    outcome: "passed".into(),
                    duration: *duration,
                    head_line: nodeid.into(),
                    ..Report::default()
                })
                .collect(),
        }
    }

    #[test]
    fn warnings_grouped_by_message_as_pytest() {
        let warnings: Vec<PytestWarning> = [
            (
                "t.py::a",
                "t.py:3: UserWarning: old\n  warnings.warn(\"old\")\n",
            ),
            (
                "t.py::b",
                "t.py:3: UserWarning: old\n  warnings.warn(\"old\")\n",
            ),
            ("", "conftest: DeprecationWarning: x\n"),
        ]
        .map(|(l, m)| PytestWarning {
            location: l.to_string(),
            message: m.to_string(),
        })
        .to_vec();
        assert_eq!(
            warnings_text(&warnings, 40),
            "=========== warnings summary ===========\n\
             t.py::a\n\
             t.py::b\n\
             \x20 t.py:3: UserWarning: old\n\
             \x20   warnings.warn(\"old\")\n\
             \n\
             conftest: DeprecationWarning: x\n\
             \n\
             -- Docs: https://docs.pytest.org/en/stable/how-to/capture-warnings.html\n"
        );
        assert_eq!(warnings_text(&[], 40), "");
    }

    #[test]
    fn ten_locations_are_counted_by_file() {
        let warnings: Vec<PytestWarning> = (0..12)
            .map(|i| {
                let file = if i < 10 { "a.py" } else { "b.py" };
                PytestWarning {
                    location: format!("{file}::t{i}"),
                    message: "w".to_string(),
                }
            })
            .collect();
        let text = warnings_text(&warnings, 40);
        assert!(
            text.contains("a.py: 10 warnings\nb.py: 2 warnings\n  w\n"),
            "{text}"
        );
    }

    #[test]
    fn slowest_durations_across_workers() {
        let results = vec![
            result(
                "a.py::x",
                &[("setup", 0.001), ("call", 1.5), ("teardown", 0.0)],
            ),
            result("b.py::y", &[("setup", 0.25), ("call", 0.002)]),
        ];
        assert_eq!(
            durations_text(&results, Some(3), None, 0, 40),
            "========= slowest 3 durations ==========\n\
             1.50s call     a.py::x\n\
             0.25s setup    b.py::y\n\
             \n\
             (1 durations < 0.005s hidden.  Use -vv to show these durations.)\n"
        );
        assert_eq!(durations_text(&results, None, None, 0, 40), "");
        let all = durations_text(&results, Some(0), Some(0.0), 0, 40);
        assert!(
            all.starts_with("========== slowest durations ===========\n"),
            "{all}"
        );
        assert_eq!(all.lines().count(), 6, "{all}");
    }
}
