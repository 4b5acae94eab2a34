//! Drives the progress display with fake events on a timer, for the pty tests
//! (tests/integration/tty.rs) and for a look by eye: `cargo run --example ui_demo`.
//!
//! Options: `--no-progress`, `--quiet`, `--workers N` (3), `--tests N` (20), `--seconds S`
//! (2: the run's length, about), `--fail I,J` (7,15: the failing tests), `--long` (long node
//! ids), `-v` (a line per test). Prints `ui_demo: N workers, M tests` first, the failures'
//! full text after the run and `ui_demo summary: P passed, F failed in S.SSs` last.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use testmon_run::ui::terminal;
use testmon_run::ui::{choose_mode, Ui};

struct Args {
    progress: bool,
    quiet: bool,
    workers: usize,
    tests: usize,
    seconds: f64,
    fail: Vec<usize>,
    long: bool,
    verbose: bool,
}

fn parse() -> Args {
    let mut args = Args {
        progress: true,
        quiet: false,
        workers: 3,
        tests: 20,
        seconds: 2.0,
        fail: vec![7, 15],
        long: false,
        verbose: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = || it.next().expect("a value after the option");
        match arg.as_str() {
            "--no-progress" => args.progress = false,
            "--quiet" => args.quiet = true,
            "--workers" => args.workers = value().parse().expect("--workers N"),
            "--tests" => args.tests = value().parse().expect("--tests N"),
            "--seconds" => args.seconds = value().parse().expect("--seconds S"),
            "--fail" => {
                args.fail = value()
                    .split(',')
                    .filter(|s| !s.is_empty())
                    .map(|s| s.parse().expect("--fail I,J"))
                    .collect()
            }
            "--long" => args.long = true,
            "-v" => args.verbose = true,
            other => panic!("unknown option {other}"),
        }
    }
    args
}

fn nodeid(long: bool, i: usize) -> String {
    if long {
        format!(
            "tests/some/deeply/nested/package/test_module_with_a_long_name.py::TestClass::test_{i:02}[parameter-value-that-is-long]"
        )
    } else {
        format!("tests/test_demo.py::test_{i:02}")
    }
}

fn main() {
    let args = parse();
    let workers = args.workers.max(1);
    let names: Vec<String> = (0..workers).map(|w| format!("gw{w}")).collect();
    // Test i costs (1 + i % 3) units; a unit such that the run takes about `seconds`.
    let units: usize = (0..args.tests).map(|i| 1 + i % 3).sum();
    let unit = args.seconds * workers as f64 / units.max(1) as f64;
    let cost = |i: usize| unit * (1 + i % 3) as f64;
    let expected: f64 = (0..args.tests).map(cost).sum();

    terminal::say(&format!(
        "ui_demo: {workers} workers, {} tests\n",
        args.tests
    ));
    let mut ui = Ui::new(
        choose_mode(args.progress, args.quiet),
        terminal::width(),
        names.clone(),
    );
    let started = Instant::now();
    ui.start(args.tests, expected);
    let mut queue: VecDeque<usize> = (0..args.tests).collect();
    let mut running: Vec<Option<(usize, Instant)>> = vec![None; workers];
    let mut failures = Vec::new();
    loop {
        let now = Instant::now();
        for (w, slot) in running.iter_mut().enumerate() {
            if let Some((i, ends)) = *slot {
                if now < ends {
                    continue;
                }
                let failed = args.fail.contains(&i);
                ui.finished(w, &nodeid(args.long, i), cost(i), failed);
                if failed {
                    ui.line(&format!(
                        "FAILED {} - AssertionError: assert {i} == 0",
                        nodeid(args.long, i)
                    ));
                    failures.push(i);
                } else if args.verbose {
                    ui.line(&format!("PASSED {} [{}]", nodeid(args.long, i), names[w]));
                }
                *slot = None;
            }
            if let Some(i) = queue.pop_front() {
                ui.started(w, &nodeid(args.long, i));
                *slot = Some((i, now + Duration::from_secs_f64(cost(i))));
            }
        }
        if running.iter().all(Option::is_none) {
            break;
        }
        ui.tick();
        std::thread::sleep(Duration::from_millis(50));
    }
    ui.finish();
    drop(ui);

    let mut out = String::new();
    if !failures.is_empty() {
        out.push_str("=== FAILURES ===\n");
        for i in &failures {
            out.push_str(&format!(
                "___ test_{i:02} ___\n    assert {i} == 0\nE   AssertionError (full text of test_{i:02})\n"
            ));
        }
    }
    out.push_str(&format!(
        "ui_demo summary: {} passed, {} failed in {:.2}s\n",
        args.tests - failures.len(),
        failures.len(),
        started.elapsed().as_secs_f64()
    ));
    terminal::say(&out);
}
