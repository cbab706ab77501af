//! Topics and subscription filters shared by MQTT and WAMP.
//!
//! A topic is kept in MQTT form, levels separated by `/`. WAMP URIs map to it by
//! swapping `.` for `/`, so MQTT `a/b/c` and WAMP `a.b.c` name the same topic.

/// Convert a WAMP URI (`a.b.c`) to the internal topic form (`a/b/c`).
pub fn from_wamp_uri(uri: &str) -> String {
    uri.replace('.', "/")
}

/// Convert an internal topic (`a/b/c`) to a WAMP URI (`a.b.c`).
pub fn to_wamp_uri(topic: &str) -> String {
    topic.replace('/', ".")
}

/// One level of a subscription filter.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// Matches exactly this text.
    Exact(String),
    /// Matches any single level (`+` in MQTT, an empty component in a WAMP wildcard).
    Single,
    /// Matches this and every deeper level (`#` in MQTT, last position only).
    Multi,
}

/// A parsed subscription filter.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Filter {
    /// Level-wise match, from an MQTT filter or a WAMP exact/wildcard URI.
    Levels(Vec<Level>),
    /// WAMP prefix match on the URI text.
    Prefix(String),
}

impl Filter {
    /// Parse an MQTT topic filter; the caller has already validated its syntax.
    pub fn mqtt(filter: &str) -> Filter {
        Filter::Levels(
            filter
                .split('/')
                .map(|level| match level {
                    "+" => Level::Single,
                    "#" => Level::Multi,
                    other => Level::Exact(other.to_owned()),
                })
                .collect(),
        )
    }

    /// Parse a WAMP subscription URI with its `match` policy (`exact`, `prefix`, `wildcard`).
    ///
    /// Return `None` for an unknown policy.
    pub fn wamp(uri: &str, policy: &str) -> Option<Filter> {
        match policy {
            "exact" => Some(Filter::Levels(
                uri.split('.').map(|l| Level::Exact(l.to_owned())).collect(),
            )),
            "prefix" => Some(Filter::Prefix(uri.to_owned())),
            "wildcard" => Some(Filter::Levels(
                uri.split('.')
                    .map(|l| {
                        if l.is_empty() {
                            Level::Single
                        } else {
                            Level::Exact(l.to_owned())
                        }
                    })
                    .collect(),
            )),
            _ => None,
        }
    }

    /// Tell whether `topic` (internal form) matches this filter.
    ///
    /// Following MQTT, a topic starting with `$` is not matched by a wildcard in
    /// the first level.
    pub fn matches(&self, topic: &str) -> bool {
        match self {
            Filter::Prefix(prefix) => {
                !topic.starts_with('$') && to_wamp_uri(topic).starts_with(prefix.as_str())
            }
            Filter::Levels(levels) => {
                let mut parts = topic.split('/');
                for (i, level) in levels.iter().enumerate() {
                    match level {
                        Level::Multi => return !(i == 0 && topic.starts_with('$')),
                        Level::Single => match parts.next() {
                            Some(part) if !(i == 0 && part.starts_with('$')) => {}
                            _ => return false,
                        },
                        Level::Exact(text) => match parts.next() {
                            Some(part) if part == text => {}
                            _ => return false,
                        },
                    }
                }
                parts.next().is_none()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mqtt_wildcards() {
        let f = Filter::mqtt("a/+/c");
        assert!(f.matches("a/b/c"));
        assert!(!f.matches("a/b/c/d"));
        assert!(!f.matches("a/c"));
        let all = Filter::mqtt("#");
        assert!(all.matches("a"));
        assert!(all.matches("a/b"));
        assert!(!all.matches("$SYS/x"));
        assert!(Filter::mqtt("a/#").matches("a"));
        assert!(Filter::mqtt("a/#").matches("a/b/c"));
        assert!(!Filter::mqtt("+/x").matches("$SYS/x"));
        assert!(Filter::mqtt("$SYS/#").matches("$SYS/x"));
        assert!(Filter::mqtt("a/+").matches("a/"));
    }

    #[test]
    fn wamp_policies() {
        let exact = Filter::wamp("a.b", "exact").expect("policy");
        assert!(exact.matches("a/b"));
        assert!(!exact.matches("a/b/c"));
        let prefix = Filter::wamp("a.b", "prefix").expect("policy");
        assert!(prefix.matches("a/b/c"));
        assert!(prefix.matches("a/bc"));
        assert!(!prefix.matches("a/c"));
        let wild = Filter::wamp("a..c", "wildcard").expect("policy");
        assert!(wild.matches("a/x/c"));
        assert!(!wild.matches("a/x/d"));
        assert!(Filter::wamp("a", "regex").is_none());
    }

    #[test]
    fn uri_mapping() {
        assert_eq!(from_wamp_uri("a.b.c"), "a/b/c");
        assert_eq!(to_wamp_uri("a/b/c"), "a.b.c");
    }
}
