//! Human durations for the command line: `10s`, `500ms`, `2m`, `1h30m`, `1.5s`.

use std::time::Duration;

/// Why a duration did not parse.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid duration {input:?}: {reason}; write a number with a unit, e.g. 10s, 500ms, 2m or 1h30m"
)]
pub struct DurationError {
    input: String,
    reason: &'static str,
}

/// Parses a duration made of one or more `<number><unit>` parts (units us, ms, s, m, h).
/// A bare number is taken as seconds.
pub fn parse(input: &str) -> Result<Duration, DurationError> {
    let err = |reason| DurationError {
        input: input.to_string(),
        reason,
    };
    let s = input.trim();
    if s.is_empty() {
        return Err(err("it is empty"));
    }
    if let Ok(secs) = s.parse::<f64>() {
        return secs_to_duration(secs).ok_or_else(|| err("it must be positive and finite"));
    }
    let mut total = 0f64;
    let mut rest = s;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(|| err("it has no unit"))?;
        if num_len == 0 {
            return Err(err("it must start with a number"));
        }
        let value: f64 = rest[..num_len]
            .parse()
            .map_err(|_| err("a number is malformed"))?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "us" | "µs" => 0.000_001,
            "ms" => 0.001,
            "s" | "sec" | "secs" => 1.0,
            "m" | "min" | "mins" => 60.0,
            "h" | "hr" | "hours" => 3600.0,
            _ => return Err(err("unknown unit (use us, ms, s, m or h)")),
        };
        total += value * scale;
        rest = &rest[unit_len..];
    }
    secs_to_duration(total).ok_or_else(|| err("it must be positive"))
}

fn secs_to_duration(secs: f64) -> Option<Duration> {
    (secs.is_finite() && secs > 0.0 && secs < 1e9).then(|| Duration::from_secs_f64(secs))
}

/// For clap's `value_parser`.
pub fn clap_parse(input: &str) -> Result<Duration, String> {
    parse(input).map_err(|e| e.to_string())
}

/// A string, or a type error that says what string was expected (the
/// configuration's durations and addresses).
pub(crate) fn parse_str<'de, D: serde::Deserializer<'de>>(
    d: D,
    expected: &'static str,
) -> Result<String, D::Error> {
    struct V(&'static str);
    impl serde::de::Visitor<'_> for V {
        type Value = String;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str(self.0)
        }
        fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<String, E> {
            Ok(v.to_string())
        }
    }
    d.deserialize_str(V(expected))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_common_forms() {
        assert_eq!(parse("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse("3"), Ok(Duration::from_secs(3)));
    }

    #[test]
    fn rejects_nonsense_with_a_reason() {
        for bad in ["", "banana", "10x", "s", "-5s", "0s", "0", "1.2.3s", "inf"] {
            let e = parse(bad).unwrap_err().to_string();
            assert!(e.contains("invalid duration"), "{bad}: {e}");
        }
    }

    proptest::proptest! {
        #[test]
        fn millis_round_trip(ms in 1u64..10_000_000) {
            proptest::prop_assert_eq!(parse(&format!("{ms}ms")), Ok(Duration::from_millis(ms)));
        }

        #[test]
        fn never_panics(s in "\\PC{0,12}") {
            let _ = parse(&s);
        }
    }
}
