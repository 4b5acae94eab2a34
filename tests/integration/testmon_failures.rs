//! A testmon failure on one test's data does not sink the run (issue 4, item 8).
//!
//! On `tests/fixtures/noext` (see its README entry) testmon 2.1.4 and 2.2.0 raise IndexError
//! computing the fingerprints of the two tests that run code compiled from a file without an
//! extension: single-process `pytest --testmon` ends with an INTERNALERROR, exit code 3, and
//! records no fingerprints. testmon-run's worker drops those two tests' fingerprints (each
//! keeps testmon's own placeholder, so it is selected again), goes on, and warns, in pytest's
//! warnings summary, naming the test and the file.

use std::collections::BTreeSet;

use crate::support::*;

/// The tests whose fingerprints testmon cannot compute, with the file it fails on.
const DROPPED: [(&str, &str); 2] = [
    (
        "tests/test_templates.py::test_render_foo",
        "tests/res/templates/foo",
    ),
    (
        "tests/test_templates.py::test_render_nested",
        "tests/res/templates2/foo",
    ),
];

const ALL: [&str; 6] = [
    "tests/test_templates.py::test_list_templates",
    "tests/test_templates.py::test_render_foo",
    "tests/test_templates.py::test_render_nested",
    "tests/test_text.py::test_join_empty",
    "tests/test_text.py::test_join_words",
    "tests/test_text.py::test_shout",
];

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|s| s.to_string()).collect()
}

/// Exit code 0 (pytest's, for 6 passed tests), no INTERNALERROR, and for each dropped test a
/// warning in the warnings summary: the test's node id, then testmon's failure on the file.
fn assert_went_on(run: &Run, passed: usize, what: &str) {
    assert!(
        !run.stdout.contains("INTERNALERROR") && !run.stderr.contains("INTERNALERROR"),
        "{what}: INTERNALERROR\n{}",
        run.output()
    );
    assert_eq!(run.code(), 0, "{what}: exit code\n{}", run.output());
    assert!(
        run.summary().contains(&format!("{passed} passed")) && run.summary().contains("2 warnings"),
        "{what}: final line\n{}",
        run.output()
    );
    let summary = run
        .stdout
        .split("warnings summary")
        .nth(1)
        .unwrap_or_else(|| panic!("{what}: no warnings summary\n{}", run.output()));
    for (test, file) in DROPPED {
        // pytest's layout: the location (the test), then the message, indented.
        let at = summary
            .find(&format!("\n{test}\n"))
            .unwrap_or_else(|| panic!("{what}: no warning at {test}\n{}", run.output()));
        let entry = summary[at + 1..].lines().nth(1).unwrap_or("");
        let message = format!(
            "TestmonRunWarning: testmon failed on {file} computing the fingerprints of {test} \
             (IndexError: list index out of range): they are dropped, so testmon selects the \
             test again next run"
        );
        assert!(
            entry.starts_with("  ") && entry.contains(&message),
            "{what}: the warning at {test} does not name {file}\n{}",
            run.output()
        );
    }
}

#[test]
fn a_file_without_extension_drops_only_that_tests_fingerprints() {
    for venv in VENVS {
        let what = format!("{venv:?}");

        // What single-process testmon does: every test runs, then an INTERNALERROR (exit 3)
        // and no fingerprints, only the placeholders its end-of-collection sync wrote.
        let single = Project::copy("noext");
        let reference = single.pytest(venv, &[]).run();
        assert_eq!(
            reference.code(),
            3,
            "{what}: single-process testmon no longer fails here\n{}",
            reference.output()
        );
        assert!(
            reference
                .stdout
                .contains("INTERNALERROR> IndexError: list index out of range"),
            "{what}: single-process testmon fails otherwise\n{}",
            reference.output()
        );
        assert_eq!(reference.ran, set(&ALL), "{what}: single-process run");
        let placeholders = dump(&single.datafile());

        // testmon-run: every test runs, the run goes on, the warnings name test and file.
        let project = Project::copy("noext");
        let run = project.testmon_run(venv, &["-n", "2"], &[]).run();
        assert_went_on(&run, 6, &format!("{what}, first run"));
        assert_eq!(run.ran, set(&ALL), "{what}: first run\n{}", run.output());

        // The database: every test has a record; the others have real fingerprints; each
        // dropped test has no fingerprint, only the placeholder single-process testmon's sync
        // gives a test it has not run (so it is selected again).
        let records = dump(&project.datafile());
        let tests = &records["default"];
        assert_eq!(
            tests.keys().cloned().collect::<BTreeSet<_>>(),
            set(&ALL),
            "{what}: recorded tests"
        );
        for (name, record) in tests {
            let dropped = DROPPED.iter().any(|(t, _)| t == name);
            if dropped {
                assert_eq!(
                    record, &placeholders["default"][name],
                    "{what}: {name} keeps more than testmon's placeholder"
                );
                assert_eq!(
                    record.files(),
                    BTreeSet::from(["tests/test_templates.py"]),
                    "{what}: {name}"
                );
                assert!(
                    record.is_placeholder(),
                    "{what}: {name} has a fingerprint: {record:?}"
                );
            } else {
                assert!(
                    record.has_real_fingerprints(),
                    "{what}: {name} lacks its fingerprints: {record:?}"
                );
            }
            assert!(
                record.files().iter().all(|f| f.ends_with(".py")),
                "{what}: {name} records a file without an extension: {record:?}"
            );
        }
        assert_eq!(
            tests["tests/test_templates.py::test_list_templates"].files(),
            BTreeSet::from(["tests/test_templates.py", "tmpl/loader.py"]),
            "{what}: test_list_templates"
        );

        // The next run selects the two dropped tests again, and nothing else.
        let again = project.testmon_run(venv, &["-n", "2"], &[]).run();
        assert_went_on(&again, 2, &format!("{what}, second run"));
        assert_eq!(
            again.ran,
            set(&DROPPED.map(|(t, _)| t)),
            "{what}: second run\n{}",
            again.output()
        );

        // So does single-process testmon's own selection on the database left (without
        // recording, where it would fail again).
        let selected = project.pytest(venv, &["--testmon-nocollect"]).run();
        assert_eq!(selected.code(), 0, "{what}: {}", selected.output());
        assert_eq!(
            selected.ran,
            set(&DROPPED.map(|(t, _)| t)),
            "{what}: single-process selection\n{}",
            selected.output()
        );
    }
}
