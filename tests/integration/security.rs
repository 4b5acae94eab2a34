//! Run state is private to its user, and nobody else's files reach the user's database: the
//! two-user scenario (another user plants a run directory whose spool clears a failing test:
//! in TMPDIR it is not looked at, in this user's base it is reported and left alone),
//! a base that is not private, and a stale directory of ours with a spool that is not.
//!
//! The other user is played through ownership: as root, directories are chowned to uid
//! 4000000 (a uid with no account). Not as root, that part cannot be played and says so;
//! the rest runs all the same.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use crate::support::*;

/// A uid that is not ours (no account needs to exist for it).
const OTHER_UID: u32 = 4_000_000;
const FAILING: &str = "tests/test_arith.py::test_known_failure";

/// Changes the owner of `path` and everything in it to OTHER_UID; false when not allowed.
fn give_away(path: &Path) -> bool {
    let chown = |p: &Path| std::os::unix::fs::lchown(p, Some(OTHER_UID), Some(OTHER_UID)).is_ok();
    let mut ok = chown(path);
    if path.is_dir() {
        for entry in std::fs::read_dir(path).unwrap().flatten() {
            ok &= give_away(&entry.path());
        }
    }
    ok
}

/// A copy of `from` (files only, one level of subdirectories) at `to`.
fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap().flatten() {
        let target = to.join(entry.file_name());
        if entry.path().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// A run directory as a killed run of ours leaves it, taken from a real run kept with
/// `--keep-run-dir` (moved out of the base: it is the attacker's material), with every
/// spool's failing tests marked passed.
fn forged_run_dir(project: &Project, sandbox: &Sandbox, venv: Venv) -> tempfile::TempDir {
    let run = sandbox
        .testmon_run(project, venv, &["-n", "2", "--keep-run-dir"], &[])
        .run();
    assert_eq!(run.code(), 1, "the failing test fails\n{}", run.output());
    let kept = run_dirs(sandbox.path());
    assert_eq!(kept.len(), 1, "{kept:?}");
    let kept = run_base(sandbox.path()).join(&kept[0]);
    let material = tempfile::tempdir().unwrap();
    copy_tree(&kept, material.path());
    std::fs::remove_dir_all(&kept).unwrap();
    for name in entries(material.path()) {
        if name.starts_with("spool-") {
            let conn = rusqlite::Connection::open(material.path().join(name)).unwrap();
            conn.execute("UPDATE test_execution SET failed = 0", [])
                .unwrap();
        }
    }
    material
}

fn recorded_failing(project: &Project) -> Option<i64> {
    let dump = dump(&project.datafile());
    let records = dump.values().next().expect("an environment");
    records.get(FAILING).and_then(|r| r.failed)
}

/// The two-user scenario: run directories planted by another user (the old place, right in
/// TMPDIR, and inside this user's base) are not merged; the failing test stays failing and
/// is selected again.
#[test]
fn another_users_run_directory_never_reaches_the_database() {
    for venv in VENVS {
        let what = format!("{venv:?}");
        let project = Project::copy("proj");
        let sandbox = Sandbox::fresh();
        let material = forged_run_dir(&project, &sandbox, venv);
        assert_eq!(
            recorded_failing(&project),
            Some(1),
            "{what}: recorded failing"
        );
        // Where run directories used to be, named for a pid that is not alive.
        let old_place = sandbox.path().join("testmon-run-4000000-abcdef");
        copy_tree(material.path(), &old_place);
        // In this user's base, owned by the other user (played as root).
        let base = run_base(sandbox.path());
        let planted = base.join("testmon-run-4000001-abcdef");
        copy_tree(material.path(), &planted);
        let other_owner = give_away(&planted);
        if !other_owner {
            println!("{what}: not root: the planted directory in the base stays ours");
            std::fs::remove_dir_all(&planted).unwrap();
        }
        let run = sandbox.testmon_run(&project, venv, &["-n", "2"], &[]).run();
        assert!(
            run.ran.contains(FAILING),
            "{what}: the failing test is selected again\n{}",
            run.output()
        );
        assert_eq!(run.code(), 1, "{what}\n{}", run.output());
        assert!(
            !run.stderr.contains("recovered"),
            "{what}: nothing was recovered\n{}",
            run.output()
        );
        assert_eq!(recorded_failing(&project), Some(1), "{what}: still failing");
        // The old place is not ours to judge: left alone.
        assert!(old_place.join("plan.json").exists(), "{what}: left alone");
        if other_owner {
            let line = format!(
                "testmon-run: left alone {}: owned by uid 4000000, not a run directory of this user",
                planted.display()
            );
            assert!(
                run.stderr.lines().any(|l| l == line),
                "{what}: says why it did not trust it: {line}\n{}",
                run.output()
            );
            assert!(planted.join("plan.json").exists(), "{what}: left alone");
        }
        // And the next run selects it again.
        let again = sandbox.testmon_run(&project, venv, &["-n", "2"], &[]).run();
        assert!(again.ran.contains(FAILING), "{what}\n{}", again.output());
        std::fs::remove_dir_all(&old_place).unwrap();
        if other_owner {
            std::fs::remove_dir_all(&planted).unwrap();
            std::fs::remove_dir(&base).unwrap();
        }
        sandbox.assert_clean(&what, &again.output());
    }
}

/// A stale directory of ours whose spool holds a test its run never collected (or is not a
/// database) is not merged: one line says why, and it is removed.
#[test]
fn a_spool_that_is_not_of_its_run_is_not_merged() {
    let venv = Venv::Testmon22;
    let project = Project::copy("proj");
    let sandbox = Sandbox::fresh();
    let material = forged_run_dir(&project, &sandbox, venv);
    let base = run_base(sandbox.path());
    let spool = entries(material.path())
        .into_iter()
        .find(|n| n.starts_with("spool-"))
        .unwrap();
    let conn = rusqlite::Connection::open(material.path().join(&spool)).unwrap();
    conn.execute(
        "INSERT INTO test_execution (environment_id, test_name, duration, failed, forced)
         SELECT environment_id, 'tests/test_evil.py::test_planted', 0.1, 0, 0
         FROM test_execution LIMIT 1",
        [],
    )
    .unwrap();
    drop(conn);
    let planted = base.join("testmon-run-4000002-abcdef");
    copy_tree(material.path(), &planted);
    let garbage = base.join("testmon-run-4000003-abcdef");
    copy_tree(material.path(), &garbage);
    std::fs::write(garbage.join(&spool), b"not a database, not at all, no").unwrap();
    let run = sandbox.testmon_run(&project, venv, &["-n", "2"], &[]).run();
    for (pid, why) in [
        (
            "4000002",
            "tests/test_evil.py::test_planted is not a test of that run",
        ),
        ("4000003", "not SQLite"),
    ] {
        let line = format!(
            "testmon-run: removed the run directory of an interrupted run (pid {pid}) without \
             recovering it: {spool}: {why}"
        );
        assert!(run.stderr.contains(&line), "{line}\n{}", run.output());
    }
    assert!(run.ran.contains(FAILING), "{}", run.output());
    assert!(!dump(&project.datafile())
        .values()
        .any(|records| records.contains_key("tests/test_evil.py::test_planted")));
    sandbox.assert_clean("foreign spool", &run.output());
}

/// Makes the base at its first path (the second: a directory elsewhere); false when this
/// machine does not allow it.
type MakeBase = fn(&Path, &Path) -> bool;

/// A base that is not this user's private directory (a symlink, writable by others, another
/// owner's) is a usage error in one line, exit 4: never a silent fallback; nothing is written.
#[test]
fn a_base_that_is_not_private_is_refused() {
    let venv = Venv::Testmon22;
    let elsewhere = tempfile::tempdir().unwrap();
    let cases: [(&str, MakeBase); 3] = [
        ("a symbolic link", |base, elsewhere| {
            std::os::unix::fs::symlink(elsewhere, base).is_ok()
        }),
        ("others may write in it", |base, _| {
            std::fs::create_dir(base).unwrap();
            std::fs::set_permissions(base, std::fs::Permissions::from_mode(0o777)).is_ok()
        }),
        ("owned by uid 4000000", |base, _| {
            std::fs::create_dir(base).unwrap();
            std::fs::set_permissions(base, std::fs::Permissions::from_mode(0o700)).unwrap();
            give_away(base)
        }),
    ];
    for (why, make) in cases {
        let project = Project::copy("proj");
        let sandbox = Sandbox::fresh();
        let base = run_base(sandbox.path());
        if !make(&base, elsewhere.path()) {
            println!("{why}: cannot be set up here (not root)");
            continue;
        }
        let run = sandbox.testmon_run(&project, venv, &["-n", "2"], &[]).run();
        assert_eq!(run.code(), 4, "{why}\n{}", run.output());
        let errors: Vec<&str> = run.stderr.lines().collect();
        assert_eq!(errors.len(), 1, "{why}: one line\n{}", run.output());
        assert!(
            errors[0].starts_with(&format!(
                "testmon-run: error: {} is not a private directory of this user",
                base.display()
            )) && errors[0].contains(why),
            "{why}: {}",
            errors[0]
        );
        assert!(run.ran.is_empty(), "{why}: nothing ran");
        assert!(!project.datafile().exists(), "{why}: no datafile written");
        assert!(
            entries(elsewhere.path()).is_empty(),
            "{why}: nothing written there"
        );
    }
}
