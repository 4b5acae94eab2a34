//! Fault injection (issue 4). On the `many` fixture (345 quick tests, no module-, class- or
//! session-scoped fixtures, so the parity comparison is exact), at seeded random moments:
//! kill -9 of a worker, SIGINT of the supervisor, kill -9 of the supervisor followed by a
//! normal run, two concurrent runs; and, not in `scripts/test` by default (they change modes,
//! flags and mounts, as root), a datafile made read-only and a TMPDIR that fills up. After
//! each: the database passes `PRAGMA integrity_check`; every test reported `PASSED` (with
//! `-v`) is recorded with real fingerprints (after a read-only datafile or a full disk, which
//! a run reports as an error: or runs again in the next run); no worker is left alive; no run
//! directory is left behind (after the follow-up run, for a killed supervisor); and runs until
//! testmon-run selects nothing leave the records single-process `pytest --testmon` leaves.
//!
//! Reproducing: each case prints the seed and its parameters (shown when the test fails, or
//! with `-- --nocapture`). `TESTMON_RUN_FAULT_SEED=<n or 0xhex>` draws other moments,
//! `TESTMON_RUN_FAULT_ONLY=<case>` (e.g. `sigint#3`) runs one case alone:
//!
//!     TESTMON_RUN_FAULT_SEED=0x... TESTMON_RUN_FAULT_ONLY=sigint#3 \
//!         cargo test --test integration faults:: -- --nocapture
//!
//! For longer runs (`scripts/soak`): `TESTMON_RUN_FAULT_CASES=N` runs N cases of every kind,
//! `TESTMON_RUN_FAULT_CASES=sigint=50,disk-full=5` the named kinds' counts (the others keep
//! theirs: `KINDS`); `faults_mixed` (ignored unless asked for: `-- --ignored`) runs
//! `TESTMON_RUN_FAULT_MIX` cases (200) of kinds drawn from the seed, `sigint#k` there being
//! the same case as in `faults_supervisor_interrupted` (a case there whose fault came after
//! its run had ended, on a fast machine, is void, and another is drawn in its place);
//! `TESTMON_RUN_FAULT_UNTIL=<unix seconds>` starts no case after that time. Each case ends
//! with one line for scripts:
//!
//!     fault-case: sigint#3 ok integrity=0 lost=0 orphans=0 leftovers=0 other=0 secs=7.1
//!
//! (`ok`, `FAILED` or `void`) counting what its checks found (a case stops at its first
//! failed check): databases failing `integrity_check`, tests reported finished but lost,
//! processes left alive, run directories left, and `other=1` for a failure of any other
//! check. A kind that cannot be set up here
//! (no way to make a file read-only for root, no tmpfs mount) is skipped with one line:
//! `fault-skip: disk-full: <why>`.

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::OnceLock;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::support::*;

/// The default seed; `TESTMON_RUN_FAULT_SEED` overrides it.
const DEFAULT_SEED: u64 = 0xfa17_5eed;

/// Tests in `tests/fixtures/many`, all passing.
const TOTAL: usize = 345;

/// A kind of fault's case.
type Body = fn(&mut Case);

/// The kinds of fault: name, cases in `scripts/test` (`TESTMON_RUN_FAULT_CASES` overrides),
/// the case.
const KINDS: [(&str, u64, Body); 6] = [
    ("worker-kill", 10, worker_killed),
    ("sigint", 10, supervisor_interrupted),
    ("supervisor-kill", 5, supervisor_killed),
    ("concurrent", 3, concurrent_runs),
    ("read-only", 0, read_only_datafile),
    ("disk-full", 0, disk_full),
];

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

/// A number from the environment, decimal or `0x` hex (`_` allowed), or `default`.
fn env_number(name: &str, default: u64) -> u64 {
    let Ok(text) = std::env::var(name) else {
        return default;
    };
    parse_number(&text).unwrap_or_else(|| panic!("{name}={text:?}: not a decimal or 0x number"))
}

fn parse_number(text: &str) -> Option<u64> {
    let t = text.trim();
    match t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(&hex.replace('_', ""), 16).ok(),
        None => t.replace('_', "").parse().ok(),
    }
}

fn master_seed() -> u64 {
    env_number("TESTMON_RUN_FAULT_SEED", DEFAULT_SEED)
}

/// How many cases of `kind` to run: `TESTMON_RUN_FAULT_CASES` (`N` for every kind, or
/// `kind=N,...`), else the kind's count in `KINDS`.
fn cases_of(kind: &str, default: u64) -> u64 {
    let Ok(text) = std::env::var("TESTMON_RUN_FAULT_CASES") else {
        return default;
    };
    if let Some(n) = parse_number(&text) {
        return n;
    }
    let mut count = default;
    for item in text.split(',').filter(|i| !i.trim().is_empty()) {
        let parsed = item.split_once('=').and_then(|(k, n)| {
            let k = k.trim();
            KINDS.iter().any(|(name, _, _)| *name == k).then_some(())?;
            Some((k, parse_number(n)?))
        });
        match parsed {
            Some((k, n)) if k == kind => count = n,
            Some(_) => {}
            None => panic!(
                "TESTMON_RUN_FAULT_CASES={text:?}: {item:?} is not KIND=N with a KIND of {:?}",
                KINDS.map(|(name, _, _)| name)
            ),
        }
    }
    count
}

/// `TESTMON_RUN_FAULT_UNTIL` (unix seconds) has passed: no case starts any more.
fn out_of_time() -> bool {
    let until = env_number("TESTMON_RUN_FAULT_UNTIL", u64::MAX);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    now >= until
}

/// Why a kind cannot be set up on this machine (it is then skipped, saying so), if it can't.
fn unavailable(kind: &str) -> Option<String> {
    match kind {
        "read-only" => freeze_method().err(),
        "disk-full" => tmpfs_available().err(),
        _ => None,
    }
}

/// What a case's checks found, for its `fault-case:` line (see the module's doc).
#[derive(Debug, Default, Clone, Copy)]
struct Tally {
    integrity: usize,
    lost: usize,
    orphans: usize,
    leftovers: usize,
}

thread_local! {
    static TALLY: RefCell<Tally> = RefCell::new(Tally::default());
}

fn tally(count: impl FnOnce(&mut Tally)) {
    TALLY.with(|t| count(&mut t.borrow_mut()));
}

/// Runs a check; when it fails, counts what it found (`count`), then fails as it did.
fn counted<T>(check: impl FnOnce() -> T, count: impl FnOnce(&mut Tally)) -> T {
    match catch_unwind(AssertUnwindSafe(check)) {
        Ok(value) => value,
        Err(panic) => {
            tally(count);
            resume_unwind(panic)
        }
    }
}

/// `assert_integrity`, counted.
fn check_integrity(datafile: &Path, what: &str) {
    counted(|| assert_integrity(datafile, what), |t| t.integrity += 1);
}

/// `Sandbox::assert_no_processes`, counted: the processes still alive.
fn check_no_processes(tmpdir: &Sandbox, within: Duration, what: &str) {
    counted(
        || tmpdir.assert_no_processes(within, what),
        |t| t.orphans += processes_under(tmpdir.path()).len().max(1),
    );
}

/// One case: its name (`sigint#3`), the venv it runs on and its own generator; `mixed` in
/// `faults_mixed`.
struct Case {
    name: String,
    venv: Venv,
    rng: Rng,
    mixed: bool,
}

/// Why a case of `faults_mixed` is void: its fault came after its run had ended.
struct Void;

impl Case {
    /// Starts a run of testmon-run and waits for `moment`; a run that ended before it tested
    /// nothing (see `assert_struck`).
    fn start_until(&self, project: &Project, tmpdir: &Sandbox, moment: Moment) -> Live {
        let mut live = Live::start(project, self.venv, tmpdir);
        let struck = live.wait_for(moment, tmpdir.path());
        self.assert_struck(struck, || {
            format!(
                "{}: the run ended before the moment\n{}",
                self.name,
                live.finish().output()
            )
        });
        live
    }

    /// The fault came while the run was on (`struck`); else the case tested nothing and fails
    /// with `why`, or, in `faults_mixed`, is void (another case is drawn in its place).
    fn assert_struck(&self, struck: bool, why: impl FnOnce() -> String) {
        if struck {
            return;
        }
        let why = why();
        if self.mixed {
            println!("  void: {}", why.lines().next().unwrap_or(""));
            std::panic::resume_unwind(Box::new(Void));
        }
        panic!("{why}");
    }
}

/// How a case ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Ok,
    Failed,
    /// Its fault came after its run had ended (`faults_mixed` only).
    Void,
}

/// Runs case `index` of `kind` (its generator from the seed, the kind and the index; every
/// third on testmon 2.1.4), printing its `fault-case:` line.
fn run_case(kind: &str, index: u64, body: Body, mixed: bool) -> Verdict {
    let seed = master_seed();
    let kind_salt = kind
        .bytes()
        .fold(0u64, |h, b| h.wrapping_mul(0x100_0000_01b3) ^ u64::from(b));
    let name = format!("{kind}#{index}");
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
        mixed,
    };
    println!("{name}: {venv:?} (TESTMON_RUN_FAULT_SEED={seed:#x} TESTMON_RUN_FAULT_ONLY={name})");
    TALLY.with(|t| *t.borrow_mut() = Tally::default());
    let t = Instant::now();
    let result = catch_unwind(AssertUnwindSafe(|| body(&mut case)));
    let secs = t.elapsed().as_secs_f64();
    let verdict = match &result {
        Ok(()) => Verdict::Ok,
        Err(panic) if panic.is::<Void>() => Verdict::Void,
        Err(_) => Verdict::Failed,
    };
    let word = match verdict {
        Verdict::Ok => "ok",
        Verdict::Failed => "FAILED",
        Verdict::Void => "void",
    };
    println!("{name}: {word} in {secs:.1}s");
    let c = TALLY.with(|t| *t.borrow());
    let counted = c.integrity + c.lost + c.orphans + c.leftovers > 0;
    println!(
        "fault-case: {name} {word} integrity={} lost={} orphans={} leftovers={} other={} secs={secs:.1}",
        c.integrity,
        c.lost,
        c.orphans,
        c.leftovers,
        usize::from(verdict == Verdict::Failed && !counted),
    );
    verdict
}

/// Runs the cases of a kind (`cases_of`; or the one `TESTMON_RUN_FAULT_ONLY` names), all of
/// them even when one fails, and fails naming the failed ones.
fn run_cases(kind: &str) {
    let (_, default, body) = *KINDS.iter().find(|(k, _, _)| *k == kind).unwrap();
    let count = cases_of(kind, default);
    let indices: Vec<u64> = match std::env::var("TESTMON_RUN_FAULT_ONLY") {
        Ok(only) => only
            .strip_prefix(kind)
            .and_then(|rest| rest.strip_prefix('#'))
            .and_then(|index| index.parse().ok())
            .into_iter()
            .collect(),
        Err(_) => (0..count).collect(),
    };
    if indices.is_empty() {
        println!("{kind}: no case to run (TESTMON_RUN_FAULT_CASES={kind}=N runs N)");
        return;
    }
    if let Some(why) = unavailable(kind) {
        println!("fault-skip: {kind}: {why}");
        return;
    }
    let started = Instant::now();
    let mut failed = Vec::new();
    for index in indices {
        if out_of_time() {
            println!("{kind}: TESTMON_RUN_FAULT_UNTIL reached: no more cases");
            break;
        }
        if run_case(kind, index, body, false) != Verdict::Ok {
            failed.push(format!("{kind}#{index}"));
        }
    }
    println!(
        "{kind}: {} failed, {:.1}s",
        failed.len(),
        started.elapsed().as_secs_f64()
    );
    assert!(
        failed.is_empty(),
        "failed cases (TESTMON_RUN_FAULT_SEED={:#x}): {failed:?}",
        master_seed()
    );
}

#[test]
fn faults_worker_killed() {
    run_cases("worker-kill");
}

#[test]
fn faults_supervisor_interrupted() {
    run_cases("sigint");
}

#[test]
fn faults_supervisor_killed_then_recovered() {
    run_cases("supervisor-kill");
}

#[test]
fn faults_two_concurrent_runs() {
    run_cases("concurrent");
}

#[test]
fn faults_read_only_datafile() {
    run_cases("read-only");
}

#[test]
fn faults_disk_full() {
    run_cases("disk-full");
}

/// `TESTMON_RUN_FAULT_MIX` cases (200), each of a kind drawn from the seed among those that
/// can be set up here: the k-th case of a kind is that kind's case #k. A case whose fault
/// came after its run had ended (a fast machine) tested nothing: it is void, and another is
/// drawn in its place. For `scripts/soak`.
#[test]
#[ignore = "long: scripts/soak runs it"]
fn faults_mixed() {
    let seed = master_seed();
    let total = env_number("TESTMON_RUN_FAULT_MIX", 200);
    if std::env::var_os("TESTMON_RUN_FAULT_ONLY").is_some() {
        // The same case as in its kind's test.
        for (kind, _, _) in KINDS {
            run_cases(kind);
        }
        return;
    }
    let mut kinds = Vec::new();
    for (kind, _, body) in KINDS {
        match unavailable(kind) {
            Some(why) => println!("fault-skip: {kind}: {why}"),
            None => kinds.push((kind, body, 0u64)),
        }
    }
    assert!(!kinds.is_empty(), "no kind of fault can be set up here");
    println!(
        "fault-mix: {total} cases of {:?}, TESTMON_RUN_FAULT_SEED={seed:#x}",
        kinds.iter().map(|(k, _, _)| *k).collect::<Vec<_>>()
    );
    let mut rng = Rng(seed ^ 0x6d69_7865_6420_6b69);
    let started = Instant::now();
    let (mut ran, mut void, mut failed) = (0, 0, Vec::new());
    while ran < total {
        if out_of_time() {
            println!("fault-mix: TESTMON_RUN_FAULT_UNTIL reached after {ran} of {total} cases");
            break;
        }
        assert!(
            void <= total,
            "{void} void cases: the faults come after the runs end on this machine"
        );
        let pick = (rng.next() % kinds.len() as u64) as usize;
        let (kind, body, next) = &mut kinds[pick];
        let index = *next;
        *next += 1;
        let name = format!("{kind}#{index}");
        match run_case(kind, index, *body, true) {
            Verdict::Ok => ran += 1,
            Verdict::Failed => {
                ran += 1;
                failed.push(name);
            }
            Verdict::Void => void += 1,
        }
    }
    println!(
        "fault-mix: {ran} cases, {void} void, {} failed, {:.1}s",
        failed.len(),
        started.elapsed().as_secs_f64()
    );
    assert!(
        failed.is_empty(),
        "failed cases (TESTMON_RUN_FAULT_SEED={seed:#x}): {failed:?}"
    );
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
    tally(|t| t.leftovers += left.len());
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
    tally(|t| t.lost += bad.len());
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
    static PYTEST90: OnceLock<Dump> = OnceLock::new();
    static TESTMON21: OnceLock<Dump> = OnceLock::new();
    static PLUGINS: OnceLock<Dump> = OnceLock::new();
    static COMPAT: OnceLock<Dump> = OnceLock::new();
    let cell = match venv {
        Venv::Testmon22 => &TESTMON22,
        Venv::Pytest90 => &PYTEST90,
        Venv::Testmon21 => &TESTMON21,
        Venv::Plugins => &PLUGINS,
        Venv::Compat => &COMPAT,
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
        check_no_processes(tmpdir, Duration::from_secs(5), &step);
        ran.push(format!(
            "{} tests in {:.1}s",
            run.ran.len(),
            t.elapsed().as_secs_f64()
        ));
        if run.ran.is_empty() {
            println!("  follow-up runs: {}", ran.join(", "));
            check_integrity(&project.datafile(), what);
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
    // Startup: gw0's imports and collection, the forks (src/run/zygote.rs), the first tests;
    // the whole run of `many` takes ~1 s from there on an idle machine.
    let moment = Moment::pick(&mut case.rng, |ms| Moment::Workers { ms }, (0, 700));
    let pick = case.rng.range(0, 1) as usize;
    println!("  kill -9 of worker #{pick} (of those alive, by name) at {moment}");
    let mut live = case.start_until(&project, &tmpdir, moment);
    // At a startup moment the workers may not be there yet; and a worker gw0 is forking
    // (src/run/zygote.rs) is not one yet: its intermediate parent, or the fork itself until it
    // holds its own log, is gw0's child or named as gw0. Workers are the supervisor's
    // children, each with a name of its own.
    let supervisor = live.pid();
    let deadline = Instant::now() + Duration::from_secs(60);
    let alive = loop {
        let alive: Vec<(String, Pid)> = workers_under(tmpdir.path())
            .into_iter()
            .filter(|(_, pid)| parent_of(*pid) == Some(supervisor))
            .collect();
        let names: BTreeSet<&String> = alive.iter().map(|(n, _)| n).collect();
        if !alive.is_empty() && names.len() == alive.len() {
            break alive;
        }
        assert!(
            Instant::now() < deadline,
            "{}: no worker started",
            case.name
        );
        let running = live.pump(Duration::from_millis(10));
        case.assert_struck(running, || {
            format!(
                "{}: the run ended before a worker could be killed",
                case.name
            )
        });
    };
    let (victim, pid) = alive[pick % alive.len()].clone();
    println!(
        "  killing {victim} (pid {pid}) after {} PASSED lines, at {} ms",
        live.passed(),
        live.elapsed_ms()
    );
    // On a fast machine every test may have passed by now: the kill then meets a worker that
    // may have ended its session, no crash. In `faults_mixed` such a case is void; here the
    // run must then end as if nothing happened (checked below).
    let all_passed = live.passed() >= TOTAL;
    if case.mixed {
        case.assert_struck(!all_passed, || {
            format!("{}: every test had passed before the kill", case.name)
        });
    }
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
        // Its session had ended: nothing to report, exit 0 (the checks below hold as ever).
        None if all_passed && !run.output().contains(&format!("worker {victim} crashed")) => {
            println!("  NOTE: every test had passed before the kill: {victim} had ended");
            0
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
    check_integrity(&project.datafile(), &what);
    assert_recorded(&project.datafile(), passed.difference(&crashed), &what);
    check_no_processes(&tmpdir, Duration::from_secs(10), &what);
    assert_no_run_dir(tmpdir.path(), &what);
    converge(&project, venv, &tmpdir, &what, &|_| {});
}

/// A process's parent (from /proc/PID/stat), while it exists.
fn parent_of(pid: Pid) -> Option<Pid> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after_name = &stat[stat.rfind(')')? + 2..];
    let ppid = after_name.split_whitespace().nth(1)?.parse().ok()?;
    Some(Pid::from_raw(ppid))
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
    let mut live = case.start_until(&project, &tmpdir, moment);
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
    check_integrity(&project.datafile(), &what);
    if project.datafile().exists() {
        println!("  {}", differences(&project.datafile(), venv));
        assert_recorded(&project.datafile(), &run.passed(), &what);
    } else {
        assert_eq!(run.passed_lines(), 0, "{what}: passed, but no database");
    }
    check_no_processes(&tmpdir, Duration::from_secs(5), &what);
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
    let mut live = case.start_until(&project, &tmpdir, moment);
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
    check_no_processes(
        &tmpdir,
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
        tally(|t| t.lost += again.len());
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
    let struck = first.wait_for(Moment::Start { ms: stagger }, tmpdir.path());
    case.assert_struck(struck, || {
        format!(
            "{}: the first run ended before the second started\n{}",
            case.name,
            first.finish().output()
        )
    });
    let mut second = Live::start(&project, venv, &tmpdir);
    let (a, b) = (first.finish(), second.finish());
    let what = format!("{} ({venv:?}, {stagger} ms apart)", case.name);
    println!("  first: {}\n  second: {}", a.describe(), b.describe());
    assert_eq!(a.code, Some(0), "{what}: the first run\n{}", a.output());
    assert_eq!(b.code, Some(0), "{what}: the second run\n{}", b.output());
    check_integrity(&project.datafile(), &what);
    println!("  {}", differences(&project.datafile(), venv));
    let passed: BTreeSet<String> = a.passed().union(&b.passed()).cloned().collect();
    assert_recorded(&project.datafile(), &passed, &what);
    check_no_processes(&tmpdir, Duration::from_secs(5), &what);
    assert_no_run_dir(tmpdir.path(), &what);
    converge(&project, venv, &tmpdir, &what, &|_| {});
}

/// The datafile and its directory made read-only at a random moment (before the database
/// exists, while it is prepared, while the tests run, before the run records).
fn read_only_datafile(case: &mut Case) {
    let venv = case.venv;
    let method = freeze_method().unwrap_or_else(|why| panic!("{}: {why}", case.name));
    let project = Project::copy("many");
    let tmpdir = Sandbox::fresh();
    let _reaper = Reaper(tmpdir.path());
    let moment = Moment::pick(&mut case.rng, |ms| Moment::Start { ms }, (0, 1800));
    println!("  the datafile and its directory made read-only ({method}) at {moment}");
    let mut live = case.start_until(&project, &tmpdir, moment);
    let datafile = project.datafile();
    let files: Vec<PathBuf> = datafile.exists().then_some(datafile).into_iter().collect();
    let mut frozen = Frozen::freeze(method, &project.root, &files)
        .unwrap_or_else(|e| panic!("{}: making the datafile read-only: {e}", case.name));
    println!(
        "  read-only after {} PASSED lines, at {} ms{}",
        live.passed(),
        live.elapsed_ms(),
        if files.is_empty() {
            " (no datafile yet: its directory only)"
        } else {
            ""
        }
    );
    let run = live.finish();
    let what = format!("{} ({venv:?}, read-only at {moment})", case.name);
    after_environment_fault(&project, venv, &tmpdir, &run, &what, &mut || frozen.thaw());
}

/// TMPDIR, where the run directory lives (and SQLite's and pytest's temporary files), is a
/// small tmpfs that fills up at a random moment (before the run directory exists, while the
/// workers write their spools, before the run records); then it is freed again.
fn disk_full(case: &mut Case) {
    let venv = case.venv;
    let project = Project::copy("many");
    let tmpdir = Sandbox::fresh_at("tmpfs");
    let tmpfs = Tmpfs::mount(tmpdir.path(), "4m")
        .unwrap_or_else(|e| panic!("{}: mounting the tmpfs: {e}", case.name));
    let _reaper = Reaper(tmpdir.path());
    let moment = Moment::pick(&mut case.rng, |ms| Moment::Start { ms }, (0, 1800));
    println!("  TMPDIR, a 4 MiB tmpfs, filled up at {moment}");
    let mut live = case.start_until(&project, &tmpdir, moment);
    let filled = tmpfs.fill();
    println!(
        "  filled up ({} KiB) after {} PASSED lines, at {} ms",
        filled / 1024,
        live.passed(),
        live.elapsed_ms()
    );
    let run = live.finish();
    let what = format!("{} ({venv:?}, TMPDIR full at {moment})", case.name);
    after_environment_fault(&project, venv, &tmpdir, &run, &what, &mut || tmpfs.free());
}

/// After a run that met a fault of its environment (a read-only datafile, a full TMPDIR),
/// which it cannot repair but must survive: it ended by itself, without a panic, exit 0 only
/// with every test it reported `PASSED` recorded (else 1, 3 or 4, saying why); no process and
/// no run directory is left. Then `lift` ends the fault; the database passes
/// `integrity_check`; the tests reported `PASSED` but not recorded run again in the next run
/// (none is lost: testmon would select them again), and the runs converge.
fn after_environment_fault(
    project: &Project,
    venv: Venv,
    tmpdir: &Sandbox,
    run: &Finished,
    what: &str,
    lift: &mut dyn FnMut(),
) {
    println!("  {}", run.describe());
    for line in run
        .stdout
        .iter()
        .map(String::as_str)
        .chain(run.stderr.lines())
        .filter(|l| l.starts_with("testmon-run: error:") || l.starts_with("testmon-run: warning:"))
        .take(3)
    {
        println!("  {}", line.chars().take(200).collect::<String>());
    }
    assert!(
        !run.output().contains("panicked"),
        "{what}: testmon-run panicked\n{}",
        run.output()
    );
    assert!(
        matches!(run.code, Some(0 | 1 | 3 | 4)),
        "{what}: exit code\n{}",
        run.output()
    );
    check_no_processes(tmpdir, Duration::from_secs(10), what);
    assert_no_run_dir(tmpdir.path(), what);
    lift();
    let datafile = project.datafile();
    let passed = run.passed();
    let unrecorded: BTreeSet<String> = if datafile.exists() {
        check_integrity(&datafile, what);
        if has_schema(&datafile) {
            println!("  {}", differences(&datafile, venv));
        }
        if run.code == Some(0) {
            assert_recorded(&datafile, &passed, what);
        }
        let records = if has_schema(&datafile) {
            dump(&datafile)
        } else {
            Dump::new()
        };
        let default = records.get("default");
        passed
            .iter()
            .filter(|t| {
                !default
                    .and_then(|r| r.get(*t))
                    .is_some_and(|r| is_real(t, r))
            })
            .cloned()
            .collect()
    } else {
        if run.code == Some(0) && !passed.is_empty() {
            tally(|t| t.lost += passed.len());
            panic!("{what}: exit 0, {} tests passed, no datafile", passed.len());
        }
        passed.clone()
    };
    println!(
        "  {} of the {} tests reported PASSED not recorded",
        unrecorded.len(),
        passed.len()
    );
    converge(project, venv, tmpdir, what, &|first| {
        let lost: Vec<&String> = unrecorded.difference(&first.ran).collect();
        tally(|t| t.lost += lost.len());
        assert!(
            lost.is_empty(),
            "{what}: {} tests reported PASSED, not recorded, and not run again by the next run \
             (lost): {lost:?}\n{}",
            lost.len(),
            first.output()
        );
    });
}

/// The datafile holds testmon's tables (a run stopped while creating it may leave less).
fn has_schema(datafile: &Path) -> bool {
    rusqlite::Connection::open(datafile)
        .and_then(|c| {
            c.query_row(
                "SELECT count(*) FROM sqlite_master WHERE name = 'test_execution'",
                [],
                |r| r.get::<_, i64>(0),
            )
        })
        .is_ok_and(|n| n > 0)
}

/// Runs a command to its end; Err with its stderr (or why it did not start) when it failed.
fn command(program: &str, args: &[&std::ffi::OsStr]) -> Result<(), String> {
    let shown = || {
        let args: Vec<String> = args.iter().map(|a| a.to_string_lossy().into()).collect();
        format!("`{program} {}`", args.join(" "))
    };
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{}: {e}", shown()))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{}: {}",
            shown(),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// How a directory and its files are made read-only here: file modes (`0444`, the directory
/// `0555`), which stop anyone but root; for root, also `chattr +i`, or else a read-only bind
/// mount of the directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Freeze {
    Modes,
    Immutable,
    BindMount,
}

impl std::fmt::Display for Freeze {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str(match self {
            Freeze::Modes => "chmod 0444/0555",
            Freeze::Immutable => "chmod and chattr +i",
            Freeze::BindMount => "chmod and a read-only bind mount",
        })
    }
}

/// The first `Freeze` that refuses writes here (tried once, on a scratch directory), or why
/// none does.
fn freeze_method() -> Result<Freeze, String> {
    static METHOD: OnceLock<Result<Freeze, String>> = OnceLock::new();
    METHOD
        .get_or_init(|| {
            let scratch = fresh_tmpdir();
            let dir = scratch.path().join("data");
            std::fs::create_dir(&dir).unwrap();
            let file = dir.join("file");
            std::fs::write(&file, "x").unwrap();
            let mut why = Vec::new();
            for method in [Freeze::Modes, Freeze::Immutable, Freeze::BindMount] {
                match Frozen::freeze(method, &dir, std::slice::from_ref(&file)) {
                    Err(e) => why.push(format!("{method}: {e}")),
                    Ok(mut frozen) => {
                        let appended = std::fs::OpenOptions::new()
                            .append(true)
                            .open(&file)
                            .and_then(|mut f| f.write_all(b"y"));
                        let created = std::fs::File::create(dir.join("new"));
                        let _ = std::fs::remove_file(dir.join("new"));
                        frozen.thaw();
                        if appended.is_err() && created.is_err() {
                            return Ok(method);
                        }
                        why.push(format!("{method}: writes still succeed"));
                    }
                }
            }
            Err(format!(
                "no way to make a datafile read-only here: {}",
                why.join("; ")
            ))
        })
        .clone()
}

/// A directory and some of its files made read-only until `thaw` (or drop).
struct Frozen {
    method: Freeze,
    dir: PathBuf,
    files: Vec<PathBuf>,
    mounted: bool,
    thawed: bool,
}

impl Frozen {
    fn freeze(method: Freeze, dir: &Path, files: &[PathBuf]) -> Result<Frozen, String> {
        use std::os::unix::fs::PermissionsExt;
        let mut frozen = Frozen {
            method,
            dir: dir.to_path_buf(),
            files: files.to_vec(),
            mounted: false,
            thawed: false,
        };
        let chmod = |path: &Path, mode| {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
                .map_err(|e| format!("chmod {mode:o} {}: {e}", path.display()))
        };
        for file in files {
            chmod(file, 0o444)?;
        }
        chmod(dir, 0o555)?;
        let dir = dir.as_os_str();
        match method {
            Freeze::Modes => {}
            Freeze::Immutable => {
                let mut args: Vec<&std::ffi::OsStr> = vec!["+i".as_ref()];
                args.extend(files.iter().map(|f| f.as_os_str()));
                args.push(dir);
                command("chattr", &args)?;
            }
            Freeze::BindMount => {
                command("mount", &["--bind".as_ref(), dir, dir])?;
                frozen.mounted = true;
                command("mount", &["-o".as_ref(), "remount,bind,ro".as_ref(), dir])?;
            }
        }
        Ok(frozen)
    }

    /// Writable again (best effort: also called from drop).
    fn thaw(&mut self) {
        use std::os::unix::fs::PermissionsExt;
        if std::mem::replace(&mut self.thawed, true) {
            return;
        }
        let dir = self.dir.as_os_str();
        match self.method {
            Freeze::Modes => {}
            Freeze::Immutable => {
                let mut args: Vec<&std::ffi::OsStr> = vec!["-i".as_ref()];
                args.extend(self.files.iter().map(|f| f.as_os_str()));
                args.push(dir);
                let _ = command("chattr", &args);
            }
            Freeze::BindMount if self.mounted => {
                let _ = command("umount", &["-l".as_ref(), dir]);
            }
            Freeze::BindMount => {}
        }
        for file in &self.files {
            let _ = std::fs::set_permissions(file, std::fs::Permissions::from_mode(0o644));
        }
        let _ = std::fs::set_permissions(&self.dir, std::fs::Permissions::from_mode(0o755));
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        self.thaw();
    }
}

/// A tmpfs can be mounted here (tried once), or why not.
fn tmpfs_available() -> Result<(), String> {
    static AVAILABLE: OnceLock<Result<(), String>> = OnceLock::new();
    AVAILABLE
        .get_or_init(|| {
            let scratch = fresh_tmpdir();
            Tmpfs::mount(scratch.path(), "64k")
                .map(drop)
                .map_err(|e| format!("cannot mount a tmpfs here: {e}"))
        })
        .clone()
}

/// A tmpfs mounted on a directory, unmounted when dropped.
struct Tmpfs {
    path: PathBuf,
}

impl Tmpfs {
    fn mount(path: &Path, size: &str) -> Result<Tmpfs, String> {
        let options = format!("size={size},mode=0700");
        command(
            "mount",
            &[
                "-t".as_ref(),
                "tmpfs".as_ref(),
                "-o".as_ref(),
                options.as_ref(),
                "testmon-run-faults".as_ref(),
                path.as_os_str(),
            ],
        )?;
        Ok(Tmpfs {
            path: path.to_path_buf(),
        })
    }

    /// Fills what is left with a file: the bytes it took.
    fn fill(&self) -> usize {
        let Ok(mut file) = std::fs::File::create(self.path.join("filler")) else {
            return 0;
        };
        let chunk = vec![0u8; 64 * 1024];
        let mut written = 0;
        while let Ok(n @ 1..) = file.write(&chunk) {
            written += n;
        }
        written
    }

    fn free(&self) {
        let _ = std::fs::remove_file(self.path.join("filler"));
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = command("umount", &["-l".as_ref(), self.path.as_os_str()]);
    }
}
