//! JUnit testcases for tests whose worker died before writing its JUnit document (pytest
//! writes it at the end of the session): made from the reports the supervisor received, in
//! pytest's shape (`mangle_test_address`, `junit_prefix`, failure/error/skipped elements),
//! as one more document for the merge.

use crate::run::outcome::TestResult;
use crate::run::protocol::{Outcome, Report, When};

/// A `<testsuites>` document holding one testcase per result; None when there are none.
pub(crate) fn document(results: &[&TestResult], prefix: Option<&str>) -> Option<String> {
    if results.is_empty() {
        return None;
    }
    let mut cases = String::new();
    let (mut failures, mut errors, mut skipped) = (0, 0, 0);
    let mut time = 0.0;
    for result in results {
        let (classname, name) = address(&result.nodeid, prefix);
        let duration: f64 = result.reports.iter().map(|r| r.duration).sum();
        time += duration;
        cases.push_str(&format!(
            "<testcase classname=\"{}\" name=\"{}\" time=\"{duration:.3}\">",
            escape(&classname),
            escape(&name)
        ));
        match outcome(&result.reports) {
            Some(("failure", report)) => {
                failures += 1;
                cases.push_str(&element("failure", report));
            }
            Some(("error", report)) => {
                errors += 1;
                cases.push_str(&element("error", report));
            }
            Some((_, report)) => {
                skipped += 1;
                cases.push_str(&element("skipped", report));
            }
            None => {}
        }
        cases.push_str("</testcase>");
    }
    Some(format!(
        "<?xml version=\"1.0\" encoding=\"utf-8\"?><testsuites name=\"pytest tests\">\
         <testsuite name=\"pytest\" errors=\"{errors}\" failures=\"{failures}\" \
         skipped=\"{skipped}\" tests=\"{}\" time=\"{time:.3}\">{cases}</testsuite></testsuites>",
        results.len()
    ))
}

/// What pytest's junitxml would write for these reports: a failed call is a failure, a failed
/// setup or teardown (or a crash) an error, a skip a skipped element.
fn outcome(reports: &[Report]) -> Option<(&'static str, &Report)> {
    let failed = |r: &&Report| r.outcome == Outcome::Failed;
    if let Some(r) = reports.iter().find(|r| failed(r) && r.category == "error") {
        return Some(("error", r));
    }
    if let Some(r) = reports.iter().find(|r| failed(r) && r.when == When::Call) {
        return Some(("failure", r));
    }
    if let Some(r) = reports.iter().find(failed) {
        return Some(("error", r));
    }
    reports
        .iter()
        .find(|r| r.outcome == Outcome::Skipped)
        .map(|r| ("skipped", r))
}

fn element(tag: &str, report: &Report) -> String {
    let message = report.message.as_deref().unwrap_or_default();
    let text = report.text.as_deref().unwrap_or(message);
    format!(
        "<{tag} message=\"{}\">{}</{tag}>",
        escape(message),
        escape(text)
    )
}

/// pytest's `mangle_test_address`, with `junit_prefix`.
fn address(nodeid: &str, prefix: Option<&str>) -> (String, String) {
    let (path, params) = nodeid.split_at(nodeid.find('[').unwrap_or(nodeid.len()));
    let mut names: Vec<String> = path.split("::").map(str::to_owned).collect();
    if let Some(file) = names.first_mut() {
        let dotted = file.replace('/', ".");
        *file = dotted.strip_suffix(".py").unwrap_or(&dotted).to_owned();
    }
    let name = names.pop().unwrap_or_default() + params;
    let mut classname = names.join(".");
    if let Some(prefix) = prefix.filter(|p| !p.is_empty()) {
        classname = format!("{prefix}.{classname}");
    }
    (classname, name)
}

fn escape(text: &str) -> String {
    quick_xml::escape::escape(text).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(nodeid: &str, phases: &[(&str, &str, &str)]) -> TestResult {
        TestResult {
            nodeid: nodeid.into(),
            worker: 0,
            reports: phases
                .iter()
                .map(|(when, outcome, category)| Report {
                    when: (*when).into(),
                    outcome: (*outcome).into(),
                    category: (*category).into(),
                    duration: 0.25,
                    message: Some("assert 1 == 2".into()),
                    ..Report::default()
                })
                .collect(),
        }
    }

    #[test]
    fn testcases_in_pytests_shape() {
        let passed = result(
            "tests/sub/test_a.py::TestX::test_p[1-a]",
            &[
                ("setup", "passed", ""),
                ("call", "passed", "passed"),
                ("teardown", "passed", ""),
            ],
        );
        let failed = result(
            "tests/test_b.py::test_f",
            &[
                ("setup", "passed", ""),
                ("call", "failed", "failed"),
                ("teardown", "passed", ""),
            ],
        );
        let crashed = result("tests/test_b.py::test_c", &[("call", "failed", "error")]);
        let doc = document(&[&passed, &failed, &crashed], Some("pre")).unwrap();
        assert!(doc.contains(
            "<testcase classname=\"pre.tests.sub.test_a.TestX\" name=\"test_p[1-a]\" time=\"0.750\"></testcase>"
        ), "{doc}");
        assert!(doc.contains("<failure message=\"assert 1 == 2\">"), "{doc}");
        assert!(
            doc.contains("classname=\"pre.tests.test_b\" name=\"test_c\" time=\"0.250\"><error"),
            "{doc}"
        );
        assert!(
            doc.contains("errors=\"1\" failures=\"1\" skipped=\"0\" tests=\"3\""),
            "{doc}"
        );
        assert_eq!(document(&[], None), None);
    }
}
