//! JSON events (ESL `text/event-json`, mod_amqp and engine messages) → [`Event`]: one JSON
//! object, kept with its values' types.

use std::borrow::Cow;
use std::collections::HashSet;

use serde::Deserialize;
use serde::de::{Deserializer, Error as _, MapAccess, Visitor};
use serde_json::{Map, Value};

use crate::event::{Event, Headers};

/// Parses one JSON object. FreeSWITCH's cJSON passes a caller name's bytes through unchecked,
/// so invalid UTF-8 is replaced rather than refused; that second pass is only tried on
/// failure, which keeps the common path to one.
pub(crate) fn parse(body: &[u8]) -> Result<Event, serde_json::Error> {
    match object(body) {
        Ok(map) => Ok(Event(map)),
        Err(err) if std::str::from_utf8(body).is_ok() => Err(err),
        Err(_) => object(String::from_utf8_lossy(body).as_bytes()).map(Event),
    }
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
/// wherever [`parse`] might read the event differently or fail: a repeated routing header, one
/// that is not a string (or null), a value that is an array or object (the parse limits
/// nesting, this look does not), a key with an escape, invalid JSON. With `unique_keys`, also
/// any repeated key (the parse keeps the last value), which matters only where the text is
/// sent as it is: that check costs a hash of every key, so it is left to then.
pub(super) fn peek(body: &[u8], unique_keys: bool) -> Option<RoutingHeaders> {
    let mut de = serde_json::Deserializer::from_slice(body);
    let headers = de.deserialize_map(Peek { unique_keys }).ok()?;
    de.end().ok()?;
    Some(headers)
}

struct Peek {
    unique_keys: bool,
}

impl<'de> Visitor<'de> for Peek {
    type Value = RoutingHeaders;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a flat JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Self::Value, A::Error> {
        let mut headers = RoutingHeaders::default();
        let mut seen = self.unique_keys.then(|| HashSet::with_capacity(256));
        while let Some(Key { name, routing }) = access.next_key()? {
            if seen.as_mut().is_some_and(|seen| !seen.insert(name)) {
                return Err(A::Error::custom("repeated key"));
            }
            match routing {
                Some(at) if headers.0[at].is_some() => return Err(A::Error::custom("repeated routing header")),
                Some(at) => headers.0[at] = access.next_value()?,
                None => access.next_value::<Scalar>().map(drop)?,
            }
        }
        Ok(headers)
    }
}

/// A key, borrowed from the text (one with an escape is refused), and the index of the
/// routing header it names, if it names one.
struct Key<'de> {
    name: &'de str,
    routing: Option<usize>,
}

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        de.deserialize_str(KeyVisitor)
    }
}

struct KeyVisitor;

impl<'de> Visitor<'de> for KeyVisitor {
    type Value = Key<'de>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a header name without escapes")
    }

    fn visit_borrowed_str<E: serde::de::Error>(self, name: &'de str) -> Result<Key<'de>, E> {
        Ok(Key { name, routing: ROUTING.iter().position(|&h| h == name) })
    }
}

/// Any JSON value but an array or an object, read without keeping it.
struct Scalar;

impl<'de> Deserialize<'de> for Scalar {
    fn deserialize<D: Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        de.deserialize_any(Scalar)
    }
}

impl Visitor<'_> for Scalar {
    type Value = Scalar;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a string, number, boolean or null")
    }

    fn visit_bool<E>(self, _: bool) -> Result<Scalar, E> {
        Ok(Scalar)
    }

    fn visit_i64<E>(self, _: i64) -> Result<Scalar, E> {
        Ok(Scalar)
    }

    fn visit_u64<E>(self, _: u64) -> Result<Scalar, E> {
        Ok(Scalar)
    }

    fn visit_f64<E>(self, _: f64) -> Result<Scalar, E> {
        Ok(Scalar)
    }

    fn visit_str<E>(self, _: &str) -> Result<Scalar, E> {
        Ok(Scalar)
    }

    fn visit_unit<E>(self) -> Result<Scalar, E> {
        Ok(Scalar)
    }
}
