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

/// Runs shard `shard` of `project` (already holding its base) and returns the run.
fn run_shard(project: &Project, venv: Venv, shard: &str, pytest_args: &[&str]) -> Run {
    project
        .testmon_run(venv, &["-n", "2", "--shard", shard], pytest_args)
        .run()
}

/// Every file in `dir`, by name, with its bytes.
fn snapshot(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .filter(|e| e.path().is_file())
        .map(|e| {
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect();
    files.sort();
    files
}

/// Bad input to `merge`: a one-line error, exit 4, DEST and its directory as they were.
#[test]
fn merge_refuses_what_is_not_one_base_run() {
    let dir = fresh_tmpdir();
    let keep = |name: &str, project: &Project| {
        let path = dir.path().join(name);
        std::fs::copy(project.datafile(), &path).unwrap();
        path
    };
    // Two shards of one run on testmon 2.2.
    let p = Project::copy("proj");
    assert_eq!(run_shard(&p, Venv::Testmon22, "1/2", &[]).code(), 1);
    let one = keep("one.db", &p);
    std::fs::remove_file(p.datafile()).unwrap();
    assert_eq!(run_shard(&p, Venv::Testmon22, "2/2", &[]).code(), 1);
    let two = keep("two.db", &p);
    // Shard 2 of another base: a full run happened before it.
    let q = Project::copy("proj");
    q.pytest(Venv::Testmon22, &[]).run();
    run_shard(&q, Venv::Testmon22, "2/2", &[]);
    let other_base = keep("other-base.db", &q);
    // Shard 2 of another environment, and of testmon 2.1 (data version 13).
    let r = Project::copy("proj");
    run_shard(&r, Venv::Testmon22, "2/2", &["--testmon-env", "other"]);
    let other_env = keep("other-env.db", &r);
    let s = Project::copy("proj");
    run_shard(&s, Venv::Testmon21, "2/2", &[]);
    let other_version = keep("other-version.db", &s);
    let not_sqlite = dir.path().join("notes.txt");
    std::fs::write(&not_sqlite, "not a database\n").unwrap();
    let missing = dir.path().join("missing.db");
    // DEST: a datafile of another data version, and a path nobody may write.
    let dest_dir = fresh_tmpdir();
    let dest_13 = dest_dir.path().join("dest13.db");
    std::fs::copy(&other_version, &dest_13).unwrap();
    let unwritable = Path::new("/proc/testmon-run-merge.db");
    let dest = dest_dir.path().join(".testmondata");
    let cases: &[(&str, &Path, &[&Path], &str)] = &[
        (
            "other data version",
            &dest,
            &[&one, &other_version],
            "data versions",
        ),
        (
            "other environment",
            &dest,
            &[&one, &other_env],
            "environments",
        ),
        (
            "other base",
            &dest,
            &[&one, &other_base],
            "different datafiles",
        ),
        (
            "not SQLite",
            &dest,
            &[&one, &not_sqlite],
            "not a SQLite database",
        ),
        ("missing file", &dest, &[&one, &missing], "no such file"),
        (
            "DEST of another data version",
            &dest_13,
            &[&one, &two],
            "data version 13",
        ),
        ("DEST unwritable", unwritable, &[&one, &two], "cannot write"),
    ];
    for (what, into, inputs, says) in cases {
        let before = snapshot(dest_dir.path());
        let mut args: Vec<&Path> = vec![into];
        args.extend(inputs.iter().copied());
        let run = merge(dir.path(), &args);
        assert_eq!(run.code(), 4, "{what}\n{}", run.output());
        let lines: Vec<&str> = run.stderr.lines().collect();
        assert_eq!(lines.len(), 1, "{what}: one line\n{}", run.output());
        assert!(
            lines[0].starts_with("testmon-run: error: ") && lines[0].contains(says),
            "{what}: {}",
            lines[0]
        );
        assert!(!run.output().contains("panicked"), "{what}");
        assert_eq!(
            snapshot(dest_dir.path()),
            before,
            "{what}: DEST's directory changed"
        );
    }
    // The two shards of one run merge into a new file; again: nothing changes.
    let run = merge(dir.path(), &[&dest, &one, &two]);
    assert_eq!(run.code(), 0, "{}", run.output());
    assert!(run.stdout.contains("2 of 2 shards"), "{}", run.output());
    let merged = snapshot(dest_dir.path());
    let again = merge(dir.path(), &[&dest, &two]);
    assert_eq!(again.code(), 0, "{}", again.output());
    assert!(
        again.stderr.contains("already merged"),
        "{}",
        again.output()
    );
    assert_eq!(snapshot(dest_dir.path()), merged);
}

/// `--shard auto` takes the shard from CI's variables; a shard with nothing to do exits 0,
/// and its datafile still says which shard it was, so the merge takes it.
#[test]
fn shard_auto_and_a_shard_with_nothing_to_do() {
    let p = Project::copy("proj");
    // GitLab counts from 1, CircleCI from 0.
    for (vars, shard) in [
        ([("CI_NODE_INDEX", "2"), ("CI_NODE_TOTAL", "3")], "2/3"),
        (
            [("CIRCLE_NODE_INDEX", "0"), ("CIRCLE_NODE_TOTAL", "3")],
            "1/3",
        ),
    ] {
        let _ = std::fs::remove_file(p.datafile());
        let mut cmd = p.testmon_run(Venv::Testmon22, &["-n", "2", "--shard", "auto"], &[]);
        for (key, value) in vars {
            cmd.env(key, value);
        }
        let run = cmd.run();
        assert!(
            run.stdout.contains(&format!("shard {shard}: ")),
            "{vars:?}\n{}",
            run.output()
        );
    }
    let run = p
        .testmon_run(Venv::Testmon22, &["-n", "2", "--shard", "auto"], &[])
        .env_remove("CI_NODE_INDEX")
        .env_remove("CI_NODE_TOTAL")
        .env_remove("CIRCLE_NODE_INDEX")
        .env_remove("BUILDKITE_PARALLEL_JOB")
        .env_remove("TEST_SHARD_INDEX")
        .run();
    assert_eq!(run.code(), 4, "{}", run.output());
    assert!(
        run.stderr.contains("--shard auto: no CI shard variables"),
        "{}",
        run.output()
    );
    // Three tests selected (a file added, two failing), five shards: some have nothing to do.
    let single = Project::copy("proj");
    single.pytest(Venv::Testmon22, &[]).run();
    single.pytest(Venv::Testmon22, &[]).run();
    let test = "from calc import strings\n\n\ndef test_added():\n    assert strings.reverse(\"ab\") == \"ba\"\n";
    single.write("tests/test_added.py", test);
    let base = fresh_tmpdir();
    std::fs::copy(single.datafile(), base.path().join(".testmondata")).unwrap();
    let mut files = Vec::new();
    let mut ran = BTreeSet::new();
    let mut idle = 0;
    let downloads = fresh_tmpdir();
    for k in 1..=5 {
        let checkout = Project::copy("proj");
        checkout.write("tests/test_added.py", test);
        std::fs::copy(base.path().join(".testmondata"), checkout.datafile()).unwrap();
        let run = run_shard(&checkout, Venv::Testmon22, &format!("{k}/5"), &[]);
        ran.extend(run.ran.iter().cloned());
        if run.ran.is_empty() {
            idle += 1;
            assert_eq!(run.code(), 0, "shard {k}: nothing to do\n{}", run.output());
            assert!(
                run.stdout.contains("nothing to run here"),
                "{}",
                run.output()
            );
        }
        let file = downloads.path().join(format!("{k}.db"));
        std::fs::copy(checkout.datafile(), &file).unwrap();
        files.push(file);
    }
    let theirs = single.pytest(Venv::Testmon22, &[]).run();
    assert_eq!(ran, theirs.ran);
    // The added test and the two failing ones: at least two of five shards are idle.
    assert!(idle >= 2, "{idle} idle shards");
    let dest = base.path().join(".testmondata");
    let mut args: Vec<&Path> = vec![&dest];
    args.extend(files.iter().map(PathBuf::as_path));
    let merged = merge(base.path(), &args);
    assert_eq!(merged.code(), 0, "{}", merged.output());
    assert_same_records_with(
        &dump(&dest),
        &dump(&single.datafile()),
        "5 shards",
        Scopes::ScopesKept,
    );
}

/// `merge --json-report OUT --report R...`: one document of the shards' reports.
#[test]
fn merge_combines_the_shards_json_reports() {
    let base = fresh_tmpdir();
    let mut files = Vec::new();
    let mut reports = Vec::new();
    for k in 1..=2 {
        let checkout = Project::copy("proj");
        let report = base.path().join(format!("report-{k}.json"));
        let run = checkout
            .testmon_run(
                Venv::Testmon22,
                &[
                    "-n",
                    "2",
                    "--shard",
                    &format!("{k}/2"),
                    "--json-report",
                    report.to_str().unwrap(),
                ],
                &["-q"],
            )
            .run();
        assert_eq!(run.code(), 1, "{}", run.output());
        // Even with -q the log says which part this job ran; the other shard's tests are
        // deselected here, as pytest-split counts them.
        let shard_line = run
            .stdout
            .lines()
            .find(|l| l.starts_with(&format!("shard {k}/2: ")))
            .unwrap_or_else(|| panic!("no shard line with -q\n{}", run.output()));
        let mine: usize = shard_line["shard 1/2: ".len()..]
            .split(' ')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        assert!(
            run.summary().contains(&format!("{} deselected", 53 - mine)),
            "{}",
            run.output()
        );
        let file = base.path().join(format!("{k}.db"));
        std::fs::copy(checkout.datafile(), &file).unwrap();
        files.push(file);
        reports.push(report);
    }
    let out = base.path().join("report.json");
    let mut cmd = Cmd::new(BIN, base.path());
    cmd.args([
        "merge",
        "--into",
        ".testmondata",
        "--json-report",
        "report.json",
    ]);
    for report in &reports {
        cmd.arg("--report").arg(report);
    }
    cmd.args(&files);
    let run = cmd.run_plain();
    assert_eq!(run.code(), 0, "{}", run.output());
    let parts: Vec<serde_json::Value> = reports
        .iter()
        .map(|r| serde_json::from_str(&std::fs::read_to_string(r).unwrap()).unwrap())
        .collect();
    let merged: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    let names = |v: &serde_json::Value| -> BTreeSet<String> {
        v["tests"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["nodeid"].as_str().unwrap().to_string())
            .collect()
    };
    let union: BTreeSet<String> = parts.iter().flat_map(names).collect();
    assert_eq!(names(&merged), union);
    assert_eq!(union.len(), 53, "every test of the fixture");
    assert_eq!(merged["exit_code"], 1);
    assert_eq!(merged["selected"], 53);
    assert_eq!(
        merged["deselected"], 0,
        "testmon deselected nothing in a new database"
    );
    assert_eq!(parts[0]["shard"]["selected_all"], 53);
    assert_eq!(merged["shards"].as_array().unwrap().len(), 2);
}

/// The block under the first line containing `marker`'s next `key` line (`run: |` literal or
/// `run: >-` folded), dedented.
fn yaml_block(text: &str, marker: &str, key: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let start = lines
        .iter()
        .position(|l| l.contains(marker))
        .unwrap_or_else(|| panic!("{marker:?} not found"));
    let at = (start..lines.len())
        .find(|&i| lines[i].trim_start().starts_with(key))
        .unwrap_or_else(|| panic!("{key:?} after {marker:?}"));
    let indent = |l: &str| l.len() - l.trim_start().len();
    let base = indent(lines[at]);
    let folded = lines[at].trim_end().ends_with(">-");
    let body: Vec<&str> = lines[at + 1..]
        .iter()
        .take_while(|l| l.trim().is_empty() || indent(l) > base)
        .map(|l| l.trim())
        .collect();
    body.join(if folded { " " } else { "\n" })
}

/// The items of the `script:` list of the job starting with the line `job`, each item's
/// text (a `- |` item's block joined by newlines).
fn yaml_script(text: &str, job: &str) -> Vec<String> {
    let lines: Vec<&str> = text.lines().collect();
    let start = lines.iter().position(|l| *l == job).expect("the job");
    let at = (start..lines.len())
        .find(|&i| lines[i].trim() == "script:")
        .expect("its script");
    let indent = |l: &str| l.len() - l.trim_start().len();
    let mut items: Vec<String> = Vec::new();
    let item_indent = indent(lines[at + 1]);
    for line in &lines[at + 1..] {
        if !line.trim().is_empty() && indent(line) < item_indent {
            break;
        }
        let trimmed = line.trim();
        if trimmed.starts_with('#') {
            continue;
        }
        if indent(line) == item_indent && trimmed.starts_with("- ") {
            items.push(trimmed[2..].trim_start_matches('|').trim().to_string());
        } else if let Some(last) = items.last_mut() {
            last.push('\n');
            last.push_str(trimmed);
        }
    }
    items
}

/// `bash -c SCRIPT` in `cwd`, testmon-run and the venv's pytest first on PATH.
fn bash(cwd: &Path, script: &str, env: &[(&str, &str)]) -> Run {
    let bin = Path::new(BIN).parent().unwrap();
    let venv_bin = Venv::Testmon22.pytest().parent().unwrap().to_path_buf();
    let path = format!(
        "{}:{}:{}",
        bin.display(),
        venv_bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut cmd = Cmd::new("bash", cwd);
    cmd.arg("-c").arg(script).env("PATH", path);
    for (key, value) in env {
        cmd.env(key, *value);
    }
    cmd.run_plain()
}

/// The examples in examples/ci/ run: their shard commands and merge scripts, taken from the
/// YAML files as they are, played on shard checkouts and the artifacts' layout, twice (a new
/// database, then a function edited); the merged datafile is what one process leaves.
#[test]
fn the_ci_examples_run() {
    let github = std::fs::read_to_string(repo().join("examples/ci/github-actions.yml")).unwrap();
    let gitlab = std::fs::read_to_string(repo().join("examples/ci/gitlab-ci.yml")).unwrap();
    let gh_shard = yaml_block(&github, "- name: Run shard", "run:");
    let gh_merge = yaml_block(&github, "- name: Merge the shards", "run:");
    let gl_shard: Vec<String> = yaml_script(&gitlab, "test:")
        .into_iter()
        .filter(|item| !item.starts_with("pip install"))
        .collect();
    let gl_merge = yaml_script(&gitlab, "testmon-merge:").join("\n");
    assert!(gh_shard.starts_with("testmon-run "), "{gh_shard}");
    assert!(
        gl_shard.iter().any(|i| i.contains("--shard auto")),
        "{gl_shard:?}"
    );
    for system in ["github", "gitlab"] {
        let single = Project::copy("proj");
        let checkouts: Vec<Project> = (0..3).map(|_| Project::copy("proj")).collect();
        let merge_job = fresh_tmpdir();
        let base = merge_job.path().join(".testmondata");
        for (step, edit) in [STEPS[0], STEPS[2]] {
            edit(&single);
            single.pytest(Venv::Testmon22, &[]).run();
            let artifacts = merge_job.path().join("shards");
            let _ = std::fs::remove_dir_all(&artifacts);
            for (k, checkout) in checkouts.iter().enumerate() {
                let k = k + 1;
                edit(checkout);
                let _ = std::fs::remove_file(checkout.datafile());
                if base.exists() {
                    std::fs::copy(&base, checkout.datafile()).unwrap();
                }
                let index = k.to_string();
                let run = if system == "github" {
                    let command = gh_shard
                        .replace("${{ matrix.shard }}", &index)
                        .replace("${{ strategy.job-total }}", "3");
                    let run = bash(&checkout.root, &command, &[]);
                    // download-artifact: shards/testmon-shard-K/
                    let dir = artifacts.join(format!("testmon-shard-{k}"));
                    std::fs::create_dir_all(&dir).unwrap();
                    for file in [".testmondata", "shard-report.json"] {
                        std::fs::copy(checkout.path(file), dir.join(file)).unwrap();
                    }
                    run
                } else {
                    let script = gl_shard.join("\n");
                    let env = [("CI_NODE_INDEX", index.as_str()), ("CI_NODE_TOTAL", "3")];
                    let run = bash(&checkout.root, &script, &env);
                    // GitLab extracts every shard's artifacts (shards/K/) into one tree.
                    let from = checkout.path(&format!("shards/{k}"));
                    let dir = artifacts.join(k.to_string());
                    std::fs::create_dir_all(&dir).unwrap();
                    for file in [".testmondata", "shard-report.json"] {
                        std::fs::copy(from.join(file), dir.join(file)).unwrap();
                    }
                    std::fs::remove_dir_all(checkout.path("shards")).unwrap();
                    run
                };
                assert!(
                    run.stdout.contains(&format!("shard {k}/3: ")),
                    "{system} {step}: shard {k}\n{}",
                    run.output()
                );
            }
            let script = if system == "github" {
                &gh_merge
            } else {
                &gl_merge
            };
            let merged = bash(merge_job.path(), script, &[("GITHUB_OUTPUT", "/dev/null")]);
            assert_eq!(
                merged.code(),
                0,
                "{system} {step}: merge\n{}",
                merged.output()
            );
            assert!(
                merged.stdout.contains("3 of 3 shards"),
                "{}",
                merged.output()
            );
            let report: serde_json::Value = serde_json::from_str(
                &std::fs::read_to_string(merge_job.path().join("testmon-report.json")).unwrap(),
            )
            .unwrap();
            assert_eq!(report["shards"].as_array().unwrap().len(), 3);
            assert_same_records_with(
                &dump(&base),
                &dump(&single.datafile()),
                &format!("{system}: {step}"),
                Scopes::ScopesKept,
            );
        }
    }
}

/// Ctrl-C at any moment of a merge: it ends with 0 (done) or 2 (interrupted; or killed by
/// the signal while the process was still starting), DEST is either as it was or the whole
/// merge, and nothing is left beside it or in TMPDIR.
#[test]
fn a_merge_interrupted_at_any_moment_leaves_dest_whole() {
    use nix::sys::signal::Signal;
    let work = fresh_tmpdir();
    // A base (one full run), then two shards of an edited tree.
    let p = Project::copy("proj");
    p.pytest(Venv::Testmon22, &[]).run();
    let base = work.path().join("base.db");
    std::fs::copy(p.datafile(), &base).unwrap();
    p.edit(
        "calc/arith.py",
        "    if value > high:\n        return high\n    return value",
        "    return min(value, high)",
    );
    let mut shards = Vec::new();
    for k in 1..=2 {
        std::fs::copy(&base, p.datafile()).unwrap();
        run_shard(&p, Venv::Testmon22, &format!("{k}/2"), &[]);
        let file = work.path().join(format!("shard-{k}.db"));
        std::fs::copy(p.datafile(), &file).unwrap();
        shards.push(file);
    }
    let dest_dir = fresh_tmpdir();
    let dest = dest_dir.path().join(".testmondata");
    let tmpdir = fresh_tmpdir();
    let merge_cmd = || {
        let mut cmd = Cmd::new(BIN, dest_dir.path());
        cmd.args(["merge", "--into"])
            .arg(&dest)
            .args(&shards)
            .env("TMPDIR", tmpdir.path());
        cmd
    };
    std::fs::copy(&base, &dest).unwrap();
    let started = std::time::Instant::now();
    let done = merge_cmd().run_plain();
    // Signals spread over the whole merge, from its start to a little past its end.
    let span = started.elapsed().as_micros() as u64 * 5 / 4;
    assert_eq!(done.code(), 0, "{}", done.output());
    let merged = dump(&dest);
    let original = std::fs::read(&base).unwrap();
    let (mut interrupted, mut completed, mut handled) = (0, 0, 0);
    for i in 0..24u64 {
        std::fs::copy(&base, &dest).unwrap();
        let mut command = merge_cmd().command();
        command
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped());
        let child = command.spawn().unwrap();
        std::thread::sleep(std::time::Duration::from_micros(span * i / 23));
        crate::robustness::signal(&child, Signal::SIGINT);
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        match out.status.code() {
            Some(0) => {
                completed += 1;
                assert_eq!(dump(&dest), merged, "run {i}: completed, not whole");
            }
            Some(2) => {
                interrupted += 1;
                handled += 1;
                assert!(stderr.contains("interrupted"), "run {i}: {stderr}");
                assert_eq!(
                    std::fs::read(&dest).unwrap(),
                    original,
                    "run {i}: DEST changed"
                );
            }
            // SIGINT before the merge installed its handlers (the process was starting):
            // it had written nothing.
            None => {
                interrupted += 1;
                assert_eq!(
                    std::fs::read(&dest).unwrap(),
                    original,
                    "run {i}: DEST changed"
                );
            }
            other => panic!("run {i}: exit {other:?}: {stderr}"),
        }
        let beside: Vec<String> = std::fs::read_dir(dest_dir.path())
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n != ".testmondata")
            .collect();
        assert!(beside.is_empty(), "run {i}: left beside DEST: {beside:?}");
        let in_tmp: Vec<_> = std::fs::read_dir(tmpdir.path())
            .unwrap()
            .flatten()
            .collect();
        assert!(in_tmp.is_empty(), "run {i}: left in TMPDIR: {in_tmp:?}");
    }
    // Some merges were stopped, and the handler, not the default disposition, stopped some.
    assert!(
        interrupted > 0 && handled > 0,
        "{interrupted} interrupted ({handled} by the handler), {completed} completed"
    );
}
