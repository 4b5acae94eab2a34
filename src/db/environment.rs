//! The `environment` row of this run, fetched or created as the installed testmon does in
//! `fetch_or_create_environment`, in one `BEGIN IMMEDIATE` transaction.

use anyhow::Result;
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};

/// Which testmon's rules apply when the packages or python version changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Semantics {
    /// 2.1.x (data version 13): a new row is added beside the old one.
    AddRow,
    /// 2.2.x (data version 14): the old row is replaced (its tests go with it).
    ReplaceRow,
}

impl Semantics {
    pub(crate) fn for_data_version(data_version: i64) -> Semantics {
        if data_version >= 14 {
            Semantics::ReplaceRow
        } else {
            Semantics::AddRow
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct EnvironmentRow {
    pub(crate) id: i64,
    pub(crate) packages_changed: bool,
}

pub(crate) fn fetch_or_create_environment(
    conn: &mut Connection,
    name: &str,
    packages: &str,
    python: &str,
    semantics: Semantics,
) -> Result<EnvironmentRow> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let latest: Option<(i64, Option<String>, Option<String>)> = tx
        .query_row(
            "SELECT id, system_packages, python_version FROM environment
             WHERE environment_name = ? ORDER BY id DESC",
            [name],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .optional()?;
    let insert = |tx: &rusqlite::Transaction| -> rusqlite::Result<i64> {
        tx.execute(
            "INSERT INTO environment (environment_name, system_packages, python_version)
             VALUES (?, ?, ?)",
            params![name, packages, python],
        )?;
        Ok(tx.last_insert_rowid())
    };
    let row = match latest {
        None => EnvironmentRow {
            id: insert_or_first(&tx, name, insert)?,
            packages_changed: false,
        },
        Some((id, old_packages, old_python)) => {
            let changed =
                old_packages.as_deref() != Some(packages) || old_python.as_deref() != Some(python);
            let id = match (changed, semantics) {
                (false, _) => id,
                (true, Semantics::AddRow) => insert_or_first(&tx, name, insert)?,
                (true, Semantics::ReplaceRow) => {
                    let new_id = insert(&tx)?;
                    tx.execute("DELETE FROM environment WHERE id = ?", [id])?;
                    new_id
                }
            };
            EnvironmentRow {
                id,
                packages_changed: changed,
            }
        }
    };
    // What testmon's determine_tests does first in a process that may write.
    tx.execute(
        "UPDATE test_execution SET forced = NULL WHERE environment_id = ?",
        [row.id],
    )?;
    tx.commit()?;
    Ok(row)
}

/// testmon's insert, falling back on a unique-constraint clash to the first row of that name.
fn insert_or_first(
    tx: &rusqlite::Transaction,
    name: &str,
    insert: impl Fn(&rusqlite::Transaction) -> rusqlite::Result<i64>,
) -> Result<i64> {
    match insert(tx) {
        Ok(id) => Ok(id),
        Err(rusqlite::Error::SqliteFailure(err, _))
            if err.code == rusqlite::ErrorCode::ConstraintViolation =>
        {
            Ok(tx.query_row(
                "SELECT id FROM environment WHERE environment_name = ?",
                [name],
                |r| r.get(0),
            )?)
        }
        Err(err) => Err(err.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::open_main;

    fn env_rows(conn: &Connection) -> Vec<(i64, String)> {
        let mut stmt = conn
            .prepare("SELECT id, system_packages FROM environment ORDER BY id")
            .unwrap();
        stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    }

    #[test]
    fn same_environment_is_reused() {
        let dir = tempfile::tempdir().unwrap();
        let mut conn = open_main(&dir.path().join("d"), 14).unwrap().conn;
        let mut fetch = || {
            fetch_or_create_environment(
                &mut conn,
                "default",
                "p 1.0",
                "3.11.7",
                Semantics::ReplaceRow,
            )
            .unwrap()
        };
        let (a, b) = (fetch(), fetch());
        assert_eq!(a, b);
        assert!(!a.packages_changed);
    }

    #[test]
    fn changed_packages_replace_in_v14_and_add_in_v13() {
        let dir = tempfile::tempdir().unwrap();
        for (version, semantics, rows_after) in
            [(14, Semantics::ReplaceRow, 1), (13, Semantics::AddRow, 2)]
        {
            let mut conn = open_main(&dir.path().join(format!("d{version}")), version)
                .unwrap()
                .conn;
            let a = fetch_or_create_environment(&mut conn, "default", "p 1.0", "3.11.7", semantics)
                .unwrap();
            let b = fetch_or_create_environment(&mut conn, "default", "p 2.0", "3.11.7", semantics)
                .unwrap();
            assert!(b.packages_changed);
            assert_ne!(a.id, b.id);
            assert_eq!(env_rows(&conn).len(), rows_after, "data version {version}");
            assert_eq!(
                env_rows(&conn).last().unwrap(),
                &(b.id, "p 2.0".to_string())
            );
        }
    }
}
