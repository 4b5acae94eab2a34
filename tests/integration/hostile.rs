//! Hostile tests and projects: tests that fork, close fds 0-2, change the working directory,
//! call os._exit(0), print megabytes or write to the worker's socket; a conftest that prints
//! at import; paths with spaces and unicode; odd and very long node ids; a read-only project
//! tree; workers that speak garbage or another build's protocol. Each run must end (no hang),
//! with a clear report, the other tests recorded, no worker process and no run directory
//! left, and where single-process `pytest --testmon` survives, the same outcome as it.
//!
//! Fixtures: `tests/fixtures/hostile/` and `tests/fixtures/foreign_worker/`.

use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::support::*;

/// A directory name with spaces, unicode and a quote. Not brackets: under a rootdir whose path
/// holds `[1]`, coverage (testmon's) records no file but the test files, as its include
/// patterns are globs; single-process pytest --testmon alike, so nothing of ours to test.
const ODD_NAME: &str = "hö st 日本 'q'";

/// A TMPDIR for testmon-run whose path has spaces, unicode, a quote and brackets.
fn odd_tmpdir() -> Sandbox {
    Sandbox::fresh_at("tmp dïr 'ü' [2]")
}

/// The lines of pytest's "short test summary info" section.
/// The short test summary's lines, object addresses (`at 0x7f...`, shown in full when $CI
/// is set, as pytest then does not shorten the lines) masked: they differ per process.
fn short_summary(run: &Run) -> Vec<String> {
    run.stdout
        .lines()
        .skip_while(|l| !l.contains(" short test summary info "))
        .skip(1)
        .take_while(|l| !l.starts_with('=') && !l.starts_with("testmon-run:"))
        .map(mask_addresses)
        .collect()
}

fn mask_addresses(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut rest = line;
    while let Some(at) = rest.find(" at 0x") {
        out.push_str(&rest[..at + 6]);
        rest = rest[at + 6..].trim_start_matches(|c: char| c.is_ascii_hexdigit());
        out.push('…');
    }
    out.push_str(rest);
    out
}

/// Tests recorded with testmon's "not yet run" placeholder instead of a real fingerprint.
fn placeholders(records: &Dump) -> BTreeSet<String> {
    records["default"]
        .iter()
        .filter(|(_, r)| r.is_placeholder())
        .map(|(name, _)| name.clone())
        .collect()
}

/// A copy of the `hostile` fixture in a directory named `ODD_NAME`.
fn hostile_at_odd_path() -> Project {
    let mut project = Project::copy("hostile");
    let odd = project.root.parent().unwrap().join(ODD_NAME);
    std::fs::rename(&project.root, &odd).unwrap();
    project.root = odd;
    project
}

fn count_lines(text: &str, pred: impl Fn(&str) -> bool) -> usize {
    text.lines().filter(|l| pred(l)).count()
}

/// The whole `hostile/tests` tree (a conftest printing at import, odd ids, a very long id,
/// unicode and spaced paths, a test changing the cwd, megabytes of output, fds 0-2 closed, a
/// fork whose child leaves properly), in a project whose own path has spaces, unicode and a
/// quote, with a TMPDIR like it (and brackets): the same results and records as single-process
/// pytest, and after an edit the same selection.
#[test]
fn hostile_tests_at_an_odd_path_run_and_record_as_in_one_pytest() {
    for venv in VENVS {
        let ours = hostile_at_odd_path();
        let theirs = hostile_at_odd_path();
        let tmpdir = odd_tmpdir();
        let run = tmpdir.testmon_run(&ours, venv, &["-n", "2"], &[]).run();
        let single = theirs.pytest(venv, &[]).run();
        let what = format!("{venv:?}, first run");
        assert_no_panic_or_traceback(&run, &what);
        assert_eq!(single.code(), 1, "{what}: reference\n{}", single.output());
        assert_eq!(run.code(), 1, "{what}\n{}", run.output());
        assert_eq!(counts(&run), counts(&single), "{what}\n{}", run.output());
        assert_eq!(counts(&run), "4 failed, 22 passed", "{what}");
        assert_same_ran(&run, &single, &what);
        assert_eq!(run.ran.len(), 26, "{what}: {:?}", run.ran);
        for id in [
            "tests/test_ids.py::test_odd_id[[]",
            "tests/test_ids.py::test_odd_id[a::b]",
            "tests/test_ids.py::test_odd_id[::]",
            "tests/test_ids.py::test_odd_id[\\u65e5\\u672c]",
            "tests/test_ids.py::test_odd_id[quote'\"]",
            "tests/test_ids.py::test_odd_id[back\\\\slash]",
            "tests/test_ids.py::test_ünïcödé_名前",
            "tests/test_ids.py::TestBrackets::test_in_class[[1]::[2]]",
            "tests/dïr with space/test_spaced.py::test_in_spaced_dir",
            "tests/test_ünï.py::test_in_unicode_file",
        ] {
            assert!(run.ran.contains(id), "{what}: {id} did not run");
        }
        // The failures, the very long id's in full, in pytest's words and order.
        assert_eq!(short_summary(&run), short_summary(&single), "{what}");
        let long_fails = format!(
            "FAILED tests/test_ids.py::test_long_id_fails[long-{}-fails]",
            "x".repeat(3000)
        );
        assert!(
            short_summary(&run)
                .iter()
                .any(|l| l.starts_with(&long_fails)),
            "{what}: {:?}",
            short_summary(&run)
        );
        // The megabyte the failing test printed is shown in full, as pytest shows it.
        let y_line = |l: &str| l.len() == 1023 && l.bytes().all(|b| b == b'y');
        assert_eq!(count_lines(&single.stdout, y_line), 1024, "{what}");
        assert_eq!(count_lines(&run.stdout, y_line), 1024, "{what}");
        assert!(run.stdout.contains("the last line of the output"), "{what}");
        assert_same_records(&dump(&ours.datafile()), &dump(&theirs.datafile()), &what);
        assert!(placeholders(&dump(&ours.datafile())).is_empty(), "{what}");
        tmpdir.assert_clean(&what, &run.output());

        // An edit: every test that reached `calc.label` (odd ids, the unicode file) is
        // selected again, and the failing ones, as testmon always reruns them.
        for project in [&ours, &theirs] {
            project.edit(
                "calc.py",
                "return f\"<{text}>\"",
                "return \"<\" + text + \">\"",
            );
        }
        let run = tmpdir.testmon_run(&ours, venv, &["-n", "2"], &[]).run();
        let single = theirs.pytest(venv, &[]).run();
        let what = format!("{venv:?}, after editing calc.label");
        assert_no_panic_or_traceback(&run, &what);
        assert_eq!(run.code(), single.code(), "{what}\n{}", run.output());
        assert_same_ran(&run, &single, &what);
        assert_eq!(run.ran.len(), 11 + 1 + 4, "{what}: {:?}", run.ran);
        assert_eq!(counts(&run), counts(&single), "{what}");
        assert_same_records(&dump(&ours.datafile()), &dump(&theirs.datafile()), &what);
        tmpdir.assert_clean(&what, &run.output());
    }
}

/// With `-s` the megabytes and the conftest's import-time lines are streamed, tagged with the
/// worker, line by line: never a partial line, never one taken for a protocol message.
#[test]
fn megabytes_and_import_time_prints_stream_whole_lines_with_s() {
    let venv = Venv::Testmon22;
    let ours = Project::copy("hostile");
    let theirs = Project::copy("hostile");
    let tmpdir = Sandbox::fresh();
    let args = ["-s", "tests/test_output.py"];
    let run = tmpdir.testmon_run(&ours, venv, &["-n", "2"], &args).run();
    let single = theirs.pytest(venv, &args).run();
    assert_no_panic_or_traceback(&run, "-s");
    assert_eq!(run.code(), 1, "{}", run.output());
    assert_eq!(run.code(), single.code());
    assert_eq!(counts(&run), counts(&single));
    assert_eq!(counts(&run), "1 failed, 2 passed");
    let tagged = |l: &str| l.starts_with("[gw0] ") || l.starts_with("[gw1] ");
    // Each worker imports the conftest: its lines once per worker, the JSON-looking one too.
    for line in [
        "conftest: printed at import",
        "{\"t\": \"hello\", \"protocol\": 0, \"worker\": \"conftest\", \"pid\": 1}",
        "conftest: on stderr at import",
    ] {
        assert_eq!(
            count_lines(&run.stdout, |l| tagged(l) && &l[6..] == line),
            2,
            "{line}\n{}",
            run.output().chars().take(3000).collect::<String>()
        );
    }
    // One of them follows the conftest's last line, which has no newline (as in pytest).
    let x_line = |l: &str| tagged(l) && l.ends_with(&format!(" {}", "x".repeat(1014)));
    assert_eq!(count_lines(&run.stdout, x_line), 2048);
    let o_line = "o".repeat(1024 * 1024);
    assert_eq!(
        count_lines(&run.stdout, |l| tagged(l) && l.ends_with(&o_line)),
        1
    );
    tmpdir.assert_clean("-s", &run.output());
}

/// `crashers/test_exit.py` calls os._exit(0). A single pytest process ends right there,
/// silently, with exit code 0 and none of the tests after it run: pytest cannot survive it.
/// testmon-run reports the test as an error naming the crash, runs and records every other
/// test, and exits 3.
#[test]
fn os_exit_in_a_test_is_an_error_and_the_rest_runs_and_is_recorded() {
    let args = ["crashers/test_exit.py", "tests/test_ids.py"];
    for venv in VENVS {
        let single = Project::copy("hostile").pytest(venv, &args).run();
        assert_eq!(
            single.code(),
            0,
            "{venv:?}: pytest exits 0\n{}",
            single.output()
        );
        assert!(!single.stdout.contains(" passed"), "{}", single.output());
        assert_eq!(single.ran.len(), 1, "{venv:?}: {:?}", single.ran);

        let project = Project::copy("hostile");
        let tmpdir = Sandbox::fresh();
        let run = tmpdir
            .testmon_run(&project, venv, &["-n", "2"], &args)
            .run();
        let what = format!("{venv:?}: os._exit(0)");
        assert_no_panic_or_traceback(&run, &what);
        assert!(
            run.stdout.contains(
                "crashed while running 'crashers/test_exit.py::test_calls_os_exit_0' \
                 (exit code 0)"
            ),
            "{what}\n{}",
            run.output()
        );
        assert_eq!(counts(&run), "1 failed, 13 passed, 1 error", "{what}");
        // The crash is that test's error; a new worker took over: every test ran.
        assert_eq!(run.code(), 1, "{what}: a crash is the test's error");
        assert_eq!(run.ran.len(), 15, "{what}: every test started");
        let crashed = "crashers/test_exit.py::test_calls_os_exit_0";
        let (again, expected) =
            assert_crash_recorded(&project, &tmpdir, venv, &args, (&run, 15), crashed, &what);
        // test_exit is among them, and crashes again: the others still run.
        assert_eq!(again.ran, expected, "{what}: next run\n{}", again.output());
    }
}

/// The count in the header line: `...: selected N, deselected M`.
fn selected(run: &Run) -> usize {
    run.stdout
        .split(": selected ")
        .nth(1)
        .and_then(|rest| rest.split(',').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no header\n{}", run.output()))
}

/// The counts of pytest's final line, added up ("1 failed, 13 passed, 1 error": 15).
fn reported(run: &Run) -> usize {
    counts(run)
        .split(", ")
        .filter(|part| !part.contains("deselected") && !part.contains("warning"))
        .filter_map(|part| part.split(' ').next()?.parse::<usize>().ok())
        .sum()
}

/// After a worker was lost: every one of the `collected` tests has a record (a real one, or
/// testmon's placeholder for tests whose fingerprints went with the worker), the failed flags
/// are right, and the next run selects exactly the placeholders and the failures. Returns
/// that next run and what it should have run.
fn assert_crash_recorded(
    project: &Project,
    tmpdir: &Sandbox,
    venv: Venv,
    args: &[&str],
    (run, collected): (&Run, usize),
    crashed: &str,
    what: &str,
) -> (Run, BTreeSet<String>) {
    tmpdir.assert_clean(what, &run.output());
    let records = dump(&project.datafile());
    let tests = &records["default"];
    let names: BTreeSet<String> = tests.keys().cloned().collect();
    assert!(
        names.is_superset(&run.ran) && names.len() == collected,
        "{what}: every test has a record: {names:?}"
    );
    let placeholders = placeholders(&records);
    let failed: BTreeSet<String> = tests
        .iter()
        .filter(|(_, r)| r.failed == Some(1))
        .map(|(n, _)| n.clone())
        .collect();
    // The failing test, and the crashed one (recorded as failed, or as testmon's placeholder).
    assert!(
        failed
            .iter()
            .all(|n| n.contains("test_long_id_fails") || n == crashed),
        "{what}: {failed:?}"
    );
    // Every other test has its real fingerprints: those the crashed worker had not written
    // yet ran again.
    assert!(
        placeholders.iter().all(|n| n == crashed),
        "{what}: tests without their records: {placeholders:?}"
    );
    let again = tmpdir.testmon_run(project, venv, &["-n", "2"], args).run();
    let expected: BTreeSet<String> = placeholders.union(&failed).cloned().collect();
    assert_eq!(
        selected(&again),
        expected.len(),
        "{what}: next run selects {expected:?}\n{}",
        again.output()
    );
    (again, expected)
}

/// `crashers/test_socket.py` writes a line that is not JSON to the worker's socket: the
/// supervisor names the garbage, kills that worker, and the other worker runs the rest; every
/// test is reported once. Exit 3. (Single-process pytest has no socket: no parity.)
/// Which test the error lands on is a race, see `garbage_is_blamed_on_the_test_that_wrote_it`.
#[test]
fn a_test_writing_to_the_workers_socket_is_reported_and_the_rest_runs() {
    let args = ["tests/test_ids.py", "crashers/test_socket.py"];
    for venv in VENVS {
        let project = Project::copy("hostile");
        let tmpdir = Sandbox::fresh();
        let run = tmpdir
            .testmon_run(&project, venv, &["-n", "2"], &args)
            .run();
        let what = format!("{venv:?}: garbage on the socket");
        assert_no_panic_or_traceback(&run, &what);
        assert!(
            run.stdout.contains(
                "testmon-run: error: worker gw0: unreadable message from worker (expected ident \
                 at line 1 column 2): \"this is not json\""
            ) || run.stdout.contains(
                "testmon-run: error: worker gw1: unreadable message from worker (expected ident \
                 at line 1 column 2): \"this is not json\""
            ),
            "{what}\n{}",
            run.output()
        );
        assert!(
            run.stdout.contains("an unreadable message on its socket"),
            "{what}\n{}",
            run.output()
        );
        assert_eq!(reported(&run), 15, "{what}: every test reported once");
        assert!(counts(&run).starts_with("1 failed, "), "{what}");
        assert_eq!(run.code(), 3, "{what}");
        let crashed = "crashers/test_socket.py::test_writes_to_the_workers_socket";
        assert_crash_recorded(&project, &tmpdir, venv, &args, (&run, 15), crashed, &what);
    }
}

/// The error lands on the test that wrote the garbage and says why its worker ended:
/// testmon-run killed it for what it wrote on the socket (not "crashed ... (killed by
/// SIGKILL)", as for the OOM killer). The worker's result for that test, which follows the
/// garbage on the socket, is not listened to: the test does not count as passed, and the
/// test the worker held next, which never ran, gets no error.
#[test]
fn garbage_is_blamed_on_the_test_that_wrote_it() {
    let venv = Venv::Testmon22;
    let project = Project::copy("hostile");
    let tmpdir = Sandbox::fresh();
    let args = ["tests/test_ids.py", "crashers/test_socket.py"];
    let run = tmpdir
        .testmon_run(&project, venv, &["-n", "2"], &args)
        .run();
    assert_eq!(run.code(), 3, "{}", run.output());
    assert!(
        !run.stdout.contains("killed by SIGKILL"),
        "{}",
        run.output()
    );
    let errors: Vec<String> = short_summary(&run)
        .into_iter()
        .filter(|l| l.starts_with("ERROR "))
        .collect();
    assert_eq!(errors.len(), 1, "{}", run.output());
    assert!(
        errors[0].starts_with("ERROR crashers/test_socket.py::test_writes_to_the_workers_socket")
            && errors[0].contains("unreadable message"),
        "{}",
        run.output()
    );
    assert_eq!(run.ran.len(), 15, "every test ran: {:?}", run.ran);
    assert_eq!(counts(&run), "1 failed, 13 passed, 1 error");
    tmpdir.assert_clean("garbage", &run.output());
}

/// `crashers/test_fork_forget.py` forks and the child goes on running the session, with the
/// tests after it in its module: two processes on one worker socket and one spool. Single-
/// process pytest survives it (its output twice, each copy counting every test once: "1
/// failed, 20 passed", exit 1 for the failing long id). testmon-run should report each test
/// once and record them all; it counts the tests after the fork twice ("1 failed, 26 passed"),
/// or both copies open the spool and one dies with an INTERNALERROR (UNIQUE constraint failed:
/// environment.id), exit 3; with the tests spread differently it has hung.
#[test]
fn a_forked_child_that_goes_on_does_not_confuse_the_run() {
    let args = ["tests/test_ids.py", "crashers/test_fork_forget.py"];
    let venv = Venv::Testmon22;
    let single = Project::copy("hostile").pytest(venv, &args).run();
    assert_eq!(single.code(), 1, "{}", single.output());
    // Both copies of that pytest print their final line to the same stdout, sometimes on one
    // line ("1 failed, 20 passed in 0.31s ===...=== 1 failed, 20 passed"): each copy's counts.
    let single_counts: Vec<&str> = single
        .summary()
        .split('=')
        .map(str::trim)
        .filter(|part| !part.is_empty())
        .map(|part| part.rsplit_once(" in ").map_or(part, |(counts, _)| counts))
        .collect();
    assert!(!single_counts.is_empty(), "{}", single.output());
    for copy in single_counts {
        assert_eq!(copy, "1 failed, 20 passed", "{}", single.output());
    }
    let project = Project::copy("hostile");
    let tmpdir = Sandbox::fresh();
    let report = tmpdir.path().join("report.json");
    let report_arg = report.to_str().unwrap();
    // loadfile: the fork's module on one worker, the tests after the fork held by it.
    let builder = tmpdir.testmon_run(
        &project,
        venv,
        &["-n", "2", "--dist", "loadfile", "--json-report", report_arg],
        &args,
    );
    let start = Instant::now();
    let run = builder.run();
    assert!(
        start.elapsed() < Duration::from_secs(60),
        "{}",
        run.output()
    );
    assert_eq!(counts(&run), "1 failed, 20 passed", "{}", run.output());
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    let reported: Vec<&str> = json["tests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["nodeid"].as_str().unwrap())
        .collect();
    let unique: BTreeSet<&str> = reported.iter().copied().collect();
    assert_eq!(reported.len(), unique.len(), "each test once: {reported:?}");
    assert_eq!(unique.len(), 21);
    assert_eq!(run.code(), 1, "{}", run.output());
    assert!(placeholders(&dump(&project.datafile())).is_empty());
    std::fs::remove_file(&report).unwrap();
    tmpdir.assert_clean("fork", &run.output());
}

/// `crashers/test_fork_linger.py` forks a child that outlives its test by 30 s, holding the
/// worker's socket. The run ends (after the supervisor's 2 s linger) and reports the test as
/// passed; but the child is still running when testmon-run has exited (and its run directory
/// is gone). The workers' process groups are testmon-run's: nothing of them should outlive it.
#[test]
fn a_lingering_forked_child_does_not_outlive_the_run() {
    let venv = Venv::Testmon22;
    let project = Project::copy("hostile");
    let tmpdir = Sandbox::fresh();
    let args = ["tests/test_ünï.py", "crashers/test_fork_linger.py"];
    let start = Instant::now();
    let run = tmpdir
        .testmon_run(&project, venv, &["-n", "2"], &args)
        .run();
    // Not waiting for the child.
    assert!(
        start.elapsed() < Duration::from_secs(25),
        "{}",
        run.output()
    );
    assert_eq!(run.code(), 0, "{}", run.output());
    assert_eq!(counts(&run), "2 passed");
    tmpdir.assert_clean("lingering child", &run.output());
}

/// `crashers/test_cwd_deleted.py` moves into a directory it deletes; coverage, restarted by
/// testmon after the next test, cannot resolve the cwd: pytest's INTERNALERROR in a test's
/// teardown, after that test's call had failed. Single-process pytest reports the failure
/// ("1 failed"), then the INTERNALERROR, exit 3. In testmon-run the worker sends a test's
/// reports only after its teardown: the failure vanishes from the report, and the final line
/// counts one test less than were selected, with nothing naming the missing test.
#[test]
fn an_internal_error_in_a_teardown_keeps_the_tests_reports() {
    let venv = Venv::Testmon22;
    let args = ["crashers/test_cwd_deleted.py", "tests/test_fork.py"];
    let single = Project::copy("hostile").pytest(venv, &args).run();
    assert_eq!(single.code(), 3, "{}", single.output());
    assert!(single.stderr.contains("INTERNALERROR") || single.stdout.contains("INTERNALERROR"));
    assert_eq!(counts(&single), "1 failed, 3 passed, 1 warning");
    let project = Project::copy("hostile");
    let tmpdir = Sandbox::fresh();
    // loadfile: the cwd module's tests run on one worker, in order.
    let run = tmpdir
        .testmon_run(&project, venv, &["-n", "2", "--dist", "loadfile"], &args)
        .run();
    assert!(run.stderr.contains("INTERNALERROR"), "{}", run.output());
    assert!(
        run.stdout
            .contains("FAILED crashers/test_cwd_deleted.py::test_after_the_cwd_is_gone_fails"),
        "{}",
        run.output()
    );
    assert_eq!(counts(&run), counts(&single), "{}", run.output());
    assert_eq!(run.code(), 3);
    tmpdir.assert_clean("deleted cwd", &run.output());
}

/// Whether this process runs as root, whom file modes do not stop from writing.
fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            let uids = status.lines().find(|l| l.starts_with("Uid:"))?.to_string();
            Some(uids.split_whitespace().nth(2) == Some("0"))
        })
        .unwrap_or(false)
}

/// Runs `script` in a new user and mount namespace where `root` is a read-only bind mount.
const READ_ONLY_SCRIPT: &str = r#"root=$1; shift
mount --bind "$root" "$root" && mount -o remount,bind,ro "$root" || exit 98
if touch "$root/.rw-check" 2>/dev/null; then echo "$root is writable" >&2; exit 99; fi
cd "$root" && exec "$@""#;

/// A project tree nobody can write to while the guard lives: file modes without write bits,
/// and for root (whom modes do not stop) a read-only bind mount around each command.
struct ReadOnly {
    root: PathBuf,
}

impl ReadOnly {
    /// None when the tree cannot be made read-only here (root without user namespaces).
    fn new(root: &Path) -> Option<ReadOnly> {
        if is_root() {
            let ok = Command::new("unshare")
                .args(["-rm", "sh", "-c", READ_ONLY_SCRIPT, "sh"])
                .arg(root)
                .arg("true")
                .status()
                .is_ok_and(|s| s.success());
            if !ok {
                eprintln!("skipped: running as root and `unshare -rm` cannot mount read-only");
                return None;
            }
        }
        set_modes(root, false);
        Some(ReadOnly {
            root: root.to_path_buf(),
        })
    }

    /// Runs a command (as `Cmd::run` does: with `-p ran_log`) inside the read-only tree.
    fn run(&self, cmd: &Cmd) -> Run {
        let inner = cmd.command();
        let mut outer = if is_root() {
            let mut c = Command::new("unshare");
            c.args(["-rm", "sh", "-c", READ_ONLY_SCRIPT, "sh"])
                .arg(&self.root)
                .arg(inner.get_program());
            c
        } else {
            Command::new(inner.get_program())
        };
        outer.args(inner.get_args());
        outer.current_dir(&self.root);
        for (key, value) in inner.get_envs() {
            match value {
                Some(value) => outer.env(key, value),
                None => outer.env_remove(key),
            };
        }
        run_recording(outer)
    }
}

impl Drop for ReadOnly {
    fn drop(&mut self) {
        set_modes(&self.root, true); // so that the temporary directory can be removed
    }
}

fn set_modes(path: &Path, writable: bool) {
    let is_dir = path.is_dir();
    let mode = match (is_dir, writable) {
        (true, true) => 0o755,
        (true, false) => 0o555,
        (false, true) => 0o644,
        (false, false) => 0o444,
    };
    let set = || std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode));
    if writable {
        let _ = set(); // best effort: called from Drop
    }
    if is_dir {
        for entry in std::fs::read_dir(path).into_iter().flatten().flatten() {
            set_modes(&entry.path(), writable);
        }
    }
    if !writable {
        set().unwrap();
    }
}

/// Passing tests of `hostile`, for the read-only runs.
const PASSING: [&str; 3] = [
    "tests/test_ünï.py",
    "tests/test_fork.py",
    "tests/test_fds.py",
];

/// Read-only twins, each with its datafile elsewhere (TESTMON_DATAFILE, in a directory with
/// spaces and unicode), and a TMPDIR for testmon-run.
struct ReadOnlyTwins {
    // Dropped first: the trees are made writable again before they are removed.
    ours_ro: ReadOnly,
    theirs_ro: ReadOnly,
    ours: Project,
    theirs: Project,
    data: tempfile::TempDir,
    tmpdir: Sandbox,
}

impl ReadOnlyTwins {
    fn new() -> Option<ReadOnlyTwins> {
        let ours = Project::copy("hostile");
        let theirs = Project::copy("hostile");
        let data = fresh_tmpdir();
        std::fs::create_dir(data.path().join("data dïr")).unwrap();
        Some(ReadOnlyTwins {
            ours_ro: ReadOnly::new(&ours.root)?,
            theirs_ro: ReadOnly::new(&theirs.root)?,
            ours,
            theirs,
            data,
            tmpdir: Sandbox::fresh(),
        })
    }

    fn datafile(&self, who: &str) -> PathBuf {
        self.data
            .path()
            .join("data dïr")
            .join(format!("{who} ünï.db"))
    }

    fn run_both(&self, venv: Venv, pytest_args: &[&str]) -> (Run, Run) {
        let mut cmd = self
            .tmpdir
            .testmon_run(&self.ours, venv, &["-n", "2"], pytest_args);
        cmd.env("TESTMON_DATAFILE", self.datafile("ours"));
        let run = self.ours_ro.run(&cmd);
        let mut cmd = self.theirs.pytest(venv, pytest_args);
        cmd.env("TESTMON_DATAFILE", self.datafile("theirs"));
        let single = self.theirs_ro.run(&cmd);
        (run, single)
    }
}

/// A read-only project with its datafile elsewhere: testmon-run runs, records in that file
/// what single-process pytest records in its own, leaves nothing behind, and the next run
/// uses the file (selecting nothing). The exit code is checked on testmon 2.2 only: under
/// pytest 8.3.5 (testmon 2.1) it is 3, see `a_read_only_project_exits_as_pytest_does`.
#[test]
fn a_read_only_project_records_in_a_datafile_elsewhere() {
    for venv in VENVS {
        let Some(twins) = ReadOnlyTwins::new() else {
            return;
        };
        let (run, single) = twins.run_both(venv, &PASSING);
        let what = format!("{venv:?}: read-only, first run");
        assert_no_panic_or_traceback(&run, &what);
        assert_eq!(single.code(), 0, "{what}: reference\n{}", single.output());
        assert!(
            single.stdout.contains("PytestCacheWarning"),
            "{what}: the tree is read-only\n{}",
            single.output()
        );
        if venv == Venv::Testmon22 {
            assert_eq!(run.code(), 0, "{what}\n{}", run.output());
        }
        assert!(
            counts(&run).starts_with("4 passed"),
            "{what}\n{}",
            run.output()
        );
        assert_same_ran(&run, &single, &what);
        assert_same_records(
            &dump(&twins.datafile("ours")),
            &dump(&twins.datafile("theirs")),
            &what,
        );
        assert!(!twins.ours.datafile().exists());
        twins.tmpdir.assert_clean(&what, &run.output());

        let (run, single) = twins.run_both(venv, &PASSING);
        let what = format!("{venv:?}: read-only, second run");
        assert_no_panic_or_traceback(&run, &what);
        assert_eq!(single.code(), 0, "{what}\n{}", single.output());
        if venv == Venv::Testmon22 {
            assert_eq!(run.code(), 0, "{what}\n{}", run.output());
        }
        assert!(run.ran.is_empty(), "{what}: {:?}", run.ran);
        assert!(single.ran.is_empty(), "{what}: {:?}", single.ran);
        assert!(
            counts(&run).starts_with("4 deselected"),
            "{what}\n{}",
            run.output()
        );
        twins.tmpdir.assert_clean(&what, &run.output());
    }
}

/// pytest cannot write its cache in a read-only tree: it warns and exits as the tests say (0
/// when they pass, 1 when one fails). testmon-run writes pytest's `lastfailed` and `stepwise`
/// itself, and a failure to write them is fatal: "testmon-run: error: writing pytest's cache:
/// creating .../.pytest_cache/v/cache: Read-only file system", exit 3, whenever there is
/// something to write: a failing test; and under pytest 8.3.5, which clears `stepwise` at
/// every session end, always.
#[test]
fn a_read_only_project_exits_as_pytest_does() {
    for venv in VENVS {
        for (args, code) in [
            (&PASSING[..], 0),
            (&["tests/dïr with space/test_spaced.py"][..], 1),
        ] {
            let Some(twins) = ReadOnlyTwins::new() else {
                return;
            };
            let (run, single) = twins.run_both(venv, args);
            let what = format!("{venv:?}: read-only, {args:?}");
            assert_eq!(
                single.code(),
                code,
                "{what}: reference\n{}",
                single.output()
            );
            assert!(
                !run.stderr.contains("testmon-run: error"),
                "{what}\n{}",
                run.output()
            );
            assert_eq!(run.code(), code, "{what}\n{}", run.output());
            assert_same_records(
                &dump(&twins.datafile("ours")),
                &dump(&twins.datafile("theirs")),
                &what,
            );
            twins.tmpdir.assert_clean(&what, &run.output());
        }
    }
}

/// pytest 9 warns once that it cannot write its cache (PytestCacheWarning at
/// cacheprovider.py) and counts one warning. testmon-run counts one per worker (their messages
/// differ by a random file name) and shows the warning's location in its own worker plugin,
/// in a run directory that no longer exists.
#[test]
fn a_read_only_project_warns_as_pytest_does() {
    let venv = Venv::Testmon22;
    let Some(twins) = ReadOnlyTwins::new() else {
        return;
    };
    let (run, single) = twins.run_both(venv, &PASSING);
    assert_eq!(counts(&single), "4 passed, 1 warning");
    assert!(
        !run.stdout.contains("_testmon_run_worker"),
        "{}",
        run.output()
    );
    assert_eq!(counts(&run), counts(&single), "{}", run.output());
}

/// A read-only project whose datafile would be inside it: one clear line naming the file,
/// exit 3 (pytest's INTERNALERROR exit, testmon's own "unable to open database file").
#[test]
fn a_read_only_project_without_a_datafile_elsewhere_is_one_clear_error() {
    let venv = Venv::Testmon21;
    let project = Project::copy("hostile");
    let Some(read_only) = ReadOnly::new(&project.root) else {
        return;
    };
    let tmpdir = Sandbox::fresh();
    let cmd = tmpdir.testmon_run(&project, venv, &["-n", "2"], &PASSING);
    let run = read_only.run(&cmd);
    assert_no_panic_or_traceback(&run, "datafile in a read-only tree");
    assert_eq!(run.code(), 3, "{}", run.output());
    let stderr = run.stderr.trim();
    assert_eq!(stderr.lines().count(), 1, "{}", run.output());
    assert!(
        stderr.starts_with("testmon-run: error: opening ")
            && stderr.contains(&format!("{}", project.datafile().display())),
        "{}",
        run.output()
    );
    assert!(run.ran.is_empty());
    tmpdir.assert_clean("datafile in a read-only tree", &run.output());
}

/// `python -m pytest` puts the current directory first on sys.path, so the `foreign_worker`
/// project's own `_testmon_run_worker.py` is imported in place of testmon-run's: a worker of
/// another build, saying what $FOREIGN_WORKER chooses. Each case: a clear error per worker,
/// exit 3, no hang (the foreign worker waits up to 60 s for the supervisor), nothing left.
#[test]
fn a_worker_of_another_build_or_speaking_garbage_is_a_clear_error() {
    let ours = testmon_run::protocol::PROTOCOL;
    let gw0 = format!("worker gw0 speaks protocol 1, this testmon-run speaks {ours}");
    let gw1 = format!("worker gw1 speaks protocol 1, this testmon-run speaks {ours}");
    let cases: [(&str, Venv, &[&str]); 6] = [
        ("old-protocol", Venv::Testmon22, &[gw0.as_str()]),
        ("old-protocol", Venv::Testmon21, &[gw1.as_str()]),
        (
            "garbage",
            Venv::Testmon22,
            &["worker gw0: unreadable message from worker (expected value at line 1 column 1): \"\\0"],
        ),
        (
            "unknown-message",
            Venv::Testmon21,
            &["worker gw1: unreadable message from worker (unknown variant `progress`"],
        ),
        (
            "truncated",
            Venv::Testmon22,
            // A message cut off by the worker's end is not taken for garbage (a worker killed
            // mid-message): its exit is the error.
            &[
                "worker gw0 crashed (exit code 0) before it finished collecting",
                "worker gw1 crashed (exit code 0) before it finished collecting",
            ],
        ),
        (
            "silent",
            Venv::Testmon21,
            &["worker gw0 crashed (exit code 0) before it finished collecting"],
        ),
    ];
    for (scenario, venv, expected) in cases {
        let project = Project::copy("foreign_worker");
        let tmpdir = Sandbox::fresh();
        let mut cmd = tmpdir.testmon_run_in(&project.root);
        cmd.args(["-n", "2", "--"])
            .arg(venv.python())
            .args(["-m", "pytest", "--testmon"])
            .env("FOREIGN_WORKER", scenario);
        let start = Instant::now();
        let run = cmd.run_plain();
        let what = format!("{scenario} ({venv:?})");
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "{what}: took {:?}\n{}",
            start.elapsed(),
            run.output()
        );
        assert_no_panic_or_traceback(&run, &what);
        for line in expected {
            assert!(
                run.stdout.contains(&format!("testmon-run: error: {line}")),
                "{what}: {line}\n{}",
                run.output()
            );
        }
        assert_eq!(counts(&run), "no tests ran", "{what}\n{}", run.output());
        assert_eq!(run.code(), 3, "{what}\n{}", run.output());
        tmpdir.assert_clean(&what, &run.output());
    }
}
