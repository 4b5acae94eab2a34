//! testmon's database, as the supervisor — its only writer during a run — sees it.

mod environment;
mod finish;
mod merge;
mod open;
mod reads;
mod schema;

pub use environment::{fetch_or_create_environment, EnvironmentRow, Semantics};
pub use finish::{finish_execution, mark_failed, sync_tests, touch_survey_date};
pub use merge::{merge_spools, Batches};
pub use open::{open_main, Opened};
pub use reads::{durations, reselected, tracked_files};
pub use schema::schema_sql;

/// The file part of a test name: `tests/test_x.py::T::t` → `tests/test_x.py`.
pub fn home_file(test_name: &str) -> &str {
    test_name.split("::").next().unwrap_or(test_name)
}
