//! Files the user keeps (JUnit, pytest's cache, the JSON report, the plan) are written whole
//! or not at all.

use std::path::Path;

use anyhow::Context;

/// Writes `data` to a temporary file next to `dest` (creating `dest`'s directory, as pytest
/// does for its outputs), then renames it over `dest`; a failed write leaves no temp file.
pub(crate) fn write(dest: &Path, data: &[u8]) -> anyhow::Result<()> {
    write_with(dest, |tmp| std::fs::write(tmp, data))
}

/// As [`write`], the file readable by its owner only (the run directory's files).
pub(crate) fn write_private(dest: &Path, data: &[u8]) -> anyhow::Result<()> {
    write_with(dest, |tmp| {
        std::io::Write::write_all(&mut crate::run::rundir::private_file(tmp)?, data)
    })
}

/// Creates the temporary file with `create`, then renames it over `dest`.
fn write_with(
    dest: &Path,
    create: impl FnOnce(&Path) -> std::io::Result<()>,
) -> anyhow::Result<()> {
    let file_name = dest
        .file_name()
        .with_context(|| format!("{}: not a file name", dest.display()))?;
    if let Some(parent) = dest.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    let tmp = dest.with_file_name(format!(
        ".{}.{}.tmp",
        file_name.to_string_lossy(),
        std::process::id()
    ));
    let written = create(&tmp)
        .with_context(|| format!("writing {}", tmp.display()))
        .and_then(|()| {
            std::fs::rename(&tmp, dest)
                .with_context(|| format!("renaming {} to {}", tmp.display(), dest.display()))
        });
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}
