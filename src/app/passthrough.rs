//! Running the command as it is, in place of this process (`-n 0`, `--help`,
//! `--collect-only`, ...).

use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::path::Path;

use crate::pycommand;

/// Replaces this process with the command; returns only the error when it could not.
pub(crate) fn exec(command: &[OsString], datafile: Option<&Path>) -> anyhow::Error {
    let mut cmd = std::process::Command::new(&command[0]);
    cmd.args(&command[1..]);
    if let Some(datafile) = datafile {
        cmd.env("TESTMON_DATAFILE", datafile);
    }
    pycommand::start_error(command, cmd.exec())
}
