//! `--format folded`: `process;root;...;leaf count`, one line per stack, as
//! flamegraph.pl and inferno read them. Kernel frames carry the `_[k]` suffix
//! that flamegraph.pl's palettes colour apart.

use std::io::{self, Write};

use crate::profile::{Profile, StackSample};

/// The folded lines, merged by stack and sorted, without trailing newlines.
pub fn lines(profile: &Profile) -> Vec<String> {
    let mut merged: std::collections::BTreeMap<String, u64> = Default::default();
    for stack in &profile.stacks {
        *merged.entry(line(stack)).or_default() += stack.count;
    }
    merged
        .into_iter()
        .map(|(stack, count)| format!("{stack} {count}"))
        .collect()
}

/// One stack's folded form, without its count: `process;root;...;leaf`.
pub fn line(stack: &StackSample) -> String {
    let mut line = sanitize(&stack.process);
    for frame in &stack.frames {
        line.push(';');
        line.push_str(&sanitize(&frame.name()));
        if frame.kernel {
            line.push_str("_[k]");
        }
    }
    // Off-CPU and wall-clock stacks end in their state, so that the
    // flame graph's tops say what the time was spent doing.
    if let Some(state) = stack.state {
        line.push_str(";[");
        line.push_str(state.name());
        line.push(']');
    }
    line
}

/// `;` separates frames and a newline ends a record: neither may appear in a name.
fn sanitize(name: &str) -> String {
    name.replace([';', '\n', '\r'], "_")
}

/// Writes the folded stacks.
pub fn write(profile: &Profile, w: &mut dyn Write) -> io::Result<()> {
    for line in lines(profile) {
        writeln!(w, "{line}")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::profile::{Frame, LostCounts, StackSample};

    fn frame(name: Option<&str>, kernel: bool) -> Arc<Frame> {
        Arc::new(Frame {
            function: name.map(Into::into),
            module: if kernel { "[kernel]" } else { "app" }.into(),
            offset: 0x10,
            address: 0x10,
            function_start: None,
            file: None,
            line: None,
            kernel,
        })
    }

    #[test]
    fn folds_and_merges_threads() {
        let s = |tid, count| StackSample {
            state: None,
            pid: 1,
            tid,
            process: "app".into(),
            thread: "t".into(),
            frames: vec![
                frame(Some("main"), false),
                frame(Some("a;b"), false),
                frame(None, false),
                frame(Some("do_syscall_64"), true),
            ],
            count,
        };
        let p = Profile {
            kind: crate::profile::ProfileKind::Cpu,
            frequency_hz: 99,
            duration_secs: 1.0,
            start_unix_nanos: 0,
            cpus: 1,
            total_samples: 5,
            lost: LostCounts::default(),
            unwind: None,
            off_cpu: None,
            stacks: vec![s(1, 2), s(2, 3)],
        };
        assert_eq!(
            lines(&p),
            vec!["app;main;a_b;app+0x10;do_syscall_64_[k] 5".to_string()]
        );
    }
}
