//! Durations as users write them: kubectl's / Go's form (`5s`, `2m`, `1h30m`, `500ms`).
//!
//! Parsing is jiff's "friendly" duration format, which accepts Go's forms (and a few
//! more: `1h 30m`, `5 seconds`, ISO 8601 `PT5S`). kbg adds what kubectl accepts too: a
//! bare `0` means zero. Negative durations and calendar units (days, weeks) are refused,
//! as Go's `time.ParseDuration` refuses days.

use std::time::Duration;

/// The forms [`parse`] accepts, for error messages.
pub const ACCEPTED_FORMS: &str = "a number with a unit, such as 30s, 5m, 1h30m or 500ms";

/// Parse a duration written as kubectl writes them.
///
/// # Errors
/// A message (without the input's field name) naming the accepted forms.
pub fn parse(input: &str) -> Result<Duration, String> {
    let s = input.trim();
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    let d: jiff::SignedDuration = s
        .parse()
        .map_err(|_| format!("{input:?} is not a duration; accepted forms: {ACCEPTED_FORMS}"))?;
    if d.is_negative() {
        return Err(format!(
            "{input:?} is negative; accepted forms: {ACCEPTED_FORMS}"
        ));
    }
    d.try_into()
        .map_err(|_| format!("{input:?} is out of range; accepted forms: {ACCEPTED_FORMS}"))
}

/// Show a duration the way Go prints one: `1h30m0s`, `5s`, `1.5s`, `0s`.
pub fn display(d: Duration) -> String {
    let total_ms = d.as_millis();
    if total_ms == 0 {
        return "0s".into();
    }
    let h = total_ms / 3_600_000;
    let m = (total_ms / 60_000) % 60;
    let ms = total_ms % 60_000;
    let secs = if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        let s = format!("{:.3}", ms as f64 / 1000.0);
        format!("{}s", s.trim_end_matches('0'))
    };
    match (h, m) {
        (0, 0) => secs,
        (0, m) => format!("{m}m{secs}"),
        (h, m) => format!("{h}h{m}m{secs}"),
    }
}

/// A `clap` value parser for duration flags.
///
/// # Errors
/// As [`parse`].
pub fn clap_parse(input: &str) -> Result<Duration, String> {
    parse(input)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_what_kubectl_accepts() {
        for (input, secs) in [
            ("5s", 5.0),
            ("2m", 120.0),
            ("1h30m", 5400.0),
            ("1h30m5s", 5405.0),
            ("500ms", 0.5),
            ("1.5s", 1.5),
            ("0", 0.0),
            ("0s", 0.0),
            ("10m0s", 600.0),
        ] {
            assert_eq!(parse(input).unwrap().as_secs_f64(), secs, "{input}");
        }
    }

    #[test]
    fn refuses_what_is_not_a_duration() {
        for input in ["", "5", "90", "-5s", "1d", "2w", "soon", "5 parsecs"] {
            let e = parse(input).unwrap_err();
            assert!(e.contains(ACCEPTED_FORMS), "{input}: {e}");
        }
    }

    #[test]
    fn displays_like_go() {
        for (secs, shown) in [
            (0.0, "0s"),
            (5.0, "5s"),
            (90.0, "1m30s"),
            (5400.0, "1h30m0s"),
            (1.5, "1.5s"),
            (0.25, "0.25s"),
        ] {
            assert_eq!(display(Duration::from_secs_f64(secs)), shown);
        }
    }
}
