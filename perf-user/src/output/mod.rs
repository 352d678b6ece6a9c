//! Output formats for a finished profile. Each module writes one format.

pub mod folded;
pub mod json;
pub mod pprof;
pub mod svg;
pub mod table;

use std::io::{self, Write};

use crate::profile::Profile;

/// Formats that `profile --format` accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Table of the top hotspots (self % and total %), for a terminal.
    Table,
    /// Folded stacks, one line per stack, as flamegraph.pl and inferno read them.
    Folded,
    /// Interactive flame graph (SVG; open it in a browser).
    Svg,
    /// Gzipped profile.proto, for `go tool pprof`, Pyroscope and others.
    Pprof,
    /// JSON document; its schema is in docs/json-schema.md.
    Json,
}

impl Format {
    /// True for formats that are bytes, not text meant for a terminal.
    pub fn is_binary(self) -> bool {
        matches!(self, Format::Pprof)
    }
}

/// Options that shape the output.
#[derive(Clone, Debug)]
pub struct OutputOptions {
    /// Rows in the table.
    pub top: usize,
    /// Title for the flame graph.
    pub title: String,
}

/// Writes `profile` in `format`.
pub fn write(
    profile: &Profile,
    format: Format,
    opts: &OutputOptions,
    w: &mut dyn Write,
) -> io::Result<()> {
    match format {
        Format::Table => table::write(profile, opts.top, w),
        Format::Folded => folded::write(profile, w),
        Format::Svg => svg::write(profile, &opts.title, w),
        Format::Pprof => pprof::write(profile, w),
        Format::Json => json::write(profile, w),
    }
}
