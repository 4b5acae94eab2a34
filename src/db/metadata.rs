//! testmon's `metadata` table: one text (JSON) value per `dataid`.

use anyhow::Result;
use rusqlite::{params, Connection, OptionalExtension, ToSql};

/// The value stored under `dataid`, if any.
pub(crate) fn get(conn: &Connection, dataid: &str) -> Result<Option<String>> {
    Ok(conn
        .query_row(
            "SELECT data FROM metadata WHERE dataid = ?",
            [dataid],
            |r| r.get(0),
        )
        .optional()?)
}

/// Stores `value` under `dataid`, replacing what was there.
pub(crate) fn set(conn: &Connection, dataid: &str, value: &dyn ToSql) -> Result<()> {
    conn.execute(
        "INSERT OR REPLACE INTO metadata VALUES (?, ?)",
        params![dataid, value],
    )?;
    Ok(())
}
