//! Durations as `cutover.toml` writes them: `500ms`, `10s`, `30m`, `1h`, `2d` and combinations
//! such as `1m30s` (largest unit first is conventional, not required).

use std::time::Duration;

/// What a valid duration looks like, for error messages.
pub(crate) const DURATION_HELP: &str =
    "use a number with a unit: 500ms, 10s, 30m, 1h (units ms, s, m, h, d; combine as in 1m30s)";

const UNITS: &[(&str, u128)] = &[
    ("d", 86_400_000_000_000),
    ("h", 3_600_000_000_000),
    ("m", 60_000_000_000),
    ("s", 1_000_000_000),
    ("ms", 1_000_000),
    ("us", 1_000),
    ("ns", 1),
];

/// Parses `"500ms"`, `"10s"`, `"30m"`, `"1h"`, `"2d"`, combinations like `"1m30s"`, and `"0"`.
///
/// The error says what is valid.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let invalid = || format!("invalid duration {s:?}: {DURATION_HELP}");
    let text = s.trim();
    if text.is_empty() {
        return Err(invalid());
    }
    if text == "0" {
        return Ok(Duration::ZERO);
    }
    let mut total: u128 = 0;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(invalid());
        }
        let number: u128 = rest[..digits].parse().map_err(|_| invalid())?;
        rest = &rest[digits..];
        let unit_len = rest.bytes().take_while(u8::is_ascii_alphabetic).count();
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let nanos_per = UNITS
            .iter()
            .find(|(name, _)| *name == unit)
            .map(|(_, n)| *n)
            .ok_or_else(invalid)?;
        total = number
            .checked_mul(nanos_per)
            .and_then(|n| total.checked_add(n))
            .ok_or_else(|| format!("duration {s:?} is too long"))?;
    }
    let secs =
        u64::try_from(total / 1_000_000_000).map_err(|_| format!("duration {s:?} is too long"))?;
    // The remainder is below 1e9, so it fits in u32.
    let nanos = u32::try_from(total % 1_000_000_000).unwrap_or(0);
    Ok(Duration::new(secs, nanos))
}

/// Formats a duration the way `cutover.toml` writes it: `"500ms"`, `"10s"`, `"1m30s"`, `"10m"`;
/// `"0s"` for zero. The inverse of [`parse_duration`].
pub fn format_duration(d: Duration) -> String {
    let mut rest = d.as_nanos();
    if rest == 0 {
        return "0s".to_string();
    }
    let mut out = String::new();
    for (unit, nanos_per) in UNITS {
        let n = rest / nanos_per;
        if n > 0 {
            out.push_str(&n.to_string());
            out.push_str(unit);
            rest -= n * nanos_per;
        }
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_the_documented_forms() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("30m"), Ok(Duration::from_secs(1800)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("2d"), Ok(Duration::from_secs(172_800)));
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
    }

    #[test]
    fn rejects_with_a_hint() {
        for bad in [
            "",
            "10",
            "10 seconds",
            "s",
            "1.5s",
            "-1s",
            "10S",
            "1m 30s",
            "ms10",
        ] {
            let err = parse_duration(bad).err().unwrap_or_default();
            assert!(err.contains("500ms, 10s"), "{bad:?}: {err}");
        }
        assert!(parse_duration("99999999999999999999999999999999999d").is_err());
    }

    #[test]
    fn formats_compactly() {
        assert_eq!(format_duration(Duration::from_millis(500)), "500ms");
        assert_eq!(format_duration(Duration::from_secs(10)), "10s");
        assert_eq!(format_duration(Duration::from_secs(90)), "1m30s");
        assert_eq!(format_duration(Duration::from_secs(600)), "10m");
        assert_eq!(format_duration(Duration::ZERO), "0s");
    }

    proptest! {
        #[test]
        fn format_then_parse_round_trips(secs in 0u64..10_000_000_000, nanos in 0u32..1_000_000_000) {
            let d = Duration::new(secs, nanos);
            prop_assert_eq!(parse_duration(&format_duration(d)), Ok(d));
        }

        #[test]
        fn garbage_never_panics(s in ".{0,40}") {
            let _ = parse_duration(&s);
        }

        #[test]
        fn digit_soup_never_panics(s in "[0-9smhdnu]{0,40}") {
            let _ = parse_duration(&s);
        }
    }
}
