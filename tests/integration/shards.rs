//! CI's parallel jobs, played locally: M shard checkouts (separate directories, separate
//! processes) start from one base datafile, each runs `testmon-run --shard K/M`, then
//! `testmon-run merge` makes one datafile of theirs. After every step of parity.rs's
//! sequence of edits: the shards together ran exactly what single-process `pytest --testmon`
//! ran, no test on two shards, and the merged datafile holds the single process's records
//! (the next step's selection, compared at every step, follows from it).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use crate::parity::STEPS;
use crate::support::*;

/// `testmon-run merge ARGS` in `cwd`.
fn merge(cwd: &Path, args: &[&Path]) -> Run {
    let mut cmd = Cmd::new(BIN, cwd);
    cmd.arg("merge")
        .arg("--into")
        .args(args.iter().map(|p| p.as_os_str()));
    cmd.run_plain()
}

/// pytest's precedence over the shards' exit codes (every shard may have had nothing to do).
fn combined(codes: &[i32]) -> i32 {
    [4, 3, 2, 1, 0]
        .into_iter()
        .find(|c| codes.contains(c))
        .unwrap_or(0)
}

/// One CI pipeline per step: restore the base into each shard's checkout, run the shards,
/// merge into the base.
fn shard_flow(venv: Venv, shards: usize) {
    let single = Project::copy("proj");
    let checkouts: Vec<Project> = (0..shards).map(|_| Project::copy("proj")).collect();
    let cache = fresh_tmpdir();
    let base = cache.path().join(".testmondata");
    for (step_name, edit) in STEPS {
        edit(&single);
        for checkout in &checkouts {
            edit(checkout);
        }
        settle();
        let step = format!("{venv:?} {shards} shards: {step_name}");
        let mut runs = Vec::new();
        for (k, checkout) in checkouts.iter().enumerate() {
            let _ = std::fs::remove_file(checkout.datafile());
            if base.exists() {
                std::fs::copy(&base, checkout.datafile()).unwrap();
            }
            let shard = format!("{}/{shards}", k + 1);
            let run = checkout
                .testmon_run(venv, &["-n", "2", "--shard", &shard], &[])
                .run();
            assert!(
                run.output().contains(&format!("shard {shard}: ")),
                "{step}: no shard line\n{}",
                run.output()
            );
            runs.push(run);
        }
        let theirs = single.pytest(venv, &[]).run();
        // Each selected test ran on exactly one shard, and together they ran the selection.
        let mut union = BTreeSet::new();
        for (k, run) in runs.iter().enumerate() {
            for test in &run.ran {
                assert!(
                    union.insert(test.clone()),
                    "{step}: {test} ran on two shards (again on {})",
                    k + 1
                );
            }
        }
        assert_eq!(
            union,
            theirs.ran,
            "{step}: the shards together ran other tests than one process\n{}",
            theirs.output()
        );
        let codes: Vec<i32> = runs.iter().map(Run::code).collect();
        assert_eq!(
            combined(&codes),
            theirs.code(),
            "{step}: exit codes {codes:?}\n{}",
            theirs.output()
        );
        for (k, checkout) in checkouts.iter().enumerate() {
            // One self-contained file, without the checkout's path in it.
            assert!(
                !checkout.path(".testmondata-wal").exists(),
                "{step}: -wal left"
            );
            let bytes = std::fs::read(checkout.datafile()).unwrap();
            let root = checkout.root.to_string_lossy().into_owned();
            assert!(
                !bytes.windows(root.len()).any(|w| w == root.as_bytes()),
                "{step}: shard {} datafile holds its checkout's path {root}",
                k + 1
            );
        }
        // The merge job: the base restored, the shards' datafiles downloaded.
        let downloads = fresh_tmpdir();
        let files: Vec<PathBuf> = checkouts
            .iter()
            .enumerate()
            .map(|(k, checkout)| {
                let dir = downloads.path().join(format!("shard-{}", k + 1));
                std::fs::create_dir(&dir).unwrap();
                let file = dir.join(".testmondata");
                std::fs::copy(checkout.datafile(), &file).unwrap();
                file
            })
            .collect();
        let mut args: Vec<&Path> = vec![&base];
        args.extend(files.iter().map(PathBuf::as_path));
        let merged = merge(cache.path(), &args);
        assert_eq!(merged.code(), 0, "{step}: merge\n{}", merged.output());
        assert!(!cache.path().join(".testmondata-wal").exists(), "{step}");
        let leftovers: Vec<String> = std::fs::read_dir(cache.path())
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n != ".testmondata")
            .collect();
        assert!(leftovers.is_empty(), "{step}: merge left {leftovers:?}");
        // Within a shard, each module and class runs on one worker in testmon's order; only
        // session-scoped fixtures may land on another test (DESIGN.md).
        assert_same_records_with(
            &dump(&base),
            &dump(&single.datafile()),
            &step,
            Scopes::ScopesKept,
        );
        // Merging a shard again changes nothing.
        let before = dump(&base);
        let again = merge(cache.path(), &[&base, &files[shards - 1]]);
        assert_eq!(again.code(), 0, "{step}: merge again\n{}", again.output());
        let after = dump(&base);
        let changed: Vec<(&String, Option<&TestRecord>, Option<&TestRecord>)> = before
            .iter()
            .flat_map(|(env, tests)| tests.iter().map(move |(t, r)| (env, t, r)))
            .filter(|(env, t, r)| after.get(*env).and_then(|a| a.get(*t)) != Some(*r))
            .map(|(env, t, r)| (t, Some(r), after.get(env).and_then(|a| a.get(t))))
            .collect();
        assert!(
            changed.is_empty() && before.len() == after.len(),
            "{step}: merging a shard twice changed the datafile: {changed:#?}"
        );
    }
}

#[test]
fn three_shards_merge_to_what_one_machine_leaves() {
    shard_flow(Venv::Testmon22, 3);
}

#[test]
fn two_shards_with_testmon21() {
    shard_flow(Venv::Testmon21, 2);
}
