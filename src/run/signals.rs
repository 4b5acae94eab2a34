//! OS signals become small events at this one edge.

use std::sync::mpsc::Sender;

use anyhow::Result;
use signal_hook::consts::{SIGCONT, SIGHUP, SIGINT, SIGTERM, SIGTSTP};
use signal_hook::iterator::{Handle, Signals};

use crate::run::events::{Event, SignalEvent};

/// Turns SIGINT/SIGTERM/SIGHUP (stop the run), SIGTSTP (Ctrl-Z) and SIGCONT into events until
/// the returned guard is dropped.
pub(crate) struct SignalForwarder {
    handle: Handle,
}

impl SignalForwarder {
    pub(crate) fn start(events: Sender<Event>) -> Result<SignalForwarder> {
        let mut signals = Signals::new([SIGINT, SIGTERM, SIGHUP, SIGTSTP, SIGCONT])?;
        let handle = signals.handle();
        std::thread::Builder::new()
            .name("signals".into())
            .spawn(move || {
                for signal in signals.forever() {
                    let event = match signal {
                        SIGTSTP => SignalEvent::Suspend,
                        SIGCONT => SignalEvent::Continue,
                        _ => SignalEvent::Interrupt,
                    };
                    if events.send(Event::Signal(event)).is_err() {
                        break;
                    }
                }
            })?;
        Ok(SignalForwarder { handle })
    }
}

impl Drop for SignalForwarder {
    fn drop(&mut self) {
        self.handle.close();
    }
}
