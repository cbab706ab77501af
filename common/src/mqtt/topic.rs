//! Syntax checks for MQTT topic names and topic filters (section 4.7).

/// Longest string a two-byte length prefix can carry [MQTT-1.5.3].
const MAX_STRING_LEN: usize = u16::MAX as usize;

/// Tell whether `topic` is a valid topic name for PUBLISH or a will.
///
/// Valid means: not empty [MQTT-4.7.3-1], no `+` or `#` [MQTT-3.3.2-2],
/// no U+0000 [MQTT-4.7.3-2], at most 65,535 bytes [MQTT-4.7.3-3].
pub fn validate_topic_name(topic: &str) -> bool {
    !topic.is_empty()
        && topic.len() <= MAX_STRING_LEN
        && !topic.bytes().any(|b| matches!(b, b'+' | b'#' | 0))
}

/// Tell whether `filter` is a valid topic filter for SUBSCRIBE or UNSUBSCRIBE.
///
/// Valid means: not empty [MQTT-4.7.3-1], no U+0000 [MQTT-4.7.3-2], at most
/// 65,535 bytes, `#` only as a whole last level [MQTT-4.7.1-2] and `+` only as a
/// whole level [MQTT-4.7.1-3].
pub fn validate_topic_filter(filter: &str) -> bool {
    if filter.is_empty() || filter.len() > MAX_STRING_LEN || filter.contains('\0') {
        return false;
    }
    let mut levels = filter.split('/').peekable();
    while let Some(level) = levels.next() {
        let is_last = levels.peek().is_none();
        if level.contains('#') && (level != "#" || !is_last) {
            return false;
        }
        if level.contains('+') && level != "+" {
            return false;
        }
    }
    true
}
