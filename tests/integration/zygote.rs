//! The zygote (src/run/zygote.rs): gw0 collects once and forks the other workers. Each fork
//! must be a worker of its own (name, workerinput, process group, capture, JUnit part,
//! spool) and the run the same as with every worker started on its own
//! (`TESTMON_RUN_ZYGOTE=0`), which each test here also runs, so that it can tell the two apart.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use crate::support::*;

/// A conftest that notes each import (a collection) and a fixture that reports, per test,
/// how its worker sees itself; three modules of two tests, each printing its own mark, one
/// of each module failing.
fn project() -> Project {
    let project = Project::empty("zygote");
    project.write(
        "tests/conftest.py",
        r#"import json, os
import pytest

with open(os.environ["ZYGOTE_IMPORTS"], "a") as f:
    f.write(f"{os.environ.get('PYTEST_XDIST_WORKER')} {os.getpid()}\n")


@pytest.fixture(autouse=True)
def report(request, tmp_path):
    workerinput = getattr(request.config, "workerinput", {})
    record = {
        "test": request.node.nodeid,
        "env": os.environ.get("PYTEST_XDIST_WORKER"),
        "workerid": workerinput.get("workerid"),
        "pid": os.getpid(),
        "pgid": os.getpgid(0),
        "tmp_path": str(tmp_path),
    }
    with open(os.environ["ZYGOTE_REPORT"], "a") as f:
        f.write(json.dumps(record) + "\n")
"#,
    );
    for m in 0..3 {
        project.write(
            &format!("tests/test_m{m}.py"),
            &format!(
                r#"import time

def test_pass():
    print("MARK-m{m}-pass")
    time.sleep(0.3)


def test_fail():
    print("MARK-m{m}-fail")
    time.sleep(0.3)
    assert False
"#
            ),
        );
    }
    project
}

struct Seen {
    run: Run,
    imports: Vec<String>,
    records: Vec<Value>,
    junit: String,
}

fn run(project: &Project, venv: Venv, zygote: bool, tmpdir: &std::path::Path) -> Seen {
    let imports = project.path("imports.log");
    let report = project.path("report.jsonl");
    let junit = project.path("junit.xml");
    for file in [&imports, &report, &junit] {
        std::fs::remove_file(file).ok();
    }
    std::fs::remove_file(project.datafile()).ok();
    let junit_arg = format!("--junitxml={}", junit.display());
    let mut cmd = project.testmon_run(venv, &["-n", "3"], &[junit_arg.as_str()]);
    // A TMPDIR of its own: pytest keeps the last 3 numbered tmp_path roots there and removes
    // older ones, which would race with the workers of the previous runs' roots (a warning).
    cmd.env("TMPDIR", tmpdir)
        .env("ZYGOTE_IMPORTS", &imports)
        .env("ZYGOTE_REPORT", &report)
        .env("TESTMON_RUN_ZYGOTE", if zygote { "1" } else { "0" });
    let run = cmd.run();
    let read = |path: &std::path::Path| std::fs::read_to_string(path).unwrap_or_default();
    Seen {
        imports: read(&imports).lines().map(str::to_string).collect(),
        records: read(&report)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect(),
        junit: read(&junit),
        run,
    }
}

#[test]
fn gw0_collects_once_and_each_fork_is_a_worker_of_its_own() {
    for venv in VENVS {
        let project = project();
        for zygote in [true, false] {
            let what = format!("{venv:?}, zygote {zygote}");
            let tmp = fresh_tmpdir();
            let seen = run(&project, venv, zygote, tmp.path());
            let output = seen.run.output();
            assert_eq!(seen.run.code(), 1, "{what}\n{output}");
            assert_eq!(counts(&seen.run), "3 failed, 3 passed", "{what}\n{output}");
            // One collection with the zygote (gw0's), one per worker without it (the probe
            // and the plugins' controller, which collect nothing, import it too: no name).
            let collectors: Vec<&str> = seen
                .imports
                .iter()
                .filter_map(|l| l.split(' ').next())
                .filter(|name| name.starts_with("gw"))
                .collect();
            if zygote {
                assert_eq!(collectors, ["gw0"], "{what}: {:?}", seen.imports);
            } else {
                let distinct: BTreeSet<&str> = collectors.iter().copied().collect();
                assert_eq!(collectors.len(), 3, "{what}: {:?}", seen.imports);
                assert_eq!(distinct.len(), 3, "{what}: {:?}", seen.imports);
            }
            // Every test ran once, on a worker that knows its own name, in its own process
            // group; three workers, three processes; a tmp_path each.
            assert_eq!(seen.records.len(), 6, "{what}\n{output}");
            let mut pids: BTreeMap<String, (i64, i64)> = BTreeMap::new();
            let mut tmp_paths = BTreeSet::new();
            for r in &seen.records {
                let name = r["env"].as_str().unwrap().to_string();
                assert_eq!(r["workerid"], r["env"], "{what}: {r}");
                let (pid, pgid) = (r["pid"].as_i64().unwrap(), r["pgid"].as_i64().unwrap());
                assert_eq!(pid, pgid, "{what}: a worker leads its process group: {r}");
                let known = pids.entry(name).or_insert((pid, pgid));
                assert_eq!(*known, (pid, pgid), "{what}: one process per worker: {r}");
                assert!(tmp_paths.insert(r["tmp_path"].as_str().unwrap().to_string()));
            }
            assert_eq!(pids.len(), 3, "{what}: {pids:?}\n{output}");
            let distinct: BTreeSet<i64> = pids.values().map(|p| p.0).collect();
            assert_eq!(distinct.len(), 3, "{what}: {pids:?}");
            // Each failure shows its own test's output and no other's (pytest's capture
            // is per process: a fork does not share gw0's capture files).
            for m in 0..3 {
                let section = failure_section(&seen.run.stdout, &format!("tests/test_m{m}.py"));
                let captured = section
                    .split_once("Captured stdout call")
                    .map_or("", |(_, text)| text);
                let marks: Vec<&str> = captured
                    .lines()
                    .filter(|l| l.starts_with("MARK-"))
                    .collect();
                assert_eq!(
                    marks,
                    [format!("MARK-m{m}-fail")],
                    "{what}: m{m}'s failure:\n{section}\n{output}"
                );
            }
            // One JUnit document with every test once.
            assert_eq!(
                seen.junit.matches("<testcase ").count(),
                6,
                "{what}\n{}",
                seen.junit
            );
            assert_eq!(seen.junit.matches("<failure ").count(), 3, "{what}");
        }
    }
}

/// The text of one failure in pytest's FAILURES section: from its header line (which names
/// `test_fail` of the module) to the next header or the summary.
fn failure_section(stdout: &str, module: &str) -> String {
    let lines: Vec<&str> = stdout.lines().collect();
    let starts: Vec<usize> = lines
        .iter()
        .enumerate()
        .filter(|(_, l)| l.starts_with("___") && l.ends_with("___"))
        .map(|(i, _)| i)
        .collect();
    for (k, &start) in starts.iter().enumerate() {
        let end = starts.get(k + 1).copied().unwrap_or(lines.len());
        let body = lines[start..end].join("\n");
        if body.contains(module) || lines[start].contains(module) {
            let end = lines[start..end]
                .iter()
                .position(|l| l.starts_with("===") && l.contains("short test summary"))
                .map_or(end, |p| start + p);
            return lines[start..end].join("\n");
        }
    }
    String::new()
}

#[test]
fn a_fork_that_never_came_is_started_afresh_as_every_worker_was() {
    // gw0 fails before it collects (a usage error, a crash at import): the other workers
    // are started on their own and end as they did without the zygote.
    let cases: [(&str, &str, &[&str]); 2] = [
        ("usage error", "", &["--no-such-option"]),
        ("crash at import", "import os\nos._exit(7)\n", &[]),
    ];
    for (what, conftest, args) in cases {
        let mut outcomes = Vec::new();
        for zygote in ["1", "0"] {
            let project = project();
            if !conftest.is_empty() {
                project.write("tests/conftest.py", conftest);
            }
            let tmpdir = Sandbox::fresh();
            let mut cmd = tmpdir.testmon_run_in(&project.root);
            cmd.args(["-n", "3", "--"])
                .arg(Venv::Testmon22.pytest())
                .arg("--testmon")
                .args(args.iter().copied())
                .env("ZYGOTE_IMPORTS", project.path("imports.log"))
                .env("ZYGOTE_REPORT", project.path("report.jsonl"))
                .env("TESTMON_RUN_ZYGOTE", zygote);
            let run = cmd.run_plain();
            let label = format!("{what}, zygote {zygote}");
            assert_no_panic_or_traceback(&run, &label);
            tmpdir.assert_clean(&label, &run.output());
            let errors: BTreeSet<String> = run
                .stdout
                .lines()
                .chain(run.stderr.lines())
                .filter(|l| l.starts_with("testmon-run: error:"))
                .map(str::to_string)
                .collect();
            outcomes.push((run.code(), errors, run.output()));
        }
        assert_eq!(
            (outcomes[0].0, &outcomes[0].1),
            (outcomes[1].0, &outcomes[1].1),
            "{what}: with the zygote\n{}\nwithout\n{}",
            outcomes[0].2,
            outcomes[1].2
        );
        assert_ne!(outcomes[0].0, 0, "{what}\n{}", outcomes[0].2);
    }
}
