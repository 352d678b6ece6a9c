//! Measures how fast `StackSymbolizer` turns user addresses of one ELF file
//! into names, for `cargo xtask bench` (case "symbolization").
//!
//! ```sh
//! cargo run --release -p perf-user --example symbolize_bench -- FILE [ADDRESSES]
//! ```
//!
//! Picks ADDRESSES (default 20000) spread over FILE's executable segments
//! (deterministically), maps them as a process would, and times three passes:
//! - `cold`: a new symbolizer, so the file's symbols and DWARF are parsed first;
//! - `warm`: the same symbolizer, as many other addresses (file already parsed);
//! - `cached`: the first addresses again (answered from our own cache).
//!
//! Prints one JSON object on stdout; needs no privileges.

use std::{env, fs, path::PathBuf, process::ExitCode, time::Instant};

use perf_user::{
    procmaps::{Backing, Mapping, ProcessMaps},
    symbolize::StackSymbolizer,
};

/// Where the synthetic mapping of the file starts in the fake address space.
const BASE: u64 = 0x5555_0000_0000;

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), String> {
    let mut args = env::args_os().skip(1);
    let path = PathBuf::from(args.next().ok_or(
        "usage: symbolize_bench FILE [ADDRESSES] (FILE: an ELF file, e.g. target/debug/perf-user)",
    )?);
    let count: usize = match args.next() {
        Some(n) => n
            .to_str()
            .and_then(|n| n.parse().ok())
            .filter(|&n| n > 0)
            .ok_or("ADDRESSES must be a positive number")?,
        None => 20_000,
    };
    let path = fs::canonicalize(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let bytes = fs::read(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let segments = exec_segments(&bytes).map_err(|e| format!("{}: {e}", path.display()))?;

    // One mapping per executable segment, laid out as the file is.
    let maps = ProcessMaps {
        mappings: segments
            .iter()
            .map(|&(offset, size)| Mapping {
                start: BASE + offset,
                end: BASE + offset + size,
                offset,
                backing: Backing::File(path.clone()),
            })
            .collect(),
        process: None,
    };
    let first = addresses(&segments, count, 1);
    let second = addresses(&segments, count, 2);

    let mut sym = StackSymbolizer::new();
    let (cold_s, named) = pass(&mut sym, &maps, &first);
    let (warm_s, _) = pass(&mut sym, &maps, &second);
    let (cached_s, _) = pass(&mut sym, &maps, &first);
    if let Some((file, why)) = sym.failures().iter().next() {
        return Err(format!("cannot read symbols of {}: {why}", file.display()));
    }
    let rate = |s: f64| count as f64 / s;
    println!(
        "{}",
        serde_json::json!({
            "file": path,
            "file_bytes": bytes.len(),
            "addresses": count,
            "named": named,
            "cold_seconds": cold_s,
            "warm_seconds": warm_s,
            "cached_seconds": cached_s,
            "cold_per_second": rate(cold_s),
            "warm_per_second": rate(warm_s),
            "cached_per_second": rate(cached_s),
        })
    );
    Ok(())
}

/// Symbolizes each address as a one-frame stack; returns the seconds taken
/// and how many got a function name.
fn pass(sym: &mut StackSymbolizer, maps: &ProcessMaps, addrs: &[u64]) -> (f64, usize) {
    let start = Instant::now();
    sym.prepare_user(addrs.iter().map(|a| (Some(maps), std::slice::from_ref(a))));
    let named = addrs
        .iter()
        .filter(|&&a| sym.user_frames(Some(maps), &[a])[0].function.is_some())
        .count();
    (start.elapsed().as_secs_f64(), named)
}

/// `count` addresses spread over the segments in proportion to their size,
/// from a fixed pseudo-random sequence (`seed` picks which).
fn addresses(segments: &[(u64, u64)], count: usize, seed: u64) -> Vec<u64> {
    let total: u64 = segments.iter().map(|s| s.1).sum();
    let mut state = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..count)
        .map(|_| {
            // xorshift64*
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            let mut at = state.wrapping_mul(0x2545_f491_4f6c_dd1d) % total;
            for &(offset, size) in segments {
                if at < size {
                    return BASE + offset + at;
                }
                at -= size;
            }
            unreachable!("at < total")
        })
        .collect()
}

/// (file offset, size) of each executable PT_LOAD segment of a 64-bit
/// little-endian ELF file.
fn exec_segments(elf: &[u8]) -> Result<Vec<(u64, u64)>, String> {
    const PT_LOAD: u32 = 1;
    const PF_X: u32 = 1;
    let u16_at = |o: usize| elf.get(o..o + 2).map(|b| u16::from_le_bytes([b[0], b[1]]));
    let u32_at = |o: usize| {
        elf.get(o..o + 4)
            .map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")))
    };
    let u64_at = |o: usize| {
        elf.get(o..o + 8)
            .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
    };
    if elf.get(..6) != Some(b"\x7fELF\x02\x01") {
        return Err("not a 64-bit little-endian ELF file".into());
    }
    let truncated = || "truncated ELF header".to_string();
    let phoff = usize::try_from(u64_at(0x20).ok_or_else(truncated)?).map_err(|e| e.to_string())?;
    let phentsize = usize::from(u16_at(0x36).ok_or_else(truncated)?);
    let phnum = usize::from(u16_at(0x38).ok_or_else(truncated)?);
    let mut segments = Vec::new();
    for i in 0..phnum {
        let ph = phoff + i * phentsize;
        let (Some(kind), Some(flags), Some(offset), Some(size)) = (
            u32_at(ph),
            u32_at(ph + 4),
            u64_at(ph + 8),
            u64_at(ph + 0x20),
        ) else {
            return Err("truncated program headers".into());
        };
        if kind == PT_LOAD && flags & PF_X != 0 && size > 0 {
            segments.push((offset, size));
        }
    }
    if segments.is_empty() {
        return Err("no executable segment".into());
    }
    Ok(segments)
}
