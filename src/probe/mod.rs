//! The probe: the user's own command, run once with the probe plugin, tells us pytest's
//! rootdir and options and what the installed testmon would use for this run.

pub(crate) mod cache;

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use anyhow::{Context, Result};
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::exit::{self, Fatal};
use crate::pycommand;
use crate::run::rundir::{RunDir, PROBE_MODULE};

pub(crate) const PROTOCOL: u32 = 3;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Facts {
    pub(crate) protocol: u32,
    pub(crate) pytest_version: String,
    pub(crate) rootdir: PathBuf,
    pub(crate) inipath: Option<PathBuf>,
    /// pytest-xdist is installed (its `-n` in addopts is neutralised in the workers).
    pub(crate) xdist: bool,
    /// `--help`, `--version`, `--collect-only` and the like: run the command as it is.
    pub(crate) passthrough: bool,
    pub(crate) maxfail: u64,
    pub(crate) verbose: i64,
    pub(crate) color: String,
    pub(crate) testmon: Option<Testmon>,
    /// The plugins that may act in xdist's controller process (python/probe.py
    /// controller_side): a controller runs when there is one.
    #[serde(default)]
    pub(crate) controller_side: Vec<String>,
    /// The installed pytest plugins loaded, testmon and xdist aside (python/probe.py
    /// plugin_distributions): the zygote only when each is one it is tested with
    /// (run::zygote).
    #[serde(default)]
    pub(crate) plugin_distributions: Vec<String>,
    /// `-s` or live logging: the workers' output is streamed.
    #[serde(default)]
    pub(crate) stream: bool,
    /// Where pytest would write `--junitxml`.
    #[serde(default)]
    pub(crate) junitxml: Option<PathBuf>,
    /// `--junit-prefix`.
    #[serde(default)]
    pub(crate) junit_prefix: Option<String>,
    #[serde(default = "default_reportchars")]
    pub(crate) reportchars: String,
    #[serde(default)]
    pub(crate) tbstyle: String,
    /// `--durations N` (0: all).
    #[serde(default)]
    pub(crate) durations: Option<u64>,
    #[serde(default)]
    pub(crate) durations_min: Option<f64>,
    #[serde(default)]
    pub(crate) stepwise: bool,
    #[serde(default)]
    pub(crate) stepwise_skip: bool,
    /// [size, mtime_ns] (None: absent) of what this answer depends on besides the command
    /// line and the ini files: the interpreter, sys.path's directories, the plugins' files.
    #[serde(default)]
    pub(crate) stamps: BTreeMap<PathBuf, Option<(u64, i64)>>,
    /// The answer may be reused while the stamps hold (see probe::cache).
    #[serde(default)]
    pub(crate) cacheable: bool,
    /// Files (not directories) among the paths pytest collects from.
    #[serde(default)]
    pub(crate) file_args: bool,
    /// The distributions (dist-info names) in sys.path's other directories.
    #[serde(default)]
    pub(crate) dists: BTreeMap<PathBuf, Vec<String>>,
}

fn default_reportchars() -> String {
    "fE".into()
}

impl Facts {
    /// The failures after which the whole run stops: `-x`/`--maxfail`, or `--sw` (one
    /// failure; two with `--sw-skip`).
    pub(crate) fn stop_after(&self) -> u64 {
        match (self.stepwise, self.stepwise_skip) {
            (true, false) => 1,
            (_, true) => 2,
            _ => self.maxfail,
        }
    }
}

/// What the installed testmon computes for this run, by its own functions.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Testmon {
    pub(crate) version: String,
    pub(crate) data_version: i64,
    pub(crate) select: bool,
    pub(crate) collect: bool,
    pub(crate) tmnet: bool,
    pub(crate) message: Option<String>,
    pub(crate) environment: String,
    pub(crate) system_packages: String,
    pub(crate) python_version: String,
    pub(crate) datafile: PathBuf,
    /// The blob testmon stores for a collected test that has not run yet ("0match").
    pub(crate) placeholder_checksums: String,
    /// How many tests' fingerprints testmon writes at once (its TEST_BATCH_SIZE).
    pub(crate) batch_size: usize,
}

impl Testmon {
    pub(crate) fn active(&self) -> bool {
        self.select || self.collect
    }
}

pub(crate) fn run(
    command: &[OsString],
    run_dir: &RunDir,
    datafile: Option<&Path>,
) -> Result<Facts> {
    let out = run_dir.probe_output();
    let mut cmd = pycommand::with_plugin(command, PROBE_MODULE, &run_dir.python_path(), datafile);
    cmd.env("TESTMON_RUN_PROBE_OUT", &out).stdin(Stdio::null());
    let output = cmd
        .output()
        .map_err(|err| pycommand::start_error(command, err))?;
    if out.exists() {
        return read_answer(&out);
    }
    Err(why_no_answer(command, &output))
}

/// pytest rejected `--testmon`: the plugin is not installed where the command runs (or is
/// disabled), which pytest's own message does not say.
fn testmon_missing_hint(command: &[OsString], stderr: &str) -> Option<String> {
    let rejected = stderr
        .lines()
        .any(|l| l.contains("unrecognized arguments:") && l.contains("--testmon"));
    rejected.then(|| {
        format!(
            "testmon-run: hint: pytest-testmon is not installed where `{}` runs, or it is \
             disabled (-p no:...): install it there (pip install pytest-testmon)",
            command[0].to_string_lossy()
        )
    })
}

/// The probe's JSON answer, of this testmon-run's probe protocol.
fn read_answer(out: &Path) -> Result<Facts> {
    let text = std::fs::read_to_string(out).context("reading the probe's answer")?;
    let facts: Facts = serde_json::from_str(&text).context("parsing the probe's answer")?;
    if facts.protocol != PROTOCOL {
        return Err(Fatal::Internal(format!(
            "probe protocol {} does not match this testmon-run ({PROTOCOL})",
            facts.protocol
        ))
        .into());
    }
    Ok(facts)
}

/// The command ended before our plugin ran: pytest's own answer (a usage error,
/// `--version`, a conftest that does not import), a crash, or not pytest at all.
fn why_no_answer(command: &[OsString], output: &std::process::Output) -> anyhow::Error {
    let stderr = String::from_utf8_lossy(&output.stderr);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let code = output.status.code();
    let looks_like_pytest = stderr.contains("pytest") || stdout.contains("pytest");
    if looks_like_pytest && stderr.contains("ModuleNotFoundError") && stderr.contains(PROBE_MODULE)
    {
        return Fatal::Internal(
            "pytest could not import the probe plugin (is PYTHONPATH honoured by the command?)"
                .into(),
        )
        .into();
    }
    // testmon reads the cache plugin's `--lf` option: without that plugin it fails (as
    // single-process `pytest --testmon` does, with an INTERNALERROR).
    if stderr.contains("KeyError: 'lf'") && stderr.contains("testmon") {
        return Fatal::Usage(
            "pytest-testmon cannot run without pytest's cache plugin (it reads its --lf option): \
             drop `-p no:cacheprovider` (from the command or addopts)"
                .into(),
        )
        .into();
    }
    // Exit 1 means failed tests, which cannot happen before the probe: that is a traceback.
    let pytests_own = [
        exit::OK,
        exit::INTERRUPTED,
        exit::INTERNAL_ERROR,
        exit::USAGE_ERROR,
        exit::NO_TESTS_COLLECTED,
    ];
    if let Some(own) = code
        .and_then(|c| u8::try_from(c).ok())
        .filter(|c| pytests_own.contains(c))
    {
        if looks_like_pytest {
            crate::ui::terminal::say(&stdout);
            eprint!("{stderr}");
            if let Some(hint) = testmon_missing_hint(command, &stderr) {
                eprintln!("{hint}");
            }
            return Fatal::Pytest(own).into();
        }
    }
    let detail = stderr
        .lines()
        .chain(stdout.lines())
        .map(str::trim)
        .rfind(|l| !l.is_empty())
        .unwrap_or("no output");
    let status = code.map_or_else(|| "killed by a signal".to_string(), |c| format!("exit {c}"));
    if looks_like_pytest {
        eprint!("{stderr}");
        return Fatal::Internal(format!(
            "pytest ended before the probe ran ({status}): {detail}"
        ))
        .into();
    }
    Fatal::Usage(format!(
        "`{}` does not look like a pytest command ({status}): {detail}",
        pycommand::display(command)
    ))
    .into()
}
