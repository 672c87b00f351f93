//! Keys: `/`-separated segments of `[A-Za-z0-9._=-]`, e.g. `tables/3/p2/chkpt-120/000012.sst`.
//!
//! The charset is one that every store keeps as written: no percent-encoding in S3, no special
//! names in a file system. A segment is never `.` or `..` (a key cannot leave the store's root)
//! and never starts with [`TEMP_MARKER`] (those names are the local store's unpublished writes).

use crate::BlockError;

/// Longest key accepted, in bytes (S3 allows 1024 including the store's prefix).
pub const KEY_BYTES_MAX: usize = 768;

/// Names starting with this are temporary files of a write in progress; [`crate::LocalStore`]
/// never lists them and keys may not use them.
pub const TEMP_MARKER: &str = ".markab-tmp.";

/// Checks that `key` is a valid key: non-empty, at most [`KEY_BYTES_MAX`] bytes, segments of
/// `[A-Za-z0-9._=-]` that are neither empty, `.`, `..` nor start with [`TEMP_MARKER`].
///
/// ```
/// use markab_blocks::key::validate_key;
/// assert!(validate_key("tables/3/p2/000012.sst").is_ok());
/// assert!(validate_key("../etc/passwd").is_err());
/// assert!(validate_key("/absolute").is_err());
/// ```
pub fn validate_key(key: &str) -> Result<(), BlockError> {
    let invalid = |reason: &str| {
        Err(BlockError::InvalidKey {
            key: key.to_string(),
            reason: reason.to_string(),
        })
    };
    if key.is_empty() {
        return invalid("a key must not be empty");
    }
    if key.len() > KEY_BYTES_MAX {
        return invalid("longer than 768 bytes");
    }
    for segment in key.split('/') {
        if segment.is_empty() {
            return invalid("empty segment (leading, trailing or doubled '/')");
        }
        if segment == "." || segment == ".." {
            return invalid("'.' and '..' segments are not allowed");
        }
        if segment.starts_with(TEMP_MARKER) {
            return invalid("segments starting with '.markab-tmp.' are reserved");
        }
        if !segment
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || b"._=-".contains(&byte))
        {
            return invalid("only ASCII letters, digits and '.', '_', '=', '-' are allowed");
        }
    }
    Ok(())
}

/// Checks a prefix for `list` / `delete_prefix`: `""` (everything) or a valid key; one trailing
/// `/` is allowed and ignored. Returns the prefix without it.
///
/// ```
/// use markab_blocks::key::validate_prefix;
/// assert_eq!(validate_prefix("tables/3/").unwrap(), "tables/3");
/// assert_eq!(validate_prefix("").unwrap(), "");
/// ```
pub fn validate_prefix(prefix: &str) -> Result<&str, BlockError> {
    let trimmed = prefix.strip_suffix('/').unwrap_or(prefix);
    if trimmed.is_empty() && prefix.len() <= 1 {
        return Ok("");
    }
    validate_key(trimmed)?;
    Ok(trimmed)
}

/// Whether `key` lies under `prefix` (as returned by [`validate_prefix`]) by whole segments.
pub(crate) fn is_under(key: &str, prefix: &str) -> bool {
    prefix.is_empty()
        || key
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.starts_with('/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Proves the key rules: the accepted charset, and that every way out of the root or into the
    /// reserved temporary names is refused.
    #[test]
    fn keys_are_checked() {
        for good in [
            "a",
            "a/b",
            "tables/3/p2/chkpt-120/000012.sst",
            "x=1/.hidden",
            "a..b",
        ] {
            assert!(validate_key(good).is_ok(), "{good}");
        }
        let long = "a".repeat(KEY_BYTES_MAX + 1);
        for bad in [
            "",
            "/a",
            "a/",
            "a//b",
            ".",
            "a/../b",
            "a/./b",
            "a b",
            "a\\b",
            "é",
            ".markab-tmp.x",
            "a/.markab-tmp.1",
            long.as_str(),
        ] {
            let error = validate_key(bad).unwrap_err();
            assert!(matches!(error, BlockError::InvalidKey { .. }), "{bad}");
        }
        assert_eq!(validate_prefix("").unwrap(), "");
        assert_eq!(validate_prefix("a/b/").unwrap(), "a/b");
        assert!(validate_prefix("/").is_ok());
        assert!(validate_prefix("a//").is_err());
        assert!(is_under("a/b/c", "a/b"));
        assert!(!is_under("a/bc", "a/b"));
        assert!(!is_under("a/b", "a/b"));
        assert!(is_under("a", ""));
    }
}
