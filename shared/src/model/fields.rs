//! Field-level rules shared by every payload: ids, timestamps, statuses, jids, placeholders.

use std::borrow::Cow;
use std::fmt;
use std::ops::Deref;

use serde::{de, Deserialize, Deserializer};
use validator::ValidationError;

/// A text field of a payload: borrowed from the event body, or owned where the JSON string
/// had escapes (or the value was derived, as a number read as text). Decoding an event so
/// copies no string it does not have to. A payload struct holding `Text<'a>` borrows from the
/// body it is parsed from through `#[serde(bound(deserialize = "'de: 'a"))]`.
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct Text<'a>(pub Cow<'a, str>);

impl Text<'_> {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Deref for Text<'_> {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Text<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for Text<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self)
    }
}

impl From<String> for Text<'_> {
    fn from(s: String) -> Self {
        Text(Cow::Owned(s))
    }
}

impl serde::Serialize for Text<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self)
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Text<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_str(TextVisitor)
    }
}

/// Reads a JSON string into a [`Text`], borrowing it when the deserializer can.
struct TextVisitor;

impl<'de> de::Visitor<'de> for TextVisitor {
    type Value = Text<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a string")
    }

    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Text(Cow::Borrowed(v)))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Text(Cow::Owned(v.to_owned())))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
        Ok(Text(Cow::Owned(v)))
    }
}

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

/// The string methods of a visitor of `Option<Text>`: the string, borrowed when it can be.
macro_rules! visit_text {
    () => {
        fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
            TextVisitor.visit_borrowed_str(v).map(Some)
        }

        fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
            TextVisitor.visit_str(v).map(Some)
        }

        fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
            TextVisitor.visit_string(v).map(Some)
        }
    };
}

/// `message_type` is a string, or an array of strings from history edits: keep the first.
pub fn first_of<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Text<'de>>, D::Error> {
    optional(d, StringOrList(|items| items.into_iter().next()))
}

/// A status as text; the producer sends numeric strings, a bare number is accepted too.
pub fn text_or_number<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Text<'de>>, D::Error> {
    struct TextOrNumber;
    impl<'de> de::Visitor<'de> for TextOrNumber {
        type Value = Option<Text<'de>>;

        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a string or an integer")
        }

        visit_text!();

        fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
            Ok(Some(v.to_string().into()))
        }

        fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
            Ok(Some(v.to_string().into()))
        }
    }
    optional(d, TextOrNumber)
}

/// `tags` as a comma list, or an array of strings joined with commas.
pub fn comma_list<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Text<'de>>, D::Error> {
    optional(
        d,
        StringOrList(|items| {
            let items: Vec<&str> = items.iter().map(Text::as_str).collect();
            Some(items.join(",").into())
        }),
    )
}

/// A string as it is, or an array of strings reduced to one by the function.
struct StringOrList<'de>(fn(Vec<Text<'de>>) -> Option<Text<'de>>);

impl<'de> de::Visitor<'de> for StringOrList<'de> {
    type Value = Option<Text<'de>>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a string or an array of strings")
    }

    visit_text!();

    fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(1));
        while let Some(item) = seq.next_element::<Text<'de>>()? {
            items.push(item);
        }
        Ok((self.0)(items))
    }
}

/// Deserialises `null` or absent as `None`, anything else with `visitor` — without buffering
/// the value first, as an untagged enum would.
fn optional<'de, D, T, V>(d: D, visitor: V) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    V: de::Visitor<'de, Value = Option<T>>,
{
    struct Optional<V>(V);
    impl<'de, T, V: de::Visitor<'de, Value = Option<T>>> de::Visitor<'de> for Optional<V> {
        type Value = Option<T>;

        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            self.0.expecting(f)
        }

        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_some<D2: Deserializer<'de>>(self, d: D2) -> Result<Self::Value, D2::Error> {
            d.deserialize_any(self.0)
        }
    }
    d.deserialize_option(Optional(visitor))
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

#[cfg(test)]
mod deserializer_tests {
    use serde::Deserialize;

    use std::borrow::Cow;

    use super::Text;

    #[derive(Deserialize, Debug)]
    struct Fields<'a> {
        #[serde(borrow, default, deserialize_with = "super::first_of")]
        message_type: Option<Text<'a>>,
        #[serde(borrow, default, deserialize_with = "super::text_or_number")]
        status: Option<Text<'a>>,
        #[serde(borrow, default, deserialize_with = "super::comma_list")]
        tags: Option<Text<'a>>,
        #[serde(borrow)]
        name: Option<Text<'a>>,
    }

    fn parse(json: &str) -> Result<Fields<'_>, serde_json::Error> {
        serde_json::from_str(json)
    }

    #[test]
    fn plain_strings_are_borrowed_and_escaped_ones_unescaped() {
        let f = parse(r#"{"name":"Budi","status":"3","message_type":["text"]}"#).expect("fields");
        for text in [&f.name, &f.status, &f.message_type] {
            assert!(matches!(text, Some(Text(Cow::Borrowed(_)))), "{text:?}");
        }
        let f = parse(r#"{"name":"Bu\"di\n\u00e9","tags":"a\u002cb"}"#).expect("fields");
        assert_eq!(f.name.as_deref(), Some("Bu\"di\né"));
        assert_eq!(f.tags.as_deref(), Some("a,b"));
        assert!(matches!(f.name, Some(Text(Cow::Owned(_)))));
    }

    #[test]
    fn absent_and_null_are_none() {
        for json in [
            r#"{}"#,
            r#"{"message_type":null,"status":null,"tags":null}"#,
        ] {
            let f = parse(json).expect(json);
            assert_eq!(
                (f.message_type, f.status, f.tags),
                (None, None, None),
                "{json}"
            );
        }
    }

    #[test]
    fn strings_numbers_and_arrays_are_read() {
        let f = parse(r#"{"message_type":["text","edit"],"status":4,"tags":["a","b\"c"]}"#)
            .expect("fields");
        assert_eq!(f.message_type.as_deref(), Some("text"));
        assert_eq!(f.status.as_deref(), Some("4"));
        assert_eq!(f.tags.as_deref(), Some("a,b\"c"));
        let f =
            parse(r#"{"message_type":"conversation","status":"3","tags":"x,y"}"#).expect("fields");
        assert_eq!(f.message_type.as_deref(), Some("conversation"));
        assert_eq!(f.status.as_deref(), Some("3"));
        assert_eq!(f.tags.as_deref(), Some("x,y"));
        assert_eq!(
            parse(r#"{"message_type":[]}"#).expect("empty").message_type,
            None
        );
    }

    #[test]
    fn other_types_are_refused() {
        for json in [
            r#"{"status":2.5}"#,
            r#"{"status":true}"#,
            r#"{"status":{}}"#,
            r#"{"message_type":[1]}"#,
            r#"{"message_type":7}"#,
            r#"{"tags":[1]}"#,
        ] {
            assert!(parse(json).is_err(), "{json}");
        }
    }
}
