//! The run as the user sees it while it goes on: the supervisor's events turned into the
//! header, the lines of live output and the progress display (`Ui`).

use crate::report::header::Header;
use crate::report::live;
use crate::run::protocol::Report;
use crate::run::sink::{Scheduled, Sink};
use crate::ui::Ui;

pub(crate) struct Display {
    ui: Ui,
    /// The workers' names, by index.
    names: Vec<String>,
    /// pytest's verbosity: 1+ a line per test, -1 no header, -2 not even failures as they come.
    verbose: i64,
    header: Header,
    /// The user's plugins' header lines (`Using --randomly-seed=...`), from the controller:
    /// None until the run's header line is shown, then they follow it at once.
    plugin_header: Option<Vec<String>>,
    header_shown: bool,
}

impl Display {
    pub(crate) fn new(ui: Ui, names: Vec<String>, verbose: i64, header: Header) -> Display {
        Display {
            ui,
            names,
            verbose,
            header,
            plugin_header: None,
            header_shown: false,
        }
    }

    fn name(&self, worker: usize) -> &str {
        self.names.get(worker).map_or("", String::as_str)
    }
}

impl Sink for Display {
    fn scheduled(&mut self, run: &Scheduled) {
        if self.verbose >= 0 {
            let selected = run.share.map_or(run.run_list.len(), |s| s.selected);
            let line = self.header.line(selected, run.deselected, run.tm_message);
            self.ui.line(&line);
            for line in self.plugin_header.take().unwrap_or_default() {
                self.ui.line(&line);
            }
        }
        self.header_shown = true;
        // Said even with -q: a CI log shows which part of the selection this job ran.
        if let Some(share) = run.share.filter(|_| self.verbose >= -1) {
            self.ui
                .line(&Header::shard_line(share, run.expected.is_some()));
        }
        if let Some(notice) = self.header.notice() {
            self.ui.line(&notice);
        }
        // No ETA without recorded durations: a guess from the count misleads.
        self.ui
            .start(run.run_list.len(), run.expected.unwrap_or(f64::NAN));
    }

    fn plugin_header(&mut self, lines: &[String]) {
        if !self.header_shown {
            self.plugin_header = Some(lines.to_vec());
        } else if self.verbose >= 0 {
            for line in lines {
                self.ui.line(line);
            }
        }
    }

    fn test_started(&mut self, worker: usize, nodeid: &str) {
        self.ui.started(worker, nodeid);
    }

    fn test_finished(&mut self, worker: usize, nodeid: &str, reports: &[Report], cost: f64) {
        let name = self.name(worker).to_string();
        for report in reports {
            if let Some(line) = live::live_line(nodeid, report, &name, self.verbose) {
                self.ui.line(&line);
            }
        }
        let failed = reports.iter().any(|r| r.outcome.is_failed());
        self.ui.finished(worker, nodeid, cost, failed);
    }

    fn test_lost(&mut self, worker: usize, nodeid: &str, report: &Report, cost: f64) {
        let line = live::lost_line(nodeid, report, self.name(worker));
        self.ui.line(&line);
        self.ui.finished(worker, nodeid, cost, true);
    }

    fn run_again(&mut self, worker: usize, count: usize, cost: f64) {
        self.ui.run_again(count, cost);
        let line = live::run_again_line(self.name(worker), count);
        self.ui.line(&line);
    }

    fn worker_replaced(&mut self, worker: usize, restarts: u32, max: u32) {
        let line = live::replaced_line(self.name(worker), restarts, max);
        self.ui.line(&line);
    }

    fn output(&mut self, worker: usize, line: &str) {
        let line = live::output_line(self.name(worker), line);
        self.ui.line(&line);
    }

    fn tick(&mut self) {
        self.ui.tick();
    }

    fn finish(&mut self) {
        self.ui.finish();
    }
}
