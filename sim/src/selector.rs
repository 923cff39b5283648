//! Label selectors (the full set-based string syntax of k8s.io/apimachinery `labels.Parse`,
//! and the `LabelSelector` / `NodeSelectorTerm` objects), and field selectors
//! (`fields.ParseSelector`).

use serde_json::Value;

/// Something with labels.
pub(crate) trait LabelGet {
    /// The value of label `key`.
    fn label(&self, key: &str) -> Option<&str>;
}

impl LabelGet for serde_json::Map<String, Value> {
    fn label(&self, key: &str) -> Option<&str> {
        self.get(key).and_then(Value::as_str)
    }
}

impl LabelGet for [(Box<str>, Box<str>)] {
    fn label(&self, key: &str) -> Option<&str> {
        self.binary_search_by(|(k, _)| (**k).cmp(key))
            .ok()
            .map(|i| &*self[i].1)
    }
}

/// An operator of a requirement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Op {
    /// `key in (a,b)`, `key=a`, `key==a`
    In,
    /// `key notin (a,b)`, `key!=a`
    NotIn,
    /// `key`
    Exists,
    /// `!key`
    DoesNotExist,
    /// `key>3` (integers)
    Gt,
    /// `key<3` (integers)
    Lt,
}

/// One requirement of a selector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Requirement {
    /// The label key.
    pub key: String,
    /// The operator.
    pub op: Op,
    /// The values (one for Gt/Lt; none for Exists/DoesNotExist).
    pub values: Vec<String>,
}

impl Requirement {
    fn matches(&self, labels: &(impl LabelGet + ?Sized)) -> bool {
        let v = labels.label(&self.key);
        match self.op {
            Op::In => v.is_some_and(|v| self.values.iter().any(|x| x == v)),
            Op::NotIn => v.is_none_or(|v| !self.values.iter().any(|x| x == v)),
            Op::Exists => v.is_some(),
            Op::DoesNotExist => v.is_none(),
            Op::Gt | Op::Lt => {
                let (Some(v), Some(bound)) = (
                    v.and_then(|v| v.parse::<i64>().ok()),
                    self.values.first().and_then(|b| b.parse::<i64>().ok()),
                ) else {
                    return false;
                };
                if self.op == Op::Gt {
                    v > bound
                } else {
                    v < bound
                }
            }
        }
    }
}

/// A label selector: requirements ANDed. Empty matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Selector {
    /// The requirements.
    pub reqs: Vec<Requirement>,
    /// A selector that matches nothing (a `null` selector where Kubernetes says so).
    pub nothing: bool,
}

impl Selector {
    /// The selector matching nothing.
    pub(crate) fn nothing() -> Self {
        Selector {
            reqs: vec![],
            nothing: true,
        }
    }

    /// Whether `labels` satisfy every requirement.
    pub(crate) fn matches(&self, labels: &(impl LabelGet + ?Sized)) -> bool {
        !self.nothing && self.reqs.iter().all(|r| r.matches(labels))
    }

    /// Whether this selector matches every object.
    pub(crate) fn is_everything(&self) -> bool {
        !self.nothing && self.reqs.is_empty()
    }

    /// Parses the string syntax (`app=web,tier in (a,b),!canary`).
    ///
    /// # Errors
    /// The message of `labels.Parse`, e.g. `unable to parse requirement: found '==',
    /// expected: identifier`.
    pub(crate) fn parse(s: &str) -> Result<Selector, String> {
        let toks = lex(s);
        let mut p = Parser { toks, pos: 0 };
        let mut reqs = Vec::new();
        loop {
            match p.peek() {
                Tok::Eos => break,
                Tok::Ident(_) | Tok::Bang => {
                    let r = p
                        .requirement()
                        .map_err(|e| format!("unable to parse requirement: {e}"))?;
                    reqs.push(r);
                    match p.next() {
                        Tok::Eos => break,
                        Tok::Comma => match p.peek() {
                            Tok::Ident(_) | Tok::Bang => {}
                            t => {
                                return Err(format!(
                                    "found '{}', expected: identifier after ','",
                                    t.text()
                                ));
                            }
                        },
                        t => {
                            return Err(format!(
                                "found '{}', expected: ',' or 'end of string'",
                                t.text()
                            ));
                        }
                    }
                }
                t => {
                    return Err(format!(
                        "found '{}', expected: !, identifier, or 'end of string'",
                        t.text()
                    ));
                }
            }
        }
        Ok(Selector {
            reqs,
            nothing: false,
        })
    }

    /// From a `LabelSelector` object (`matchLabels`, `matchExpressions`). `null` gives
    /// `None`: callers decide what a missing selector means.
    ///
    /// # Errors
    /// A message naming the bad operator or values.
    pub(crate) fn from_label_selector(v: &Value) -> Result<Option<Selector>, String> {
        if v.is_null() {
            return Ok(None);
        }
        let mut reqs = Vec::new();
        if let Some(m) = v.get("matchLabels").and_then(Value::as_object) {
            for (k, val) in m {
                reqs.push(Requirement {
                    key: k.clone(),
                    op: Op::In,
                    values: vec![val.as_str().unwrap_or_default().to_string()],
                });
            }
        }
        if let Some(exprs) = v.get("matchExpressions").and_then(Value::as_array) {
            for e in exprs {
                reqs.push(expression(e, false)?);
            }
        }
        Ok(Some(Selector {
            reqs,
            nothing: false,
        }))
    }
}

fn expression(e: &Value, allow_gt_lt: bool) -> Result<Requirement, String> {
    let key = e.get("key").and_then(Value::as_str).unwrap_or_default();
    let values: Vec<String> = e
        .get("values")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    let op = match e
        .get("operator")
        .and_then(Value::as_str)
        .unwrap_or_default()
    {
        "In" => Op::In,
        "NotIn" => Op::NotIn,
        "Exists" => Op::Exists,
        "DoesNotExist" => Op::DoesNotExist,
        "Gt" if allow_gt_lt => Op::Gt,
        "Lt" if allow_gt_lt => Op::Lt,
        other => return Err(format!("{other:?} is not a valid selector operator")),
    };
    if matches!(op, Op::In | Op::NotIn) && values.is_empty() {
        return Err("for 'in', 'notin' operators, values set can't be empty".into());
    }
    Ok(Requirement {
        key: key.to_string(),
        op,
        values,
    })
}

/// A node selector term (`matchExpressions` on labels, `matchFields` on `metadata.name`),
/// as in required node affinity.
#[derive(Debug, Clone, Default)]
pub(crate) struct NodeSelectorTerm {
    labels: Vec<Requirement>,
    fields: Vec<Requirement>,
}

impl NodeSelectorTerm {
    /// Parses one term.
    pub(crate) fn from_value(v: &Value) -> Result<NodeSelectorTerm, String> {
        let mut t = NodeSelectorTerm::default();
        for e in v
            .get("matchExpressions")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            t.labels.push(expression(e, true)?);
        }
        for e in v
            .get("matchFields")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            t.fields.push(expression(e, true)?);
        }
        Ok(t)
    }

    /// Whether a node with these labels and name matches. An empty term matches nothing.
    pub(crate) fn matches(&self, labels: &(impl LabelGet + ?Sized), name: &str) -> bool {
        if self.labels.is_empty() && self.fields.is_empty() {
            return false;
        }
        struct Name<'a>(&'a str);
        impl LabelGet for Name<'_> {
            fn label(&self, key: &str) -> Option<&str> {
                (key == "metadata.name").then_some(self.0)
            }
        }
        self.labels.iter().all(|r| r.matches(labels))
            && self.fields.iter().all(|r| r.matches(&Name(name)))
    }

    /// The single node name this term pins (`matchFields metadata.name In [x]`), as the
    /// DaemonSet controller writes it.
    pub(crate) fn pinned_name(&self) -> Option<&str> {
        self.fields
            .iter()
            .find(|r| r.key == "metadata.name" && r.op == Op::In && r.values.len() == 1)
            .map(|r| r.values[0].as_str())
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    Bang,
    NotEquals,
    Equals,
    DoubleEquals,
    Comma,
    Open,
    Close,
    In,
    NotIn,
    Gt,
    Lt,
    Eos,
}

impl Tok {
    fn text(&self) -> String {
        match self {
            Tok::Ident(s) => s.clone(),
            Tok::Bang => "!".into(),
            Tok::NotEquals => "!=".into(),
            Tok::Equals => "=".into(),
            Tok::DoubleEquals => "==".into(),
            Tok::Comma => ",".into(),
            Tok::Open => "(".into(),
            Tok::Close => ")".into(),
            Tok::In => "in".into(),
            Tok::NotIn => "notin".into(),
            Tok::Gt => ">".into(),
            Tok::Lt => "<".into(),
            Tok::Eos => String::new(),
        }
    }
}

fn is_special(c: char) -> bool {
    matches!(c, '=' | '!' | '(' | ')' | ',' | '>' | '<')
}

fn lex(s: &str) -> Vec<Tok> {
    let chars: Vec<char> = s.chars().collect();
    let mut i = 0;
    let mut out = Vec::new();
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
            continue;
        }
        if is_special(c) {
            let mut j = i;
            while j < chars.len() && is_special(chars[j]) {
                j += 1;
            }
            // longest known operator prefix, as the Go lexer does
            let run: String = chars[i..j].iter().collect();
            let (tok, len) = if run.starts_with("!=") {
                (Tok::NotEquals, 2)
            } else if run.starts_with("==") {
                (Tok::DoubleEquals, 2)
            } else {
                match c {
                    '=' => (Tok::Equals, 1),
                    '!' => (Tok::Bang, 1),
                    '(' => (Tok::Open, 1),
                    ')' => (Tok::Close, 1),
                    ',' => (Tok::Comma, 1),
                    '>' => (Tok::Gt, 1),
                    _ => (Tok::Lt, 1),
                }
            };
            out.push(tok);
            i += len;
            continue;
        }
        let mut j = i;
        while j < chars.len() && !chars[j].is_whitespace() && !is_special(chars[j]) {
            j += 1;
        }
        let word: String = chars[i..j].iter().collect();
        out.push(match word.as_str() {
            "in" => Tok::In,
            "notin" => Tok::NotIn,
            _ => Tok::Ident(word),
        });
        i = j;
    }
    out.push(Tok::Eos);
    out
}

struct Parser {
    toks: Vec<Tok>,
    pos: usize,
}

impl Parser {
    fn peek(&self) -> Tok {
        self.toks.get(self.pos).cloned().unwrap_or(Tok::Eos)
    }

    fn next(&mut self) -> Tok {
        let t = self.peek();
        if self.pos < self.toks.len() {
            self.pos += 1;
        }
        t
    }

    fn requirement(&mut self) -> Result<Requirement, String> {
        let mut op = None;
        if self.peek() == Tok::Bang {
            self.next();
            op = Some(Op::DoesNotExist);
        }
        let key = match self.next() {
            Tok::Ident(k) => k,
            t => return Err(format!("found '{}', expected: identifier", t.text())),
        };
        validate_key(&key)?;
        if matches!(self.peek(), Tok::Eos | Tok::Comma) {
            return Ok(Requirement {
                key,
                op: op.unwrap_or(Op::Exists),
                values: vec![],
            });
        }
        if op.is_some() {
            return Err(format!(
                "found '{}', expected: ',' or 'end of string'",
                self.peek().text()
            ));
        }
        let (op, values) = match self.next() {
            Tok::In => (Op::In, self.set()?),
            Tok::NotIn => (Op::NotIn, self.set()?),
            Tok::Equals | Tok::DoubleEquals => (Op::In, vec![self.exact_value()?]),
            Tok::NotEquals => (Op::NotIn, vec![self.exact_value()?]),
            Tok::Gt | Tok::Lt => {
                let op = if self.toks[self.pos - 1] == Tok::Gt {
                    Op::Gt
                } else {
                    Op::Lt
                };
                let v = self.exact_value()?;
                if v.parse::<i64>().is_err() {
                    return Err(
                        "for 'Gt', 'Lt' operators, the value must be an integer".to_string()
                    );
                }
                (op, vec![v])
            }
            t => {
                return Err(format!(
                    "found '{}', expected: in, notin, =, ==, !=, gt, lt",
                    t.text()
                ));
            }
        };
        for v in &values {
            validate_value(v)?;
        }
        Ok(Requirement { key, op, values })
    }

    fn exact_value(&mut self) -> Result<String, String> {
        match self.peek() {
            Tok::Eos | Tok::Comma => Ok(String::new()),
            Tok::Ident(v) => {
                self.next();
                Ok(v)
            }
            // keywords are values here
            Tok::In | Tok::NotIn => Ok(self.next().text()),
            t => Err(format!("found '{}', expected: identifier", t.text())),
        }
    }

    fn set(&mut self) -> Result<Vec<String>, String> {
        match self.next() {
            Tok::Open => {}
            t => return Err(format!("found '{}', expected: '('", t.text())),
        }
        let mut values = Vec::new();
        if self.peek() == Tok::Close {
            self.next();
            return Err("for 'in', 'notin' operators, values set can't be empty".to_string());
        }
        loop {
            match self.peek() {
                Tok::Ident(v) => {
                    self.next();
                    values.push(v);
                }
                Tok::In | Tok::NotIn => values.push(self.next().text()),
                Tok::Comma | Tok::Close => values.push(String::new()),
                t => {
                    return Err(format!(
                        "found '{}', expected: ',', ')' or identifier",
                        t.text()
                    ));
                }
            }
            match self.next() {
                Tok::Comma => continue,
                Tok::Close => break,
                t => return Err(format!("found '{}', expected: ',' or ')'", t.text())),
            }
        }
        Ok(values)
    }
}

/// Validates a label key (`[prefix/]name`).
pub(crate) fn validate_key(key: &str) -> Result<(), String> {
    let (prefix, name) = match key.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    let name_ok = !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric())
        && name
            .chars()
            .last()
            .is_some_and(|c| c.is_ascii_alphanumeric());
    let prefix_ok = prefix.is_none_or(|p| {
        !p.is_empty()
            && p.len() <= 253
            && p.split('.').all(|l| {
                !l.is_empty()
                    && l.len() <= 63
                    && l.chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                    && !l.starts_with('-')
                    && !l.ends_with('-')
            })
    });
    if name_ok && prefix_ok {
        Ok(())
    } else {
        Err(format!(
            "key: Invalid value: {key:?}: name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')"
        ))
    }
}

/// Validates a label value.
pub(crate) fn validate_value(v: &str) -> Result<(), String> {
    let ok = v.is_empty()
        || (v.len() <= 63
            && v.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
            && v.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
            && v.chars().last().is_some_and(|c| c.is_ascii_alphanumeric()));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "values[0][{v}]: Invalid value: {v:?}: a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')"
        ))
    }
}

/// One term of a field selector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FieldTerm {
    /// The field (`spec.nodeName`).
    pub field: String,
    /// `true` for `=`/`==`, `false` for `!=`.
    pub equal: bool,
    /// The value.
    pub value: String,
}

/// A field selector: terms ANDed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct FieldSelector {
    /// The terms.
    pub terms: Vec<FieldTerm>,
}

impl FieldSelector {
    /// Parses `a=b,c!=d` (with `\,` `\=` `\\` escapes).
    ///
    /// # Errors
    /// `invalid selector: '<s>'; can't understand '<term>'`.
    pub(crate) fn parse(s: &str) -> Result<FieldSelector, String> {
        let mut terms = Vec::new();
        if s.trim().is_empty() {
            return Ok(FieldSelector { terms });
        }
        for part in split_unescaped(s, ',') {
            let (field, equal, value) = if let Some(i) = find_unescaped(&part, "!=") {
                (&part[..i], false, &part[i + 2..])
            } else if let Some(i) = find_unescaped(&part, "==") {
                (&part[..i], true, &part[i + 2..])
            } else if let Some(i) = find_unescaped(&part, "=") {
                (&part[..i], true, &part[i + 1..])
            } else {
                return Err(format!(
                    "invalid selector: '{s}'; can't understand '{part}'"
                ));
            };
            terms.push(FieldTerm {
                field: field.trim().to_string(),
                equal,
                value: unescape(value),
            });
        }
        Ok(FieldSelector { terms })
    }

    /// The value required for `field` by an `=` term, if any.
    pub(crate) fn required(&self, field: &str) -> Option<&str> {
        self.terms
            .iter()
            .find(|t| t.equal && t.field == field)
            .map(|t| t.value.as_str())
    }
}

fn split_unescaped(s: &str, sep: char) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut esc = false;
    for c in s.chars() {
        if esc {
            cur.push('\\');
            cur.push(c);
            esc = false;
        } else if c == '\\' {
            esc = true;
        } else if c == sep {
            out.push(std::mem::take(&mut cur));
        } else {
            cur.push(c);
        }
    }
    out.push(cur);
    out
}

fn find_unescaped(s: &str, pat: &str) -> Option<usize> {
    let bytes = s.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' {
            i += 2;
            continue;
        }
        if s[i..].starts_with(pat) {
            return Some(i);
        }
        i += 1;
    }
    None
}

fn unescape(s: &str) -> String {
    let mut out = String::new();
    let mut esc = false;
    for c in s.chars() {
        if esc {
            out.push(c);
            esc = false;
        } else if c == '\\' {
            esc = true;
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn labels(v: Value) -> serde_json::Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn parses_set_based_selectors() {
        let l = labels(json!({"app": "web", "tier": "front", "n": "5"}));
        let yes = [
            "",
            "app=web",
            "app==web",
            "app!=db",
            "app in (web,db)",
            "tier notin (back)",
            "app,tier",
            "!canary",
            "app=web, tier in (front) ,!canary",
            "n>3",
            "n<10",
            "missing!=x",
        ];
        for s in yes {
            assert!(Selector::parse(s).unwrap().matches(&l), "{s}");
        }
        let no = [
            "app=db",
            "app notin (web)",
            "!app",
            "canary",
            "n>5",
            "app in (db)",
        ];
        for s in no {
            assert!(!Selector::parse(s).unwrap().matches(&l), "{s}");
        }
    }

    #[test]
    fn reports_parse_errors_like_the_api_server() {
        assert_eq!(
            Selector::parse("test-label=====name1").unwrap_err(),
            "unable to parse requirement: found '==', expected: identifier"
        );
        assert_eq!(
            Selector::parse("env IN (a)").unwrap_err(),
            "unable to parse requirement: found 'IN', expected: in, notin, =, ==, !=, gt, lt"
        );
        assert!(Selector::parse("app in (a").is_err());
        assert!(Selector::parse("app=a b").is_err());
        assert!(Selector::parse("a=b,").is_err());
        assert!(Selector::parse("n>x").is_err());
    }

    #[test]
    fn label_selector_objects() {
        let s = Selector::from_label_selector(&json!({
            "matchLabels": {"app": "web"},
            "matchExpressions": [{"key": "tier", "operator": "In", "values": ["front"]}]
        }))
        .unwrap()
        .unwrap();
        assert!(s.matches(&labels(json!({"app": "web", "tier": "front"}))));
        assert!(!s.matches(&labels(json!({"app": "web"}))));
        let all = Selector::from_label_selector(&json!({})).unwrap().unwrap();
        assert!(all.is_everything());
        assert!(
            Selector::from_label_selector(&Value::Null)
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn node_selector_terms_and_pinned_names() {
        let t = NodeSelectorTerm::from_value(&json!({
            "matchFields": [{"key": "metadata.name", "operator": "In", "values": ["n1"]}]
        }))
        .unwrap();
        assert_eq!(t.pinned_name(), Some("n1"));
        assert!(t.matches(&labels(json!({})), "n1"));
        assert!(!t.matches(&labels(json!({})), "n2"));
        let t = NodeSelectorTerm::from_value(&json!({
            "matchExpressions": [{"key": "cpu", "operator": "Gt", "values": ["4"]}]
        }))
        .unwrap();
        assert!(t.matches(&labels(json!({"cpu": "8"})), "x"));
        assert!(!t.matches(&labels(json!({"cpu": "2"})), "x"));
    }

    #[test]
    fn field_selectors() {
        let f = FieldSelector::parse("spec.nodeName=n1,status.phase!=Failed").unwrap();
        assert_eq!(f.required("spec.nodeName"), Some("n1"));
        assert!(!f.terms[1].equal);
        let f = FieldSelector::parse(r"metadata.name=a\,b").unwrap();
        assert_eq!(f.terms[0].value, "a,b");
        assert_eq!(
            FieldSelector::parse("foo").unwrap_err(),
            "invalid selector: 'foo'; can't understand 'foo'"
        );
    }
}
