//! testmon's database as testmon-run leaves it: the installed testmon's exact schema, its
//! environment rules when packages or the data version change, its saving statistics.

use rusqlite::Connection;

use crate::support::*;

fn schema(datafile: &std::path::Path) -> (i64, Vec<(String, String, Option<String>)>) {
    let conn = Connection::open(datafile).unwrap();
    let version = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    let mut stmt = conn
        .prepare("SELECT type, name, sql FROM sqlite_master ORDER BY type, name")
        .unwrap();
    let rows = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap();
    (version, rows.map(Result::unwrap).collect())
}

fn environments(datafile: &std::path::Path) -> Vec<(String, String, String)> {
    let conn = Connection::open(datafile).unwrap();
    let mut stmt = conn
        .prepare(
            "SELECT environment_name, system_packages, python_version FROM environment ORDER BY id",
        )
        .unwrap();
    let rows = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap();
    rows.map(Result::unwrap).collect()
}

/// The saving statistics testmon keeps in `metadata`, counts only (times vary).
fn test_counts(datafile: &std::path::Path) -> Vec<(String, String)> {
    let conn = Connection::open(datafile).unwrap();
    let mut stmt = conn
        .prepare("SELECT dataid, data FROM metadata WHERE dataid LIKE '%tests%' ORDER BY dataid")
        .unwrap();
    let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?))).unwrap();
    rows.map(Result::unwrap).collect()
}

/// Runs testmon-run on one copy and single-process pytest on the other; both must agree.
fn both(parallel: &Project, single: &Project, venv: Venv, step: &str) -> Run {
    let (ours, _) = run_both(parallel, single, venv, &["-n", "2"], &[], step);
    assert_same_records(&dump(&parallel.datafile()), &dump(&single.datafile()), step);
    assert_eq!(
        environments(&parallel.datafile()),
        environments(&single.datafile()),
        "{step}"
    );
    assert_eq!(
        test_counts(&parallel.datafile()),
        test_counts(&single.datafile()),
        "{step}"
    );
    ours
}

#[test]
fn new_datafile_has_the_installed_testmons_exact_schema() {
    for (venv, data_version) in [
        (Venv::Testmon22, 14),
        (Venv::Pytest90, 14),
        (Venv::Testmon21, 13),
    ] {
        let parallel = Project::copy("isolation");
        let single = Project::copy("isolation");
        assert_eq!(
            parallel.testmon_run(venv, &["-n", "2"], &[]).run().code(),
            0
        );
        assert_eq!(single.pytest(venv, &[]).run().code(), 0);
        let ours = schema(&parallel.datafile());
        assert_eq!(ours.0, data_version);
        assert_eq!(ours, schema(&single.datafile()), "{venv:?}");
    }
}

#[test]
fn another_testmons_datafile_is_replaced_as_testmon_does() {
    let parallel = Project::copy("proj");
    let single = Project::copy("proj");
    for (step, venv) in [
        ("2.2", Venv::Testmon22),
        ("2.1 over 2.2", Venv::Testmon21),
        ("2.2 over 2.1", Venv::Testmon22),
    ] {
        let fresh = both(&parallel, &single, venv, step);
        assert_eq!(
            fresh.ran.len(),
            53,
            "{step}: a new database runs everything"
        );
        let rerun = parallel.testmon_run(venv, &["-n", "2"], &[]).run();
        assert_eq!(
            rerun.ran.len(),
            2,
            "{step}: only the failing tests run again"
        );
        single.pytest(venv, &[]).run();
    }
}

#[test]
fn changed_packages_rerun_everything_with_each_versions_environment_rule() {
    for (venv, rows_after) in [(Venv::Testmon22, 1), (Venv::Testmon21, 2)] {
        let parallel = Project::copy("proj");
        let single = Project::copy("proj");
        both(&parallel, &single, venv, "first run");
        both(&parallel, &single, venv, "second run");
        // testmon's package list leaves these out: to testmon, the packages changed.
        for project in [&parallel, &single] {
            project.edit(
                "pytest.ini",
                "testpaths = tests",
                "testpaths = tests\ntestmon_ignore_dependencies = pytest-xdist",
            );
        }
        let changed = both(&parallel, &single, venv, "packages changed");
        assert_eq!(changed.ran.len(), 53, "{venv:?}: everything runs again");
        assert_eq!(
            environments(&parallel.datafile()).len(),
            rows_after,
            "{venv:?}"
        );
        let ours = dump(&parallel.datafile());
        let newest = ours.keys().last().unwrap();
        assert_eq!(
            ours[newest].len(),
            53,
            "{venv:?}: all tests recorded in the new environment"
        );
    }
}

#[test]
fn saving_statistics_are_kept_as_testmon_keeps_them() {
    for venv in VENVS {
        let parallel = Project::copy("proj");
        let single = Project::copy("proj");
        for step in ["first", "second", "third"] {
            both(&parallel, &single, venv, step);
        }
        let counts = test_counts(&parallel.datafile());
        assert!(
            counts
                .iter()
                .any(|(k, v)| k == "None:tests_all" && v.parse::<i64>().unwrap() > 53),
            "{counts:?}"
        );
    }
}
