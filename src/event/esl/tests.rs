//! ESL parser tests: exact wire bytes of every frame type, chopped at every boundary, plus
//! garbage and limits. Property tests and the timing run are in `tests/`.

mod props;
mod timing;

use serde_json::{Value, json};

use super::*;
use crate::event::Event;

const CHANNEL_ANSWER_PLAIN: &[u8] = include_bytes!("testdata/channel_answer.plain");
const HANGUP_COMPLETE_JSON: &[u8] = include_bytes!("testdata/hangup_complete.json");
const AUTH_REQUEST: &[u8] = b"Content-Type: auth/request\n\n";
const AUTH_ACCEPTED: &[u8] = b"Content-Type: command/reply\nReply-Text: +OK accepted\n\n";
const AUTH_DENIED: &[u8] = b"Content-Type: command/reply\nReply-Text: -ERR invalid\n\n";
const SUBSCRIBED: &[u8] = b"Content-Type: command/reply\nReply-Text: +OK event listener enabled json\n\n";
const API_STATUS: &[u8] = b"Content-Type: api/response\nContent-Length: 338\n\n\
UP 0 years, 0 days, 2 hours, 13 minutes, 5 seconds, 112 milliseconds, 53 microseconds\n\
FreeSWITCH (Version 1.10.12 -release 64bit) is ready\n\
41 session(s) since startup\n\
3 session(s) - peak 9, last 5min 4 \n\
0 session(s) per Sec out of max 30, peak 6, last 5min 2 \n\
1000 session(s) max\n\
min idle cpu 0.00/97.57\n\
Current Stack Size/Max 240K/8192K\n";
const DISCONNECT: &[u8] = b"Content-Type: text/disconnect-notice\nContent-Length: 67\n\n\
Disconnected, goodbye.\nSee you at ClueCon! http://www.cluecon.com/\n";
/// A CUSTOM event with an event body of its own, behind the inner `Content-Length`.
const CUSTOM_WITH_BODY: &[u8] = b"Content-Length: 631\nContent-Type: text/event-plain\n\n\
Event-Subclass: engine%3A%3Adialer_member_end\n\
Event-Name: CUSTOM\n\
Core-UUID: 6d9a4b1e-5f43-4c43-9a53-0a3c61d1f0b2\n\
FreeSWITCH-Hostname: fs01.demo.example.com\n\
FreeSWITCH-Switchname: fs01\n\
FreeSWITCH-IPv4: 10.0.0.15\n\
FreeSWITCH-IPv6: %3A%3A1\n\
Event-Date-Local: 2026-11-30%2006%3A22%3A03\n\
Event-Date-GMT: Mon,%2030%20Nov%202026%2006%3A22%3A03%20GMT\n\
Event-Date-Timestamp: 1795933323500112\n\
Event-Calling-File: mod_event_socket.c\n\
Event-Calling-Function: parse_command\n\
Event-Calling-Line-Number: 2076\n\
Event-Sequence: 5880\n\
variable_domain_name: demo.example.com\n\
member_id: 81\n\
Content-Length: 49\n\
\n\
{\"member_id\":81,\"result\":\"success\",\n\"attempts\":2}";
const LOG_DATA: &[u8] = b"Content-Type: log/data\nContent-Length: 120\nLog-Level: 7\nText-Channel: 3\n\
Log-File: switch_core_state_machine.c\nLog-Func: switch_core_session_run\nLog-Line: 512\n\
User-Data: 2b7f0d4c-8a3e-4c1f-b0a9-5d2e6f7a8b9c\n\n\
2026-11-30 06:22:03.512345 [DEBUG] switch_core_state_machine.c:512 \
(sofia/internal/1000@demo.example.com) State EXECUTE\n";
const RUDE_REJECTION: &[u8] = b"Content-Type: text/rude-rejection\nContent-Length: 24\n\nAccess Denied, go away.\n";

const ALL: [&[u8]; 11] = [
    AUTH_REQUEST,
    AUTH_ACCEPTED,
    AUTH_DENIED,
    SUBSCRIBED,
    API_STATUS,
    CHANNEL_ANSWER_PLAIN,
    HANGUP_COMPLETE_JSON,
    CUSTOM_WITH_BODY,
    LOG_DATA,
    RUDE_REJECTION,
    DISCONNECT,
];

/// Pushes each chunk and takes every frame it completes; the stream must be used up.
fn parse_chunks(chunks: &[&[u8]]) -> Vec<Frame> {
    let mut parser = Parser::new();
    let mut frames = Vec::new();
    for chunk in chunks {
        parser.push(chunk);
        while let Some(frame) = parser.next_frame().expect("valid stream") {
            frames.push(frame);
        }
    }
    assert_eq!(parser.buffered(), 0, "bytes left over");
    frames
}

fn frames_of(stream: &[u8]) -> Vec<Frame> {
    parse_chunks(&[stream])
}

fn only_frame(stream: &[u8]) -> Frame {
    let mut frames = frames_of(stream);
    assert_eq!(frames.len(), 1, "{frames:?}");
    frames.remove(0)
}

fn only_event(stream: &[u8]) -> Event {
    match only_frame(stream) {
        Frame::Event(raw) => parse(raw).expect("event parses"),
        other => panic!("not an event: {other:?}"),
    }
}

/// The whole event, as the router would parse it.
fn parse(raw: RawEvent) -> Result<Event, EslError> {
    let incoming = raw.into_incoming()?;
    Ok(incoming.event().map_err(EslError::BadEventJson)?.into_owned())
}

/// The parse error of the only frame, an event.
fn event_error_of(stream: &[u8]) -> EslError {
    match only_frame(stream) {
        Frame::Event(raw) => parse(raw).expect_err("event body is bad"),
        other => panic!("not an event: {other:?}"),
    }
}

/// The first error a stream produces, pushed whole.
fn error_of(stream: &[u8]) -> EslError {
    let mut parser = Parser::new();
    parser.push(stream);
    loop {
        match parser.next_frame() {
            Ok(Some(_)) => {}
            Ok(None) => panic!("no error"),
            Err(err) => return err,
        }
    }
}

fn frame(content_type: &str, body: &[u8]) -> Vec<u8> {
    let mut out = format!("Content-Length: {}\nContent-Type: {content_type}\n\n", body.len()).into_bytes();
    out.extend_from_slice(body);
    out
}

/// An event-plain frame with one header `X: <raw>`, to see how `raw` decodes.
fn decoded(raw: &str) -> Value {
    let event = only_event(&frame("text/event-plain", format!("X: {raw}\n\n").as_bytes()));
    event.0["X"].clone()
}

#[test]
fn auth_request_and_command_replies() {
    assert_eq!(only_frame(AUTH_REQUEST), Frame::AuthRequest);
    let reply = |text: &str| Frame::CommandReply { reply: text.into() };
    assert_eq!(only_frame(AUTH_ACCEPTED), reply("+OK accepted"));
    assert_eq!(only_frame(AUTH_DENIED), reply("-ERR invalid"));
    assert_eq!(only_frame(SUBSCRIBED), reply("+OK event listener enabled json"));
    // Replies mod_event_socket writes with more headers than Reply-Text (`~` replies: bgapi,
    // userauth).
    let bgapi = b"Content-Type: command/reply\nReply-Text: +OK Job-UUID: 6f1c2d3e-4a5b-4c6d-8e7f-9a0b1c2d3e4f\n\
Job-UUID: 6f1c2d3e-4a5b-4c6d-8e7f-9a0b1c2d3e4f\n\n";
    assert_eq!(only_frame(bgapi), reply("+OK Job-UUID: 6f1c2d3e-4a5b-4c6d-8e7f-9a0b1c2d3e4f"));
    let userauth = b"Content-Type: command/reply\nReply-Text: +OK accepted\nAllowed-Events: all\n\
Allowed-API: all\nAllowed-LOG: true\n\n";
    assert_eq!(only_frame(userauth), reply("+OK accepted"));
}

#[test]
fn api_response_body_is_exactly_content_length_bytes() {
    let Frame::ApiResponse { body } = only_frame(API_STATUS) else { panic!() };
    assert!(body.starts_with("UP 0 years, 0 days, 2 hours"), "{body}");
    assert!(body.ends_with("Current Stack Size/Max 240K/8192K\n"), "{body}");
    assert_eq!(body.len(), 338);
}

#[test]
fn disconnect_notice_body_follows_its_content_length_and_the_next_frame_still_parses() {
    let mut stream = DISCONNECT.to_vec();
    stream.extend_from_slice(AUTH_REQUEST);
    let body = "Disconnected, goodbye.\nSee you at ClueCon! http://www.cluecon.com/\n";
    let notice = Frame::DisconnectNotice { body: body.into(), linger: false };
    assert_eq!(frames_of(&stream), [notice, Frame::AuthRequest]);
}

/// mod_event_socket's notice to a socket that asked to linger after its call hung up: events
/// still follow it.
#[test]
fn a_linger_notice_says_so() {
    let linger = b"Content-Type: text/disconnect-notice\nControlled-Session-UUID: 2b7f0d4c-8a3e-4c1f-b0a9-5d2e6f7a8b9c\n\
Content-Disposition: linger\nChannel-Name: sofia/internal/1000@demo.example.com\nLinger-Time: 600\nContent-Length: 0\n\n";
    assert_eq!(only_frame(linger), Frame::DisconnectNotice { body: String::new(), linger: true });
}

#[test]
fn log_data_and_unknown_content_types_are_other() {
    assert_eq!(only_frame(LOG_DATA), Frame::Other { content_type: "log/data".into() });
    assert_eq!(only_frame(RUDE_REJECTION), Frame::Other { content_type: "text/rude-rejection".into() });
    assert_eq!(only_frame(b"X-Foo: bar\n\n"), Frame::Other { content_type: String::new() });
}

#[test]
fn event_plain_channel_answer_decodes_values_in_wire_order() {
    let event = only_event(CHANNEL_ANSWER_PLAIN);
    assert_eq!(event.0.len(), 115);
    let keys: Vec<&str> = event.0.keys().map(String::as_str).collect();
    assert_eq!(keys[..3], ["Event-Name", "Core-UUID", "FreeSWITCH-Hostname"]);
    assert_eq!(keys.last(), Some(&"variable_current_application"));
    let expect = [
        ("Event-Name", json!("CHANNEL_ANSWER")),
        ("Core-UUID", json!("6d9a4b1e-5f43-4c43-9a53-0a3c61d1f0b2")),
        ("Unique-ID", json!("2b7f0d4c-8a3e-4c1f-b0a9-5d2e6f7a8b9c")),
        ("FreeSWITCH-IPv6", json!("::1")),
        ("Event-Date-Local", json!("2026-11-30 06:19:19")),
        ("Event-Date-GMT", json!("Mon, 30 Nov 2026 06:19:19 GMT")),
        ("Caller-Caller-ID-Name", json!("José García")),
        ("variable_sip_from_uri", json!("1000@demo.example.com")),
        ("variable_sip_full_from", json!("\"José García\" <sip:1000@demo.example.com>;tag=a83bc1f2")),
        ("variable_sip_h_X-Ticket", json!("a+b=c; d&e?")),
        ("variable_cc_queue_names", json!(["support", "sales"])),
    ];
    for (name, value) in expect {
        assert_eq!(event.get(name), Some(&value), "{name}");
    }
    let sdp = event.text("variable_switch_r_sdp").unwrap();
    assert!(sdp.starts_with("v=0\r\no=Yealink 1234 1234 IN IP4 192.0.2.10\r\n"), "{sdp:?}");
    assert_eq!(event.hook_event_name().as_deref(), Some("CHANNEL_ANSWER"));
    assert_eq!(event.domain().as_deref(), Some("demo.example.com"));
}

#[test]
fn event_json_hangup_complete_keeps_order_and_types() {
    let event = only_event(HANGUP_COMPLETE_JSON);
    assert_eq!(event.0.len(), 130);
    assert_eq!(event.0.keys().next().map(String::as_str), Some("Event-Name"));
    assert_eq!(event.0.keys().next_back().map(String::as_str), Some("variable_last_arg"));
    assert_eq!(event.get("Event-Name"), Some(&json!("CHANNEL_HANGUP_COMPLETE")));
    assert_eq!(event.get("Hangup-Cause"), Some(&json!("NORMAL_CLEARING")));
    assert_eq!(event.get("variable_billsec"), Some(&json!("148")));
    assert_eq!(event.get("Caller-Caller-ID-Name"), Some(&json!("José García")));
    assert_eq!(event.get("variable_cc_queue_names"), Some(&json!(["support", "sales"])));
    assert!(event.text("variable_switch_r_sdp").unwrap().contains("a=ptime:20\r\n"));

    let typed = only_event(&frame("text/event-json", br#"{"n":7,"ok":true,"none":null,"o":{"a":[1]}}"#));
    assert_eq!(Value::Object(typed.0), json!({"n": 7, "ok": true, "none": null, "o": {"a": [1]}}));
}

#[test]
fn event_plain_inner_content_length_becomes_body() {
    let event = only_event(CUSTOM_WITH_BODY);
    assert_eq!(event.hook_event_name().as_deref(), Some("CUSTOM->engine::dialer_member_end"));
    assert_eq!(event.get("Content-Length"), Some(&json!("49")));
    assert_eq!(event.get("_body"), Some(&json!("{\"member_id\":81,\"result\":\"success\",\n\"attempts\":2}")));
    assert_eq!(event.0.keys().next_back().map(String::as_str), Some("_body"));
}

#[test]
fn plain_and_json_forms_of_one_event_give_equal_events() {
    let plain = frame(
        "text/event-plain",
        b"Event-Name: CUSTOM\nEvent-Subclass: callcenter%3A%3Ainfo\n\
CC-Queue: support%40demo.example.com\nCC-Agent-Status: _undef_\n\
variable_cc_queue_names: ARRAY%3A%3Asupport%7C%3Asales\nContent-Length: 11\n\nhello\nworld",
    );
    let json = frame(
        "text/event-json",
        br#"{"Event-Name":"CUSTOM","Event-Subclass":"callcenter::info","CC-Queue":"support@demo.example.com","CC-Agent-Status":"","variable_cc_queue_names":["support","sales"],"Content-Length":"11","_body":"hello\nworld"}"#,
    );
    assert_eq!(only_event(&plain), only_event(&json));
}

/// Shapes seen in captured CHANNEL_HANGUP_COMPLETE events: `Hangup-Cause` written twice (the
/// JSON form has the key twice), arrays whose items hold `;` and spaces
/// (`variable_originated_legs`), a value with a literal `%` (`variable_ringback`), and `:` and `/`
/// that `switch_url_encode` escapes or keeps. Both forms read the same.
#[test]
fn a_header_written_twice_and_arrays_of_call_legs_read_as_in_json() {
    let plain = frame(
        "text/event-plain",
        b"Event-Name: CHANNEL_HANGUP_COMPLETE\nHangup-Cause: NORMAL_CLEARING\nChannel-State: CS_REPORTING\n\
Answer-State: hangup\nHangup-Cause: NORMAL_CLEARING\n\
Caller-Transfer-Source: 1796024728%3Ab1e2f3a4-0000-4abc-9def-111122223333%3Abl_xfer%3A1003/default/XML\n\
variable_domain_name: demo.example.com\nvariable_DP_MATCH: ARRAY%3A%3A1003%7C%3A1003\n\
variable_ringback: %25(2000,4000,440,480)\n\
variable_originated_legs: ARRAY%3A%3Ac0ffee00-1111-4222-8333-444455556666%3BOutbound%20Call%3B1003%7C%3A\
c0ffee00-1111-4222-8333-444455556666%3BOutbound%20Call%3B1003\n\
variable_caller_id: %221001%22%20%3C1001%3E\n\n",
    );
    let json = frame(
        "text/event-json",
        br#"{"Event-Name":"CHANNEL_HANGUP_COMPLETE","Hangup-Cause":"NORMAL_CLEARING","Channel-State":"CS_REPORTING","Answer-State":"hangup","Hangup-Cause":"NORMAL_CLEARING","Caller-Transfer-Source":"1796024728:b1e2f3a4-0000-4abc-9def-111122223333:bl_xfer:1003/default/XML","variable_domain_name":"demo.example.com","variable_DP_MATCH":["1003","1003"],"variable_ringback":"%(2000,4000,440,480)","variable_originated_legs":["c0ffee00-1111-4222-8333-444455556666;Outbound Call;1003","c0ffee00-1111-4222-8333-444455556666;Outbound Call;1003"],"variable_caller_id":"\"1001\" <1001>"}"#,
    );
    let event = only_event(&plain);
    assert_eq!(event, only_event(&json));
    let keys: Vec<&str> = event.0.keys().map(String::as_str).collect();
    assert_eq!(keys[..4], ["Event-Name", "Hangup-Cause", "Channel-State", "Answer-State"]);
    assert_eq!(event.get("variable_ringback"), Some(&json!("%(2000,4000,440,480)")));
    assert_eq!(event.get("variable_caller_id"), Some(&json!("\"1001\" <1001>")));
    assert_eq!(event.hook_event_name().as_deref(), Some("CHANNEL_HANGUP_COMPLETE"));
    assert_eq!(event.domain().as_deref(), Some("demo.example.com"));
}

/// An event fired through `sendevent` keeps the client's own `Content-Length` among its headers
/// (mod_event_socket's `read_packet` adds every header it reads), and `switch_event_serialize`
/// writes the body's length again, last, just before the body. They differ when the client
/// counted a trailing NUL: FreeSWITCH reads that many bytes but keeps the body up to the NUL.
/// The body is what follows the blank line, as FreeSWITCH's own client reads it
/// (libs/esl/src/esl.c), and the event is the one its JSON form gives.
#[test]
fn a_sendevent_body_follows_the_blank_line_whatever_the_clients_content_length_said() {
    let plain = frame(
        "text/event-plain",
        b"Event-Subclass: engine%3A%3Adialer_member_end\nCommand: sendevent%20CUSTOM\n\
Content-Length: 12\nEvent-UUID: 0c5e6f3a-8d2b-4c61-9a47-3e1f2b7d9a10\nEvent-Name: CUSTOM\n\
Event-Sequence: 5881\nContent-Length: 11\n\n{\"m\":81,\n}",
    );
    let json = frame(
        "text/event-json",
        br#"{"Event-Subclass":"engine::dialer_member_end","Command":"sendevent CUSTOM","Content-Length":"12","Event-UUID":"0c5e6f3a-8d2b-4c61-9a47-3e1f2b7d9a10","Event-Name":"CUSTOM","Event-Sequence":"5881","Content-Length":"11","_body":"{\"m\":81,\n}"}"#,
    );
    let event = only_event(&plain);
    assert_eq!(event.get("_body"), Some(&json!("{\"m\":81,\n}")));
    assert_eq!(event.get("Content-Length"), Some(&json!("11")));
    assert_eq!(event, only_event(&json));
    // A module that adds a `content-length` header of its own, shorter than the body.
    let short = frame("text/event-plain", b"Event-Name: MESSAGE\ncontent-length: 2\nContent-Length: 5\n\nhello");
    assert_eq!(only_event(&short).get("_body"), Some(&json!("hello")));
    // No count is checked, so none can cost the event.
    let odd = only_event(&frame("text/event-plain", b"Event-Name: CUSTOM\nContent-Length: many\n\nx"));
    assert_eq!((odd.get("Content-Length"), odd.get("_body")), (Some(&json!("many")), Some(&json!("x"))));
}

#[test]
fn percent_decoding_follows_switch_url_decode_but_leaves_bad_escapes() {
    assert_eq!(decoded("%41%42c"), json!("ABc"));
    assert_eq!(decoded("%e2%82%AC"), json!("€"));
    assert_eq!(decoded("a+b%2Bc"), json!("a+b+c"));
    assert_eq!(decoded("%0D%0A"), json!("\r\n"));
    assert_eq!(decoded("100%"), json!("100%"));
    assert_eq!(decoded("%4"), json!("%4"));
    assert_eq!(decoded("%zz%4g"), json!("%zz%4g"));
    assert_eq!(decoded("%%41"), json!("%A"));
    assert_eq!(decoded("Jos%E9"), json!("Jos\u{FFFD}"), "Latin-1 byte");
    assert_eq!(decoded("ARRAY::"), json!("ARRAY::"));
    assert_eq!(decoded("_undef_x"), json!("_undef_x"));
}

#[test]
fn event_json_with_invalid_utf8_is_replaced_not_refused() {
    let event = only_event(&frame("text/event-json", b"{\"Caller-Caller-ID-Name\":\"Jos\xe9\"}"));
    assert_eq!(event.get("Caller-Caller-ID-Name"), Some(&json!("Jos\u{FFFD}")));
}

#[test]
fn event_plain_with_invalid_utf8_keeps_its_body_by_byte_count() {
    let event =
        only_event(&frame("text/event-plain", b"Event-Name: CUSTOM\nX-Bad\xff: 1\nContent-Length: 4\n\nJos\xe9"));
    assert_eq!(event.get("X-Bad\u{FFFD}"), Some(&json!("1")));
    assert_eq!(event.get("_body"), Some(&json!("Jos\u{FFFD}")));
    let event = only_event(&frame("text/event-plain", b"Event-Name: CUSTOM\nContent-Length: 2\n\n\xe9\xe9"));
    assert_eq!(event.get("_body"), Some(&json!("\u{FFFD}\u{FFFD}")));
}

#[test]
fn tolerates_crlf_leading_blank_lines_and_header_case() {
    let reply = Frame::CommandReply { reply: "+OK accepted".into() };
    assert_eq!(only_frame(b"Content-Type: command/reply\r\nReply-Text: +OK accepted\r\n\r\n"), reply);
    assert_eq!(frames_of(b"\n\r\n\nContent-Type: auth/request\n\n"), [Frame::AuthRequest]);
    let event = only_event(b"content-type: TEXT/EVENT-JSON\ncontent-length:  2 \n\n{}");
    assert!(event.0.is_empty());
    let event =
        only_event(&frame("text/event-plain", b"Event-Name: HEARTBEAT\r\nno colon here\r\nUp-Time: 0%20years\r\n\r\n"));
    assert_eq!(Value::Object(event.0), json!({"Event-Name": "HEARTBEAT", "Up-Time": "0 years"}));
}

#[test]
fn each_stream_split_anywhere_gives_the_same_frames() {
    for stream in ALL {
        assert_chopping_is_invisible(stream);
    }
}

#[test]
fn all_streams_back_to_back_split_anywhere_give_the_same_frames() {
    let all = ALL.concat();
    let frames = frames_of(&all);
    assert_eq!(frames.len(), ALL.len());
    assert_eq!(frames, ALL.iter().map(|s| only_frame(s)).collect::<Vec<_>>());
    assert_chopping_is_invisible(&all);
}

/// Two pushes split at every byte boundary, then one byte per push: always the single-push
/// frames.
fn assert_chopping_is_invisible(stream: &[u8]) {
    let whole = frames_of(stream);
    for at in 0..=stream.len() {
        assert_eq!(parse_chunks(&[&stream[..at], &stream[at..]]), whole, "split at {at}");
    }
    let bytes: Vec<&[u8]> = stream.chunks(1).collect();
    assert_eq!(parse_chunks(&bytes), whole, "one byte at a time");
}

/// A frame over the limit that FreeSWITCH really sends (a BACKGROUND_JOB with a huge command
/// output) is skipped as it arrives, never buffered, and the frames after it are read: dropping
/// the connection would lose every event FreeSWITCH had queued for it.
#[test]
fn a_frame_over_the_limit_is_skipped_as_it_arrives_and_the_stream_goes_on() {
    let body = MAX_FRAME + 1000;
    let head = format!("Content-Length: {body}\nContent-Type: text/event-json\n\n").into_bytes();
    let mut parser = Parser::new();
    let mut start = head.clone();
    start.extend(vec![b'x'; 1000]);
    parser.push(&start);
    let size = (head.len() + body) as u64;
    assert_eq!(parser.next_frame().unwrap(), Some(Frame::Oversized { content_type: "text/event-json".into(), size }));
    assert_eq!(parser.buffered(), 0);
    for _ in 0..body / (1 << 20) {
        parser.push(&vec![b'x'; 1 << 20]);
        assert_eq!(parser.next_frame().unwrap(), None);
        assert_eq!(parser.buffered(), 0, "the skipped body is not kept");
    }
    let next = frame("text/event-json", br#"{"Event-Name":"HEARTBEAT"}"#);
    let mut rest = vec![b'x'; body - 1000 - (body / (1 << 20)) * (1 << 20)];
    rest.extend(&next);
    parser.push(&rest);
    assert!(matches!(parser.next_frame().unwrap(), Some(Frame::Event(_))));
    assert_eq!(parser.next_frame().unwrap(), None);
}

#[test]
fn a_frame_of_exactly_max_frame_bytes_is_accepted() {
    let head = |n: usize| format!("Content-Type: api/response\nContent-Length: {n}\n\n").into_bytes();
    let n = MAX_FRAME - head(1_000_000).len();
    let mut stream = head(n);
    stream.resize(MAX_FRAME, b'x');
    let Frame::ApiResponse { body } = only_frame(&stream) else { panic!() };
    assert_eq!(body.len(), n);
    let one_more = frames_of(&head(n + 1));
    assert_eq!(one_more, [Frame::Oversized { content_type: "api/response".into(), size: MAX_FRAME as u64 + 1 }]);
}

/// A length no FreeSWITCH frame has is garbage: skipping it would ignore the stream for good.
#[test]
fn a_content_length_past_any_real_frame_is_an_error() {
    let head = b"Content-Length: 99999999999\nContent-Type: text/event-plain\n\n";
    let err = error_of(head);
    assert!(matches!(err, EslError::FrameTooLarge { size } if size == 99_999_999_999 + head.len() as u64), "{err:?}");
    let huge = error_of(b"Content-Length: 123456789012345678901234567890\n\n");
    assert!(matches!(huge, EslError::FrameTooLarge { size: u64::MAX }), "{huge:?}");
}

#[test]
fn bad_content_length_is_named() {
    for value in ["abc", "-5", "0x10", "12abc", ""] {
        let err = error_of(format!("Content-Type: api/response\nContent-Length: {value}\n\n").as_bytes());
        assert!(matches!(&err, EslError::BadContentLength { value: v } if v == value), "{err:?}");
        assert!(err.to_string().contains("Content-Length"), "{err}");
    }
}

#[test]
fn header_line_without_colon_is_an_error() {
    let err = error_of(b"Content-Type command/reply\n\n");
    assert!(matches!(&err, EslError::BadHeaderLine { line } if line == "Content-Type command/reply"), "{err:?}");
}

#[test]
fn a_header_name_that_is_a_piece_of_an_event_body_is_an_error() {
    // What follows a frame cut short: the next body glued to the next frame's first line.
    let err = error_of(b"{\"Event-Name\":\"CHANNEL_ANSWER\"}Content-Length: 30\nContent-Type: text/event-json\n\n");
    assert!(matches!(&err, EslError::BadHeaderLine { line } if line.starts_with("{\"Event-Name\"")), "{err:?}");
    // The message is what `/health` shows without a token: no piece of the event in it.
    assert!(!err.to_string().contains("CHANNEL_ANSWER"), "{err}");
    for line in [&b": no name"[..], b"Two words: x", b"\"quoted\": x", b"tail}: x"] {
        let err = error_of(&[line, b"\n\n"].concat());
        assert!(matches!(err, EslError::BadHeaderLine { .. }), "{err:?}");
    }
}

#[test]
fn headers_that_never_end_fail_at_max_frame() {
    let mut parser = Parser::new();
    parser.push(&vec![b'x'; MAX_FRAME]);
    assert!(parser.next_frame().unwrap().is_none(), "not over the limit yet");
    parser.push(b"x");
    assert!(matches!(parser.next_frame(), Err(EslError::HeadTooLarge)));

    let lines = b"X-Junk: 0123456789abcdef\n".repeat(9 * 1024 * 1024 / 25);
    assert!(lines.len() > 9 * 1024 * 1024 - 25);
    assert!(matches!(error_of(&lines), EslError::HeadTooLarge));
}

#[test]
fn json_bodies_that_are_not_one_object_are_errors() {
    for body in [&b"[1,2]"[..], b"{", b"", b"\"text\""] {
        let err = event_error_of(&frame("text/event-json", body));
        assert!(matches!(err, EslError::BadEventJson(_)), "{err:?}");
    }
}

#[test]
fn a_bad_event_body_costs_only_its_own_event() {
    let bad_json = frame("text/event-json", b"{\"Event-Name\":");
    let not_an_object = frame("text/event-json", b"[{\"Event-Name\":\"CUSTOM\"}]");
    let stream = [AUTH_REQUEST, &bad_json, AUTH_ACCEPTED, &not_an_object, DISCONNECT].concat();
    let frames = frames_of(&stream);
    assert_eq!(frames.len(), 5, "{frames:?}");
    assert_eq!(
        (&frames[0], &frames[2], &frames[4]),
        (&Frame::AuthRequest, &only_frame(AUTH_ACCEPTED), &only_frame(DISCONNECT))
    );
    for at in [1, 3] {
        let Frame::Event(raw) = frames[at].clone() else { panic!("{:?}", frames[at]) };
        let err = raw.into_incoming().unwrap_err();
        assert!(matches!(err, EslError::BadEventJson(_)), "{err:?}");
    }
}

#[test]
fn frame_decoder_works_on_a_buffer_the_caller_owns() {
    let mut buf = [AUTH_REQUEST, CUSTOM_WITH_BODY, &DISCONNECT[..20]].concat();
    let mut decoder = FrameDecoder::new();
    let (first, used) = decoder.decode(&buf).unwrap().unwrap();
    assert_eq!((first, used), (Frame::AuthRequest, AUTH_REQUEST.len()));
    buf.drain(..used);
    let (second, used) = decoder.decode(&buf).unwrap().unwrap();
    assert_eq!(used, CUSTOM_WITH_BODY.len());
    assert_eq!(second, only_frame(CUSTOM_WITH_BODY));
    buf.drain(..used);
    assert!(decoder.decode(&buf).unwrap().is_none());
    buf.extend_from_slice(&DISCONNECT[20..]);
    let (third, used) = decoder.decode(&buf).unwrap().unwrap();
    assert_eq!((third, used), (only_frame(DISCONNECT), DISCONNECT.len()));
    // A caller that shrinks the buffer between calls gets nonsense, not a panic.
    let mut decoder = FrameDecoder::new();
    assert!(decoder.decode(&API_STATUS[..60]).unwrap().is_none());
    let _ = decoder.decode(&API_STATUS[..3]);
    let _ = decoder.decode(&API_STATUS[100..]);
}

#[test]
fn consumed_bytes_are_reclaimed_so_the_buffer_stays_small() {
    let mut parser = Parser::new();
    let stream = ALL.concat();
    for _ in 0..200 {
        for chunk in stream.chunks(1000) {
            parser.push(chunk);
            while parser.next_frame().unwrap().is_some() {}
        }
    }
    assert_eq!(parser.buffered(), 0);
    assert!(parser.buf.capacity() < 4 * CHANNEL_ANSWER_PLAIN.len(), "{}", parser.buf.capacity());
}
