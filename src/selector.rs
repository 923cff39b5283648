//! Label selectors and the Kubernetes name rules they use, as pure functions.
//!
//! A pool that kbg did not create is adopted through a label selector in `kbg.yaml`
//! (`selector: eks.amazonaws.com/nodegroup=alpha`). kbg parses it with the grammar of
//! `kubectl get -l` (k8s.io/apimachinery `labels.Parse`): comma-separated requirements,
//! each one of `key`, `!key`, `key=value`, `key==value`, `key!=value`,
//! `key in (a,b)`, `key notin (a,b)`, `key>N`, `key<N`. The parsed [`Selector`] both
//! matches nodes locally and renders the canonical string sent to the API server as
//! `labelSelector`, so what kbg checks and what the server filters are the same thing.
//!
//! The name rules are the API server's validation (apimachinery `validation.go`):
//! qualified names for label and taint keys, label values, DNS-1123 labels for pool names.

use std::collections::BTreeMap;
use std::fmt;

/// One requirement of a [`Selector`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Requirement {
    /// `key`: the label is present.
    Exists(String),
    /// `!key`: the label is absent.
    DoesNotExist(String),
    /// `key=value` / `key==value`.
    Equals(String, String),
    /// `key!=value`: absent, or present with another value.
    NotEquals(String, String),
    /// `key in (a,b)`.
    In(String, Vec<String>),
    /// `key notin (a,b)`: absent, or present with a value outside the set.
    NotIn(String, Vec<String>),
    /// `key>N`: present with an integer value greater than `N`.
    GreaterThan(String, i64),
    /// `key<N`: present with an integer value less than `N`.
    LessThan(String, i64),
}

impl Requirement {
    /// Whether `labels` satisfy this requirement.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        match self {
            Requirement::Exists(k) => labels.contains_key(k),
            Requirement::DoesNotExist(k) => !labels.contains_key(k),
            Requirement::Equals(k, v) => labels.get(k) == Some(v),
            Requirement::NotEquals(k, v) => labels.get(k) != Some(v),
            Requirement::In(k, vs) => labels.get(k).is_some_and(|v| vs.contains(v)),
            Requirement::NotIn(k, vs) => labels.get(k).is_none_or(|v| !vs.contains(v)),
            Requirement::GreaterThan(k, n) => labels
                .get(k)
                .and_then(|v| v.parse::<i64>().ok())
                .is_some_and(|v| v > *n),
            Requirement::LessThan(k, n) => labels
                .get(k)
                .and_then(|v| v.parse::<i64>().ok())
                .is_some_and(|v| v < *n),
        }
    }
}

impl fmt::Display for Requirement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Requirement::Exists(k) => write!(f, "{k}"),
            Requirement::DoesNotExist(k) => write!(f, "!{k}"),
            Requirement::Equals(k, v) => write!(f, "{k}={v}"),
            Requirement::NotEquals(k, v) => write!(f, "{k}!={v}"),
            Requirement::In(k, vs) => write!(f, "{k} in ({})", vs.join(",")),
            Requirement::NotIn(k, vs) => write!(f, "{k} notin ({})", vs.join(",")),
            Requirement::GreaterThan(k, n) => write!(f, "{k}>{n}"),
            Requirement::LessThan(k, n) => write!(f, "{k}<{n}"),
        }
    }
}

/// A parsed label selector: every requirement must hold. Displays in the canonical form
/// the API server accepts as `labelSelector`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Selector {
    requirements: Vec<Requirement>,
}

impl Selector {
    /// The selector `key=value`.
    pub fn equals(key: &str, value: &str) -> Self {
        Selector {
            requirements: vec![Requirement::Equals(key.into(), value.into())],
        }
    }

    /// Parse a selector in `kubectl -l` syntax.
    ///
    /// # Errors
    /// One line saying what is wrong and where; an empty selector is refused (it would
    /// match every node).
    pub fn parse(input: &str) -> Result<Self, String> {
        let mut p = Parser {
            s: input.as_bytes(),
            i: 0,
            input,
        };
        let mut requirements = Vec::new();
        loop {
            p.skip_ws();
            requirements.push(p.requirement()?);
            p.skip_ws();
            match p.peek() {
                None => break,
                Some(b',') => p.i += 1,
                Some(_) => return Err(p.error("expected ',' between requirements")),
            }
        }
        Ok(Selector { requirements })
    }

    /// Whether `labels` satisfy every requirement.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.requirements.iter().all(|r| r.matches(labels))
    }

    /// The requirements, in the order written.
    pub fn requirements(&self) -> &[Requirement] {
        &self.requirements
    }
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, r) in self.requirements.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{r}")?;
        }
        Ok(())
    }
}

impl std::str::FromStr for Selector {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Selector::parse(s)
    }
}

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
    input: &'a str,
}

impl Parser<'_> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    fn skip_ws(&mut self) {
        while self.peek().is_some_and(|b| b == b' ' || b == b'\t') {
            self.i += 1;
        }
    }

    fn error(&self, what: &str) -> String {
        format!(
            "invalid label selector {:?} at character {}: {what}",
            self.input,
            self.i + 1
        )
    }

    /// A run of characters that can be part of a key or a value.
    fn word(&mut self) -> &str {
        let start = self.i;
        while self
            .peek()
            .is_some_and(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'/'))
        {
            self.i += 1;
        }
        // Only ASCII bytes were consumed, so this is a char boundary.
        &self.input[start..self.i]
    }

    fn key(&mut self) -> Result<String, String> {
        let at = self.i;
        let k = self.word().to_string();
        if k.is_empty() {
            self.i = at;
            return Err(self.error("expected a label key"));
        }
        validate_qualified_name(&k).map_err(|e| {
            self.i = at;
            self.error(&format!("label key {k:?} {e}"))
        })?;
        Ok(k)
    }

    fn value(&mut self) -> Result<String, String> {
        self.skip_ws();
        let at = self.i;
        let v = self.word().to_string();
        validate_label_value(&v).map_err(|e| {
            self.i = at;
            self.error(&format!("label value {v:?} {e}"))
        })?;
        Ok(v)
    }

    fn integer(&mut self) -> Result<i64, String> {
        self.skip_ws();
        let at = self.i;
        let v = self.word().to_string();
        v.parse().map_err(|_| {
            self.i = at;
            self.error(&format!("{v:?} is not an integer"))
        })
    }

    fn set(&mut self) -> Result<Vec<String>, String> {
        self.skip_ws();
        if self.peek() != Some(b'(') {
            return Err(self.error("expected '(' to open the set of values"));
        }
        self.i += 1;
        let mut values = Vec::new();
        loop {
            values.push(self.value()?);
            self.skip_ws();
            match self.peek() {
                Some(b',') => self.i += 1,
                Some(b')') => {
                    if values.len() == 1 && values[0].is_empty() {
                        return Err(self.error("the set of values is empty"));
                    }
                    self.i += 1;
                    return Ok(values);
                }
                _ => return Err(self.error("expected ',' or ')' in the set of values")),
            }
        }
    }

    fn keyword(&mut self, kw: &str) -> bool {
        let end = self.i + kw.len();
        let followed_by_sep = self
            .s
            .get(end)
            .is_none_or(|b| matches!(b, b' ' | b'\t' | b'('));
        if self.s.get(self.i..end) == Some(kw.as_bytes()) && followed_by_sep {
            self.i = end;
            true
        } else {
            false
        }
    }

    fn requirement(&mut self) -> Result<Requirement, String> {
        if self.peek() == Some(b'!') {
            self.i += 1;
            self.skip_ws();
            return Ok(Requirement::DoesNotExist(self.key()?));
        }
        let key = self.key()?;
        self.skip_ws();
        let rest = &self.s[self.i..];
        if rest.starts_with(b"==") {
            self.i += 2;
            Ok(Requirement::Equals(key, self.value()?))
        } else if rest.starts_with(b"!=") {
            self.i += 2;
            Ok(Requirement::NotEquals(key, self.value()?))
        } else if rest.starts_with(b"=") {
            self.i += 1;
            Ok(Requirement::Equals(key, self.value()?))
        } else if rest.starts_with(b">") {
            self.i += 1;
            Ok(Requirement::GreaterThan(key, self.integer()?))
        } else if rest.starts_with(b"<") {
            self.i += 1;
            Ok(Requirement::LessThan(key, self.integer()?))
        } else if self.keyword("notin") {
            Ok(Requirement::NotIn(key, self.set()?))
        } else if self.keyword("in") {
            Ok(Requirement::In(key, self.set()?))
        } else if rest.is_empty() || rest.starts_with(b",") {
            Ok(Requirement::Exists(key))
        } else {
            Err(self.error("expected an operator (=, ==, !=, in, notin, >, <)"))
        }
    }
}

fn is_name_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.')
}

/// The name part of a qualified name or a label value: at most 63 characters,
/// alphanumerics, `-`, `_`, `.`, beginning and ending with an alphanumeric.
fn check_name_part(s: &str) -> Result<(), String> {
    if s.len() > 63 {
        return Err(format!(
            "is {} characters long; at most 63 are allowed",
            s.len()
        ));
    }
    let b = s.as_bytes();
    if !b.iter().all(|&c| is_name_char(c)) {
        return Err("may contain only letters, digits, '-', '_' and '.'".into());
    }
    if !b.first().is_some_and(u8::is_ascii_alphanumeric)
        || !b.last().is_some_and(u8::is_ascii_alphanumeric)
    {
        return Err("must begin and end with a letter or digit".into());
    }
    Ok(())
}

/// A DNS-1123 subdomain: at most 253 characters, lowercase alphanumerics, `-` and `.`,
/// beginning and ending with an alphanumeric.
///
/// # Errors
/// What is wrong, as a phrase to follow the name ("is … long").
pub fn validate_dns_subdomain(s: &str) -> Result<(), String> {
    check_dns(s, 253, true)
}

fn check_dns(s: &str, max: usize, dots: bool) -> Result<(), String> {
    if s.is_empty() {
        return Err("is empty".into());
    }
    if s.len() > max {
        return Err(format!(
            "is {} characters long; at most {max} are allowed",
            s.len()
        ));
    }
    let b = s.as_bytes();
    let allowed =
        |c: u8| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-' || (dots && c == b'.');
    if !b.iter().all(|&c| allowed(c)) {
        return Err(if dots {
            "may contain only lowercase letters, digits, '-' and '.'".into()
        } else {
            "may contain only lowercase letters, digits and '-'".into()
        });
    }
    if !b[0].is_ascii_alphanumeric() || !b[b.len() - 1].is_ascii_alphanumeric() {
        return Err("must begin and end with a lowercase letter or digit".into());
    }
    Ok(())
}

/// A DNS-1123 label (pool names, namespaces): at most 63 characters, lowercase
/// alphanumerics and `-`, beginning and ending with an alphanumeric.
///
/// # Errors
/// What is wrong, as a phrase to follow the name.
pub fn validate_dns_label(s: &str) -> Result<(), String> {
    check_dns(s, 63, false)
}

/// A qualified name (label keys, annotation keys, taint keys): `[prefix/]name`, where the
/// prefix is a DNS-1123 subdomain and the name at most 63 characters of alphanumerics,
/// `-`, `_`, `.`.
///
/// # Errors
/// What is wrong, as a phrase to follow the name.
pub fn validate_qualified_name(s: &str) -> Result<(), String> {
    if s.is_empty() {
        return Err("is empty".into());
    }
    let (prefix, name) = match s.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, s),
    };
    if let Some(p) = prefix {
        validate_dns_subdomain(p).map_err(|e| format!("has a prefix {p:?} that {e}"))?;
    }
    if name.is_empty() {
        return Err("has an empty name after the prefix".into());
    }
    check_name_part(name)
}

/// A label value: empty, or at most 63 characters of alphanumerics, `-`, `_`, `.`,
/// beginning and ending with an alphanumeric.
///
/// # Errors
/// What is wrong, as a phrase to follow the value.
pub fn validate_label_value(s: &str) -> Result<(), String> {
    if s.is_empty() {
        return Ok(());
    }
    check_name_part(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn parses_and_matches_every_operator() {
        let node = labels(&[
            ("eks.amazonaws.com/nodegroup", "alpha"),
            ("tier", "web"),
            ("gen", "3"),
        ]);
        for (sel, canonical, matches) in [
            (
                "eks.amazonaws.com/nodegroup=alpha",
                "eks.amazonaws.com/nodegroup=alpha",
                true,
            ),
            (
                "eks.amazonaws.com/nodegroup==beta",
                "eks.amazonaws.com/nodegroup=beta",
                false,
            ),
            ("tier!=web", "tier!=web", false),
            ("zone!=a", "zone!=a", true),
            ("tier", "tier", true),
            ("!tier", "!tier", false),
            ("! zone", "!zone", true),
            ("tier in (web, api)", "tier in (web,api)", true),
            ("tier notin (web)", "tier notin (web)", false),
            ("zone notin (a,b)", "zone notin (a,b)", true),
            ("gen>2", "gen>2", true),
            ("gen < 3", "gen<3", false),
            ("tier=web, gen>1", "tier=web,gen>1", true),
            ("tier=web,gen>5", "tier=web,gen>5", false),
            ("tier=", "tier=", false),
        ] {
            let s = Selector::parse(sel).unwrap_or_else(|e| panic!("{sel}: {e}"));
            assert_eq!(s.to_string(), canonical, "{sel}");
            assert_eq!(s.matches(&node), matches, "{sel}");
            // The canonical form parses back to the same selector.
            assert_eq!(Selector::parse(&s.to_string()).unwrap(), s, "{sel}");
        }
    }

    #[test]
    fn refuses_bad_selectors_with_one_line() {
        for sel in [
            "",
            ",",
            "a=b,",
            "=b",
            "a=b c",
            "a in b",
            "a in (b",
            "a notin ()",
            "a>x",
            "-a=b",
            "a=-b",
            "UPPER.example.com/x=y",
            "a/b/c=d",
            "é=1",
            &format!("a={}", "x".repeat(64)),
            ",a=b",
            "a foo (b)",
            "(a)",
            "a in b)",
            "a=b-",
            "a..b/=x",
        ] {
            let e = Selector::parse(sel).expect_err(sel);
            assert!(e.starts_with("invalid label selector"), "{sel}: {e}");
            assert!(!e.contains('\n'));
        }
    }

    #[test]
    fn name_rules() {
        for (name, ok) in [
            ("alpha", true),
            ("a-1", true),
            ("Alpha", false),
            ("-a", false),
            ("a_b", false),
            ("", false),
            (&"a".repeat(64) as &str, false),
        ] {
            assert_eq!(validate_dns_label(name).is_ok(), ok, "{name:?}");
        }
        for (key, ok) in [
            ("kbg.io/pool", true),
            ("node-role.kubernetes.io/control-plane", true),
            ("dedicated", true),
            ("a_b.c-d", true),
            ("/x", false),
            ("x/", false),
            ("Kbg.io/pool", false),
            ("kbg.io/-x", false),
        ] {
            assert_eq!(validate_qualified_name(key).is_ok(), ok, "{key:?}");
        }
        for (v, ok) in [
            ("", true),
            ("web", true),
            ("v1.31", true),
            ("a b", false),
            ("_a", false),
        ] {
            assert_eq!(validate_label_value(v).is_ok(), ok, "{v:?}");
        }
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Any input: a selector or one line, never a panic; a parsed selector's
        /// canonical form parses back to the same selector.
        #[test]
        fn never_panics_and_round_trips(input in ".{0,80}") {
            match Selector::parse(&input) {
                Ok(s) => prop_assert_eq!(Selector::parse(&s.to_string()).unwrap(), s),
                Err(e) => prop_assert!(!e.contains('\n')),
            }
        }

        #[test]
        fn selector_shaped_input(input in "[!a-z./=(), -]{0,40}") {
            if let Err(e) = Selector::parse(&input) {
                prop_assert!(e.starts_with("invalid label selector"));
            }
        }
    }
}
