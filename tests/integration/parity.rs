//! The invariant: after every step of a sequence of edits, `testmon-run -n 2` and
//! single-process `pytest --testmon` ran the same tests, exited the same and left the same
//! records (schedule-dependent tests compared loosely: see support::schedule_dependent).

use crate::support::*;

/// An edit applied to both copies before a step.
pub type Edit = fn(&Project);

pub const STEPS: &[(&str, Edit)] = &[
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
    sequence_with(venv, run_args, pytest_args, &[]);
}

/// A test file whose module-scoped fixture (its setup reads calc/strings.py) is used by a
/// plain function and by a class: 3 tests.
const MIXED_SCOPES: (&str, &str) = (
    "tests/test_mixed.py",
    r#"import pytest

from calc import strings


@pytest.fixture(scope="module")
def words():
    return [strings.reverse("ab")]


def test_words(words):
    assert words == ["ba"]


class TestWords:
    def test_first(self, words):
        assert words[0] == "ba"

    def test_again(self, words):
        assert len(words) == 1
"#,
);

/// A test file that holds most of the run's time (20 tests of 50 ms calling `clamp`, no
/// fixture above function scope): once its durations are recorded, its unit is split
/// across the workers (the "function body changed" step reruns it).
fn dominant_module() -> (&'static str, String) {
    let mut text = String::from("import time\n\nfrom calc import arith\n");
    for i in 0..20 {
        text.push_str(&format!(
            "\n\ndef test_clamp_heavy_{i}():\n    time.sleep(0.05)\n    \
             assert arith.clamp({i}, 2, 15) == {}\n",
            i.clamp(2, 15)
        ));
    }
    ("tests/test_heavy.py", text)
}

/// `sequence` on the `proj` fixture with `extra` files added to both copies first.
fn sequence_with(venv: Venv, run_args: &[&str], pytest_args: &[&str], extra: &[(&str, &str)]) {
    let parallel = Project::copy("proj");
    let single = Project::copy("proj");
    for (path, text) in extra {
        parallel.write(path, text);
        single.write(path, text);
    }
    let extra_tests: usize = extra
        .iter()
        .map(|(_, t)| t.matches("def test_").count())
        .sum();
    for (step_name, edit) in STEPS {
        edit(&parallel);
        edit(&single);
        settle();
        let step = format!("{venv:?} {run_args:?} {pytest_args:?}: {step_name}");
        let (ours, theirs) = run_both(
            &parallel,
            &single,
            venv,
            &with_workers(run_args),
            pytest_args,
            &step,
        );
        check_selection(step_name, &ours, pytest_args, extra_tests);
        check_fast_path(step_name, &ours, &theirs, pytest_args);
        for suffix in ["-wal", "-shm"] {
            let side = parallel.path(&format!(".testmondata{suffix}"));
            assert!(
                !side.exists(),
                "{step}: {} left beside the datafile",
                side.display()
            );
        }
        // Module- and class-scoped fixtures land on the same test as in a single process,
        // except under --dist load, and with testmon's selection off (-k, -m: the order
        // within a class then differs between a worker and a single process; seen on
        // tests/test_shapes.py::TestShape), or files and node ids as arguments (pytest
        // collects them whatever testmon says, so the same tests run again at every step,
        // in testmon's order by their recorded durations: the two sides' timings order a
        // module's tests differently; seen on tests/test_strings.py's module fixture).
        let selection_off =
            pytest_args.contains(&"-k") || pytest_args.contains(&"-m") || file_args(pytest_args);
        let scopes = if run_args.contains(&"load") || selection_off {
            Scopes::AnyOrder
        } else {
            Scopes::ScopesKept
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
        // -m deselects too.
        sequence(venv, &[], &["-m", "not skip"]);
        // Node ids and a file as arguments: pytest collects only those.
        sequence(
            venv,
            &[],
            &[
                "tests/test_strings.py",
                "tests/test_arith.py::test_add",
                "tests/sub/test_geometry.py::TestDistances",
            ],
        );
    }
}

#[test]
fn parity_with_dist_loadfile() {
    for venv in VENVS {
        sequence(venv, &["--dist", "loadfile"], &[]);
    }
}

/// The no-op fast path answers only when single-process testmon selects nothing, and it
/// does answer after an all-green run when nothing changed (selection on).
/// Files or node ids among the pytest arguments (not a `--deselect`'s value).
fn file_args(pytest_args: &[&str]) -> bool {
    pytest_args
        .iter()
        .enumerate()
        .any(|(i, a)| a.starts_with("tests/") && (i == 0 || pytest_args[i - 1] != "--deselect"))
}

pub fn check_fast_path(step: &str, ours: &Run, theirs: &Run, pytest_args: &[&str]) {
    let fast = answered_fast(ours);
    if fast {
        assert!(
            theirs.ran.is_empty() && ours.code() == theirs.code(),
            "{step}: the fast path answered, single-process testmon ran {:?}\n{}",
            theirs.ran,
            theirs.output()
        );
        assert_eq!(
            counts(ours),
            counts(theirs),
            "{step}: the fast path's final line\n{}\n{}",
            ours.output(),
            theirs.output()
        );
    }
    if step == "nothing changed, all green" {
        // -k/-m turn testmon's selection off; pytest collects files and node ids given as
        // arguments whatever testmon says. (A --deselect'ed test has no row: testmon would
        // select it every time, pytest deselects it every time.)
        let no_fast_path =
            ["-k", "-m"].iter().any(|a| pytest_args.contains(a)) || file_args(pytest_args);
        assert_eq!(
            fast,
            !no_fast_path,
            "{step}: fast path answered: {fast}\n{}",
            ours.output()
        );
    }
}

/// A few steps' selections, stated outright, so that parity cannot pass by both sides
/// running everything (or nothing).
fn check_selection(step: &str, run: &crate::support::Run, pytest_args: &[&str], extra: usize) {
    if !pytest_args.is_empty() {
        return; // -k turns testmon's selection off; --testmon-env is checked by parity alone
    }
    let failing = [
        "tests/test_arith.py::test_known_failure",
        "tests/test_strings.py::test_setup_error",
    ];
    let ran: Vec<&str> = run.ran.iter().map(String::as_str).collect();
    match step {
        "from an empty database" => assert_eq!(ran.len(), 53 + extra, "{step}: {ran:?}"),
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
fn parity_with_a_dominant_module() {
    // Its unit costs more than the fair share and nothing binds it: split in testmon's
    // order; module- and class-scoped fixtures are still compared exactly.
    let (path, text) = dominant_module();
    sequence_with(Venv::Testmon22, &[], &[], &[(path, text.as_str())]);
}

#[test]
fn parity_with_dist_load() {
    // Single tests spread over the workers (the default is loadscope).
    for venv in VENVS {
        sequence(venv, &["--dist", "load"], &[]);
    }
}

#[test]
fn parity_oversubscribed() {
    // 4 workers on this 2-core machine.
    sequence(Venv::Testmon22, &["-n", "4"], &[]);
    // 3 workers, and a file whose plain function and class share a module-scoped fixture:
    // as two units they would land on different workers, and the fixture's setup on the
    // first test of each; the file is one unit (module- and class-scoped fixtures compared
    // exactly, as at any N under loadscope).
    sequence_with(Venv::Testmon22, &["-n", "3"], &[], &[MIXED_SCOPES]);
}

#[test]
fn parity_with_deselect() {
    // Single-process testmon records the tests the user deselected as not yet run (a
    // placeholder row) at its collection sync; testmon-run, as xdist, gives a test that never
    // ran no row. Either way it is selected once collected without the deselection.
    let deselected = "tests/test_strings.py::test_reverse";
    for venv in VENVS {
        sequence(venv, &[], &["--deselect", deselected]);
        let parallel = Project::copy("proj");
        let single = Project::copy("proj");
        let deselect = ["--deselect", deselected];
        let (run, _) = run_both(
            &parallel,
            &single,
            venv,
            &["-n", "2"],
            &deselect,
            "deselect",
        );
        assert!(!run.ran.contains(deselected), "{}", run.output());
        assert!(
            !dump(&parallel.datafile())["default"].contains_key(deselected),
            "{venv:?}: a row for a test that never ran"
        );
        assert!(dump(&single.datafile())["default"][deselected].is_placeholder());
        let (again, _) = run_both(
            &parallel,
            &single,
            venv,
            &["-n", "2"],
            &[],
            "collected again",
        );
        assert!(again.ran.contains(deselected), "{}", again.output());
        assert_same_records(
            &dump(&parallel.datafile()),
            &dump(&single.datafile()),
            "collected again",
        );
    }
}

/// A suite bigger than testmon's batch of 250 tests: 20 files of 40 tests, each test using
/// two library modules.
fn big_suite() -> Project {
    let project = Project::empty("big");
    project.write("lib/__init__.py", "");
    for m in 0..10 {
        let funcs: String = (0..20)
            .map(|i| format!("def f{i}(x):\n    return x + {i}\n\n"))
            .collect();
        project.write(&format!("lib/mod{m}.py"), &format!("# lib\n{funcs}"));
    }
    for t in 0..20 {
        let (a, b) = (t % 10, (t + 1) % 10);
        let mut text = format!("from lib import mod{a}, mod{b}\n\n");
        for i in 0..40 {
            text.push_str(&format!(
                "def test_{i}():\n    assert mod{a}.f{}(1) == {}\n    assert mod{b}.f{}(0) == {}\n\n",
                i % 20,
                1 + i % 20,
                (i + 3) % 20,
                (i + 3) % 20
            ));
        }
        project.write(&format!("tests/test_t{t}.py"), &text);
    }
    project
}

/// The dump without file hashes (fsha).
fn without_fsha(mut dump: Dump) -> Dump {
    for tests in dump.values_mut() {
        for record in tests.values_mut() {
            for fingerprint in &mut record.fingerprints {
                fingerprint.1.clear();
            }
        }
    }
    dump
}

#[test]
fn parity_beyond_one_batch() {
    // A file whose content changed while a test's checksums for it did not: a single process
    // points the fingerprints of its later batches (250 tests each) at the first row with
    // those checksums in index order (the lowest fsha), which may be an older, stale one.
    // Which tests fall into later batches depends on testmon's order, sorted by recorded
    // durations, which differ from run to run: single-process testmon is not deterministic
    // there. Step 0 has no older rows; in step 1 the new hash of lib/mod1.py (1276…) sorts
    // before the old one (39cf…), so every batch gets the new row whatever the order: both
    // are compared exactly. In step 2 the new hash (9ee5…) sorts after the older (1276…):
    // the choice depends on the order, and only the checksums are compared.
    for venv in VENVS {
        let parallel = big_suite();
        let single = big_suite();
        for step in 0..3 {
            if step > 0 {
                for p in [&parallel, &single] {
                    let lib = p.read("lib/mod1.py");
                    p.write("lib/mod1.py", &format!("# edit {step}\n{lib}"));
                    for t in 0..20 {
                        let file = format!("tests/test_t{t}.py");
                        let text = p.read(&file);
                        p.write(&file, &format!("EDIT = {step}\n{text}"));
                    }
                }
            }
            let what = format!("{venv:?} step {step}");
            let (ours, _) = run_both(&parallel, &single, venv, &["-n", "2"], &[], &what);
            assert_eq!(ours.code(), 0, "{what}\n{}", ours.output());
            assert_eq!(ours.ran.len(), 800, "{what}: every test runs");
            let (ours, theirs) = (dump(&parallel.datafile()), dump(&single.datafile()));
            if step < 2 {
                assert_same_records(&ours, &theirs, &what);
            } else {
                assert_same_records(&without_fsha(ours), &without_fsha(theirs), &what);
            }
        }
    }
}
