//! Exit codes, bad input and clean-up: testmon-run exits as single-process `pytest --testmon`
//! does, refuses bad input with one line on stderr (exit 4, never a panic or a traceback),
//! and leaves nothing behind, neither in the temp directory nor in the project.

use std::collections::BTreeSet;
use std::path::PathBuf;

use crate::support::*;

/// testmon-run's own usage error: exit 4, one line `testmon-run: error: ...` on stderr,
/// nothing on stdout. Returns the message.
fn assert_own_usage_error(run: &Run, what: &str) -> String {
    assert_no_panic_or_traceback(run, what);
    assert_eq!(run.code(), 4, "{what}: exit code\n{}", run.output());
    let stderr = run.stderr.trim();
    assert_eq!(
        stderr.lines().count(),
        1,
        "{what}: not one line on stderr\n{}",
        run.output()
    );
    assert!(
        stderr.starts_with("testmon-run: error: "),
        "{what}: not testmon-run's error line\n{}",
        run.output()
    );
    assert!(
        run.stdout.trim().is_empty(),
        "{what}: output on stdout\n{}",
        run.output()
    );
    stderr.to_string()
}

/// The project files of both twins are the same set.
fn assert_same_files(ours: &Project, theirs: &Project, what: &str) {
    let (ours, theirs) = (ours.files(), theirs.files());
    assert_eq!(
        ours,
        theirs,
        "{what}: the project trees differ (testmon-run left {:?}, pytest left {:?})",
        ours.difference(&theirs).collect::<Vec<_>>(),
        theirs.difference(&ours).collect::<Vec<_>>()
    );
}

/// `testmon-run -n 2` on `ours` (in a fresh sandbox TMPDIR, returned) and single-process
/// `pytest --testmon` on `theirs`.
fn twin_runs(ours: &Project, theirs: &Project, venv: Venv) -> (Run, Run, Sandbox) {
    let tmpdir = Sandbox::fresh();
    let run = tmpdir.testmon_run(ours, venv, &["-n", "2"], &[]).run();
    let single = theirs.pytest(venv, &[]).run();
    (run, single, tmpdir)
}

/// Both exited with `expected`, printed the same summary, ran the same tests; testmon-run
/// left nothing behind (`Sandbox::assert_clean`) and the same files in the project as
/// pytest. The exit code is checked last, so that a wrong code does not hide the rest.
fn assert_twins(
    (run, single, tmpdir): &(Run, Run, Sandbox),
    ours: &Project,
    theirs: &Project,
    expected: i32,
    what: &str,
) {
    assert_no_panic_or_traceback(run, what);
    assert_eq!(
        single.code(),
        expected,
        "{what}: single-process pytest (the reference) exits otherwise\n{}",
        single.output()
    );
    tmpdir.assert_clean(what, &run.output());
    assert_same_files(ours, theirs, what);
    assert_eq!(
        counts(run),
        counts(single),
        "{what}: summary lines differ\n{}\n--- single ---\n{}",
        run.output(),
        single.output()
    );
    assert_same_ran(run, single, what);
    assert_eq!(
        run.code(),
        single.code(),
        "{what}: exit code differs from single-process pytest\n{}\n--- single ---\n{}",
        run.output(),
        single.output()
    );
}

/// One step on twin copies: see `twin_runs` and `assert_twins`.
fn twin_step(ours: &Project, theirs: &Project, venv: Venv, expected: i32, what: &str) -> Run {
    let runs = twin_runs(ours, theirs, venv);
    assert_twins(&runs, ours, theirs, expected, what);
    runs.0
}

fn fix_both(project: &Project) {
    project.edit(
        "tests/test_arith.py",
        "assert arith.add(2, 2) == 5",
        "assert arith.add(2, 2) == 4",
    );
    project.edit(
        "tests/test_strings.py",
        "raise RuntimeError(\"this fixture always fails during setup\")",
        "return None",
    );
}

/// Fresh run (1), unchanged (1, testmon deselects the passing tests), both failures fixed (0),
/// unchanged again (0 with nothing run: testmon deselects everything). Every step leaves no
/// run directory in TMPDIR and the same files as single-process pytest.
#[test]
fn exit_codes_match_pytest_fresh_failing_fixed_and_all_deselected() {
    for venv in VENVS {
        let ours = Project::copy("proj");
        let theirs = Project::copy("proj");

        let fresh = twin_step(&ours, &theirs, venv, 1, &format!("{venv:?} fresh run"));
        assert_eq!(
            fresh.ran.len(),
            53,
            "{venv:?} fresh run\n{}",
            fresh.output()
        );
        assert!(
            counts(&fresh).contains("1 failed") && counts(&fresh).contains("1 error"),
            "{venv:?} fresh run: {}",
            fresh.summary()
        );

        let again = twin_step(&ours, &theirs, venv, 1, &format!("{venv:?} unchanged"));
        assert!(
            counts(&again).contains("deselected"),
            "{venv:?} unchanged: {}",
            again.summary()
        );

        fix_both(&ours);
        fix_both(&theirs);
        let fixed = twin_step(&ours, &theirs, venv, 0, &format!("{venv:?} fixed"));
        assert!(!fixed.ran.is_empty(), "{venv:?} fixed\n{}", fixed.output());

        // testmon 2.x does not even collect unchanged files here, so pytest's own summary
        // says "no tests ran" (not "deselected"); testmon-run must say the same and exit 0,
        // not 5.
        let green = twin_step(&ours, &theirs, venv, 0, &format!("{venv:?} all deselected"));
        assert!(
            green.ran.is_empty(),
            "{venv:?} all deselected: tests ran\n{}",
            green.output()
        );
    }
}

/// A collection error interrupts single-process pytest (2); testmon-run must exit the same
/// and show the error.
#[test]
fn collection_error_exits_like_pytest() {
    for venv in VENVS {
        let what = format!("{venv:?} syntax_error");
        let ours = Project::copy("syntax_error");
        let theirs = Project::copy("syntax_error");
        let runs = twin_runs(&ours, &theirs, venv);
        let run = &runs.0;
        assert_no_panic_or_traceback(run, &what);
        assert!(
            run.stdout.contains("ERROR collecting")
                || run.stdout.contains("error during collection"),
            "{what}: the collection error is not shown\n{}",
            run.output()
        );
        assert!(
            run.stdout.contains("tests/test_broken.py"),
            "{what}: the broken file is not named\n{}",
            run.output()
        );
        assert_twins(&runs, &ours, &theirs, 2, &what);
    }
}

/// A project whose tests directory holds no tests: 5, as pytest.
#[test]
fn no_tests_collected_exits_5_like_pytest() {
    for venv in VENVS {
        let what = format!("{venv:?} empty tests dir");
        let ours = Project::copy("syntax_error");
        let theirs = Project::copy("syntax_error");
        for p in [&ours, &theirs] {
            p.remove("tests/test_ok.py");
            p.remove("tests/test_broken.py");
            p.write("tests/README.txt", "No tests here yet.\n");
            assert_eq!(
                p.files(),
                BTreeSet::from(["conftest.py", "pytest.ini", "tests/README.txt"].map(String::from))
            );
        }
        let run = twin_step(&ours, &theirs, venv, 5, &what);
        assert!(run.ran.is_empty(), "{what}\n{}", run.output());
    }
}

/// A pytest usage error, from the probe: pytest's own message, shown once, and pytest's exit
/// code (4); the same stderr as single-process pytest, nothing added, nothing left behind.
fn assert_pytest_usage_error(venv: Venv, pytest_args: &[&str], message: &str) {
    assert_pytest_usage_error_then(venv, pytest_args, message, "");
}

/// As `assert_pytest_usage_error`, testmon-run's `hint` line (if any) after pytest's stderr.
fn assert_pytest_usage_error_then(venv: Venv, pytest_args: &[&str], message: &str, hint: &str) {
    let what = format!("{venv:?} {pytest_args:?}");
    let project = Project::copy("proj");
    let before = project.files();
    let tmpdir = Sandbox::fresh();
    let run = tmpdir
        .testmon_run(&project, venv, &["-n", "2"], pytest_args)
        .run_plain();
    let single = project.pytest(venv, pytest_args).run_plain();
    assert_no_panic_or_traceback(&run, &what);
    assert_eq!(single.code(), 4, "{what}: reference\n{}", single.output());
    assert_eq!(run.code(), 4, "{what}\n{}", run.output());
    assert_eq!(
        run.stderr.matches(message).count(),
        1,
        "{what}: pytest's message {message:?} not shown exactly once\n{}",
        run.output()
    );
    assert_eq!(
        run.stderr.matches("error:").count(),
        1,
        "{what}: more than pytest's one error line\n{}",
        run.output()
    );
    assert_eq!(
        run.stderr,
        format!("{}{hint}", single.stderr),
        "{what}: stderr differs from single-process pytest's (then testmon-run's hint)"
    );
    assert!(
        run.stdout.trim().is_empty(),
        "{what}: output on stdout\n{}",
        run.output()
    );
    tmpdir.assert_clean(&what, &run.output());
    assert_eq!(project.files(), before, "{what}: the project changed");
}

#[test]
fn bad_pytest_argument_shows_pytests_message_once() {
    for venv in VENVS {
        assert_pytest_usage_error(
            venv,
            &["--no-such-option"],
            "unrecognized arguments: --no-such-option",
        );
    }
}

/// A test path that does not exist: pytest's own `file or directory not found` error
/// (exit 4, on stderr), shown once, as single-process pytest shows it.
#[test]
fn missing_test_path_shows_pytests_message_once() {
    for venv in VENVS {
        let what = format!("{venv:?} tests/nope.py");
        let ours = Project::copy("proj");
        let theirs = Project::copy("proj");
        let tmpdir = Sandbox::fresh();
        let run = tmpdir
            .testmon_run(&ours, venv, &["-n", "2"], &["tests/nope.py"])
            .run();
        let single = theirs.pytest(venv, &["tests/nope.py"]).run();
        let message = "file or directory not found: tests/nope.py";
        assert_no_panic_or_traceback(&run, &what);
        assert_eq!(single.code(), 4, "{what}: reference\n{}", single.output());
        assert_eq!(
            single.stderr.matches(message).count(),
            1,
            "{what}: reference\n{}",
            single.output()
        );
        tmpdir.assert_clean(&what, &run.output());
        assert_same_files(&ours, &theirs, &what);
        assert!(run.ran.is_empty(), "{what}\n{}", run.output());
        assert_eq!(run.code(), 4, "{what}\n{}", run.output());
        assert_eq!(
            run.stderr.matches(message).count(),
            1,
            "{what}: pytest's message {message:?} not shown exactly once on stderr\n{}",
            run.output()
        );
    }
}

/// testmon not available to the command: with its plugin blocked, pytest itself rejects
/// `--testmon` (exit 4): the user sees that message, then a hint to install testmon.
#[test]
fn testmon_not_loaded_is_pytests_usage_error() {
    for venv in VENVS {
        let hint = format!(
            "testmon-run: hint: pytest-testmon is not installed where `{}` runs, or it is \
             disabled (-p no:...): install it there (pip install pytest-testmon)\n",
            venv.pytest().display()
        );
        assert_pytest_usage_error_then(
            venv,
            &["-p", "no:pytest-testmon"],
            "unrecognized arguments: --testmon",
            &hint,
        );
    }
}

#[test]
fn missing_command_is_a_usage_error() {
    let project = Project::copy("proj");
    for args in [&["-n", "2", "--"][..], &["-n", "2"], &[], &["--"]] {
        let what = format!("testmon-run {args:?}");
        let tmpdir = Sandbox::fresh();
        let run = tmpdir.testmon_run_in(&project.root).args(args).run_plain();
        let message = assert_own_usage_error(&run, &what);
        assert!(message.contains("command"), "{what}: {message}");
        tmpdir.assert_clean(&what, &run.output());
    }
}

#[test]
fn command_not_found_is_a_usage_error() {
    let project = Project::copy("proj");
    let before = project.files();
    let tmpdir = Sandbox::fresh();
    let what = "-- /nonexistent/pytest";
    let run = tmpdir
        .testmon_run_in(&project.root)
        .args(["-n", "2", "--", "/nonexistent/pytest", "--testmon"])
        .run_plain();
    let message = assert_own_usage_error(&run, what);
    assert!(message.contains("/nonexistent/pytest"), "{what}: {message}");
    tmpdir.assert_clean(what, &run.output());
    assert_eq!(project.files(), before, "{what}: the project changed");
}

/// A command that is not executable is a usage error naming it (exit 4, as one not found),
/// with workers or without (`-n 0` runs it as it is).
#[test]
fn command_not_executable_is_a_usage_error() {
    use std::os::unix::fs::PermissionsExt;
    let project = Project::copy("proj");
    let script = project.root.join("not-executable-pytest");
    std::fs::write(&script, "#!/bin/sh\nexit 0\n").unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o644)).unwrap();
    let before = project.files();
    for n in ["2", "0"] {
        let what = format!("-n {n} -- ./not-executable-pytest");
        let tmpdir = Sandbox::fresh();
        let run = tmpdir
            .testmon_run_in(&project.root)
            .args(["-n", n, "--", "./not-executable-pytest", "--testmon"])
            .run_plain();
        let message = assert_own_usage_error(&run, &what);
        assert_eq!(
            message,
            "testmon-run: error: ./not-executable-pytest: not executable (permission denied)",
            "{what}"
        );
        tmpdir.assert_clean(&what, &run.output());
        assert_eq!(project.files(), before, "{what}: the project changed");
    }
}

/// The likeliest first mistake, the pytest command without `--` before it, is answered with
/// the command line that works.
#[test]
fn a_missing_double_dash_says_where_the_command_goes() {
    let project = Project::copy("proj");
    for (args, fixed) in [
        (
            &["-n", "2", "pytest", "--testmon"][..],
            "testmon-run -n 2 -- pytest --testmon",
        ),
        (&["-q", "--", "pytest"][..], "testmon-run -- pytest -q"),
    ] {
        let what = format!("testmon-run {args:?}");
        let tmpdir = Sandbox::fresh();
        let run = tmpdir.testmon_run_in(&project.root).args(args).run_plain();
        let message = assert_own_usage_error(&run, &what);
        assert!(
            message.ends_with(&format!(": put the pytest command after --: {fixed}")),
            "{what}: {message}"
        );
        tmpdir.assert_clean(&what, &run.output());
    }
}

/// testmon without pytest's cache plugin fails (a testmon bug: single-process pytest ends in
/// an INTERNALERROR): one line naming the cause and the fix, no traceback.
#[test]
fn testmon_without_the_cache_plugin_names_the_fix() {
    for venv in VENVS {
        let project = Project::copy("proj");
        let what = format!("{venv:?} -p no:cacheprovider");
        let tmpdir = Sandbox::fresh();
        let run = tmpdir
            .testmon_run(&project, venv, &["-n", "2"], &["-p", "no:cacheprovider"])
            .run();
        let message = assert_own_usage_error(&run, &what);
        assert!(
            message.contains("drop `-p no:cacheprovider`"),
            "{what}: {message}"
        );
        tmpdir.assert_clean(&what, &run.output());
    }
}

#[test]
fn command_that_is_not_pytest_is_a_usage_error() {
    let project = Project::copy("proj");
    let before = project.files();
    for program in ["true", "ls"] {
        let what = format!("-- {program}");
        let tmpdir = Sandbox::fresh();
        let run = tmpdir
            .testmon_run_in(&project.root)
            .args(["-n", "2", "--", program])
            .run_plain();
        let message = assert_own_usage_error(&run, &what);
        assert!(
            message.contains(&format!("`{program}")),
            "{what}: the message does not name the command: {message}"
        );
        tmpdir.assert_clean(&what, &run.output());
        assert_eq!(project.files(), before, "{what}: the project changed");
    }
}

#[test]
fn bad_worker_count_and_dist_are_usage_errors() {
    let project = Project::copy("proj");
    let pytest = Venv::Testmon22.pytest();
    let pytest = pytest.to_str().unwrap();
    for (args, bad) in [
        (&["-n", "-1"][..], "-1"),
        (&["-n", "two"], "two"),
        (&["--dist", "each"], "each"),
    ] {
        let what = format!("testmon-run {args:?}");
        let tmpdir = Sandbox::fresh();
        let all = [args, &["--", pytest, "--testmon"]].concat();
        let run = tmpdir.testmon_run_in(&project.root).args(all).run_plain();
        let message = assert_own_usage_error(&run, &what);
        assert!(
            message.contains(bad),
            "{what}: the message does not name {bad:?}: {message}"
        );
        tmpdir.assert_clean(&what, &run.output());
        assert!(
            !project.datafile().exists(),
            "{what}: pytest ran anyway\n{}",
            run.output()
        );
    }
}

#[test]
fn unusable_datafile_is_a_usage_error() {
    for venv in VENVS {
        let project = Project::copy("proj");
        let elsewhere = tempfile::tempdir().unwrap();

        // In a directory that does not exist: refused, and the directory not created.
        let missing_dir = elsewhere.path().join("missing");
        let datafile = missing_dir.join("x.testmondata");
        let what = format!("{venv:?} --datafile in a missing directory");
        let tmpdir = Sandbox::fresh();
        let run = tmpdir
            .testmon_run(
                &project,
                venv,
                &["-n", "2", "--datafile", datafile.to_str().unwrap()],
                &[],
            )
            .run_plain();
        let message = assert_own_usage_error(&run, &what);
        assert!(
            message.contains(missing_dir.to_str().unwrap()),
            "{what}: {message}"
        );
        assert!(!missing_dir.exists(), "{what}: the directory was created");
        tmpdir.assert_clean(&what, &run.output());

        // A directory: refused, and left empty.
        let dir = elsewhere.path().join("a-directory");
        std::fs::create_dir(&dir).unwrap();
        let what = format!("{venv:?} --datafile is a directory");
        let tmpdir = Sandbox::fresh();
        let run = tmpdir
            .testmon_run(
                &project,
                venv,
                &["-n", "2", "--datafile", dir.to_str().unwrap()],
                &[],
            )
            .run_plain();
        let message = assert_own_usage_error(&run, &what);
        assert!(message.contains(dir.to_str().unwrap()), "{what}: {message}");
        assert!(entries(&dir).is_empty(), "{what}: written into {dir:?}");
        tmpdir.assert_clean(&what, &run.output());

        // Not a SQLite file: refused, and left exactly as it was, nothing beside it.
        project.write(".testmondata", "hello");
        let before = project.files();
        let what = format!("{venv:?} .testmondata is not SQLite");
        let tmpdir = Sandbox::fresh();
        let run = tmpdir
            .testmon_run(&project, venv, &["-n", "2"], &[])
            .run_plain();
        let message = assert_own_usage_error(&run, &what);
        assert!(message.contains(".testmondata"), "{what}: {message}");
        assert_eq!(project.read(".testmondata"), "hello", "{what}");
        assert_eq!(project.files(), before, "{what}: the project changed");
        tmpdir.assert_clean(&what, &run.output());
    }
}

/// `--keep-run-dir` keeps the run directory in TMPDIR, says where on stderr, and it holds the
/// plan and the workers' spools.
#[test]
fn keep_run_dir_keeps_plan_and_spools() {
    for venv in VENVS {
        let what = format!("{venv:?} --keep-run-dir");
        let project = Project::copy("proj");
        let tmpdir = Sandbox::fresh();
        let run = tmpdir
            .testmon_run(&project, venv, &["-n", "2", "--keep-run-dir"], &[])
            .run();
        assert_no_panic_or_traceback(&run, &what);
        assert_eq!(run.code(), 1, "{what}\n{}", run.output());
        let kept: Vec<&str> = run
            .stderr
            .lines()
            .filter_map(|l| l.strip_prefix("testmon-run: run directory kept at "))
            .collect();
        assert_eq!(
            kept.len(),
            1,
            "{what}: path not printed once\n{}",
            run.output()
        );
        let kept = PathBuf::from(kept[0].trim());
        let base = run_base(tmpdir.path());
        assert_eq!(
            kept.parent(),
            Some(base.as_path()),
            "{what}: {} is not in this user's base in TMPDIR",
            kept.display()
        );
        let name = kept.file_name().unwrap().to_string_lossy().into_owned();
        assert!(name.starts_with("testmon-run-"), "{what}: {name}");
        assert_eq!(run_dirs(tmpdir.path()), [name], "{what}: the base");
        let base_name = base.file_name().unwrap().to_string_lossy().into_owned();
        assert_eq!(entries(tmpdir.path()), [base_name], "{what}: TMPDIR");
        // Private to this user: the base and the run directory 0700, every file 0600.
        assert_eq!(mode(&base), 0o700, "{what}: the base's mode");
        for dir in [kept.clone(), kept.join("python")] {
            assert_eq!(mode(&dir), 0o700, "{what}: {}", dir.display());
            for entry in entries(&dir) {
                let path = dir.join(&entry);
                if path.is_file() {
                    assert_eq!(mode(&path), 0o600, "{what}: {}", path.display());
                }
            }
        }
        let inside = entries(&kept);
        assert!(
            inside.iter().any(|f| f == "plan.json"),
            "{what}: no plan.json in {inside:?}"
        );
        assert!(
            inside.iter().any(|f| f.starts_with("spool")),
            "{what}: no spool in {inside:?}"
        );
        std::fs::remove_dir_all(&kept).unwrap();
        std::fs::remove_dir(&base).unwrap();
        assert!(entries(tmpdir.path()).is_empty());
    }
}

/// `-n 0` runs the command as it is: the same exit code, tests, summary and records as
/// single-process pytest, and no run directory.
#[test]
fn zero_workers_runs_the_command_as_is() {
    for venv in VENVS {
        let what = format!("{venv:?} -n 0");
        let ours = Project::copy("proj");
        let theirs = Project::copy("proj");
        let tmpdir = Sandbox::fresh();
        let run = tmpdir.testmon_run(&ours, venv, &["-n", "0"], &[]).run();
        let single = theirs.pytest(venv, &[]).run();
        assert_no_panic_or_traceback(&run, &what);
        assert_eq!(single.code(), 1, "{what}: reference\n{}", single.output());
        assert_eq!(
            run.code(),
            single.code(),
            "{what}\n{}\n--- single ---\n{}",
            run.output(),
            single.output()
        );
        assert_eq!(run.ran.len(), 53, "{what}\n{}", run.output());
        assert_same_ran(&run, &single, &what);
        assert_eq!(counts(&run), counts(&single), "{what}");
        assert!(
            !run.stdout.lines().any(|l| l.starts_with("testmon-run")),
            "{what}: testmon-run's own header or report\n{}",
            run.output()
        );
        tmpdir.assert_clean(&what, &run.output());
        assert_same_files(&ours, &theirs, &what);
        assert_same_records(&dump(&ours.datafile()), &dump(&theirs.datafile()), &what);
    }
}

#[test]
fn help_exits_0_with_an_example() {
    let project = Project::copy("proj");
    for flag in ["--help", "-h"] {
        let tmpdir = Sandbox::fresh();
        let run = tmpdir.testmon_run_in(&project.root).arg(flag).run_plain();
        assert_no_panic_or_traceback(&run, flag);
        assert_eq!(run.code(), 0, "{flag}\n{}", run.output());
        assert!(
            run.stdout
                .lines()
                .any(|l| l.trim_start().starts_with("testmon-run -n")),
            "{flag}: no example line\n{}",
            run.output()
        );
        assert!(run.stderr.is_empty(), "{flag}\n{}", run.output());
        tmpdir.assert_clean(flag, &run.output());
    }
}

#[test]
fn pytests_own_informational_options_pass_through() {
    for (venv, version) in [
        (Venv::Testmon22, "9.2.0"),
        (Venv::Pytest90, "9.0.2"),
        (Venv::Testmon21, "8.3.5"),
    ] {
        let project = Project::copy("proj");
        let tmpdir = Sandbox::fresh();
        let run = tmpdir
            .testmon_run_in(&project.root)
            .args(["-n", "2", "--"])
            .arg(venv.pytest())
            .arg("--version")
            .run_plain();
        assert_eq!(run.code(), 0, "{venv:?}\n{}", run.output());
        assert!(
            format!("{}{}", run.stdout, run.stderr).contains(&format!("pytest {version}")),
            "{}",
            run.output()
        );
        tmpdir.assert_clean("pytest --version", &run.output());

        let run = tmpdir
            .testmon_run_in(&project.root)
            .args(["-n", "2", "--"])
            .arg(venv.pytest())
            .arg("--help")
            .run_plain();
        assert_eq!(run.code(), 0, "{venv:?}\n{}", run.output());
        assert!(
            run.stdout.contains("--testmon"),
            "pytest's help, with testmon's options: {}",
            run.output()
        );
        assert!(!project.datafile().exists(), "--help touched the database");
    }
}
