//! The run's plan: what every worker reads from the run directory before it starts.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::db::EnvironmentRow;
use crate::probe::Testmon;
use crate::run::protocol::PROTOCOL;

#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Plan {
    pub(crate) protocol: u32,
    pub(crate) testmon: PlanTestmon,
    /// `-s`/live logs: the worker sends only the tests' output to stdout.
    pub(crate) stream: bool,
}

/// testmon's side of the plan; `active: false` when testmon neither selects nor collects.
/// The environment id itself reaches each worker as TESTMON_RUN_EXEC_ID.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct PlanTestmon {
    pub(crate) active: bool,
    pub(crate) packages_changed: bool,
    pub(crate) environment: Option<String>,
    pub(crate) system_packages: Option<String>,
    pub(crate) python_version: Option<String>,
    pub(crate) data_version: Option<i64>,
    pub(crate) datafile: Option<PathBuf>,
    /// The environment row (also in TESTMON_RUN_EXEC_ID); read back when a killed run's
    /// spools are recovered (absent from plans of older builds).
    #[serde(default)]
    pub(crate) exec_id: Option<i64>,
}

impl Plan {
    pub(crate) fn new(testmon: Option<(&Testmon, EnvironmentRow)>, stream: bool) -> Plan {
        let testmon = match testmon {
            Some((tm, env)) => PlanTestmon {
                active: true,
                packages_changed: env.packages_changed,
                environment: Some(tm.environment.clone()),
                system_packages: Some(tm.system_packages.clone()),
                python_version: Some(tm.python_version.clone()),
                data_version: Some(tm.data_version),
                datafile: Some(tm.datafile.clone()),
                exec_id: Some(env.id),
            },
            None => PlanTestmon {
                active: false,
                packages_changed: false,
                environment: None,
                system_packages: None,
                python_version: None,
                data_version: None,
                datafile: None,
                exec_id: None,
            },
        };
        Plan {
            protocol: PROTOCOL,
            testmon,
            stream,
        }
    }
}
