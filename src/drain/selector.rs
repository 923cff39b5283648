//! Label selectors written as strings (`--pod-selector 'app=web,tier notin (db)'`).
//!
//! kube-rs can match a [`Selector`] against labels and turn a `LabelSelector` object into
//! one, but it cannot parse the string form kubectl accepts. This module parses that form
//! (k8s.io/apimachinery `labels.Parse`): comma-separated requirements, each one of
//! `key`, `!key`, `key=value`, `key==value`, `key!=value`, `key in (a,b)`,
//! `key notin (a,b)`. The numeric `key>1` / `key<1` forms of `labels.Parse` are refused:
//! kube-rs has no expression for them and no drain needs them.

use std::collections::BTreeSet;

use kube::core::{Expression, Selector};

/// A label selector string that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{selector:?} is not a label selector: {problem}")]
pub struct SelectorError {
    /// The selector as given.
    pub selector: String,
    /// What is wrong with it.
    pub problem: String,
}

/// Parse a label selector string. The empty string selects every pod.
///
/// # Errors
/// [`SelectorError`] naming the requirement that does not parse.
pub fn parse_selector(text: &str) -> Result<Selector, SelectorError> {
    let fail = |problem: String| SelectorError {
        selector: text.to_string(),
        problem,
    };
    if text.trim().is_empty() {
        return Ok(Selector::default());
    }
    let mut exprs = Vec::new();
    for part in split_requirements(text).map_err(fail)? {
        exprs.push(parse_requirement(part.trim()).map_err(fail)?);
    }
    Ok(exprs.into_iter().collect())
}

/// Split on commas that are not inside parentheses.
fn split_requirements(text: &str) -> Result<Vec<&str>, String> {
    let mut parts = Vec::new();
    let mut depth = 0u32;
    let mut start = 0;
    for (i, c) in text.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => {
                depth = depth
                    .checked_sub(1)
                    .ok_or_else(|| "unbalanced ')'".to_string())?;
            }
            ',' if depth == 0 => {
                parts.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    if depth != 0 {
        return Err("unbalanced '('".to_string());
    }
    parts.push(&text[start..]);
    Ok(parts)
}

fn parse_requirement(req: &str) -> Result<Expression, String> {
    if req.is_empty() {
        return Err("empty requirement (two commas in a row?)".to_string());
    }
    if req.contains('>') || req.contains('<') {
        return Err(format!(
            "{req:?}: the numeric '>' and '<' operators are not supported"
        ));
    }
    if let Some((key, value)) = req.split_once("!=") {
        return Ok(Expression::NotEqual(key_of(key)?, value_of(value)?));
    }
    if let Some((key, value)) = req.split_once("==").or_else(|| req.split_once('=')) {
        return Ok(Expression::Equal(key_of(key)?, value_of(value)?));
    }
    if let Some(open) = req.find('(') {
        let head = req[..open].trim();
        let Some(inner) = req[open + 1..].trim_end().strip_suffix(')') else {
            return Err(format!("{req:?}: expected ')' at the end"));
        };
        let (key, op) = head
            .rsplit_once(char::is_whitespace)
            .ok_or_else(|| format!("{req:?}: expected 'KEY in (…)' or 'KEY notin (…)'"))?;
        let values = inner
            .split(',')
            .map(value_of)
            .collect::<Result<BTreeSet<_>, _>>()?;
        return match op.trim() {
            "in" => Ok(Expression::In(key_of(key)?, values)),
            "notin" => Ok(Expression::NotIn(key_of(key)?, values)),
            other => Err(format!(
                "{req:?}: unknown operator {other:?} (expected 'in' or 'notin')"
            )),
        };
    }
    match req.strip_prefix('!') {
        Some(key) => Ok(Expression::DoesNotExist(key_of(key)?)),
        None => Ok(Expression::Exists(key_of(req)?)),
    }
}

/// A label key: an optional DNS-subdomain prefix and `/`, then a name of at most 63
/// characters of alphanumerics, `-`, `_` and `.`, starting and ending alphanumeric.
fn key_of(raw: &str) -> Result<String, String> {
    let key = raw.trim();
    let name = match key.rsplit_once('/') {
        Some((prefix, name)) => {
            let prefix_ok = !prefix.is_empty()
                && prefix.len() <= 253
                && prefix
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.');
            if !prefix_ok {
                return Err(format!("{key:?} has an invalid prefix"));
            }
            name
        }
        None => key,
    };
    if name.is_empty() || !is_label_value(name) {
        return Err(format!("{key:?} is not a valid label key"));
    }
    Ok(key.to_string())
}

/// A label value: empty, or at most 63 characters of alphanumerics, `-`, `_` and `.`,
/// starting and ending alphanumeric.
fn value_of(raw: &str) -> Result<String, String> {
    let value = raw.trim();
    if value.is_empty() || is_label_value(value) {
        Ok(value.to_string())
    } else {
        Err(format!("{value:?} is not a valid label value"))
    }
}

fn is_label_value(s: &str) -> bool {
    let bytes = s.as_bytes();
    s.len() <= 63
        && bytes.first().is_some_and(u8::is_ascii_alphanumeric)
        && bytes.last().is_some_and(u8::is_ascii_alphanumeric)
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::core::SelectorExt;
    use std::collections::BTreeMap;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn parses_and_matches_every_form() {
        let web = labels(&[("app", "web"), ("tier", "front"), ("kbg.io/pool", "alpha")]);
        let cases: &[(&str, bool)] = &[
            ("", true),
            ("app=web", true),
            ("app==web", true),
            ("app = web", true),
            ("app=db", false),
            ("app!=db", true),
            ("app!=web", false),
            ("missing!=x", true),
            ("app", true),
            ("missing", false),
            ("!missing", true),
            ("!app", false),
            ("tier in (front,back)", true),
            ("tier in (back)", false),
            ("tier notin (back)", true),
            ("tier notin (front, back)", false),
            ("missing notin (x)", true),
            ("missing in (x)", false),
            ("app=web,tier in (front),!missing", true),
            ("app=web,tier in (back)", false),
            ("kbg.io/pool=alpha", true),
            ("app=", false),
        ];
        for (text, expected) in cases {
            let selector = parse_selector(text).unwrap_or_else(|e| panic!("{text:?}: {e}"));
            assert_eq!(selector.matches(&web), *expected, "{text:?}");
        }
    }

    #[test]
    fn refuses_what_kubectl_refuses() {
        for text in [
            "app=web,",
            ",app=web",
            "app in (a",
            "app in a)",
            "app foo (a)",
            "(a)",
            "app=we b",
            "-app=web",
            "app=web-",
            "replicas>1",
            "Bad/app=x",
            "a..b/=x",
        ] {
            let err = parse_selector(text).expect_err(text);
            assert_eq!(err.selector, text);
            assert!(err.to_string().contains("is not a label selector"), "{err}");
        }
    }
}
