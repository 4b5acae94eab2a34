//! Defaults from `[tool.testmon-run]` in the nearest pyproject.toml.
//!
//! ```toml
//! [tool.testmon-run]
//! numprocesses = 4          # or "auto"; alias: n
//! dist = "loadscope"        # load, loadscope or loadfile
//! progress = false
//! json-report = "build/testmon-run.json"   # relative to this file's directory
//! shard = "auto"            # CI's parallel jobs (--shard)
//! ```
//!
//! Unknown keys are errors: a typo must not be silently ignored.

use std::path::{Path, PathBuf};

use toml::{Table, Value};

use crate::shard::ShardSpec;

/// The table's name under `[tool]`.
const TABLE: &str = "testmon-run";
/// The accepted keys, for error messages.
const KEYS: &str = "numprocesses (or n), dist, progress, json-report, shard";
/// The accepted `dist` modes.
const DISTS: [&str; 3] = ["load", "loadscope", "loadfile"];

/// What `[tool.testmon-run]` sets; `None` for what it leaves to the command line's defaults.
#[derive(Debug, Default, Clone, PartialEq)]
pub(crate) struct FileDefaults {
    /// "auto" or a number, as given.
    pub(crate) numprocesses: Option<String>,
    /// load, loadscope or loadfile.
    pub(crate) dist: Option<String>,
    pub(crate) progress: Option<bool>,
    /// Resolved relative to the pyproject.toml's directory.
    pub(crate) json_report: Option<PathBuf>,
    /// "auto" or "K/M".
    pub(crate) shard: Option<ShardSpec>,
    /// The file read, when it has the table.
    pub(crate) source: Option<PathBuf>,
}

/// Why the defaults could not be read. Each displays as one line naming the file.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ConfigError {
    #[error("{}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: invalid TOML at line {line}, column {column}: {message}", path.display())]
    Syntax {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("{}: [tool.{TABLE}] must be a table, got {got}", path.display())]
    NotATable { path: PathBuf, got: String },
    #[error("{}: [tool.{TABLE}] unknown key {key:?}{hint} (known: {KEYS})", path.display())]
    UnknownKey {
        path: PathBuf,
        key: String,
        hint: String,
    },
    #[error("{}: [tool.{TABLE}] {key}: {problem}", path.display())]
    Value {
        path: PathBuf,
        key: String,
        problem: String,
    },
}

/// Finds the nearest pyproject.toml from `start` upwards (stop at the first one found, whether or not it has the table) and reads `[tool.testmon-run]`.
pub(crate) fn load(start: &Path) -> Result<FileDefaults, ConfigError> {
    let start = if start.is_absolute() {
        start.to_path_buf()
    } else {
        std::env::current_dir()
            .map_err(|source| ConfigError::Read {
                path: start.to_path_buf(),
                source,
            })?
            .join(start)
    };
    let Some(path) = start
        .ancestors()
        .map(|dir| dir.join("pyproject.toml"))
        .find(|candidate| candidate.is_file())
    else {
        return Ok(FileDefaults::default());
    };
    let text = std::fs::read_to_string(&path).map_err(|source| ConfigError::Read {
        path: path.clone(),
        source,
    })?;
    parse(&path, &text)
}

/// Reads `[tool.testmon-run]` from the text of the pyproject.toml at `path`.
fn parse(path: &Path, text: &str) -> Result<FileDefaults, ConfigError> {
    let document: Table = toml::from_str(text).map_err(|err| syntax_error(path, text, &err))?;
    let Some(table) = document
        .get("tool")
        .and_then(Value::as_table)
        .and_then(|tool| tool.get(TABLE))
    else {
        return Ok(FileDefaults::default());
    };
    let table = table.as_table().ok_or_else(|| ConfigError::NotATable {
        path: path.to_path_buf(),
        got: describe(table),
    })?;
    let value_error = |key: &str, problem: String| ConfigError::Value {
        path: path.to_path_buf(),
        key: key.to_owned(),
        problem,
    };
    let dir = path.parent().unwrap_or(Path::new(""));
    let mut defaults = FileDefaults {
        source: Some(path.to_path_buf()),
        ..FileDefaults::default()
    };
    for (key, value) in table {
        match key.as_str() {
            "numprocesses" | "n" => {
                if defaults.numprocesses.is_some() {
                    return Err(value_error(key, "numprocesses and n both given".into()));
                }
                defaults.numprocesses = Some(numprocesses(value).ok_or_else(|| {
                    value_error(
                        key,
                        format!("expected a number or \"auto\", got {}", describe(value)),
                    )
                })?);
            }
            "dist" => {
                let dist = value
                    .as_str()
                    .filter(|d| DISTS.contains(d))
                    .ok_or_else(|| {
                        value_error(
                            key,
                            format!(
                                "expected one of {}, got {}",
                                DISTS.join(", "),
                                describe(value)
                            ),
                        )
                    })?;
                defaults.dist = Some(dist.to_owned());
            }
            "progress" => {
                let progress = value.as_bool().ok_or_else(|| {
                    value_error(
                        key,
                        format!("expected true or false, got {}", describe(value)),
                    )
                })?;
                defaults.progress = Some(progress);
            }
            "json-report" => {
                let report = value.as_str().filter(|p| !p.is_empty()).ok_or_else(|| {
                    value_error(key, format!("expected a path, got {}", describe(value)))
                })?;
                defaults.json_report = Some(dir.join(report));
            }
            "shard" => {
                let text = value.as_str().unwrap_or_default();
                let spec = ShardSpec::parse(text).map_err(|_| {
                    value_error(
                        key,
                        format!("expected \"auto\" or \"K/M\", got {}", describe(value)),
                    )
                })?;
                defaults.shard = Some(spec);
            }
            _ => {
                let hint = match key.replace('_', "-").as_str() {
                    "json-report" => " (did you mean \"json-report\"?)".to_owned(),
                    _ => String::new(),
                };
                return Err(ConfigError::UnknownKey {
                    path: path.to_path_buf(),
                    key: key.clone(),
                    hint,
                });
            }
        }
    }
    Ok(defaults)
}

/// `numprocesses` as given: "auto", or a number >= 0 (written as an integer or a string).
fn numprocesses(value: &Value) -> Option<String> {
    match value {
        Value::Integer(n) if *n >= 0 => Some(n.to_string()),
        Value::String(s) if s == "auto" => Some(s.clone()),
        Value::String(s) if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) => {
            Some(s.clone())
        }
        _ => None,
    }
}

/// A value as it is written in TOML, or its kind when that takes more than a line.
fn describe(value: &Value) -> String {
    match value {
        Value::Array(_) => "an array".to_owned(),
        Value::Table(_) => "a table".to_owned(),
        other => other.to_string(),
    }
}

/// toml's error as one line: where (line and column, from its span) and its message.
fn syntax_error(path: &Path, text: &str, err: &toml::de::Error) -> ConfigError {
    let offset = err.span().map_or(0, |span| span.start.min(text.len()));
    let before = text.get(..offset).unwrap_or("");
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().unwrap_or("").chars().count() + 1;
    let message = err
        .message()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    ConfigError::Syntax {
        path: path.to_path_buf(),
        line,
        column,
        message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A temp dir with `text` as its pyproject.toml, and that file's path.
    fn project(text: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pyproject.toml");
        std::fs::write(&path, text).unwrap();
        (dir, path)
    }

    fn error(text: &str) -> String {
        let (dir, path) = project(text);
        let err = load(dir.path()).unwrap_err().to_string();
        assert!(!err.contains('\n'), "one line: {err}");
        assert!(
            err.starts_with(&format!("{}: ", path.display())),
            "names the file: {err}"
        );
        err[path.display().to_string().len() + 2..].to_owned()
    }

    #[test]
    fn reads_every_key() {
        let (dir, path) = project(
            "[project]\nname = \"x\"\n\n[tool.testmon-run]\nnumprocesses = 4\n\
             dist = \"loadfile\"\nprogress = false\njson-report = \"out/run.json\"\nshard = \"2/3\"\n",
        );
        let got = load(dir.path()).unwrap();
        assert_eq!(
            got,
            FileDefaults {
                numprocesses: Some("4".into()),
                dist: Some("loadfile".into()),
                progress: Some(false),
                json_report: Some(dir.path().join("out/run.json")),
                shard: ShardSpec::parse("2/3").ok(),
                source: Some(path),
            }
        );
    }

    #[test]
    fn finds_the_file_from_a_subdirectory_and_resolves_paths_from_its_directory() {
        let (dir, path) = project("[tool.testmon-run]\nn = \"auto\"\njson-report = \"r.json\"\n");
        let deep = dir.path().join("tests/sub");
        std::fs::create_dir_all(&deep).unwrap();
        let got = load(&deep).unwrap();
        assert_eq!(got.numprocesses.as_deref(), Some("auto"));
        assert_eq!(got.json_report, Some(dir.path().join("r.json")));
        assert_eq!(got.source, Some(path));
    }

    #[test]
    fn an_absolute_json_report_stays_absolute() {
        let (dir, _) = project("[tool.testmon-run]\njson-report = \"/var/r.json\"\n");
        let got = load(dir.path()).unwrap();
        assert_eq!(got.json_report, Some(PathBuf::from("/var/r.json")));
    }

    #[test]
    fn the_nearest_file_wins_even_without_the_table() {
        let (dir, _) = project("[tool.testmon-run]\nnumprocesses = 2\n");
        let sub = dir.path().join("sub");
        std::fs::create_dir(&sub).unwrap();
        std::fs::write(
            sub.join("pyproject.toml"),
            "[tool.black]\nline-length = 100\n",
        )
        .unwrap();
        assert_eq!(load(&sub.join("x")).unwrap(), FileDefaults::default());
        assert_eq!(load(&sub).unwrap(), FileDefaults::default());
    }

    #[test]
    fn an_empty_table_has_a_source_and_nothing_else() {
        let (dir, path) = project("[tool.testmon-run]\n");
        let want = FileDefaults {
            source: Some(path),
            ..FileDefaults::default()
        };
        assert_eq!(load(dir.path()).unwrap(), want);
    }

    #[test]
    fn no_file_anywhere_gives_the_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let got = load(&dir.path().join("a/b")).unwrap();
        let above = dir
            .path()
            .ancestors()
            .any(|d| d.join("pyproject.toml").is_file());
        if above {
            // Some directory above the temp dir has one: at least it is not ours.
            assert!(!got.source.is_some_and(|s| s.starts_with(dir.path())));
        } else {
            assert_eq!(got, FileDefaults::default());
        }
    }

    #[test]
    fn bad_numprocesses() {
        let expected = |got: &str| {
            format!("[tool.testmon-run] numprocesses: expected a number or \"auto\", got {got}")
        };
        assert_eq!(
            error("[tool.testmon-run]\nnumprocesses = true\n"),
            expected("true")
        );
        assert_eq!(
            error("[tool.testmon-run]\nnumprocesses = -1\n"),
            expected("-1")
        );
        assert_eq!(
            error("[tool.testmon-run]\nnumprocesses = 1.5\n"),
            expected("1.5")
        );
        assert_eq!(
            error("[tool.testmon-run]\nnumprocesses = \"many\"\n"),
            expected("\"many\"")
        );
        assert_eq!(
            error("[tool.testmon-run]\nnumprocesses = [1]\n"),
            expected("an array")
        );
        assert_eq!(
            error("[tool.testmon-run]\nn = true\n"),
            "[tool.testmon-run] n: expected a number or \"auto\", got true"
        );
        let (dir, _) = project("[tool.testmon-run]\nnumprocesses = \"3\"\n");
        assert_eq!(load(dir.path()).unwrap().numprocesses.as_deref(), Some("3"));
    }

    #[test]
    fn numprocesses_and_n_together_are_an_error() {
        let err = error("[tool.testmon-run]\nnumprocesses = 2\nn = 3\n");
        assert!(err.contains("numprocesses and n both given"), "{err}");
    }

    #[test]
    fn bad_dist_progress_and_json_report() {
        assert_eq!(
            error("[tool.testmon-run]\ndist = \"each\"\n"),
            "[tool.testmon-run] dist: expected one of load, loadscope, loadfile, got \"each\""
        );
        assert_eq!(
            error("[tool.testmon-run]\nprogress = \"yes\"\n"),
            "[tool.testmon-run] progress: expected true or false, got \"yes\""
        );
        assert_eq!(
            error("[tool.testmon-run]\njson-report = 3\n"),
            "[tool.testmon-run] json-report: expected a path, got 3"
        );
        assert_eq!(
            error("[tool.testmon-run]\njson-report = \"\"\n"),
            "[tool.testmon-run] json-report: expected a path, got \"\""
        );
    }

    #[test]
    fn unknown_keys_are_errors() {
        let err = error("[tool.testmon-run]\nnumprocess = 2\n");
        assert!(err.contains("unknown key \"numprocess\""), "{err}");
        let err = error("[tool.testmon-run]\njson_report = \"r.json\"\n");
        assert!(err.contains("did you mean \"json-report\"?"), "{err}");
    }

    #[test]
    fn the_table_must_be_a_table() {
        assert_eq!(
            error("[tool]\ntestmon-run = 3\n"),
            "[tool.testmon-run] must be a table, got 3"
        );
    }

    #[test]
    fn a_toml_syntax_error_is_one_line_with_its_place() {
        let err = error("[project]\nname = \"x\"\n[tool.testmon-run\nn = 1\n");
        assert!(err.starts_with("invalid TOML at line 3, column "), "{err}");
        let err = error("[tool.testmon-run]\nn = \n");
        assert!(err.starts_with("invalid TOML at line 2, column "), "{err}");
    }

    #[test]
    fn an_unreadable_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pyproject.toml");
        std::fs::write(&path, b"[tool.testmon-run]\nn = \"\xff\"\n").unwrap();
        let err = load(dir.path()).unwrap_err();
        assert!(matches!(
            err,
            ConfigError::Read { .. } | ConfigError::Syntax { .. }
        ));
        assert!(err.to_string().starts_with(&path.display().to_string()));
    }
}
