//! What happens when things go wrong during a run: a worker crashes, workers collect
//! different tests, the user presses Ctrl-C.

use std::collections::BTreeSet;
use std::io::Read;
use std::process::Stdio;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use nix::unistd::Pid;

use crate::support::*;

/// A run started with its stdout piped, read until a number of tests passed.
pub struct Started {
    pub child: std::process::Child,
    pub stdout: std::process::ChildStdout,
    /// What stdout said so far.
    pub seen: Vec<u8>,
}

/// Starts `builder` and reads its stdout until `count` `PASSED ` lines (`-v`) came.
pub fn start_until_passed(builder: &Cmd, count: usize) -> Started {
    let mut cmd = builder.command();
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut seen = Vec::new();
    let start = Instant::now();
    while passed_lines(&seen).len() < count {
        let mut buf = [0u8; 64];
        let n = stdout.read(&mut buf).unwrap();
        assert!(n > 0, "run ended early: {}", String::from_utf8_lossy(&seen));
        seen.extend_from_slice(&buf[..n]);
        assert!(start.elapsed() < TIMEOUT, "no progress");
    }
    Started {
        child,
        stdout,
        seen,
    }
}

/// The node ids of the `PASSED <nodeid> [gwN]` lines in `-v` output.
pub fn passed_lines(seen: &[u8]) -> BTreeSet<String> {
    String::from_utf8_lossy(seen)
        .lines()
        .filter_map(passed_nodeid)
        .map(String::from)
        .collect()
}

fn pid(child: &std::process::Child) -> Pid {
    Pid::from_raw(child.id() as i32)
}

pub fn signal(child: &std::process::Child, signal: Signal) {
    nix::sys::signal::kill(pid(child), signal).unwrap();
}

/// The pids of the workers (and their children) of the runs under `tmpdir`.
fn worker_pids(tmpdir: &Sandbox) -> Vec<Pid> {
    workers_under(tmpdir.path())
        .into_iter()
        .map(|(_, pid)| pid)
        .collect()
}

#[test]
fn a_crashed_worker_is_reported_replaced_and_the_rest_is_recorded() {
    for venv in VENVS {
        let project = Project::copy("crash");
        let tmpdir = Sandbox::fresh();
        let run = tmpdir.testmon_run(&project, venv, &["-n", "2"], &[]).run();
        // The crash is the test's error; every other test ran: pytest's "tests failed".
        assert_eq!(run.code(), 1, "{venv:?}\n{}", run.output());
        assert!(
            run.stdout.contains(
                "crashed while running 'tests/test_crash.py::test_dies' (killed by SIGKILL)"
            ),
            "{}",
            run.output()
        );
        assert!(
            run.stdout.contains("testmon-run: replacing worker gw"),
            "{}",
            run.output()
        );
        assert!(
            run.summary().contains("16 passed, 1 error"),
            "{}",
            run.summary()
        );
        assert_eq!(run.ran.len(), 17, "{:?}", run.ran);
        // Every test that passed has its real fingerprint, those the crashed worker had
        // not written yet included (they ran again); the crashed test is recorded as failed
        // or as testmon's placeholder, so the next run selects it.
        let records = dump(&project.datafile());
        let tests = &records["default"];
        for n in 0..8 {
            for name in ["before", "after"] {
                let test = format!("tests/test_crash.py::test_{name}[{n}]");
                let record = tests
                    .get(&test)
                    .unwrap_or_else(|| panic!("{test} not recorded"));
                assert_eq!(record.failed, Some(0), "{test}");
                assert!(
                    !record.is_placeholder(),
                    "{venv:?}: {test} has no real fingerprint: {record:?}"
                );
            }
        }
        tmpdir.assert_clean(&format!("{venv:?}"), &run.output());
        let again = tmpdir.testmon_run(&project, venv, &["-n", "2"], &[]).run();
        let expected: BTreeSet<String> = ["tests/test_crash.py::test_dies".to_string()].into();
        assert_eq!(again.ran, expected, "{}", again.output());
    }
}

#[test]
fn a_test_past_timeout_is_an_error_and_its_worker_is_replaced() {
    let venv = Venv::Testmon22;
    let project = Project::copy("faulty");
    let tmpdir = Sandbox::fresh();
    let run = tmpdir
        .testmon_run(&project, venv, &["-n", "2", "--timeout", "3"], &[])
        .env("FAULTY_HANG", "1")
        .run();
    assert_eq!(run.code(), 1, "{}", run.output());
    assert!(
        run.stdout.contains(
            "ERROR tests/test_faulty.py::test_hang - Timeout: 'tests/test_faulty.py::test_hang' \
             ran longer than 3s (--timeout); worker 'gw"
        ),
        "{}",
        run.output()
    );
    assert!(
        run.summary().contains("27 passed, 1 error"),
        "{}",
        run.summary()
    );
    tmpdir.assert_clean("timeout", &run.output());
    // Recorded as failed: selected again, and nothing else.
    let again = tmpdir.testmon_run(&project, venv, &["-n", "2"], &[]).run();
    assert_eq!(again.code(), 0, "{}", again.output());
    let expected: BTreeSet<String> = ["tests/test_faulty.py::test_hang".to_string()].into();
    assert_eq!(again.ran, expected, "{}", again.output());
}

#[test]
fn crashes_past_max_worker_restart_leave_tests_not_run_and_exit_3() {
    let venv = Venv::Testmon22;
    let project = Project::copy("faulty");
    let tmpdir = Sandbox::fresh();
    let run = tmpdir
        .testmon_run(
            &project,
            venv,
            &["-n", "2", "--max-worker-restart", "1"],
            &[],
        )
        .env("FAULTY_CRASH", "1")
        .run();
    assert_eq!(run.code(), 3, "{}", run.output());
    assert!(
        run.stdout
            .contains("not replaced: --max-worker-restart 1 reached"),
        "{}",
        run.output()
    );
    assert_eq!(
        run.stdout.matches("testmon-run: replacing worker").count(),
        1,
        "{}",
        run.output()
    );
    assert!(
        run.stdout.contains("tests were not run:"),
        "{}",
        run.output()
    );
    tmpdir.assert_clean("--max-worker-restart", &run.output());
}

#[test]
fn differing_collections_warn_and_run_each_test_once() {
    for venv in VENVS {
        let project = Project::copy("unstable_ids");
        // With the zygote every worker has gw0's collection: nothing can differ.
        let run = project.testmon_run(venv, &["-n", "2"], &[]).run();
        assert_eq!(run.code(), 0, "{}", run.output());
        assert!(
            !run.stdout.contains("collected different tests"),
            "{}",
            run.output()
        );
        assert_eq!(run.ran.len(), 3, "{:?}", run.ran);
        // Workers started on their own (a replacement is, always) may differ.
        std::fs::remove_file(project.datafile()).unwrap();
        let run = project
            .testmon_run(venv, &["-n", "2"], &[])
            .env("TESTMON_RUN_ZYGOTE", "0")
            .run();
        assert_eq!(run.code(), 0, "{}", run.output());
        assert!(
            run.stdout.contains("collected different tests"),
            "{}",
            run.output()
        );
        assert!(
            run.stdout.contains("tests/test_ids.py::test_unstable[pid"),
            "names the tests: {}",
            run.output()
        );
        assert_eq!(run.ran.len(), 3, "{:?}", run.ran);
        assert!(run.summary().contains("3 passed"), "{}", run.summary());
    }
}

#[test]
fn ctrl_c_stops_the_workers_keeps_what_finished_and_exits_2() {
    for venv in VENVS {
        let project = Project::copy("slow");
        let tmpdir = Sandbox::fresh();
        // -v: a line per finished test to wait for.
        let builder = tmpdir.testmon_run(&project, venv, &["-n", "2"], &["-v"]);
        let Started {
            mut child,
            mut stdout,
            seen,
        } = start_until_passed(&builder, 4);
        signal(&child, Signal::SIGINT);
        let mut rest = String::new();
        stdout.read_to_string(&mut rest).unwrap();
        let status = child.wait().unwrap();
        let output = format!("{}{rest}", String::from_utf8_lossy(&seen));
        assert_eq!(status.code(), Some(2), "{venv:?}: {output}");
        assert!(output.contains("KeyboardInterrupt"), "{output}");
        // What was cut short is named (both workers were in a 0.25 s test at the signal).
        assert!(
            output
                .contains("testmon-run: interrupted while running tests/test_slow.py::test_slow["),
            "{output}"
        );
        let finished: usize = output
            .lines()
            .last()
            .unwrap_or("")
            .split(" passed")
            .next()
            .and_then(|s| s.rsplit(' ').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        assert!((4..24).contains(&finished), "{output}");
        // What finished is in the database with its fingerprints; the file is sound.
        assert_integrity(&project.datafile(), &format!("{venv:?}"));
        let recorded = dump(&project.datafile())["default"]
            .values()
            // A real fingerprint (with the file's hash), not testmon's "not yet run" record.
            .filter(|r| {
                r.failed == Some(0)
                    && r.fingerprints
                        .iter()
                        .any(|(f, fsha, _)| f == "tests/test_slow.py" && !fsha.is_empty())
            })
            .count();
        // Every test reported as passed is recorded with its fingerprint.
        assert_eq!(recorded, finished, "{venv:?}: tests recorded\n{output}");
        let what = format!("{venv:?}: Ctrl-C");
        tmpdir.assert_no_processes(Duration::from_secs(10), &what);
        tmpdir.assert_clean(&what, &output);
    }
}

#[test]
fn the_same_tests_in_another_order_run_without_a_warning() {
    for venv in VENVS {
        let project = Project::copy("shuffled");
        let run = project.testmon_run(venv, &["-n", "2"], &[]).run();
        assert_eq!(run.code(), 0, "{}", run.output());
        assert!(
            !run.stdout.contains("collected different tests"),
            "{}",
            run.output()
        );
        assert_eq!(run.ran.len(), 12, "{:?}", run.ran);
        assert!(run.summary().contains("12 passed"), "{}", run.summary());
    }
}

/// Waits for a child with a deadline; a child still running then is killed and the test fails.
fn wait_with_deadline(
    child: &mut std::process::Child,
    limit: Duration,
) -> std::process::ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("still running after {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A process's state letter from /proc (R, S, T, Z, ...); None when it is gone.
fn proc_state(pid: Pid) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(") ")?.1.chars().next()
}

fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_killed_supervisors_workers_exit_and_the_next_run_recovers_their_results() {
    for venv in VENVS {
        let project = Project::copy("slow");
        let tmpdir = Sandbox::fresh();
        let builder = tmpdir.testmon_run(&project, venv, &["-n", "2"], &["-v"]);
        let Started {
            mut child, seen, ..
        } = start_until_passed(&builder, 4);
        assert!(!worker_pids(&tmpdir).is_empty());
        signal(&child, Signal::SIGKILL);
        child.wait().unwrap();
        let reported = passed_lines(&seen);
        // Its workers notice and end by themselves; the run directory stays behind.
        tmpdir.assert_no_processes(
            Duration::from_secs(60),
            &format!("{venv:?}: the workers of a killed supervisor end by themselves"),
        );
        assert_eq!(
            run_dirs(tmpdir.path()).len(),
            1,
            "{:?}",
            run_dirs(tmpdir.path())
        );
        let again = tmpdir.testmon_run(&project, venv, &["-n", "2"], &[]).run();
        assert_eq!(again.code(), 0, "{venv:?}: {}", again.output());
        assert!(
            again.stderr.lines().any(|l| {
                l.starts_with("testmon-run: recovered ")
                    && l.contains("and removed its run directory")
            }),
            "{venv:?}: {}",
            again.output()
        );
        // Nothing reported as passed before the kill was lost: none of it runs again.
        let rerun: Vec<&String> = again.ran.intersection(&reported).collect();
        assert!(
            rerun.is_empty(),
            "{venv:?}: ran again: {rerun:?}\n{}",
            again.output()
        );
        assert_eq!(
            again.ran.len() + reported.len(),
            24,
            "{venv:?}: {}",
            again.output()
        );
        tmpdir.assert_clean(&format!("{venv:?}: the run after"), &again.output());
        assert_integrity(&project.datafile(), &format!("{venv:?}"));
    }
}

#[test]
fn ctrl_z_stops_the_workers_too_and_fg_resumes_the_run() {
    let venv = Venv::Testmon22;
    let project = Project::copy("slow");
    let tmpdir = Sandbox::fresh();
    let builder = tmpdir.testmon_run(&project, venv, &["-n", "2"], &["-v"]);
    let Started {
        mut child,
        mut stdout,
        seen,
    } = start_until_passed(&builder, 2);
    let workers = worker_pids(&tmpdir);
    assert_eq!(workers.len(), 2, "{workers:?}");
    signal(&child, Signal::SIGTSTP);
    let supervisor = pid(&child);
    wait_for("everything stopped", || {
        std::iter::once(supervisor)
            .chain(workers.iter().copied())
            .all(|p| proc_state(p) == Some('T'))
    });
    // Stopped, they stay stopped: no test ends meanwhile.
    std::thread::sleep(Duration::from_millis(700));
    for &p in &workers {
        assert_eq!(proc_state(p), Some('T'), "worker {p}");
    }
    signal(&child, Signal::SIGCONT);
    wait_for("the workers running again", || {
        workers.iter().all(|&p| proc_state(p) != Some('T'))
    });
    let mut rest = String::new();
    stdout.read_to_string(&mut rest).unwrap();
    let status = wait_with_deadline(&mut child, TIMEOUT);
    let output = format!("{}{rest}", String::from_utf8_lossy(&seen));
    assert_eq!(status.code(), Some(0), "{output}");
    assert!(output.contains("24 passed"), "{output}");
}

#[test]
fn workers_deaf_to_ctrl_c_are_killed_after_the_grace_period() {
    let venv = Venv::Testmon22;
    let project = Project::copy("faulty");
    let tmpdir = Sandbox::fresh();
    let mut builder = tmpdir.testmon_run(
        &project,
        venv,
        &["-n", "1", "--grace-period", "2"],
        &["-k", "deaf"],
    );
    builder.env("FAULTY_DEAF", "1");
    let mut cmd = builder.command();
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    // The test has started once its worker ignores SIGINT (bit 2 of SigIgn).
    let ignores_sigint = |pid: Pid| {
        std::fs::read_to_string(format!("/proc/{pid}/status"))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("SigIgn:"))
                    .and_then(|m| u64::from_str_radix(m.trim(), 16).ok())
            })
            .is_some_and(|mask| mask & 0b10 != 0)
    };
    wait_for("the deaf test", || {
        worker_pids(&tmpdir).into_iter().any(ignores_sigint)
    });
    signal(&child, Signal::SIGINT);
    // Without the grace period the test would sleep ten minutes.
    let status = wait_with_deadline(&mut child, TIMEOUT);
    let mut out = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    assert_eq!(status.code(), Some(2), "{out}");
    tmpdir.assert_clean("deaf to Ctrl-C", &out);
}
