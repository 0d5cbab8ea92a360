//! Durations as Vitess's flags spell them (Go's `time.ParseDuration`): `45s`, `1m30s`,
//! `500ms`, `2h`; a bare number is seconds. Shared by every command line of the project.

use std::time::Duration;

/// The longest duration accepted. Deadlines are instants this far from now: a duration past
/// a year is a typo, and one past what an instant holds would overflow.
pub const MAX: Duration = Duration::from_secs(365 * 24 * 3600);

/// Parses a Go-style duration (units `ns`, `us`/`µs`, `ms`, `s`, `m`, `h`, combinable).
///
/// # Errors
/// A message naming `text` when it is not a duration or is longer than [`MAX`].
pub fn parse(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let not = || format!("{text:?} is not a duration (try 45s, 1m30s, 500ms)");
    let secs = match t.parse::<f64>() {
        Ok(secs) => secs,
        Err(_) => {
            let mut total = 0f64;
            let mut rest = t;
            if rest.is_empty() {
                return Err(not());
            }
            while !rest.is_empty() {
                let split = rest
                    .find(|c: char| !(c.is_ascii_digit() || c == '.'))
                    .ok_or_else(not)?;
                let (num, after) = rest.split_at(split);
                let unit_len = after
                    .find(|c: char| c.is_ascii_digit() || c == '.')
                    .unwrap_or(after.len());
                let (unit, next) = after.split_at(unit_len);
                let n: f64 = num.parse().map_err(|_| not())?;
                let scale = match unit {
                    "ns" => 1e-9,
                    "us" | "µs" => 1e-6,
                    "ms" => 1e-3,
                    "s" => 1.0,
                    "m" => 60.0,
                    "h" => 3600.0,
                    _ => {
                        return Err(format!(
                            "{text:?}: unknown unit {unit:?} (ns, us, ms, s, m, h)"
                        ))
                    }
                };
                total += n * scale;
                rest = next;
            }
            total
        }
    };
    match Duration::try_from_secs_f64(secs) {
        Ok(d) if d <= MAX => Ok(d),
        Ok(_) | Err(_) if secs > 0.0 => Err(format!("{text:?} is too long (at most 365 days)")),
        _ => Err(not()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations() {
        assert_eq!(parse("45s").unwrap(), Duration::from_secs(45));
        assert_eq!(parse("1m30s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse("2").unwrap(), Duration::from_secs(2));
        assert_eq!(parse("1.5h").unwrap(), Duration::from_secs(5400));
        for bad in ["5 parsecs", "s", "", "ten", "-3s"] {
            assert!(parse(bad).is_err(), "{bad}");
        }
        for huge in ["99999999999999999999999h", "999999999999h", "366d", "8761h"] {
            let e = parse(huge).unwrap_err();
            assert!(
                e.contains("too long") || e.contains("unknown unit"),
                "{huge}: {e}"
            );
        }
        assert!(parse("8761h").unwrap_err().contains("too long"));
    }
}
