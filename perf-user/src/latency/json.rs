//! `latency --format json`: the report as one JSON document.

use std::io::{self, Write};

use super::LatencyReport;

/// Writes `report` as pretty-printed JSON followed by a newline.
pub fn write(report: &LatencyReport, w: &mut dyn Write) -> io::Result<()> {
    serde_json::to_writer_pretty(&mut *w, report).map_err(io::Error::other)?;
    writeln!(w)
}
