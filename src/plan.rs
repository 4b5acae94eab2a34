//! The run's plan: what every worker reads from the run directory before it starts.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::db::EnvironmentRow;
use crate::probe::Testmon;
use crate::protocol::PROTOCOL;

#[derive(Debug, Serialize, Deserialize)]
pub struct Plan {
    pub protocol: u32,
    pub testmon: PlanTestmon,
    /// `-s`/live logs: the worker sends only the tests' output to stdout.
    pub stream: bool,
}

/// testmon's side of the plan; `active: false` when testmon neither selects nor collects.
/// The environment id itself reaches each worker as TESTMON_RUN_EXEC_ID.
#[derive(Debug, Serialize, Deserialize)]
pub struct PlanTestmon {
    pub active: bool,
    pub packages_changed: bool,
    pub environment: Option<String>,
    pub system_packages: Option<String>,
    pub python_version: Option<String>,
    pub data_version: Option<i64>,
    pub datafile: Option<PathBuf>,
    /// The environment row (also in TESTMON_RUN_EXEC_ID); read back when a killed run's
    /// spools are recovered (absent from plans of older builds).
    #[serde(default)]
    pub exec_id: Option<i64>,
}

impl Plan {
    pub fn new(testmon: Option<(&Testmon, EnvironmentRow)>, stream: bool) -> Plan {
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
