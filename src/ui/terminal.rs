//! Facts about the terminal we print to.

use std::io::{IsTerminal, Write};

/// Writes to stdout; a closed pipe (`testmon-run ... | head`) is not an error worth dying of.
pub fn say(text: &str) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes());
    let _ = out.flush();
}

/// pytest's width: $COLUMNS, else the terminal's, else 80.
pub fn width() -> usize {
    if let Some(columns) = std::env::var("COLUMNS")
        .ok()
        .and_then(|c| c.trim().parse::<usize>().ok())
    {
        if columns > 0 {
            return columns;
        }
    }
    if std::io::stdout().is_terminal() {
        if let Some((columns, _)) = size() {
            return usize::from(columns);
        }
    }
    80
}

/// Stdout's terminal size (columns, rows; rows may be 0 when unknown), when it has one.
pub(crate) fn size() -> Option<(u16, u16)> {
    let mut size = nix::libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ writes one winsize into the struct we own.
    let ok = unsafe { nix::libc::ioctl(1, nix::libc::TIOCGWINSZ, &mut size) } == 0;
    (ok && size.ws_col > 0).then_some((size.ws_col, size.ws_row))
}

/// Whether pytest's `--color` setting means colour for our stdout.
pub(crate) fn color(setting: &str) -> bool {
    match setting {
        "yes" => true,
        "no" => false,
        _ => {
            std::env::var_os("NO_COLOR").is_none()
                && std::env::var("TERM").map_or(true, |t| t != "dumb")
                && std::io::stdout().is_terminal()
        }
    }
}
