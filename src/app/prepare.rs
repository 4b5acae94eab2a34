//! The prepare phase: testmon's version checked, runs killed before their end recovered,
//! the datafile opened or created with this run's environment row, and the run's plan
//! written for the workers.

use anyhow::Result;

use crate::exit::Fatal;
use crate::noop::manifest::Snapshot;
use crate::probe::{Facts, Testmon};
use crate::record::{self, recover};
use crate::run::plan::Plan;
use crate::run::rundir::RunDir;
use crate::shard::{stamp, Shard, ShardRun};
use crate::{db, record::Prepared};

/// The database side of the run, ready for the workers.
pub(crate) struct Ready<'f> {
    /// testmon, when it selects or records for this run.
    pub(crate) testmon: Option<&'f Testmon>,
    pub(crate) prepared: Option<Prepared>,
    /// The files as this run starts, for the no-op state it may leave.
    pub(crate) snapshot: Option<Snapshot>,
    /// With `--shard`: this job's shard and the datafile it started from.
    pub(crate) shard: Option<ShardRun>,
}

/// `may_keep_noop`: this run may leave a no-op state, so it reads the files testmon tracks.
pub(crate) fn prepare<'f>(
    facts: &'f Facts,
    may_keep_noop: bool,
    run_dir: &RunDir,
    shard: Option<Shard>,
) -> Result<Ready<'f>> {
    let testmon = facts.testmon.as_ref().filter(|tm| tm.active());
    // The base is identified before this run writes anything into it.
    let shard = match shard {
        Some(shard) => Some(ShardRun {
            shard,
            base: match testmon {
                Some(tm) => stamp::base_id(&tm.datafile)?,
                None => String::new(),
            },
        }),
        None => None,
    };
    if let Some(tm) = testmon {
        check_supported(tm)?;
        if tm.collect {
            if let Some(base) = run_dir.path().parent() {
                for line in recover::recover(base, tm) {
                    eprintln!("{line}");
                }
            }
        }
    }
    let prepared = testmon
        .map(|tm| record::prepare(tm, may_keep_noop))
        .transpose()?;
    let snapshot = match prepared.as_ref() {
        Some(prepared) if may_keep_noop => Some(Snapshot::take(&facts.rootdir, &prepared.tracked)),
        _ => None,
    };
    Ok(Ready {
        testmon,
        prepared,
        snapshot,
        shard,
    })
}

/// The plan every worker reads from the run directory before it starts.
pub(crate) fn write_plan(ready: &Ready, facts: &Facts, run_dir: &RunDir) -> Result<()> {
    let env = ready.prepared.as_ref().map(|p| p.env);
    run_dir.write_plan(&Plan::new(ready.testmon.zip(env), facts.stream))
}

fn check_supported(tm: &Testmon) -> Result<()> {
    if tm.tmnet {
        return Err(Fatal::Usage("--tmnet is not supported by testmon-run".into()).into());
    }
    if db::schema_sql(tm.data_version).is_none() {
        return Err(Fatal::Usage(format!(
            "unsupported pytest-testmon {} (data version {}); supported: 2.1.x and 2.2.x",
            tm.version, tm.data_version
        ))
        .into());
    }
    Ok(())
}
