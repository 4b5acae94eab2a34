//! What the user reads and keeps, compared with single-process pytest: `-v` lines, the
//! header, `-x` across workers, pytest's cache (`--lf`), `-s` and live logs, warnings,
//! `--json-report`.

use std::collections::BTreeSet;

use serde_json::Value;

use crate::support::*;

const WORDS: [&str; 6] = ["PASSED", "FAILED", "ERROR", "SKIPPED", "XFAIL", "XPASS"];

/// (node id, word) from pytest's `-v` lines: `tests/x.py::t PASSED   [ 50%]`.
fn pytest_verbose_pairs(run: &Run) -> BTreeSet<(String, String)> {
    let mut pairs = BTreeSet::new();
    for line in run.stdout.lines() {
        for nodeid in &run.ran {
            let Some(rest) = line.strip_prefix(nodeid.as_str()) else {
                continue;
            };
            let word = rest.split_whitespace().next().unwrap_or("");
            if WORDS.contains(&word) {
                pairs.insert((nodeid.clone(), word.to_string()));
            }
        }
    }
    pairs
}

/// (node id, word) from testmon-run's `-v` lines: `PASSED tests/x.py::t [gw1]`.
fn our_verbose_pairs(run: &Run) -> BTreeSet<(String, String)> {
    let mut pairs = BTreeSet::new();
    for line in run.stdout.lines() {
        let Some((word, rest)) = line.split_once(' ') else {
            continue;
        };
        if !WORDS.contains(&word) {
            continue;
        }
        let Some((nodeid, tag)) = rest.rsplit_once(" [") else {
            continue;
        };
        assert!(
            tag.starts_with("gw") && tag.ends_with(']'),
            "no worker tag: {line}"
        );
        pairs.insert((nodeid.to_string(), word.to_string()));
    }
    pairs
}

#[test]
fn verbose_lines_are_pytests_modulo_order_and_worker_tags() {
    for venv in VENVS {
        let ours = Project::copy("proj");
        let theirs = Project::copy("proj");
        let (a, b) = run_both(&ours, &theirs, venv, &["-n", "2"], &["-v"], "-v");
        let (ours, theirs) = (our_verbose_pairs(&a), pytest_verbose_pairs(&b));
        assert!(
            ours.len() >= 53,
            "{venv:?}: a line per test\n{}",
            a.output()
        );
        assert_eq!(ours, theirs, "{venv:?}\n{}\n{}", a.output(), b.output());
    }
}

fn header_line(run: &Run) -> &str {
    run.stdout
        .lines()
        .find(|l| l.starts_with("testmon-run "))
        .unwrap_or_else(|| panic!("no header\n{}", run.output()))
}

#[test]
fn header_names_versions_selection_and_counts() {
    let project = Project::copy("proj");
    let run = project
        .testmon_run(Venv::Testmon22, &["-n", "2"], &[])
        .run();
    let header = header_line(&run);
    for part in [
        "2 workers",
        "pytest 9.2.0",
        "testmon 2.2.0",
        "new DB",
        "selected 53, deselected 0",
    ] {
        assert!(header.contains(part), "{part:?} not in {header}");
    }
    project.edit(
        "calc/strings.py",
        "return s[::-1]",
        "return \"\".join(reversed(s))",
    );
    let run = project
        .testmon_run(Venv::Testmon22, &["-n", "2"], &[])
        .run();
    let header = header_line(&run);
    // testmon's own words for what changed.
    assert!(
        header.contains("changed files: ") && header.contains("unchanged files: "),
        "{header}"
    );
    assert!(
        header.contains(&format!("selected {}, deselected", run.ran.len())),
        "{header}"
    );
}

#[test]
fn selection_turned_off_is_said_even_with_q() {
    for venv in VENVS {
        let project = Project::copy("proj");
        let run = project
            .testmon_run(venv, &["-n", "2"], &["-q", "-m", "not nothing"])
            .run();
        assert!(
            run.stdout
                .lines()
                .any(|l| l.contains("testmon selection is off") && l.contains("-m was used")),
            "{venv:?}\n{}",
            run.output()
        );
        assert!(
            !run.stdout.contains("testmon-run 0"),
            "-q hides the header\n{}",
            run.output()
        );
    }
}

/// A suite whose first test fails after a moment while slower tests keep the other worker busy.
fn failing_first_project() -> Project {
    let project = Project::empty("maxfail");
    project.write(
        "tests/test_a_first.py",
        "import time\n\ndef test_fails():\n    time.sleep(0.3)\n    assert False\n",
    );
    project.write(
        "tests/test_b_slow.py",
        "import time\nimport pytest\n\n@pytest.mark.parametrize('i', range(20))\n\
         def test_slow(i):\n    time.sleep(0.25)\n",
    );
    project
}

#[test]
fn x_stops_every_worker_after_the_first_failure() {
    for venv in VENVS {
        let project = failing_first_project();
        let run = project.testmon_run(venv, &["-n", "2"], &["-x"]).run();
        assert_eq!(run.code(), 1, "{venv:?}\n{}", run.output());
        assert!(
            run.stdout.contains("stopping after 1 failures"),
            "{}",
            run.output()
        );
        // The failing test, what the other worker was running, and at most one test per
        // worker that was handed out as the failure came in.
        assert!(
            run.ran.len() <= 1 + 2,
            "{venv:?}: {} tests started: {:?}\n{}",
            run.ran.len(),
            run.ran,
            run.output()
        );
        // What ran is recorded: the next run selects the failure and what did not run.
        let next = project.testmon_run(venv, &["-n", "2"], &[]).run();
        assert_eq!(next.code(), 1, "{}", next.output());
        let failing = "tests/test_a_first.py::test_fails".to_string();
        assert!(next.ran.contains(&failing), "{}", next.output());
        for test in run.ran.iter().filter(|t| **t != failing) {
            assert!(
                !next.ran.contains(test),
                "{venv:?}: {test} passed under -x but was not recorded\n{}",
                next.output()
            );
        }
        assert_eq!(next.ran.len() + run.ran.len() - 1, 21, "{}", next.output());
    }
}

fn lastfailed(project: &Project) -> BTreeSet<String> {
    let path = project.path(".pytest_cache/v/cache/lastfailed");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|_| "{}".into());
    let value: Value = serde_json::from_str(&text).unwrap();
    value.as_object().unwrap().keys().cloned().collect()
}

#[test]
fn lastfailed_is_the_whole_runs_and_lf_reruns_as_pytest() {
    for venv in VENVS {
        let ours = Project::copy("proj");
        let theirs = Project::copy("proj");
        let step = |pytest_args: &[&str], what: &str| {
            run_both(&ours, &theirs, venv, &["-n", "2"], pytest_args, what);
            assert_eq!(
                lastfailed(&ours),
                lastfailed(&theirs),
                "{venv:?} {what}: lastfailed differs"
            );
        };
        step(&[], "full run");
        assert_eq!(lastfailed(&ours).len(), 2, "a failure and an error");
        step(&["--lf"], "--lf");
        for project in [&ours, &theirs] {
            project.edit("tests/test_arith.py", "add(2, 2) == 5", "add(2, 2) == 4");
        }
        step(&["--lf"], "--lf after the fix");
        step(&["--lf"], "--lf again");
        step(&["--ff"], "--ff");
    }
}

fn printing_project() -> Project {
    let project = Project::empty("printing");
    project.write(
        "tests/test_print.py",
        "import logging\nimport pytest\n\n@pytest.mark.parametrize('i', range(6))\n\
         def test_print(i):\n    print(f'out-marker-{i} ' + 'x' * 200)\n\
         \x20   logging.getLogger('t').warning('log-marker-%s', i)\n",
    );
    project
}

#[test]
fn s_streams_each_workers_output_line_by_line_with_its_tag() {
    for venv in VENVS {
        let project = printing_project();
        let run = project.testmon_run(venv, &["-n", "2"], &["-s"]).run();
        assert_eq!(run.code(), 0, "{venv:?}\n{}", run.output());
        for i in 0..6 {
            let marker = format!("out-marker-{i} ");
            let lines: Vec<&str> = run.stdout.lines().filter(|l| l.contains(&marker)).collect();
            assert_eq!(lines.len(), 1, "{marker}\n{}", run.output());
            assert!(
                lines[0].starts_with("[gw0] out-marker")
                    || lines[0].starts_with("[gw1] out-marker"),
                "not tagged, or interleaved: {}",
                lines[0]
            );
            assert!(lines[0].ends_with(&"x".repeat(200)), "{}", lines[0]);
        }
        assert!(
            !run.stdout.contains("test session starts"),
            "pytest's own terminal output is not streamed\n{}",
            run.output()
        );
    }
}

#[test]
fn live_logs_are_streamed_with_their_worker_tag() {
    let project = printing_project();
    let run = project
        .testmon_run(Venv::Testmon22, &["-n", "2"], &["-o", "log_cli=true"])
        .run();
    assert_eq!(run.code(), 0, "{}", run.output());
    for i in 0..6 {
        let marker = format!("log-marker-{i}");
        assert!(
            run.stdout
                .lines()
                .any(|l| l.starts_with("[gw") && l.contains(&marker)),
            "{marker}\n{}",
            run.output()
        );
    }
    assert!(
        !run.stdout.contains("out-marker"),
        "captured output stays captured"
    );
}

#[test]
fn warnings_and_durations_cover_every_worker() {
    for venv in VENVS {
        let make = || {
            let project = Project::empty("warnings");
            for name in ["a", "b"] {
                project.write(
                    &format!("tests/test_{name}.py"),
                    "import time, warnings\nimport pytest\n\n\
                     warnings.warn('at import', UserWarning)\n\n\
                     @pytest.mark.parametrize('i', range(3))\n\
                     def test_w(i):\n    time.sleep(0.2 * i)\n    warnings.warn('in test', UserWarning)\n",
                );
            }
            project
        };
        let (ours, theirs) = (make(), make());
        let (a, b) = run_both(
            &ours,
            &theirs,
            venv,
            &["-n", "2"],
            &["--durations=4"],
            "warnings",
        );
        assert_eq!(
            a.summary().trim_matches('=').split(" in ").next(),
            b.summary().trim_matches('=').split(" in ").next(),
            "{venv:?}: the counts, warnings included\n{}\n{}",
            a.output(),
            b.output()
        );
        assert!(b.summary().contains("8 warnings"), "{}", b.output());
        let section = |run: &Run, from: &str, to: &str| -> BTreeSet<String> {
            let text = run.stdout.split(from).nth(1).unwrap_or("");
            let text = text.split(to).next().unwrap_or("");
            text.lines()
                .skip(1)
                .filter(|l| !l.trim().is_empty() && !l.starts_with('='))
                .map(|l| l.split_whitespace().last().unwrap_or("").to_string())
                .collect()
        };
        assert_eq!(
            section(&a, "warnings summary", "-- Docs"),
            section(&b, "warnings summary", "-- Docs"),
            "{venv:?}\n{}\n{}",
            a.output(),
            b.output()
        );
        let slowest = |run: &Run| -> Vec<String> {
            run.stdout
                .lines()
                .skip_while(|l| !l.contains("slowest 4 durations"))
                .skip(1)
                .take_while(|l| !l.is_empty() && !l.starts_with('='))
                .map(|l| l.split_whitespace().skip(1).collect::<Vec<_>>().join(" "))
                .collect()
        };
        let ours_slowest = slowest(&a);
        assert_eq!(ours_slowest.len(), 4, "{}", a.output());
        // Both workers' slowest calls (0.4 s each) are among them, whatever else a loaded
        // machine makes slow.
        for test in ["a", "b"] {
            let call = format!("call tests/test_{test}.py::test_w[2]");
            assert!(
                ours_slowest.contains(&call),
                "{call} among the slowest: {ours_slowest:?}"
            );
        }
    }
}

#[test]
fn json_report_has_every_test_its_worker_and_the_phases() {
    let project = Project::copy("proj");
    let run = project
        .testmon_run(
            Venv::Testmon22,
            &["-n", "2", "--json-report", "out/report.json"],
            &[],
        )
        .run();
    let text = std::fs::read_to_string(project.path("out/report.json"))
        .unwrap_or_else(|e| panic!("{e}\n{}", run.output()));
    let report: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(report["exit_code"], run.code());
    assert_eq!(report["workers"], 2);
    assert_eq!(report["pytest"], "9.2.0");
    assert_eq!(report["testmon"], "2.2.0");
    assert_eq!(report["selected"], 53);
    let tests = report["tests"].as_array().unwrap();
    let ids: BTreeSet<String> = tests
        .iter()
        .map(|t| t["nodeid"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids, run.ran);
    let failed: Vec<&Value> = tests.iter().filter(|t| t["outcome"] == "failed").collect();
    assert_eq!(failed.len(), 1);
    assert_eq!(
        failed[0]["nodeid"],
        "tests/test_arith.py::test_known_failure"
    );
    for test in tests {
        assert!(test["worker"] == "gw0" || test["worker"] == "gw1", "{test}");
        assert!(test["duration"].as_f64().unwrap() >= 0.0);
    }
    for phase in ["probe", "prepare", "collect", "run", "merge", "total"] {
        assert!(
            report["phases"][phase].as_f64().is_some_and(|s| s >= 0.0),
            "{phase}: {}",
            report["phases"]
        );
    }
}

/// The JUnit file's testcases (classname, name, outcome) and suite counts, read by Python's
/// own XML parser.
fn junit_cases(venv: Venv, path: &std::path::Path) -> (Vec<(String, String, String)>, Value) {
    let script = r#"
import json, sys
import xml.etree.ElementTree as ET
root = ET.parse(sys.argv[1]).getroot()
suites = [root] if root.tag == "testsuite" else root.findall("testsuite")
assert len(suites) == 1, len(suites)
suite = suites[0]
cases = []
for case in suite.findall("testcase"):
    kinds = sorted(child.tag for child in case if child.tag in ("failure", "error", "skipped"))
    cases.append([case.get("classname"), case.get("name"), ",".join(kinds) or "passed"])
counts = {k: suite.get(k) for k in ("tests", "errors", "failures", "skipped")}
print(json.dumps({"cases": sorted(cases), "counts": counts}))
"#;
    let out = std::process::Command::new(venv.python())
        .arg("-c")
        .arg(script)
        .arg(path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let value: Value = serde_json::from_slice(&out.stdout).unwrap();
    let cases = value["cases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c[0].as_str().unwrap_or("").to_string(),
                c[1].as_str().unwrap_or("").to_string(),
                c[2].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    (cases, value["counts"].clone())
}

#[test]
fn junitxml_is_one_document_with_every_test_once() {
    for venv in VENVS {
        let ours = Project::copy("proj");
        let theirs = Project::copy("proj");
        // A module that fails to collect: every worker sees it.
        for p in [&ours, &theirs] {
            p.write("tests/test_broken.py", "import nonexistent_module\n");
        }
        let args = [
            "--junitxml=reports/junit.xml",
            "--junit-prefix=pre",
            "--continue-on-collection-errors",
        ];
        let (a, b) = run_both(&ours, &theirs, venv, &["-n", "2"], &args, "junit");
        let (our_cases, our_counts) = junit_cases(venv, &ours.path("reports/junit.xml"));
        let (their_cases, their_counts) = junit_cases(venv, &theirs.path("reports/junit.xml"));
        assert_eq!(our_cases.len(), 54, "{venv:?}\n{}", a.output());
        assert_eq!(
            our_cases,
            their_cases,
            "{venv:?}\n{}\n{}",
            a.output(),
            b.output()
        );
        assert_eq!(our_counts, their_counts, "{venv:?}");
        assert!(
            our_cases
                .iter()
                .all(|(class, _, _)| class.is_empty() || class.starts_with("pre")),
            "--junit-prefix: {our_cases:?}"
        );
        let names: BTreeSet<_> = our_cases.iter().collect();
        assert_eq!(names.len(), our_cases.len(), "each test once");
    }
}

#[test]
fn pyproject_sets_defaults_and_bad_keys_are_usage_errors() {
    let project = Project::copy("proj");
    project.write(
        "pyproject.toml",
        "[tool.testmon-run]\nnumprocesses = 1\njson-report = \"out.json\"\n",
    );
    let run = project.testmon_run(Venv::Testmon22, &[], &[]).run();
    assert!(run.stdout.contains(": 1 worker, "), "{}", run.output());
    assert!(project.path("out.json").exists(), "{}", run.output());
    let run = project
        .testmon_run(Venv::Testmon22, &["-n", "2"], &[])
        .run();
    assert!(
        run.stdout.contains(": 2 workers, "),
        "the command line wins\n{}",
        run.output()
    );
    project.write("pyproject.toml", "[tool.testmon-run]\nworkerz = 1\n");
    let run = project.testmon_run(Venv::Testmon22, &[], &[]).run_plain();
    assert_eq!(run.code(), 4, "{}", run.output());
    assert_eq!(run.stderr.lines().count(), 1, "{}", run.output());
    assert!(run.stderr.contains("workerz"), "{}", run.output());
}

/// `0x7f3a…` → `0xADDR`.
fn mask_addresses(line: &str) -> String {
    let mut out = String::new();
    let mut rest = line;
    while let Some(at) = rest.find("0x") {
        out.push_str(&rest[..at]);
        let tail = &rest[at + 2..];
        let digits = tail.len()
            - tail
                .trim_start_matches(|c: char| c.is_ascii_hexdigit())
                .len();
        out.push_str(if digits > 0 { "0xADDR" } else { "0x" });
        rest = &tail[digits..];
    }
    out.push_str(rest);
    out
}

#[test]
fn ra_sections_and_short_summary_are_pytests() {
    for venv in VENVS {
        let (ours, theirs) = (Project::copy("proj"), Project::copy("proj"));
        for p in [&ours, &theirs] {
            p.write(
                "tests/test_zz_print.py",
                "def test_prints():\n    print('hello from a passing test')\n",
            );
        }
        let (a, b) = run_both(&ours, &theirs, venv, &["-n", "2"], &["-rA"], "-rA");
        // From PASSES to the final line: the same lines in the same order (results are
        // reported in the run's order). With $CI set pytest does not shorten the summary's
        // messages, which then show object addresses: those are masked.
        let tail = |run: &Run| -> Vec<String> {
            run.stdout
                .lines()
                .skip_while(|l| !l.contains(" PASSES "))
                .filter(|l| !l.contains(" in ") || !l.starts_with('='))
                .map(mask_addresses)
                .collect()
        };
        let (ours_tail, theirs_tail) = (tail(&a), tail(&b));
        assert!(
            ours_tail.iter().any(|l| l == "hello from a passing test"),
            "{}",
            a.output()
        );
        assert!(ours_tail.iter().any(|l| l.starts_with("SKIPPED [1] ")));
        assert_eq!(
            ours_tail,
            theirs_tail,
            "{venv:?}\n{}\n{}",
            a.output(),
            b.output()
        );
    }
}

#[test]
fn final_line_is_pytests_also_in_colour_and_with_q() {
    let mask_time = |line: &str| -> String {
        let at = line.find(" in ").expect("a duration");
        let end = at + 4 + line[at + 4..].find('s').expect("seconds");
        format!("{}<T>{}", &line[..at + 4], &line[end..])
    };
    for venv in VENVS {
        for args in [&["--color=yes"][..], &["--color=yes", "-q"], &["-q"]] {
            let (ours, theirs) = (Project::copy("proj"), Project::copy("proj"));
            let (a, b) = run_both(&ours, &theirs, venv, &["-n", "2"], args, "final line");
            assert_eq!(
                mask_time(a.summary()),
                mask_time(b.summary()),
                "{venv:?} {args:?}\n{}\n{}",
                a.output(),
                b.output()
            );
        }
    }
}

#[test]
fn junitxml_keeps_the_tests_of_a_crashed_worker() {
    let venv = Venv::Testmon22;
    let project = Project::copy("crash");
    let xml = project.root.join("report.xml");
    let junit = format!("--junitxml={}", xml.display());
    let run = project
        .testmon_run(venv, &["-n", "2"], &[&junit, "--junit-prefix=pre"])
        .run();
    assert_eq!(run.code(), 1, "{}", run.output());
    let (cases, counts) = junit_cases(venv, &xml);
    // Every test once: the crashed worker's (made from the reports it sent) and the rest.
    assert_eq!(cases.len(), 17, "{cases:?}");
    for (classname, name, outcome) in &cases {
        assert_eq!(classname, "pre.tests.test_crash", "{cases:?}");
        let expected = if name == "test_dies" {
            "error"
        } else {
            "passed"
        };
        assert_eq!(outcome, expected, "{name}: {cases:?}");
    }
    assert_eq!(counts["tests"], "17", "{counts}");
    assert_eq!(counts["errors"], "1", "{counts}");
    assert_eq!(counts["failures"], "0", "{counts}");
}
