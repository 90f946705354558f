//! mod_amqp routing keys: how FreeSWITCH names an event on a topic exchange, and the binding
//! keys that select the events a hook needs.
//!
//! A key is the `format_fields` joined by `.`: `#text` is the literal text, any other field is
//! that header's value with `[A-Za-z0-9-~_]` kept, `.` as `%2E`, space as `+` and every other
//! byte as `%XX`; a missing header gives an empty word.

use std::fmt::Write as _;

use super::Event;

/// mod_amqp's default `format_fields`.
pub const DEFAULT_FORMAT: &str = "#FreeSWITCH,FreeSWITCH-Hostname,Event-Name,Event-Subclass,Unique-ID";

/// Webitel's `format_fields` (its engine's `FS_ROUTING`): the event name is the second word. The
/// engine publishes its own events with this shape: `.CUSTOM.engine%3A%3Adialer_member_end..`.
pub const WEBITEL_FORMAT: &str =
    "FreeSWITCH-Hostname,Event-Name,Event-Subclass,Channel-Presence-ID,Channel-Presence-Data";

/// The fields of a `format_fields` setting.
pub fn fields(format: &str) -> Vec<String> {
    format.split(',').map(|f| f.trim().to_owned()).collect()
}

/// One routing-key word, encoded as mod_amqp encodes header values.
pub fn encode_word(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'~' | b'_' => out.push(b as char),
            b' ' => out.push('+'),
            _ => {
                let _ = write!(out, "%{b:02X}");
            }
        }
    }
    out
}

/// The routing key mod_amqp gives `event` under `fields`.
pub fn routing_key(event: &Event, fields: &[impl AsRef<str>]) -> String {
    let words: Vec<String> = fields
        .iter()
        .map(|field| match field.as_ref().strip_prefix('#') {
            Some(literal) => literal.to_owned(),
            None => event.text(field.as_ref()).map(|v| encode_word(&v)).unwrap_or_default(),
        })
        .collect();
    words.join(".")
}

/// The binding key that selects a hook event (`CHANNEL_ANSWER`, `CUSTOM->callcenter::info`)
/// under `fields`: the event name and subclass in their words, `*` in every other word (even
/// literal ones, so a publisher that fills them differently, like the contact-center engine,
/// still matches). Without an `Event-Name` field the key cannot select, so it is `#`.
pub fn binding_key(hook_event: &str, fields: &[String]) -> String {
    if !fields.iter().any(|f| f == "Event-Name") {
        return "#".to_owned();
    }
    let (name, subclass) = match hook_event.split_once("->") {
        Some((name, subclass)) => (name, Some(subclass)),
        None => (hook_event, None),
    };
    let words: Vec<String> = fields
        .iter()
        .map(|field| match (field.as_str(), subclass) {
            ("Event-Name", _) => encode_word(name),
            ("Event-Subclass", Some(sub)) => encode_word(sub),
            _ => "*".to_owned(),
        })
        .collect();
    words.join(".")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn event(v: serde_json::Value) -> Event {
        Event(v.as_object().unwrap().clone())
    }

    #[test]
    fn words_are_encoded_like_mod_amqp() {
        assert_eq!(encode_word("engine::dialer_member_end"), "engine%3A%3Adialer_member_end");
        assert_eq!(encode_word("fs1.example.com"), "fs1%2Eexample%2Ecom");
        assert_eq!(encode_word("a b~c-d_e"), "a+b~c-d_e");
        assert_eq!(encode_word("1000@x"), "1000%40x");
        assert_eq!(encode_word("é"), "%C3%A9");
    }

    #[test]
    fn routing_keys_follow_format_fields() {
        let fields = fields(DEFAULT_FORMAT);
        let answer = event(
            json!({"Event-Name": "CHANNEL_ANSWER", "FreeSWITCH-Hostname": "fs1.example.com", "Unique-ID": "u-1"}),
        );
        assert_eq!(routing_key(&answer, &fields), "FreeSWITCH.fs1%2Eexample%2Ecom.CHANNEL_ANSWER..u-1");
        let webitel =
            self::fields("FreeSWITCH-Hostname,Event-Name,Event-Subclass,Channel-Presence-ID,Channel-Presence-Data");
        let member =
            event(json!({"Event-Name": "CUSTOM", "Event-Subclass": "engine::dialer_member_end", "currentProbe": 2}));
        assert_eq!(routing_key(&member, &webitel), ".CUSTOM.engine%3A%3Adialer_member_end..");
    }

    #[test]
    fn binding_keys_select_the_event_and_wildcard_the_rest() {
        let fields = fields(DEFAULT_FORMAT);
        assert_eq!(binding_key("CHANNEL_ANSWER", &fields), "*.*.CHANNEL_ANSWER.*.*");
        assert_eq!(binding_key("CUSTOM->callcenter::info", &fields), "*.*.CUSTOM.callcenter%3A%3Ainfo.*");
        let webitel =
            self::fields("#FreeSWITCH-Hostname,Event-Name,Event-Subclass,Channel-Presence-ID,Channel-Presence-Data");
        assert_eq!(
            binding_key("CUSTOM->engine::dialer_member_end", &webitel),
            "*.CUSTOM.engine%3A%3Adialer_member_end.*.*"
        );
        assert_eq!(binding_key("CHANNEL_ANSWER", &self::fields("#x,Unique-ID")), "#");
    }
}
