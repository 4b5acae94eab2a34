//! Running the command as it is, in place of this process (`-n 0`, `--help`,
//! `--collect-only`, ...).

use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::path::Path;

use crate::exit::Fatal;
use crate::pycommand;

/// Replaces this process with the command; returns only the error when it could not.
pub(crate) fn exec(command: &[OsString], datafile: Option<&Path>) -> anyhow::Error {
    let mut cmd = std::process::Command::new(&command[0]);
    cmd.args(&command[1..]);
    if let Some(datafile) = datafile {
        cmd.env("TESTMON_DATAFILE", datafile);
    }
    let err = cmd.exec();
    if err.kind() == std::io::ErrorKind::NotFound {
        return Fatal::Usage(format!(
            "command not found: {}",
            command[0].to_string_lossy()
        ))
        .into();
    }
    anyhow::Error::new(err).context(format!("running {}", pycommand::display(command)))
}
