//! Kubernetes resource quantities (`500m`, `2`, `1.5Gi`, `1e3`), as
//! k8s.io/apimachinery `resource.Quantity` reads them.

/// Parses a quantity into thousandths of its unit, rounding up (as `MilliValue` does).
/// `None` when it is not a quantity.
pub(crate) fn parse_milli(s: &str) -> Option<i128> {
    let s = s.trim();
    if s.is_empty() {
        return None;
    }
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-'))
        .unwrap_or(s.len());
    let (num, suffix) = s.split_at(split);
    let (neg, digits) = match num.strip_prefix('-') {
        Some(d) => (true, d),
        None => (false, num.strip_prefix('+').unwrap_or(num)),
    };
    if digits.is_empty() || digits.chars().filter(|&c| c == '.').count() > 1 {
        return None;
    }
    let (int_part, frac_part) = digits.split_once('.').unwrap_or((digits, ""));
    if !int_part.chars().all(|c| c.is_ascii_digit())
        || !frac_part.chars().all(|c| c.is_ascii_digit())
    {
        return None;
    }
    // value = mantissa / 10^scale
    let mantissa: i128 = format!("{int_part}{frac_part}").parse().ok()?;
    let scale = frac_part.len() as i32;
    // multiplier as (numerator, power of ten) or binary
    let (mul_bin, exp10): (i128, i32) = match suffix {
        "" => (1, 0),
        "n" => (1, -9),
        "u" => (1, -6),
        "m" => (1, -3),
        "k" => (1, 3),
        "M" => (1, 6),
        "G" => (1, 9),
        "T" => (1, 12),
        "P" => (1, 15),
        "E" => (1, 18),
        "Ki" => (1 << 10, 0),
        "Mi" => (1 << 20, 0),
        "Gi" => (1 << 30, 0),
        "Ti" => (1 << 40, 0),
        "Pi" => (1 << 50, 0),
        "Ei" => (1 << 60, 0),
        other => {
            let e = other.strip_prefix(['e', 'E'])?;
            (1, e.parse().ok()?)
        }
    };
    // milli = mantissa * mul_bin * 10^(exp10 + 3 - scale), rounded up
    let p = exp10 + 3 - scale;
    let base = mantissa.checked_mul(mul_bin)?;
    let v = if p >= 0 {
        base.checked_mul(10i128.checked_pow(p as u32)?)?
    } else {
        let d = 10i128.checked_pow((-p) as u32)?;
        (base + d - 1) / d
    };
    Some(if neg { -v } else { v })
}

/// CPU in millicores.
pub(crate) fn cpu_milli(s: &str) -> Option<i64> {
    parse_milli(s).map(|m| m.clamp(0, i64::MAX as i128) as i64)
}

/// Memory (or any count) in whole units, rounding up.
pub(crate) fn whole(s: &str) -> Option<i64> {
    parse_milli(s).map(|m| ((m + 999) / 1000).clamp(0, i64::MAX as i128) as i64)
}

/// A quantity from a JSON value (string or number).
pub(crate) fn value_milli(v: &serde_json::Value) -> Option<i128> {
    match v {
        serde_json::Value::String(s) => parse_milli(s),
        serde_json::Value::Number(n) => parse_milli(&n.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_usual_quantities() {
        assert_eq!(cpu_milli("500m"), Some(500));
        assert_eq!(cpu_milli("2"), Some(2000));
        assert_eq!(cpu_milli("0.25"), Some(250));
        assert_eq!(cpu_milli("1e3"), Some(1_000_000));
        assert_eq!(whole("16Gi"), Some(16 << 30));
        assert_eq!(whole("1.5Gi"), Some(3 << 29));
        assert_eq!(whole("128M"), Some(128_000_000));
        assert_eq!(whole("110"), Some(110));
        assert_eq!(whole("1k"), Some(1000));
        assert_eq!(cpu_milli("1u"), Some(1)); // rounds up
        assert_eq!(parse_milli("abc"), None);
        assert_eq!(parse_milli("1.2.3"), None);
        assert_eq!(parse_milli("5Qi"), None);
    }
}
