//! The command line: clap flags turned into a checked `Config`.

pub(crate) mod config_file;

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Parser, ValueEnum};

use crate::exit::Fatal;
use crate::run::scheduler::Dist;
use crate::shard::ShardSpec;

const EXAMPLES: &str = "\
Examples:
  testmon-run -n 2 -- pytest --testmon
  testmon-run -n auto -- .venv/bin/pytest --testmon tests/unit
  testmon-run -n 4 --dist loadfile -- python -m pytest --testmon -x
  testmon-run --datafile /tmp/ci.testmondata -- pytest --testmon
  testmon-run --shard 2/3 -- pytest --testmon      (CI job 2 of 3)
  testmon-run merge --into .testmondata shard-*/.testmondata
  testmon-run why -- pytest --testmon                (why these tests are selected)

Everything after `--` is the pytest command, as you would type it.
Exit codes are pytest's: 0 ok, 1 tests failed, 2 interrupted, 3 internal error,
4 usage error, 5 no tests collected.";

#[derive(Debug, Parser)]
#[command(
    name = "testmon-run",
    version,
    about = "Run pytest-testmon's selected tests on N parallel pytest workers.",
    after_help = EXAMPLES
)]
struct Args {
    /// Number of workers: a number, or `auto` for the CPUs this process may use; 0 runs the
    /// command as it is, without workers.
    /// [default: auto, or `numprocesses` in pyproject.toml's [tool.testmon-run]]
    #[arg(
        short = 'n',
        long = "numprocesses",
        value_name = "N|auto",
        allow_negative_numbers = true
    )]
    workers: Option<String>,

    /// How tests are grouped into units of work [default: loadscope, or `dist` in pyproject.toml].
    #[arg(long, value_enum)]
    dist: Option<Dist>,

    /// The testmon database (default: $TESTMON_DATAFILE, or .testmondata in pytest's rootdir).
    #[arg(long, value_name = "PATH")]
    datafile: Option<PathBuf>,

    /// Keep the run directory (plan, spools, worker logs) for debugging.
    #[arg(long)]
    keep_run_dir: bool,

    /// Plain progress lines even on a terminal (as when not a terminal or $CI is set).
    #[arg(long)]
    no_progress: bool,

    /// Write a machine-readable summary of the run (JSON) to PATH.
    #[arg(long, value_name = "PATH")]
    json_report: Option<PathBuf>,

    /// Stop a test that runs longer than SECONDS: its worker is killed (process group) and
    /// replaced, the test reported as an error.
    #[arg(long, value_name = "SECONDS", value_parser = positive_seconds)]
    timeout: Option<f64>,

    /// After Ctrl-C or SIGTERM, how long workers get to stop before they are killed.
    #[arg(long, value_name = "SECONDS", value_parser = positive_seconds, default_value = "10")]
    grace_period: f64,

    /// How many crashed workers are replaced by new ones, at most [default: 4 × workers].
    #[arg(long, value_name = "N")]
    max_worker_restart: Option<u32>,

    /// Run only shard K of M of the selected tests (CI's parallel jobs; 1-based), or `auto`
    /// from the CI system's variables; merge the shards' datafiles with `testmon-run merge`.
    #[arg(long, value_name = "K/M|auto", value_parser = ShardSpec::parse)]
    shard: Option<ShardSpec>,

    /// The pytest command, after `--`.
    #[arg(last = true, value_name = "COMMAND")]
    command: Vec<OsString>,
}

/// `testmon-run merge`: the shards' datafiles made one again.
#[derive(Debug, Parser)]
#[command(
    name = "testmon-run merge",
    bin_name = "testmon-run merge",
    about = "Merge the datafiles of `--shard K/M` runs into one: what one machine running every selected test would have left."
)]
struct MergeArgs {
    /// The merged datafile: the shards' base file itself (restored from CI's cache), or a
    /// new path; replaced atomically.
    #[arg(long, value_name = "DEST")]
    into: PathBuf,

    /// Also combine the shards' `--json-report` documents (given with --report) into OUT.
    #[arg(long, value_name = "OUT", requires = "reports")]
    json_report: Option<PathBuf>,

    /// A shard's `--json-report` document (repeat for each shard).
    #[arg(long = "report", value_name = "SHARD_REPORT", requires = "json_report")]
    reports: Vec<PathBuf>,

    /// The shards' datafiles.
    #[arg(required = true, value_name = "SHARD_DATAFILE")]
    datafiles: Vec<PathBuf>,
}

/// A checked configuration for one run.
#[derive(Debug, Clone)]
pub(crate) struct Config {
    /// 0 means: run the command unsupervised.
    pub(crate) workers: usize,
    pub(crate) dist: Dist,
    pub(crate) datafile: Option<PathBuf>,
    pub(crate) keep_run_dir: bool,
    /// Live progress allowed (a bar on a terminal); false: plain lines.
    pub(crate) progress: bool,
    pub(crate) json_report: Option<PathBuf>,
    /// Per test, enforced by the supervisor.
    pub(crate) timeout: Option<Duration>,
    pub(crate) grace_period: Duration,
    pub(crate) max_worker_restart: u32,
    /// `--shard` as given (`auto` is resolved when the run starts).
    pub(crate) shard: Option<ShardSpec>,
    pub(crate) command: Vec<OsString>,
}

/// `testmon-run merge`'s arguments.
#[derive(Debug, Clone)]
pub(crate) struct MergeConfig {
    pub(crate) into: PathBuf,
    pub(crate) datafiles: Vec<PathBuf>,
    /// OUT and the shards' reports.
    pub(crate) json_report: Option<(PathBuf, Vec<PathBuf>)>,
}

/// What the command line asks for.
#[derive(Debug)]
pub(crate) enum Parsed {
    Run(Config),
    /// `testmon-run why -- COMMAND`: explain the selection, run nothing.
    Why(Config),
    Merge(MergeConfig),
    /// `--help` or `--version`: the text to print on stdout.
    Info(String),
}

/// Parses the command line, with defaults from the pyproject.toml nearest the current
/// directory.
pub(crate) fn parse<I: IntoIterator<Item = OsString>>(args: I) -> Result<Parsed, Fatal> {
    let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
    parse_in(args, &cwd)
}

/// As `parse`, with the pyproject.toml looked up from `dir`.
pub(crate) fn parse_in<I: IntoIterator<Item = OsString>>(
    args: I,
    dir: &Path,
) -> Result<Parsed, Fatal> {
    let mut args: Vec<OsString> = args.into_iter().collect();
    match args.get(1).and_then(|a| a.to_str()) {
        Some("merge") => return parse_merge(&args[1..]),
        Some("why") => {
            args.remove(1);
            return match parse_run(args, dir)? {
                Parsed::Run(config) => Ok(Parsed::Why(config)),
                other => Ok(other),
            };
        }
        _ => {}
    }
    parse_run(args, dir)
}

fn parse_merge(args: &[OsString]) -> Result<Parsed, Fatal> {
    let args = match MergeArgs::try_parse_from(args) {
        Ok(parsed) => parsed,
        Err(err) if err.kind() == clap::error::ErrorKind::MissingRequiredArgument => {
            return Err(Fatal::Usage(
                "merge needs --into DEST and the shards' datafiles: testmon-run merge --into DEST SHARD_DATAFILE..."
                    .into(),
            ))
        }
        Err(err) => return usage_error(&err, args),
    };
    Ok(Parsed::Merge(MergeConfig {
        into: args.into,
        datafiles: args.datafiles,
        json_report: args.json_report.map(|out| (out, args.reports)),
    }))
}

fn parse_run(args: Vec<OsString>, dir: &Path) -> Result<Parsed, Fatal> {
    let args = match Args::try_parse_from(&args) {
        Ok(parsed) => parsed,
        Err(err) => return usage_error(&err, &args),
    };
    if args.command.is_empty() {
        return Err(Fatal::Usage(
            "no command given: put the pytest command after `--`, e.g. `testmon-run -n 2 -- pytest --testmon`"
                .into(),
        ));
    }
    let file = config_file::load(dir).map_err(|err| Fatal::Usage(err.to_string()))?;
    let dist = match (args.dist, file.dist.as_deref()) {
        (Some(dist), _) => dist,
        (None, Some(name)) => Dist::from_str(name, false).map_err(|_| {
            Fatal::Usage(format!("[tool.testmon-run] dist: unknown value {name:?}"))
        })?,
        // Measured faster than `load` on both benchmark suites (README, Speed): a module's
        // and a class's scoped fixtures are set up once, not on every worker.
        (None, None) => Dist::Loadscope,
    };
    let workers = args
        .workers
        .or(file.numprocesses)
        .unwrap_or_else(|| "auto".into());
    let workers = parse_workers(&workers)?;
    Ok(Parsed::Run(Config {
        workers,
        dist,
        datafile: args.datafile,
        keep_run_dir: args.keep_run_dir,
        progress: !args.no_progress && file.progress.unwrap_or(true),
        json_report: args.json_report.or(file.json_report),
        timeout: args.timeout.map(Duration::from_secs_f64),
        grace_period: Duration::from_secs_f64(args.grace_period),
        max_worker_restart: args
            .max_worker_restart
            .unwrap_or_else(|| 4 * u32::try_from(workers).unwrap_or(u32::MAX / 4)),
        shard: args.shard.or(file.shard),
        command: args.command,
    }))
}

/// clap's error as one line that says what to do: `--help` and `--version` are not errors;
/// an argument testmon-run does not know is most likely pytest's (or the command itself)
/// before `--`; an invalid value lists the valid ones.
fn usage_error(err: &clap::Error, args: &[OsString]) -> Result<Parsed, Fatal> {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    let line = first_line(&err.render().to_string());
    match err.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {
            Ok(Parsed::Info(err.render().to_string()))
        }
        ErrorKind::UnknownArgument => {
            let hint = match err.get(ContextKind::InvalidArg) {
                Some(ContextValue::String(arg)) => after_double_dash(args, arg),
                _ => None,
            };
            Err(Fatal::Usage(match hint {
                Some(fixed) => format!("{line}: put the pytest command after --: {fixed}"),
                None => line,
            }))
        }
        ErrorKind::InvalidValue => {
            let valid: Vec<String> = match err.get(ContextKind::ValidValue) {
                Some(ContextValue::Strings(values)) => values.clone(),
                _ => Vec::new(),
            };
            Err(Fatal::Usage(if valid.is_empty() {
                line
            } else {
                format!("{line} (valid: {})", valid.join(", "))
            }))
        }
        _ => Err(Fatal::Usage(line)),
    }
}

/// The command line with the pytest part after `--`: `arg` (the first argument testmon-run
/// does not know) starts the command when no `--` follows it; before a `--`, it is a pytest
/// option and moves to the end of the command.
fn after_double_dash(args: &[OsString], arg: &str) -> Option<String> {
    let words: Vec<String> = args
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let at = words.iter().skip(1).position(|w| w == arg)? + 1;
    let mut fixed: Vec<&str> = std::iter::once("testmon-run")
        .chain(words[1..at].iter().map(String::as_str))
        .collect();
    if words[at..].iter().any(|w| w == "--") {
        fixed.extend(words[at + 1..].iter().map(String::as_str));
        fixed.push(arg);
    } else {
        fixed.push("--");
        fixed.extend(words[at..].iter().map(String::as_str));
    }
    Some(fixed.join(" "))
}

/// A number of seconds: finite and more than 0.
fn positive_seconds(value: &str) -> Result<f64, String> {
    match value.parse::<f64>() {
        Ok(s) if s.is_finite() && s > 0.0 && s < 1e9 => Ok(s),
        _ => Err(format!(
            "expected a number of seconds greater than 0, got '{value}'"
        )),
    }
}

fn first_line(text: &str) -> String {
    let line = text
        .lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("invalid arguments");
    line.trim_start_matches("error: ").to_string()
}

fn parse_workers(value: &str) -> Result<usize, Fatal> {
    if value == "auto" {
        return Ok(auto_workers());
    }
    value.parse::<usize>().map_err(|_| {
        Fatal::Usage(format!(
            "invalid value '{value}' for -n: expected a number of workers (0 or more) or `auto`"
        ))
    })
}

/// The CPUs this process may use, as xdist's `-n auto` (PYTEST_XDIST_AUTO_NUM_WORKERS wins).
fn auto_workers() -> usize {
    if let Some(n) = std::env::var("PYTEST_XDIST_AUTO_NUM_WORKERS")
        .ok()
        .and_then(|v| v.trim().parse::<usize>().ok())
    {
        return n;
    }
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(args: &[&str]) -> Result<Config, Fatal> {
        let args = std::iter::once("testmon-run")
            .chain(args.iter().copied())
            .map(OsString::from);
        match parse(args)? {
            Parsed::Run(config) => Ok(config),
            other => panic!("unexpected: {other:?}"),
        }
    }

    #[test]
    fn a_missing_double_dash_is_pointed_out() {
        let message = |args: &[&str]| match run(args) {
            Err(Fatal::Usage(message)) => message,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            message(&["-n", "2", "pytest", "--testmon"]),
            "unexpected argument 'pytest' found: put the pytest command after --: \
             testmon-run -n 2 -- pytest --testmon"
        );
        assert_eq!(
            message(&["-q", "--", "pytest", "--testmon"]),
            "unexpected argument '-q' found: put the pytest command after --: \
             testmon-run -- pytest --testmon -q"
        );
        assert_eq!(
            message(&["--dist", "foo", "--", "pytest"]),
            "invalid value 'foo' for '--dist <DIST>' (valid: load, loadscope, loadfile)"
        );
    }

    #[test]
    fn command_after_double_dash() {
        let config = run(&[
            "-n",
            "3",
            "--dist",
            "loadfile",
            "--",
            "pytest",
            "--testmon",
            "-x",
        ])
        .unwrap();
        assert_eq!(config.workers, 3);
        assert_eq!(config.dist, Dist::Loadfile);
        assert_eq!(
            config.command,
            ["pytest", "--testmon", "-x"].map(OsString::from)
        );
    }

    #[test]
    fn bad_input_is_a_usage_error() {
        for args in [
            &["-n", "-1", "--", "pytest"][..],
            &["-n", "two", "--", "pytest"],
            &["--dist", "each", "--", "pytest"],
            &["-n", "2"],
            &["--bogus", "--", "pytest"],
        ] {
            let err = run(args).unwrap_err();
            assert!(matches!(err, Fatal::Usage(_)), "{args:?}: {err:?}");
            assert!(!err.to_string().contains('\n'), "one line: {err}");
        }
    }

    #[test]
    fn pyproject_defaults_and_the_command_line_wins() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("pyproject.toml"),
            "[tool.testmon-run]\nnumprocesses = 3\ndist = \"loadfile\"\nprogress = false\n\
             json-report = \"out/r.json\"\n",
        )
        .unwrap();
        let parse = |args: &[&str]| {
            let args = std::iter::once("testmon-run")
                .chain(args.iter().copied())
                .map(OsString::from);
            match parse_in(args, dir.path()).unwrap() {
                Parsed::Run(config) => config,
                other => panic!("{other:?}"),
            }
        };
        let config = parse(&["--", "pytest"]);
        assert_eq!(config.workers, 3);
        assert_eq!(config.dist, Dist::Loadfile);
        assert!(!config.progress);
        assert_eq!(config.json_report, Some(dir.path().join("out/r.json")));
        let config = parse(&[
            "-n",
            "1",
            "--dist",
            "load",
            "--json-report",
            "x.json",
            "--",
            "pytest",
        ]);
        assert_eq!(config.workers, 1);
        assert_eq!(config.dist, Dist::Load);
        assert_eq!(config.json_report, Some(PathBuf::from("x.json")));
        std::fs::write(
            dir.path().join("pyproject.toml"),
            "[tool.testmon-run]\nworkers = 2\n",
        )
        .unwrap();
        let args = ["testmon-run", "--", "pytest"].map(OsString::from);
        let err = parse_in(args, dir.path()).unwrap_err();
        assert!(matches!(err, Fatal::Usage(_)), "{err:?}");
        assert!(err.to_string().contains("workers"), "{err}");
        assert!(!err.to_string().contains('\n'), "{err}");
    }

    #[test]
    fn the_default_dist_is_loadscope() {
        let dir = tempfile::tempdir().unwrap();
        let args = ["testmon-run", "--", "pytest"].map(OsString::from);
        match parse_in(args, dir.path()).unwrap() {
            Parsed::Run(config) => assert_eq!(config.dist, Dist::Loadscope),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn help_has_examples() {
        let parsed = parse(["testmon-run", "--help"].map(OsString::from)).unwrap();
        match parsed {
            Parsed::Info(text) => assert!(text.contains("testmon-run -n 2 -- pytest --testmon")),
            other => panic!("{other:?}"),
        }
    }

    /// The README's options table and `--help` name the same options.
    #[test]
    fn the_readme_documents_every_option_and_no_other() {
        use clap::CommandFactory;
        let readme = include_str!("../../README.md");
        // The table under "| option | meaning |", up to the first line that is not a row.
        let table: std::collections::BTreeSet<String> = readme
            .lines()
            .skip_while(|l| *l != "| option | meaning |")
            .skip(2)
            .take_while(|l| l.starts_with('|'))
            .flat_map(|l| l.split('|').nth(1).unwrap_or("").split(','))
            .filter_map(|cell| {
                let flag = cell.trim().trim_matches('`').split(' ').next()?;
                Some(flag.to_string())
            })
            .collect();
        let help: std::collections::BTreeSet<String> = Args::command()
            .get_arguments()
            .filter(|a| a.get_id() != "command")
            .flat_map(|a| {
                let long = a.get_long().map(|l| format!("--{l}"));
                let short = a.get_short().map(|s| format!("-{s}"));
                long.into_iter().chain(short)
            })
            .collect();
        let undocumented: Vec<&String> = help.difference(&table).collect();
        let unknown: Vec<&String> = table.difference(&help).collect();
        assert!(
            undocumented.is_empty(),
            "not in the README's table: {undocumented:?}"
        );
        assert!(
            unknown.is_empty(),
            "in the README's table, not in --help: {unknown:?}"
        );
    }
}
