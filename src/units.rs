//! Durations and sizes as people write them ("30s", "1h30m", "64KiB"): one
//! parser and formatter each, shared by the configuration, the command
//! line and the messages that print them.

use std::time::Duration;

/// Parses "30s", "10m", "1h", "6h", "1d", "500ms", compounds like "1h30m",
/// and "0". A bare number other than 0 is refused: "6" could mean seconds
/// or hours, and guessing wrong on a training period or a mute is costly.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    if t == "0" {
        return Ok(Duration::ZERO);
    }
    let err = || format!("{s:?} is not a duration (like 30s, 10m, 1h, 6h, 1d or 1h30m)");
    if t.is_empty() {
        return Err(err());
    }
    let mut total: u64 = 0;
    let mut rest = t;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(err());
        }
        let n: u64 = rest[..digits].parse().map_err(|_| err())?;
        rest = &rest[digits..];
        let unit_len = rest.bytes().take_while(u8::is_ascii_alphabetic).count();
        let unit_ms: u64 = match &rest[..unit_len] {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            "w" => 7 * 86_400_000,
            _ => return Err(err()),
        };
        rest = &rest[unit_len..];
        total = n
            .checked_mul(unit_ms)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(|| format!("{s:?} is too long a duration"))?;
    }
    Ok(Duration::from_millis(total))
}

/// A duration as the shortest string [`parse_duration`] reads back exactly
/// (for configuration values printed back).
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms == 0 {
        return "0".into();
    }
    for (unit, n) in [
        ("d", 86_400_000),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1000),
    ] {
        if ms.is_multiple_of(n) {
            return format!("{}{unit}", ms / n);
        }
    }
    format!("{ms}ms")
}

/// A duration for people, rounded to its two largest units: "0.4s", "42s",
/// "3m20s", "2h5m", "3d4h" (for messages, not read back).
pub fn format_duration_human(ms: i64) -> String {
    let ms = ms.max(0);
    if ms < 10_000 && ms % 1000 != 0 {
        let s = format!("{:.1}", ms as f64 / 1000.0);
        return format!("{}s", s.trim_end_matches(".0"));
    }
    let s = ms / 1000;
    let (d, h, m, s) = (s / 86_400, s / 3600 % 24, s / 60 % 60, s % 60);
    let two = |a: i64, ua: &str, b: i64, ub: &str| {
        if b == 0 {
            format!("{a}{ua}")
        } else {
            format!("{a}{ua}{b}{ub}")
        }
    };
    if d > 0 {
        two(d, "d", h, "h")
    } else if h > 0 {
        two(h, "h", m, "m")
    } else if m > 0 {
        two(m, "m", s, "s")
    } else {
        format!("{s}s")
    }
}

/// A size in bytes: `65536`, `64KiB` (or `64k`), `1MiB` (or `1m`).
pub fn parse_size(s: &str) -> Result<usize, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (n, unit) = t.split_at(split);
    let n: usize = n
        .parse()
        .map_err(|_| format!("{s:?} is not a size (e.g. 65536, 64KiB, 1MiB)"))?;
    let mult = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1024,
        "m" | "mb" | "mib" => 1024 * 1024,
        _ => return Err(format!("{s:?}: unknown unit (use KiB or MiB)")),
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("{s:?} is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        let p = |s| parse_duration(s).unwrap();
        assert_eq!(p("30s"), Duration::from_secs(30));
        assert_eq!(p("10m"), Duration::from_secs(600));
        assert_eq!(p("6h"), Duration::from_secs(6 * 3600));
        assert_eq!(p("1d"), Duration::from_secs(86_400));
        assert_eq!(p("1h30m"), Duration::from_secs(5400));
        assert_eq!(p("500ms"), Duration::from_millis(500));
        assert_eq!(p("0"), Duration::ZERO);
        for bad in ["", "6", "h", "1x", "-1h", "1.5h", "99999999999999999999d"] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn durations_round_trip() {
        for s in ["0", "500ms", "30s", "10m", "6h", "1d", "90s"] {
            let d = parse_duration(s).unwrap();
            assert_eq!(parse_duration(&format_duration(d)).unwrap(), d);
        }
        assert_eq!(format_duration(Duration::from_secs(3600)), "1h");
    }

    #[test]
    fn durations_for_people() {
        assert_eq!(format_duration_human(42_000), "42s");
        assert_eq!(format_duration_human(400), "0.4s");
        assert_eq!(format_duration_human(200_000), "3m20s");
        assert_eq!(format_duration_human(3_600_000), "1h");
        assert_eq!(format_duration_human(90_000_000), "1d1h");
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("65536"), Ok(65536));
        assert_eq!(parse_size("64KiB"), Ok(65536));
        assert_eq!(parse_size("1m"), Ok(1 << 20));
        assert!(parse_size("1GiB").is_err() && parse_size("x").is_err());
    }
}
