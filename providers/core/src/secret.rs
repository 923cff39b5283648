use std::fmt;

use serde::{Deserialize, Deserializer};

/// A value that must never be printed, logged, serialised or stored: join tokens,
/// rendered user-data, private keys.
///
/// It has no `Display` and no `Serialize`; its `Debug` prints `Secret(***)`. The only way
/// to the text is [`Secret::expose`], which marks each place that hands it on.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wrap a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The secret text, for the one place that must hand it on (a provider API call,
    /// a file on the machine). Never log what this returns.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Secret)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_value() {
        let s = Secret::new("abcdef.0123456789abcdef");
        assert_eq!(format!("{s:?}"), "Secret(***)");
        assert_eq!(format!("{:?}", Some(&s)), "Some(Secret(***))");
        assert_eq!(s.expose(), "abcdef.0123456789abcdef");
    }
}
