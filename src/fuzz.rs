//! Hostile inputs to every reader, as property tests: the JSON-lines protocol, the plan and
//! `collected.json` of a stale run directory, the probe's JSON, the probe cache's entries,
//! `[tool.testmon-run]`, JUnit documents and spools. Whatever they hold: no panic, no hang,
//! no write outside the run directory and the datafile.
//!
//! Seeded and bounded in `scripts/test` (PROPTEST_RNG_SEED, PROPTEST_CASES); `scripts/fuzz`
//! runs them longer with a fresh seed.

use std::collections::{BTreeSet, HashSet};
use std::path::{Path, PathBuf};

use proptest::prelude::*;

use crate::probe::Testmon;
use crate::run::protocol;

/// JSON-ish text: fragments of our messages, mixed with anything.
fn jsonish() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        Just("{".to_string()),
        Just("}".to_string()),
        Just("[".to_string()),
        Just("]".to_string()),
        Just(",".to_string()),
        Just(":".to_string()),
        Just("null".to_string()),
        Just("\"t\"".to_string()),
        prop::sample::select(vec![
            "\"hello\"",
            "\"collected\"",
            "\"want\"",
            "\"result\"",
            "\"finished\"",
            "\"nodeids\"",
            "\"reports\"",
            "\"when\"",
            "\"outcome\"",
            "\"queued\"",
            "\"exitstatus\"",
            "\"sync\"",
            "\"run_list\"",
            "\"testmon\"",
            "\"active\"",
            "\"datafile\"",
            "\"exec_id\"",
            "\"protocol\"",
            "\"passed\"",
            "\"failed\"",
            "\"call\"",
            "\"cache\"",
            "\"warnings\"",
            "\"sections\"",
        ])
        .prop_map(str::to_string),
        any::<i64>().prop_map(|n| n.to_string()),
        any::<f64>().prop_map(|n| n.to_string()),
        ".{0,12}",
    ];
    prop::collection::vec(piece, 0..40).prop_map(|parts| parts.concat())
}

fn bytes() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..400),
        jsonish().prop_map(String::into_bytes),
    ]
}

/// A testmon of data version 14 whose datafile is `datafile`.
fn testmon(datafile: &Path) -> Testmon {
    serde_json::from_value(serde_json::json!({
        "version": "2.2.0", "data_version": 14, "select": true, "collect": true,
        "tmnet": false, "message": null, "environment": "default", "system_packages": "",
        "python_version": "3.11", "datafile": datafile,
        "placeholder_checksums": "30", "batch_size": 250,
    }))
    .expect("a Testmon")
}

/// Every file under `dir`, relative.
fn files(dir: &Path) -> BTreeSet<PathBuf> {
    let mut out = BTreeSet::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path.clone());
            }
            out.insert(path.strip_prefix(dir).unwrap().to_path_buf());
        }
    }
    out
}

/// A spool in testmon's format holding `tests`, as bytes.
fn spool_bytes(tests: &[&str]) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("spool.db");
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.execute_batch(crate::db::schema_sql(14).unwrap())
        .unwrap();
    conn.execute_batch(
        "PRAGMA user_version = 14;
         INSERT INTO environment (id, environment_name) VALUES (1, 'default');
         INSERT INTO file_fp (id, filename, method_checksums, mtime, fsha)
             VALUES (1, 't.py', x'01', 1.0, 'abc');",
    )
    .unwrap();
    for (i, t) in tests.iter().enumerate() {
        conn.execute(
            "INSERT INTO test_execution (id, environment_id, test_name, duration, failed, forced)
             VALUES (?, 1, ?, 0.1, 0, 0)",
            rusqlite::params![i as i64 + 1, t],
        )
        .unwrap();
        conn.execute(
            "INSERT INTO test_execution_file_fp VALUES (?, 1)",
            [i as i64 + 1],
        )
        .unwrap();
    }
    drop(conn);
    std::fs::read(&path).unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig {
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn protocol_lines_never_panic(line in jsonish()) {
        let _ = protocol::parse(&line);
    }

    #[test]
    fn protocol_bytes_never_panic(raw in prop::collection::vec(any::<u8>(), 0..200)) {
        let _ = protocol::parse(&String::from_utf8_lossy(&raw));
    }

    #[test]
    fn probe_answers_and_cache_entries_never_panic(text in bytes()) {
        let _ = serde_json::from_slice::<crate::probe::Facts>(&text);
        if let Ok(entry) = serde_json::from_slice::<crate::probe::cache::Entry>(&text) {
            let _ = entry.holds();
        }
    }

    #[test]
    fn pyproject_never_panics(text in prop_oneof![
        ".{0,200}",
        prop::collection::vec(prop::sample::select(vec![
            "[tool.testmon-run]\n", "numprocesses = ", "n = ", "dist = ", "\"auto\"", "4",
            "-1", "\"loadfile\"", "progress = ", "true", "json-report = ", "\"x.json\"",
            "[tool]\n", "\n", "= =", "\"", "[", "]", "{", "}", "timeout = ", "1e9",
        ]), 0..20).prop_map(|parts| parts.concat()),
    ]) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("pyproject.toml"), &text).unwrap();
        let _ = crate::cli::config_file::load(dir.path());
    }

    #[test]
    fn junit_documents_never_panic(docs in prop::collection::vec(bytes(), 1..3)) {
        let docs: Vec<String> = docs.iter().map(|d| String::from_utf8_lossy(d).into_owned()).collect();
        let _ = crate::artifacts::junit::merge(&docs, &["t.py::a".to_string()]);
    }

    #[test]
    fn spools_are_checked_without_panic(
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..8),
        garbage in prop::collection::vec(any::<u8>(), 0..300),
        whole in any::<bool>(),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("spool-gw0.db");
        let mut data = if whole { spool_bytes(&["t.py::a"]) } else { garbage };
        for (at, byte) in flips {
            if !data.is_empty() {
                let i = at.index(data.len());
                data[i] = byte;
            }
        }
        std::fs::write(&path, &data).unwrap();
        let allowed: HashSet<&str> = ["t.py::a"].into();
        let _ = crate::db::check_spool(&path, 14, &allowed);
    }

    /// A stale run directory with anything in its plan, collection and spool: recovery never
    /// panics, writes only the datafile, and leaves nothing but the datafile and the
    /// directory (or its removal) behind.
    #[test]
    fn stale_run_directories_never_panic_nor_write_elsewhere(
        plan in bytes(),
        collected in bytes(),
        spool in prop_oneof![bytes(), Just(Vec::new())],
        good_plan in any::<bool>(),
    ) {
        let project = tempfile::tempdir().unwrap();
        let datafile = project.path().join(".testmondata");
        let tm = testmon(&datafile);
        let base = tempfile::tempdir().unwrap();
        let dir = base.path().join("testmon-run-2147483647-abc");
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(dir.join("lock"), b"").unwrap();
        let plan = if good_plan {
            serde_json::to_vec(&serde_json::json!({
                "protocol": 3, "stream": false,
                "testmon": {"active": true, "packages_changed": false,
                            "environment": "default", "system_packages": "",
                            "python_version": "3.11", "data_version": 14,
                            "datafile": datafile, "exec_id": 1},
            })).unwrap()
        } else {
            plan
        };
        std::fs::write(dir.join("plan.json"), &plan).unwrap();
        std::fs::write(dir.join("collected.json"), &collected).unwrap();
        std::fs::write(dir.join("spool-gw0.db"), &spool).unwrap();
        let before = files(project.path());
        let lines = crate::record::recover::recover(base.path(), &tm);
        prop_assert!(lines.len() <= 1, "{lines:?}");
        let after = files(project.path());
        let datafile_only: BTreeSet<PathBuf> = after
            .difference(&before)
            .filter(|p| !p.to_string_lossy().starts_with(".testmondata"))
            .cloned()
            .collect();
        prop_assert!(datafile_only.is_empty(), "{datafile_only:?}");
        let left = files(base.path());
        prop_assert!(
            left.iter().all(|p| p.starts_with("testmon-run-2147483647-abc")),
            "{left:?}"
        );
    }
}
