//! The default terminal output: the top hotspots by self time.

use std::io::{self, Write};

use crate::profile::{Profile, ProfileKind, hotspots, offcpu::by_state};

/// Longest function name shown before it is cut with `…`.
const MAX_FUNCTION_WIDTH: usize = 60;

/// The first line: what the profile holds. Off-CPU and wall-clock time
/// are split by state.
pub fn summary(profile: &Profile) -> String {
    let secs = |us: u64| us as f64 / 1e6;
    // ": sleeping 1.990 s, disk 0.012 s", or nothing when nothing was seen.
    let states = || {
        let parts: Vec<String> = by_state(profile)
            .iter()
            .map(|(st, us)| format!("{} {:.3} s", st.name(), secs(*us)))
            .collect();
        if parts.is_empty() {
            String::new()
        } else {
            format!(": {}", parts.join(", "))
        }
    };
    match profile.kind {
        ProfileKind::Cpu => format!(
            "{} samples at {} Hz over {:.1} s on {} CPUs ({} stacks)",
            profile.total_samples,
            profile.frequency_hz,
            profile.duration_secs,
            profile.cpus,
            profile.stacks.len()
        ),
        ProfileKind::OffCpu => format!(
            "{:.3} s off-CPU over {:.1} s ({} stacks){}",
            secs(profile.total_samples),
            profile.duration_secs,
            profile.stacks.len(),
            states()
        ),
        ProfileKind::Wall => format!(
            "{:.3} s of wall-clock time over {:.1} s, on-CPU sampled at {} Hz ({} stacks){}",
            secs(profile.total_samples),
            profile.duration_secs,
            profile.frequency_hz,
            profile.stacks.len(),
            states()
        ),
    }
}

/// Writes a summary line, the hotspot table and any losses.
pub fn write(profile: &Profile, top: usize, w: &mut dyn Write) -> io::Result<()> {
    writeln!(w, "{}", summary(profile))?;
    if profile.total_samples == 0 {
        let hint = match profile.kind {
            ProfileKind::Cpu => {
                "No samples matched: was the target busy on a CPU? (idle time is left out unless --include-idle)"
            }
            _ => {
                "Nothing matched: did the target run, and did its threads leave the CPU for longer than --min-block?"
            }
        };
        writeln!(w, "{hint}")?;
        return Ok(());
    }
    let rows = hotspots(profile);
    let shown: Vec<_> = rows.iter().take(top).collect();
    let fwidth = shown
        .iter()
        .map(|r| r.function.chars().count().min(MAX_FUNCTION_WIDTH))
        .max()
        .unwrap_or(8)
        .max("FUNCTION".len());
    let mwidth = shown
        .iter()
        .map(|r| r.module.chars().count())
        .max()
        .unwrap_or(6)
        .max("MODULE".len());
    writeln!(
        w,
        "{:>6}  {:>6}  {:<fwidth$}  {:<mwidth$}  PROCESS",
        "SELF%", "TOTAL%", "FUNCTION", "MODULE"
    )?;
    for r in shown {
        writeln!(
            w,
            "{:>6.2}  {:>6.2}  {:<fwidth$}  {:<mwidth$}  {}",
            r.self_pct,
            r.total_pct,
            cut(&r.function, MAX_FUNCTION_WIDTH),
            r.module,
            r.process
        )?;
    }
    if rows.len() > top {
        writeln!(
            w,
            "… {} more functions (--top N shows more, --format json shows all)",
            rows.len() - top
        )?;
    }
    let lost = &profile.lost;
    if !lost.is_empty() {
        writeln!(
            w,
            "Lost: {} samples (sample map full), {} user and {} kernel stacks (collisions), {} user and {} kernel stacks (other errors)",
            lost.sample_map_full,
            lost.user_stack_collisions,
            lost.kernel_stack_collisions,
            lost.user_stack_errors,
            lost.kernel_stack_errors
        )?;
    }
    if let Some(unwind) = &profile.unwind {
        write_unwind(unwind, w)?;
    }
    if let Some(o) = &profile.off_cpu {
        let c = &o.counters;
        writeln!(
            w,
            "Context switches: {} seen ({} tracepoint), {} switch-outs recorded, {} left out by the filters in the kernel, {} absences counted, {} shorter than --min-block",
            c.switches,
            o.tracepoints.name(),
            c.recorded,
            c.filtered,
            c.counted,
            c.too_short
        )?;
    }
    Ok(())
}

/// One line on how the table walks went: how many reached the outermost
/// frame, and why the others stopped.
pub(crate) fn write_unwind(
    unwind: &crate::unwind::UnwindSummary,
    w: &mut dyn Write,
) -> io::Result<()> {
    let complete = unwind.walks_ended.get("complete").copied().unwrap_or(0);
    let total = complete + unwind.ended_early();
    if total == 0 {
        return Ok(());
    }
    let early: Vec<String> = unwind
        .walks_ended
        .iter()
        .filter(|(k, _)| **k != "complete")
        .map(|(k, n)| format!("{} {n}", k.replace('_', " ")))
        .collect();
    write!(
        w,
        "User stacks: {complete} of {total} walks with unwind tables reached the outermost frame"
    )?;
    if !early.is_empty() {
        write!(w, "; ended early: {}", early.join(", "))?;
    }
    let t = &unwind.tables;
    write!(
        w,
        " (tables of {} files, {} rows, for {} processes",
        t.files, t.rows, t.processes
    )?;
    if t.files_over_budget > 0 || t.evictions > 0 {
        write!(
            w,
            "; {} files over the --unwind-tables-mib budget, {} evictions",
            t.files_over_budget, t.evictions
        )?;
    }
    writeln!(w, ")")
}

/// `s` cut to at most `max` characters, an ellipsis marking the cut.
pub(crate) fn cut(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        let mut out: String = s.chars().take(max - 1).collect();
        out.push('…');
        out
    }
}

#[cfg(test)]
mod tests {
    use super::cut;

    #[test]
    fn cuts_long_names_on_char_boundaries() {
        assert_eq!(cut("abc", 5), "abc");
        assert_eq!(cut("ééééé€", 3), "éé…");
    }
}
