//! Measures how long building a file's unwind table takes, for
//! `cargo xtask bench` (case "cpu", the issue 13 target: tables for
//! libpython built in 100 ms or less).
//!
//! ```sh
//! cargo run --release -p perf-user --example unwind_table_bench -- FILE... [--reps N]
//! ```
//!
//! For each FILE, `reps` times (default 5): a new `TableStore`, then
//! `get_or_build` (read the file, gimli over `.eh_frame` and `.debug_frame`,
//! merge the rows), then the kernel's page index of the rows. Prints one JSON
//! object per file on stdout with the fastest and median times; needs no
//! privileges.

use std::{env, os::unix::fs::MetadataExt as _, path::PathBuf, process::ExitCode, time::Instant};

use perf_user::unwind::store::{FileKey, TableStore, pages};

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
    let mut files = Vec::new();
    let mut reps = 5usize;
    let mut args = env::args_os().skip(1);
    while let Some(arg) = args.next() {
        if arg == "--reps" {
            reps = args
                .next()
                .and_then(|n| n.to_str()?.parse().ok())
                .filter(|&n| n > 0)
                .ok_or("--reps needs a positive number")?;
        } else {
            files.push(PathBuf::from(arg));
        }
    }
    if files.is_empty() {
        return Err("usage: unwind_table_bench FILE... [--reps N]".into());
    }
    for path in files {
        let path = std::fs::canonicalize(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let meta = std::fs::metadata(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let key = FileKey {
            dev: meta.dev(),
            inode: meta.ino(),
        };
        let mut build_ms = Vec::with_capacity(reps);
        let mut index_ms = Vec::with_capacity(reps);
        let mut rows = 0;
        let mut page_count = 0;
        let mut bytes = 0;
        for _ in 0..reps {
            let mut store = TableStore::new(usize::MAX);
            let t0 = Instant::now();
            let table = store
                .get_or_build(key, &path)
                .map_err(|e| format!("{}: {e}", path.display()))?;
            let t1 = Instant::now();
            let index = pages(&table.rows);
            build_ms.push((t1 - t0).as_secs_f64() * 1e3);
            index_ms.push(t1.elapsed().as_secs_f64() * 1e3);
            rows = table.rows.len();
            bytes = table.bytes();
            page_count = index.len();
        }
        let min = |v: &[f64]| v.iter().copied().fold(f64::INFINITY, f64::min);
        let median = |v: &mut Vec<f64>| {
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        };
        println!(
            "{}",
            serde_json::json!({
                "file": path,
                "file_bytes": meta.len(),
                "rows": rows,
                "table_bytes": bytes,
                "pages": page_count,
                "reps": reps,
                "build_ms_min": min(&build_ms),
                "build_ms_median": median(&mut build_ms),
                "index_ms_median": median(&mut index_ms),
            })
        );
    }
    Ok(())
}
