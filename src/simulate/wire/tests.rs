//! Exact-byte tests of the wire encodings against what FreeSWITCH's C code produces.

use serde_json::{Value, json};

use super::*;
use crate::event::routing::{DEFAULT_FORMAT, WEBITEL_FORMAT, encode_word as amqp_encode, fields, routing_key};
use crate::simulate::calls::Switch;

fn event(v: Value) -> Event {
    Event(v.as_object().expect("test events are objects").clone())
}

/// Space, `@`, `:`, `"`, non-ASCII, the kept punctuation, a tab, a backslash, DEL, an empty
/// value, a number and a body with a non-ASCII character.
fn awkward() -> Event {
    event(json!({
        "Event-Name": "CUSTOM",
        "Event-Subclass": "callcenter::info",
        "CC-Member-CID-Name": "Zoë \"VIP\" O'Brien",
        "Channel-Presence-ID": "1000@demo.example.com",
        "Event-Date-Local": "2025-03-14 10:00:00",
        "Odd": "a+b=c&d%e#f|~!*(),-./_$'\t\\\u{7f}",
        "Empty": "",
        "currentProbe": 2,
        "_body": "línea1\nline2\n",
    }))
}

#[test]
fn url_encode_keeps_only_switch_url_safe_bytes() {
    assert_eq!(url_encode("Fri, 15 Jul 2016 08:38:15 GMT"), "Fri,%2015%20Jul%202016%2008%3A38%3A15%20GMT");
    assert_eq!(url_encode("%(2000,4000,440,480)"), "%25(2000,4000,440,480)");
    assert_eq!(url_encode("\"Igor\" <9999>"), "%22Igor%22%20%3C9999%3E");
    assert_eq!(url_encode("ARRAY::a;b|:c"), "ARRAY%3A%3Aa%3Bb%7C%3Ac");
    assert_eq!(url_encode("v=0\r\n"), "v%3D0%0D%0A");
    assert_eq!(url_encode("*prepaid/x.y_z-~!$'()"), "*prepaid/x.y_z-~!$'()");
    assert_eq!(url_encode("[a]^`{b}?"), "%5Ba%5D%5E%60%7Bb%7D%3F");
    assert_eq!(url_encode("Олена"), "%D0%9E%D0%BB%D0%B5%D0%BD%D0%B0");
}

/// signalwire/freeswitch#85: `%` + two upper-case hex digits is taken for an existing escape.
#[test]
fn url_encode_keeps_what_looks_like_an_escape_as_freeswitch_does() {
    assert_eq!(url_encode("sip:%2B380@h"), "sip%3A%2B380%40h");
    assert_eq!(url_encode("50%41"), "50%41");
    assert_eq!(url_encode("%4a %4G"), "%254a%20%254G");
    assert_eq!(url_encode("100%"), "100%25");
    assert_eq!(url_encode("x%A"), "x%25A");
    assert_eq!(url_encode("%AB"), "%AB");
    assert_eq!(url_encode("100% Support"), "100%25%20Support");
}

#[test]
fn event_plain_is_the_exact_freeswitch_frame() {
    let body = "Event-Name: CUSTOM\n\
                Event-Subclass: callcenter%3A%3Ainfo\n\
                CC-Member-CID-Name: Zo%C3%AB%20%22VIP%22%20O'Brien\n\
                Channel-Presence-ID: 1000%40demo.example.com\n\
                Event-Date-Local: 2025-03-14%2010%3A00%3A00\n\
                Odd: a%2Bb%3Dc%26d%25e%23f%7C~!*(),-./_$'%09%5C%7F\n\
                Empty: _undef_\n\
                currentProbe: 2\n\
                Content-Length: 14\n\
                \n\
                línea1\nline2\n";
    // 312 bytes, 311 characters: the lengths count bytes.
    let expected = format!("Content-Length: 312\nContent-Type: text/event-plain\n\n{body}");
    assert_eq!(String::from_utf8(event_plain(&awkward())).unwrap(), expected);
}

#[test]
fn event_plain_without_body_ends_with_a_blank_line() {
    let frame = event_plain(&event(json!({"Event-Name": "HEARTBEAT", "Up-Time": "0 years, 1 day"})));
    let expected = "Content-Length: 53\nContent-Type: text/event-plain\n\n\
                    Event-Name: HEARTBEAT\nUp-Time: 0%20years,%201%20day\n\n";
    assert_eq!(String::from_utf8(frame).unwrap(), expected);
}

#[test]
fn event_json_is_compact_ordered_and_counts_bytes() {
    let json = r#"{"Event-Name":"CUSTOM","Event-Subclass":"callcenter::info","CC-Member-CID-Name":"Zoë \"VIP\" O'Brien","Channel-Presence-ID":"1000@demo.example.com","Event-Date-Local":"2025-03-14 10:00:00","Odd":"a+b=c&d%e#f|~!*(),-./_$'\t\\"#;
    let json = format!("{json}\u{7f}\",\"Empty\":\"\",\"currentProbe\":2,\"_body\":\"línea1\\nline2\\n\"}}");
    // 283 bytes, 281 characters.
    let expected = format!("Content-Length: 283\nContent-Type: text/event-json\n\n{json}");
    assert_eq!(String::from_utf8(event_json(&awkward())).unwrap(), expected);
}

#[test]
fn socket_frames_match_mod_event_socket() {
    assert_eq!(AUTH_REQUEST, b"Content-Type: auth/request\n\n");
    assert_eq!(command_reply(REPLY_ACCEPTED), b"Content-Type: command/reply\nReply-Text: +OK accepted\n\n");
    assert_eq!(command_reply(REPLY_INVALID), b"Content-Type: command/reply\nReply-Text: -ERR invalid\n\n");
    assert_eq!(
        command_reply(&event_listener_enabled("json")),
        b"Content-Type: command/reply\nReply-Text: +OK event listener enabled json\n\n"
    );
    assert_eq!(api_response("+OK Ja\n"), b"Content-Type: api/response\nContent-Length: 7\n\n+OK Ja\n");
    let notice = "Content-Type: text/disconnect-notice\nContent-Length: 67\n\n\
                  Disconnected, goodbye.\nSee you at ClueCon! http://www.cluecon.com/\n";
    assert_eq!(String::from_utf8(disconnect_notice(GOODBYE)).unwrap(), notice);
}

#[test]
fn routing_key_uses_default_format_fields() {
    let create = event(json!({
        "Event-Name": "CHANNEL_CREATE",
        "FreeSWITCH-Hostname": "fs-01.example.com",
        "Unique-ID": "8f3c2a52-1b7e-4d1c-9a0f-2b6f3e6a9c11",
    }));
    assert_eq!(
        routing_key(&create, &fields(DEFAULT_FORMAT)),
        "FreeSWITCH.fs-01%2Eexample%2Ecom.CHANNEL_CREATE..8f3c2a52-1b7e-4d1c-9a0f-2b6f3e6a9c11"
    );
    let cc = event(json!({"Event-Name": "CUSTOM", "Event-Subclass": "callcenter::info", "FreeSWITCH-Hostname": "fs1"}));
    assert_eq!(routing_key(&cc, &fields(DEFAULT_FORMAT)), "FreeSWITCH.fs1.CUSTOM.callcenter%3A%3Ainfo.");
}

#[test]
fn routing_key_of_the_engine_dialer_event_under_webitel_format() {
    let end = Switch::new(5, vec!["demo.example.com".into()]).dialer_member_end();
    assert_eq!(routing_key(&end, &fields(WEBITEL_FORMAT)), ".CUSTOM.engine%3A%3Adialer_member_end..");
}

#[test]
fn routing_key_edge_cases() {
    let e = event(json!({"Name": "Zoë O'Brien~x_y-z", "Probe": 2, "Dot": "a.b", "Empty": ""}));
    assert_eq!(routing_key(&e, &["Name"]), "Zo%C3%AB+O%27Brien~x_y-z");
    assert_eq!(routing_key(&e, &["Probe", "Dot", "Empty"]), "2.a%2Eb.");
    assert_eq!(routing_key(&e, &["#Free.SWITCH", "#", "Missing"]), "Free.SWITCH..");
    assert_eq!(routing_key(&e, &["Missing", "Missing"]), ".");
    assert_eq!(routing_key(&e, &[] as &[&str]), "");
    assert_eq!(amqp_encode("*#/:@"), "%2A%23%2F%3A%40");
}

#[test]
fn simulated_call_events_route_under_both_formats() {
    let mut switch = Switch::new(9, vec!["demo.example.com".into()]);
    let events = switch.call();
    let uuid = events[0].text("Unique-ID").unwrap().into_owned();
    let ext = events[0].text("Caller-Username").unwrap().into_owned();
    let ext = amqp_encode(&ext);
    assert_eq!(
        routing_key(&events[0], &fields(DEFAULT_FORMAT)),
        format!("FreeSWITCH.fs-01%2Eexample%2Ecom.CHANNEL_CREATE..{uuid}")
    );
    assert_eq!(
        routing_key(&events[0], &fields(WEBITEL_FORMAT)),
        format!("fs-01%2Eexample%2Ecom.CHANNEL_CREATE..{ext}%40demo%2Eexample%2Ecom.")
    );
    assert_eq!(
        routing_key(&events[2], &fields(WEBITEL_FORMAT)),
        format!("fs-01%2Eexample%2Ecom.CHANNEL_ANSWER..{ext}%40demo%2Eexample%2Ecom.demo%2Eexample%2Ecom")
    );
}

#[test]
fn every_simulated_event_encodes_to_a_consistent_frame() {
    let mut switch = Switch::new(3, crate::simulate::calls::domain_names(2));
    let mut events = switch.calls(5);
    events.extend(switch.callcenter_info());
    events.push(switch.dialer_member_end());
    for e in &events {
        for frame in [event_plain(e), event_json(e)] {
            let split = frame.windows(2).position(|w| w == b"\n\n").unwrap();
            let head = std::str::from_utf8(&frame[..split]).unwrap();
            let length: usize = head.lines().next().unwrap()["Content-Length: ".len()..].parse().unwrap();
            assert_eq!(length, frame.len() - split - 2, "{head}");
        }
        let plain = plain_body(e);
        assert!(plain.ends_with("\n\n"));
        // Encoded values never carry a raw newline, so every header is one line.
        assert_eq!(plain.lines().filter(|l| !l.is_empty()).count(), e.0.len());
    }
}

/// `cargo test --release --lib simulate::wire::tests::encoding_rate -- --ignored --nocapture`
#[test]
#[ignore = "measurement; run in release mode"]
fn encoding_rate() {
    use std::time::Instant;
    let events = Switch::new(1, crate::simulate::calls::domain_names(10)).calls(2000);
    for (name, encode) in [("plain", event_plain as fn(&Event) -> Vec<u8>), ("json", event_json)] {
        let started = Instant::now();
        let bytes: usize = events.iter().map(|e| encode(e).len()).sum();
        let secs = started.elapsed().as_secs_f64();
        println!(
            "event_{name}: {:.0} events/s, {:.0} bytes/event",
            events.len() as f64 / secs,
            bytes as f64 / events.len() as f64
        );
    }
}
