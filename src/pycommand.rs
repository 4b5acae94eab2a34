//! The user's pytest command, extended with one of our plugins: the one place that builds it.

use std::ffi::{OsStr, OsString};
use std::path::Path;
use std::process::Command;

use crate::exit::Fatal;

/// The user's command plus `-p <plugin>`, with `python_path` put in front of PYTHONPATH
/// (extended, never replaced) and, if given, an absolute TESTMON_DATAFILE.
pub(crate) fn with_plugin(
    command: &[OsString],
    plugin: &str,
    python_path: &Path,
    datafile: Option<&Path>,
) -> Command {
    let mut cmd = Command::new(&command[0]);
    cmd.args(&command[1..]).arg("-p").arg(plugin);
    cmd.env(
        "PYTHONPATH",
        extend_path(python_path, std::env::var_os("PYTHONPATH").as_deref()),
    );
    if let Some(datafile) = datafile {
        cmd.env("TESTMON_DATAFILE", datafile);
    }
    cmd
}

fn extend_path(first: &Path, rest: Option<&OsStr>) -> OsString {
    let mut value = OsString::from(first);
    if let Some(rest) = rest.filter(|r| !r.is_empty()) {
        value.push(":");
        value.push(rest);
    }
    value
}

/// Why the command could not be started, as the user should read it: a usage error when
/// it does not exist or is not executable, the OS's words otherwise.
pub(crate) fn start_error(command: &[OsString], err: std::io::Error) -> anyhow::Error {
    let program = command[0].to_string_lossy();
    match err.kind() {
        std::io::ErrorKind::NotFound => {
            Fatal::Usage(format!("command not found: {program}")).into()
        }
        std::io::ErrorKind::PermissionDenied => {
            Fatal::Usage(format!("{program}: not executable (permission denied)")).into()
        }
        _ => anyhow::Error::new(err).context(format!("running {}", display(command))),
    }
}

/// The command's name for messages.
pub(crate) fn display(command: &[OsString]) -> String {
    command
        .iter()
        .map(|a| a.to_string_lossy())
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pythonpath_is_extended_not_replaced() {
        assert_eq!(
            extend_path(Path::new("/run/py"), Some(OsStr::new("/a:/b"))),
            "/run/py:/a:/b"
        );
        assert_eq!(
            extend_path(Path::new("/run/py"), Some(OsStr::new(""))),
            "/run/py"
        );
        assert_eq!(extend_path(Path::new("/run/py"), None), "/run/py");
    }
}
