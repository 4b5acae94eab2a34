//! The integration tests' shared helpers: a small builder for running testmon-run and
//! single-process pytest on a copy of a fixture project, a canonical dump of testmon's
//! database, a sandbox TMPDIR for testmon-run and the checks that a run left nothing behind
//! in it (no run directory, no process).

#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::unistd::Pid;

/// testmon-run, the binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_testmon-run");

/// Generous: CI machines are slow and shared; a hang still ends the test.
pub const TIMEOUT: Duration = Duration::from_secs(180);

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The supported pytest / pytest-testmon pairs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Venv {
    /// pytest 9.2.0, pytest-testmon 2.2.0 (the default)
    Testmon22,
    /// pytest 9.0.2, pytest-testmon 2.2.0
    Pytest90,
    /// pytest 8.3.5, pytest-testmon 2.1.4
    Testmon21,
    /// pytest 9.2.0, pytest-testmon 2.2.0, pytest-xdist and the plugins users install
    /// (pytest-cov, pytest-html, pytest-django, ...): for tests/integration/plugins.rs only,
    /// not in `VENVS`.
    Plugins,
    /// The virtualenv `$TESTMON_RUN_COMPAT_VENV` names: one entry of scripts/compat's version
    /// matrix (other Pythons, other pytest versions), for tests/integration/compat.rs only, not
    /// in `VENVS`.
    Compat,
}

pub const VENVS: [Venv; 3] = [Venv::Testmon22, Venv::Pytest90, Venv::Testmon21];

impl Venv {
    pub fn dir(self) -> PathBuf {
        repo().join(match self {
            Venv::Testmon22 => ".venv",
            Venv::Pytest90 => ".venv-902",
            Venv::Testmon21 => ".venv-214",
            Venv::Plugins => ".venv-plugins",
            Venv::Compat => return compat_venv(),
        })
    }

    pub fn pytest(self) -> PathBuf {
        let pytest = self.dir().join("bin/pytest");
        assert!(
            pytest.exists(),
            "{} missing: run scripts/setup first",
            pytest.display()
        );
        pytest
    }

    pub fn python(self) -> PathBuf {
        self.dir().join("bin/python")
    }
}

/// `$TESTMON_RUN_COMPAT_VENV`, which scripts/compat sets to one of its virtualenvs.
fn compat_venv() -> PathBuf {
    let Some(dir) = std::env::var_os("TESTMON_RUN_COMPAT_VENV") else {
        panic!(
            "TESTMON_RUN_COMPAT_VENV is not set: it names the virtualenv of one entry of the \
             version matrix, and scripts/compat (which makes them) sets it; run scripts/compat"
        )
    };
    let dir = PathBuf::from(dir);
    assert!(
        dir.join("bin/pytest").exists(),
        "TESTMON_RUN_COMPAT_VENV={}: not a virtualenv with pytest (no bin/pytest); \
         scripts/compat makes them under target/compat/",
        dir.display()
    );
    dir
}

/// A copy of a fixture project in a temporary directory.
pub struct Project {
    _tmp: tempfile::TempDir,
    pub root: PathBuf,
}

impl Project {
    fn in_tempdir(name: &str) -> Project {
        let tmp = tempfile::Builder::new()
            .prefix("testmon-run-it-")
            .tempdir()
            .unwrap();
        let root = tmp.path().join(name);
        Project { _tmp: tmp, root }
    }

    pub fn copy(fixture: &str) -> Project {
        let project = Project::in_tempdir(fixture);
        copy_dir(&repo().join("tests/fixtures").join(fixture), &project.root);
        project
    }

    /// An empty project (a pytest.ini with `testpaths = tests`), to fill with `write`.
    pub fn empty(name: &str) -> Project {
        let project = Project::in_tempdir(name);
        let root = &project.root;
        std::fs::create_dir_all(root.join("tests")).unwrap();
        std::fs::write(root.join("pytest.ini"), "[pytest]\ntestpaths = tests\n").unwrap();
        std::fs::write(
            root.join("conftest.py"),
            "# the rootdir conftest puts the root on sys.path\n",
        )
        .unwrap();
        project
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }

    pub fn datafile(&self) -> PathBuf {
        self.path(".testmondata")
    }

    pub fn write(&self, rel: &str, content: &str) {
        let path = self.path(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, content).unwrap();
    }

    pub fn read(&self, rel: &str) -> String {
        std::fs::read_to_string(self.path(rel)).unwrap()
    }

    /// Replaces `from` (which must occur once) by `to` in a file.
    pub fn edit(&self, rel: &str, from: &str, to: &str) {
        let text = self.read(rel);
        assert_eq!(
            text.matches(from).count(),
            1,
            "{rel} must contain {from:?} once"
        );
        self.write(rel, &text.replacen(from, to, 1));
    }

    pub fn remove(&self, rel: &str) {
        std::fs::remove_file(self.path(rel)).unwrap();
    }

    /// `testmon-run ARGS -- <venv>/bin/pytest --testmon PYTEST_ARGS`
    pub fn testmon_run(&self, venv: Venv, args: &[&str], pytest_args: &[&str]) -> Cmd {
        let mut cmd = Cmd::new(BIN, &self.root);
        cmd.args(args)
            .arg("--")
            .arg(venv.pytest())
            .arg("--testmon")
            .args(pytest_args);
        cmd
    }

    /// `<venv>/bin/pytest --testmon PYTEST_ARGS`, single process.
    pub fn pytest(&self, venv: Venv, pytest_args: &[&str]) -> Cmd {
        let mut cmd = Cmd::new(venv.pytest(), &self.root);
        cmd.arg("--testmon").args(pytest_args);
        cmd
    }

    /// Every file under the project, relative, with the ones a run may leave filtered out.
    pub fn files(&self) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        list_files(&self.root, &self.root, &mut out);
        out
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name();
        let name_str = name.to_string_lossy();
        if name_str == "__pycache__"
            || name_str == ".pytest_cache"
            || name_str.starts_with(".testmondata")
        {
            continue;
        }
        let target = to.join(&name);
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

fn list_files(root: &Path, dir: &Path, out: &mut BTreeSet<String>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let path = entry.path();
        if entry.file_type().unwrap().is_dir() {
            list_files(root, &path, out);
        } else {
            out.insert(
                path.strip_prefix(root)
                    .unwrap()
                    .to_string_lossy()
                    .into_owned(),
            );
        }
    }
}

/// A command under test, run with a timeout, recording which tests started.
pub struct Cmd {
    program: OsString,
    args: Vec<OsString>,
    cwd: PathBuf,
    env: Vec<(OsString, Option<OsString>)>,
}

#[derive(Debug)]
pub struct Run {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    /// Node ids of the tests that started, in any order.
    pub ran: BTreeSet<String>,
}

impl Run {
    pub fn code(&self) -> i32 {
        self.code
            .unwrap_or_else(|| panic!("killed by a signal\n{}", self.output()))
    }

    pub fn output(&self) -> String {
        format!(
            "--- stdout ---\n{}\n--- stderr ---\n{}",
            self.stdout, self.stderr
        )
    }

    /// The last non-empty line of stdout: pytest's summary line.
    pub fn summary(&self) -> &str {
        self.stdout
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("")
    }
}

impl Cmd {
    pub fn new(program: impl Into<OsString>, cwd: &Path) -> Cmd {
        Cmd {
            program: program.into(),
            args: Vec::new(),
            cwd: cwd.to_path_buf(),
            env: Vec::new(),
        }
    }

    pub fn arg(&mut self, arg: impl Into<OsString>) -> &mut Cmd {
        self.args.push(arg.into());
        self
    }

    pub fn args<I: IntoIterator<Item = S>, S: Into<OsString>>(&mut self, args: I) -> &mut Cmd {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    pub fn env(&mut self, key: &str, value: impl Into<OsString>) -> &mut Cmd {
        self.env.push((key.into(), Some(value.into())));
        self
    }

    pub fn env_remove(&mut self, key: &str) -> &mut Cmd {
        self.env.push((key.into(), None));
        self
    }

    pub fn command(&self) -> Command {
        let mut cmd = Command::new(&self.program);
        cmd.args(&self.args).current_dir(&self.cwd);
        for key in ENV_REMOVED {
            cmd.env_remove(key);
        }
        cmd.env(ENV_ADDED.0, ENV_ADDED.1);
        // testmon-run's cache (probe answers, no-op state) kept out of the user's home.
        cmd.env("TESTMON_RUN_CACHE_DIR", cache_dir());
        for (key, value) in &self.env {
            match value {
                Some(value) => cmd.env(key, value),
                None => cmd.env_remove(key),
            };
        }
        cmd
    }

    /// Runs to completion (or the timeout), with `-p ran_log` recording the tests that start.
    pub fn run(&self) -> Run {
        run_recording(self.command())
    }

    /// Runs exactly as built, without the ran_log plugin.
    pub fn run_plain(&self) -> Run {
        run_with_timeout(self.command())
    }
}

/// Removed from every command's environment (`Cmd::command`), for a clean, deterministic
/// environment for pytest and testmon: each would change what pytest or testmon does.
pub const ENV_REMOVED: [&str; 4] = [
    "TESTMON_DATAFILE",
    "PYTEST_ADDOPTS",
    "PYTEST_XDIST_AUTO_NUM_WORKERS",
    "COLUMNS",
];

/// Set in every command's environment (`Cmd::command`): no `__pycache__` in the projects.
pub const ENV_ADDED: (&str, &str) = ("PYTHONDONTWRITEBYTECODE", "1");

/// Runs `cmd` (a pytest command, or a command that ends in one) to completion (or the
/// timeout) with `-p ran_log` added, tests/support on its PYTHONPATH and $RAN_LOG set, so that
/// `Run::ran` holds the tests that started.
pub fn run_recording(mut cmd: Command) -> Run {
    let log = tempfile::NamedTempFile::new().unwrap();
    let support = repo().join("tests/support");
    let pythonpath = match std::env::var_os("PYTHONPATH") {
        Some(p) if !p.is_empty() => {
            let mut v = support.into_os_string();
            v.push(":");
            v.push(p);
            v
        }
        _ => support.into_os_string(),
    };
    cmd.env("PYTHONPATH", pythonpath).env("RAN_LOG", log.path());
    cmd.arg("-p").arg("ran_log");
    let mut run = run_with_timeout(cmd);
    run.ran = ran_log(log.path());
    run
}

pub fn run_with_timeout(mut cmd: Command) -> Run {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("spawning {cmd:?}: {e}"));
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let out_thread = std::thread::spawn(move || {
        let mut s = Vec::new();
        stdout.read_to_end(&mut s).ok();
        s
    });
    let err_thread = std::thread::spawn(move || {
        let mut s = Vec::new();
        stderr.read_to_end(&mut s).ok();
        s
    });
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if start.elapsed() > TIMEOUT {
            child.kill().ok();
            let _ = child.wait();
            panic!("{cmd:?} did not finish within {TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Run {
        code: status.code(),
        stdout: String::from_utf8_lossy(&out_thread.join().unwrap()).into_owned(),
        stderr: String::from_utf8_lossy(&err_thread.join().unwrap()).into_owned(),
        ran: BTreeSet::new(),
    }
}

/// One test's record, canonically: failed flag and sorted (filename, fsha, checksums hex).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestRecord {
    pub failed: Option<i64>,
    pub fingerprints: Vec<(String, String, String)>,
}

impl TestRecord {
    pub fn files(&self) -> BTreeSet<&str> {
        self.fingerprints
            .iter()
            .map(|(f, _, _)| f.as_str())
            .collect()
    }

    /// testmon's "not yet run" placeholder: no fingerprint with a file hash (fsha).
    pub fn is_placeholder(&self) -> bool {
        self.fingerprints.iter().all(|(_, fsha, _)| fsha.is_empty())
    }

    /// Real fingerprints: at least one, and each with a file hash (fsha).
    pub fn has_real_fingerprints(&self) -> bool {
        !self.fingerprints.is_empty()
            && self
                .fingerprints
                .iter()
                .all(|(_, fsha, _)| !fsha.is_empty())
    }
}

/// environment name → test name → record; ids, mtimes, durations and `forced` left out.
/// A second row of the same name (testmon 2.1 adds one when packages change) is "name (2)".
pub type Dump = BTreeMap<String, BTreeMap<String, TestRecord>>;

pub fn dump(datafile: &Path) -> Dump {
    let conn =
        // Read-write (never written): closing it removes the -wal/-shm files a read-only
        // reader of a WAL database leaves behind.
        rusqlite::Connection::open_with_flags(datafile, rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE)
            .unwrap_or_else(|e| panic!("opening {}: {e}", datafile.display()));
    let mut out = Dump::new();
    let mut envs = conn
        .prepare("SELECT id, environment_name FROM environment ORDER BY id")
        .unwrap();
    let envs: Vec<(i64, String)> = envs
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    for (env_id, env_name) in envs {
        let mut tests = conn
            .prepare("SELECT id, test_name, failed FROM test_execution WHERE environment_id = ?")
            .unwrap();
        let tests: Vec<(i64, String, Option<i64>)> = tests
            .query_map([env_id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        let mut key = env_name.clone();
        for n in 2.. {
            if !out.contains_key(&key) {
                break;
            }
            key = format!("{env_name} ({n})");
        }
        let entry = out.entry(key).or_default();
        for (te_id, name, failed) in tests {
            let mut fps = conn
                .prepare(
                    "SELECT f.filename, f.fsha, f.method_checksums FROM test_execution_file_fp l
                     JOIN file_fp f ON f.id = l.fingerprint_id WHERE l.test_execution_id = ?",
                )
                .unwrap();
            let mut fingerprints: Vec<(String, String, String)> = fps
                .query_map([te_id], |r| {
                    let blob: Option<Vec<u8>> = r.get(2)?;
                    let hex = blob
                        .unwrap_or_default()
                        .iter()
                        .map(|b| format!("{b:02x}"))
                        .collect();
                    Ok((
                        r.get(0)?,
                        r.get::<_, Option<String>>(1)?.unwrap_or_default(),
                        hex,
                    ))
                })
                .unwrap()
                .map(Result::unwrap)
                .collect();
            fingerprints.sort();
            assert!(
                entry
                    .insert(
                        name.clone(),
                        TestRecord {
                            failed,
                            fingerprints
                        }
                    )
                    .is_none(),
                "{name} twice"
            );
        }
    }
    out
}

/// How much of testmon's schedule-dependence a comparison allows (DESIGN.md, "The invariant").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scopes {
    /// Any schedule: session-, module- and class-scoped fixtures may land on another test.
    AnyOrder,
    /// `--dist loadscope`/`loadfile`: each module and class runs on one worker in testmon's
    /// order, so only session-scoped fixtures (set up once per worker) may move.
    ScopesKept,
}

/// Tests whose fingerprints depend on the schedule: they share a session-, module- or
/// class-scoped fixture, whose setup testmon records in whichever test triggered it first.
/// Each maps to the files that fixture's setup touches.
pub fn schedule_dependent(test: &str, scopes: Scopes) -> Option<&'static [&'static str]> {
    const SQUARES_TABLE: &[&str] = &["tests/conftest.py", "calc/arith.py"];
    const SAMPLE_WORDS: &[&str] = &["calc/strings.py"];
    const BIG_RECT: &[&str] = &["calc/shapes.py", "calc/arith.py"];
    match test {
        // session-scoped `squares_table`
        "tests/test_arith.py::test_squares_table"
        | "tests/sub/test_geometry.py::TestDistances::test_uses_squares_table" => {
            Some(SQUARES_TABLE)
        }
        _ if scopes == Scopes::ScopesKept => None,
        // module-scoped `sample_words`
        "tests/test_strings.py::test_sample_words"
        | "tests/test_strings.py::test_palindromes_in_sample" => Some(SAMPLE_WORDS),
        // class-scoped `big_rect`
        t if t.starts_with("tests/test_shapes.py::TestShape::") => Some(BIG_RECT),
        _ => None,
    }
}

/// Asserts two dumps are equal: exactly, except that schedule-dependent tests are compared by
/// failed flag and by the files they touch outside their shared fixture's files, and that a
/// test single-process testmon holds only as a placeholder (it never ran: deselected by `-k`,
/// `-m`, `--deselect`) may have no row in ours, as under xdist (DESIGN.md): the selection,
/// which every sequence compares step by step, is the same either way.
pub fn assert_same_records(parallel: &Dump, single: &Dump, step: &str) {
    assert_same_records_with(parallel, single, step, Scopes::AnyOrder);
}

pub fn assert_same_records_with(parallel: &Dump, single: &Dump, step: &str, scopes: Scopes) {
    assert_eq!(
        parallel.keys().collect::<Vec<_>>(),
        single.keys().collect::<Vec<_>>(),
        "{step}: environments differ"
    );
    for (env, tests) in single {
        let ours = &parallel[env];
        let our_names: BTreeSet<&String> = ours.keys().collect();
        let their_names: BTreeSet<&String> = tests
            .iter()
            .filter(|(name, record)| ours.contains_key(*name) || !record.is_placeholder())
            .map(|(name, _)| name)
            .collect();
        assert_eq!(
            our_names, their_names,
            "{step}: recorded tests differ in environment {env}"
        );
        for (name, record) in tests {
            let Some(mine) = ours.get(name) else {
                continue; // a placeholder of a test that never ran (checked above)
            };
            match schedule_dependent(name, scopes) {
                None => assert_eq!(mine, record, "{step}: record of {name} differs"),
                Some(fixture_files) => {
                    assert_eq!(
                        mine.failed, record.failed,
                        "{step}: failed flag of {name} differs"
                    );
                    let strip = |r: &TestRecord| -> BTreeSet<String> {
                        r.files()
                            .into_iter()
                            .filter(|f| !fixture_files.contains(f))
                            .map(String::from)
                            .collect()
                    };
                    assert_eq!(strip(mine), strip(record), "{step}: files of {name} differ");
                }
            }
        }
    }
}

/// Runs `testmon-run RUN_ARGS` on one copy and single-process `pytest --testmon` on the
/// other, with the same pytest arguments; asserts they exited the same and ran the same tests.
pub fn run_both(
    parallel: &Project,
    single: &Project,
    venv: Venv,
    run_args: &[&str],
    pytest_args: &[&str],
    what: &str,
) -> (Run, Run) {
    let ours = parallel.testmon_run(venv, run_args, pytest_args).run();
    let theirs = single.pytest(venv, pytest_args).run();
    assert_eq!(
        ours.code(),
        theirs.code(),
        "{what}: exit codes differ\n{}\n{}",
        ours.output(),
        theirs.output()
    );
    assert_same_ran(&ours, &theirs, what);
    (ours, theirs)
}

/// Asserts two runs ran the same tests.
pub fn assert_same_ran(parallel: &Run, single: &Run, step: &str) {
    assert_eq!(
        parallel.ran,
        single.ran,
        "{step}: different tests ran\nparallel:\n{}\nsingle:\n{}",
        parallel.output(),
        single.output()
    );
}

/// The run was answered by the no-op fast path (its header names no workers).
pub fn answered_fast(run: &Run) -> bool {
    run.output().contains(": no workers, pytest")
}

/// testmon-run's cache for the tests, under target/: entries are per directory and
/// command, and every test runs in a directory of its own.
pub fn cache_dir() -> PathBuf {
    repo().join("target/test-cache")
}

/// A fresh temporary directory, removed when dropped. For testmon-run's TMPDIR, see `Sandbox`.
pub fn fresh_tmpdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("testmon-run-it-tmpdir-")
        .tempdir()
        .unwrap()
}

/// A fresh, empty directory to be testmon-run's TMPDIR, where it makes its run directory;
/// removed when dropped. The commands built here run with TMPDIR set to it; what a run leaves
/// there, and the processes whose environment names it, are what `assert_clean` looks for.
pub struct Sandbox {
    _guard: tempfile::TempDir,
    path: PathBuf,
}

impl Sandbox {
    /// A TMPDIR of its own, empty.
    pub fn fresh() -> Sandbox {
        let guard = fresh_tmpdir();
        let path = guard.path().to_path_buf();
        Sandbox {
            _guard: guard,
            path,
        }
    }

    /// A TMPDIR named `name` (created), in a fresh directory of its own: for odd paths.
    pub fn fresh_at(name: &str) -> Sandbox {
        let guard = fresh_tmpdir();
        let path = guard.path().join(name);
        std::fs::create_dir(&path).unwrap();
        Sandbox {
            _guard: guard,
            path,
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `project.testmon_run(venv, args, pytest_args)`, with TMPDIR set to this directory.
    pub fn testmon_run(
        &self,
        project: &Project,
        venv: Venv,
        args: &[&str],
        pytest_args: &[&str],
    ) -> Cmd {
        let mut cmd = project.testmon_run(venv, args, pytest_args);
        cmd.env("TMPDIR", &self.path);
        cmd
    }

    /// `testmon-run` in `cwd`, with TMPDIR set to this directory and no argument yet: all of
    /// them (the command after `--` included) as the test gives them.
    pub fn testmon_run_in(&self, cwd: &Path) -> Cmd {
        let mut cmd = Cmd::new(BIN, cwd);
        cmd.env("TMPDIR", &self.path);
        cmd
    }

    /// Nothing is left behind: nothing in TMPDIR (no `testmon-run-*` run directory, nor
    /// anything else; the fixture projects use no `tmp_path`, so pytest itself puts nothing
    /// there either), and no process of a run under it alive (see `processes_under`).
    /// `output` is the run's, shown when it fails.
    pub fn assert_clean(&self, what: &str, output: &str) {
        let left = entries(&self.path);
        assert!(
            left.is_empty(),
            "{what}: left in TMPDIR {}: {left:?}\n{output}",
            self.path.display()
        );
        let alive = processes_under(&self.path);
        assert!(
            alive.is_empty(),
            "{what}: processes of the run left running: {alive:?}\n{output}"
        );
    }

    /// No process of a run under this TMPDIR (see `processes_under`) is alive, or is within
    /// `within`.
    pub fn assert_no_processes(&self, within: Duration, what: &str) {
        let deadline = Instant::now() + within;
        loop {
            let alive = processes_under(&self.path);
            if alive.is_empty() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: workers (or the probe) still alive after {within:?}: {alive:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// The names in a directory, sorted.
/// This user's private base of run directories in `tmpdir` (`testmon-run-<uid>`).
pub fn run_base(tmpdir: &Path) -> PathBuf {
    tmpdir.join(format!("testmon-run-{}", nix::unistd::getuid()))
}

/// The run directories in `tmpdir`'s private base (names), none when there is no base.
pub fn run_dirs(tmpdir: &Path) -> Vec<String> {
    let base = run_base(tmpdir);
    if !base.exists() {
        return Vec::new();
    }
    entries(&base)
        .into_iter()
        .filter(|e| e.starts_with("testmon-run-"))
        .collect()
}

/// A file's permission bits.
pub fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::MetadataExt;
    std::fs::symlink_metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .mode()
        & 0o777
}

pub fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// The node ids the `ran_log` plugin (tests/support) wrote to `path`: the tests that started.
pub fn ran_log(path: &Path) -> BTreeSet<String> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(String::from)
        .collect()
}

/// pytest's final line without its `=` decoration and its duration: the counts.
pub fn counts(run: &Run) -> String {
    let line = run
        .summary()
        .trim_matches(|c: char| c == '=' || c.is_whitespace());
    match line.rfind(" in ") {
        Some(at) => line[..at].to_string(),
        None => line.to_string(),
    }
}

/// The node id in testmon-run's `-v` line `PASSED tests/x.py::t [gw1]`.
pub fn passed_nodeid(line: &str) -> Option<&str> {
    let rest = line.strip_prefix("PASSED ")?;
    let (nodeid, worker) = rest.rsplit_once(" [")?;
    worker.starts_with("gw").then_some(nodeid)
}

/// Neither stdout nor stderr shows a panic (testmon-run's) or a traceback (Python's).
pub fn assert_no_panic_or_traceback(run: &Run, what: &str) {
    for text in [&run.stdout, &run.stderr] {
        assert!(
            !text.contains("panicked") && !text.contains("Traceback"),
            "{what}: a panic or a traceback\n{}",
            run.output()
        );
    }
}

/// A step runs well after the edits before it (as a person would): a file written within
/// the last moments is never trusted as unchanged (manifest::RACY_NS).
pub fn settle() {
    std::thread::sleep(Duration::from_millis(100));
}

/// The processes of the runs under `tmpdir`, with their names, sorted: the workers (and
/// anything they forked), whose environment names a run directory under `tmpdir`, by their
/// `TESTMON_RUN_WORKER` name; and the probe, named `probe`.
pub fn processes_under(tmpdir: &Path) -> Vec<(String, Pid)> {
    let worker = format!("TESTMON_RUN_DIR={}", tmpdir.display());
    let probe = format!("TESTMON_RUN_PROBE_OUT={}", tmpdir.display());
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(environ) = std::fs::read(entry.path().join("environ")) else {
            continue;
        };
        let environ = String::from_utf8_lossy(&environ);
        let name = if environ.split('\0').any(|v| v.starts_with(&worker)) {
            // A worker gw0 forked (src/run/zygote.rs) still has gw0's environment block;
            // its stdout, its own log in the run directory, names it.
            log_name(&entry.path(), tmpdir).unwrap_or_else(|| {
                environ
                    .split('\0')
                    .find_map(|v| v.strip_prefix("TESTMON_RUN_WORKER="))
                    .unwrap_or("?")
                    .to_string()
            })
        } else if environ.split('\0').any(|v| v.starts_with(&probe)) {
            "probe".to_string()
        } else {
            continue;
        };
        found.push((name, Pid::from_raw(pid)));
    }
    found.sort();
    found
}

/// The worker whose log in the run directory a process has open (`<run dir>/gw1.log`,
/// `gw1.2.log`: gw1): its stdout, or during a test the copy pytest's capture keeps of it.
fn log_name(proc_dir: &Path, tmpdir: &Path) -> Option<String> {
    let fds = std::fs::read_dir(proc_dir.join("fd")).ok()?;
    fds.flatten().find_map(|fd| {
        let target = std::fs::read_link(fd.path()).ok()?;
        if !target.starts_with(tmpdir) || target.extension()? != "log" {
            return None;
        }
        let name = target.file_name()?.to_str()?.split('.').next()?;
        name.starts_with("gw").then(|| name.to_string())
    })
}

/// The workers (and anything they forked) of the runs under `tmpdir`: `processes_under`
/// without the probe.
pub fn workers_under(tmpdir: &Path) -> Vec<(String, Pid)> {
    processes_under(tmpdir)
        .into_iter()
        .filter(|(name, _)| name != "probe")
        .collect()
}

/// The datafile passes SQLite's `PRAGMA integrity_check`.
pub fn assert_integrity(datafile: &Path, what: &str) {
    let conn = rusqlite::Connection::open(datafile)
        .unwrap_or_else(|e| panic!("{what}: opening {}: {e}", datafile.display()));
    let ok: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(ok, "ok", "{what}: PRAGMA integrity_check");
}
