//! The no-op fast path (src/noop/) and the probe cache (src/probe/cache.rs): the fast path
//! answers "nothing to run" only where single-process testmon selects nothing, and it does
//! answer when nothing changed after a green run. Everything it depends on, changed, makes
//! the run go through pytest again.

use std::path::Path;

use crate::parity::{check_fast_path, STEPS};
use crate::support::*;

/// The two deliberate failures of the `proj` fixture fixed: every step is green.
const FIXES: &[&str] = &["failing test fixed", "setup error fixed"];

fn green_proj() -> Project {
    let project = Project::copy("proj");
    for (name, edit) in STEPS {
        if FIXES.contains(name) {
            edit(&project);
        }
    }
    project
}

/// After every edit of the parity sequence (failures fixed first), a run and then a run with
/// nothing changed, by testmon-run and by single-process testmon on a twin copy: the fast
/// path answers exactly in the no-change runs, where single-process testmon selects nothing,
/// and the records stay the same.
fn differential(venv: Venv) {
    let parallel = green_proj();
    let single = green_proj();
    for (step_name, edit) in STEPS.iter().filter(|(n, _)| !FIXES.contains(n)) {
        edit(&parallel);
        edit(&single);
        settle();
        let step = format!("{venv:?}: {step_name}");
        let (ours, theirs) = run_both(&parallel, &single, venv, &["-n", "2"], &[], &step);
        assert_eq!(
            ours.code(),
            0,
            "{step}: every step is green\n{}",
            ours.output()
        );
        check_fast_path(step_name, &ours, &theirs, &[]);
        let no_change = step_name.starts_with("nothing changed");
        let after_first = *step_name != "from an empty database";
        assert_eq!(
            answered_fast(&ours),
            no_change && after_first,
            "{step}: fast path only when nothing changed\n{}",
            ours.output()
        );
        settle();
        let again = format!("{step}, then nothing changed");
        let (ours, theirs) = run_both(&parallel, &single, venv, &["-n", "2"], &[], &again);
        assert!(
            answered_fast(&ours),
            "{again}: no fast path\n{}",
            ours.output()
        );
        assert!(
            theirs.ran.is_empty(),
            "{again}: single ran {:?}",
            theirs.ran
        );
        assert_same_records(
            &dump(&parallel.datafile()),
            &dump(&single.datafile()),
            &again,
        );
    }
}

#[test]
fn noop_differential_testmon22() {
    differential(Venv::Testmon22);
}

#[test]
fn noop_differential_testmon21() {
    differential(Venv::Testmon21);
}

fn run(project: &Project, pytest_args: &[&str]) -> Run {
    project
        .testmon_run(Venv::Testmon22, &["-n", "2"], pytest_args)
        .run()
}

/// A green project with a completed run behind it, whose next run is answered fast.
fn armed(pytest_args: &[&str]) -> Project {
    let project = green_proj();
    settle();
    let first = run(&project, pytest_args);
    assert_eq!(first.code(), 0, "{}", first.output());
    let second = run(&project, pytest_args);
    assert!(answered_fast(&second), "{}", second.output());
    assert!(second.ran.is_empty());
    project
}

#[test]
fn the_fast_path_answers_as_pytest_does_and_starts_nothing() {
    let project = armed(&[]);
    let fast = run(&project, &[]);
    assert_eq!(fast.code(), 0);
    assert!(answered_fast(&fast));
    assert!(
        fast.summary().contains(" no tests ran in "),
        "{}",
        fast.output()
    );
    assert!(
        fast.stdout.contains(
            "(changed files: 0, unchanged files: 9, environment: default): selected 0, deselected 0"
        ),
        "testmon's own words: {}",
        fast.stdout
    );
    // -q (another command: its first run goes through pytest): no header, the summary line
    // only; the JSON report as for any run.
    let report = project.path("report.json");
    let quiet = || {
        project
            .testmon_run(
                Venv::Testmon22,
                &["-n", "2", "--json-report", report.to_str().unwrap()],
                &["-q"],
            )
            .run()
    };
    let workers = || -> serde_json::Value {
        serde_json::from_str::<serde_json::Value>(&std::fs::read_to_string(&report).unwrap())
            .unwrap()["workers"]
            .clone()
    };
    assert_eq!(quiet().code(), 0);
    assert_eq!(workers(), 2, "the first -q run goes through pytest");
    let quiet = quiet();
    assert_eq!(quiet.code(), 0);
    assert!(
        quiet.stdout.trim().starts_with("no tests ran in"),
        "{}",
        quiet.stdout
    );
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    assert_eq!(json["selected"], 0);
    assert_eq!(json["workers"], 0);
    assert_eq!(json["exit_code"], 0);
}

#[test]
fn an_edit_reverted_still_answers_fast_and_an_edit_does_not() {
    let project = armed(&[]);
    let original = project.read("calc/arith.py");
    project.write("calc/arith.py", &original);
    settle();
    let same = run(&project, &[]);
    assert!(
        answered_fast(&same),
        "same bytes, new times: {}",
        same.output()
    );

    project.write("calc/unimported.py", "X = 1\n");
    settle();
    let added = run(&project, &[]);
    assert!(!answered_fast(&added), "a file added: {}", added.output());
    assert!(
        added.ran.is_empty(),
        "testmon selects nothing: {:?}",
        added.ran
    );
    let after = run(&project, &[]);
    assert!(answered_fast(&after), "kept again: {}", after.output());

    project.remove("calc/unimported.py");
    settle();
    let removed = run(&project, &[]);
    assert!(
        !answered_fast(&removed),
        "a file removed: {}",
        removed.output()
    );

    project.edit(
        "calc/arith.py",
        "    if value > high:\n        return high\n    return value",
        "    return min(value, high)",
    );
    settle();
    let edited = run(&project, &[]);
    assert!(!answered_fast(&edited));
    assert!(
        edited.ran.iter().any(|t| t.contains("test_clamp")),
        "{:?}",
        edited.ran
    );
}

#[test]
fn a_failing_test_or_another_writer_of_the_database_turns_the_fast_path_off() {
    let project = armed(&[]);
    // Single-process testmon writes the datafile: the next run goes through pytest.
    let theirs = project.pytest(Venv::Testmon22, &[]).run();
    assert!(theirs.ran.is_empty());
    let after_writer = run(&project, &[]);
    assert!(!answered_fast(&after_writer), "{}", after_writer.output());
    assert!(after_writer.ran.is_empty());

    project.edit(
        "tests/test_arith.py",
        "assert arith.add(2, 2) == 4",
        "assert arith.add(2, 2) == 5",
    );
    settle();
    let failing = run(&project, &[]);
    assert_eq!(failing.code(), 1);
    // Nothing changed since, but testmon selects its failing test again: so do we.
    for _ in 0..2 {
        let again = run(&project, &[]);
        assert!(!answered_fast(&again), "{}", again.output());
        assert!(
            again
                .ran
                .contains("tests/test_arith.py::test_known_failure"),
            "{:?}",
            again.ran
        );
    }
}

#[test]
fn selection_off_file_arguments_stepwise_and_junit_never_take_the_fast_path() {
    for args in [
        &["-k", "not clamp"][..],
        &["--testmon-noselect"],
        &["tests/test_arith.py::test_add"],
        &["tests/test_arith.py", "tests/sub"],
        &["--sw"],
        &["--junitxml", "junit.xml"],
    ] {
        let project = green_proj();
        settle();
        for _ in 0..3 {
            let run = run(&project, args);
            assert_eq!(run.code(), 0, "{args:?}: {}", run.output());
            assert!(!answered_fast(&run), "{args:?}: {}", run.output());
        }
    }
}

/// Runs keeping the run directory; returns the run and whether the probe ran (its answer,
/// probe.json, is in the run directory).
fn run_probed(project: &Project, site: &std::path::Path) -> (Run, bool) {
    let tmpdir = Sandbox::fresh();
    let run = tmpdir
        .testmon_run(
            project,
            Venv::Testmon22,
            &["-n", "2", "--keep-run-dir"],
            &[],
        )
        .env("PYTHONPATH", site)
        .run_plain();
    let kept: Vec<String> = run_dirs(tmpdir.path());
    let probed = match kept.as_slice() {
        [] => false, // the fast path: no run directory at all
        [dir] => run_base(tmpdir.path())
            .join(dir)
            .join("probe.json")
            .exists(),
        more => panic!("run directories: {more:?}"),
    };
    (run, probed)
}

#[test]
fn ini_conftest_and_installed_packages_are_checked_before_reusing_the_probe() {
    // A directory on PYTHONPATH where a "package" gets installed.
    let site = fresh_tmpdir();
    let site = site.path();
    let project = green_proj();
    settle();
    let (first, probed) = run_probed(&project, site);
    assert!(probed && first.code() == 0, "{}", first.output());
    let (fast, probed) = run_probed(&project, site);
    assert!(answered_fast(&fast) && !probed, "{}", fast.output());

    // A test file edited: pytest runs, the probe's answer is reused.
    project.edit(
        "tests/test_arith.py",
        "def test_add",
        "def test_add_renamed",
    );
    settle();
    let (edited, probed) = run_probed(&project, site);
    assert!(!answered_fast(&edited) && !probed, "{}", edited.output());
    assert_eq!(edited.code(), 0);

    // A package appears: probed again; testmon runs everything ("packages changed"), and so
    // do we.
    let dist = site.join("extra_pkg-1.0.dist-info");
    std::fs::create_dir(&dist).unwrap();
    std::fs::write(
        dist.join("METADATA"),
        "Metadata-Version: 2.1\nName: extra-pkg\nVersion: 1.0\n",
    )
    .unwrap();
    let (installed, probed) = run_probed(&project, site);
    assert!(
        !answered_fast(&installed) && probed,
        "{}",
        installed.output()
    );
    assert!(
        installed.stdout.contains("packages changed: all tests run"),
        "{}",
        installed.stdout
    );
    assert!(answered_fast(&run_probed(&project, site).0));

    // pytest.ini changes: probed again, and the probe sees it (selection now off).
    project.write(
        "pytest.ini",
        "[pytest]\ntestpaths = tests\naddopts = -m 'not nothing'\n",
    );
    settle();
    let (ini, probed) = run_probed(&project, site);
    assert!(!answered_fast(&ini) && probed, "{}", ini.output());
    assert!(
        ini.output().contains("testmon selection is off"),
        "{}",
        ini.output()
    );
    project.write("pytest.ini", "[pytest]\ntestpaths = tests\n");
    settle();
    let (back, probed) = run_probed(&project, site);
    assert!(probed && back.code() == 0, "{}", back.output());
    assert!(answered_fast(&run_probed(&project, site).0));

    // The root conftest.py changes: probed again.
    let conftest = project.read("conftest.py");
    project.write("conftest.py", &format!("{conftest}\n# changed\n"));
    settle();
    let (changed, probed) = run_probed(&project, site);
    assert!(!answered_fast(&changed) && probed, "{}", changed.output());
}

#[test]
fn without_a_cache_directory_every_run_goes_through_pytest() {
    let project = green_proj();
    settle();
    for _ in 0..2 {
        let mut cmd = project.testmon_run(Venv::Testmon22, &["-n", "2"], &[]);
        cmd.env("TESTMON_RUN_CACHE_DIR", "");
        let run = cmd.run();
        assert_eq!(run.code(), 0);
        assert!(!answered_fast(&run), "{}", run.output());
    }
}

/// A non-Python file testmon only learns about during the run (a template a test compiles)
/// is in the state the run keeps: the first no-op after the full run is answered fast, and
/// an edit to the file runs its test. The run starts right after the files are written: a
/// file written just before a run is kept by its contents.
#[test]
fn files_testmon_learns_during_the_run_and_fresh_edits_keep_the_fast_path() {
    for venv in VENVS {
        let what = format!("{venv:?}");
        let project = Project::empty("templates");
        project.write("tests/res/page.tmpl", "X = 1\nY = X + 1\n");
        project.write(
            "tests/test_page.py",
            "import os\n\n\ndef test_page():\n    \
             path = os.path.join(os.path.dirname(__file__), 'res', 'page.tmpl')\n    \
             ns = {}\n    exec(compile(open(path).read(), path, 'exec'), ns)\n    \
             assert ns['Y'] == 2\n\n\ndef test_plain():\n    assert 1 + 1 == 2\n",
        );
        let run = |project: &Project| project.testmon_run(venv, &["-n", "2"], &[]).run();
        let full = run(&project);
        assert_eq!(full.code(), 0, "{what}\n{}", full.output());
        assert_eq!(full.ran.len(), 2, "{what}\n{}", full.output());
        let noop = run(&project);
        assert!(
            answered_fast(&noop),
            "{what}: the first no-op\n{}",
            noop.output()
        );
        settle();
        project.edit("tests/res/page.tmpl", "X + 1", "X + 2");
        let edited = run(&project);
        assert_eq!(edited.code(), 1, "{what}\n{}", edited.output());
        assert_eq!(
            edited.ran,
            ["tests/test_page.py::test_page".to_string()].into(),
            "{what}\n{}",
            edited.output()
        );
    }
}

/// `scripts/demo`, as the README shows it, with this build: every step of every tool runs
/// green, and its no-op step is answered by the fast path (the demo marks it `*` only when
/// testmon-run's header says "no workers": no Python started).
#[test]
fn the_demos_noop_step_is_answered_by_the_fast_path() {
    let bin_dir = Path::new(BIN).parent().unwrap();
    let mut cmd = Cmd::new(repo().join("scripts/demo"), &repo());
    cmd.env("TESTMON_RUN_DEMO_BIN_DIR", bin_dir);
    let run = cmd.run_plain();
    assert_eq!(run.code(), 0, "{}", run.output());
    let noop_row = run
        .stdout
        .lines()
        .find(|l| l.starts_with("4. no-op run"))
        .unwrap_or_else(|| panic!("no summary row for the no-op step\n{}", run.output()));
    assert!(noop_row.contains(" * "), "{noop_row}\n{}", run.output());
    assert!(
        run.stdout
            .contains("* answered by testmon-run's fast path (its header says \"no workers\")"),
        "{}",
        run.output()
    );
    for step in ["1. full run (new database)", "3. incremental run"] {
        let row = run.stdout.lines().find(|l| l.starts_with(step));
        assert!(row.is_some(), "{step}\n{}", run.output());
    }
}
