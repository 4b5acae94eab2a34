//! The user's datafile as `why` sees it: never opened by SQLite where it lies (a reader of a
//! WAL database leaves `-wal` and `-shm` files beside it), but copied whole, with its `-wal`,
//! into the private run directory; the copy is what SQLite and testmon read.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use rusqlite::{Connection, OpenFlags};

use crate::exit::Fatal;
use crate::run::rundir::{private_file, RunDir};

/// Why every test is selected, when the datafile itself is the reason (testmon's "new DB").
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum NewDatabase {
    Missing,
    Empty,
    /// Another data version (0: not testmon's): testmon removes the file and starts over.
    OtherVersion(i64),
}

/// The latest `environment` row of the run's environment name (the one testmon compares).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct EnvironmentRow {
    pub(crate) packages: Option<String>,
    pub(crate) python: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum State {
    New(NewDatabase),
    /// testmon's data version, but no row of this environment name (those it has).
    NoEnvironment {
        others: Vec<String>,
    },
    Environment {
        row: EnvironmentRow,
        /// The ids of every row of this name: testmon 2.1 may go back to an older one.
        ids: Vec<i64>,
    },
}

pub(crate) struct Inspected {
    pub(crate) state: State,
    /// The size of a `-wal` file beside the datafile (0: none, or empty).
    pub(crate) wal_bytes: u64,
    /// The private copy testmon reads (absent when the datafile is).
    pub(crate) copy: PathBuf,
}

/// Reads the datafile's state from a copy in the run directory; a path that cannot be a
/// datafile, or a file that is not SQLite, is a usage error (the file left as it is).
pub(crate) fn inspect(
    datafile: &Path,
    environment: &str,
    data_version: i64,
    run_dir: &RunDir,
) -> Result<Inspected> {
    // Refused as the run refuses them: a directory, a missing directory, not SQLite.
    crate::db::check_usable(datafile)?;
    let copy = run_dir.path().join("why.testmondata");
    let wal = sidecar(datafile, "-wal");
    let wal_bytes = fs::metadata(&wal).map_or(0, |m| m.len());
    if !datafile.exists() {
        return Ok(Inspected {
            state: State::New(NewDatabase::Missing),
            wal_bytes,
            copy,
        });
    }
    let main_bytes = copy_private(datafile, &copy)?;
    if wal_bytes > 0 {
        copy_private(&wal, &sidecar(&copy, "-wal"))?;
    }
    if main_bytes == 0 && wal_bytes == 0 {
        return Ok(Inspected {
            state: State::New(NewDatabase::Empty),
            wal_bytes,
            copy,
        });
    }
    let state = read_state(&copy, environment, data_version)
        .map_err(|err| cannot_be_used(datafile, &err))?;
    Ok(Inspected {
        state,
        wal_bytes,
        copy,
    })
}

/// `path` with `suffix` appended to its file name (`.testmondata-wal`).
fn sidecar(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// Copies `from` to a new private file `to`; returns the bytes copied.
fn copy_private(from: &Path, to: &Path) -> Result<u64> {
    let mut source = fs::File::open(from).with_context(|| format!("reading {}", from.display()))?;
    let mut dest = private_file(to).with_context(|| format!("writing {}", to.display()))?;
    std::io::copy(&mut source, &mut dest).with_context(|| format!("copying {}", from.display()))
}

fn read_state(copy: &Path, environment: &str, data_version: i64) -> rusqlite::Result<State> {
    let conn = Connection::open_with_flags(
        copy,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    let stored: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if stored != data_version {
        return Ok(State::New(NewDatabase::OtherVersion(stored)));
    }
    let mut stmt = conn.prepare(
        "SELECT id, system_packages, python_version FROM environment
         WHERE environment_name = ? ORDER BY id DESC",
    )?;
    let rows: Vec<(i64, EnvironmentRow)> = stmt
        .query_map([environment], |r| {
            Ok((
                r.get(0)?,
                EnvironmentRow {
                    packages: r.get(1)?,
                    python: r.get(2)?,
                },
            ))
        })?
        .collect::<rusqlite::Result<_>>()?;
    let Some((_, latest)) = rows.first().cloned() else {
        let mut stmt =
            conn.prepare("SELECT DISTINCT environment_name FROM environment ORDER BY 1")?;
        let others = stmt
            .query_map([], |r| r.get::<_, Option<String>>(0))?
            .filter_map(Result::transpose)
            .collect::<rusqlite::Result<_>>()?;
        return Ok(State::NoEnvironment { others });
    };
    Ok(State::Environment {
        row: latest,
        ids: rows.iter().map(|(id, _)| *id).collect(),
    })
}

fn cannot_be_used(path: &Path, err: &rusqlite::Error) -> anyhow::Error {
    Fatal::Usage(format!("datafile {} cannot be used: {err}", path.display())).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn make(path: &Path, version: i64, envs: &[(&str, &str, &str)]) {
        let conn = Connection::open(path).unwrap();
        conn.execute_batch(crate::db::schema_sql(version).unwrap())
            .unwrap();
        conn.execute_batch(&format!("PRAGMA user_version = {version}"))
            .unwrap();
        for (name, packages, python) in envs {
            conn.execute(
                "INSERT INTO environment (environment_name, system_packages, python_version)
                 VALUES (?, ?, ?)",
                [name, packages, python],
            )
            .unwrap();
        }
    }

    fn state(path: &Path, environment: &str) -> Result<State> {
        let run_dir = RunDir::create(false).unwrap();
        inspect(path, environment, 14, &run_dir).map(|i| i.state)
    }

    #[test]
    fn new_database_reasons() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(".testmondata");
        assert_eq!(
            state(&path, "default").unwrap(),
            State::New(NewDatabase::Missing)
        );
        fs::write(&path, "").unwrap();
        assert_eq!(
            state(&path, "default").unwrap(),
            State::New(NewDatabase::Empty)
        );
        fs::remove_file(&path).unwrap();
        make(&path, 13, &[]);
        assert_eq!(
            state(&path, "default").unwrap(),
            State::New(NewDatabase::OtherVersion(13))
        );
    }

    #[test]
    fn environment_rows() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(".testmondata");
        make(
            &path,
            14,
            &[
                ("default", "a 1.0", "3.11.7"),
                ("default", "a 2.0", "3.11.7"),
            ],
        );
        let before = fs::read(&path).unwrap();
        match state(&path, "default").unwrap() {
            State::Environment { row, ids } => {
                assert_eq!(row.packages.as_deref(), Some("a 2.0"));
                assert_eq!(ids, vec![2, 1]);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            state(&path, "py312").unwrap(),
            State::NoEnvironment {
                others: vec!["default".into()]
            }
        );
        assert_eq!(
            fs::read(&path).unwrap(),
            before,
            "the datafile is only read"
        );
        let mut left: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        left.sort();
        assert_eq!(left, vec![std::ffi::OsString::from(".testmondata")]);
    }

    #[test]
    fn not_sqlite_and_bad_paths_are_usage_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(".testmondata");
        fs::write(&path, "not a database at all").unwrap();
        for bad in [
            path.clone(),
            dir.path().to_path_buf(),
            dir.path().join("missing/.testmondata"),
        ] {
            let err = state(&bad, "default").err().unwrap();
            assert_eq!(
                crate::exit::code_of(&err),
                crate::exit::USAGE_ERROR,
                "{bad:?}"
            );
        }
        assert_eq!(fs::read_to_string(&path).unwrap(), "not a database at all");
    }
}
