//! Text fields of payloads, borrowed from the event body where they can be, and the
//! deserializers of the producer's looser shapes (a string or a list, a string or a number).

use std::borrow::Cow;
use std::fmt;
use std::ops::Deref;

use serde::{de, Deserialize, Deserializer};

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

    // Only a string with escapes is copied, and only an escape can put a NUL into it (JSON
    // has no raw control characters in strings): Postgres stores no NUL in text, so a field
    // holding one is refused here rather than by the database.
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        no_nul(v)?;
        Ok(Text(Cow::Owned(v.to_owned())))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
        no_nul(&v)?;
        Ok(Text(Cow::Owned(v)))
    }
}

fn no_nul<E: de::Error>(v: &str) -> Result<(), E> {
    if v.contains('\0') {
        return Err(E::custom(
            "a string holds a NUL character (\\u0000), which cannot be stored",
        ));
    }
    Ok(())
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
