//! JSON events (ESL `text/event-json`, mod_amqp and engine messages) → [`Event`]: one JSON
//! object, kept with its values' types.

use std::borrow::Cow;

use serde::de::{Deserializer as _, MapAccess, Visitor};
use serde_json::{Map, Value};

use crate::event::Event;

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
    let entries = memchr::memchr_iter(b'"', text).count() / 4;
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

/// The headers routing reads, borrowed from the JSON text where it has no escapes.
#[derive(serde::Deserialize)]
pub(super) struct RoutingHeaders<'a> {
    #[serde(rename = "Event-Name", borrow)]
    event_name: Option<Cow<'a, str>>,
    #[serde(rename = "Event-Subclass", borrow)]
    event_subclass: Option<Cow<'a, str>>,
    #[serde(borrow)]
    variable_domain_name: Option<Cow<'a, str>>,
    #[serde(borrow)]
    variable_w_domain: Option<Cow<'a, str>>,
    #[serde(rename = "Channel-Presence-ID", borrow)]
    channel_presence_id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    variable_presence_id: Option<Cow<'a, str>>,
}

impl<'a> RoutingHeaders<'a> {
    /// As [`Event::text`]: `None` when absent or empty.
    pub(super) fn text(&self, name: &str) -> Option<Cow<'a, str>> {
        let value = match name {
            "Event-Name" => &self.event_name,
            "Event-Subclass" => &self.event_subclass,
            "variable_domain_name" => &self.variable_domain_name,
            "variable_w_domain" => &self.variable_w_domain,
            "Channel-Presence-ID" => &self.channel_presence_id,
            "variable_presence_id" => &self.variable_presence_id,
            _ => return None,
        };
        value.clone().filter(|v| !v.is_empty())
    }
}

/// Reads only the routing headers of a JSON object; `None` where [`parse`] might read them
/// differently (a repeated or non-string one, invalid UTF-8) or would fail.
pub(super) fn peek(body: &[u8]) -> Option<RoutingHeaders<'_>> {
    serde_json::from_slice(body).ok()
}
