//! The invariant: after every step of a sequence of edits, `testmon-run -n 2` and
//! single-process `pytest --testmon` ran the same tests, exited the same and left the same
//! records (schedule-dependent tests compared loosely: see support::schedule_dependent).

use crate::support::*;

/// An edit applied to both copies before a step.
type Edit = fn(&Project);

const STEPS: &[(&str, Edit)] = &[
    ("from an empty database", |_| {}),
    ("nothing changed", |_| {}),
    ("function body changed", |p| {
        p.edit(
            "calc/arith.py",
            "    if value > high:\n        return high\n    return value",
            "    return min(value, high)",
        )
    }),
    ("method changed", |p| {
        p.edit(
            "calc/shapes.py",
            "return arith.multiply(2, arith.add(self.width, self.height))",
            "return arith.multiply(arith.add(self.width, self.height), 2)",
        )
    }),
    ("only a comment changed", |p| {
        p.edit(
            "calc/arith.py",
            "# repeated multiplication keeps",
            "# a loop of multiplications keeps",
        )
    }),
    ("fixture changed", |p| {
        p.edit(
            "tests/conftest.py",
            "return Square(1)",
            "return Square(1 + 0)",
        )
    }),
    ("failing test fixed", |p| {
        p.edit(
            "tests/test_arith.py",
            "assert arith.add(2, 2) == 5",
            "assert arith.add(2, 2) == 4",
        )
    }),
    ("test file added", |p| {
        p.write("tests/test_added.py", "from calc import strings\n\n\ndef test_added():\n    assert strings.reverse(\"ab\") == \"ba\"\n")
    }),
    ("test deleted", |p| {
        p.edit(
            "tests/test_arith.py",
            "def test_subtract():",
            "def _no_longer_a_test_subtract():",
        )
    }),
    ("module nobody imports added", |p| {
        p.write("calc/extra.py", "def extra():\n    return 42\n")
    }),
    ("setup error fixed", |p| {
        p.edit(
            "tests/test_strings.py",
            "raise RuntimeError(\"this fixture always fails during setup\")",
            "return None",
        )
    }),
    ("nothing changed, all green", |_| {}),
];

/// `-n 2` unless the arguments choose another number of workers.
fn with_workers<'a>(run_args: &[&'a str]) -> Vec<&'a str> {
    if run_args.contains(&"-n") {
        run_args.to_vec()
    } else {
        [&["-n", "2"], run_args].concat()
    }
}

fn sequence(venv: Venv, run_args: &[&str], pytest_args: &[&str]) {
    let parallel = Project::copy("proj");
    let single = Project::copy("proj");
    for (step_name, edit) in STEPS {
        edit(&parallel);
        edit(&single);
        let ours = parallel
            .testmon_run(venv, &with_workers(run_args), pytest_args)
            .run();
        let theirs = single.pytest(venv, pytest_args).run();
        let step = format!("{venv:?} {run_args:?} {pytest_args:?}: {step_name}");
        assert_eq!(
            ours.code(),
            theirs.code(),
            "{step}: exit codes differ\n{}\n{}",
            ours.output(),
            theirs.output()
        );
        assert_same_ran(&ours, &theirs, &step);
        check_selection(step_name, &ours, pytest_args);
        for suffix in ["-wal", "-shm"] {
            let side = parallel.path(&format!(".testmondata{suffix}"));
            assert!(
                !side.exists(),
                "{step}: {} left beside the datafile",
                side.display()
            );
        }
        let scopes = if run_args.contains(&"loadscope") || run_args.contains(&"loadfile") {
            Scopes::ScopesKept
        } else {
            Scopes::AnyOrder
        };
        assert_same_records_with(
            &dump(&parallel.datafile()),
            &dump(&single.datafile()),
            &step,
            scopes,
        );
    }
}

#[test]
fn parity_testmon22() {
    sequence(Venv::Testmon22, &[], &[]);
}

#[test]
fn parity_testmon21() {
    sequence(Venv::Testmon21, &[], &[]);
}

#[test]
fn parity_with_testmon_env() {
    for venv in VENVS {
        sequence(venv, &[], &["--testmon-env", "py-env-α"]);
    }
}

#[test]
fn parity_with_k() {
    for venv in VENVS {
        sequence(venv, &[], &["-k", "not clamp"]);
    }
}

#[test]
fn parity_with_dist_loadfile() {
    for venv in VENVS {
        sequence(venv, &["--dist", "loadfile"], &[]);
    }
}

/// A few steps' selections, stated outright, so that parity cannot pass by both sides
/// running everything (or nothing).
fn check_selection(step: &str, run: &crate::support::Run, pytest_args: &[&str]) {
    if !pytest_args.is_empty() {
        return; // -k turns testmon's selection off; --testmon-env is checked by parity alone
    }
    let failing = [
        "tests/test_arith.py::test_known_failure",
        "tests/test_strings.py::test_setup_error",
    ];
    let ran: Vec<&str> = run.ran.iter().map(String::as_str).collect();
    match step {
        "from an empty database" => assert_eq!(ran.len(), 53, "{step}: {ran:?}"),
        "nothing changed" | "only a comment changed" => assert_eq!(ran, failing, "{step}"),
        "module nobody imports added" => assert_eq!(ran, failing[1..], "{step}"),
        "function body changed" => {
            let clamp: Vec<&str> = ran
                .iter()
                .copied()
                .filter(|t| t.contains("test_clamp"))
                .collect();
            assert!(
                clamp.len() >= 2 && ran.len() == clamp.len() + 2,
                "{step}: {ran:?}"
            );
        }
        "test file added" => assert!(
            ran.contains(&"tests/test_added.py::test_added"),
            "{step}: {ran:?}"
        ),
        "nothing changed, all green" => assert!(ran.is_empty(), "{step}: {ran:?}"),
        _ => {}
    }
}

#[test]
fn parity_with_dist_loadscope() {
    // Module- and class-scoped fixtures land on the same test as in a single process.
    for venv in VENVS {
        sequence(venv, &["--dist", "loadscope"], &[]);
    }
}

#[test]
fn parity_oversubscribed() {
    // 4 workers on this 2-core machine.
    sequence(Venv::Testmon22, &["-n", "4"], &[]);
}

#[test]
fn parity_with_deselect() {
    // testmon records the tests the user deselected (as not yet run) at its collection sync.
    let deselected = "tests/test_strings.py::test_reverse";
    for venv in VENVS {
        sequence(venv, &[], &["--deselect", deselected]);
        let project = Project::copy("proj");
        let run = project
            .testmon_run(venv, &["-n", "2"], &["--deselect", deselected])
            .run();
        assert!(!run.ran.contains(deselected), "{}", run.output());
        let record = &dump(&project.datafile())["default"][deselected];
        assert!(
            record
                .fingerprints
                .iter()
                .all(|(file, fsha, _)| file == "tests/test_strings.py" && fsha.is_empty()),
            "{venv:?}: recorded as not yet run: {record:?}"
        );
    }
}
