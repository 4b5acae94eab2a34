//! What a single testmon process does around the run, done once by the supervisor:
//! the end-of-collection sync, the saving statistics, the vacuum of unused fingerprints
//! and the survey date its report header records.

use std::collections::HashSet;

use anyhow::Result;
use rusqlite::types::Value;
use rusqlite::{params, Connection, TransactionBehavior};

use super::home_file;
use super::merge::FileFpRows;
use super::metadata;

/// testmon's `sync_db_fs_tests`: tests that no longer exist are forgotten; tests of the run
/// without a record get a placeholder ("0match") so that they are selected until they ran.
/// `collected` is what the worker's testmon computed: its collection plus its stable tests.
/// Unlike single-process testmon, a test that is not in `run_list` (deselected by `-k`,
/// `-m`, `--deselect`) gets no row, as under xdist: it never ran, and a test without a row
/// is selected as new whenever it is collected again, so the selection is the same, and
/// every later run does not read and sync a row per deselected test.
/// Returns the tests forgotten.
pub(crate) fn sync_tests(
    conn: &mut Connection,
    env_id: i64,
    collected: &[String],
    run_list: &[String],
    placeholder: &[u8],
) -> Result<Vec<String>> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let known: HashSet<String> = {
        let mut stmt =
            tx.prepare("SELECT test_name FROM test_execution WHERE environment_id = ?")?;
        let rows = stmt.query_map([env_id], |r| r.get(0))?;
        rows.collect::<rusqlite::Result<_>>()?
    };
    let collected_set: HashSet<&str> = collected.iter().map(String::as_str).collect();
    let will_run: HashSet<&str> = run_list.iter().map(String::as_str).collect();
    {
        let mut insert_test = tx.prepare(
            "INSERT INTO test_execution (environment_id, test_name, duration, failed, forced)
             VALUES (?, ?, NULL, 0, NULL)",
        )?;
        let mut link = tx.prepare("INSERT INTO test_execution_file_fp VALUES (?, ?)")?;
        let mut file_fps = FileFpRows::new(&tx, 0)?;
        let mut added: Vec<&str> = collected
            .iter()
            .map(String::as_str)
            .filter(|name| {
                !known.contains(*name)
                    && will_run.contains(*name)
                    && home_file(name).ends_with(".py")
            })
            .collect();
        added.sort_unstable();
        added.dedup();
        for name in added {
            insert_test.execute(params![env_id, name])?;
            let te_id = tx.last_insert_rowid();
            let placeholder_fp = (home_file(name).to_string(), None, placeholder.to_vec());
            let fp_id = file_fps.for_test(&placeholder_fp, None, false)?;
            link.execute(params![te_id, fp_id])?;
        }
    }
    let mut dropped: Vec<String> = known
        .iter()
        .filter(|name| !collected_set.contains(name.as_str()))
        .cloned()
        .collect();
    dropped.sort_unstable();
    super::extract::forget(&tx, env_id, &dropped)?;
    tx.commit()?;
    Ok(dropped)
}

/// Marks tests as failed, so that testmon selects them again next time (a test whose worker
/// crashed or timed out while running it: its record, if any, would say it passed).
pub(crate) fn mark_failed(conn: &mut Connection, env_id: i64, tests: &[String]) -> Result<()> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    {
        let mut update = tx.prepare(
            "UPDATE test_execution SET failed = 1 WHERE environment_id = ? AND test_name = ?",
        )?;
        for test in tests {
            update.execute(params![env_id, test])?;
        }
    }
    tx.commit()?;
    Ok(())
}

/// testmon's `finish_execution`: the saving statistics, then the vacuum of fingerprints no
/// test refers to.
pub(crate) fn finish_execution(conn: &mut Connection, env_id: i64, select: bool) -> Result<()> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let (saved_tests, saved_time): (i64, Option<f64>) = tx.query_row(
        "SELECT count(*), sum(duration) FROM test_execution
         WHERE forced IS NOT 0 AND environment_id = ?",
        [env_id],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    let (all_tests, all_time): (i64, Option<f64>) = tx.query_row(
        "SELECT count(*), sum(duration) FROM test_execution WHERE environment_id = ?",
        [env_id],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    let prefix = if select { "" } else { "potential_" };
    for (attribute, value) in [
        ("time_saved", saved_time.map(Value::Real)),
        ("time_all", all_time.map(Value::Real)),
        ("tests_saved", Some(Value::Integer(saved_tests))),
        ("tests_all", Some(Value::Integer(all_tests))),
    ] {
        increment_attribute(&tx, &format!("None:{prefix}{attribute}"), value)?;
    }
    super::vacuum_fingerprints(&tx)?;
    tx.commit()?;
    Ok(())
}

/// testmon's `increment_attributes`: the stored number plus this one, None and zero ignored.
fn increment_attribute(conn: &Connection, dataid: &str, value: Option<Value>) -> Result<()> {
    let old = metadata::get(conn, dataid)?;
    let old = match old
        .as_deref()
        .map(serde_json::from_str::<serde_json::Value>)
    {
        Some(Ok(serde_json::Value::Number(n))) => {
            if let Some(i) = n.as_i64() {
                Some(Value::Integer(i))
            } else {
                n.as_f64().map(Value::Real)
            }
        }
        _ => None,
    };
    let sum = [old, value]
        .into_iter()
        .flatten()
        .fold(Value::Integer(0), |acc, v| match (acc, v) {
            (Value::Integer(a), Value::Integer(b)) => Value::Integer(a + b),
            (Value::Integer(a), Value::Real(b)) | (Value::Real(b), Value::Integer(a)) => {
                if b == 0.0 {
                    Value::Integer(a)
                } else {
                    Value::Real(a as f64 + b)
                }
            }
            (Value::Real(a), Value::Real(b)) => Value::Real(a + b),
            (acc, _) => acc,
        });
    metadata::set(conn, dataid, &sum)
}

/// What testmon's report header writes: today's date as the last survey notification,
/// when none is recorded or the recorded one is 28 days old or more.
pub(crate) fn touch_survey_date(conn: &Connection, today_days: i64) -> Result<()> {
    const DATAID: &str = "None:last_survey_notification_date";
    let stored = metadata::get(conn, DATAID)?;
    let stale = match stored
        .as_deref()
        .and_then(|s| serde_json::from_str::<String>(s).ok())
    {
        Some(date) => parse_iso_date(&date).is_none_or(|days| today_days - days >= 28),
        None => true,
    };
    if stale {
        let value = serde_json::to_string(&iso_date(today_days))?;
        metadata::set(conn, DATAID, &value)?;
    }
    Ok(())
}

/// Days since 1970-01-01 → "YYYY-MM-DD" (proleptic Gregorian, Howard Hinnant's algorithm).
pub(crate) fn iso_date(days: i64) -> String {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}")
}

fn parse_iso_date(text: &str) -> Option<i64> {
    let mut parts = text.split('-').map(|p| p.parse::<i64>().ok());
    let (y, m, d) = (parts.next()??, parts.next()??, parts.next()??);
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    Some(era * 146_097 + doe - 719_468)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_round_trip() {
        assert_eq!(iso_date(0), "1970-01-01");
        assert_eq!(iso_date(20_417), "2025-11-25");
        for days in [-1000, 0, 59, 60, 365, 11_016, 20_417, 30_000] {
            assert_eq!(parse_iso_date(&iso_date(days)), Some(days));
        }
    }
}
