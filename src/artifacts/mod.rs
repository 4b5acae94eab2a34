//! The files a run leaves for the user besides testmon's database: the merged JUnit XML,
//! pytest's cache (`lastfailed`, `stepwise`) and the `--json-report` document.

pub(crate) mod json_report;
pub(crate) mod junit;
pub(crate) mod junit_lost;
pub(crate) mod pytest_cache;
