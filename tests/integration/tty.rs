//! The live progress display on a real pseudo-terminal (tests/integration/pty.rs), read back
//! through vt100: the bar updates, failures stay above it, and nothing of it is left when
//! the run ends; without a terminal, with $CI or --no-progress, plain lines only.
//!
//! `ui_demo_*` tests drive the display with fake events (examples/ui_demo.rs), built here
//! on first use since `cargo test --test integration` does not build examples.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use super::pty::{self, PtyRun};
use crate::support::{Project, Venv, BIN, ENV_ADDED, ENV_REMOVED};

const ESC: u8 = 0x1b;
/// Removed from the environment of every run: each would change the display's mode or width.
const ENV_REMOVE: &[&str] = &["CI", "COLUMNS", "LINES", "NO_COLOR", "TERM"];
const TERM: (&str, &str) = ("TERM", "xterm-256color");

/// examples/ui_demo, built with the test binary's profile into its target directory.
pub fn ui_demo() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let exe = std::env::current_exe().unwrap();
        // <target>/<profile>/deps/integration-<hash>
        let profile_dir = exe.parent().unwrap().parent().unwrap();
        let bin = profile_dir.join("examples/ui_demo");
        if let Some(cargo) = std::env::var_os("CARGO") {
            let mut cmd = Command::new(cargo);
            cmd.args([
                "build",
                "--quiet",
                "--example",
                "ui_demo",
                "--manifest-path",
            ])
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml"))
            .env("CARGO_TARGET_DIR", profile_dir.parent().unwrap());
            if profile_dir.file_name().is_some_and(|n| n == "release") {
                cmd.arg("--release");
            }
            let out = cmd.stdin(Stdio::null()).output().expect("running cargo");
            assert!(
                out.status.success(),
                "cargo build --example ui_demo: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        assert!(bin.exists(), "{} missing", bin.display());
        bin
    })
}

/// The demo on a `cols`×`rows` pty, with a capable $TERM and the environment variables that
/// change the display's mode removed; `env` then added.
fn demo_in_pty(args: &[&str], env: &[(&str, &str)], cols: u16, rows: u16) -> PtyRun {
    let mut all_env = vec![TERM];
    all_env.extend_from_slice(env);
    let run = pty::run_in_pty(
        ui_demo(),
        args,
        Path::new(env!("CARGO_MANIFEST_DIR")),
        &all_env,
        ENV_REMOVE,
        cols,
        rows,
        Duration::from_secs(60),
    );
    assert!(!run.timed_out, "timed out:\n{}", run.text());
    assert_eq!(run.status, Some(0), "{}", run.text());
    run
}

/// The `done` counts of the bar's `[done/total]` in `text`, in order.
fn counts(text: &str, total: usize) -> Vec<usize> {
    let tail = format!("/{total}]");
    let mut found = Vec::new();
    for (at, _) in text.match_indices(&tail) {
        let head = &text[..at];
        let digits = head.len() - head.trim_end_matches(|c: char| c.is_ascii_digit()).len();
        if digits > 0 && head[..head.len() - digits].ends_with('[') {
            found.push(head[head.len() - digits..].parse().unwrap());
        }
    }
    found
}

/// Lines that belong to the live display: its status line, and worker lines.
fn is_display_line(line: &str) -> bool {
    line.contains(" elapsed")
        || line.contains("ETA ")
        || line.starts_with("gw")
        || line.starts_with("+") && line.contains(" more worker")
}

/// The demo's own lines after the run (default options: failures 7 and 15).
fn demo_report(failed: &[usize]) -> Vec<String> {
    let mut lines = vec!["=== FAILURES ===".to_string()];
    for i in failed {
        lines.push(format!("___ test_{i:02} ___"));
        lines.push(format!("    assert {i} == 0"));
        lines.push(format!("E   AssertionError (full text of test_{i:02})"));
    }
    lines
}

/// The summary line with its time replaced by `T`.
fn untimed(line: &str) -> String {
    match line.rfind(" in ") {
        Some(at) if line.starts_with("ui_demo summary: ") => format!("{} in T", &line[..at]),
        _ => line.to_string(),
    }
}

fn assert_no_display_residue(lines: &[&str], text: &str) {
    for line in lines {
        assert!(
            !is_display_line(line),
            "residue of the bar: {line:?}\n{text}"
        );
    }
}

/// At any moment, the screen shows at most one status line and one line per worker.
fn assert_one_display_at_a_time(run: &PtyRun, workers: usize) {
    for frame in run.frames(97) {
        let status = frame.lines().filter(|l| l.contains(" elapsed")).count();
        assert!(status <= 1, "{status} status lines:\n{frame}");
        for w in 0..workers {
            let name = format!("gw{w} ");
            let n = frame.lines().filter(|l| l.starts_with(&name)).count();
            assert!(n <= 1, "{n} lines of gw{w}:\n{frame}");
        }
    }
}

#[test]
fn ui_demo_bar_updates_and_leaves_no_residue() {
    let run = demo_in_pty(&[], &[], 100, 40);
    let text = run.text();
    assert!(run.raw.contains(&ESC), "no bar drawn:\n{text}");
    let mut seen = counts(&text, 20);
    seen.dedup();
    assert!(seen.len() >= 2, "the bar did not update: {seen:?}\n{text}");
    assert!(
        text.contains("gw0 tests/test_demo.py::test_") && text.contains("ETA "),
        "{text}"
    );

    // The failures above the bar as they happened, then the run's end: nothing else, no
    // blank line left where the bar was.
    let mut expected = vec![
        "ui_demo: 3 workers, 20 tests".to_string(),
        "FAILED tests/test_demo.py::test_07 - AssertionError: assert 7 == 0".to_string(),
        "FAILED tests/test_demo.py::test_15 - AssertionError: assert 15 == 0".to_string(),
    ];
    expected.extend(demo_report(&[7, 15]));
    expected.push("ui_demo summary: 18 passed, 2 failed in T".to_string());
    // Row by row, and as lines of text (no line continued onto the next row by padding).
    let rows: Vec<String> = run.screen_lines().iter().map(|l| untimed(l)).collect();
    assert_eq!(rows, expected, "\n{}", run.screen);
    let lines: Vec<String> = run.logical_lines().iter().map(|l| untimed(l)).collect();
    assert_eq!(lines, expected, "\n{}", run.logical);
    assert_one_display_at_a_time(&run, 3);

    // A bounded refresh rate: 10 redraws a second, a burst, and one per printed batch.
    let draws = text.matches(" elapsed").count();
    let limit = (run.elapsed.as_secs_f64() * 10.0) as usize + 20 + 2;
    assert!(draws <= limit, "{draws} redraws in {:?}", run.elapsed);
}

#[test]
fn ui_demo_verbose_lines_appear_above_the_bar_in_order() {
    let run = demo_in_pty(&["-v", "--seconds", "1.5"], &[], 100, 40);
    assert_eq!(run.screen_lines(), run.logical_lines(), "\n{}", run.logical);
    let lines = run.logical_lines();
    assert_no_display_residue(&lines, &run.screen);
    let tests: Vec<&str> = lines
        .iter()
        .copied()
        .filter(|l| l.starts_with("PASSED ") || l.starts_with("FAILED "))
        .collect();
    assert_eq!(tests.len(), 20, "\n{}", run.screen);
    // Each worker's lines in the order it ran its tests; every line whole.
    for line in &tests {
        let ok = line.starts_with("PASSED tests/test_demo.py::test_") && line.ends_with(']')
            || line.starts_with("FAILED tests/test_demo.py::test_")
                && line.contains(" - AssertionError: assert ");
        assert!(ok, "{line:?}\n{}", run.screen);
    }
    assert_eq!(lines[0], "ui_demo: 3 workers, 20 tests");
    assert_eq!(lines[21], "=== FAILURES ===", "\n{}", run.screen);
    assert!(lines
        .last()
        .unwrap()
        .starts_with("ui_demo summary: 18 passed, 2 failed"));
}

#[test]
fn ui_demo_narrow_terminal_long_ids_leave_no_residue() {
    let run = demo_in_pty(&["--long", "--workers", "4"], &[], 40, 50);
    let text = run.text();
    assert!(run.raw.contains(&ESC), "no bar drawn:\n{text}");
    // Worker lines keep the end of the node id.
    assert!(
        text.contains("gw0 …") && text.contains("long]"),
        "no shortened worker line:\n{text}"
    );
    assert_no_display_residue(&run.screen_lines(), &run.screen);
    // The long failure lines wrap on screen, whole, and nothing else is left.
    let long = |i: usize| {
        format!(
            "FAILED tests/some/deeply/nested/package/test_module_with_a_long_name.py::TestClass::test_{i:02}[parameter-value-that-is-long] - AssertionError: assert {i} == 0"
        )
    };
    let mut expected = vec![
        "ui_demo: 4 workers, 20 tests".to_string(),
        long(7),
        long(15),
    ];
    expected.extend(demo_report(&[7, 15]));
    expected.push("ui_demo summary: 18 passed, 2 failed in T".to_string());
    let lines: Vec<String> = run.logical_lines().iter().map(|l| untimed(l)).collect();
    assert_eq!(lines, expected, "\n{}", run.screen);
    assert_one_display_at_a_time(&run, 4);
}

#[test]
fn ui_demo_many_workers_on_a_short_terminal() {
    // 12 rows: 4 worker lines and "+8 more workers, N busy".
    let run = demo_in_pty(&["--workers", "12", "--tests", "30"], &[], 80, 12);
    let text = run.text();
    assert!(text.contains("gw3 "), "{text}");
    assert!(!text.contains("gw4 "), "{text}");
    assert!(text.contains("+8 more workers, "), "{text}");
    let lines = run.screen_lines();
    assert_no_display_residue(&lines, &run.screen);
    assert!(lines
        .last()
        .unwrap()
        .starts_with("ui_demo summary: 28 passed, 2 failed"));
}

/// Plain mode on a terminal: no escape sequence, and the failures and the end as in a pipe.
fn assert_plain(run: &PtyRun) {
    let text = run.text();
    assert!(
        !run.raw.contains(&ESC),
        "escape sequences in plain mode:\n{text}"
    );
    let lines = run.screen_lines();
    assert_eq!(lines[0], "ui_demo: 3 workers, 20 tests");
    assert_eq!(
        lines[1],
        "FAILED tests/test_demo.py::test_07 - AssertionError: assert 7 == 0"
    );
    assert!(lines
        .last()
        .unwrap()
        .starts_with("ui_demo summary: 18 passed, 2 failed"));
}

#[test]
fn ui_demo_ci_on_a_terminal_is_plain() {
    assert_plain(&demo_in_pty(&[], &[("CI", "1")], 100, 40));
}

#[test]
fn ui_demo_empty_ci_on_a_terminal_is_a_bar() {
    let run = demo_in_pty(&[], &[("CI", "")], 100, 40);
    assert!(run.raw.contains(&ESC), "{}", run.text());
}

#[test]
fn ui_demo_no_progress_on_a_terminal_is_plain() {
    assert_plain(&demo_in_pty(&["--no-progress"], &[], 100, 40));
}

#[test]
fn ui_demo_dumb_terminal_is_plain() {
    assert_plain(&demo_in_pty(&[], &[("TERM", "dumb")], 100, 40));
}

#[test]
fn ui_demo_piped_is_plain_with_a_status_line_every_5s() {
    let started = Instant::now();
    let out = Command::new(ui_demo())
        .args(["--seconds", "6"])
        .env_remove("CI")
        .env("TERM", "xterm-256color")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let seconds = started.elapsed().as_secs_f64();
    assert!(out.status.success());
    assert!(!out.stdout.contains(&ESC), "escape sequences in a pipe");
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let status: Vec<&str> = lines
        .iter()
        .copied()
        .filter(|l| l.starts_with("testmon-run: ["))
        .collect();
    // One status line per 5 s, plus the 2 failures, the header, the report and the summary.
    let most = (seconds / 5.0) as usize;
    assert!(
        (1..=most).contains(&status.len()),
        "{} status lines in {seconds:.1}s:\n{text}",
        status.len()
    );
    for line in &status {
        let ok = line.contains("/20] ") && line.contains(" failed, ") && line.contains("s elapsed");
        assert!(ok, "{line:?}");
    }
    assert!(
        lines.len() <= 1 + 2 + most + demo_report(&[7, 15]).len() + 1,
        "{text}"
    );
    let failures: Vec<&str> = lines
        .iter()
        .copied()
        .filter(|l| l.starts_with("FAILED "))
        .collect();
    assert_eq!(failures.len(), 2, "{text}");
    assert!(lines
        .last()
        .unwrap()
        .starts_with("ui_demo summary: 18 passed, 2 failed"));
}

/// testmon-run itself on a pty: `-n 2 -- pytest --testmon ARGS` in `project`.
fn testmon_run_in_pty(project: &Project, pytest_args: &[&str], cols: u16) -> PtyRun {
    let pytest = Venv::Testmon22.pytest();
    let mut args = vec!["-n", "2", "--", pytest.to_str().unwrap(), "--testmon"];
    args.extend_from_slice(pytest_args);
    let mut remove = ENV_REMOVE.to_vec();
    remove.extend(ENV_REMOVED);
    let run = pty::run_in_pty(
        Path::new(BIN),
        &args,
        &project.root,
        &[TERM, ENV_ADDED],
        &remove,
        cols,
        40,
        Duration::from_secs(180),
    );
    assert!(!run.timed_out, "timed out:\n{}", run.text());
    run
}

#[test]
fn testmon_run_on_a_terminal_draws_a_bar_shows_failures_and_leaves_a_clean_screen() {
    let project = Project::copy("slow");
    project.write(
        "tests/test_fail.py",
        "import time\n\ndef test_fails():\n    time.sleep(0.3)\n    assert 1 == 2\n",
    );
    let run = testmon_run_in_pty(&project, &[], 100);
    let text = run.text();
    assert_eq!(run.status, Some(1), "{text}");
    assert!(
        text.as_bytes().contains(&ESC),
        "no terminal display:\n{text}"
    );
    let mut seen = counts(&text, 25);
    seen.dedup();
    assert!(seen.len() >= 2, "the bar did not update: {seen:?}\n{text}");
    assert!(
        text.contains("gw0 tests/") || text.contains("gw1 tests/"),
        "no worker line:\n{text}"
    );
    assert_one_display_at_a_time(&run, 2);
    let lines = run.logical_lines();
    assert_no_display_residue(&lines, &text);
    assert!(
        lines[0].starts_with("testmon-run ") && lines[0].contains("selected 25, deselected 0"),
        "the header first:\n{}",
        run.logical
    );
    // The failure in short form as it happened, above the report's full text.
    let short = lines
        .iter()
        .position(|l| l.starts_with("FAILED tests/test_fail.py::test_fails") && l.ends_with(']'))
        .unwrap_or_else(|| panic!("no live failure line:\n{}", run.logical));
    let full = lines
        .iter()
        .position(|l| l.contains(" FAILURES "))
        .unwrap_or_else(|| panic!("no FAILURES section:\n{}", run.logical));
    assert!(short < full, "{}", run.logical);
    assert!(
        lines.last().unwrap().contains("1 failed, 24 passed in "),
        "{}",
        run.logical
    );
}

#[test]
fn testmon_run_piped_prints_plain_lines() {
    let project = Project::copy("slow");
    let started = Instant::now();
    let run = project
        .testmon_run(Venv::Testmon22, &["-n", "2"], &[])
        .run();
    let elapsed = started.elapsed().as_secs();
    assert_eq!(run.code(), 0, "{}", run.output());
    assert!(!run.stdout.as_bytes().contains(&ESC), "{}", run.output());
    let status_lines = run
        .stdout
        .lines()
        .filter(|l| l.starts_with("testmon-run: ["))
        .count();
    assert!(
        status_lines as u64 <= elapsed / 5 + 1,
        "{status_lines} status lines in {elapsed}s\n{}",
        run.output()
    );
    assert!(run.summary().contains("24 passed"), "{}", run.output());
}
