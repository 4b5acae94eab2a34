//! The version matrix's test (scripts/compat runs it once per entry, with
//! `TESTMON_RUN_COMPAT_VENV` naming the entry's virtualenv: other Pythons, other pytest and
//! pytest-testmon versions than the main suite's). After every step of a sequence of edits
//! on the `proj` fixture, `testmon-run -n 2` and single-process `pytest --testmon` exited
//! the same, ran the same tests and left the same records (DESIGN.md, "The invariant").
//! Shorter than parity.rs's sequence: one parity sequence per entry keeps the matrix bounded.

use crate::parity::{check_fast_path, Edit, STEPS as PARITY_STEPS};
use crate::support::*;

const VENV: Venv = Venv::Compat;

/// One of parity.rs's edits, by its step's name.
fn parity_edit(name: &str) -> Edit {
    let found = PARITY_STEPS.iter().find(|(step, _)| *step == name);
    found.map(|(_, edit)| *edit).expect("a step of parity.rs")
}

/// The steps: some of parity.rs's edits, and a few of its own.
fn steps() -> Vec<(&'static str, Edit)> {
    vec![
        ("from an empty database", |_| {}),
        ("nothing changed", |_| {}),
        (
            "function body changed",
            parity_edit("function body changed"),
        ),
        ("method changed", parity_edit("method changed")),
        ("test file added", |p| {
            p.write(
                "tests/test_added.py",
                "from calc import strings\n\n\ndef test_added():\n    assert strings.shout(\"a\") == \"A!\"\n",
            )
        }),
        ("a passing test made to fail", |p| {
            p.edit(
                "tests/test_arith.py",
                "assert arith.add(2, 3) == 5",
                "assert arith.add(2, 3) == 6",
            )
        }),
        ("failing tests fixed", |p| {
            p.edit(
                "tests/test_arith.py",
                "assert arith.add(2, 3) == 6",
                "assert arith.add(2, 3) == 5",
            );
            parity_edit("failing test fixed")(p);
            parity_edit("setup error fixed")(p);
        }),
        ("nothing changed, all green", |_| {}),
    ]
}

#[test]
#[ignore = "scripts/compat runs it"]
fn matrix_entry_parity() {
    let venv_dir = VENV.dir();
    let parallel = Project::copy("proj");
    let single = Project::copy("proj");
    for (step_name, edit) in steps() {
        edit(&parallel);
        edit(&single);
        settle();
        let step = format!(
            "{}: {step_name}",
            venv_dir.file_name().unwrap().to_string_lossy()
        );
        let (ours, theirs) = run_both(&parallel, &single, VENV, &["-n", "2"], &[], &step);
        check_selection(step_name, &theirs, &step);
        check_fast_path(step_name, &ours, &theirs, &[]);
        // The default --dist loadscope keeps module- and class-scoped fixtures on the same
        // test as in a single process (parity.rs).
        assert_same_records_with(
            &dump(&parallel.datafile()),
            &dump(&single.datafile()),
            &step,
            Scopes::ScopesKept,
        );
    }
}

/// Single-process testmon's selection, stated for a few steps, so that parity cannot pass by
/// both sides running everything (or nothing) with this entry's testmon.
fn check_selection(step_name: &str, single: &Run, step: &str) {
    let ran: Vec<&str> = single.ran.iter().map(String::as_str).collect();
    let failing = [
        "tests/test_arith.py::test_known_failure",
        "tests/test_strings.py::test_setup_error",
    ];
    match step_name {
        "from an empty database" => assert!(
            ran.len() > 40,
            "{step}: single-process pytest --testmon ran {} tests, not all of proj's\n{}",
            ran.len(),
            single.output()
        ),
        "nothing changed" => assert_eq!(ran, failing, "{step}"),
        "test file added" => assert!(
            ran.contains(&"tests/test_added.py::test_added") && ran.len() < 10,
            "{step}: {ran:?}"
        ),
        "a passing test made to fail" => assert_eq!(single.code(), 1, "{step}"),
        "failing tests fixed" => assert_eq!(single.code(), 0, "{step}\n{}", single.output()),
        "nothing changed, all green" => assert!(ran.is_empty(), "{step}: {ran:?}"),
        _ => {}
    }
}
