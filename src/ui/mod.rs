//! The live progress display: an indicatif bar with one line per worker on a terminal, plain
//! status lines elsewhere.
//!
//! Bar mode draws on stdout (where the test output goes) at most 10 times a second: the
//! status line with a bar, then `gw0 tests/x.py::t` / `gw1 idle` per worker. Text handed to
//! [`Ui::line`] appears above the bar (batched up to a tenth of a second). [`Ui::finish`]
//! removes the bar and the worker lines, leaving the cursor at the start of a clean line.
//! While a bar is shown, everything written to stdout must go through [`Ui::line`].
//!
//! Plain mode prints the text of [`Ui::line`] as is, and from [`Ui::tick`] a status line
//! `testmon-run: [12/53] 2 failed, 3.1s elapsed, ETA 4s` at most every 5 seconds.
//! Silent mode prints only the text of [`Ui::line`].

pub(crate) mod display;
pub(crate) mod format;
pub mod terminal;

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressFinish, ProgressStyle};

/// How often plain mode prints its status line, at most.
pub(crate) const PLAIN_INTERVAL: Duration = Duration::from_secs(5);
/// The bar's redraws per second, at most.
pub(crate) const REFRESH_HZ: u8 = 10;
/// Lines for [`Ui::line`] are batched for this long in bar mode (each print redraws the bar).
const BATCH: Duration = Duration::from_millis(100);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Bar,
    Plain,
    Silent,
}

/// Bar when stdout is a terminal, $CI is unset (or empty) and progress is not disabled;
/// Plain otherwise; Silent when `quiet` (the caller passes true for pytest's -qq).
///
/// A terminal without cursor movement ($TERM unset or `dumb`) gets Plain too: indicatif
/// would hide the bar there, and with it the lines printed above it.
pub fn choose_mode(progress_enabled: bool, quiet: bool) -> Mode {
    decide(
        progress_enabled,
        quiet,
        std::io::stdout().is_terminal(),
        std::env::var_os("CI").is_some_and(|ci| !ci.is_empty()),
        std::env::var("TERM").is_ok_and(|t| !t.is_empty() && t != "dumb"),
    )
}

fn decide(progress_enabled: bool, quiet: bool, tty: bool, ci: bool, capable: bool) -> Mode {
    if quiet {
        Mode::Silent
    } else if progress_enabled && tty && !ci && capable {
        Mode::Bar
    } else {
        Mode::Plain
    }
}

pub struct Ui {
    mode: Mode,
    width: usize,
    names: Vec<String>,
    /// Each worker's running test.
    current: Vec<Option<String>>,
    total: usize,
    expected: f64,
    done: usize,
    failed: usize,
    done_cost: f64,
    started: Option<Instant>,
    last_status: Option<Instant>,
    bars: Option<Bars>,
    /// Bar mode's lines not yet printed, and when lines were last printed.
    pending: Vec<String>,
    flushed: Option<Instant>,
    finished: bool,
}

struct Bars {
    multi: MultiProgress,
    main: ProgressBar,
    /// The lines of the first workers, as many as the terminal has room for.
    workers: Vec<ProgressBar>,
    /// `+N more workers, M busy`, when not every worker has a line.
    more: Option<ProgressBar>,
    /// What each bar shows (main, workers, more), so unchanged lines are not set again.
    shown: Vec<String>,
}

impl Ui {
    /// `width`: the columns for the bar's lines (pytest's width); the terminal's own width
    /// caps it, read again at each redraw.
    pub fn new(mode: Mode, width: usize, worker_names: Vec<String>) -> Ui {
        let current = vec![None; worker_names.len()];
        Ui {
            mode,
            width,
            names: worker_names,
            current,
            total: 0,
            expected: 0.0,
            done: 0,
            failed: 0,
            done_cost: 0.0,
            started: None,
            last_status: None,
            bars: None,
            pending: Vec::new(),
            flushed: None,
            finished: false,
        }
    }

    /// The run starts: `total` tests, `expected` = Σ of their expected seconds (testmon's
    /// recorded durations; the caller fills unknown ones with the median).
    pub fn start(&mut self, total: usize, expected: f64) {
        let now = Instant::now();
        self.total = total;
        self.expected = expected;
        self.started = Some(now);
        self.last_status = Some(now);
        if self.mode == Mode::Bar && self.bars.is_none() && !self.finished {
            match Bars::new(self.names.len()) {
                Some(bars) => self.bars = Some(bars),
                None => self.mode = Mode::Plain,
            }
        }
        self.refresh();
    }

    /// `worker` (index into worker_names) began the test `nodeid`.
    pub fn started(&mut self, worker: usize, nodeid: &str) {
        if let Some(slot) = self.current.get_mut(worker) {
            *slot = Some(nodeid.to_string());
        }
        self.refresh();
    }

    /// `worker` finished `nodeid`, whose expected cost was `cost` seconds; failed = failed
    /// or error.
    pub fn finished(&mut self, worker: usize, nodeid: &str, cost: f64, failed: bool) {
        self.done += 1;
        if failed {
            self.failed += 1;
        }
        if cost.is_finite() && cost > 0.0 {
            self.done_cost += cost;
        }
        if let Some(slot) = self.current.get_mut(worker) {
            if slot.as_deref() == Some(nodeid) {
                *slot = None;
            }
        }
        self.refresh();
    }

    /// `count` finished tests of expected `cost` seconds will run again (their worker was lost
    /// before their records were written).
    pub(crate) fn run_again(&mut self, count: usize, cost: f64) {
        self.done = self.done.saturating_sub(count);
        if cost.is_finite() && cost > 0.0 {
            self.done_cost = (self.done_cost - cost).max(0.0);
        }
        self.refresh();
    }

    /// Complete line(s) of text to show now (a failure's short form, a -v line, a worker's
    /// output line): above the bar in Bar mode, printed as is in Plain and Silent mode.
    /// Text without a trailing newline gets one.
    pub fn line(&mut self, text: &str) {
        let text = text.strip_suffix('\n').unwrap_or(text);
        if self.bars.is_some() {
            self.pending.push(text.to_string());
            if self.flushed.is_none_or(|at| at.elapsed() >= BATCH) {
                self.flush();
            }
        } else {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{text}");
            let _ = out.flush();
        }
    }

    /// Called by the event loop about every 50 ms: in Plain mode, prints a status line when
    /// at least 5 s passed since the last one (and only after start()); in Bar mode prints
    /// the lines waiting and refreshes elapsed/ETA.
    pub fn tick(&mut self) {
        if self.finished {
            return;
        }
        match self.mode {
            Mode::Bar => {
                self.flush();
                self.refresh();
            }
            Mode::Plain => {
                let (Some(started), Some(last)) = (self.started, self.last_status) else {
                    return;
                };
                let now = Instant::now();
                if now.duration_since(last) >= PLAIN_INTERVAL {
                    self.last_status = Some(now);
                    let elapsed = now.duration_since(started);
                    let line = format::plain_status_line(
                        self.done,
                        self.total,
                        self.failed,
                        elapsed,
                        self.eta(elapsed),
                    );
                    crate::ui::terminal::say(&format!("{line}\n"));
                }
            }
            Mode::Silent => {}
        }
    }

    /// The run is over: the bar and worker lines are removed (no residue on screen), the
    /// cursor at the start of a clean line; idempotent. Also called by Drop.
    pub fn finish(&mut self) {
        if self.finished {
            return;
        }
        self.flush();
        self.finished = true;
        if let Some(bars) = self.bars.take() {
            bars.clear();
        }
        let _ = std::io::stdout().flush();
    }

    fn eta(&self, elapsed: Duration) -> Option<Duration> {
        format::eta(elapsed, self.done_cost, self.expected, self.names.len())
    }

    /// Prints the lines waiting, above the bar.
    fn flush(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        let text = std::mem::take(&mut self.pending).join("\n");
        self.flushed = Some(Instant::now());
        match &self.bars {
            // Not MultiProgress::println: it ends each line by padding it with spaces to the
            // terminal's width instead of a newline, so the lines would be one soft-wrapped
            // line to the terminal (joined when copied, or when a resize reflows them).
            Some(bars) => bars
                .multi
                .suspend(|| crate::ui::terminal::say(&format!("{text}\n"))),
            None => crate::ui::terminal::say(&format!("{text}\n")),
        }
    }

    /// Brings the bar's lines up to date (indicatif limits the redraws).
    fn refresh(&mut self) {
        let Some(started) = self.started else {
            return;
        };
        let Some(bars) = self.bars.as_mut() else {
            return;
        };
        let width = match terminal_size() {
            Some((cols, _)) => self.width.min(usize::from(cols)),
            None => self.width,
        };
        let elapsed = started.elapsed();
        let eta = format::eta(elapsed, self.done_cost, self.expected, self.names.len());
        let mut lines = Vec::with_capacity(bars.shown.len());
        lines.push(format::bar_line(
            self.done,
            self.total,
            self.failed,
            elapsed,
            eta,
            width,
        ));
        for (name, current) in self
            .names
            .iter()
            .zip(&self.current)
            .take(bars.workers.len())
        {
            lines.push(format::worker_line(name, current.as_deref(), width));
        }
        if bars.more.is_some() {
            let hidden = &self.current[bars.workers.len()..];
            let busy = hidden.iter().filter(|c| c.is_some()).count();
            lines.push(format::more_workers_line(hidden.len(), busy, width));
        }
        bars.show(lines);
    }
}

impl Drop for Ui {
    fn drop(&mut self) {
        self.finish();
    }
}

impl Bars {
    /// None when indicatif would not draw on stdout (not a terminal, $TERM dumb).
    fn new(workers: usize) -> Option<Bars> {
        let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stdout_with_hz(REFRESH_HZ));
        if multi.is_hidden() {
            return None;
        }
        // The status line and the "+N more" line stay; the rest of the terminal's rows, up
        // to half of them, hold worker lines.
        let rows = terminal_size().map_or(24, |(_, rows)| usize::from(rows));
        let room = (rows / 2).saturating_sub(2).max(1);
        let (shown, more) = if workers <= room + 1 {
            (workers, false)
        } else {
            (room, true)
        };
        let style = ProgressStyle::with_template("{msg}").expect("a valid template");
        // Added to the MultiProgress before any message is set: a bar not yet added draws
        // on stderr.
        let line = || {
            multi.add(
                ProgressBar::no_length()
                    .with_style(style.clone())
                    .with_finish(ProgressFinish::AndClear),
            )
        };
        let main = line();
        let worker_bars: Vec<ProgressBar> = (0..shown).map(|_| line()).collect();
        let more = more.then(line);
        let count = 1 + worker_bars.len() + usize::from(more.is_some());
        Some(Bars {
            multi,
            main,
            workers: worker_bars,
            more,
            shown: vec![String::new(); count],
        })
    }

    fn bars(&self) -> impl Iterator<Item = &ProgressBar> {
        std::iter::once(&self.main)
            .chain(&self.workers)
            .chain(&self.more)
    }

    fn show(&mut self, lines: Vec<String>) {
        let bars: Vec<ProgressBar> = self.bars().cloned().collect();
        for ((bar, shown), line) in bars.iter().zip(&mut self.shown).zip(lines) {
            if *shown != line {
                bar.set_message(line.clone());
                *shown = line;
            }
        }
    }

    /// Removes every line of the display: the cursor ends at the start of the first one.
    fn clear(self) {
        // All lines at once, then nothing more: finishing the bars first would redraw the
        // display once per bar, each time a line shorter.
        let _ = self.multi.clear();
        self.multi.set_draw_target(ProgressDrawTarget::hidden());
        for bar in self.bars() {
            bar.finish_and_clear();
        }
    }
}

/// The terminal's (columns, rows) when stdout is one and both are known.
fn terminal_size() -> Option<(u16, u16)> {
    crate::ui::terminal::size().filter(|&(_, rows)| rows > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes() {
        // (progress_enabled, quiet, tty, ci, capable)
        assert_eq!(decide(true, false, true, false, true), Mode::Bar);
        assert_eq!(decide(false, false, true, false, true), Mode::Plain);
        assert_eq!(decide(true, false, false, false, true), Mode::Plain);
        assert_eq!(decide(true, false, true, true, true), Mode::Plain);
        assert_eq!(decide(true, false, true, false, false), Mode::Plain);
        assert_eq!(decide(true, true, true, false, true), Mode::Silent);
        assert_eq!(decide(false, true, false, true, false), Mode::Silent);
    }

    #[test]
    fn counts_and_costs() {
        let mut ui = Ui::new(Mode::Silent, 80, vec!["gw0".into(), "gw1".into()]);
        ui.start(3, 10.0);
        ui.started(0, "t.py::a");
        ui.started(1, "t.py::b");
        assert_eq!(ui.current, [Some("t.py::a".into()), Some("t.py::b".into())]);
        ui.finished(0, "t.py::a", 4.0, true);
        // A late report for another test leaves the running one shown.
        ui.finished(1, "t.py::x", f64::NAN, false);
        assert_eq!(ui.current, [None, Some("t.py::b".into())]);
        assert_eq!((ui.done, ui.failed, ui.done_cost), (2, 1, 4.0));
        ui.finish();
        ui.finish();
    }
}
