//! Object keys: checked once where they enter, so no key can leave the store's root.

use std::fmt;

/// Longest key accepted, in bytes (S3's own limit).
pub const MAX_KEY_LEN: usize = 1024;

/// A relative, `/`-separated object key such as `statistic-exports/s1/p1/v1/20261205.csv`.
///
/// Keys reach the file store as paths and the gateway as URL paths, so anything that could
/// point outside the store's root is refused: empty, `.` or `..` segments, a leading `/`,
/// backslashes, NUL and other control characters.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectKey(String);

/// Why a key was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("object key is empty")]
    Empty,
    #[error("object key is longer than {MAX_KEY_LEN} bytes")]
    TooLong,
    #[error("object key must be relative (no leading `/`)")]
    Absolute,
    #[error("object key has an empty, `.` or `..` segment")]
    BadSegment,
    #[error("object key contains a backslash, NUL or control character")]
    BadCharacter,
}

impl ObjectKey {
    pub fn parse(key: &str) -> Result<ObjectKey, KeyError> {
        if key.is_empty() {
            return Err(KeyError::Empty);
        }
        if key.len() > MAX_KEY_LEN {
            return Err(KeyError::TooLong);
        }
        if key.starts_with('/') {
            return Err(KeyError::Absolute);
        }
        if key.chars().any(|c| c == '\\' || c.is_control()) {
            return Err(KeyError::BadCharacter);
        }
        if key
            .split('/')
            .any(|segment| segment.is_empty() || segment == "." || segment == "..")
        {
            return Err(KeyError::BadSegment);
        }
        Ok(ObjectKey(key.to_owned()))
    }

    /// Joins segments that are each checked as a single segment (ids from a provider may
    /// carry anything, so a `/` inside one is refused rather than nesting).
    pub fn join<S: AsRef<str>>(segments: &[S]) -> Result<ObjectKey, KeyError> {
        if segments.iter().any(|s| s.as_ref().contains('/')) {
            return Err(KeyError::BadSegment);
        }
        let joined: Vec<&str> = segments.iter().map(AsRef::as_ref).collect();
        ObjectKey::parse(&joined.join("/"))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The last segment, used as a download's file name.
    pub fn file_name(&self) -> &str {
        self.0.rsplit('/').next().unwrap_or(&self.0)
    }

    /// A content type guessed from the extension, for stores that keep none (the file store).
    pub fn content_type(&self) -> &'static str {
        let ext = self
            .file_name()
            .rsplit_once('.')
            .map(|(_, ext)| ext.to_ascii_lowercase());
        match ext.as_deref() {
            Some("csv") => "text/csv; charset=utf-8",
            Some("json") => "application/json",
            Some("ndjson") => "application/x-ndjson",
            Some("pdf") => "application/pdf",
            Some("jpg" | "jpeg") => "image/jpeg",
            Some("png") => "image/png",
            Some("gif") => "image/gif",
            Some("webp") => "image/webp",
            Some("avif") => "image/avif",
            Some("svg") => "image/svg+xml",
            _ => "application/octet-stream",
        }
    }
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ObjectKey({:?})", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_nested_relative_keys() {
        let key = ObjectKey::parse("statistic-exports/s1/p1/v1/20261205.csv").unwrap();
        assert_eq!(key.file_name(), "20261205.csv");
        assert_eq!(key.content_type(), "text/csv; charset=utf-8");
        assert_eq!(
            ObjectKey::join(&["a", "b.png"]).unwrap().as_str(),
            "a/b.png"
        );
    }

    #[test]
    fn refuses_keys_that_could_escape_the_root() {
        for (key, err) in [
            ("", KeyError::Empty),
            ("/etc/passwd", KeyError::Absolute),
            ("../secret", KeyError::BadSegment),
            ("a/../../b", KeyError::BadSegment),
            ("a/./b", KeyError::BadSegment),
            ("a//b", KeyError::BadSegment),
            ("a/", KeyError::BadSegment),
            ("..", KeyError::BadSegment),
            ("a\\..\\b", KeyError::BadCharacter),
            ("a\0b", KeyError::BadCharacter),
            ("a\nb", KeyError::BadCharacter),
        ] {
            assert_eq!(ObjectKey::parse(key), Err(err), "{key:?}");
        }
        assert_eq!(
            ObjectKey::parse(&"a".repeat(MAX_KEY_LEN + 1)),
            Err(KeyError::TooLong)
        );
        assert_eq!(ObjectKey::join(&["a/b", "c"]), Err(KeyError::BadSegment));
        assert_eq!(ObjectKey::join(&["a", ".."]), Err(KeyError::BadSegment));
    }
}
