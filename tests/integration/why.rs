//! `testmon-run why`: it explains the selection of the next run (new database, packages
//! changed, changed files with their tests, failed and new tests) and its count is what the
//! next real run selects; it runs no test, leaves the project (datafile included) byte for
//! byte as it was and nothing in TMPDIR; bad input is one line and a documented exit code.

use std::collections::BTreeMap;

use crate::support::*;

const CALC: &str = "def add(a, b):\n    return a + b\n\n\ndef mul(a, b):\n    return a * b\n";

const TEST_CALC: &str = "import calc\n\n\ndef test_add():\n    assert calc.add(1, 2) == 3\n\n\n\
def test_add_zero():\n    assert calc.add(0, 0) == 0\n\n\ndef test_mul():\n    assert calc.mul(2, 3) == 6\n\n\n\
def test_both():\n    assert calc.mul(calc.add(1, 1), 2) == 4\n";

/// Five green tests: four of calc.py (two of them call `mul`), one of nothing.
fn project() -> Project {
    let project = Project::empty("why");
    project.write("calc.py", CALC);
    project.write("tests/test_calc.py", TEST_CALC);
    project.write(
        "tests/test_other.py",
        "def test_plain():\n    assert True\n",
    );
    project
}

/// Every file of the project with its content.
fn snapshot(project: &Project) -> BTreeMap<String, Vec<u8>> {
    project
        .files()
        .into_iter()
        .map(|f| {
            let bytes = std::fs::read(project.path(&f)).unwrap();
            (f, bytes)
        })
        .collect()
}

/// `testmon-run why -- <venv>/bin/pytest --testmon ARGS` in the project, TMPDIR the sandbox;
/// asserts it ran no test, changed nothing in the project (not even `__pycache__`, which the
/// tests' commands otherwise keep out) and left nothing in TMPDIR.
fn why(project: &Project, sandbox: &Sandbox, venv: Venv, args: &[&str]) -> Run {
    let before = snapshot(project);
    let mut cmd = sandbox.testmon_run_in(&project.root);
    cmd.env_remove(ENV_ADDED.0)
        .arg("why")
        .arg("--")
        .arg(venv.pytest())
        .arg("--testmon")
        .args(args);
    let run = cmd.run();
    assert_no_panic_or_traceback(&run, "why");
    assert!(run.ran.is_empty(), "why ran tests: {:?}", run.ran);
    let after = snapshot(project);
    assert_eq!(
        before.keys().collect::<Vec<_>>(),
        after.keys().collect::<Vec<_>>(),
        "why added or removed files in the project\n{}",
        run.output()
    );
    for (file, bytes) in &before {
        assert!(
            after[file] == *bytes,
            "why changed {file}\n{}",
            run.output()
        );
    }
    sandbox.assert_clean("why", &run.output());
    run
}

/// `why` that explained: exit 0, the explanation on stdout.
fn explained(project: &Project, sandbox: &Sandbox, venv: Venv) -> String {
    let run = why(project, sandbox, venv, &[]);
    assert_eq!(run.code(), 0, "{}", run.output());
    run.stdout
}

/// A real run, `testmon-run -n 2`.
fn real_run(project: &Project, sandbox: &Sandbox, venv: Venv) -> Run {
    settle();
    let run = sandbox.testmon_run(project, venv, &["-n", "2"], &[]).run();
    settle();
    run
}

/// The `selected: N of M tests` count of an explanation (0 for "nothing would be selected").
fn selected(text: &str) -> usize {
    if text.contains("\nnothing would be selected: ") {
        return 0;
    }
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix("selected: "))
        .unwrap_or_else(|| panic!("no selected line:\n{text}"));
    line.split(' ').next().unwrap().parse().unwrap()
}

fn header(venv: Venv) -> String {
    let version = if venv == Venv::Testmon21 {
        "2.1.4"
    } else {
        "2.2.0"
    };
    format!("testmon-run why: datafile .testmondata (environment \"default\", testmon {version})\n")
}

fn new_database(venv: Venv) {
    let project = project();
    let sandbox = Sandbox::fresh();
    let text = explained(&project, &sandbox, venv);
    assert_eq!(
        text,
        format!(
            "{}new database: .testmondata does not exist: every test is selected\n\
             selected: 5 of 5 tests\n",
            header(venv)
        )
    );
    assert!(!project.datafile().exists());
}

fn nothing_changed_then_a_function_body(venv: Venv) {
    let project = project();
    let sandbox = Sandbox::fresh();
    let first = real_run(&project, &sandbox, venv);
    assert_eq!(first.code(), 0, "{}", first.output());
    assert_eq!(first.ran.len(), 5);

    let text = explained(&project, &sandbox, venv);
    assert!(
        text.starts_with(&header(venv))
            && text.contains("\nenvironment: unchanged since the last run (python ")
            && text.contains("\nchanged files: none (of 3 tracked)\n")
            && text.ends_with("\nnothing would be selected: no tracked file changed\n"),
        "{text}"
    );

    project.edit("calc.py", "return a * b", "return b * a");
    settle();
    let text = explained(&project, &sandbox, venv);
    assert!(
        text.contains(
            "\nchanged files: 1 (of 3 tracked)\n  calc.py    2 tests\nselected: 2 of 5 tests\n"
        ),
        "{text}"
    );
    let next = real_run(&project, &sandbox, venv);
    assert_eq!(next.code(), 0, "{}", next.output());
    assert_eq!(
        next.ran.iter().map(String::as_str).collect::<Vec<_>>(),
        [
            "tests/test_calc.py::test_both",
            "tests/test_calc.py::test_mul"
        ],
        "{}",
        next.output()
    );
    assert_eq!(selected(&text), next.ran.len());
}

fn failed_and_new_tests(venv: Venv) {
    let project = project();
    let sandbox = Sandbox::fresh();
    project.write(
        "tests/test_fail.py",
        "import calc\n\n\ndef test_fails():\n    assert calc.add(1, 1) == 3\n",
    );
    let first = real_run(&project, &sandbox, venv);
    assert_eq!(first.code(), 1, "{}", first.output());
    project.write(
        "tests/test_new.py",
        "def test_new():\n    assert 1 + 1 == 2\n",
    );
    settle();
    let text = explained(&project, &sandbox, venv);
    assert!(
        text.contains("\nchanged files: none (of 4 tracked)\n")
            && text.contains(
                "\nnever ran or failed: 1 failed last time, 1 without a record (new, or \
                 deselected last time)\n"
            )
            && text.ends_with("\nselected: 2 of 7 tests\n"),
        "{text}"
    );
    let next = real_run(&project, &sandbox, venv);
    assert_eq!(
        next.ran.iter().map(String::as_str).collect::<Vec<_>>(),
        [
            "tests/test_fail.py::test_fails",
            "tests/test_new.py::test_new"
        ],
        "{}",
        next.output()
    );
    assert_eq!(selected(&text), next.ran.len());
}

fn packages_changed(venv: Venv) {
    let project = project();
    let sandbox = Sandbox::fresh();
    assert_eq!(real_run(&project, &sandbox, venv).code(), 0);
    // The last run's packages, as if one package had been upgraded and one uninstalled since.
    let conn = rusqlite::Connection::open(project.datafile()).unwrap();
    let packages: String = conn
        .query_row(
            "SELECT system_packages FROM environment WHERE environment_name = 'default'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    let first = packages.split(", ").next().unwrap();
    let (name, version) = first.rsplit_once(' ').unwrap();
    let old = packages.replacen(first, &format!("{name} 0.1"), 1) + ", zzz-gone 1.0";
    conn.execute("UPDATE environment SET system_packages = ?", [&old])
        .unwrap();
    drop(conn);
    settle();
    let text = explained(&project, &sandbox, venv);
    assert_eq!(
        text,
        format!(
            "{}environment: packages changed since the last run: {name} 0.1 → {version}, \
             zzz-gone 1.0 (removed); every test is selected\nselected: 5 of 5 tests\n",
            header(venv)
        )
    );
    let next = real_run(&project, &sandbox, venv);
    assert_eq!(next.ran.len(), 5, "{}", next.output());
}

fn bad_input(venv: Venv) {
    let project = project();
    let sandbox = Sandbox::fresh();
    project.write(".testmondata", "not a database at all");
    let run = why(&project, &sandbox, venv, &[]);
    assert_eq!(run.code(), 4, "{}", run.output());
    assert_eq!(run.stdout, "");
    let datafile = project.datafile();
    assert_eq!(
        run.stderr,
        format!(
            "testmon-run: error: datafile {} is not a SQLite database; left as it is\n",
            datafile.display()
        )
    );
    assert_eq!(project.read(".testmondata"), "not a database at all");

    // A command without --testmon has nothing to explain.
    project.remove(".testmondata");
    let mut cmd = sandbox.testmon_run_in(&project.root);
    cmd.arg("why").arg("--").arg(venv.pytest());
    let run = cmd.run_plain();
    assert_eq!(run.code(), 4, "{}", run.output());
    assert!(
        run.stderr.starts_with("testmon-run: error: `")
            && run.stderr.ends_with("` does not turn testmon on: add --testmon (testmon-run why -- pytest --testmon ...)\n")
            && run.stderr.lines().count() == 1,
        "{}",
        run.output()
    );
    sandbox.assert_clean("why without --testmon", &run.output());
}

#[test]
fn why_new_database_testmon22() {
    new_database(Venv::Testmon22);
}

#[test]
fn why_new_database_testmon21() {
    new_database(Venv::Testmon21);
}

#[test]
fn why_nothing_changed_then_a_function_body_testmon22() {
    nothing_changed_then_a_function_body(Venv::Testmon22);
}

#[test]
fn why_nothing_changed_then_a_function_body_testmon21() {
    nothing_changed_then_a_function_body(Venv::Testmon21);
}

#[test]
fn why_failed_and_new_tests_testmon22() {
    failed_and_new_tests(Venv::Testmon22);
}

#[test]
fn why_failed_and_new_tests_testmon21() {
    failed_and_new_tests(Venv::Testmon21);
}

#[test]
fn why_packages_changed_testmon22() {
    packages_changed(Venv::Testmon22);
}

#[test]
fn why_packages_changed_testmon21() {
    packages_changed(Venv::Testmon21);
}

#[test]
fn why_bad_input_testmon22() {
    bad_input(Venv::Testmon22);
}

#[test]
fn why_bad_input_testmon21() {
    bad_input(Venv::Testmon21);
}

/// A datafile testmon 2.1 wrote, explained for testmon 2.2: its data version.
#[test]
fn why_other_data_version() {
    let project = project();
    let sandbox = Sandbox::fresh();
    assert_eq!(real_run(&project, &sandbox, Venv::Testmon21).code(), 0);
    let text = explained(&project, &sandbox, Venv::Testmon22);
    assert_eq!(
        text,
        format!(
            "{}new database: .testmondata is data version 13, testmon 2.2.0 needs 14: testmon \
             will start it over: every test is selected\nselected: 5 of 5 tests\n",
            header(Venv::Testmon22)
        )
    );
}
