//! The line before the run: who runs what, and testmon's selection in its own words.

use crate::shard::partition::Share;

/// What the header says, gathered before the workers start.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Header {
    pub(crate) version: String,
    pub(crate) workers: usize,
    pub(crate) pytest: String,
    pub(crate) testmon: Option<TestmonHeader>,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct TestmonHeader {
    pub(crate) version: String,
    pub(crate) environment: String,
    /// The database was created by this run.
    pub(crate) new_db: bool,
    pub(crate) packages_changed: bool,
    /// testmon selects tests (false: `-k`, `-m`, `--lf`, node ids turned it off).
    pub(crate) select: bool,
    /// testmon records fingerprints (false: a debugger, coverage).
    pub(crate) collect: bool,
    /// testmon's configuration message ("selection automatically deactivated because ...").
    pub(crate) conf_message: Option<String>,
}

impl Header {
    /// What the probe and the preparation found.
    pub(crate) fn new(
        workers: usize,
        facts: &crate::probe::Facts,
        prepared: Option<&crate::record::Prepared>,
    ) -> Header {
        // testmon loaded and mentioned (`--testmon`, or turned off by its own options).
        let testmon = facts
            .testmon
            .as_ref()
            .filter(|tm| tm.active() || tm.message.is_some());
        Header {
            version: env!("CARGO_PKG_VERSION").into(),
            workers,
            pytest: facts.pytest_version.clone(),
            testmon: testmon.map(|tm| TestmonHeader {
                version: tm.version.clone(),
                environment: tm.environment.clone(),
                new_db: prepared.is_some_and(|p| p.created),
                packages_changed: prepared.is_some_and(|p| p.env.packages_changed),
                select: tm.select,
                collect: tm.collect,
                conf_message: tm.message.clone(),
            }),
        }
    }

    /// One line: versions, workers, testmon's selection words, and the counts.
    /// `tm_message` is testmon's own header words from a worker ("changed files: ...").
    pub(crate) fn line(
        &self,
        selected: usize,
        deselected: u64,
        tm_message: Option<&str>,
    ) -> String {
        let workers = match self.workers {
            0 => "no workers".to_string(),
            1 => "1 worker".to_string(),
            n => format!("{n} workers"),
        };
        let mut line = format!(
            "testmon-run {}: {workers}, pytest {}",
            self.version, self.pytest
        );
        match &self.testmon {
            Some(tm) => {
                line.push_str(&format!(", testmon {}", tm.version));
                let words = if tm.new_db {
                    format!("new DB, environment: {}", tm.environment)
                } else if tm.packages_changed {
                    format!(
                        "packages changed: all tests run, environment: {}",
                        tm.environment
                    )
                } else {
                    tm_message
                        .map(|m| m.trim().trim_end_matches(',').to_string())
                        .filter(|m| !m.is_empty())
                        .unwrap_or_else(|| format!("environment: {}", tm.environment))
                };
                line.push_str(&format!(" ({words})"));
            }
            None => line.push_str(", testmon off"),
        }
        line.push_str(&format!(": selected {selected}, deselected {deselected}"));
        line
    }

    /// With `--shard`: this shard's part of the selection, and its expected seconds when
    /// testmon has recorded durations (`known`).
    pub(crate) fn shard_line(share: &Share, known: bool) -> String {
        let mut line = format!(
            "shard {}: {} of {} selected tests",
            share.shard,
            share.tests.len(),
            share.selected
        );
        if known {
            line.push_str(&format!(
                " (est. {:.1} s of {:.1} s)",
                share.expected, share.expected_total
            ));
        }
        if share.tests.is_empty() {
            line.push_str(": nothing to run here");
        }
        line
    }

    /// Said even with `-q`: testmon is loaded but does not select (or record), and why.
    pub(crate) fn notice(&self) -> Option<String> {
        let tm = self.testmon.as_ref()?;
        if tm.select && tm.collect {
            return None;
        }
        let what = match (tm.select, tm.collect) {
            (false, false) => "selection and recording are off",
            (false, true) => "selection is off: every collected test runs",
            _ => "recording is off: no fingerprints are saved",
        };
        let reasons: Vec<String> = tm
            .conf_message
            .as_deref()
            .unwrap_or("")
            .trim_start_matches("testmon:")
            .split("automatically deactivated because ")
            .skip(1)
            .map(|piece| {
                // "…reason, selection " — the next clause's subject follows the reason.
                let piece = piece.trim();
                let piece = piece
                    .strip_suffix("selection")
                    .or_else(|| piece.strip_suffix("collection"))
                    .unwrap_or(piece);
                piece.trim().trim_end_matches(',').trim().to_string()
            })
            .filter(|r| !r.is_empty())
            .collect();
        let mut text = format!("testmon-run: testmon {what}");
        if !reasons.is_empty() {
            text.push_str(&format!(" ({})", reasons.join("; ")));
        }
        Some(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(tm: Option<TestmonHeader>) -> Header {
        Header {
            version: "0.1.0".into(),
            workers: 2,
            pytest: "9.0.2".into(),
            testmon: tm,
        }
    }

    fn testmon() -> TestmonHeader {
        TestmonHeader {
            version: "2.2.0".into(),
            environment: "default".into(),
            new_db: false,
            packages_changed: false,
            select: true,
            collect: true,
            conf_message: Some("testmon: ".into()),
        }
    }

    #[test]
    fn changed_files_in_testmon_words_and_counts() {
        let line = header(Some(testmon())).line(
            12,
            41,
            Some("changed files: src/a.py, unchanged files: 5, environment: default"),
        );
        assert_eq!(
            line,
            "testmon-run 0.1.0: 2 workers, pytest 9.0.2, testmon 2.2.0 (changed files: src/a.py, \
             unchanged files: 5, environment: default): selected 12, deselected 41"
        );
        assert_eq!(header(Some(testmon())).notice(), None);
    }

    #[test]
    fn new_db_packages_changed_and_no_testmon() {
        let mut tm = testmon();
        tm.new_db = true;
        assert!(header(Some(tm.clone()))
            .line(53, 0, None)
            .ends_with("testmon 2.2.0 (new DB, environment: default): selected 53, deselected 0"));
        tm.new_db = false;
        tm.packages_changed = true;
        assert!(header(Some(tm))
            .line(53, 0, Some("x"))
            .contains("(packages changed: all tests run, environment: default)"));
        assert_eq!(
            header(None).line(3, 0, None),
            "testmon-run 0.1.0: 2 workers, pytest 9.0.2, testmon off: selected 3, deselected 0"
        );
        assert_eq!(header(None).notice(), None);
    }

    #[test]
    fn deactivated_selection_is_said_with_testmons_reason() {
        let mut tm = testmon();
        tm.select = false;
        tm.conf_message =
            Some("testmon: selection automatically deactivated because -m was used, ".into());
        assert_eq!(
            header(Some(tm.clone())).notice().as_deref(),
            Some("testmon-run: testmon selection is off: every collected test runs (-m was used)")
        );
        tm.collect = false;
        tm.conf_message = Some(
            "testmon: collection automatically deactivated because it's not compatible with \
             debugger, selection automatically deactivated because -k was used, "
                .into(),
        );
        assert_eq!(
            header(Some(tm)).notice().as_deref(),
            Some(
                "testmon-run: testmon selection and recording are off (it's not compatible \
                 with debugger; -k was used)"
            )
        );
    }

    #[test]
    fn the_shard_line() {
        use crate::shard::Shard;
        let share = Share {
            shard: Shard { index: 2, total: 3 },
            tests: (0..41).collect(),
            selected: 120,
            expected: 12.34,
            expected_total: 36.8,
        };
        assert_eq!(
            Header::shard_line(&share, true),
            "shard 2/3: 41 of 120 selected tests (est. 12.3 s of 36.8 s)"
        );
        assert_eq!(
            Header::shard_line(&share, false),
            "shard 2/3: 41 of 120 selected tests"
        );
        let empty = Share {
            tests: Vec::new(),
            ..share
        };
        assert_eq!(
            Header::shard_line(&empty, false),
            "shard 2/3: 0 of 120 selected tests: nothing to run here"
        );
    }
}
