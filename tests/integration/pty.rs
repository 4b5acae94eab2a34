//! Running a program on a pseudo-terminal, and what its terminal shows (through vt100).

#![allow(dead_code)]

use std::io::Read;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use nix::fcntl::{fcntl, FcntlArg, FdFlag};
use nix::pty::{openpty, Winsize};

/// What a program wrote on its terminal.
#[derive(Debug)]
pub struct PtyRun {
    /// Every byte, as written (the pty turns `\n` into `\r\n`).
    pub raw: Vec<u8>,
    /// The terminal's final screen: its rows, right-trimmed, joined by `\n`.
    pub screen: String,
    /// The final screen as lines of text: a row that wrapped (the cursor went past its
    /// end) continues on the next one, as a terminal copies it (vt100's `contents()`).
    pub logical: String,
    /// The exit code; None when killed by a signal (the timeout's SIGKILL included).
    pub status: Option<i32>,
    pub timed_out: bool,
    pub elapsed: Duration,
    pub cols: u16,
    pub rows: u16,
}

impl PtyRun {
    /// The raw output as text (lossy).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.raw).into_owned()
    }

    /// The final screen's rows, trailing empty ones dropped.
    pub fn screen_lines(&self) -> Vec<&str> {
        trimmed_lines(&self.screen)
    }

    /// The final screen's logical lines (wrapped rows joined), trailing empty ones dropped.
    pub fn logical_lines(&self) -> Vec<&str> {
        trimmed_lines(&self.logical)
    }

    /// The screens seen along the way, every `step` bytes of output (and the final one).
    pub fn frames(&self, step: usize) -> Vec<String> {
        frames(&self.raw, self.rows, self.cols, step)
    }
}

/// Runs `program` with its stdin, stdout and stderr on a new pty of `cols`×`rows` (its
/// controlling terminal, in a session of its own), `env` added to and `env_remove` taken
/// from this process's environment; killed after `timeout`.
#[allow(clippy::too_many_arguments)]
pub fn run_in_pty(
    program: &Path,
    args: &[&str],
    cwd: &Path,
    env: &[(&str, &str)],
    env_remove: &[&str],
    cols: u16,
    rows: u16,
    timeout: Duration,
) -> PtyRun {
    let size = Winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    let pty = openpty(&size, None).expect("openpty");
    cloexec(&pty.master);
    cloexec(&pty.slave);
    let mut cmd = Command::new(program);
    cmd.args(args).current_dir(cwd);
    for name in env_remove {
        cmd.env_remove(name);
    }
    for (name, value) in env {
        cmd.env(name, value);
    }
    cmd.stdin(Stdio::from(pty.slave.try_clone().expect("dup")))
        .stdout(Stdio::from(pty.slave.try_clone().expect("dup")))
        .stderr(Stdio::from(pty.slave));
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            nix::unistd::setsid()?;
            if nix::libc::ioctl(0, nix::libc::TIOCSCTTY, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let started = Instant::now();
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("spawning {}: {e}", program.display()));
    // The slave's copies in this process must go, or the master never sees EIO.
    drop(cmd);

    let (tx, rx) = mpsc::channel::<Vec<u8>>();
    let mut master = std::fs::File::from(pty.master);
    std::thread::spawn(move || {
        let mut buf = [0u8; 8192];
        // Until EIO (every slave closed) or EOF.
        while let Ok(n) = master.read(&mut buf) {
            if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                break;
            }
        }
    });

    let mut raw = Vec::new();
    let deadline = started + timeout;
    let mut timed_out = false;
    let exit = loop {
        while let Ok(chunk) = rx.try_recv() {
            raw.extend_from_slice(&chunk);
        }
        if let Some(exit) = child.try_wait().expect("waiting for the child") {
            break exit;
        }
        if Instant::now() >= deadline {
            timed_out = true;
            let _ = child.kill();
            break child.wait().expect("waiting for the killed child");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let elapsed = started.elapsed();
    // The rest of the output, until every writer is gone (a grandchild may hold the slave).
    let drain_until = Instant::now() + Duration::from_secs(5);
    loop {
        let left = drain_until.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(chunk) => raw.extend_from_slice(&chunk),
            Err(_) => break,
        }
    }
    let mut parser = parser(rows, cols);
    parser.process(&raw);
    PtyRun {
        screen: rows_text(parser.screen()),
        logical: parser.screen().contents(),
        raw,
        status: exit.code(),
        timed_out,
        elapsed,
        cols,
        rows,
    }
}

fn cloexec(fd: &OwnedFd) {
    fcntl(fd.as_raw_fd(), FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC)).expect("FD_CLOEXEC");
}

fn parser(rows: u16, cols: u16) -> vt100::Parser {
    let rows = std::num::NonZeroU16::new(rows).expect("rows > 0");
    let cols = std::num::NonZeroU16::new(cols).expect("cols > 0");
    vt100::Parser::new(rows, cols, 0)
}

fn trimmed_lines(text: &str) -> Vec<&str> {
    let mut lines: Vec<&str> = text.lines().collect();
    while lines.last().is_some_and(|l| l.trim().is_empty()) {
        lines.pop();
    }
    lines
}

/// A screen's rows, right-trimmed, joined by `\n`.
fn rows_text(screen: &vt100::Screen) -> String {
    let cols = screen.size().1.get();
    screen
        .rows(0, cols)
        .map(|row| row.trim_end().to_string())
        .collect::<Vec<_>>()
        .join("\n")
}

/// The rows a `cols`×`rows` terminal shows after `raw` (as [`PtyRun::screen`]).
pub fn screen(raw: &[u8], rows: u16, cols: u16) -> String {
    let mut parser = parser(rows, cols);
    parser.process(raw);
    rows_text(parser.screen())
}

/// The screens (rows, as [`PtyRun::screen`]) after every `step` bytes of `raw`, the final
/// one last.
pub fn frames(raw: &[u8], rows: u16, cols: u16, step: usize) -> Vec<String> {
    let mut parser = parser(rows, cols);
    let mut frames = Vec::new();
    for chunk in raw.chunks(step.max(1)) {
        parser.process(chunk);
        frames.push(rows_text(parser.screen()));
    }
    if frames.is_empty() {
        frames.push(rows_text(parser.screen()));
    }
    frames
}
