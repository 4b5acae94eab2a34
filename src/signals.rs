//! OS signals become small events at this one edge.

use std::sync::mpsc::Sender;

use anyhow::Result;
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::{Handle, Signals};

use crate::events::{Event, SignalEvent};

/// Forwards SIGINT/SIGTERM/SIGHUP as events until the returned guard is dropped.
pub struct SignalForwarder {
    handle: Handle,
}

impl SignalForwarder {
    pub fn start(events: Sender<Event>) -> Result<SignalForwarder> {
        let mut signals = Signals::new([SIGINT, SIGTERM, SIGHUP])?;
        let handle = signals.handle();
        std::thread::Builder::new()
            .name("signals".into())
            .spawn(move || {
                for _ in signals.forever() {
                    if events.send(Event::Signal(SignalEvent::Interrupt)).is_err() {
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
