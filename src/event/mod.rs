//! Events: the FreeSWITCH (or contact-center engine) event as an ordered header map that keeps
//! each value's JSON type, with the hook event name and domain worked out as the original did.
//!
//! Pure code: no I/O.

pub mod esl;
mod json;
pub(crate) use json::plain_run;
pub mod routing;

use std::borrow::Cow;

use serde_json::{Map, Value};

use crate::hook::template::{Lookup, walk};

/// Headers, in the order they arrived. From ESL or mod_amqp every value is a string; events
/// built by the engine may carry numbers, booleans, null, arrays or objects.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Event(pub Map<String, Value>);

/// The event types FreeSWITCH knows (`switch_event_types`), the names `event` and `nixevent`
/// accept on its event socket. `ALL` is left out: it is a subscription keyword, not an event.
pub const FREESWITCH_EVENTS: &[&str] = &[
    "CUSTOM",
    "CLONE",
    "CHANNEL_CREATE",
    "CHANNEL_DESTROY",
    "CHANNEL_STATE",
    "CHANNEL_CALLSTATE",
    "CHANNEL_ANSWER",
    "CHANNEL_HANGUP",
    "CHANNEL_HANGUP_COMPLETE",
    "CHANNEL_EXECUTE",
    "CHANNEL_EXECUTE_COMPLETE",
    "CHANNEL_HOLD",
    "CHANNEL_UNHOLD",
    "CHANNEL_BRIDGE",
    "CHANNEL_UNBRIDGE",
    "CHANNEL_PROGRESS",
    "CHANNEL_PROGRESS_MEDIA",
    "CHANNEL_OUTGOING",
    "CHANNEL_PARK",
    "CHANNEL_UNPARK",
    "CHANNEL_APPLICATION",
    "CHANNEL_ORIGINATE",
    "CHANNEL_UUID",
    "API",
    "LOG",
    "INBOUND_CHAN",
    "OUTBOUND_CHAN",
    "STARTUP",
    "SHUTDOWN",
    "PUBLISH",
    "UNPUBLISH",
    "TALK",
    "NOTALK",
    "SESSION_CRASH",
    "MODULE_LOAD",
    "MODULE_UNLOAD",
    "DTMF",
    "MESSAGE",
    "PRESENCE_IN",
    "NOTIFY_IN",
    "PRESENCE_OUT",
    "PRESENCE_PROBE",
    "MESSAGE_WAITING",
    "MESSAGE_QUERY",
    "ROSTER",
    "CODEC",
    "BACKGROUND_JOB",
    "DETECTED_SPEECH",
    "DETECTED_TONE",
    "PRIVATE_COMMAND",
    "HEARTBEAT",
    "TRAP",
    "ADD_SCHEDULE",
    "DEL_SCHEDULE",
    "EXE_SCHEDULE",
    "RE_SCHEDULE",
    "RELOADXML",
    "NOTIFY",
    "PHONE_FEATURE",
    "PHONE_FEATURE_SUBSCRIBE",
    "SEND_MESSAGE",
    "RECV_MESSAGE",
    "REQUEST_PARAMS",
    "CHANNEL_DATA",
    "GENERAL",
    "COMMAND",
    "SESSION_HEARTBEAT",
    "CLIENT_DISCONNECTED",
    "SERVER_DISCONNECTED",
    "SEND_INFO",
    "RECV_INFO",
    "RECV_RTCP_MESSAGE",
    "SEND_RTCP_MESSAGE",
    "CALL_SECURE",
    "NAT",
    "RECORD_START",
    "RECORD_STOP",
    "PLAYBACK_START",
    "PLAYBACK_STOP",
    "CALL_UPDATE",
    "FAILURE",
    "SOCKET_DATA",
    "MEDIA_BUG_START",
    "MEDIA_BUG_STOP",
    "CONFERENCE_DATA_QUERY",
    "CONFERENCE_DATA",
    "CALL_SETUP_REQ",
    "CALL_SETUP_RESULT",
    "CALL_DETAIL",
    "DEVICE_STATE",
    "TEXT",
    "SHUTDOWN_REQUESTED",
];

/// Checks the name of a hook being stored: [`check_event_syntax`], and short enough that its
/// RabbitMQ binding key fits AMQP's 255 bytes (a longer one cannot be bound).
pub fn check_hook_event(name: &str) -> Result<(), &'static str> {
    check_event_syntax(name)?;
    if routing::longest_binding_key(name).len() > routing::MAX_KEY_BYTES {
        return Err("is too long: its RabbitMQ binding key would be over 255 bytes");
    }
    Ok(())
}

/// Checks a hook event name: `NAME` or `NAME->subclass`, the name upper-case letters, digits
/// and `_`, the subclass without spaces or control characters. It ends up in commands on
/// FreeSWITCH's event socket, so nothing that could end or extend a command gets through.
pub fn check_event_syntax(name: &str) -> Result<(), &'static str> {
    let (base, subclass) = match name.split_once("->") {
        Some((base, sub)) => (base, Some(sub)),
        None => (name, None),
    };
    let base_ok = base.bytes().next().is_some_and(|b| b.is_ascii_uppercase())
        && base.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_');
    if !base_ok || name.len() > 256 {
        return Err("must be an event name like CHANNEL_ANSWER or CUSTOM->callcenter::info");
    }
    if base == "ALL" {
        return Err("must name one event; ALL is not an event");
    }
    // FreeSWITCH runs any event-socket command line that holds "mod_event_socket" and
    // "reload" or "unload" as that module command, cutting every client off.
    if name.to_ascii_lowercase().contains("mod_event_socket") {
        return Err("must not contain mod_event_socket: FreeSWITCH reads such a subscription as a module command");
    }
    match subclass {
        Some(sub)
            if sub.is_empty() || sub.chars().any(|c| c.is_whitespace() || c.is_control()) || sub.contains("->") =>
        {
            Err("must have a subclass without spaces after ->, like CUSTOM->callcenter::info")
        }
        _ => Ok(()),
    }
}

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
        hook_event_name(|h| self.text(h))
    }

    /// The event's domain: `variable_domain_name`, `variable_w_domain`, or the part after `@`
    /// of `Channel-Presence-ID` or `variable_presence_id` (the whole value without an `@`).
    pub fn domain(&self) -> Option<Cow<'_, str>> {
        domain(|h| self.text(h))
    }

    /// Parses an event from JSON text: it must be an object. Invalid UTF-8 (FreeSWITCH sends
    /// caller names as they came) and lone surrogate escapes are replaced by U+FFFD, not refused.
    pub fn from_json(text: &[u8]) -> Result<Self, EventError> {
        json::parse(text)
            .map_err(|e| if e.is_data() { EventError::NotAnObject } else { EventError::Json(e.to_string()) })
    }
}

/// The largest body an event source takes: an HTTP ingest request, a RabbitMQ message.
pub const MAX_BODY: usize = 10 << 20;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventError {
    #[error("a body of {size} bytes, over the {} MiB limit", MAX_BODY >> 20)]
    TooLarge { size: usize },
    #[error("not valid JSON: {0}")]
    Json(String),
    #[error("not a JSON object")]
    NotAnObject,
}

/// What routing reads from an event: its domain and hook event name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteKey<'a> {
    pub domain: Cow<'a, str>,
    pub name: Cow<'a, str>,
}

/// The hook event name from a header lookup (`text` as [`Event::text`]): one definition for
/// parsed events and for the routing headers of unparsed ones ([`Headers`]).
fn hook_event_name<'a>(text: impl Fn(&str) -> Option<Cow<'a, str>>) -> Option<Cow<'a, str>> {
    let name = text("Event-Name")?;
    Some(match text("Event-Subclass") {
        Some(sub) => Cow::Owned(format!("{name}->{sub}")),
        None => name,
    })
}

/// The domain from a header lookup: see [`Event::domain`].
fn domain<'a>(text: impl Fn(&str) -> Option<Cow<'a, str>>) -> Option<Cow<'a, str>> {
    DOMAIN_HEADERS.iter().find_map(|&header| {
        let value = text(header)?;
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

/// Header lookup with [`Event::text`]'s rules: what routing reads, from a parsed event or
/// from the routing headers of one that was not parsed.
pub trait Headers {
    /// A header as text; `None` when absent, null or empty.
    fn text(&self, name: &str) -> Option<Cow<'_, str>>;

    /// The hook event name: see [`Event::hook_event_name`].
    fn hook_event_name(&self) -> Option<Cow<'_, str>> {
        hook_event_name(|h| self.text(h))
    }

    /// The domain: see [`Event::domain`].
    fn domain(&self) -> Option<Cow<'_, str>> {
        domain(|h| self.text(h))
    }

    fn route_key(&self) -> Option<RouteKey<'_>> {
        Some(RouteKey { domain: self.domain()?, name: self.hook_event_name()? })
    }
}

impl Headers for Event {
    fn text(&self, name: &str) -> Option<Cow<'_, str>> {
        Event::text(self, name)
    }
}

pub use json::RoutingHeaders;

/// UTF-8's byte order mark.
pub const UTF8_BOM: &[u8] = b"\xEF\xBB\xBF";

/// An event as a source hands it to the router.
#[derive(Debug, Clone, PartialEq)]
pub enum Incoming {
    /// Parsed: events in `text/event-plain`, and JSON whose routing headers a quick look could
    /// not read.
    Event(Event),
    /// JSON text of one object, with its routing headers read. Most events concern no hook,
    /// and a hook that sends the whole event unchanged can send this text: only a hook that
    /// filters or picks from the event needs it parsed.
    Json(JsonEvent),
}

/// The JSON text of an event object, checked, and its routing headers. No key repeats, so the
/// text says what the parsed event says and can be sent as it is.
#[derive(Debug, Clone, PartialEq)]
pub struct JsonEvent {
    text: String,
    headers: RoutingHeaders,
}

impl JsonEvent {
    /// Valid JSON text of one object.
    pub fn text(&self) -> &str {
        &self.text
    }
}

impl Incoming {
    /// An event from JSON text. Invalid UTF-8 and lone surrogate escapes are replaced, as in
    /// [`Event::from_json`]; text that is not a JSON object is an error.
    pub fn from_json(body: Vec<u8>) -> Result<Self, EventError> {
        Self::from_body(body).map_err(|(e, _)| e)
    }

    /// [`Incoming::from_json`] that hands the body back with the error, for a source that logs
    /// what it rejected without copying every body it accepts. A UTF-8 byte order mark before
    /// the JSON, as Windows tools save text, is skipped: JSON parsers refuse it.
    pub fn from_body(mut body: Vec<u8>) -> Result<Self, (EventError, Vec<u8>)> {
        if body.len() > MAX_BODY {
            return Err((EventError::TooLarge { size: body.len() }, body));
        }
        if body.starts_with(UTF8_BOM) {
            body.drain(..UTF8_BOM.len());
        }
        match String::from_utf8(body) {
            Ok(text) => Self::parse_text(text).map_err(|(e, text)| (e, text.into_bytes())),
            Err(invalid) => match Event::from_json(invalid.as_bytes()) {
                Ok(event) => Ok(Incoming::Event(event)),
                Err(e) => Err((e, invalid.into_bytes())),
            },
        }
    }

    /// [`Incoming::from_json`] for text.
    pub fn from_text(text: String) -> Result<Self, EventError> {
        Self::parse_text(text).map_err(|(e, _)| e)
    }

    fn parse_text(text: String) -> Result<Self, (EventError, String)> {
        // The quick look refuses `\u` escapes (it does not check what they spell: a lone
        // surrogate is not text), so text with one is parsed, which reads them and mends a lone
        // surrogate. FreeSWITCH escapes only control characters that way.
        if let Some(headers) = json::peek(&text) {
            return Ok(Incoming::Json(JsonEvent { text, headers }));
        }
        match Event::from_json(text.as_bytes()) {
            Ok(event) => Ok(Incoming::Event(event)),
            Err(e) => Err((e, text)),
        }
    }

    /// The events of a JSON array, as text, when the quick look reads every item; `None`
    /// otherwise, and the caller splits the array itself and takes the items one by one.
    pub fn all_from_text(text: &str) -> Option<Vec<Self>> {
        let items = json::peek_array(text)?;
        Some(
            items
                .into_iter()
                .map(|(text, headers)| Incoming::Json(JsonEvent { text: text.to_owned(), headers }))
                .collect(),
        )
    }

    /// The parsed event, parsing it if it is still text. Text the quick look read is a flat JSON
    /// object, so that parse is not expected to fail; a failure is an error all the same.
    pub fn event(&self) -> Result<Cow<'_, Event>, EventError> {
        match self {
            Incoming::Event(event) => Ok(Cow::Borrowed(event)),
            Incoming::Json(json) => Event::from_json(json.text.as_bytes()).map(Cow::Owned),
        }
    }

    pub fn headers(&self) -> &dyn Headers {
        match self {
            Incoming::Event(event) => event,
            Incoming::Json(json) => &json.headers,
        }
    }
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
    use proptest::prelude::Strategy as _;
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
    fn hook_event_names_cannot_smuggle_commands() {
        for ok in ["CHANNEL_ANSWER", "CUSTOM->engine::dialer_member_end", "MY_EVENT_2", "CUSTOM->sofia::register"] {
            assert_eq!(check_hook_event(ok), Ok(()), "{ok}");
        }
        for bad in [
            "CHANNEL_ANSWER\n\napi system touch /tmp/x",
            "ALL",
            "channel_answer",
            " X ",
            "",
            "CUSTOM->",
            "CUSTOM->a b",
            "CUSTOM->a\nb",
            "CUSTOM->a->b",
            "1ABC",
            "CUSTOM->mod_event_socket::reload",
            "CUSTOM->x::Mod_Event_Socket",
        ] {
            assert!(check_hook_event(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn hook_event_names_must_fit_a_binding_key() {
        // `#.CUSTOM.` and `.#` take 11 bytes; `:` takes 3.
        let fits = format!("CUSTOM->{}", "a".repeat(244));
        assert_eq!(routing::longest_binding_key(&fits).len(), 255);
        assert_eq!(check_hook_event(&fits), Ok(()));
        let over = format!("CUSTOM->{}", "a".repeat(245));
        assert_eq!(check_hook_event(&over), Err("is too long: its RabbitMQ binding key would be over 255 bytes"));
        let encoded_over = format!("CUSTOM->{}", "a:".repeat(62));
        assert!(encoded_over.len() < 256 && check_hook_event(&encoded_over).is_err());
        // The event socket takes such names; only the syntax decides there.
        assert_eq!(check_event_syntax(&over), Ok(()));
    }

    /// The route and identity a full parse reads.
    fn parsed(body: &[u8]) -> Option<Vec<Option<String>>> {
        Event::from_json(body).ok().map(|event| read(&event))
    }

    /// What the router reads from any form of an event.
    fn read(headers: &dyn Headers) -> Vec<Option<String>> {
        let mut read = vec![headers.domain(), headers.hook_event_name()];
        read.extend(["Unique-ID", "Core-UUID", "Event-Sequence"].map(|h| headers.text(h)));
        read.into_iter().map(|v| v.map(Cow::into_owned)).collect()
    }

    /// The text of an event kept as text, or `None` when it was parsed.
    fn kept(body: &[u8]) -> Option<Vec<Option<String>>> {
        match Incoming::from_json(body.to_vec()).ok()? {
            Incoming::Json(json) => Some(read(Incoming::Json(json).headers())),
            Incoming::Event(_) => None,
        }
    }

    #[test]
    fn json_kept_as_text_reads_as_the_full_parse_does() {
        let cases: &[&[u8]] = &[
            br#"{"Event-Name":"CHANNEL_ANSWER","variable_domain_name":"d.com","Other":"x","Unique-ID":"u1"}"#,
            br#"{"Event-Name":"CUSTOM","Event-Subclass":"engine::x","Channel-Presence-ID":"1000@c.com"}"#,
            br#"{"Event-Name":"CHANNEL_ANSWER","variable_domain_name":"","variable_presence_id":"p.com"}"#,
            br#"{"Event-Name":"A","variable_w_domain":"w\/com","variable_domain_name":null,"n":-1.5,"b":true}"#,
            br#"{"Event-Name":"A","Event-Subclass":"","variable_domain_name":"d.com","Core-UUID":"c","Event-Sequence":"7"}"#,
            br#"{"Event-Name":"HEARTBEAT"}"#,
        ];
        for body in cases {
            let text = String::from_utf8_lossy(body);
            assert_eq!(kept(body), parsed(body), "{text}");
            assert!(kept(body).is_some(), "{text}");
        }
    }

    #[test]
    fn json_the_quick_look_cannot_read_is_parsed() {
        let parsed_only: &[&[u8]] = &[
            // Repeated: the full parse keeps the last one.
            br#"{"Event-Name":"A","variable_domain_name":"a.com","variable_domain_name":"b.com"}"#,
            // A key with an escape.
            br#"{"Event-Name":"A","variable_domain_name":"a.com","X\"":"1"}"#,
            // Not a string: the full parse routes by its JSON text.
            br#"{"Event-Name":"A","variable_domain_name":7}"#,
            // Invalid UTF-8, in a routing header or elsewhere: replaced.
            b"{\"Event-Name\":\"A\",\"variable_domain_name\":\"d\xe9.com\"}",
            b"{\"Event-Name\":\"A\",\"Caller-Name\":\"Jos\xe9\"}",
            // Nesting, and a \u escape, which the quick look does not check.
            br#"{"Event-Name":"A","variable_domain_name":"d.com","n":[1,{"a":2}]}"#,
            br#"{"Event-Name":"A","variable_domain_name":"d.com","n":"\u00e9"}"#,
            // A lone surrogate escape: replaced.
            br#"{"Event-Name":"A","variable_domain_name":"d.com","n":"\ud800"}"#,
        ];
        for body in parsed_only {
            let Ok(Incoming::Event(event)) = Incoming::from_json(body.to_vec()) else { panic!("{body:?}") };
            assert_eq!(Some(read(&event)), parsed(body));
        }
        assert_eq!(parsed(parsed_only[0]).unwrap()[0].as_deref(), Some("b.com"));
        assert_eq!(parsed(parsed_only[2]).unwrap()[0].as_deref(), Some("7"));
        for bad in [&b"[1]"[..], br#"{"Event-Name":"A""#, b"", b"[\xe9]"] {
            assert!(Incoming::from_json(bad.to_vec()).is_err(), "{bad:?}");
            let Err((_, body)) = Incoming::from_body(bad.to_vec()) else { panic!("{bad:?}") };
            assert_eq!(body, bad, "the body comes back whole");
        }
    }

    /// Audit: a producer that writes a UTF-8 byte order mark before its JSON (as Windows tools
    /// save text) had every message refused as "not valid JSON" by the decoding RabbitMQ and ESL
    /// share; HTTP ingest already skipped the mark.
    #[test]
    fn a_utf8_byte_order_mark_before_the_json_is_skipped() {
        let member = "{\"Event-Name\":\"CUSTOM\",\"Event-Subclass\":\"engine::dialer_member_end\",\
                      \"variable_domain_name\":\"d.com\",\"currentProbe\":2}";
        let Ok(Incoming::Json(json)) = Incoming::from_body(format!("\u{feff}{member}").into_bytes()) else {
            panic!("read as text")
        };
        assert_eq!(json.text(), member, "the text sent on has no mark");
        let nested = format!("\u{feff}{}", member.replace('2', "{\"n\":[2]}"));
        let Ok(Incoming::Event(event)) = Incoming::from_body(nested.into_bytes()) else { panic!("parsed") };
        assert_eq!(event.get("currentProbe"), Some(&json!({"n": [2]})));
        let latin1 = b"\xEF\xBB\xBF{\"Event-Name\":\"A\",\"Caller-Name\":\"Jos\xe9\"}".to_vec();
        let Ok(Incoming::Event(event)) = Incoming::from_body(latin1) else { panic!("parsed") };
        assert_eq!(event.get("Caller-Name"), Some(&json!("Jos\u{fffd}")));
        // Only one mark, and only first.
        for bad in ["\u{feff}\u{feff}{}", " \u{feff}{}", "{\"a\":1}\u{feff}", "\u{feff}"] {
            assert!(Incoming::from_body(bad.into()).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn text_with_a_repeated_key_is_parsed_and_keeps_the_last_value() {
        let body = br#"{"Event-Name":"A","variable_domain_name":"a.com","X":"1","X":"2"}"#;
        let Ok(Incoming::Event(event)) = Incoming::from_json(body.to_vec()) else { panic!("parsed") };
        assert_eq!(event.get("X"), Some(&json!("2")));
        let unique = br#"{"Event-Name":"A","variable_domain_name":"a.com","X":"1","Y":"1"}"#;
        assert!(matches!(Incoming::from_json(unique.to_vec()), Ok(Incoming::Json(_))));
    }

    proptest::proptest! {
        /// Whatever the routing headers hold, what the router reads from JSON kept as text is
        /// what it would read from the parsed event.
        #[test]
        fn json_kept_as_text_never_reads_differently(
            entries in proptest::collection::vec((
                proptest::sample::select(vec!["Event-Name", "Event-Subclass", "variable_domain_name",
                    "variable_w_domain", "Channel-Presence-ID", "variable_presence_id", "Unique-ID",
                    "Core-UUID", "Event-Sequence", "Other"]),
                proptest::prop_oneof![
                    proptest::sample::select(vec!["\"\"", "null", "1", "\"a@b\"", "\"@\"", "\"x\\u0040y\"", "[\"q\"]"])
                        .prop_map(String::from),
                    "[a-z@.]{0,6}".prop_map(|s| format!("\"{s}\"")),
                ],
            ), 0..8)
        ) {
            let body = format!("{{{}}}", entries.iter().map(|(k, v)| format!("\"{k}\":{v}")).collect::<Vec<_>>().join(","));
            if let Some(read) = kept(body.as_bytes()) {
                proptest::prop_assert_eq!(Some(read), parsed(body.as_bytes()));
            }
        }
    }

    #[test]
    fn from_json_wants_an_object() {
        assert_eq!(Event::from_json(b"[1]"), Err(EventError::NotAnObject));
        assert!(matches!(Event::from_json(b"{"), Err(EventError::Json(_))));
        assert_eq!(Event::from_json(br#"{"a":1}"#).unwrap().get("a"), Some(&json!(1)));
        let latin1 = Event::from_json(b"{\"name\":\"Jos\xe9\"}").unwrap();
        assert_eq!(latin1.get("name"), Some(&json!("Jos\u{fffd}")));
    }

    /// JavaScript's `JSON.stringify` writes half of a surrogate pair (a caller name cut short)
    /// as a lone escape; the event is read with U+FFFD in its place, as invalid UTF-8 is.
    #[test]
    fn lone_surrogate_escapes_are_replaced_not_refused() {
        let name = |json: &[u8]| Event::from_json(json).unwrap().get("name").cloned().unwrap();
        assert_eq!(name(br#"{"name":"a\ud800b"}"#), json!("a\u{fffd}b"));
        assert_eq!(name(br#"{"name":"\udc00\ud83d"}"#), json!("\u{fffd}\u{fffd}"));
        assert_eq!(name(br#"{"name":"\ud83d\ude00 \ud83d"}"#), json!("\u{1f600} \u{fffd}"));
        assert_eq!(name(b"{\"name\":\"Jos\xe9 \\ud800\"}"), json!("Jos\u{fffd} \u{fffd}"));
        // An escaped backslash before `ud800` is text, not an escape; and the event still parses.
        assert_eq!(name(br#"{"name":"\\ud800","x":"\ud800"}"#), json!("\\ud800"));
        assert_eq!(name(br#"{"name":"\uD83D\uDE00\uDBFF"}"#), json!("\u{1f600}\u{fffd}"));
        assert!(matches!(Event::from_json(br#"{"name":"\ud800"#), Err(EventError::Json(_))));
        assert!(matches!(Event::from_json(br#"{"name":"x\"#), Err(EventError::Json(_))));
    }
}
