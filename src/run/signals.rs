//! OS signals become small events at this one edge.

use std::sync::atomic::AtomicBool;
use std::sync::mpsc::Sender;
use std::sync::Arc;

use anyhow::Result;
use signal_hook::consts::{SIGCONT, SIGHUP, SIGINT, SIGTERM, SIGTSTP};
use signal_hook::iterator::{Handle, Signals};

use crate::run::events::{Event, SignalEvent};

/// For a command without an event loop (`merge`, `why`): SIGINT/SIGTERM/SIGHUP set the
/// returned flag; with `second_ends`, one arriving when it is already set ends the process
/// at once (exit 2).
pub(crate) fn interrupt_flag(second_ends: bool) -> Result<Arc<AtomicBool>> {
    let flag = Arc::new(AtomicBool::new(false));
    for signal in [SIGINT, SIGTERM, SIGHUP] {
        if second_ends {
            signal_hook::flag::register_conditional_shutdown(
                signal,
                i32::from(crate::exit::INTERRUPTED),
                Arc::clone(&flag),
            )?;
        }
        signal_hook::flag::register(signal, Arc::clone(&flag))?;
    }
    Ok(flag)
}

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
