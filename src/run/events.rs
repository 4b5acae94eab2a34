//! The events the supervisor's loop handles: worker messages and OS signals.

use crate::run::protocol::FromWorker;

#[derive(Debug)]
pub(crate) enum Event {
    Message {
        worker: usize,
        msg: FromWorker,
    },
    /// A line that is not a message of our protocol.
    Garbage {
        worker: usize,
        detail: String,
    },
    /// The worker's end of the socket closed (it exited, or closed it).
    Closed {
        worker: usize,
    },
    /// One complete line a worker printed (`-s`, live logs), without its newline.
    Output {
        worker: usize,
        line: String,
    },
    Signal(SignalEvent),
    /// The user's plugins' lines for pytest's header, from the controller.
    PluginHeader(Vec<String>),
    /// The `workerinput` for the `generation`-th incarnation of `worker`, once the
    /// controller's plugins have added to it (run::controller).
    WorkerInput {
        worker: usize,
        generation: u32,
        input: serde_json::Value,
    },
}

/// OS signals, as the supervisor cares about them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SignalEvent {
    /// SIGINT, SIGTERM, SIGHUP: stop the run.
    Interrupt,
    /// SIGTSTP (Ctrl-Z): stop the workers, then this process.
    Suspend,
    /// SIGCONT: the workers go on.
    Continue,
}
