//! `--format svg`: an interactive flame graph (click to zoom, Ctrl-F to search),
//! drawn by inferno from the folded stacks.

use std::io::{self, Write};

use inferno::flamegraph::{self, Options};

use crate::profile::Profile;

use super::folded;

/// Writes the flame graph SVG.
pub fn write(profile: &Profile, title: &str, w: &mut dyn Write) -> io::Result<()> {
    let lines = folded::lines(profile);
    let count_name = if profile.kind.is_time() {
        "µs"
    } else {
        "samples"
    };
    let subtitle = super::table::summary(profile);
    write_lines(&lines, title, &subtitle, count_name, w)
}

/// Writes the flame graph SVG of folded `lines` (`stack count`), whose
/// counts are `count_name`.
pub fn write_lines(
    lines: &[String],
    title: &str,
    subtitle: &str,
    count_name: &str,
    w: &mut dyn Write,
) -> io::Result<()> {
    let mut opts = Options::default();
    opts.title = title.to_string();
    opts.subtitle = Some(subtitle.to_string());
    opts.count_name = count_name.to_string();
    if lines.is_empty() {
        // inferno refuses an empty input; an empty profile still gets a valid SVG.
        return writeln!(
            w,
            r#"<?xml version="1.0" standalone="no"?><svg version="1.1" width="1200" height="60" xmlns="http://www.w3.org/2000/svg"><text x="600" y="30" text-anchor="middle">{}: no samples</text></svg>"#,
            escape(title)
        );
    }
    flamegraph::from_lines(&mut opts, lines.iter().map(String::as_str), w)
        .map_err(|e| io::Error::other(format!("flame graph: {e}")))
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}
