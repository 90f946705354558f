//! `text/event-plain` bodies → [`Event`]: the hot path when a connection subscribes in plain.
//!
//! The result is the map FreeSWITCH's own JSON serializer (`switch_event_serialize_json`) would
//! have produced for the same event, so hooks see one shape whichever format was subscribed:
//! values percent-decoded, `_undef_` (how the plain serializer writes an empty value) back to
//! `""`, `ARRAY::a|:b` as `["a","b"]`, and an event body as `Content-Length` plus `_body`.
//! A header that comes twice keeps its first place and its last value, as the JSON parse does
//! with the key FreeSWITCH's JSON writes twice.

use std::borrow::Cow;

use memchr::{memchr, memchr_iter};
use serde_json::{Map, Value};

use crate::event::Event;

pub(super) fn parse(raw: &[u8]) -> Event {
    // Validate once, then work on `&str`: names and values are cut at ASCII bytes, so they are
    // valid too and need no check of their own (checking each piece costs a sixth of the parse).
    // Invalid bytes are replaced rather than refused: one bad byte must not cost the event.
    let text = match std::str::from_utf8(raw) {
        Ok(text) => Cow::Borrowed(text),
        Err(_) => String::from_utf8_lossy(raw),
    };
    // One header a line: sizing the map up front saves its rehashing.
    let mut map = Map::with_capacity(memchr_iter(b'\n', raw).count());
    let mut rest: &str = &text;
    let mut lines = 0;
    let mut has_body = false;
    while !rest.is_empty() {
        let line;
        (line, rest) = match memchr(b'\n', rest.as_bytes()) {
            Some(i) => {
                lines += 1;
                (&rest[..i], &rest[i + 1..])
            }
            None => (rest, ""),
        };
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.is_empty() {
            break;
        }
        // A line without ':' cannot come from FreeSWITCH (values are encoded). The outer frame
        // was intact, so skip it as FreeSWITCH's own client does rather than drop the socket.
        let Some(colon) = memchr(b':', line.as_bytes()) else {
            continue;
        };
        let (name, raw_value) = (&line[..colon], line[colon + 1..].trim_start_matches([' ', '\t']));
        has_body |= name.eq_ignore_ascii_case("Content-Length");
        map.insert(name.to_owned(), value(raw_value));
    }
    if has_body {
        // The body is all that follows the blank line, which is how FreeSWITCH's own client
        // reads it (libs/esl/src/esl.c): `switch_event_serialize` writes it last. No count is
        // needed, and the first `Content-Length` may not be the body's: an event that came
        // through `sendevent` keeps the client's as a header, and that one also counts a NUL
        // FreeSWITCH cut the body at.
        // Replacement characters make the text longer than the bytes, so then find the body in
        // the bytes, past as many newlines (each survives replacement).
        let body = match text {
            Cow::Borrowed(_) => rest.as_bytes(),
            Cow::Owned(_) if rest.is_empty() => &[],
            Cow::Owned(_) => after_lines(raw, lines),
        };
        map.insert("_body".to_owned(), Value::String(super::text(body)));
    }
    Event(map)
}

fn after_lines(raw: &[u8], lines: usize) -> &[u8] {
    match lines.checked_sub(1).and_then(|n| memchr_iter(b'\n', raw).nth(n)) {
        Some(nl) => &raw[nl + 1..],
        None => raw,
    }
}

fn value(raw: &str) -> Value {
    if raw == "_undef_" {
        return Value::String(String::new());
    }
    if memchr(b'%', raw.as_bytes()).is_none() {
        return Value::String(raw.to_owned());
    }
    let decoded = percent_decode(raw.as_bytes());
    let s = String::from_utf8(decoded).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned());
    match s.strip_prefix("ARRAY::") {
        Some(items) if !items.is_empty() => {
            Value::Array(items.split("|:").map(|item| Value::String(item.to_owned())).collect())
        }
        _ => Value::String(s),
    }
}

/// `%XX` → the byte; anything else, including a `%` not followed by two hex digits, as it is.
/// `+` stays `+`: `switch_url_encode` writes a plus as `%2B`, and its decoder never maps `+`.
fn percent_decode(raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while let Some(found) = memchr(b'%', &raw[i..]) {
        let at = i + found;
        out.extend_from_slice(&raw[i..at]);
        if let (Some(hi), Some(lo)) = (hex(raw.get(at + 1)), hex(raw.get(at + 2))) {
            out.push(hi << 4 | lo);
            i = at + 3;
        } else {
            out.push(b'%');
            i = at + 1;
        }
    }
    out.extend_from_slice(&raw[i..]);
    out
}

fn hex(digit: Option<&u8>) -> Option<u8> {
    let d = *digit?;
    match d {
        b'0'..=b'9' => Some(d - b'0'),
        b'a'..=b'f' => Some(d - b'a' + 10),
        b'A'..=b'F' => Some(d - b'A' + 10),
        _ => None,
    }
}
