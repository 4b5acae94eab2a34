//! The pytest plugins users install, under testmon-run and under pytest-xdist on the same
//! project (DESIGN.md, "The xdist contract"): each test runs
//! `pytest --testmon -n 2 -p no:randomly ARGS` (xdist) on one copy of a fixture project and
//! `testmon-run -n 2 -- pytest --testmon -p no:randomly ARGS` on another, in `.venv-plugins`,
//! and compares what the plugin left: its terminal text, its files, the exit code.
//!
//! pytest-randomly is active by default in that virtualenv (it shuffles and reseeds), so every
//! command but the pytest-randomly test's disables it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use crate::support::*;

const VENV: Venv = Venv::Plugins;

/// `pytest --testmon -n 2 ARGS` with pytest-xdist, in the project.
fn xdist(project: &Project, args: &[&str]) -> Cmd {
    let mut cmd = Cmd::new(VENV.pytest(), &project.root);
    cmd.args(["--testmon", "-n", "2"]).args(args);
    cmd
}

/// `testmon-run -n 2 -- pytest --testmon ARGS` in the project, TMPDIR in the sandbox.
fn ours(sandbox: &Sandbox, project: &Project, args: &[&str]) -> Cmd {
    sandbox.testmon_run(project, VENV, &["-n", "2"], args)
}

/// `-p no:randomly` followed by `args`.
fn no_randomly<'a>(args: &[&'a str]) -> Vec<&'a str> {
    let mut all = vec!["-p", "no:randomly"];
    all.extend_from_slice(args);
    all
}

/// `-p no:randomly -p no:benchmark` followed by `args`: only plugins testmon-run forks its
/// workers with (src/run/zygote.rs FORK_SAFE) are loaded, so these runs use the zygote (the
/// pytest-benchmark and pytest-randomly tests, which load theirs, start every worker).
fn zygote_plugins<'a>(args: &[&'a str]) -> Vec<&'a str> {
    let mut all = vec!["-p", "no:randomly", "-p", "no:benchmark"];
    all.extend_from_slice(args);
    all
}

/// Both runs' output, for failure messages.
fn both_outputs(xdist: &Run, ours: &Run) -> String {
    format!(
        "=== xdist ===\n{}\n=== testmon-run ===\n{}",
        xdist.output(),
        ours.output()
    )
}

/// Both runs with the same arguments, each on its own fresh copy of the `plugins` fixture.
struct Pair {
    theirs: Project,
    mine: Project,
    sandbox: Sandbox,
    /// xdist's run and ours.
    x: Run,
    o: Run,
    /// Both outputs, for failure messages.
    both: String,
}

fn run_pair(args: &[&str]) -> Pair {
    let (theirs, mine, sandbox) = (
        Project::copy("plugins"),
        Project::copy("plugins"),
        Sandbox::fresh(),
    );
    let x = xdist(&theirs, args).run();
    let report_dir = fresh_tmpdir();
    let report = report_dir.path().join("report.json");
    let report_arg = report.to_string_lossy().into_owned();
    let o = sandbox
        .testmon_run(
            &mine,
            VENV,
            &["-n", "2", "--json-report", &report_arg],
            args,
        )
        .run();
    let both = both_outputs(&x, &o);
    // With only the plugins the zygote is tested with loaded (zygote_plugins), gw0 forks the
    // other worker; with pytest-benchmark or pytest-randomly loaded, each starts on its own.
    let only_tested = args.windows(2).any(|w| w == ["-p", "no:benchmark"])
        && args.windows(2).any(|w| w == ["-p", "no:randomly"]);
    let used: Value = std::fs::read_to_string(&report)
        .ok()
        .and_then(|text| serde_json::from_str(&text).ok())
        .unwrap_or(Value::Null);
    assert_eq!(
        used["zygote"],
        Value::Bool(only_tested),
        "the zygote with {args:?}\n{both}"
    );
    Pair {
        theirs,
        mine,
        sandbox,
        x,
        o,
        both,
    }
}

/// Asserts both runs exited alike and ended with the same counts.
fn assert_same_ending(xdist: &Run, ours: &Run, what: &str) {
    assert_eq!(
        ours.code(),
        xdist.code(),
        "{what}: exit codes differ\n{}",
        both_outputs(xdist, ours)
    );
    assert_eq!(
        counts(ours),
        counts(xdist),
        "{what}: final lines differ\n{}",
        both_outputs(xdist, ours)
    );
    assert_same_ran(ours, xdist, what);
}

/// stdout and stderr together.
fn all_text(run: &Run) -> String {
    format!("{}\n{}", run.stdout, run.stderr)
}

/// How many lines of `text` contain `needle`.
fn lines_with(text: &str, needle: &str) -> usize {
    text.lines().filter(|l| l.contains(needle)).count()
}

/// The lines of the terminal-summary section whose separator line names `title`
/// (`---- snapshot report summary ----`), up to the next separator line; `None` without it.
fn section(text: &str, title: &str) -> Option<Vec<String>> {
    let is_sep = |l: &str| ["==", "--", "__"].iter().any(|s| l.starts_with(s));
    let mut lines = text
        .lines()
        .skip_while(|l| !(is_sep(l) && l.contains(title)));
    lines.next()?;
    let mut out: Vec<String> = lines
        .take_while(|l| !is_sep(l))
        .map(|l| l.trim_end().to_string())
        .collect();
    while out.last().is_some_and(|l| l.is_empty()) {
        out.pop();
    }
    Some(out)
}

// ---------------------------------------------------------------------------------------
// pytest-cov

/// pytest-cov's `term` table: from its `Name ...` header to its `TOTAL` line.
fn coverage_table(run: &Run) -> Vec<String> {
    run.stdout
        .lines()
        .skip_while(|l| !l.starts_with("Name "))
        .scan(false, |done, l| {
            if *done {
                return None;
            }
            *done = l.starts_with("TOTAL");
            Some(l.trim_end().to_string())
        })
        .collect()
}

/// The coverage data files at the project's root (`.coverage`, `.coverage.*`).
fn coverage_files(project: &Project) -> Vec<String> {
    entries(&project.root)
        .into_iter()
        .filter(|e| e.starts_with(".coverage"))
        .collect()
}

/// The `line-rate` of the root `<coverage>` element of a Cobertura XML report.
fn line_rate(xml: &str) -> String {
    let at = xml
        .find("<coverage ")
        .unwrap_or_else(|| panic!("no <coverage> element:\n{xml}"));
    let rest = &xml[at..];
    let rest = &rest[rest.find("line-rate=\"").expect("no line-rate") + 11..];
    rest[..rest.find('"').unwrap()].to_string()
}

/// pytest-cov's verdict on `--cov-fail-under`: `FAIL Required test coverage of 100% not
/// reached. Total coverage: 70.59%` or `Required test coverage of 70% reached. ...`.
fn fail_under_verdict(run: &Run) -> Vec<String> {
    all_text(run)
        .lines()
        .filter(|l| l.contains("Required test coverage of"))
        .map(|l| l.trim().to_string())
        .collect()
}

#[test]
fn pytest_cov_combines_the_workers_data_and_reports_once_like_xdist() {
    // The fixture's mylib is 70.59% covered: the threshold is met.
    let args = zygote_plugins(&[
        "--cov=mylib",
        "--cov-report=term",
        "--cov-report=xml:cov.xml",
        "--cov-report=html:htmlcov",
        "--cov-fail-under=70",
    ]);
    let Pair {
        theirs,
        mine,
        sandbox,
        x,
        o,
        both,
    } = run_pair(&args);
    assert_eq!(x.code(), 0, "xdist\n{both}");
    assert_same_ending(&x, &o, "--cov");

    let table = coverage_table(&x);
    assert!(
        table.len() >= 5 && table.last().unwrap().starts_with("TOTAL"),
        "xdist's coverage table\n{both}"
    );
    assert!(
        table.iter().any(|l| l.starts_with("mylib/core.py")),
        "xdist's per-file lines\n{both}"
    );
    assert_eq!(
        coverage_table(&o),
        table,
        "the coverage table (per-file lines and TOTAL)\n{both}"
    );
    let verdict = fail_under_verdict(&x);
    assert_eq!(verdict.len(), 1, "xdist\n{both}");
    assert_eq!(
        fail_under_verdict(&o),
        verdict,
        "--cov-fail-under=70\n{both}"
    );

    // One combined data file, none of the workers' `.coverage.<host>.pid<n>.<random>` left.
    assert_eq!(coverage_files(&theirs), [".coverage"], "xdist\n{both}");
    assert_eq!(
        coverage_files(&mine),
        [".coverage"],
        "one .coverage, no stray .coverage.*\n{both}"
    );

    // The XML and HTML reports, written once (by the process that combined the data).
    for line in [
        "Coverage XML written to file cov.xml",
        "Coverage HTML written to dir htmlcov",
    ] {
        assert_eq!(lines_with(&all_text(&x), line), 1, "xdist: {line}\n{both}");
        assert_eq!(lines_with(&all_text(&o), line), 1, "once: {line}\n{both}");
    }
    assert!(
        mine.path("htmlcov/index.html").is_file(),
        "htmlcov/index.html\n{both}"
    );
    let rate = line_rate(&theirs.read("cov.xml"));
    assert_ne!(rate, "1", "the fixture is not fully covered");
    let mine_xml = std::fs::read_to_string(mine.path("cov.xml"))
        .unwrap_or_else(|e| panic!("cov.xml: {e}\n{both}"));
    assert_eq!(line_rate(&mine_xml), rate, "cov.xml's line-rate\n{both}");
    sandbox.assert_clean("--cov", &o.output());
}

#[test]
fn pytest_cov_fail_under_fails_the_run_like_xdist() {
    // 70.59% covered, 100% required: every test passes, and the run fails.
    let args = zygote_plugins(&["--cov=mylib", "--cov-fail-under=100"]);
    let Pair {
        sandbox,
        x,
        o,
        both,
        ..
    } = run_pair(&args);
    assert_eq!(x.code(), 1, "xdist\n{both}");
    assert_eq!(counts(&x), "13 passed", "xdist\n{both}");
    assert_same_ending(&x, &o, "--cov-fail-under=100");
    let verdict = fail_under_verdict(&x);
    assert_eq!(verdict.len(), 1, "xdist\n{both}");
    assert!(verdict[0].starts_with("FAIL "), "{verdict:?}");
    assert_eq!(
        fail_under_verdict(&o),
        verdict,
        "--cov-fail-under=100\n{both}"
    );
    assert_eq!(coverage_table(&o), coverage_table(&x), "the table\n{both}");
    sandbox.assert_clean("--cov-fail-under=100", &o.output());
}

// ---------------------------------------------------------------------------------------
// pytest-html, pytest-json-report, allure-pytest, annotations: the `mixed/` tests
// (3 failed, 7 passed, 2 skipped, 1 xfailed, 1 error).

const MIXED_COUNTS: &str = "3 failed, 7 passed, 2 skipped, 1 xfailed, 1 error";
const MIXED_TESTS: usize = 14;

/// Undoes the escaping of an HTML attribute (markupsafe's and html.escape's).
fn html_unescape(s: &str) -> String {
    s.replace("&#34;", "\"")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&#x27;", "'")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

/// pytest-html 4's results: node id → the result of each of its rows, from the JSON blob in
/// the report's `data-jsonblob` attribute.
fn html_results(report: &Path, output: &str) -> BTreeMap<String, Vec<String>> {
    let html = std::fs::read_to_string(report)
        .unwrap_or_else(|e| panic!("{}: {e}\n{output}", report.display()));
    let at = html
        .find("data-jsonblob=\"")
        .unwrap_or_else(|| panic!("no data-jsonblob in {}\n{output}", report.display()))
        + "data-jsonblob=\"".len();
    let blob = &html[at..at + html[at..].find('"').unwrap()];
    let blob: Value = serde_json::from_str(&html_unescape(blob)).unwrap();
    blob["tests"]
        .as_object()
        .unwrap_or_else(|| panic!("no tests in the blob\n{output}"))
        .iter()
        .map(|(nodeid, rows)| {
            let results = rows
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r["result"].as_str().unwrap().to_string())
                .collect();
            (nodeid.clone(), results)
        })
        .collect()
}

#[test]
fn pytest_html_reports_every_test_once_like_xdist() {
    let args = zygote_plugins(&["mixed", "--html=report.html", "--self-contained-html"]);
    let Pair {
        theirs,
        mine,
        sandbox,
        x,
        o,
        both,
    } = run_pair(&args);
    assert_eq!(counts(&x), MIXED_COUNTS, "xdist\n{both}");
    assert_same_ending(&x, &o, "--html");
    let expected = html_results(&theirs.path("report.html"), &both);
    assert_eq!(expected.len(), MIXED_TESTS, "xdist's report\n{both}");
    let got = html_results(&mine.path("report.html"), &both);
    for (nodeid, results) in &got {
        assert_eq!(results.len(), 1, "{nodeid} once in the report: {results:?}");
    }
    assert_eq!(got, expected, "the report's tests and results\n{both}");
    sandbox.assert_clean("--html", &o.output());
}

/// pytest-json-report's report: (the tests' (node id, outcome), the summary, the exit code).
type JsonReport = (Vec<(String, String)>, Value, Value);

fn json_report(path: &Path, output: &str) -> JsonReport {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}\n{output}", path.display()));
    let report: Value = serde_json::from_str(&text).unwrap();
    let mut tests: Vec<(String, String)> = report["tests"]
        .as_array()
        .unwrap_or_else(|| panic!("no tests in {}\n{output}", path.display()))
        .iter()
        .map(|t| {
            (
                t["nodeid"].as_str().unwrap().to_string(),
                t["outcome"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    tests.sort();
    (tests, report["summary"].clone(), report["exitcode"].clone())
}

#[test]
fn pytest_json_report_holds_every_test_once_like_xdist() {
    let args = zygote_plugins(&["mixed", "--json-report", "--json-report-file=r.json"]);
    let Pair {
        theirs,
        mine,
        sandbox,
        x,
        o,
        both,
    } = run_pair(&args);
    assert_eq!(counts(&x), MIXED_COUNTS, "xdist\n{both}");
    assert_same_ending(&x, &o, "--json-report");
    let (tests, summary, exitcode) = json_report(&theirs.path("r.json"), &both);
    assert_eq!(tests.len(), MIXED_TESTS, "xdist's report\n{both}");
    let (my_tests, my_summary, my_exitcode) = json_report(&mine.path("r.json"), &both);
    let ids: BTreeSet<&String> = my_tests.iter().map(|(id, _)| id).collect();
    assert_eq!(ids.len(), my_tests.len(), "a test twice: {my_tests:?}");
    assert_eq!(my_tests, tests, "the report's tests and outcomes\n{both}");
    assert_eq!(my_summary, summary, "the report's summary\n{both}");
    assert_eq!(my_exitcode, exitcode, "the report's exitcode\n{both}");
    // Its terminal summary line (`report saved to: r.json`), once.
    for run in [&x, &o] {
        assert_eq!(
            lines_with(&all_text(run), "report saved to: r.json"),
            1,
            "`report saved to` once\n{both}"
        );
    }
    sandbox.assert_clean("--json-report", &o.output());
}

/// allure-pytest's results: (fullName, name) → status, one per `*-result.json`.
fn allure_results(dir: &Path, output: &str) -> BTreeMap<(String, String), String> {
    let mut out = BTreeMap::new();
    let names =
        std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}\n{output}", dir.display()));
    for entry in names {
        let path = entry.unwrap().path();
        if !path.to_string_lossy().ends_with("-result.json") {
            continue;
        }
        let result: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let key = (
            result["fullName"].as_str().unwrap().to_string(),
            result["name"].as_str().unwrap().to_string(),
        );
        let status = result["status"].as_str().unwrap().to_string();
        assert!(
            out.insert(key.clone(), status).is_none(),
            "{key:?}: two results\n{output}"
        );
    }
    out
}

#[test]
fn allure_pytest_writes_one_result_per_test_like_xdist() {
    let args = zygote_plugins(&["mixed", "--alluredir=allure-results"]);
    let Pair {
        theirs,
        mine,
        sandbox,
        x,
        o,
        both,
    } = run_pair(&args);
    assert_same_ending(&x, &o, "--alluredir");
    let expected = allure_results(&theirs.path("allure-results"), &both);
    assert_eq!(expected.len(), MIXED_TESTS, "xdist's results\n{both}");
    let got = allure_results(&mine.path("allure-results"), &both);
    assert_eq!(got, expected, "allure's results\n{both}");
    sandbox.assert_clean("--alluredir", &o.output());
}

/// The GitHub Actions annotations (`::error file=...`) in both streams, sorted.
fn annotations(run: &Run) -> Vec<String> {
    let mut lines: Vec<String> = all_text(run)
        .lines()
        .filter(|l| l.starts_with("::error "))
        .map(String::from)
        .collect();
    lines.sort();
    lines
}

#[test]
fn github_actions_annotations_print_once_per_failure_like_xdist() {
    let args = zygote_plugins(&["mixed"]);
    let (theirs, mine, sandbox) = (
        Project::copy("plugins"),
        Project::copy("plugins"),
        Sandbox::fresh(),
    );
    let x = xdist(&theirs, &args)
        .env("GITHUB_ACTIONS", "true")
        .env_remove("GITHUB_WORKSPACE")
        .run();
    let o = ours(&sandbox, &mine, &args)
        .env("GITHUB_ACTIONS", "true")
        .env_remove("GITHUB_WORKSPACE")
        .run();
    let both = both_outputs(&x, &o);
    assert_same_ending(&x, &o, "GITHUB_ACTIONS=true");
    let expected = annotations(&x);
    // One per failed call: the setup error is not annotated.
    assert_eq!(expected.len(), 3, "xdist's annotations\n{both}");
    assert!(
        expected
            .iter()
            .all(|l| l.starts_with("::error file=mixed/test_mixed")),
        "{expected:?}"
    );
    assert_eq!(annotations(&o), expected, "the annotations\n{both}");
    sandbox.assert_clean("GITHUB_ACTIONS=true", &o.output());
}

// ---------------------------------------------------------------------------------------
// pytest-django

/// Per test (its name): (worker, the database's NAME with the project's root as `<root>`),
/// from the files the `plugins_django` tests write into `dir`.
fn db_names(dir: &Path, root: &Path) -> BTreeMap<String, (String, String)> {
    let root = root.to_string_lossy();
    entries(dir)
        .into_iter()
        .map(|test| {
            let line = std::fs::read_to_string(dir.join(&test)).unwrap();
            let (worker, name) = line.trim_end().split_once(' ').unwrap();
            (
                test,
                (worker.to_string(), name.replace(root.as_ref(), "<root>")),
            )
        })
        .collect()
}

/// Asserts every test used the database `expected(worker)` and that both workers ran tests.
fn assert_per_worker_databases(
    names: &BTreeMap<String, (String, String)>,
    expected: impl Fn(&str) -> String,
    what: &str,
    output: &str,
) {
    assert_eq!(
        names.len(),
        9,
        "{what}: every test wrote its name\n{output}"
    );
    for (test, (worker, name)) in names {
        assert_eq!(
            name,
            &expected(worker),
            "{what}: {test}'s database on {worker}\n{output}"
        );
    }
    let workers: BTreeSet<&String> = names.values().map(|(w, _)| w).collect();
    assert_eq!(
        workers.into_iter().collect::<Vec<_>>(),
        ["gw0", "gw1"],
        "{what}: both workers ran tests\n{output}"
    );
}

/// The `test_app*` files at the project's root (SQLite test databases left behind).
fn test_databases(project: &Project) -> Vec<String> {
    entries(&project.root)
        .into_iter()
        .filter(|e| e.starts_with("test_app"))
        .collect()
}

#[test]
fn pytest_django_sqlite_gets_a_test_database_per_worker_like_xdist() {
    let (theirs, mine, sandbox) = (
        Project::copy("plugins_django"),
        Project::copy("plugins_django"),
        Sandbox::fresh(),
    );
    let (their_names, my_names) = (fresh_tmpdir(), fresh_tmpdir());
    let args = zygote_plugins(&[]);
    let x = xdist(&theirs, &args)
        .env("PLUGINS_DB_NAMES", their_names.path())
        .run();
    let o = ours(&sandbox, &mine, &args)
        .env("PLUGINS_DB_NAMES", my_names.path())
        .run();
    let both = both_outputs(&x, &o);
    assert_eq!(counts(&x), "9 passed", "xdist\n{both}");
    // TEST NAME `<root>/test_app.sqlite3`, and pytest-django's xdist suffix.
    let expected = |worker: &str| format!("<root>/test_app.sqlite3_{worker}");
    let theirs_seen = db_names(their_names.path(), &theirs.root);
    assert_per_worker_databases(&theirs_seen, expected, "xdist", &both);
    let mine_seen = db_names(my_names.path(), &mine.root);
    assert_per_worker_databases(&mine_seen, expected, "testmon-run", &both);
    assert_same_ending(&x, &o, "sqlite");
    assert_eq!(
        test_databases(&mine),
        test_databases(&theirs),
        "test databases left behind\n{both}"
    );
    sandbox.assert_clean("sqlite", &o.output());
}

/// A PostgreSQL server of its own, on a private socket directory (no TCP), stopped when
/// dropped. As root, run as `nobody` (initdb refuses root).
struct Postgres {
    bin: PathBuf,
    dir: tempfile::TempDir,
    socket_dir: PathBuf,
    port: u16,
    as_nobody: bool,
}

impl Postgres {
    /// The newest `/usr/lib/postgresql/<version>/bin` holding initdb, pg_ctl and postgres,
    /// or `pg_config --bindir`'s.
    fn bin_dir() -> Option<PathBuf> {
        let has_all = |dir: &Path| {
            ["initdb", "pg_ctl", "postgres", "psql"]
                .iter()
                .all(|b| dir.join(b).is_file())
        };
        let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                let version = e.file_name().to_string_lossy().parse::<u32>().ok()?;
                Some((version, e.path().join("bin")))
            })
            .filter(|(_, bin)| has_all(bin))
            .collect();
        versions.sort();
        if let Some((_, bin)) = versions.pop() {
            return Some(bin);
        }
        let out = Command::new("pg_config").arg("--bindir").output().ok()?;
        let bin = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        (out.status.success() && has_all(&bin)).then_some(bin)
    }

    /// A command of the server's binaries, as the server's user.
    fn command(&self, program: &str) -> Command {
        let program = self.bin.join(program);
        let mut cmd = if self.as_nobody {
            let mut cmd = Command::new("runuser");
            cmd.args(["-u", "nobody", "--"]).arg(program);
            cmd
        } else {
            Command::new(program)
        };
        cmd.current_dir(self.dir.path());
        cmd
    }

    fn run(&self, mut cmd: Command, what: &str) -> String {
        let out = cmd
            .output()
            .unwrap_or_else(|e| panic!("{what}: {cmd:?}: {e}"));
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.status.success(),
            "{what}: {cmd:?}: {}\n{text}",
            out.status
        );
        text
    }

    /// Starts a server, or `None` (with a message) when no PostgreSQL is installed.
    fn start() -> Option<Postgres> {
        let Some(bin) = Postgres::bin_dir() else {
            eprintln!(
                "SKIPPED: no PostgreSQL server binaries (initdb, pg_ctl, postgres, psql) in \
                 /usr/lib/postgresql/*/bin or `pg_config --bindir`: the PostgreSQL test of \
                 pytest-django did not run"
            );
            return None;
        };
        let dir = tempfile::Builder::new()
            .prefix("testmon-run-it-pg-")
            .tempdir()
            .unwrap();
        let as_nobody = nix::unistd::geteuid().is_root();
        let socket_dir = dir.path().join("socket");
        for sub in ["data", "socket", "log"] {
            std::fs::create_dir(dir.path().join(sub)).unwrap();
        }
        if as_nobody {
            use std::os::unix::fs::PermissionsExt;
            let nobody = nix::unistd::User::from_name("nobody")
                .unwrap()
                .expect("a user named nobody");
            std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
            for sub in ["data", "socket", "log"] {
                std::os::unix::fs::chown(
                    dir.path().join(sub),
                    Some(nobody.uid.as_raw()),
                    Some(nobody.gid.as_raw()),
                )
                .unwrap();
            }
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let server = Postgres {
            bin,
            dir,
            socket_dir,
            port,
            as_nobody,
        };
        let data = server.dir.path().join("data");
        let mut initdb = server.command("initdb");
        initdb.arg("-D").arg(&data).args([
            "-U",
            "postgres",
            "--auth=trust",
            "-E",
            "UTF8",
            "--no-sync",
        ]);
        server.run(initdb, "initdb");
        // From here on the guard exists: a failed start still runs `pg_ctl stop`.
        let mut start = server.command("pg_ctl");
        start
            .arg("-D")
            .arg(&data)
            .arg("-l")
            .arg(server.dir.path().join("log/postgres.log"))
            .args(["-w", "-t", "120", "-o"])
            .arg(format!(
                "-k {} -p {} -c listen_addresses= -c fsync=off",
                server.socket_dir.display(),
                server.port
            ))
            .arg("start");
        let out = start.output().unwrap();
        if !out.status.success() {
            let log = std::fs::read_to_string(server.dir.path().join("log/postgres.log"))
                .unwrap_or_default();
            panic!(
                "pg_ctl start: {}\n{}{}\n{log}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Some(server)
    }

    /// The names of the server's databases.
    fn databases(&self) -> Vec<String> {
        let mut psql = Command::new(self.bin.join("psql"));
        psql.arg("-h")
            .arg(&self.socket_dir)
            .arg("-p")
            .arg(self.port.to_string())
            .args([
                "-U",
                "postgres",
                "-At",
                "-c",
                "SELECT datname FROM pg_database ORDER BY 1",
            ])
            .env("PGDATABASE", "postgres");
        self.run(psql, "psql").lines().map(String::from).collect()
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let mut stop = self.command("pg_ctl");
        stop.arg("-D")
            .arg(self.dir.path().join("data"))
            .args(["-m", "immediate", "-w", "stop"]);
        let _ = stop.output();
    }
}

#[test]
fn pytest_django_postgresql_gets_a_database_per_worker_like_xdist() {
    let Some(server) = Postgres::start() else {
        return;
    };
    let host = server.socket_dir.clone();
    let port = server.port.to_string();
    let (theirs, mine, sandbox) = (
        Project::copy("plugins_django"),
        Project::copy("plugins_django"),
        Sandbox::fresh(),
    );
    let (their_names, my_names) = (fresh_tmpdir(), fresh_tmpdir());
    let args = zygote_plugins(&[]);
    let x = xdist(&theirs, &args)
        .env("PLUGINS_PG_HOST", &host)
        .env("PLUGINS_PG_PORT", &port)
        .env("PLUGINS_DB_NAMES", their_names.path())
        .run();
    let before = server.databases();
    let o = ours(&sandbox, &mine, &args)
        .env("PLUGINS_PG_HOST", &host)
        .env("PLUGINS_PG_PORT", &port)
        .env("PLUGINS_DB_NAMES", my_names.path())
        .run();
    let both = both_outputs(&x, &o);
    assert_eq!(counts(&x), "9 passed", "xdist\n{both}");
    // NAME `app`: test database `test_app`, and pytest-django's xdist suffix.
    let expected = |worker: &str| format!("test_app_{worker}");
    let theirs_seen = db_names(their_names.path(), &theirs.root);
    assert_per_worker_databases(&theirs_seen, expected, "xdist", &both);
    let mine_seen = db_names(my_names.path(), &mine.root);
    assert_per_worker_databases(&mine_seen, expected, "testmon-run", &both);
    assert_same_ending(&x, &o, "postgresql");
    // pytest-django drops its test databases at the end, under xdist and under testmon-run.
    assert!(
        !before.iter().any(|d| d.starts_with("test_")),
        "xdist left {before:?}"
    );
    assert_eq!(
        server.databases(),
        before,
        "test databases left behind\n{both}"
    );
    sandbox.assert_clean("postgresql", &o.output());
}

// ---------------------------------------------------------------------------------------
// pytest-rerunfailures, pytest-randomly, pytest-benchmark, pytest-timeout, syrupy

#[test]
fn pytest_rerunfailures_counts_reruns_like_xdist() {
    // `flaky/`: test_flaky fails once (leaving flaky/flaky.marker), test_always_fails always.
    let args = zygote_plugins(&["flaky", "--reruns", "2"]);
    let Pair {
        mine,
        sandbox,
        x,
        o,
        both,
        ..
    } = run_pair(&args);
    assert_eq!(counts(&x), "1 failed, 2 passed, 3 rerun", "xdist\n{both}");
    assert_same_ending(&x, &o, "--reruns 2");
    assert!(
        mine.path("flaky/flaky.marker").is_file(),
        "test_flaky ran\n{both}"
    );
    sandbox.assert_clean("--reruns 2", &o.output());
}

/// The seeds in `Using --randomly-seed=N` lines, in both streams.
fn randomly_seeds(run: &Run) -> Vec<String> {
    all_text(run)
        .lines()
        .filter_map(|l| l.trim().strip_prefix("Using --randomly-seed="))
        .map(String::from)
        .collect()
}

/// The `seeded/` tests' records in `dir`: node id → its first random number, over every
/// worker's file; and the processes' first random numbers after the session was seeded,
/// by worker.
fn seeded_values(dir: &Path) -> (BTreeMap<String, String>, BTreeMap<String, String>) {
    let (mut tests, mut sessions) = (BTreeMap::new(), BTreeMap::new());
    for name in entries(dir) {
        let text = std::fs::read_to_string(dir.join(&name)).unwrap();
        if let Some(worker) = name
            .strip_prefix("session-")
            .and_then(|n| n.strip_suffix(".txt"))
        {
            sessions.insert(worker.to_string(), text.trim().to_string());
        } else {
            for line in text.lines() {
                let (nodeid, value) = line.rsplit_once(' ').unwrap();
                assert!(
                    tests
                        .insert(nodeid.to_string(), value.to_string())
                        .is_none(),
                    "{nodeid} ran twice"
                );
            }
        }
    }
    (tests, sessions)
}

#[test]
fn pytest_randomly_uses_one_seed_for_every_worker_like_xdist() {
    // testmon-run without a seed: the seed is chosen once, shown once, and every worker
    // uses it, so each test draws what it draws under xdist with that seed.
    let (theirs, mine, sandbox) = (
        Project::copy("plugins"),
        Project::copy("plugins"),
        Sandbox::fresh(),
    );
    let (their_out, my_out) = (fresh_tmpdir(), fresh_tmpdir());
    let o = ours(&sandbox, &mine, &["seeded"])
        .env("PLUGINS_SEED_OUT", my_out.path())
        .run();
    assert_eq!(o.code(), 0, "{}", o.output());
    let seeds = randomly_seeds(&o);
    assert_eq!(
        seeds.len(),
        1,
        "`Using --randomly-seed=N` once\n{}",
        o.output()
    );
    let seed_arg = format!("--randomly-seed={}", seeds[0]);
    let x = xdist(&theirs, &["seeded", &seed_arg])
        .env("PLUGINS_SEED_OUT", their_out.path())
        .run();
    let both = both_outputs(&x, &o);
    assert_eq!(
        randomly_seeds(&x),
        seeds,
        "xdist shows the seed once\n{both}"
    );
    assert_same_ending(&x, &o, "pytest-randomly");

    let (their_tests, their_sessions) = seeded_values(their_out.path());
    assert_eq!(their_tests.len(), 10, "xdist's records\n{both}");
    let (my_tests, my_sessions) = seeded_values(my_out.path());
    assert_eq!(
        my_tests, their_tests,
        "each test's first random number: the workers used another seed than {}\n{both}",
        seeds[0]
    );
    // Every process reseeds `random` with the seed at its session start.
    let workers = |s: &BTreeMap<String, String>| -> BTreeMap<String, String> {
        s.iter()
            .filter(|(w, _)| w.starts_with("gw"))
            .map(|(w, v)| (w.clone(), v.clone()))
            .collect()
    };
    let their_workers = workers(&their_sessions);
    assert_eq!(their_workers.len(), 2, "xdist: {their_sessions:?}");
    assert_eq!(
        workers(&my_sessions),
        their_workers,
        "the workers' random numbers after the session was seeded\n{both}"
    );
    // The seed kept for `--randomly-seed=last` is the one shown (xdist's controller wrote it).
    for (project, who) in [(&theirs, "xdist"), (&mine, "testmon-run")] {
        let cached = std::fs::read_to_string(project.path(".pytest_cache/v/randomly_seed"))
            .unwrap_or_else(|e| panic!("{who}: .pytest_cache/v/randomly_seed: {e}\n{both}"));
        assert_eq!(cached.trim(), seeds[0], "{who}: the cached seed\n{both}");
    }
    sandbox.assert_clean("pytest-randomly", &o.output());
}

const BENCHMARK_WARNING: &str = "Benchmarks are automatically disabled because xdist plugin is \
                                 active. Benchmarks cannot be performed reliably in a \
                                 parallelized environment.";

#[test]
fn pytest_benchmark_is_disabled_with_its_warning_like_xdist() {
    let args = no_randomly(&["bench"]);
    let Pair {
        sandbox,
        x,
        o,
        both,
        ..
    } = run_pair(&args);
    assert_eq!(counts(&x), "2 passed", "xdist\n{both}");
    assert_same_ending(&x, &o, "benchmark");
    // Under xdist, worker gw0 warns (PytestBenchmarkWarning, on stderr) as it ends.
    assert_eq!(
        lines_with(&x.stderr, BENCHMARK_WARNING),
        1,
        "xdist's warning\n{both}"
    );
    assert_eq!(
        lines_with(&all_text(&o), BENCHMARK_WARNING),
        1,
        "the warning, once\n{both}"
    );
    // Disabled: no benchmark table.
    for run in [&x, &o] {
        assert_eq!(
            lines_with(&run.stdout, "benchmark: 1 tests"),
            0,
            "no table\n{both}"
        );
    }
    sandbox.assert_clean("benchmark", &o.output());
}

#[test]
fn pytest_timeout_passes_quick_tests_and_fails_a_slow_one_like_xdist() {
    // `tests/` (13 quick tests) and `slow/`: one quick test, one sleeping 30 s.
    let args = zygote_plugins(&["tests", "slow", "--timeout=3"]);
    let Pair {
        sandbox,
        x,
        o,
        both,
        ..
    } = run_pair(&args);
    assert_eq!(counts(&x), "1 failed, 14 passed", "xdist\n{both}");
    assert_same_ending(&x, &o, "--timeout=3");
    let failure = "FAILED slow/test_slow.py::test_sleeps_too_long - Failed: Timeout (>3.0s)";
    for run in [&x, &o] {
        assert!(
            run.stdout.lines().any(|l| l.starts_with(failure)),
            "the timeout's failure\n{both}"
        );
    }
    sandbox.assert_clean("--timeout=3", &o.output());
}

/// syrupy's `snapshot report summary` section.
fn snapshot_report(run: &Run) -> Vec<String> {
    section(&all_text(run), "snapshot report summary").unwrap_or_default()
}

#[test]
fn syrupy_snapshot_update_removes_only_unused_snapshots_like_xdist() {
    // `snap/`: three tests with a snapshot each in snap/__snapshots__/test_snap.ambr (checked
    // in), one without.
    let ambr = "snap/__snapshots__/test_snap.ambr";
    let (theirs, mine, sandbox) = (
        Project::copy("plugins"),
        Project::copy("plugins"),
        Sandbox::fresh(),
    );
    let args = zygote_plugins(&["snap"]);
    let x = xdist(&theirs, &args).run();
    let o = ours(&sandbox, &mine, &args).run();
    let both = both_outputs(&x, &o);
    assert_eq!(counts(&x), "4 passed", "xdist\n{both}");
    assert_same_ending(&x, &o, "snapshots");
    assert_eq!(
        snapshot_report(&x),
        ["3 snapshots passed."],
        "xdist's report\n{both}"
    );
    assert_eq!(
        snapshot_report(&o),
        snapshot_report(&x),
        "syrupy's report\n{both}"
    );

    // test_shout_snapshot removed: --snapshot-update deletes its snapshot, keeps the others.
    let removed =
        "def test_shout_snapshot(snapshot):\n    assert text.shout(\"hey\") == snapshot\n";
    for project in [&theirs, &mine] {
        project.edit("snap/test_snap.py", removed, "");
    }
    settle();
    let args = zygote_plugins(&["snap", "--snapshot-update"]);
    let x = xdist(&theirs, &args).run();
    let o = ours(&sandbox, &mine, &args).run();
    let both = both_outputs(&x, &o);
    assert_same_ending(&x, &o, "--snapshot-update");
    let kept = theirs.read(ambr);
    assert!(
        !kept.contains("test_shout_snapshot")
            && kept.contains("test_sum_snapshot")
            && kept.contains("test_words_snapshot"),
        "xdist's snapshots:\n{kept}\n{both}"
    );
    assert_eq!(mine.read(ambr), kept, "the snapshot file\n{both}");
    let report = snapshot_report(&x);
    assert!(
        report
            .iter()
            .any(|l| l.contains("1 unused snapshot deleted")),
        "xdist's report: {report:?}\n{both}"
    );
    assert_eq!(snapshot_report(&o), report, "syrupy's report\n{both}");
    sandbox.assert_clean("--snapshot-update", &o.output());
}

// ---------------------------------------------------------------------------------------
// Ctrl-C

/// Interrupted after some tests passed, the plugins still end their session in the
/// controller: the HTML and JSON reports hold every test that finished, each once, as
/// passed, and the JSON report the interrupted exit status, as xdist's controller leaves
/// them.
#[test]
fn reports_hold_every_finished_test_after_ctrl_c() {
    let project = Project::empty("interrupted");
    for i in 0..8 {
        project.write(
            &format!("tests/test_s{i}.py"),
            "import time\n\n\ndef test_sleeps():\n    time.sleep(0.4)\n",
        );
    }
    let sandbox = Sandbox::fresh();
    let args = zygote_plugins(&[
        "-v",
        "--html=report.html",
        "--self-contained-html",
        "--json-report",
        "--json-report-file=r.json",
    ]);
    let builder = ours(&sandbox, &project, &args);
    let crate::robustness::Started {
        mut child,
        mut stdout,
        seen,
    } = crate::robustness::start_until_passed(&builder, 2);
    crate::robustness::signal(&child, nix::sys::signal::Signal::SIGINT);
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stdout, &mut rest).unwrap();
    let status = child.wait().unwrap();
    let output = format!("{}{rest}", String::from_utf8_lossy(&seen));
    assert_eq!(status.code(), Some(2), "{output}");
    let passed = crate::robustness::passed_lines(output.as_bytes());
    assert!((2..8).contains(&passed.len()), "{output}");
    let (tests, _, exitcode) = json_report(&project.path("r.json"), &output);
    let in_json: BTreeMap<String, String> = tests.iter().cloned().collect();
    assert_eq!(in_json.len(), tests.len(), "each test once: {output}");
    assert_eq!(
        in_json.keys().cloned().collect::<BTreeSet<_>>(),
        passed,
        "the JSON report's tests are those that finished\n{output}"
    );
    assert!(in_json.values().all(|o| o == "passed"), "{in_json:?}");
    assert_eq!(exitcode, 2, "{output}");
    let in_html = html_results(&project.path("report.html"), &output);
    assert_eq!(
        in_html.keys().cloned().collect::<BTreeSet<_>>(),
        passed,
        "the HTML report's tests are those that finished\n{output}"
    );
    sandbox.assert_clean("interrupted with plugins", &output);
}

/// A worker killed under a test: the controller gets xdist's report for it ("worker 'gw0'
/// crashed while running ..."), so pytest-json-report lists it as failed, as under xdist,
/// beside the tests that finished.
#[test]
fn a_crashed_test_reaches_the_plugins_as_under_xdist() {
    let make = |name: &str| {
        let project = Project::empty(name);
        project.write(
            "tests/test_ok.py",
            "def test_one():\n    assert True\n\n\ndef test_two():\n    assert True\n",
        );
        project.write(
            "tests/test_crash.py",
            "import os\nimport signal\n\n\ndef test_dies():\n    os.kill(os.getpid(), signal.SIGKILL)\n",
        );
        project
    };
    let (theirs, mine, sandbox) = (make("crash-xdist"), make("crash-ours"), Sandbox::fresh());
    let args = zygote_plugins(&["--json-report", "--json-report-file=r.json"]);
    let x = xdist(&theirs, &args).run();
    let o = ours(&sandbox, &mine, &args).run();
    let both = both_outputs(&x, &o);
    let crashed = "tests/test_crash.py::test_dies";
    let (their_tests, _, their_exit) = json_report(&theirs.path("r.json"), &both);
    let (my_tests, _, my_exit) = json_report(&mine.path("r.json"), &both);
    let outcome = |tests: &[(String, String)]| -> Vec<String> {
        let of = tests.iter().filter(|(id, _)| id == crashed);
        of.map(|(_, outcome)| outcome.clone()).collect()
    };
    assert_eq!(outcome(&their_tests), ["failed"], "xdist\n{both}");
    assert_eq!(outcome(&my_tests), outcome(&their_tests), "{both}");
    assert!(
        my_tests.contains(&("tests/test_ok.py::test_one".into(), "passed".into())),
        "{both}"
    );
    assert_eq!(my_exit, their_exit, "{both}");
    assert!(
        all_text(&o).contains(&format!("worker 'gw0' crashed while running '{crashed}'"))
            || all_text(&o).contains(&format!("worker 'gw1' crashed while running '{crashed}'")),
        "{both}"
    );
    sandbox.assert_clean("a crashed worker with a controller", &o.output());
}
