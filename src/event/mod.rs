//! Events: the FreeSWITCH (or contact-center engine) event as an ordered header map that keeps
//! each value's JSON type, with the hook event name and domain worked out as the original did.
//!
//! Pure code: no I/O.

pub mod esl;
pub mod routing;

use std::borrow::Cow;

use serde_json::{Map, Value};

use crate::hook::template::{Lookup, walk};

/// Headers, in the order they arrived. From ESL or mod_amqp every value is a string; events
/// built by the engine may carry numbers, booleans, null, arrays or objects.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Event(pub Map<String, Value>);

/// Where an event's domain is read from, first present and non-empty wins.
pub const DOMAIN_HEADERS: [&str; 4] =
    ["variable_domain_name", "variable_w_domain", "Channel-Presence-ID", "variable_presence_id"];

impl Event {
    pub fn new(headers: Map<String, Value>) -> Self {
        Event(headers)
    }

    pub fn get(&self, name: &str) -> Option<&Value> {
        self.0.get(name)
    }

    /// A header as text: strings as they are, other scalars in JSON form; `None` when absent,
    /// null or empty.
    pub fn text(&self, name: &str) -> Option<Cow<'_, str>> {
        match self.0.get(name)? {
            Value::Null => None,
            Value::String(s) if s.is_empty() => None,
            Value::String(s) => Some(s.as_str().into()),
            other => Some(other.to_string().into()),
        }
    }

    /// The hook event name: `Event-Name`, plus `->` + `Event-Subclass` when there is one
    /// (`CUSTOM->engine::dialer_member_end`). Borrowed when there is no subclass.
    pub fn hook_event_name(&self) -> Option<Cow<'_, str>> {
        let name = self.text("Event-Name")?;
        Some(match self.text("Event-Subclass") {
            Some(sub) => Cow::Owned(format!("{name}->{sub}")),
            None => name,
        })
    }

    /// The event's domain: `variable_domain_name`, `variable_w_domain`, or the part after `@`
    /// of `Channel-Presence-ID` or `variable_presence_id` (the whole value without an `@`).
    pub fn domain(&self) -> Option<Cow<'_, str>> {
        DOMAIN_HEADERS.iter().find_map(|&header| {
            let value = self.text(header)?;
            let domain = match header {
                "Channel-Presence-ID" | "variable_presence_id" => match value {
                    Cow::Borrowed(v) => Cow::Borrowed(v.split_once('@').map_or(v, |(_, d)| d)),
                    Cow::Owned(v) => Cow::Owned(v.split_once('@').map_or(v.as_str(), |(_, d)| d).to_owned()),
                },
                _ => value,
            };
            (!domain.is_empty()).then_some(domain)
        })
    }

    /// Parses an event from JSON text: it must be an object.
    pub fn from_json(text: &[u8]) -> Result<Self, EventError> {
        match serde_json::from_slice(text).map_err(|e| EventError::Json(e.to_string()))? {
            Value::Object(map) => Ok(Event(map)),
            _ => Err(EventError::NotAnObject),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventError {
    #[error("not valid JSON: {0}")]
    Json(String),
    #[error("not a JSON object")]
    NotAnObject,
}

impl Lookup for Event {
    /// `${x}` reads `variable_x`, else `x`; `${a.b}` walks into `variable_a` or `a`.
    fn resolve(&self, name: &str, path: &[String]) -> Option<Value> {
        let header = |n: &str| {
            let var = format!("variable_{n}");
            self.0.get(&var).or_else(|| self.0.get(n))
        };
        if let Some(v) = header(name) {
            return Some(v.clone());
        }
        match path {
            [root, rest @ ..] if !rest.is_empty() => walk(header(root)?, rest).cloned(),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hook::template::{Syntax, Template};
    use serde_json::json;

    fn event(v: Value) -> Event {
        Event(v.as_object().unwrap().clone())
    }

    #[test]
    fn event_name_appends_the_subclass() {
        assert_eq!(event(json!({"Event-Name": "CHANNEL_ANSWER"})).hook_event_name().as_deref(), Some("CHANNEL_ANSWER"));
        let custom = event(json!({"Event-Name": "CUSTOM", "Event-Subclass": "engine::dialer_member_end"}));
        assert_eq!(custom.hook_event_name().as_deref(), Some("CUSTOM->engine::dialer_member_end"));
        assert_eq!(event(json!({"Event-Subclass": "x"})).hook_event_name(), None);
    }

    #[test]
    fn domain_resolution_follows_the_original_order() {
        let all = json!({"variable_presence_id": "1@p.com", "Channel-Presence-ID": "1@c.com",
            "variable_w_domain": "w.com", "variable_domain_name": "d.com"});
        assert_eq!(event(all.clone()).domain().as_deref(), Some("d.com"));
        let mut v = all;
        v["variable_domain_name"] = "".into();
        assert_eq!(event(v.clone()).domain().as_deref(), Some("w.com"));
        v.as_object_mut().unwrap().remove("variable_w_domain");
        assert_eq!(event(v.clone()).domain().as_deref(), Some("c.com"));
        v.as_object_mut().unwrap().remove("Channel-Presence-ID");
        assert_eq!(event(v.clone()).domain().as_deref(), Some("p.com"));
        v["variable_presence_id"] = "nodomain".into();
        assert_eq!(event(v).domain().as_deref(), Some("nodomain"));
        assert_eq!(event(json!({"Event-Name": "HEARTBEAT"})).domain(), None);
        assert_eq!(event(json!({"Channel-Presence-ID": "1000@"})).domain(), None);
    }

    #[test]
    fn templates_read_variables_first_then_headers_then_paths() {
        let e = event(json!({"variable_id": "var", "id": "plain", "dialerId": 7, "member": {"n": [1, 2]}}));
        let t = Template::parse("${id} ${dialerId} ${member.n.1} ${nope}", Syntax::Text).unwrap();
        assert_eq!(t.render(&e), "var 7 2 ");
    }

    #[test]
    fn from_json_wants_an_object() {
        assert_eq!(Event::from_json(b"[1]"), Err(EventError::NotAnObject));
        assert!(matches!(Event::from_json(b"{"), Err(EventError::Json(_))));
        assert_eq!(Event::from_json(br#"{"a":1}"#).unwrap().get("a"), Some(&json!(1)));
    }
}
