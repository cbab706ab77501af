//! WAMP URI checks ("loose" rules of the specification, section 5.1.1).

/// Check a URI against WAMP's loose rules.
///
/// Components are separated by `.` and contain neither whitespace, `#` nor
/// control characters (a leading U+0000 would read as binary in WAMP JSON).
/// Without `allow_empty_components` every component is non-empty (regex
/// `^([^\s\.#]+\.)*([^\s\.#]+)$`); with it, any component may be empty, as in
/// wildcard patterns like `com..update` (regex `^(([^\s\.#]+\.)|\.)*([^\s\.#]+)?$`,
/// which also accepts the empty string).
pub fn validate_uri(uri: &str, allow_empty_components: bool) -> bool {
    uri.split('.').all(|component| {
        (allow_empty_components || !component.is_empty())
            && !component
                .chars()
                .any(|c| c == '#' || c.is_whitespace() || c.is_control())
    })
}

/// Check a prefix-match pattern: a loose URI that may end with one `.`
/// (e.g. `com.myapp.`), as autobahn accepts for `match: "prefix"`.
pub(crate) fn validate_prefix(uri: &str) -> bool {
    validate_uri(uri.strip_suffix('.').unwrap_or(uri), false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strict_uris() {
        for ok in [
            "com",
            "com.myapp.topic1",
            "wamp.error.invalid_uri",
            "a-b.c_d.ü",
        ] {
            assert!(validate_uri(ok, false), "{ok}");
        }
        for bad in [
            "",
            ".",
            "\0AAAA",
            "a.b\u{1}",
            "com.",
            ".com",
            "com..x",
            "com.my app",
            "com.#",
            "a\tb",
            "a.b\n",
        ] {
            assert!(!validate_uri(bad, false), "{bad:?}");
        }
    }

    #[test]
    fn uris_with_empty_components() {
        for ok in ["", ".", "com..update", ".a", "a.", "com.myapp.topic1"] {
            assert!(validate_uri(ok, true), "{ok:?}");
        }
        for bad in ["com. .x", "com.#.x", "a b"] {
            assert!(!validate_uri(bad, true), "{bad:?}");
        }
    }

    #[test]
    fn prefixes() {
        assert!(validate_prefix("com.myapp"));
        assert!(validate_prefix("com.myapp."));
        assert!(!validate_prefix("com.myapp.."));
        assert!(!validate_prefix("."));
        assert!(!validate_prefix(""));
    }
}
