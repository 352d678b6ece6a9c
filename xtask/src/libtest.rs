//! Reading what `cargo test` prints: which test binaries ran ("Running ...",
//! "Doc-tests ..."), libtest's "test result:" line of each, and the targets
//! that did not build or whose process failed; then a per-suite table and the
//! closing `N passed, M failed` line that CI output is judged by.

use std::fmt::Write as _;

/// libtest's counts for one test binary.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    pub passed: u64,
    pub failed: u64,
    pub ignored: u64,
}

/// One test binary (or a target that never got to be one).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Suite {
    pub name: String,
    /// The last "test result:" line's counts; None when it printed none.
    pub result: Option<Counts>,
    /// For a `harness = false` target: its own last "N passed, M failed[,
    /// K skipped]" line, used when there is no libtest result line.
    pub own_result: Option<Counts>,
    /// "finished in 1.23s", as printed.
    pub time: Option<String>,
    /// Cargo said the process did not exit successfully.
    pub process_failed: bool,
    /// Cargo could not compile it.
    pub build_failed: bool,
    /// Not a test binary: a cargo run that failed before any started.
    pub cargo_failed: bool,
}

impl Suite {
    fn named(name: String) -> Self {
        Self {
            name,
            ..Self::default()
        }
    }

    pub fn cargo_failed(name: String) -> Self {
        Self {
            cargo_failed: true,
            ..Self::named(name)
        }
    }

    /// Failures to count: failed tests, or one for a suite that did not
    /// build, crashed or printed no result line.
    pub fn failures(&self) -> u64 {
        match self.result {
            _ if self.build_failed || self.cargo_failed => 1,
            None => 1,
            Some(c) if self.process_failed && c.failed == 0 => 1,
            Some(c) => c.failed,
        }
    }

    pub fn ok(&self) -> bool {
        self.failures() == 0
    }

    /// Why the suite failed, when it did.
    pub fn verdict(&self) -> &'static str {
        match self.result {
            _ if self.build_failed => "FAILED (did not build)",
            _ if self.cargo_failed => "FAILED (cargo failed, see above)",
            None if self.process_failed => "FAILED (crashed: no result line)",
            None => "FAILED (no result line)",
            Some(c) if c.failed > 0 => "FAILED",
            Some(_) if self.process_failed => "FAILED (exit status)",
            Some(_) => "ok",
        }
    }
}

/// Line-by-line reader of `cargo test` output (stdout and stderr merged, in
/// order, so that each result line follows its binary's "Running" line).
#[derive(Debug, Default)]
pub struct Parser {
    done: Vec<Suite>,
    current: Option<Suite>,
}

impl Parser {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn line(&mut self, line: &str) {
        let line = line.trim_end_matches(['\r', '\n']);
        let trimmed = line.trim_start();
        if let Some(rest) = trimmed.strip_prefix("Running ") {
            self.start(running_name(rest));
        } else if let Some(krate) = trimmed.strip_prefix("Doc-tests ") {
            self.start(format!("{} doc-tests", krate.trim()));
        } else if let Some((counts, time)) = parse_result(line) {
            let suite = self
                .current
                .get_or_insert_with(|| Suite::named("(unnamed test binary)".into()));
            // The last one wins: a test's own output (with --nocapture) may
            // print such a line before the binary's real one.
            suite.result = Some(counts);
            suite.time = time;
        } else if let (Some(suite), Some(counts)) = (&mut self.current, parse_own_summary(line)) {
            suite.own_result = Some(counts);
        } else if trimmed.starts_with("error: ") && trimmed.contains(" failed, to rerun pass ") {
            // "error: test failed, ..." and "error: doctest failed, ...":
            // the binary's process exited with an error, result line or not.
            if let Some(suite) = &mut self.current {
                suite.process_failed = true;
            }
        } else if let Some(target) = trimmed
            .strip_prefix("error: could not compile ")
            .map(compile_target)
        {
            self.finish();
            let mut suite = Suite::named(target);
            suite.build_failed = true;
            if !self.done.iter().any(|s| s.name == suite.name) {
                self.done.push(suite);
            }
        }
    }

    fn start(&mut self, name: String) {
        self.finish();
        self.current = Some(Suite::named(name));
    }

    fn finish(&mut self) {
        if let Some(suite) = self.current.take() {
            self.done.push(suite);
        }
    }

    pub fn into_suites(mut self) -> Vec<Suite> {
        self.finish();
        for suite in &mut self.done {
            if suite.result.is_none() {
                suite.result = suite.own_result;
            }
        }
        self.done
    }
}

/// "unittests src/main.rs (target/debug/deps/xtask-0123abcd)" -> "xtask unittests src/main.rs";
/// "../tests/daemon.rs (target/debug/deps/daemon-0123abcd)" -> "daemon".
fn running_name(rest: &str) -> String {
    let rest = rest.trim();
    let (source, binary) = match rest.rsplit_once(" (") {
        Some((source, path)) => (source.trim(), path.trim_end_matches(')')),
        None => ("", rest.trim_matches('`')),
    };
    let file = binary.rsplit('/').next().unwrap_or(binary);
    // Cargo names test binaries NAME-HASH with a 16-hex-digit hash.
    let name = match file.rsplit_once('-') {
        Some((name, hash)) if hash.len() == 16 && hash.bytes().all(|b| b.is_ascii_hexdigit()) => {
            name
        }
        _ => file,
    };
    match source.strip_prefix("unittests ") {
        Some(src) => format!("{name} unittests {src}"),
        None => name.to_string(),
    }
}

/// "`perf-user` (test \"daemon\") due to 2 previous errors" -> "perf-user test daemon".
fn compile_target(rest: &str) -> String {
    let rest = rest.split(" due to ").next().unwrap_or(rest);
    let words: String = rest
        .chars()
        .filter(|c| !matches!(c, '`' | '"' | '(' | ')'))
        .collect();
    format!("{} (build)", words.trim())
}

/// libtest's "test result: ok. 3 passed; 1 failed; 2 ignored; 0 measured;
/// 0 filtered out; finished in 0.01s": the counts and the time.
fn parse_result(line: &str) -> Option<(Counts, Option<String>)> {
    let rest = line.strip_prefix("test result: ")?;
    let (status, rest) = rest.split_once(". ")?;
    if status != "ok" && status != "FAILED" {
        return None;
    }
    let mut counts = Counts::default();
    let mut seen = 0;
    let mut time = None;
    for field in rest.split(';').map(str::trim) {
        if let Some(t) = field.strip_prefix("finished in ") {
            time = Some(t.to_string());
            continue;
        }
        let (number, what) = field.split_once(' ')?;
        let number = number.parse::<u64>().ok()?;
        match what {
            "passed" => counts.passed = number,
            "failed" => counts.failed = number,
            "ignored" => counts.ignored = number,
            "measured" | "filtered out" => {}
            _ => return None,
        }
        seen += 1;
    }
    (seen >= 3).then_some((counts, time))
}

/// The closing line this runner prints, which `harness = false` test
/// targets print too ("bad-input catalogue: 168 cases; 160 passed, 0 failed,
/// 8 skipped"): the counts after the last ": " or "; ".
fn parse_own_summary(line: &str) -> Option<Counts> {
    let tail = line.trim_end().rsplit([':', ';']).next()?.trim();
    let mut fields = tail.split(", ");
    let mut number = |word: &str| -> Option<u64> {
        fields
            .next()?
            .strip_suffix(word)?
            .strip_suffix(' ')?
            .parse()
            .ok()
    };
    let passed = number("passed")?;
    let failed = number("failed")?;
    let ignored = match fields.next() {
        None => 0,
        Some(f) => f.strip_suffix(" skipped")?.parse().ok()?,
    };
    Some(Counts {
        passed,
        failed,
        ignored,
    })
}

/// Sums over every suite.
pub fn totals(suites: &[Suite]) -> Counts {
    suites.iter().fold(Counts::default(), |acc, s| {
        let c = s.result.unwrap_or_default();
        Counts {
            passed: acc.passed + c.passed,
            failed: acc.failed + s.failures(),
            ignored: acc.ignored + c.ignored,
        }
    })
}

/// The per-suite table, the failed suites by name, and the closing line,
/// alone and last: `N passed, M failed` (`, K skipped` when some were).
pub fn report(suites: &[Suite]) -> String {
    let width = suites
        .iter()
        .map(|s| s.name.len())
        .chain(["SUITE".len()])
        .max()
        .unwrap_or(0);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<width$}  {:>6}  {:>6}  {:>7}  {:>9}  RESULT",
        "SUITE", "PASSED", "FAILED", "SKIPPED", "TIME"
    );
    for s in suites {
        let c = s.result.unwrap_or_default();
        let _ = writeln!(
            out,
            "{:<width$}  {:>6}  {:>6}  {:>7}  {:>9}  {}",
            s.name,
            c.passed,
            s.failures(),
            c.ignored,
            s.time.as_deref().unwrap_or("-"),
            s.verdict()
        );
    }
    let failed: Vec<&str> = suites
        .iter()
        .filter(|s| !s.ok())
        .map(|s| s.name.as_str())
        .collect();
    if !failed.is_empty() {
        let _ = writeln!(out, "failed suites: {}", failed.join(", "));
    }
    out.push_str(&closing_line(totals(suites)));
    out.push('\n');
    out
}

pub fn closing_line(t: Counts) -> String {
    if t.ignored > 0 {
        format!(
            "{} passed, {} failed, {} skipped",
            t.passed, t.failed, t.ignored
        )
    } else {
        format!("{} passed, {} failed", t.passed, t.failed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Vec<Suite> {
        let mut parser = Parser::new();
        text.lines().for_each(|l| parser.line(l));
        parser.into_suites()
    }

    /// Real `cargo test --no-fail-fast` output of a crate with a unit test
    /// binary, an aborting test, a failing test, a passing one and doc tests.
    const MIXED: &str = "\
   Compiling ntw v0.1.0 (/tmp/ntw)
    Finished `test` profile [unoptimized + debuginfo] target(s) in 0.52s
     Running unittests src/lib.rs (target/debug/deps/ntw-5f0c0a1b2c3d4e5f)

running 2 tests
test t::b ... ignored
test t::a ... ok

test result: ok. 1 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out; finished in 0.00s

     Running tests/crash.rs (target/debug/deps/crash-119589059d362e16)

running 1 test
error: test failed, to rerun pass `--test crash`

Caused by:
  process didn't exit successfully: `/tmp/ntw/target/debug/deps/crash-119589059d362e16` (signal: 6, SIGABRT: process abort signal)
     Running tests/fails.rs (target/debug/deps/fails-912d514309652a66)

running 2 tests
test good ... ok
test bad ... FAILED

failures:
    bad

test result: FAILED. 1 passed; 1 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.15s

error: test failed, to rerun pass `--test fails`
     Running ../tests/zz.rs (target/debug/deps/zz-bd3cc0d6e3200264)

running 1 test
test ok ... ok

test result: ok. 1 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.00s

   Doc-tests ntw

running 0 tests

test result: ok. 0 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.00s

error: 2 targets failed:
    `--test crash`
    `--test fails`
";

    #[test]
    fn every_binary_with_its_counts() {
        let suites = parse(MIXED);
        let names: Vec<&str> = suites.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "ntw unittests src/lib.rs",
                "crash",
                "fails",
                "zz",
                "ntw doc-tests"
            ]
        );
        assert_eq!(
            suites[0].result,
            Some(Counts {
                passed: 1,
                failed: 0,
                ignored: 1
            })
        );
        assert_eq!(suites[0].time.as_deref(), Some("0.00s"));
        assert!(suites[0].ok());

        // Aborted before its result line: one failure, named.
        assert_eq!(suites[1].result, None);
        assert!(suites[1].process_failed);
        assert_eq!(suites[1].failures(), 1);
        assert_eq!(suites[1].verdict(), "FAILED (crashed: no result line)");

        assert_eq!(suites[2].failures(), 1);
        assert_eq!(suites[2].verdict(), "FAILED");
        assert!(suites[3].ok() && suites[4].ok());

        let t = totals(&suites);
        assert_eq!((t.passed, t.failed, t.ignored), (3, 2, 1));
    }

    #[test]
    fn report_ends_with_the_counts_alone() {
        let text = report(&parse(MIXED));
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(*lines.last().unwrap(), "3 passed, 2 failed, 1 skipped");
        assert!(lines[0].starts_with("SUITE"));
        assert!(text.contains("failed suites: crash, fails\n"));
        assert!(text.ends_with('\n'));
        assert_eq!(
            closing_line(Counts {
                passed: 7,
                failed: 0,
                ignored: 0
            }),
            "7 passed, 0 failed"
        );
    }

    #[test]
    fn build_failure_is_a_named_failed_suite() {
        let suites = parse(
            "error[E0308]: mismatched types\n\
             error: could not compile `perf-user` (test \"daemon\") due to 1 previous error\n\
             warning: build failed, waiting for other jobs to finish...\n",
        );
        assert_eq!(suites.len(), 1);
        assert_eq!(suites[0].name, "perf-user test daemon (build)");
        assert_eq!(suites[0].verdict(), "FAILED (did not build)");
        assert_eq!(totals(&suites).failed, 1);
    }

    #[test]
    fn no_result_line_fails_and_exit_status_after_ok_fails() {
        let suites = parse(
            "     Running tests/silent.rs (target/debug/deps/silent-0123456789abcdef)\n\
             running 3 tests\n\
             test a ... ok\n\
             \x20    Running tests/late.rs (target/debug/deps/late-0123456789abcdef)\n\
             test result: ok. 2 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 1.00s\n\
             error: test failed, to rerun pass `--test late`\n",
        );
        assert_eq!(suites[0].name, "silent");
        assert_eq!(suites[0].verdict(), "FAILED (no result line)");
        assert_eq!(suites[1].verdict(), "FAILED (exit status)");
        let t = totals(&suites);
        assert_eq!((t.passed, t.failed), (2, 2));
    }

    #[test]
    fn harness_false_target_with_its_own_summary() {
        let suites = parse(
            "     Running ../tests/bad_inputs.rs (target/debug/deps/bad_inputs-c5168035d6f6ed89)\n\
             bad-input catalogue: 168 cases\n\
             case vanished_pid ... ok (0.1 s)\n\
             \n\
             bad-input catalogue: 168 cases; 160 passed, 0 failed, 8 skipped\n\
             \x20    Running ../tests/own.rs (target/debug/deps/own-c5168035d6f6ed89)\n\
             3 passed, 1 failed\n\
             error: test failed, to rerun pass `--test own`\n",
        );
        assert_eq!(
            suites[0].result,
            Some(Counts {
                passed: 160,
                failed: 0,
                ignored: 8
            })
        );
        assert!(suites[0].ok());
        assert_eq!(suites[1].failures(), 1);
        assert_eq!(suites[1].verdict(), "FAILED");
        for line in [
            "1 passed",
            "x passed, 0 failed",
            "1 passed, 0 failed, 2 lost",
            "passed, failed",
        ] {
            assert_eq!(parse_own_summary(line), None, "{line}");
        }
    }

    #[test]
    fn lookalike_lines_are_not_results() {
        for line in [
            "test result: ok.",
            "test result: maybe. 1 passed; 0 failed; 0 ignored",
            "test result: ok. many passed; 0 failed; 0 ignored",
            "  test result: ok. 1 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out",
        ] {
            assert_eq!(parse_result(line), None, "{line}");
        }
        assert_eq!(
            parse_result(
                "test result: FAILED. 10 passed; 2 failed; 3 ignored; 0 measured; 5 filtered out; finished in 61.02s"
            ),
            Some((
                Counts {
                    passed: 10,
                    failed: 2,
                    ignored: 3
                },
                Some("61.02s".into())
            ))
        );
    }

    #[test]
    fn names_without_hash_or_source() {
        assert_eq!(running_name("target/debug/deps/old_style"), "old_style");
        assert_eq!(
            running_name("unittests src/main.rs (target/debug/deps/perf_user-0123456789abcdef)"),
            "perf_user unittests src/main.rs"
        );
        assert_eq!(
            running_name("../tests/no-btf.rs (target/debug/deps/no-btf-0123456789abcdef)"),
            "no-btf"
        );
    }
}
