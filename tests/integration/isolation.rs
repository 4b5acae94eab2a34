//! What a worker is: a pytest process that only reads the main database, sees xdist's
//! environment variables, and never starts xdist itself, whatever the user's options say.

use std::collections::BTreeSet;

use serde_json::Value;

use crate::support::*;

/// The isolation fixture's tests report how their process sees the world (tests/fixtures/
/// isolation/tests/test_env.py); one JSON object per test.
fn reports(project: &Project, venv: Venv, extra_env: &[(&str, &str)]) -> (Run, Vec<Value>) {
    let report = project.path("isolation-report.jsonl");
    let mut cmd = project.testmon_run(venv, &["-n", "2"], &[]);
    cmd.env("ISOLATION_REPORT", &report);
    for (key, value) in extra_env {
        cmd.env(key, value);
    }
    let run = cmd.run();
    let text = std::fs::read_to_string(&report).unwrap_or_default();
    std::fs::remove_file(&report).ok();
    let records = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    (run, records)
}

#[test]
fn workers_open_the_main_database_read_only() {
    const O_ACCMODE: u64 = 0o3;
    const O_RDONLY: u64 = 0;
    for venv in VENVS {
        let project = Project::copy("isolation");
        let (run, records) = reports(&project, venv, &[]);
        assert_eq!(run.code(), 0, "{}", run.output());
        assert_eq!(records.len(), 6, "{}", run.output());
        let datafile = project.datafile().to_string_lossy().into_owned();
        for record in &records {
            let opened = record["files"][datafile.as_str()]
                .as_array()
                .unwrap_or_else(|| {
                    panic!("{venv:?}: the worker does not have {datafile} open: {record}")
                });
            assert!(!opened.is_empty());
            for flags in opened {
                let flags = flags.as_u64().unwrap();
                assert_eq!(
                    flags & O_ACCMODE,
                    O_RDONLY,
                    "{venv:?}: {datafile} opened with flags {flags:o}"
                );
            }
        }
    }
}

#[test]
fn workers_see_xdist_environment() {
    for venv in VENVS {
        let project = Project::copy("isolation");
        let (run, records) = reports(&project, venv, &[]);
        assert_eq!(run.code(), 0, "{}", run.output());
        let env_id: i64 = rusqlite::Connection::open(project.datafile())
            .unwrap()
            .query_row("SELECT id FROM environment", [], |r| r.get(0))
            .unwrap();
        let mut uids = BTreeSet::new();
        for record in &records {
            let env = &record["env"];
            let worker = env["PYTEST_XDIST_WORKER"].as_str().unwrap();
            assert!(worker == "gw0" || worker == "gw1", "{record}");
            assert_eq!(env["TESTMON_RUN_WORKER"], worker);
            assert_eq!(env["PYTEST_XDIST_WORKER_COUNT"], "2");
            assert_eq!(env["TESTMON_RUN_EXEC_ID"], env_id.to_string().as_str());
            assert_eq!(
                env["TESTMON_DATAFILE"],
                project.datafile().to_string_lossy().as_ref()
            );
            assert_eq!(
                record["cwd"],
                project.root.to_string_lossy().as_ref(),
                "the user's cwd"
            );
            let uid = env["PYTEST_XDIST_TESTRUNUID"].as_str().unwrap().to_string();
            assert_eq!(uid.len(), 32);
            uids.insert(uid);
        }
        assert_eq!(uids.len(), 1, "one test run uid per run: {uids:?}");
        // A second run has its own uid.
        let (_, again) = reports(&project, venv, &[("PYTEST_ADDOPTS", "--testmon-noselect")]);
        assert!(!again.is_empty());
        assert!(!uids.contains(again[0]["env"]["PYTEST_XDIST_TESTRUNUID"].as_str().unwrap()));
    }
}

#[test]
fn xdist_fixtures_give_this_runs_values_with_or_without_xdist() {
    // .venv and .venv-214 have pytest-xdist; `-p no:xdist` is a project without it.
    for venv in VENVS {
        for addopts in ["", "-p no:xdist"] {
            let project = Project::copy("isolation");
            let (run, records) = reports(&project, venv, &[("PYTEST_ADDOPTS", addopts)]);
            assert_eq!(run.code(), 0, "{venv:?} {addopts:?}: {}", run.output());
            assert_eq!(records.len(), 6, "{}", run.output());
            for record in &records {
                let env = &record["env"];
                assert_eq!(
                    record["worker_id"], env["PYTEST_XDIST_WORKER"],
                    "{venv:?} {addopts:?}: worker_id fixture: {record}"
                );
                assert_eq!(
                    record["testrun_uid"], env["PYTEST_XDIST_TESTRUNUID"],
                    "{venv:?} {addopts:?}: testrun_uid fixture: {record}"
                );
            }
        }
    }
}

#[test]
fn workers_start_with_sigint_default_and_unblocked_whatever_was_inherited() {
    // A background job of a non-interactive shell starts with SIGINT ignored; some CI
    // runners block it. testmon-run is started that way here (exec keeps both).
    let project = Project::copy("isolation");
    let report = project.path("isolation-report.jsonl");
    let mut cmd = Cmd::new(Venv::Testmon22.python(), &project.root);
    cmd.arg("-c")
        .arg(
            "import os, signal, sys\n\
             signal.signal(signal.SIGINT, signal.SIG_IGN)\n\
             signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})\n\
             os.execv(sys.argv[1], sys.argv[1:])",
        )
        .arg(BIN)
        .args(["-n", "2", "--"])
        .arg(Venv::Testmon22.pytest())
        .arg("--testmon")
        .env("ISOLATION_REPORT", &report);
    let run = cmd.run();
    assert_eq!(run.code(), 0, "{}", run.output());
    let text = std::fs::read_to_string(&report).unwrap();
    let records: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(records.len(), 6, "{}", run.output());
    const SIGINT_BIT: u64 = 1 << (2 - 1);
    const SIGTERM_BIT: u64 = 1 << (15 - 1);
    for record in &records {
        let blocked = record["signals"]["SigBlk"].as_u64().unwrap();
        let ignored = record["signals"]["SigIgn"].as_u64().unwrap();
        assert_eq!(blocked & (SIGINT_BIT | SIGTERM_BIT), 0, "blocked: {record}");
        assert_eq!(ignored & SIGINT_BIT, 0, "ignored: {record}");
    }
}

#[test]
fn n_in_addopts_does_not_start_xdist_in_workers() {
    // .venv has pytest-xdist installed: a worker honouring `-n 2` would start two more.
    let project = Project::copy("isolation");
    let (run, records) = reports(
        &project,
        Venv::Testmon22,
        &[("PYTEST_ADDOPTS", "-n 2 --dist loadscope")],
    );
    assert_eq!(run.code(), 0, "{}", run.output());
    assert_eq!(records.len(), 6, "every test once: {}", run.output());
    assert_eq!(run.ran.len(), 6);
    for record in &records {
        // A worker honouring `-n 2` would run its tests in processes it started itself.
        assert_eq!(
            record["parent"], "testmon-run",
            "ran inside an xdist worker: {record}"
        );
        assert!(record["env"]["TESTMON_RUN_WORKER"].is_string());
        assert_eq!(
            record["workerid"], record["env"]["TESTMON_RUN_WORKER"],
            "xdist's workerinput names the worker: {record}"
        );
    }
}

#[test]
fn without_testmon_tests_run_in_parallel_and_no_database_appears() {
    for venv in VENVS {
        let project = Project::copy("isolation");
        let mut cmd = Cmd::new(BIN, &project.root);
        cmd.args(["-n", "2", "--"]).arg(venv.pytest());
        let run = cmd.run();
        assert_eq!(run.code(), 0, "{}", run.output());
        assert_eq!(run.ran.len(), 6, "{}", run.output());
        assert!(run.stdout.contains("testmon off"), "{}", run.output());
        assert!(
            !project.datafile().exists(),
            "{venv:?}: a datafile appeared"
        );
    }
}

/// The test process's `sys.argv` is the command the user typed: the plugin testmon-run adds
/// to the workers' command line is not in it (a module calling `unittest.main()` at import
/// reads it), as under single-process pytest.
#[test]
fn a_workers_argv_is_the_users_command() {
    const TEST: &str = "import json, os, sys\n\n\ndef test_argv():\n    \
        with open(os.environ['ARGV_REPORT'], 'a') as f:\n        \
        f.write(json.dumps(sys.argv[1:]) + '\\n')\n";
    for venv in VENVS {
        let argv = |ours: bool| {
            let project = Project::empty("argv");
            project.write("tests/test_argv.py", TEST);
            let report = project.path("argv.jsonl");
            let mut cmd = if ours {
                project.testmon_run(venv, &["-n", "2"], &["-q"])
            } else {
                project.pytest(venv, &["-q"])
            };
            let run = cmd.env("ARGV_REPORT", &report).run_plain();
            assert_eq!(run.code(), 0, "{venv:?} ours={ours}\n{}", run.output());
            let lines: Vec<Value> = std::fs::read_to_string(&report)
                .unwrap()
                .lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect();
            assert_eq!(lines.len(), 1, "{venv:?}: {lines:?}");
            lines[0].clone()
        };
        let single = argv(false);
        assert_eq!(single, serde_json::json!(["--testmon", "-q"]), "{venv:?}");
        assert_eq!(argv(true), single, "{venv:?}: sys.argv in a worker");
    }
}
