use std::fmt;
use std::ops::Deref;

use secrecy::{ExposeSecret, SecretString};

/// A secret the vault opened: a [`SecretString`] (zeroized on drop, the workspace's one
/// secret type) whose `Debug` and `Display` print `[redacted]`.
///
/// A secret inside a struct, an error or a `tracing` field cannot leak by accident; the only
/// way to the bytes is [`Secret::expose`] (or `expose_secret`), which makes every use easy to
/// find. It derefs to [`SecretString`], so it goes wherever one is expected.
#[derive(Clone)]
pub struct Secret(SecretString);

impl Secret {
    /// Wraps `value`.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(SecretString::from(value.into()))
    }

    /// The secret's text, for the one place that must send or encrypt it.
    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }

    /// Whether the secret is the empty string.
    pub fn is_empty(&self) -> bool {
        self.expose().is_empty()
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Self {
        Secret::new(value)
    }
}

impl From<SecretString> for Secret {
    fn from(value: SecretString) -> Self {
        Secret(value)
    }
}

impl From<Secret> for SecretString {
    fn from(value: Secret) -> Self {
        value.0
    }
}

impl Deref for Secret {
    type Target = SecretString;

    fn deref(&self) -> &SecretString {
        &self.0
    }
}

impl ExposeSecret<str> for Secret {
    fn expose_secret(&self) -> &str {
        self.0.expose_secret()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl std::str::FromStr for Secret {
    type Err = std::convert::Infallible;

    /// Lets clap read secrets from flags and `HAVEN_*` variables.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Secret::new(s))
    }
}

#[cfg(test)]
mod tests {
    use super::Secret;

    #[test]
    fn debug_and_display_are_redacted() {
        let s = Secret::new("shpat_live_value");
        assert_eq!(format!("{s:?}"), "[redacted]");
        assert_eq!(format!("{s}"), "[redacted]");
        #[derive(Debug)]
        #[allow(dead_code)]
        struct Holder {
            token: Secret,
        }
        let h = format!("{:?}", Holder { token: s.clone() });
        assert!(!h.contains("shpat"), "{h}");
        assert_eq!(s.expose(), "shpat_live_value");
    }
}
