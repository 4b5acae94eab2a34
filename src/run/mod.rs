//! The supervised run: workers started in their process groups, the event loop that owns the
//! run's state (supervisor), a worker's lifecycle (slot) and what it holds (ledger), the pure
//! scheduler, the protocol spoken with the workers, OS signals and the run directory.

pub(crate) mod controller;
pub(crate) mod crash_report;
pub(crate) mod events;
pub(crate) mod ledger;
pub(crate) mod outcome;
pub(crate) mod plan;
pub(crate) mod protocol;
pub(crate) mod rundir;
pub(crate) mod scheduler;
pub(crate) mod signals;
pub(crate) mod sink;
pub(crate) mod slot;
pub(crate) mod supervisor;
pub(crate) mod worker;
pub(crate) mod zygote;
