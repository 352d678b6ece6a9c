//! A one-line progress display on standard error, only when it is a terminal.

use std::io::{IsTerminal, Write};

/// Redraws one status line in place.
pub struct Progress {
    enabled: bool,
    drawn: bool,
}

impl Progress {
    /// Shows progress only when stderr is a terminal and `quiet` is off.
    pub fn new(quiet: bool) -> Self {
        Self {
            enabled: !quiet && std::io::stderr().is_terminal(),
            drawn: false,
        }
    }

    /// True when the line is shown.
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// Replaces the line with `text`.
    pub fn update(&mut self, text: &str) {
        if self.enabled {
            let mut e = std::io::stderr().lock();
            let _ = write!(e, "\r\x1b[2K{text}");
            let _ = e.flush();
            self.drawn = true;
        }
    }

    /// Clears the line, so the report starts on a clean one.
    pub fn finish(&mut self) {
        if self.enabled && self.drawn {
            let mut e = std::io::stderr().lock();
            let _ = write!(e, "\r\x1b[2K");
            let _ = e.flush();
            self.drawn = false;
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.finish();
    }
}
