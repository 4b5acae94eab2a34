//! The report a test gets when its worker dies under it: crashed, timed out, or killed for
//! breaking the protocol; an error naming the cause, with the worker's last output.

use std::time::Duration;

use crate::run::protocol::{Outcome, Report, When};
use crate::run::worker::Exit;

/// A duration as the user gave it: `3s`, `0.5s`.
pub(crate) fn seconds(d: Duration) -> String {
    format!("{}s", d.as_secs_f64())
}

/// Its worker was killed for an unreadable message on its socket (the test wrote to it?).
pub(crate) fn refused(nodeid: &str, worker: &str, output: &str) -> Report {
    let message = format!(
        "worker '{worker}' was killed while running '{nodeid}': an unreadable message on its \
         socket (the test wrote to it?)"
    );
    with_message(
        crash(nodeid, worker, Exit::Signal(9), output),
        &message,
        output,
    )
}

/// A crash report with another message.
fn with_message(mut report: Report, message: &str, output: &str) -> Report {
    let nodeid = report.head_line.clone();
    report.text = Some(format!("{message}\nlast output of the worker:\n{output}\n"));
    report.summary_line = Some(format!("ERROR {nodeid} - {message}"));
    report.short = vec![format!("ERROR {nodeid} - {message}")];
    report.message = Some(message.to_string());
    report
}

/// Its worker was killed at `--timeout`.
pub(crate) fn timeout(nodeid: &str, worker: &str, timeout: Duration, output: &str) -> Report {
    let message = format!(
        "Timeout: '{nodeid}' ran longer than {} (--timeout); worker '{worker}' was killed",
        seconds(timeout)
    );
    with_message(
        crash(nodeid, worker, Exit::Signal(9), output),
        &message,
        output,
    )
}

/// Its worker died by itself (a signal, `os._exit`, the OOM killer).
pub(crate) fn crash(nodeid: &str, worker: &str, exit: Exit, output: &str) -> Report {
    let message = format!(
        "worker '{worker}' crashed while running '{nodeid}' ({})",
        exit.describe()
    );
    Report {
        when: When::Call,
        outcome: Outcome::Failed,
        category: "error".into(),
        letter: "E".into(),
        word: "ERROR".into(),
        duration: 0.0,
        head_line: nodeid.into(),
        text: Some(format!("{message}\nlast output of the worker:\n{output}\n")),
        message: Some(message.clone()),
        summary_line: Some(format!("ERROR {nodeid} - {message}")),
        short: vec![format!("ERROR {nodeid} - {message}")],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_cause_is_named_in_the_error() {
        let crash = crash("t.py::x", "gw1", Exit::Signal(9), "last words");
        assert_eq!(
            crash.short,
            ["ERROR t.py::x - worker 'gw1' crashed while running 't.py::x' (killed by SIGKILL)"]
        );
        assert!(crash
            .text
            .unwrap()
            .ends_with("last output of the worker:\nlast words\n"));
        let timeout = timeout("t.py::x", "gw0", Duration::from_millis(2500), "");
        assert_eq!(
            timeout.summary_line.as_deref(),
            Some(
                "ERROR t.py::x - Timeout: 't.py::x' ran longer than 2.5s (--timeout); \
                 worker 'gw0' was killed"
            )
        );
        let refused = refused("t.py::x", "gw0", "");
        assert!(refused
            .message
            .unwrap()
            .contains("an unreadable message on its socket"));
        assert_eq!(refused.category, "error");
    }
}
