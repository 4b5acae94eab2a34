//! The JSON-lines messages between the supervisor and its workers (python/worker.py).

use serde::{Deserialize, Serialize};

/// Bumped whenever a message changes; a worker of another build is refused.
pub const PROTOCOL: u32 = 4;

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "t", rename_all = "snake_case")]
pub(crate) enum FromWorker {
    /// The worker's first message (it also names itself and its pid, for a reader of the
    /// socket; the supervisor checks only the protocol).
    Hello {
        protocol: u32,
        /// Its process id (a forked worker's handle learns it here).
        #[serde(default)]
        pid: Option<i32>,
    },
    /// The worker's collection, in testmon's order, after testmon's selection.
    Collected {
        nodeids: Vec<String>,
        deselected: u64,
        /// What testmon's end-of-collection sync would keep (None: no sync, as after
        /// collection errors).
        sync: Option<Vec<String>>,
        collect_errors: Vec<CollectError>,
        /// testmon's own header words (changed files, unchanged files, environment).
        #[serde(default)]
        tm_message: Option<String>,
        /// The tests pytest itself deselected (-k, -m, --deselect).
        #[serde(default)]
        user_deselected: Vec<String>,
        /// The failed collections' reports in pytest's own serialization, for the
        /// controller (sent only when there is one).
        #[serde(default)]
        forward: Vec<serde_json::Value>,
        /// Test files where a module- or package-scoped fixture is shared by tests of more
        /// than one class-or-module scope: one unit under `--dist loadscope`.
        #[serde(default)]
        whole_files: Vec<String>,
        /// Scopes (class or module) and files with a test that uses a class-, module- or
        /// package-scoped fixture: their units are never split.
        #[serde(default)]
        bound: Vec<String>,
    },
    /// The worker has at most one test left (`queued`): it wants the next unit.
    Want {
        #[serde(default)]
        queued: usize,
    },
    /// One test's reports (setup, call, teardown).
    Result {
        nodeid: String,
        reports: Vec<Report>,
        /// The test's part of pytest's XFAILURES, PASSES and XPASSES sections.
        #[serde(default)]
        sections: Vec<SectionPart>,
        /// Every test this worker reported so far, this one included, has its fingerprints
        /// in the spool (testmon wrote its batch, or does not record).
        #[serde(default = "durable_default")]
        durable: bool,
        /// The reports in pytest's own serialization, for the controller (sent only when
        /// there is one).
        #[serde(default)]
        forward: Vec<serde_json::Value>,
    },
    /// The session ended (pytest's `shouldfail`/`shouldstop` come along, unread: the
    /// supervisor decides -x for the whole run).
    Finished {
        exitstatus: i32,
        /// pytest's warnings.
        #[serde(default)]
        warnings: Vec<PytestWarning>,
        /// What the worker would have written to pytest's cache (None: no cacheprovider).
        #[serde(default)]
        cache: Option<CacheReport>,
        /// xdist's `config.workeroutput`, for the controller's `pytest_testnodedown`.
        #[serde(default)]
        workeroutput: Option<serde_json::Value>,
    },
}

/// A worker's share of pytest's cache: the change it made to `lastfailed` (the tests it
/// ran, and the collection, which every worker shares) and stepwise's value.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
pub(crate) struct CacheReport {
    pub(crate) dir: String,
    #[serde(default)]
    pub(crate) lastfailed_removed: Vec<String>,
    #[serde(default)]
    pub(crate) lastfailed_added: Vec<String>,
    #[serde(default)]
    pub(crate) stepwise: Option<serde_json::Value>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub(crate) struct CollectError {
    pub(crate) nodeid: String,
    pub(crate) text: String,
    #[serde(default)]
    pub(crate) message: String,
}

/// A test's part of one of pytest's XFAILURES, PASSES and XPASSES sections; sent as a
/// `[title, text]` pair.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub(crate) struct SectionPart {
    pub(crate) title: String,
    pub(crate) text: String,
}

/// One of pytest's warnings; sent as a `[location, message]` pair.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub(crate) struct PytestWarning {
    pub(crate) location: String,
    pub(crate) message: String,
}

/// The phase of a test a report is about (pytest's `report.when`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum When {
    Setup,
    #[default]
    Call,
    Teardown,
}

impl When {
    /// pytest's word for it.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            When::Setup => "setup",
            When::Call => "call",
            When::Teardown => "teardown",
        }
    }
}

/// pytest's `report.outcome`. (pytest's summary category, which plugins extend, stays a
/// string: `Report::category`.)
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Outcome {
    #[default]
    Passed,
    Failed,
    Skipped,
    /// A word a plugin set (pytest-rerunfailures' `rerun`): neither passed nor failed.
    #[serde(other)]
    Other,
}

impl Outcome {
    pub(crate) fn is_failed(self) -> bool {
        self == Outcome::Failed
    }
}

/// pytest's words, for the unit tests' reports.
#[cfg(test)]
impl From<&str> for When {
    fn from(word: &str) -> When {
        serde_json::from_value(serde_json::Value::from(word)).expect("one of pytest's phases")
    }
}

#[cfg(test)]
impl From<&str> for Outcome {
    fn from(word: &str) -> Outcome {
        serde_json::from_value(serde_json::Value::from(word)).expect("a word")
    }
}

/// One pytest report, with pytest's own classification (pytest_report_teststatus).
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
pub(crate) struct Report {
    pub(crate) when: When,
    pub(crate) outcome: Outcome,
    pub(crate) category: String,
    #[serde(default)]
    pub(crate) letter: String,
    #[serde(default)]
    pub(crate) word: String,
    pub(crate) duration: f64,
    pub(crate) head_line: String,
    /// The failure as pytest's terminal prints it.
    #[serde(default)]
    pub(crate) text: Option<String>,
    #[serde(default)]
    pub(crate) message: Option<String>,
    /// The line pytest's "short test summary info" shows for it.
    #[serde(default)]
    pub(crate) summary_line: Option<String>,
    /// Its lines in the short test summary, by pytest's -r characters.
    #[serde(default)]
    pub(crate) short: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "t", rename_all = "snake_case")]
pub(crate) enum ToWorker {
    /// xdist's `config.workerinput`: the first message a worker gets, before it configures.
    #[serde(rename = "workerinput")]
    WorkerInput {
        input: serde_json::Value,
    },
    Run {
        nodeids: Vec<String>,
    },
    /// Nothing for now: run the test you hold as your last, then ask again.
    Later,
    Shutdown,
    /// -x/--maxfail reached: start nothing more, not even the test held as next.
    Stop,
}

fn durable_default() -> bool {
    true
}

/// One line from a worker: a message, or what made it unreadable.
pub(crate) fn parse(line: &str) -> Result<FromWorker, String> {
    serde_json::from_str(line).map_err(|err| {
        let shown: String = line.chars().take(80).collect();
        format!("unreadable message from worker ({err}): {shown:?}")
    })
}

pub(crate) fn encode(msg: &ToWorker) -> String {
    let mut line = serde_json::to_string(msg).expect("ToWorker serializes");
    line.push('\n');
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_worker_messages() {
        assert_eq!(
            parse(r#"{"t": "want", "queued": 1}"#),
            Ok(FromWorker::Want { queued: 1 })
        );
        let msg = parse(r#"{"t":"hello","protocol":1,"worker":"gw0","pid":42}"#).unwrap();
        assert_eq!(
            msg,
            FromWorker::Hello {
                protocol: 1,
                pid: Some(42)
            }
        );
    }

    #[test]
    fn reports_phases_outcomes_warnings_and_sections_are_typed() {
        let line = r#"{"t":"result","nodeid":"t.py::x","durable":false,
            "reports":[{"when":"setup","outcome":"passed","category":"","duration":0.1,
                        "head_line":"x"},
                       {"when":"call","outcome":"rerun","category":"rerun","duration":0.2,
                        "head_line":"x"}],
            "sections":[["PASSES","___ x ___\n"]]}"#;
        let Ok(FromWorker::Result {
            reports, sections, ..
        }) = parse(line)
        else {
            panic!("{:?}", parse(line));
        };
        assert_eq!(
            (reports[0].when, reports[0].outcome),
            (When::Setup, Outcome::Passed)
        );
        // A plugin's own word (pytest-rerunfailures) is neither passed nor failed.
        assert_eq!(
            (reports[1].when, reports[1].outcome),
            (When::Call, Outcome::Other)
        );
        assert_eq!(sections[0].title, "PASSES");
        let finished = parse(r#"{"t":"finished","exitstatus":1,"warnings":[["t.py::x","w"]]}"#);
        let Ok(FromWorker::Finished { warnings, .. }) = finished else {
            panic!("{finished:?}");
        };
        assert_eq!(
            warnings,
            [PytestWarning {
                location: "t.py::x".into(),
                message: "w".into()
            }]
        );
        assert!(parse(r#"{"t":"result","nodeid":"x","reports":[{"when":"later","outcome":"passed","category":"","duration":0,"head_line":"x"}]}"#).is_err());
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for line in [
            "",
            "garbage",
            r#"{"t":"nope"}"#,
            r#"{"t":"result"}"#,
            "\u{0}\u{1}",
        ] {
            assert!(parse(line).is_err(), "{line:?}");
        }
    }

    #[test]
    fn encodes_one_line_per_message() {
        let line = encode(&ToWorker::Run {
            nodeids: vec!["t.py::a[x\ny]".into()],
        });
        assert_eq!(line, "{\"t\":\"run\",\"nodeids\":[\"t.py::a[x\\ny]\"]}\n");
        assert_eq!(encode(&ToWorker::Shutdown), "{\"t\":\"shutdown\"}\n");
        assert_eq!(encode(&ToWorker::Later), "{\"t\":\"later\"}\n");
        let input = serde_json::json!({"workerid": "gw0", "workercount": 2});
        assert_eq!(
            encode(&ToWorker::WorkerInput { input }),
            "{\"t\":\"workerinput\",\"input\":{\"workerid\":\"gw0\",\"workercount\":2}}\n"
        );
    }

    /// What the controller gets passes through as it came: the reports in pytest's own
    /// serialization, the failed collections', the worker's workeroutput; absent, empty.
    #[test]
    fn the_controllers_parts_pass_through_and_may_be_absent() {
        let line = r#"{"t": "result", "nodeid": "t.py::a", "reports": [],
                       "forward": [{"nodeid": "t.py::a", "when": "call", "x": [1, {"y": null}]}]}"#;
        let FromWorker::Result { forward, .. } = parse(line).unwrap() else {
            panic!("a result");
        };
        assert_eq!(forward[0]["x"][1], serde_json::json!({"y": null}));
        let line = r#"{"t": "finished", "exitstatus": 0,
                       "workeroutput": {"cov_worker_node_id": "gw0", "b": {"__testmon_run_bytes__": "AA=="}}}"#;
        let FromWorker::Finished { workeroutput, .. } = parse(line).unwrap() else {
            panic!("finished");
        };
        assert_eq!(workeroutput.unwrap()["cov_worker_node_id"], "gw0");
        let line = r#"{"t": "finished", "exitstatus": 0}"#;
        assert!(matches!(
            parse(line).unwrap(),
            FromWorker::Finished {
                workeroutput: None,
                ..
            }
        ));
        let line = r#"{"t": "collected", "nodeids": [], "deselected": 0, "sync": null,
                       "collect_errors": []}"#;
        assert!(matches!(
            parse(line).unwrap(),
            FromWorker::Collected { forward, .. } if forward.is_empty()
        ));
    }
}
