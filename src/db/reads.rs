//! What the supervisor reads from testmon's data before a run.

use std::collections::HashMap;

use anyhow::Result;
use rusqlite::Connection;

/// testmon's recorded duration of every test of the environment that has one.
pub fn durations(conn: &Connection, env_id: i64) -> Result<HashMap<String, f64>> {
    let mut stmt = conn.prepare(
        "SELECT test_name, duration FROM test_execution
         WHERE environment_id = ? AND duration IS NOT NULL",
    )?;
    let rows = stmt.query_map([env_id], |r| {
        Ok((r.get::<_, String>(0)?, r.get::<_, f64>(1)?))
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}
