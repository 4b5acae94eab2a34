//! testmon's database, as the supervisor — its only writer during a run — sees it.

mod environment;
mod extract;
mod finish;
mod merge;
pub(crate) mod metadata;
mod open;
mod reads;
mod schema;
mod spool_check;

pub(crate) use environment::{fetch_or_create_environment, EnvironmentRow, Semantics};
pub(crate) use extract::{extract_tests, forget_tests, vacuum_fingerprints};
pub(crate) use finish::{finish_execution, mark_failed, sync_tests, touch_survey_date};
pub(crate) use merge::{merge_spools, Batches};
pub(crate) use open::{check_usable, head, open_main, SQLITE_MAGIC};
pub(crate) use reads::{durations, reselected, test_names, tracked_files};
pub(crate) use schema::schema_sql;
pub(crate) use spool_check::check_spool;

/// The file part of a test name: `tests/test_x.py::T::t` → `tests/test_x.py`.
pub(crate) fn home_file(test_name: &str) -> &str {
    test_name.split("::").next().unwrap_or(test_name)
}
