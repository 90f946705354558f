//! The bytes FreeSWITCH puts on the wire: mod_event_socket frames (events, replies, disconnect
//! notice) and mod_amqp routing keys.
//!
//! Sources these reproduce (FreeSWITCH 1.10):
//! - `switch_url_encode_opt` (src/switch_utils.c) with `SWITCH_URL_UNSAFE` (switch_utils.h):
//!   a byte is escaped as `%XX` (upper-case hex) when it is below `' '`, above `'~'`, or one of
//!   `\r\n #%&+:;<=>?@[\]^`{|}"`; everything else, including `! $ ' ( ) * , - . / _ ~`, is kept.
//!   Since 1.4.16 `switch_url_encode` (what events use) also keeps a `%` followed by two
//!   upper-case hex digits, taking it for an escape already made (signalwire/freeswitch#85):
//!   `50%41` goes out as `50%41` and decodes to `50A`. Lossy, but it is what is on the wire.
//! - `switch_event_serialize` (src/switch_event.c): `Name: <encoded value>\n` per header, an
//!   empty value written as `_undef_`, then either `\n` or, when the event has a body,
//!   `Content-Length: <n>\n\n<body>`.
//! - mod_event_socket.c: `Content-Length: <n>\nContent-Type: text/event-<fmt>\n\n<data>`.
//! - `amqp_util_encode` and `mod_amqp_producer_routing_key` (mod_amqp_utils.c, _producer.c).

use std::borrow::Cow;

use serde_json::Value;

use crate::event::Event;

/// `auth/request`: the first frame of an inbound event-socket connection.
pub const AUTH_REQUEST: &[u8] = b"Content-Type: auth/request\n\n";

/// Reply to a correct `auth <password>`.
pub const REPLY_ACCEPTED: &str = "+OK accepted";

/// Reply to a wrong password (the socket then sends [`disconnect_notice`]).
pub const REPLY_INVALID: &str = "-ERR invalid";

/// What mod_event_socket says when it closes an inbound connection after `exit`.
pub const GOODBYE: &str = "Disconnected, goodbye.\nSee you at ClueCon! http://www.cluecon.com/\n";

/// The header that stands for the event body (FreeSWITCH's JSON serialization uses it too).
const BODY: &str = "_body";

/// The full `text/event-plain` frame FreeSWITCH sends for `event`.
pub fn event_plain(event: &Event) -> Vec<u8> {
    frame("plain", plain_body(event).as_bytes())
}

/// The full `text/event-json` frame FreeSWITCH sends for `event` (compact JSON, headers in order).
pub fn event_json(event: &Event) -> Vec<u8> {
    let json = serde_json::to_vec(&event.0).expect("a JSON object with string keys always serializes");
    frame("json", &json)
}

/// `switch_event_serialize(event, &s, SWITCH_TRUE)`: the body of a `text/event-plain` frame.
pub fn plain_body(event: &Event) -> String {
    let mut out = String::with_capacity(event.0.len() * 48);
    for (name, value) in event.0.iter().filter(|(name, _)| name.as_str() != BODY) {
        out.push_str(name);
        out.push_str(": ");
        let value = text(value);
        if value.is_empty() {
            out.push_str("_undef_");
        } else {
            push_url_encoded(&mut out, &value);
        }
        out.push('\n');
    }
    match event.get(BODY).map(text).filter(|body| !body.is_empty()) {
        Some(body) => {
            out.push_str(&format!("Content-Length: {}\n\n", body.len()));
            out.push_str(&body);
        }
        None => out.push('\n'),
    }
    out
}

/// `switch_url_encode`: see the module docs for the exact set of kept bytes and the `%XX` quirk.
pub fn url_encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    push_url_encoded(&mut out, value);
    out
}

/// Bytes `switch_url_encode` writes as they are: printable ASCII except `SWITCH_URL_UNSAFE`.
const URL_KEPT: [bool; 256] = {
    const UNSAFE: &[u8] = b"\r\n #%&+:;<=>?@[\\]^`{|}\"";
    let mut kept = [false; 256];
    let mut b = b' ';
    while b <= b'~' {
        kept[b as usize] = true;
        b += 1;
    }
    let mut i = 0;
    while i < UNSAFE.len() {
        kept[UNSAFE[i] as usize] = false;
        i += 1;
    }
    kept
};

fn push_url_encoded(out: &mut String, value: &str) {
    let bytes = value.as_bytes();
    let upper_hex = |d: &u8| d.is_ascii_digit() || (b'A'..=b'F').contains(d);
    // Kept bytes are copied in runs. A run only holds printable ASCII, so both of its ends are
    // char boundaries.
    let mut run = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let looks_escaped = b == b'%' && bytes.get(i + 1..i + 3).is_some_and(|pair| pair.iter().all(upper_hex));
        if !looks_escaped && !URL_KEPT[usize::from(b)] {
            if run < i {
                out.push_str(&value[run..i]);
            }
            push_hex(out, b);
            run = i + 1;
        }
    }
    if run < bytes.len() {
        out.push_str(&value[run..]);
    }
}

fn push_hex(out: &mut String, b: u8) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    out.push('%');
    out.push(HEX[usize::from(b >> 4)] as char);
    out.push(HEX[usize::from(b & 0x0f)] as char);
}

/// A header value as FreeSWITCH would hold it: strings as they are, null as empty, other JSON
/// values (engine events carry numbers) in their JSON form.
fn text(value: &Value) -> Cow<'_, str> {
    match value {
        Value::String(s) => Cow::Borrowed(s),
        Value::Null => Cow::Borrowed(""),
        other => Cow::Owned(other.to_string()),
    }
}

/// `command/reply` with `Reply-Text` (e.g. [`REPLY_ACCEPTED`], [`event_listener_enabled`]).
pub fn command_reply(reply_text: &str) -> Vec<u8> {
    format!("Content-Type: command/reply\nReply-Text: {reply_text}\n\n").into_bytes()
}

/// The reply text to `event <format> <names>`: `+OK event listener enabled json`.
pub fn event_listener_enabled(format: &str) -> String {
    format!("+OK event listener enabled {format}")
}

/// `api/response` carrying the command's output.
pub fn api_response(body: &str) -> Vec<u8> {
    reply_frame("api/response", body.as_bytes())
}

/// `text/disconnect-notice` with `message` as its body ([`GOODBYE`] after `exit`).
pub fn disconnect_notice(message: &str) -> Vec<u8> {
    reply_frame("text/disconnect-notice", message.as_bytes())
}

/// An event frame around an encoded body: `Content-Length` first, as mod_event_socket's
/// event writer puts it.
pub fn frame(format: &str, body: &[u8]) -> Vec<u8> {
    let head = format!("Content-Length: {}\nContent-Type: text/event-{format}\n\n", body.len());
    [head.as_bytes(), body].concat()
}

/// Replies and notices: `Content-Type` comes first.
fn reply_frame(content_type: &str, body: &[u8]) -> Vec<u8> {
    let head = format!("Content-Type: {content_type}\nContent-Length: {}\n\n", body.len());
    [head.as_bytes(), body].concat()
}

#[cfg(test)]
mod tests;
