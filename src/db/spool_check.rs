//! Before a spool left by a killed run is merged: is it what our workers write? A SQLite file
//! in testmon's format of this data version, intact, holding only tests of that run.

use std::collections::HashSet;
use std::path::Path;

use rusqlite::{Connection, OpenFlags};

/// Ok when the spool may be merged; otherwise why not, in a few words.
pub(crate) fn check_spool(
    path: &Path,
    data_version: i64,
    allowed: &HashSet<&str>,
) -> Result<(), String> {
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags).map_err(|e| format!("not SQLite: {e}"))?;
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(|e| format!("not SQLite: {e}"))?;
    if version != data_version {
        return Err(format!(
            "testmon data version {version}, not {data_version}"
        ));
    }
    let integrity: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .map_err(|e| format!("integrity check: {e}"))?;
    if integrity != "ok" {
        return Err(format!("integrity check: {integrity}"));
    }
    for table in [
        "environment",
        "test_execution",
        "file_fp",
        "test_execution_file_fp",
    ] {
        let found: i64 = conn
            .query_row(
                "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = ?",
                [table],
                |r| r.get(0),
            )
            .map_err(|e| e.to_string())?;
        if found == 0 {
            return Err(format!("no {table} table: not testmon's format"));
        }
    }
    let mut names = conn
        .prepare("SELECT test_name FROM test_execution")
        .map_err(|e| e.to_string())?;
    let names = names
        .query_map([], |r| r.get::<_, String>(0))
        .map_err(|e| e.to_string())?;
    for name in names {
        let name = name.map_err(|e| e.to_string())?;
        if !allowed.contains(name.as_str()) {
            return Err(format!("{name} is not a test of that run"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spool(dir: &Path, version: i64, tests: &[&str]) -> std::path::PathBuf {
        let path = dir.join("spool-gw0.db");
        let _ = std::fs::remove_file(&path);
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch(crate::db::schema_sql(14).unwrap())
            .unwrap();
        conn.execute_batch(&format!(
            "PRAGMA user_version = {version};
             INSERT INTO environment (id, environment_name) VALUES (1, 'default')"
        ))
        .unwrap();
        for t in tests {
            conn.execute(
                "INSERT INTO test_execution (environment_id, test_name, duration, failed, forced)
                 VALUES (1, ?, 0.1, 0, 0)",
                [t],
            )
            .unwrap();
        }
        path
    }

    #[test]
    fn only_a_spool_of_that_runs_tests_passes() {
        let dir = tempfile::tempdir().unwrap();
        let allowed: HashSet<&str> = ["t.py::a", "t.py::b"].into();
        let ok = spool(dir.path(), 14, &["t.py::a"]);
        assert_eq!(check_spool(&ok, 14, &allowed), Ok(()));
        let other = spool(dir.path(), 14, &["t.py::a", "t.py::evil"]);
        assert_eq!(
            check_spool(&other, 14, &allowed),
            Err("t.py::evil is not a test of that run".into())
        );
        let old = spool(dir.path(), 13, &[]);
        assert!(check_spool(&old, 14, &allowed)
            .unwrap_err()
            .contains("data version 13"));
        let garbage = dir.path().join("garbage.db");
        std::fs::write(&garbage, b"this is not a database at all, not even close").unwrap();
        assert!(check_spool(&garbage, 14, &allowed)
            .unwrap_err()
            .starts_with("not SQLite"));
        let bare = dir.path().join("bare.db");
        Connection::open(&bare)
            .unwrap()
            .execute_batch("CREATE TABLE x (y); PRAGMA user_version = 14")
            .unwrap();
        assert!(check_spool(&bare, 14, &allowed)
            .unwrap_err()
            .contains("not testmon's format"));
    }
}
