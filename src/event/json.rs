//! JSON events (ESL `text/event-json`, mod_amqp and engine messages) → [`Event`]: one JSON
//! object, kept with its values' types.

use std::borrow::Cow;
use std::collections::HashSet;

use serde::de::{Deserializer, MapAccess, Visitor};
use serde_json::{Map, Value};

use crate::event::{Event, Headers};

/// Parses one JSON object. Text that is not quite Unicode is mended rather than refused, each
/// bad piece replaced by U+FFFD: FreeSWITCH's cJSON passes a caller name's bytes through
/// unchecked (invalid UTF-8), and JavaScript's `JSON.stringify` writes a string cut inside a
/// surrogate pair as a lone `\ud83d` escape. The mended second pass is only tried on failure,
/// which keeps the common path to one.
pub(crate) fn parse(body: &[u8]) -> Result<Event, serde_json::Error> {
    match object(body) {
        Ok(map) => Ok(Event(map)),
        Err(err) => match mended(body) {
            Some(text) => object(text.as_bytes()).map(Event),
            None => Err(err),
        },
    }
}

/// `body` with invalid UTF-8 and lone surrogate escapes replaced, or `None` when it has neither.
fn mended(body: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(body);
    let mut out = String::new();
    let mut kept = 0; // `text[kept..at]` is still to be copied to `out`
    let mut at = 0;
    while let Some(found) = text.as_bytes().get(at..).and_then(|rest| memchr::memchr(b'\\', rest)) {
        at += found;
        let unit = |i: usize| {
            let hex = text.get(i..i + 6)?.strip_prefix("\\u")?;
            hex.bytes().all(|b| b.is_ascii_hexdigit()).then(|| u16::from_str_radix(hex, 16).ok()).flatten()
        };
        match unit(at) {
            Some(0xd800..=0xdbff) if unit(at + 6).is_some_and(|low| (0xdc00..=0xdfff).contains(&low)) => at += 12,
            Some(0xd800..=0xdfff) => {
                out.push_str(&text[kept..at]);
                out.push_str("\\ufffd");
                at += 6;
                kept = at;
            }
            // Any other escape, `\\` included, is two characters and a code unit's tail.
            _ => at += 2,
        }
    }
    if kept == 0 {
        return match text {
            Cow::Owned(text) => Some(text),
            Cow::Borrowed(_) => None,
        };
    }
    out.push_str(&text[kept..]);
    Some(out)
}

fn object(text: &[u8]) -> Result<Map<String, Value>, serde_json::Error> {
    let mut de = serde_json::Deserializer::from_slice(text);
    // FreeSWITCH's JSON is a flat object of strings, four quotes an entry. Sizing the map from
    // that guess spares it the regrowth serde_json's own `Map` visitor goes through: about a
    // tenth of the parse time for a 130-header event.
    // Capped: quotes escaped inside one long value must not reserve room for a million entries.
    let entries = (memchr::memchr_iter(b'"', text).count() / 4).min(1024);
    let map = de.deserialize_map(PresizedMap(entries))?;
    de.end()?;
    Ok(map)
}

struct PresizedMap(usize);

impl<'de> Visitor<'de> for PresizedMap {
    type Value = Map<String, Value>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Self::Value, A::Error> {
        let mut map = Map::with_capacity(self.0);
        while let Some((name, value)) = access.next_entry::<String, Value>()? {
            map.insert(name, value);
        }
        Ok(map)
    }
}

/// The headers the router reads: the route, and what identifies the event for ordered hooks
/// and for the once-only check of event sockets.
const ROUTING: [&str; 9] = [
    "Event-Name",
    "Event-Subclass",
    "variable_domain_name",
    "variable_w_domain",
    "Channel-Presence-ID",
    "variable_presence_id",
    "Unique-ID",
    "Core-UUID",
    "Event-Sequence",
];

/// The [routing headers](ROUTING) of an event that was not parsed.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RoutingHeaders([Option<String>; ROUTING.len()]);

impl Headers for RoutingHeaders {
    fn text(&self, name: &str) -> Option<Cow<'_, str>> {
        let at = ROUTING.iter().position(|&h| h == name)?;
        self.0[at].as_deref().filter(|v| !v.is_empty()).map(Cow::Borrowed)
    }
}

/// Reads the routing headers of a JSON object and checks the rest for syntax alone. `None`
/// wherever [`parse`] might read the event differently or fail: a repeated key (the parse keeps
/// the last value, so the text would not say what the parsed event says), a routing header that
/// is not a string (or null), a value that is an array or object (the parse limits nesting,
/// this look does not), a key with an escape, a `\u` escape anywhere (this look does not check
/// what it spells), a number with an exponent or of more than 100 characters (the parse
/// refuses one out of `f64`'s range), invalid JSON.
///
/// Written by hand, not with serde: FreeSWITCH's flat objects of strings are the one shape it
/// reads, and this reads them about twice as fast, which is most of the cost of an event no
/// hook wants (BENCHMARKS.md).
pub(super) fn peek(text: &str) -> Option<RoutingHeaders> {
    let mut scan = Scan { text, at: 0 };
    scan.whitespace();
    let headers = scan.object(&mut KeySet::default())?;
    scan.whitespace();
    (scan.at == scan.text.len()).then_some(headers)
}

/// [`peek`] over a JSON array: the text and routing headers of each of its items, or `None`
/// unless every item is an object `peek` reads. Splits an ingest batch without a serde pass
/// over it first.
pub(super) fn peek_array(text: &str) -> Option<Vec<(&str, RoutingHeaders)>> {
    let mut scan = Scan { text, at: 0 };
    let mut keys = KeySet::default();
    let mut items = Vec::new();
    scan.whitespace();
    scan.expect(b'[')?;
    scan.whitespace();
    if !scan.eat(b']') {
        loop {
            let start = scan.at;
            keys.0.clear();
            let headers = scan.object(&mut keys)?;
            items.push((&text[start..scan.at], headers));
            scan.whitespace();
            if scan.eat(b']') {
                break;
            }
            scan.expect(b',')?;
            scan.whitespace();
        }
    }
    scan.whitespace();
    (scan.at == scan.text.len()).then_some(items)
}

/// The keys of one object, to refuse a repeated one. An array's objects share one allocation,
/// cleared for each.
struct KeySet<'a>(HashSet<&'a str, foldhash::fast::RandomState>);

impl Default for KeySet<'_> {
    fn default() -> Self {
        KeySet(HashSet::with_capacity_and_hasher(256, foldhash::fast::RandomState::default()))
    }
}

/// Whether a byte cannot stand as it is inside a JSON string: a quote, a backslash, a control
/// character.
const fn needs_escape(b: u8) -> bool {
    b < 0x20 || b == b'"' || b == b'\\'
}

/// The length of the plain string content `rest` starts with: up to its first byte that
/// [needs an escape](needs_escape). Eight bytes at a time: a byte-by-byte scan of a 9 KB event
/// was about 15 % of the service's instructions (BENCHMARKS.md, round fourteen), and most
/// values are too short for a vector search to pay off.
pub(crate) fn plain_run(rest: &[u8]) -> usize {
    const ONES: u64 = u64::from_le_bytes([0x01; 8]);
    const HIGH: u64 = u64::from_le_bytes([0x80; 8]);
    // The high bit of each byte that is below `n` (n <= 0x80). A borrow can flag bytes above
    // the first hit too, never one before it, so the lowest flag is exact.
    let below = |x: u64, n: u8| x.wrapping_sub(ONES * u64::from(n)) & !x & HIGH;
    let mut at = 0;
    while let Some(chunk) = rest.get(at..at + 8) {
        let x = u64::from_le_bytes(chunk.try_into().expect("eight bytes"));
        let stop = below(x, 0x20) | below(x ^ (ONES * u64::from(b'"')), 1) | below(x ^ (ONES * u64::from(b'\\')), 1);
        if stop != 0 {
            return at + stop.trailing_zeros() as usize / 8;
        }
        at += 8;
    }
    at + rest[at..].iter().position(|&b| needs_escape(b)).unwrap_or(rest.len() - at)
}

/// A string's content with its escapes read: those [`Scan::string`] lets through.
fn unescape(raw: &str) -> String {
    let mut text = String::with_capacity(raw.len());
    let mut chars = raw.chars();
    while let Some(c) = chars.next() {
        text.push(match c {
            '\\' => match chars.next() {
                Some('b') => '\u{8}',
                Some('f') => '\u{c}',
                Some('n') => '\n',
                Some('r') => '\r',
                Some('t') => '\t',
                Some(other) => other,
                None => break,
            },
            c => c,
        });
    }
    text
}

/// A cursor over JSON text.
struct Scan<'a> {
    text: &'a str,
    at: usize,
}

impl<'a> Scan<'a> {
    fn bytes(&self) -> &'a [u8] {
        self.text.as_bytes()
    }

    fn whitespace(&mut self) {
        while matches!(self.bytes().get(self.at), Some(b' ' | b'\n' | b'\t' | b'\r')) {
            self.at += 1;
        }
    }

    fn eat(&mut self, byte: u8) -> bool {
        let found = self.bytes().get(self.at) == Some(&byte);
        self.at += usize::from(found);
        found
    }

    fn expect(&mut self, byte: u8) -> Option<()> {
        self.eat(byte).then_some(())
    }

    /// A flat object (see [`peek`]): its routing headers. `keys` holds no key of it yet.
    fn object(&mut self, keys: &mut KeySet<'a>) -> Option<RoutingHeaders> {
        let mut headers = RoutingHeaders::default();
        self.expect(b'{')?;
        self.whitespace();
        if self.eat(b'}') {
            return Some(headers);
        }
        loop {
            let (key, escaped) = self.string()?;
            if escaped || !keys.0.insert(key) {
                return None;
            }
            self.whitespace();
            self.expect(b':')?;
            self.whitespace();
            match ROUTING.iter().position(|&h| h == key) {
                Some(at) => headers.0[at] = self.routing_value()?,
                None => self.scalar()?,
            }
            self.whitespace();
            if self.eat(b'}') {
                return Some(headers);
            }
            self.expect(b',')?;
            self.whitespace();
        }
    }

    /// A string: its raw content, and whether that holds an escape. A `\u` escape is refused
    /// (text with one is parsed in full).
    fn string(&mut self) -> Option<(&'a str, bool)> {
        self.expect(b'"')?;
        let start = self.at;
        let mut escaped = false;
        loop {
            // A local scan: stepping `self.at` itself would store it at every byte.
            let rest = &self.bytes()[self.at..];
            self.at += plain_run(rest);
            match *self.bytes().get(self.at)? {
                b'"' => break,
                b'\\'
                    if matches!(
                        self.bytes().get(self.at + 1),
                        Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't')
                    ) =>
                {
                    escaped = true;
                    self.at += 2;
                }
                _ => return None,
            }
        }
        // Both ends sit next to ASCII quotes, so they are character boundaries.
        let content = &self.text[start..self.at];
        self.at += 1;
        Some((content, escaped))
    }

    /// A routing header's value: a string, or null.
    fn routing_value(&mut self) -> Option<Option<String>> {
        if self.literal(b"null") {
            return Some(None);
        }
        let (raw, escaped) = self.string()?;
        Some(Some(if escaped { unescape(raw) } else { raw.to_owned() }))
    }

    /// Any value but an array or an object.
    fn scalar(&mut self) -> Option<()> {
        match self.bytes().get(self.at)? {
            b'"' => self.string().map(drop),
            b't' => self.literal(b"true").then_some(()),
            b'f' => self.literal(b"false").then_some(()),
            b'n' => self.literal(b"null").then_some(()),
            _ => self.number(),
        }
    }

    fn literal(&mut self, word: &[u8]) -> bool {
        let found = self.bytes()[self.at..].starts_with(word);
        self.at += if found { word.len() } else { 0 };
        found
    }

    /// A number as JSON spells it, without an exponent.
    fn number(&mut self) -> Option<()> {
        let start = self.at;
        self.eat(b'-');
        if !self.eat(b'0') {
            self.digits()?;
        }
        if self.eat(b'.') {
            self.digits()?;
        }
        (self.at - start <= 100).then_some(())
    }

    /// One or more digits.
    fn digits(&mut self) -> Option<()> {
        let start = self.at;
        while self.bytes().get(self.at).is_some_and(u8::is_ascii_digit) {
            self.at += 1;
        }
        (self.at > start).then_some(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The keys of a JSON object in the order written, repeats included.
    struct Keys;

    impl<'de> Visitor<'de> for Keys {
        type Value = Vec<String>;

        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("an object")
        }

        fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Vec<String>, A::Error> {
            let mut keys = Vec::new();
            while let Some(key) = access.next_key()? {
                access.next_value::<serde::de::IgnoredAny>()?;
                keys.push(key);
            }
            Ok(keys)
        }
    }

    /// What serde_json reads where the quick look reads something: the text is one object, its
    /// routing headers are what the look says, and no key repeats.
    fn agrees_with_serde(text: &str) -> Result<(), String> {
        let Some(headers) = peek(text) else { return Ok(()) };
        let event = parse(text.as_bytes()).map_err(|e| format!("serde_json refuses it: {e}"))?;
        for (at, name) in ROUTING.iter().enumerate() {
            let parsed = event.0.get(*name).and_then(Value::as_str);
            if headers.0[at].as_deref() != parsed {
                return Err(format!("{name}: {:?}, parsed {parsed:?}", headers.0[at]));
            }
        }
        let keys = serde_json::Deserializer::from_str(text).deserialize_map(Keys).map_err(|e| e.to_string())?;
        if keys.len() != event.0.len() {
            return Err("a repeated key".into());
        }
        Ok(())
    }

    /// Whether the look should read the text (made of [`PIECES`]): a flat object that serde_json
    /// reads, with no key escaped or repeated, no exponent, and routing headers that are strings
    /// or null.
    fn readable(text: &str) -> bool {
        let (Ok(Value::Object(map)), Ok(keys)) =
            (serde_json::from_str(text), serde_json::Deserializer::from_str(text).deserialize_map(Keys))
        else {
            return false;
        };
        let escaped = |key: &String| key.chars().any(|c| c == '"' || c == '\\' || c == '/' || c < ' ');
        let routing_text = ROUTING.iter().all(|name| map.get(*name).is_none_or(|v| v.is_string() || v.is_null()));
        map.values().all(|v| !v.is_array() && !v.is_object())
            && !text.contains("1e5")
            && !keys.iter().any(escaped)
            && routing_text
            && keys.len() == map.len()
    }

    #[test]
    fn reads_flat_objects() {
        let text =
            r#" { "Event-Name" : "A" ,"Unique-ID":"u\"1\\\/\n","n":-0.5,"m":10,"t":true,"f":false,"z":null,"s":"\t"} "#;
        let headers = peek(text).unwrap();
        assert_eq!(headers.text("Event-Name").as_deref(), Some("A"));
        assert_eq!(headers.text("Unique-ID").as_deref(), Some("u\"1\\/\n"));
        agrees_with_serde(text).unwrap();
        assert_eq!(peek("{}"), Some(RoutingHeaders::default()));
    }

    #[test]
    fn splits_arrays_of_flat_objects() {
        let text = " [ {\"Event-Name\":\"A\",\"a\":\"1\"} ,{\"Event-Name\":\"B\",\"a\":2}\n] ";
        let items = peek_array(text).unwrap();
        let texts: Vec<&str> = items.iter().map(|(text, _)| *text).collect();
        assert_eq!(texts, [r#"{"Event-Name":"A","a":"1"}"#, r#"{"Event-Name":"B","a":2}"#]);
        let names: Vec<_> = items.iter().map(|(_, h)| h.text("Event-Name").unwrap().into_owned()).collect();
        assert_eq!(names, ["A", "B"]);
        assert_eq!(peek_array("[]"), Some(Vec::new()));
        for text in [
            "",
            "[",
            "[1]",
            "[[{}]]",
            "[{},]",
            "[,{}]",
            "[{}{}]",
            "[{}] x",
            r#"{"a":1}"#,
            r#"[{"a":1},2]"#,
            r#"[{"a":1,"a":2}]"#,
            r#"[{"a":"\u0041"}]"#,
        ] {
            assert_eq!(peek_array(text), None, "{text:?}");
        }
    }

    #[test]
    fn refuses_what_it_does_not_read_as_the_parse_does() {
        for text in [
            "",
            "{",
            "}",
            "[]",
            r#"{"a"}"#,
            r#"{"a":}"#,
            r#"{"a":1,}"#,
            r#"{,"a":1}"#,
            r#"{"a":1}x"#,
            r#"{"a":1}{}"#,
            r#"{"a":01}"#,
            r#"{"a":1.}"#,
            r#"{"a":.5}"#,
            r#"{"a":-}"#,
            r#"{"a":1e5}"#,
            r#"{"a":tru}"#,
            r#"{"a":nul}"#,
            r#"{"a":[1]}"#,
            r#"{"a":{}}"#,
            r#"{"a":"\q"}"#,
            "{\"a\":\"\u{1}\"}",
            r#"{"a":"x"#,
            r#"{"a\"":"1"}"#,
            r#"{"Event-Name":1}"#,
            r#"{"Event-Name":"a","Event-Name":"b"}"#,
            r#"{"Event-Name":null,"Event-Name":"b"}"#,
            r#"{"a":"1","a":"2"}"#,
            r#"{'a':1}"#,
            r#"{"a":"\u0041"}"#,
            "{\"a\":1\u{a0}}",
        ] {
            assert_eq!(peek(text), None, "{text:?}");
        }
        let long = format!(r#"{{"a":{}}}"#, "9".repeat(101));
        assert_eq!(peek(&long), None);
    }

    /// Pieces of JSON, right and wrong, put together into something like an object.
    fn object_text() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::sample::select;
        use proptest::strategy::Strategy;
        let entry = (
            select(PIECES.to_vec()),
            select(vec![":", " : ", "", ",", "\n:\t"]),
            select(PIECES.to_vec()),
            select(vec![",", " ,\r\n", "", ":", ",,"]),
        );
        let ends = (select(vec!["{", " {", "", "["]), select(vec!["}", "} ", "", "}}", "]"]));
        (proptest::collection::vec(entry, 0..6), ends).prop_map(|(entries, (open, close))| {
            let mut text = open.to_owned();
            for (i, (key, colon, value, comma)) in entries.iter().enumerate() {
                if i > 0 {
                    text.push_str(comma);
                }
                text.push_str(key);
                text.push_str(colon);
                text.push_str(value);
            }
            text + close
        })
    }

    /// Flat objects of a few well-formed entries, keys repeated at times.
    fn flat_object() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::sample::select;
        use proptest::strategy::Strategy;
        let entry = (
            select(vec![r#""a""#, r#""b""#, r#""Event-Name""#, r#""Unique-ID""#]),
            select(vec![r#""x""#, r#""\n""#, "1", "null", "true"]),
        );
        proptest::collection::vec(entry, 0..4).prop_map(|entries| {
            let entries: Vec<String> = entries.iter().map(|(key, value)| format!("{key}:{value}")).collect();
            format!("{{{}}}", entries.join(","))
        })
    }

    #[test]
    fn a_plain_run_ends_at_the_first_byte_that_needs_an_escape() {
        let long = "é".repeat(40);
        for (text, run) in [
            (String::new(), 0),
            ("abc".into(), 3),
            ("abc\"d".into(), 3),
            ("a\\\"".into(), 1),
            ("ab\u{1}c\"".into(), 2),
            (format!("{long}\u{1f}{long}\""), long.len()),
            (format!("{long}\"\u{0}"), long.len()),
            (format!("{long}{long}"), 2 * long.len()),
            (format!("{long}\u{7f}\\"), long.len() + 1),
        ] {
            assert_eq!(plain_run(text.as_bytes()), run, "{text:?}");
        }
    }

    proptest::proptest! {
        #[test]
        fn a_plain_run_is_the_first_byte_that_needs_an_escape(
            bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..40),
            plain in proptest::collection::vec(0x20u8..=0xff, 0..40),
        ) {
            // Plain bytes first (quotes and backslashes among them too), then anything.
            let text = [plain, bytes].concat();
            let naive = text.iter().position(|&b| needs_escape(b)).unwrap_or(text.len());
            proptest::prop_assert_eq!(plain_run(&text), naive);
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2048))]

        /// Whatever the look accepts, serde_json reads the same way.
        #[test]
        fn never_accepts_what_serde_reads_otherwise(text in object_text()) {
            proptest::prop_assert_eq!(agrees_with_serde(&text), Ok(()), "{:?}", text);
            proptest::prop_assert_eq!(peek(&text).is_some(), readable(&text), "{:?}", text);
        }

        /// The array look splits what serde_json splits, and reads each item as [`peek`] does;
        /// it refuses an array as soon as one item is not an object `peek` reads.
        #[test]
        fn splits_arrays_as_serde_does(
            items in proptest::collection::vec(proptest::prop_oneof![1 => object_text(), 3 => flat_object()], 0..4),
            comma in proptest::sample::select(vec![",", ",", ",", " , ", "\n,", "", ",,"]),
            open in proptest::sample::select(vec!["[", "[", "[", " [ ", "", "{"]),
            close in proptest::sample::select(vec!["]", "]", "]", "] ", "", "]]", ",]"]),
        ) {
            let text = format!("{open}{}{close}", items.join(comma));
            let expected = serde_json::from_str::<Vec<&serde_json::value::RawValue>>(&text).ok().and_then(|raw| {
                raw.iter().map(|item| Some((item.get(), peek(item.get()).filter(|_| item.get().starts_with('{'))?))).collect::<Option<Vec<_>>>()
            });
            proptest::prop_assert_eq!(peek_array(&text), expected, "{:?}", text);
        }
    }

    const PIECES: &[&str] = &[
        r#""a""#,
        r#""Event-Name""#,
        r#""Unique-ID""#,
        r#""variable_domain_name""#,
        r#""x\"y""#,
        r#""\\""#,
        r#""\/\b\f\n\r\t""#,
        r#""\q""#,
        "\"\u{1}\"",
        r#""é""#,
        r#""""#,
        "\"",
        "1",
        "-",
        "0",
        "01",
        "1.",
        ".5",
        "1.25",
        "-0",
        "1e5",
        "true",
        "tru",
        "false",
        "null",
        "nul",
        "[",
        "]",
        "{",
        "}",
        "[1]",
        "{}",
    ];
}
