//! Field-level rules shared by every payload: ids, timestamps, statuses, jids, placeholders.
//! Text fields and their deserializers are in [`super::text`].

use serde::{de, Deserialize, Deserializer};
use validator::ValidationError;

pub use super::text::{comma_list, first_of, text_or_number, Text};

/// Ids: non-empty, at most 256 characters, no control characters.
pub fn valid_id(value: &str) -> Result<(), ValidationError> {
    if value.is_empty() {
        return Err(ValidationError::new("empty").with_message("must not be empty".into()));
    }
    if value.chars().count() > 256 {
        return Err(
            ValidationError::new("too_long").with_message("longer than 256 characters".into())
        );
    }
    if value.chars().any(char::is_control) {
        return Err(ValidationError::new("control_char")
            .with_message("contains a control character".into()));
    }
    Ok(())
}

/// Indexed text that is not an id (jid, phone numbers): at most 256 characters, so that no
/// value can exceed what a Postgres index row holds.
pub fn valid_indexed(value: &str) -> Result<(), ValidationError> {
    if value.chars().count() > 256 {
        return Err(
            ValidationError::new("too_long").with_message("longer than 256 characters".into())
        );
    }
    Ok(())
}

/// How deep embedded JSON (`message_obj`, `key`, …) may nest.
pub const MAX_JSON_DEPTH: usize = 128;

/// Embedded JSON the database can store: nested at most [`MAX_JSON_DEPTH`] levels, and no
/// string holding a NUL or a lone surrogate (both refused by `jsonb`). Checked apart from the
/// `validator` rules, which would copy the value into their error (and cannot copy these).
pub fn embedded_json_problem(value: &serde_json::value::RawValue) -> Option<String> {
    match json_text_problem(value.get(), MAX_JSON_DEPTH)? {
        TOO_DEEP => Some(format!("nested deeper than {MAX_JSON_DEPTH} levels")),
        problem => Some(problem.to_owned()),
    }
}

/// Whether JSON text has a string escape naming a lone surrogate.
pub fn holds_lone_surrogate(json: &str) -> bool {
    json_text_problem(json, usize::MAX) == Some(LONE)
}

/// Why JSON text (already known to be well-formed) cannot be stored as `jsonb`: nesting deeper
/// than `max_depth`, a `\u0000` escape, or a lone surrogate escape. One pass, no allocation.
pub fn json_text_problem(json: &str, max_depth: usize) -> Option<&'static str> {
    let bytes = json.as_bytes();
    let mut depth = 0usize;
    let mut in_string = false;
    // A high surrogate escape just read, waiting for its low half.
    let mut pending_high = false;
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if in_string {
            match b {
                b'\\' if bytes.get(i + 1) == Some(&b'u') => {
                    let unit = bytes
                        .get(i + 2..i + 6)
                        .and_then(|h| std::str::from_utf8(h).ok())
                        .and_then(|h| u16::from_str_radix(h, 16).ok())?;
                    match unit {
                        0 => return Some("a string holds a NUL character (\\u0000)"),
                        0xD800..=0xDBFF if pending_high => return Some(LONE),
                        0xD800..=0xDBFF => pending_high = true,
                        0xDC00..=0xDFFF if pending_high => pending_high = false,
                        0xDC00..=0xDFFF => return Some(LONE),
                        _ if pending_high => return Some(LONE),
                        _ => {}
                    }
                    i += 6;
                    continue;
                }
                _ if pending_high => return Some(LONE),
                b'\\' => i += 1,
                b'"' => in_string = false,
                _ => {}
            }
        } else {
            match b {
                b'"' => in_string = true,
                b'{' | b'[' => {
                    depth += 1;
                    if depth > max_depth {
                        return Some(TOO_DEEP);
                    }
                }
                b'}' | b']' => depth = depth.saturating_sub(1),
                _ => {}
            }
        }
        i += 1;
    }
    pending_high.then_some(LONE)
}

const LONE: &str = "a string holds a lone surrogate";
const TOO_DEEP: &str = "JSON nested too deep";

/// Values above this are milliseconds, not seconds.
const MILLIS_THRESHOLD: i64 = 100_000_000_000;

/// 9999-12-31T23:59:59Z: later timestamps cannot be a message date.
pub const MAX_UNIX_SECONDS: i64 = 253_402_300_799;

/// Normalises a unix timestamp to seconds (a value > 10^11 is milliseconds).
pub fn normalize_unix(ts: i64) -> i64 {
    if ts > MILLIS_THRESHOLD {
        ts / 1000
    } else {
        ts
    }
}

/// An optional integer unix timestamp, in seconds or milliseconds; `null` is absent.
pub fn timestamp<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    let v = Option::<i64>::deserialize(d)?;
    match v.map(normalize_unix) {
        Some(ts) if ts < 0 => Err(de::Error::custom(format!("negative timestamp {ts}"))),
        Some(ts) if ts > MAX_UNIX_SECONDS => Err(de::Error::custom(format!(
            "timestamp {ts} is beyond year 9999"
        ))),
        other => Ok(other),
    }
}

/// The rank of a message status: `0`/error/unknown=0, `1`/pending=1, `2`/sent/server_ack=2,
/// `3`/delivered=3, `4`/read=4, `5`/played=5. Anything unrecognised ranks 0.
pub fn status_rank(status: &str) -> i16 {
    let s = status.trim();
    match s {
        "0" => 0,
        "1" => 1,
        "2" => 2,
        "3" => 3,
        "4" => 4,
        "5" => 5,
        _ => match s.to_ascii_lowercase().as_str() {
            "pending" => 1,
            "sent" | "server_ack" => 2,
            "delivered" | "delivery_ack" => 3,
            "read" => 4,
            "played" => 5,
            _ => 0,
        },
    }
}

/// The user part of a jid (`6281@s.whatsapp.net` → `6281`, device suffix `:12` dropped).
pub fn jid_user(jid: &str) -> &str {
    let user = jid.split_once('@').map_or(jid, |(u, _)| u);
    user.split_once(':').map_or(user, |(u, _)| u)
}

/// The server part of a jid (`g.us`, `s.whatsapp.net`, `lid`, `newsletter`).
pub fn jid_server(jid: &str) -> Option<&str> {
    jid.split_once('@').map(|(_, s)| s)
}

pub fn is_group_jid(jid: &str) -> bool {
    jid_server(jid) == Some("g.us")
}

/// A phone number (or group id) derived from a jid; `@lid` and `@newsletter` ids are opaque
/// and give none.
pub fn phone_from_jid(jid: &str) -> Option<&str> {
    match jid_server(jid) {
        Some("s.whatsapp.net" | "c.us" | "g.us") => Some(jid_user(jid)).filter(|u| !u.is_empty()),
        _ => None,
    }
}

/// The part of a `chat_id` after its last `_` (agent ids may contain `_`, phones never do).
pub fn chat_id_suffix(chat_id: &str) -> &str {
    chat_id.rsplit_once('_').map_or(chat_id, |(_, s)| s)
}

/// Whether `name` is only a placeholder: the phone number, the chat id's suffix, or the
/// jid's user part. Placeholders never overwrite a real stored name.
pub fn is_placeholder_name(
    name: &str,
    phone: Option<&str>,
    chat_id: Option<&str>,
    jid: Option<&str>,
) -> bool {
    phone == Some(name)
        || chat_id.map(chat_id_suffix) == Some(name)
        || jid.map(jid_user) == Some(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids() {
        assert!(valid_id("AGT001_628").is_ok());
        assert!(valid_id("").is_err());
        assert!(valid_id(&"a".repeat(257)).is_err());
        assert!(valid_id(&"é".repeat(256)).is_ok());
        assert!(valid_id("a\nb").is_err());
        assert!(valid_id("a\u{0}b").is_err());
    }

    #[test]
    fn embedded_json_the_database_cannot_store() {
        let problem = |j: &str| json_text_problem(j, 3);
        assert_eq!(
            problem(r#"{"a":[1,{"b":"x\\u0000"}]}"#),
            None,
            "an escaped backslash"
        );
        assert_eq!(
            problem(r#"{"a":"\ud83d\ude00 \u00e9"}"#),
            None,
            "a surrogate pair"
        );
        assert_eq!(problem(r#"[[["deep"]]]"#), None, "three levels");
        assert_eq!(problem(r#"["[[[{{{"]"#), None, "brackets in a string");
        assert_eq!(problem(r#"[[[[1]]]]"#), Some(TOO_DEEP));
        assert!(problem(r#"{"a":"x\u0000"}"#).unwrap().contains("NUL"));
        assert_eq!(problem(r#""\ud800""#), Some(LONE));
        assert_eq!(problem(r#""\ud800x""#), Some(LONE));
        assert_eq!(problem(r#""\ud800\ud800""#), Some(LONE));
        assert_eq!(problem(r#""\udc00""#), Some(LONE));
        assert_eq!(problem(r#""\ud800\n""#), Some(LONE));
        assert_eq!(problem(r#""\uD83D\uDE00""#), None, "upper-case hex");
    }

    #[test]
    fn milliseconds_become_seconds() {
        assert_eq!(normalize_unix(1_718_358_000), 1_718_358_000);
        assert_eq!(normalize_unix(1_718_358_000_123), 1_718_358_000);
        assert_eq!(normalize_unix(0), 0);
    }

    #[test]
    fn ranks() {
        let ranks: Vec<i16> = [
            "0",
            "1",
            "2",
            "3",
            "4",
            "5",
            "READ",
            "played",
            "server_ack",
            "x",
            "ERROR",
        ]
        .iter()
        .map(|s| status_rank(s))
        .collect();
        assert_eq!(ranks, [0, 1, 2, 3, 4, 5, 4, 5, 2, 0, 0]);
    }

    #[test]
    fn jids() {
        assert_eq!(jid_user("6281:12@s.whatsapp.net"), "6281");
        assert_eq!(phone_from_jid("6281@s.whatsapp.net"), Some("6281"));
        assert_eq!(phone_from_jid("1203@g.us"), Some("1203"));
        assert_eq!(phone_from_jid("2147@lid"), None);
        assert!(is_group_jid("1203@g.us"));
        assert!(!is_group_jid("6281@s.whatsapp.net"));
        assert_eq!(chat_id_suffix("AGT_01_6281"), "6281");
        assert_eq!(chat_id_suffix("6281"), "6281");
    }

    #[test]
    fn placeholders() {
        assert!(is_placeholder_name("6281", Some("6281"), None, None));
        assert!(is_placeholder_name("6281", None, Some("AGT_6281"), None));
        assert!(is_placeholder_name(
            "6281",
            None,
            None,
            Some("6281@s.whatsapp.net")
        ));
        assert!(!is_placeholder_name(
            "Budi",
            Some("6281"),
            Some("AGT_6281"),
            Some("6281@s.whatsapp.net")
        ));
    }
}
