//! The explanation as text: pure, from what the datafile and testmon's selection said.

use std::collections::BTreeMap;
use std::fmt::Write;

use super::datafile::NewDatabase;
use super::session::Report;

/// Everything `why` prints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Explanation {
    /// The datafile as the user names it (relative to the current directory when inside it).
    pub(crate) datafile: String,
    pub(crate) environment: String,
    pub(crate) testmon_version: String,
    /// The data version the installed testmon needs.
    pub(crate) data_version: i64,
    /// The size of a `-wal` file beside the datafile.
    pub(crate) wal_bytes: u64,
    pub(crate) start: Start,
    /// Why testmon's selection is off (its own words), when it is.
    pub(crate) selection_off: Option<String>,
    pub(crate) report: Report,
}

/// What testmon starts from: nothing (every test is selected), or the last run's records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Start {
    NewDatabase(NewDatabase),
    NewEnvironment {
        others: Vec<String>,
    },
    /// The environment row's packages or python differ from this run's.
    Changed {
        packages: Vec<PackageChange>,
        python: Option<(String, String)>,
        /// testmon 2.1 went back to an older row of these packages (its records count).
        older_row: Option<i64>,
    },
    Unchanged {
        python: String,
        packages: usize,
    },
}

/// One package whose version differs between the environment row and this run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PackageChange {
    pub(crate) name: String,
    /// None: new.
    pub(crate) old: Option<String>,
    /// None: removed.
    pub(crate) new: Option<String>,
}

/// How many package changes are named before "… and N more".
const PACKAGES_SHOWN: usize = 10;

/// testmon's package list (`name version, name version`, as `get_system_packages` and
/// `drop_patch_version` write it) → name → version.
fn parse_packages(list: &str) -> BTreeMap<&str, &str> {
    list.split(", ")
        .map(str::trim)
        .filter(|entry| !entry.is_empty())
        .map(|entry| entry.rsplit_once(' ').unwrap_or((entry, "")))
        .collect()
}

/// The packages whose versions differ, by name.
pub(crate) fn diff_packages(old: &str, new: &str) -> Vec<PackageChange> {
    let (old, new) = (parse_packages(old), parse_packages(new));
    let names: std::collections::BTreeSet<&str> = old.keys().chain(new.keys()).copied().collect();
    names
        .into_iter()
        .filter(|name| old.get(name) != new.get(name))
        .map(|name| PackageChange {
            name: name.to_string(),
            old: old.get(name).map(|v| (*v).to_string()),
            new: new.get(name).map(|v| (*v).to_string()),
        })
        .collect()
}

/// How many packages a list names.
pub(crate) fn count_packages(list: &str) -> usize {
    parse_packages(list).len()
}

fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

fn size(bytes: u64) -> String {
    #[allow(clippy::cast_precision_loss)]
    let kib = bytes as f64 / 1024.0;
    if bytes < 1024 {
        format!("{bytes} bytes")
    } else if kib < 1024.0 {
        format!("{kib:.1} KiB")
    } else {
        format!("{:.1} MiB", kib / 1024.0)
    }
}

fn package_changes(changes: &[PackageChange]) -> String {
    let mut parts: Vec<String> = changes
        .iter()
        .take(PACKAGES_SHOWN)
        .map(|c| {
            let version = |v: &str| {
                if v.is_empty() {
                    String::new()
                } else {
                    format!(" {v}")
                }
            };
            match (&c.old, &c.new) {
                (Some(old), Some(new)) => format!("{} {old} → {new}", c.name),
                (None, Some(new)) => format!("{}{} (new)", c.name, version(new)),
                (Some(old), None) => format!("{}{} (removed)", c.name, version(old)),
                (None, None) => c.name.clone(),
            }
        })
        .collect();
    if changes.len() > PACKAGES_SHOWN {
        parts.push(format!("… and {} more", changes.len() - PACKAGES_SHOWN));
    }
    parts.join(", ")
}

fn header(datafile: &str, environment: &str, version: &str) -> String {
    format!(
        "testmon-run why: datafile {datafile} (environment \"{environment}\", testmon {version})\n"
    )
}

/// testmon is loaded but neither selects nor records (`--no-testmon`).
pub(crate) fn format_inactive(
    datafile: &str,
    environment: &str,
    version: &str,
    reason: &str,
) -> String {
    let mut out = header(datafile, environment, version);
    let _ = writeln!(
        out,
        "testmon is off ({reason}): it neither selects nor records; every collected test runs"
    );
    out
}

/// The explanation, one line per reason, ending with the selection.
pub(crate) fn format(e: &Explanation) -> String {
    let df = &e.datafile;
    let mut out = header(df, &e.environment, &e.testmon_version);
    if e.wal_bytes > 0 {
        let _ = writeln!(
            out,
            "note: {df}-wal holds {} not yet written into {df}: they are part of the database \
             only while the -wal file is beside it (copy or cache both, or first run \
             `sqlite3 {df} \"PRAGMA wal_checkpoint(TRUNCATE)\"`); testmon-run leaves no -wal file",
            size(e.wal_bytes)
        );
    }
    let every = "every test is selected";
    let incremental = match &e.start {
        Start::NewDatabase(reason) => {
            let why = match reason {
                NewDatabase::Missing => "does not exist".to_string(),
                NewDatabase::Empty => "is empty".to_string(),
                NewDatabase::OtherVersion(0) => {
                    "is not testmon's (data version 0): testmon will start it over".to_string()
                }
                NewDatabase::OtherVersion(version) => format!(
                    "is data version {version}, testmon {} needs {}: testmon will start it over",
                    e.testmon_version, e.data_version
                ),
            };
            let _ = writeln!(out, "new database: {df} {why}: {every}");
            false
        }
        Start::NewEnvironment { others } => {
            let has = if others.is_empty() {
                "none".to_string()
            } else {
                others
                    .iter()
                    .map(|o| format!("\"{o}\""))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            let _ = writeln!(
                out,
                "new environment: {df} has no environment \"{}\" (it has {has}): {every}",
                e.environment
            );
            false
        }
        Start::Changed {
            packages,
            python,
            older_row,
        } => {
            let mut parts = Vec::new();
            if !packages.is_empty() {
                parts.push(format!(
                    "packages changed since the last run: {}",
                    package_changes(packages)
                ));
            }
            if let Some((old, new)) = python {
                parts.push(format!("python changed since the last run: {old} → {new}"));
            }
            if parts.is_empty() {
                parts.push("packages changed since the last run".into());
            }
            match older_row {
                None => parts.push(every.into()),
                Some(row) => parts.push(format!(
                    "testmon {} goes back to its older record of these (environment row {row})",
                    e.testmon_version
                )),
            }
            let _ = writeln!(out, "environment: {}", parts.join("; "));
            older_row.is_some()
        }
        Start::Unchanged { python, packages } => {
            let _ = writeln!(
                out,
                "environment: unchanged since the last run (python {python}, {})",
                plural(*packages, "package", "packages")
            );
            true
        }
    };
    let r = &e.report;
    if let Some(reason) = &e.selection_off {
        let _ = writeln!(
            out,
            "testmon's selection is off ({reason}): every collected test runs"
        );
    }
    let select = r.select && e.selection_off.is_none();
    if incremental && select {
        changed_files(&mut out, r);
        let mut never = Vec::new();
        if r.failed > 0 {
            never.push(format!(
                "{} last time",
                plural(r.failed, "failed", "failed")
            ));
        }
        if r.no_record > 0 {
            never.push(format!(
                "{} without a record (new, or deselected last time)",
                r.no_record
            ));
        }
        if !never.is_empty() {
            let _ = writeln!(out, "never ran or failed: {}", never.join(", "));
        }
        if r.other > 0 {
            let _ = writeln!(
                out,
                "also selected by testmon: {}",
                plural(r.other, "test", "tests")
            );
        }
    }
    if !r.collect_errors.is_empty() {
        let mut names: Vec<&str> = r
            .collect_errors
            .iter()
            .take(3)
            .map(String::as_str)
            .collect();
        if r.collect_errors.len() > 3 {
            names.push("…");
        }
        let _ = writeln!(
            out,
            "collection errors: {} ({}): pytest stops there and runs no test",
            r.collect_errors.len(),
            names.join(", ")
        );
    }
    if select && r.selected == 0 {
        let why = if r.changed.is_empty() {
            "no tracked file changed"
        } else {
            "no recorded test ran the code that changed"
        };
        let _ = writeln!(out, "nothing would be selected: {why}");
    } else {
        let total = r.selected + r.deselected + r.skipped;
        let _ = write!(
            out,
            "selected: {} of {}",
            r.selected,
            plural(total, "test", "tests")
        );
        if r.user_deselected > 0 {
            let _ = write!(
                out,
                " ({} more deselected by pytest's options)",
                r.user_deselected
            );
        }
        out.push('\n');
    }
    out
}

/// How many names of files whose change selects nothing are shown before "… and N more".
const QUIET_FILES_SHOWN: usize = 5;

/// `changed files: N (of M tracked)`, one line per file whose change selects tests (or that
/// is gone, or whose tests are), then one line naming the files whose change no recorded
/// test ran (a comment, or code only tests already rerun since then had run).
fn changed_files(out: &mut String, r: &Report) {
    if r.changed.is_empty() {
        let _ = writeln!(out, "changed files: none (of {} tracked)", r.tracked_files);
        return;
    }
    let _ = writeln!(
        out,
        "changed files: {} (of {} tracked)",
        r.changed.len(),
        r.tracked_files
    );
    let (listed, quiet): (Vec<_>, Vec<_>) = r
        .changed
        .iter()
        .partition(|c| c.selected > 0 || c.not_collected > 0 || c.gone);
    let width = listed
        .iter()
        .map(|c| c.file.chars().count())
        .max()
        .unwrap_or(0)
        + 4;
    let count_width = listed
        .iter()
        .map(|c| c.selected.to_string().len())
        .max()
        .unwrap_or(1);
    for c in listed {
        let mut notes = Vec::new();
        if c.gone {
            notes.push("file removed".to_string());
        }
        if c.not_collected > 0 {
            notes.push(format!("{} more no longer collected", c.not_collected));
        }
        let notes = if notes.is_empty() {
            String::new()
        } else {
            format!(" ({})", notes.join(", "))
        };
        let _ = writeln!(
            out,
            "  {:<width$}{:>count_width$} {}{notes}",
            c.file,
            c.selected,
            if c.selected == 1 { "test" } else { "tests" },
        );
    }
    if !quiet.is_empty() {
        let names: Vec<&str> = quiet
            .iter()
            .take(QUIET_FILES_SHOWN)
            .map(|c| c.file.as_str())
            .collect();
        let more = quiet.len().saturating_sub(QUIET_FILES_SHOWN);
        let more = if more > 0 {
            format!(", … and {more} more")
        } else {
            String::new()
        };
        let _ = writeln!(
            out,
            "  no test selected (no recorded test ran the code that changed): {}{more}",
            names.join(", ")
        );
    }
}

#[cfg(test)]
mod tests {
    use super::super::session::ChangedFile;
    use super::*;

    fn base(start: Start, report: Report) -> Explanation {
        Explanation {
            datafile: ".testmondata".into(),
            environment: "default".into(),
            testmon_version: "2.2.0".into(),
            data_version: 14,
            wal_bytes: 0,
            start,
            selection_off: None,
            report,
        }
    }

    fn report() -> Report {
        Report {
            protocol: 1,
            select: true,
            ..Report::default()
        }
    }

    #[test]
    fn incremental_run() {
        let r = Report {
            tracked_files: 14,
            changed: vec![
                ChangedFile {
                    file: "src/calc.py".into(),
                    selected: 4,
                    ..ChangedFile::default()
                },
                ChangedFile {
                    file: "tests/test_calc.py".into(),
                    selected: 12,
                    not_collected: 1,
                    ..ChangedFile::default()
                },
                ChangedFile {
                    file: "src/old.py".into(),
                    gone: true,
                    selected: 1,
                    ..ChangedFile::default()
                },
                ChangedFile {
                    file: "src/notes.py".into(),
                    ..ChangedFile::default()
                },
            ],
            failed: 3,
            no_record: 12,
            selected: 25,
            deselected: 100,
            skipped: 15,
            ..report()
        };
        let start = Start::Unchanged {
            python: "3.11.7".into(),
            packages: 10,
        };
        assert_eq!(
            format(&base(start, r)),
            "\
testmon-run why: datafile .testmondata (environment \"default\", testmon 2.2.0)
environment: unchanged since the last run (python 3.11.7, 10 packages)
changed files: 4 (of 14 tracked)
  src/calc.py            4 tests
  tests/test_calc.py    12 tests (1 more no longer collected)
  src/old.py             1 test (file removed)
  no test selected (no recorded test ran the code that changed): src/notes.py
never ran or failed: 3 failed last time, 12 without a record (new, or deselected last time)
selected: 25 of 140 tests
"
        );
    }

    #[test]
    fn nothing_selected() {
        let r = Report {
            tracked_files: 3,
            deselected: 2,
            skipped: 3,
            ..report()
        };
        let start = Start::Unchanged {
            python: "3.11.7".into(),
            packages: 1,
        };
        assert_eq!(
            format(&base(start, r)),
            "\
testmon-run why: datafile .testmondata (environment \"default\", testmon 2.2.0)
environment: unchanged since the last run (python 3.11.7, 1 package)
changed files: none (of 3 tracked)
nothing would be selected: no tracked file changed
"
        );
    }

    #[test]
    fn nothing_selected_though_a_file_changed() {
        let r = Report {
            tracked_files: 10,
            changed: vec![ChangedFile {
                file: "calc/arith.py".into(),
                ..ChangedFile::default()
            }],
            deselected: 20,
            ..report()
        };
        let start = Start::Unchanged {
            python: "3.11.7".into(),
            packages: 2,
        };
        assert_eq!(
            format(&base(start, r)),
            "\
testmon-run why: datafile .testmondata (environment \"default\", testmon 2.2.0)
environment: unchanged since the last run (python 3.11.7, 2 packages)
changed files: 1 (of 10 tracked)
  no test selected (no recorded test ran the code that changed): calc/arith.py
nothing would be selected: no recorded test ran the code that changed
"
        );
    }

    #[test]
    fn new_database_and_environment() {
        let r = Report {
            selected: 5,
            ..report()
        };
        let cases = [
            (
                Start::NewDatabase(NewDatabase::Missing),
                "new database: .testmondata does not exist: every test is selected",
            ),
            (
                Start::NewDatabase(NewDatabase::Empty),
                "new database: .testmondata is empty: every test is selected",
            ),
            (
                Start::NewDatabase(NewDatabase::OtherVersion(13)),
                "new database: .testmondata is data version 13, testmon 2.2.0 needs 14: testmon \
                 will start it over: every test is selected",
            ),
            (
                Start::NewDatabase(NewDatabase::OtherVersion(0)),
                "new database: .testmondata is not testmon's (data version 0): testmon will \
                 start it over: every test is selected",
            ),
            (
                Start::NewEnvironment {
                    others: vec!["default".into(), "py312".into()],
                },
                "new environment: .testmondata has no environment \"default\" (it has \
                 \"default\", \"py312\"): every test is selected",
            ),
        ];
        for (start, line) in cases {
            assert_eq!(
                format(&base(start, r.clone())),
                format!(
                    "testmon-run why: datafile .testmondata (environment \"default\", testmon \
                     2.2.0)\n{line}\nselected: 5 of 5 tests\n"
                )
            );
        }
    }

    #[test]
    fn packages_changed() {
        let packages = diff_packages(
            "gone 1.0, pytest 9.1, requests 2.31",
            "newpkg 0.3, pytest 9.1, requests 2.32",
        );
        let start = Start::Changed {
            packages,
            python: Some(("3.11.7".into(), "3.12.1".into())),
            older_row: None,
        };
        let mut e = base(
            start,
            Report {
                selected: 7,
                ..report()
            },
        );
        e.wal_bytes = 8192;
        assert_eq!(
            format(&e),
            "\
testmon-run why: datafile .testmondata (environment \"default\", testmon 2.2.0)
note: .testmondata-wal holds 8.0 KiB not yet written into .testmondata: they are part of the database only while the -wal file is beside it (copy or cache both, or first run `sqlite3 .testmondata \"PRAGMA wal_checkpoint(TRUNCATE)\"`); testmon-run leaves no -wal file
environment: packages changed since the last run: gone 1.0 (removed), newpkg 0.3 (new), requests 2.31 → 2.32; python changed since the last run: 3.11.7 → 3.12.1; every test is selected
selected: 7 of 7 tests
"
        );
    }

    #[test]
    fn selection_off_and_collection_errors() {
        let mut e = base(
            Start::Unchanged {
                python: "3.11.7".into(),
                packages: 3,
            },
            Report {
                selected: 9,
                collect_errors: vec!["tests/test_broken.py".into()],
                ..report()
            },
        );
        e.selection_off = Some("-k was used".into());
        assert_eq!(
            format(&e),
            "\
testmon-run why: datafile .testmondata (environment \"default\", testmon 2.2.0)
environment: unchanged since the last run (python 3.11.7, 3 packages)
testmon's selection is off (-k was used): every collected test runs
collection errors: 1 (tests/test_broken.py): pytest stops there and runs no test
selected: 9 of 9 tests
"
        );
    }

    #[test]
    fn testmon_off() {
        assert_eq!(
            format_inactive(".testmondata", "default", "2.1.4", "deactivated through --no-testmon"),
            "\
testmon-run why: datafile .testmondata (environment \"default\", testmon 2.1.4)
testmon is off (deactivated through --no-testmon): it neither selects nor records; every collected test runs
"
        );
    }

    #[test]
    fn many_package_changes_are_cut() {
        let old: Vec<String> = (0..12).map(|i| format!("p{i:02} 1.0")).collect();
        let new: Vec<String> = (0..12).map(|i| format!("p{i:02} 2.0")).collect();
        let changes = diff_packages(&old.join(", "), &new.join(", "));
        assert_eq!(changes.len(), 12);
        assert!(package_changes(&changes).ends_with("p09 1.0 → 2.0, … and 2 more"));
        assert_eq!(count_packages(&new.join(", ")), 12);
        assert!(diff_packages("a 1.0", "a 1.0").is_empty());
    }
}
