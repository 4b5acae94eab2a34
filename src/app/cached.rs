//! The probe phase: the probe's answer for this command, from the probe cache while its
//! entry holds, else by running the probe (and caching its answer).

use std::path::Path;

use anyhow::{Context, Result};

use crate::cli::Config;
use crate::noop::{self, NoopState};
use crate::probe::cache::{ini_stamps, Entry, Key, Store};
use crate::probe::{self, Facts};
use crate::run::rundir::RunDir;

/// The command's entry in the probe cache (none without a cache directory, or before the
/// first run of a cacheable command).
pub(crate) struct Cached {
    store: Option<Store>,
    key: Option<Key>,
    pub(crate) entry: Option<Entry>,
}

impl Cached {
    pub(crate) fn look_up(config: &Config, datafile: Option<&Path>) -> Cached {
        let store = Store::locate();
        let key = Key::new(&config.command, datafile);
        let entry = store
            .as_ref()
            .zip(key.as_ref())
            .and_then(|(s, k)| s.load(k));
        Cached { store, key, entry }
    }

    /// The facts of the entry, or the probe's (run in `run_dir`), then kept when they may be.
    pub(crate) fn facts(
        &mut self,
        config: &Config,
        run_dir: &RunDir,
        datafile: Option<&Path>,
    ) -> Result<Facts> {
        if let Some(entry) = &self.entry {
            return Ok(entry.facts.clone());
        }
        let cwd = std::env::current_dir().context("reading the current directory")?;
        let mut ini = ini_stamps(&cwd, None);
        let facts = probe::run(&config.command, run_dir, datafile)?;
        if let (Some(store), Some(key)) = (&self.store, self.key.take()) {
            if facts.cacheable {
                ini.extend(ini_stamps(&facts.rootdir, None));
                let fresh = Entry::new(key, facts.clone(), ini);
                store.save(&fresh);
                self.entry = Some(fresh);
            }
        }
        Ok(facts)
    }

    /// This run may leave a no-op state for the next: its facts are cached and allow one.
    pub(crate) fn may_keep_noop(&self, facts: &Facts) -> bool {
        self.entry.is_some() && noop::eligible(facts)
    }

    /// The entry and its store, when both exist.
    pub(crate) fn parts(&mut self) -> Option<(&Store, &mut Entry)> {
        self.store.as_ref().zip(self.entry.as_mut())
    }

    /// Keeps the no-op state this run leaves, for the next run of the command.
    pub(crate) fn keep_noop(&mut self, state: NoopState) {
        if let Some((store, entry)) = self.parts() {
            entry.noop = Some(state);
            store.save(entry);
        }
    }
}
