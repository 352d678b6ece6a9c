//! `--format json`: the whole profile plus its hotspots, schema in docs/json-schema.md.

use std::io::{self, Write};

use serde::Serialize;

use crate::profile::{Hotspot, Profile, hotspots};

/// Version of the JSON document's schema; bumped on incompatible changes.
pub const SCHEMA_VERSION: u32 = 1;

#[derive(Serialize)]
struct Document<'a> {
    schema_version: u32,
    #[serde(flatten)]
    profile: &'a Profile,
    hotspots: Vec<Hotspot>,
}

/// Writes the JSON document, pretty-printed, with a trailing newline.
pub fn write(profile: &Profile, w: &mut dyn Write) -> io::Result<()> {
    let doc = Document {
        schema_version: SCHEMA_VERSION,
        profile,
        hotspots: hotspots(profile),
    };
    serde_json::to_writer_pretty(&mut *w, &doc)?;
    writeln!(w)
}
