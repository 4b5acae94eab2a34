//! Fault injection (issue 4). On the `many` fixture (345 quick tests, no module-, class- or
//! session-scoped fixtures, so the parity comparison is exact), at seeded random moments:
//! kill -9 of a worker, SIGINT of the supervisor, kill -9 of the supervisor followed by a
//! normal run, two concurrent runs. After each: the database passes `PRAGMA
//! integrity_check`; every test reported `PASSED` (with `-v`) is recorded with real
//! fingerprints; no worker is left alive; no run directory is left behind (after the
//! follow-up run, for a killed supervisor); and runs until testmon-run selects nothing leave
//! the records single-process `pytest --testmon` leaves.
//!
//! Reproducing: each case prints the seed and its parameters (shown when the test fails, or
//! with `-- --nocapture`). `TESTMON_RUN_FAULT_SEED=<n or 0xhex>` draws other moments,
//! `TESTMON_RUN_FAULT_ONLY=<case>` (e.g. `sigint#3`) runs one case alone:
//!
//!     TESTMON_RUN_FAULT_SEED=0x... TESTMON_RUN_FAULT_ONLY=sigint#3 \
//!         cargo test --test integration faults:: -- --nocapture

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use std::process::{Child, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::OnceLock;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::support::*;

/// The default seed; `TESTMON_RUN_FAULT_SEED` overrides it.
const DEFAULT_SEED: u64 = 0xfa17_5eed;

/// Tests in `tests/fixtures/many`, all passing.
const TOTAL: usize = 345;

/// splitmix64: a tiny seeded generator, so a failing case can be replayed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `lo..=hi`.
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }

    fn percent(&mut self, p: u64) -> bool {
        self.next() % 100 < p
    }
}

fn master_seed() -> u64 {
    let Ok(text) = std::env::var("TESTMON_RUN_FAULT_SEED") else {
        return DEFAULT_SEED;
    };
    let t = text.trim();
    let parsed = match t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(&hex.replace('_', ""), 16).ok(),
        None => t.replace('_', "").parse().ok(),
    };
    parsed.unwrap_or_else(|| panic!("TESTMON_RUN_FAULT_SEED={text:?}: not a decimal or 0x number"))
}

/// One case: its name (`sigint#3`), the venv it runs on and its own generator.
struct Case {
    name: String,
    venv: Venv,
    rng: Rng,
}

/// Runs cases `0..count` of a kind (each with its own generator from the seed, the kind and
/// its index), all of them even when one fails, and fails naming the failed ones.
fn run_cases(kind: &str, count: u64, body: fn(&mut Case)) {
    let seed = master_seed();
    let only = std::env::var("TESTMON_RUN_FAULT_ONLY").ok();
    let kind_salt = kind
        .bytes()
        .fold(0u64, |h, b| h.wrapping_mul(0x100_0000_01b3) ^ u64::from(b));
    let started = Instant::now();
    let mut failed = Vec::new();
    for index in 0..count {
        let name = format!("{kind}#{index}");
        if only.as_deref().is_some_and(|o| o != name) {
            continue;
        }
        // Every third case on testmon 2.1.4, the others on 2.2.0.
        let venv = if index % 3 == 2 {
            Venv::Testmon21
        } else {
            Venv::Testmon22
        };
        let mut case = Case {
            name: name.clone(),
            venv,
            rng: Rng(seed ^ kind_salt ^ index.wrapping_mul(0xd6e8_feb8_6659_fd93)),
        };
        println!(
            "{name}: {venv:?} (TESTMON_RUN_FAULT_SEED={seed:#x} TESTMON_RUN_FAULT_ONLY={name})"
        );
        let t = Instant::now();
        let result = catch_unwind(AssertUnwindSafe(|| body(&mut case)));
        let verdict = if result.is_ok() { "ok" } else { "FAILED" };
        println!("{name}: {verdict} in {:.1}s", t.elapsed().as_secs_f64());
        if result.is_err() {
            failed.push(name);
        }
    }
    println!(
        "{kind}: {} failed, {:.1}s",
        failed.len(),
        started.elapsed().as_secs_f64()
    );
    assert!(
        failed.is_empty(),
        "failed cases (TESTMON_RUN_FAULT_SEED={seed:#x}): {failed:?}"
    );
}

#[test]
fn faults_worker_killed() {
    run_cases("worker-kill", 10, worker_killed);
}

#[test]
fn faults_supervisor_interrupted() {
    run_cases("sigint", 10, supervisor_interrupted);
}

#[test]
fn faults_supervisor_killed_then_recovered() {
    run_cases("supervisor-kill", 5, supervisor_killed);
}

#[test]
fn faults_two_concurrent_runs() {
    run_cases("concurrent", 3, concurrent_runs);
}

/// When to strike.
#[derive(Debug, Clone, Copy)]
enum Moment {
    /// `ms` after testmon-run started (its probe, spawning, collection).
    Start { ms: u64 },
    /// `ms` after the first worker process appeared (its imports, collection, first tests).
    Workers { ms: u64 },
    /// `ms` after the `lines`-th `PASSED` line.
    Passed { lines: usize, ms: u64 },
}

impl std::fmt::Display for Moment {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        match self {
            Moment::Start { ms } => write!(f, "{ms} ms after the start"),
            Moment::Workers { ms } => write!(f, "{ms} ms after the first worker appeared"),
            Moment::Passed { lines, ms } => write!(f, "{ms} ms after PASSED line {lines}"),
        }
    }
}

impl Moment {
    /// Mostly during the tests (a few ms after some line), sometimes during startup.
    fn pick(rng: &mut Rng, startup: fn(u64) -> Moment, startup_ms: (u64, u64)) -> Moment {
        if rng.percent(20) {
            startup(rng.range(startup_ms.0, startup_ms.1))
        } else {
            Moment::Passed {
                lines: rng.range(1, TOTAL as u64 - 60) as usize,
                ms: rng.range(0, 40),
            }
        }
    }
}

/// `testmon-run -n 2 -- pytest --testmon -v`, running, its stdout read line by line.
struct Live {
    child: Child,
    lines: Receiver<String>,
    stdout: Vec<String>,
    stderr: Option<JoinHandle<String>>,
    started: Instant,
    closed: bool,
    ended: bool,
}

/// A run that ended.
struct Finished {
    code: Option<i32>,
    signal: Option<i32>,
    stdout: Vec<String>,
    stderr: String,
    secs: f64,
}

impl Live {
    fn start(project: &Project, venv: Venv, tmpdir: &Sandbox) -> Live {
        let builder = tmpdir.testmon_run(project, venv, &["-n", "2"], &["-v"]);
        let mut cmd = builder.command();
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut stderr = child.stderr.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(stdout);
            let mut buf = Vec::new();
            loop {
                buf.clear();
                match reader.read_until(b'\n', &mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        let line = String::from_utf8_lossy(&buf);
                        if tx.send(line.trim_end_matches('\n').to_string()).is_err() {
                            break;
                        }
                    }
                }
            }
        });
        let stderr = std::thread::spawn(move || {
            let mut s = Vec::new();
            stderr.read_to_end(&mut s).ok();
            String::from_utf8_lossy(&s).into_owned()
        });
        Live {
            child,
            lines,
            stdout: Vec::new(),
            stderr: Some(stderr),
            started: Instant::now(),
            closed: false,
            ended: false,
        }
    }

    fn pid(&self) -> Pid {
        Pid::from_raw(self.child.id() as i32)
    }

    fn passed(&self) -> usize {
        self.stdout
            .iter()
            .filter(|l| passed_nodeid(l).is_some())
            .count()
    }

    /// Takes the lines printed so far, waiting up to `wait` for one; false once stdout closed.
    fn pump(&mut self, wait: Duration) -> bool {
        if self.closed {
            return false;
        }
        match self.lines.recv_timeout(wait) {
            Ok(line) => {
                self.stdout.push(line);
                while let Ok(line) = self.lines.try_recv() {
                    self.stdout.push(line);
                }
                true
            }
            Err(RecvTimeoutError::Timeout) => true,
            Err(RecvTimeoutError::Disconnected) => {
                self.closed = true;
                false
            }
        }
    }

    /// Waits for the moment; false if the run ended before it.
    fn wait_for(&mut self, moment: Moment, tmpdir: &Path) -> bool {
        let deadline = Instant::now() + TIMEOUT;
        match moment {
            Moment::Start { ms } => {
                return self.wait_until(self.started + Duration::from_millis(ms));
            }
            Moment::Workers { ms } => {
                while workers_under(tmpdir).is_empty() {
                    assert!(Instant::now() < deadline, "no worker started");
                    if !self.pump(Duration::from_millis(5)) {
                        return false;
                    }
                }
                return self.wait_until(Instant::now() + Duration::from_millis(ms));
            }
            Moment::Passed { lines, ms } => {
                while self.passed() < lines {
                    assert!(Instant::now() < deadline, "no progress: {:?}", self.stdout);
                    if !self.pump(Duration::from_millis(50)) {
                        return false;
                    }
                }
                std::thread::sleep(Duration::from_millis(ms));
            }
        }
        true
    }

    /// Takes lines until `at`; false if the run ended before.
    fn wait_until(&mut self, at: Instant) -> bool {
        while Instant::now() < at {
            let left = at.saturating_duration_since(Instant::now());
            if !self.pump(left.min(Duration::from_millis(10))) {
                return false;
            }
        }
        true
    }

    fn elapsed_ms(&self) -> u128 {
        self.started.elapsed().as_millis()
    }

    /// Reads the rest and waits for the end (or the timeout).
    fn finish(&mut self) -> Finished {
        let deadline = Instant::now() + TIMEOUT;
        let status = loop {
            self.pump(Duration::from_millis(20));
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            assert!(
                Instant::now() < deadline,
                "testmon-run did not finish within {TIMEOUT:?}: {:?}",
                self.stdout
            );
        };
        self.ended = true;
        while self.pump(Duration::from_millis(100)) {
            assert!(Instant::now() < deadline, "stdout not closed");
        }
        use std::os::unix::process::ExitStatusExt;
        Finished {
            code: status.code(),
            signal: status.signal(),
            stdout: std::mem::take(&mut self.stdout),
            stderr: self.stderr.take().unwrap().join().unwrap(),
            secs: self.started.elapsed().as_secs_f64(),
        }
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        if !self.ended {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

impl Finished {
    /// Every test reported `PASSED`, each once.
    fn passed(&self) -> BTreeSet<String> {
        self.stdout
            .iter()
            .filter_map(|l| passed_nodeid(l))
            .map(String::from)
            .collect()
    }

    fn passed_lines(&self) -> usize {
        self.stdout
            .iter()
            .filter(|l| passed_nodeid(l).is_some())
            .count()
    }

    /// Tests reported as running in a crashed worker: `... crashed while running '<nodeid>'`.
    fn crashed(&self) -> BTreeSet<String> {
        let text = self.stdout.join("\n");
        text.split("crashed while running '")
            .skip(1)
            .filter_map(|rest| rest.split_once('\'').map(|(id, _)| id.to_string()))
            .collect()
    }

    /// Everything but the `PASSED` lines (counted), and stderr.
    fn output(&self) -> String {
        let other: Vec<&str> = self
            .stdout
            .iter()
            .filter(|l| passed_nodeid(l).is_none())
            .map(String::as_str)
            .collect();
        format!(
            "exit {:?}, signal {:?}, {:.1}s\n--- stdout ({} PASSED lines left out) ---\n{}\n--- stderr ---\n{}",
            self.code,
            self.signal,
            self.secs,
            self.passed_lines(),
            other.join("\n"),
            self.stderr
        )
    }

    fn describe(&self) -> String {
        let mut by_worker = std::collections::BTreeMap::<&str, usize>::new();
        for line in &self.stdout {
            if passed_nodeid(line).is_some() {
                let worker = line.rsplit_once(" [").map_or("", |(_, w)| w);
                *by_worker.entry(worker.trim_end_matches(']')).or_default() += 1;
            }
        }
        let by_worker: Vec<String> = by_worker.iter().map(|(w, n)| format!("{w}: {n}")).collect();
        format!(
            "exit {:?}, signal {:?}, {} PASSED lines ({} tests{}), {:.1}s",
            self.code,
            self.signal,
            self.passed_lines(),
            self.passed().len(),
            if by_worker.is_empty() {
                String::new()
            } else {
                format!("; {}", by_worker.join(", "))
            },
            self.secs
        )
    }
}

/// Kills (SIGKILL, by pid) whatever worker or probe a failed case left under its TMPDIR.
struct Reaper<'a>(&'a Path);

impl Drop for Reaper<'_> {
    fn drop(&mut self) {
        for (_, pid) in processes_under(self.0) {
            let _ = kill(pid, Signal::SIGKILL);
        }
    }
}

fn assert_no_run_dir(tmpdir: &Path, what: &str) {
    let left = run_dirs(tmpdir);
    assert!(left.is_empty(), "{what}: run directories left: {left:?}");
}

/// A passing test's record with real fingerprints: each with a file hash (testmon's "not
/// yet run" placeholder has none), one of them for the test's own file.
fn is_real(test: &str, record: &TestRecord) -> bool {
    let home = test.split("::").next().unwrap_or("");
    record.failed == Some(0)
        && record.has_real_fingerprints()
        && record.fingerprints.iter().any(|(file, _, _)| file == home)
}

/// Every test in `tests` is recorded, passed, with real fingerprints.
fn assert_recorded<'a>(datafile: &Path, tests: impl IntoIterator<Item = &'a String>, what: &str) {
    let records = dump(datafile);
    let default = records.get("default");
    let bad: Vec<String> = tests
        .into_iter()
        .filter_map(|test| match default.and_then(|r| r.get(test)) {
            None => Some(format!("{test}: no record")),
            Some(record) if !is_real(test, record) => Some(format!("{test}: {record:?}")),
            Some(_) => None,
        })
        .collect();
    assert!(
        bad.is_empty(),
        "{what}: {} tests reported as finished are not recorded with their fingerprints \
         (the first 10):\n{}",
        bad.len(),
        bad[..bad.len().min(10)].join("\n")
    );
}

/// Single-process `pytest --testmon` on a fresh copy: the records every case must reach.
fn reference(venv: Venv) -> &'static Dump {
    static TESTMON22: OnceLock<Dump> = OnceLock::new();
    static TESTMON21: OnceLock<Dump> = OnceLock::new();
    let cell = match venv {
        Venv::Testmon22 => &TESTMON22,
        Venv::Testmon21 => &TESTMON21,
    };
    cell.get_or_init(|| {
        let project = Project::copy("many");
        let run = project.pytest(venv, &[]).run();
        assert_eq!(run.code(), 0, "{venv:?} reference\n{}", run.output());
        let records = dump(&project.datafile());
        let tests = &records["default"];
        assert_eq!(tests.len(), TOTAL, "{venv:?}: the fixture's tests");
        for (test, record) in tests {
            assert!(
                is_real(test, record),
                "{venv:?} reference: {test} {record:?}"
            );
        }
        records
    })
}

/// For the log: how the records differ from single-process testmon's (not an assertion: a
/// faulted run may leave tests to be run again).
fn differences(datafile: &Path, venv: Venv) -> String {
    let ours = dump(datafile);
    let theirs = &reference(venv)["default"];
    let Some(ours) = ours.get("default") else {
        return "no records".to_string();
    };
    let differ: Vec<String> = theirs
        .iter()
        .filter_map(|(test, record)| {
            let why = match ours.get(test) {
                None => "missing",
                Some(mine) if mine == record => return None,
                Some(mine) if mine.is_placeholder() => "testmon's placeholder",
                Some(mine) if mine.failed != record.failed => "failed flag",
                Some(_) => "fingerprints",
            };
            Some(format!("{test} ({why})"))
        })
        .collect();
    let extra = ours.keys().filter(|t| !theirs.contains_key(*t)).count();
    format!(
        "{} records differ from single-process testmon's, {extra} extra{}",
        differ.len(),
        differ
            .iter()
            .take(3)
            .map(|d| format!("\n    {d}"))
            .collect::<String>()
    )
}

fn all_tests(venv: Venv) -> BTreeSet<String> {
    reference(venv)["default"].keys().cloned().collect()
}

/// Normal runs until testmon-run selects nothing (each exits 0, leaves no run directory and
/// no worker); then the records must be single-process testmon's, exactly (the fixture has
/// no scoped fixtures). `check_first` looks at the first run.
fn converge(
    project: &Project,
    venv: Venv,
    tmpdir: &Sandbox,
    what: &str,
    check_first: &dyn Fn(&Run),
) {
    let mut ran = Vec::new();
    for n in 1..=4 {
        let t = Instant::now();
        let run = tmpdir.testmon_run(project, venv, &["-n", "2"], &[]).run();
        let step = format!("{what}, follow-up run {n}");
        assert_eq!(run.code(), 0, "{step}\n{}", run.output());
        if n == 1 {
            check_first(&run);
            if let Some(header) = run.stdout.lines().find(|l| l.starts_with("testmon-run ")) {
                println!("  follow-up run 1: {header}");
            }
        }
        assert_no_run_dir(tmpdir.path(), &step);
        tmpdir.assert_no_processes(Duration::from_secs(5), &step);
        ran.push(format!(
            "{} tests in {:.1}s",
            run.ran.len(),
            t.elapsed().as_secs_f64()
        ));
        if run.ran.is_empty() {
            println!("  follow-up runs: {}", ran.join(", "));
            assert_integrity(&project.datafile(), what);
            assert_same_records(&dump(&project.datafile()), reference(venv), what);
            return;
        }
    }
    panic!(
        "{what}: testmon-run still selects tests after 4 follow-up runs: {}",
        ran.join(", ")
    );
}

/// kill -9 of a worker: its test is reported as crashed, a replacement runs the rest.
fn worker_killed(case: &mut Case) {
    let venv = case.venv;
    let all = all_tests(venv);
    let project = Project::copy("many");
    let tmpdir = Sandbox::fresh();
    let _reaper = Reaper(tmpdir.path());
    let moment = Moment::pick(&mut case.rng, |ms| Moment::Workers { ms }, (0, 1500));
    let pick = case.rng.range(0, 1) as usize;
    println!("  kill -9 of worker #{pick} (of those alive, by name) at {moment}");
    let mut live = Live::start(&project, venv, &tmpdir);
    assert!(
        live.wait_for(moment, tmpdir.path()),
        "{}: the run ended before the moment\n{}",
        case.name,
        live.finish().output()
    );
    // At a startup moment the workers may not be there yet.
    let deadline = Instant::now() + Duration::from_secs(60);
    let alive = loop {
        let alive = workers_under(tmpdir.path());
        if !alive.is_empty() {
            break alive;
        }
        assert!(
            Instant::now() < deadline,
            "{}: no worker started",
            case.name
        );
        live.pump(Duration::from_millis(10));
    };
    let (victim, pid) = alive[pick % alive.len()].clone();
    println!(
        "  killing {victim} (pid {pid}) after {} PASSED lines, at {} ms",
        live.passed(),
        live.elapsed_ms()
    );
    kill(pid, Signal::SIGKILL).unwrap_or_else(|e| panic!("{}: kill -9 {victim}: {e}", case.name));
    let run = live.finish();
    let what = format!("{} ({venv:?}, {victim} killed at {moment})", case.name);
    let crashed = run.crashed();
    println!("  {}, crashed: {crashed:?}", run.describe());
    assert!(crashed.len() <= 1, "{what}: {crashed:?}\n{}", run.output());
    // The exit code (README, "When things go wrong"): the crashed test is an error (1); a
    // worker lost before it collected is an internal error (3); a worker killed between
    // tests (its reported tests run again) leaves no error (0).
    let expected = match crashed.iter().next() {
        Some(test) => {
            assert!(
                run.stdout.iter().any(|l| l.contains(&format!(
                    "worker '{victim}' crashed while running '{test}' (killed by SIGKILL)"
                ))),
                "{what}: the crash names the worker and the signal\n{}",
                run.output()
            );
            1
        }
        None if run.output().contains(&format!(
            "worker {victim} crashed (killed by SIGKILL) before it finished collecting"
        )) =>
        {
            3
        }
        None => {
            assert!(
                run.output().contains(&format!(
                    "worker {victim} crashed (killed by SIGKILL) between tests"
                )),
                "{what}: the crash is reported\n{}",
                run.output()
            );
            0
        }
    };
    assert_eq!(
        run.code,
        Some(expected),
        "{what}: exit code\n{}",
        run.output()
    );
    let passed = run.passed();
    let missing: Vec<&String> = all
        .iter()
        .filter(|t| !passed.contains(*t) && !crashed.contains(*t))
        .collect();
    assert!(
        missing.is_empty(),
        "{what}: tests neither passed nor crashed (the replacement worker runs the rest): {missing:?}\n{}",
        run.output()
    );
    println!("  {}", differences(&project.datafile(), venv));
    assert_integrity(&project.datafile(), &what);
    assert_recorded(&project.datafile(), passed.difference(&crashed), &what);
    tmpdir.assert_no_processes(Duration::from_secs(10), &what);
    assert_no_run_dir(tmpdir.path(), &what);
    converge(&project, venv, &tmpdir, &what, &|_| {});
}

/// SIGINT of the supervisor: workers stop, what finished is recorded, exit 2.
fn supervisor_interrupted(case: &mut Case) {
    let venv = case.venv;
    let project = Project::copy("many");
    let tmpdir = Sandbox::fresh();
    let _reaper = Reaper(tmpdir.path());
    // Not in the first 50 ms: before its signal handler is installed SIGINT simply ends it.
    let moment = Moment::pick(&mut case.rng, |ms| Moment::Start { ms }, (50, 1800));
    println!("  SIGINT of the supervisor at {moment}");
    let mut live = Live::start(&project, venv, &tmpdir);
    assert!(
        live.wait_for(moment, tmpdir.path()),
        "{}: the run ended before the moment\n{}",
        case.name,
        live.finish().output()
    );
    println!(
        "  SIGINT after {} PASSED lines, at {} ms",
        live.passed(),
        live.elapsed_ms()
    );
    kill(live.pid(), Signal::SIGINT).unwrap();
    let run = live.finish();
    let what = format!("{} ({venv:?}, SIGINT at {moment})", case.name);
    println!("  {}", run.describe());
    assert_eq!(run.code, Some(2), "{what}: interrupted\n{}", run.output());
    // Every worker collects the same tests here: a warning means a collection cut short by
    // the interrupt was taken for a real one (logged, not asserted: it depends on timing).
    if let Some(warning) = run
        .stdout
        .iter()
        .find(|l| l.contains("collected different tests"))
    {
        println!("  NOTE: {warning}");
    }
    assert_integrity(&project.datafile(), &what);
    if project.datafile().exists() {
        println!("  {}", differences(&project.datafile(), venv));
        assert_recorded(&project.datafile(), &run.passed(), &what);
    } else {
        assert_eq!(run.passed_lines(), 0, "{what}: passed, but no database");
    }
    tmpdir.assert_no_processes(Duration::from_secs(5), &what);
    assert_no_run_dir(tmpdir.path(), &what);
    converge(&project, venv, &tmpdir, &what, &|_| {});
}

/// kill -9 of the supervisor: its workers end by themselves; the next normal run recovers
/// the run directory (what the workers had finished is merged, not run again).
fn supervisor_killed(case: &mut Case) {
    let venv = case.venv;
    let project = Project::copy("many");
    let tmpdir = Sandbox::fresh();
    let _reaper = Reaper(tmpdir.path());
    let moment = Moment::pick(&mut case.rng, |ms| Moment::Start { ms }, (50, 1800));
    println!("  kill -9 of the supervisor at {moment}");
    let mut live = Live::start(&project, venv, &tmpdir);
    assert!(
        live.wait_for(moment, tmpdir.path()),
        "{}: the run ended before the moment\n{}",
        case.name,
        live.finish().output()
    );
    println!(
        "  killing the supervisor after {} PASSED lines, at {} ms",
        live.passed(),
        live.elapsed_ms()
    );
    kill(live.pid(), Signal::SIGKILL).unwrap();
    let run = live.finish();
    let what = format!("{} ({venv:?}, kill -9 at {moment})", case.name);
    println!("  {}", run.describe());
    assert_eq!(run.signal, Some(9), "{what}\n{}", run.output());
    tmpdir.assert_no_processes(
        Duration::from_secs(60),
        &format!("{what}: the workers of a killed supervisor end by themselves"),
    );
    let left = run_dirs(tmpdir.path());
    println!("  left behind: {left:?}");
    for dir in &left {
        println!("  {}", spools(&run_base(tmpdir.path()).join(dir)));
    }
    if matches!(moment, Moment::Passed { .. }) {
        assert_eq!(
            left.len(),
            1,
            "{what}: the run directory stays for the next run"
        );
    }
    let before = run.passed();
    converge(&project, venv, &tmpdir, &what, &|first| {
        let step = format!("{what}, the run after");
        // "testmon-run: recovered 12 test result(s) from an interrupted run (pid 4242) and
        // removed its run directory"; or, killed before any result, "testmon-run: removed the
        // run directory of an interrupted run (pid 4242): nothing to recover".
        let recovered: Option<usize> = first.stderr.lines().find_map(|l| {
            l.strip_prefix("testmon-run: recovered ")?
                .split(' ')
                .next()?
                .parse()
                .ok()
        });
        println!("  the run after: {recovered:?} test results recovered");
        if !before.is_empty() {
            let n = recovered.unwrap_or_else(|| {
                panic!(
                    "{step}: says it recovered the {} tests reported before the kill\n{}",
                    before.len(),
                    first.output()
                )
            });
            assert!(
                n >= before.len(),
                "{step}: recovered {n} results, {} tests were reported before the kill\n{}",
                before.len(),
                first.output()
            );
        } else if !left.is_empty() {
            assert!(
                recovered.is_some()
                    || first.stderr.lines().any(|l| {
                        l.starts_with(
                            "testmon-run: removed the run directory of an interrupted run",
                        )
                    }),
                "{step}: says what it did with the run directory left behind\n{}",
                first.output()
            );
        }
        let again: Vec<&String> = first.ran.intersection(&before).collect();
        assert!(
            again.is_empty(),
            "{step}: ran again {} tests reported PASSED before the kill (recovery lost them): {again:?}\n{}",
            again.len(),
            first.output()
        );
        assert_recorded(&project.datafile(), &before, &step);
    });
}

/// For the log: the tests in each spool of a run directory (read-only; errors shown).
fn spools(dir: &Path) -> String {
    let mut out = Vec::new();
    for name in entries(dir) {
        if !(name.starts_with("spool-") && name.ends_with(".db")) {
            continue;
        }
        let count = rusqlite::Connection::open_with_flags(
            dir.join(&name),
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
        )
        .and_then(|c| {
            c.query_row("SELECT count(*) FROM test_execution", [], |r| {
                r.get::<_, i64>(0)
            })
        });
        match count {
            Ok(n) => out.push(format!("{name}: {n} tests")),
            Err(e) => out.push(format!("{name}: {e}")),
        }
    }
    let mut logs = String::new();
    for name in entries(dir) {
        if name.ends_with(".log") || name.ends_with(".err") {
            let text = std::fs::read_to_string(dir.join(&name)).unwrap_or_default();
            let tail: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
            let tail = &tail[tail.len().saturating_sub(3)..];
            logs.push_str(&format!("\n    {name}: {}", tail.join(" | ")));
        }
    }
    format!("spools: {}{logs}", out.join(", "))
}

/// Two runs at once on the same project and TMPDIR: both complete, both recorded.
fn concurrent_runs(case: &mut Case) {
    let venv = case.venv;
    let project = Project::copy("many");
    let tmpdir = Sandbox::fresh();
    let _reaper = Reaper(tmpdir.path());
    let stagger = case.rng.range(0, 2000);
    println!("  the second run starts {stagger} ms after the first");
    let mut first = Live::start(&project, venv, &tmpdir);
    assert!(
        first.wait_for(Moment::Start { ms: stagger }, tmpdir.path()),
        "{}: the first run ended before the second started\n{}",
        case.name,
        first.finish().output()
    );
    let mut second = Live::start(&project, venv, &tmpdir);
    let (a, b) = (first.finish(), second.finish());
    let what = format!("{} ({venv:?}, {stagger} ms apart)", case.name);
    println!("  first: {}\n  second: {}", a.describe(), b.describe());
    assert_eq!(a.code, Some(0), "{what}: the first run\n{}", a.output());
    assert_eq!(b.code, Some(0), "{what}: the second run\n{}", b.output());
    assert_integrity(&project.datafile(), &what);
    println!("  {}", differences(&project.datafile(), venv));
    let passed: BTreeSet<String> = a.passed().union(&b.passed()).cloned().collect();
    assert_recorded(&project.datafile(), &passed, &what);
    tmpdir.assert_no_processes(Duration::from_secs(5), &what);
    assert_no_run_dir(tmpdir.path(), &what);
    converge(&project, venv, &tmpdir, &what, &|_| {});
}
