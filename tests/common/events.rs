//! FreeSWITCH-shaped events for tests, as they arrive from ESL or mod_amqp (string values) or
//! from the contact-center engine (typed values).

use serde_json::{Map, Value, json};

/// A channel event of `name` for call `uuid` in `domain`, with the headers FreeSWITCH sends.
pub fn channel(name: &str, domain: &str, uuid: &str) -> Value {
    let mut e = json!({
        "Event-Name": name,
        "Core-UUID": "6a4cf37a-3c1b-4bd5-9e0a-1f3c2d4e5f60",
        "FreeSWITCH-Hostname": "fs1.example.com",
        "FreeSWITCH-Switchname": "fs1",
        "FreeSWITCH-IPv4": "10.0.0.5",
        "Event-Date-Local": "2026-11-30 06:19:19",
        "Event-Date-GMT": "Mon, 30 Nov 2026 06:19:19 GMT",
        "Event-Date-Timestamp": "1795933159000000",
        "Event-Calling-File": "switch_channel.c",
        "Event-Calling-Function": "switch_channel_perform_answer",
        "Event-Calling-Line-Number": "3931",
        "Event-Sequence": "4511",
        "Channel-State": "CS_EXECUTE",
        "Channel-Call-State": "ACTIVE",
        "Channel-Name": format!("sofia/internal/1000@{domain}"),
        "Unique-ID": uuid,
        "Call-Direction": "inbound",
        "Channel-Presence-ID": format!("1000@{domain}"),
        "Answer-State": "answered",
        "Caller-Caller-ID-Name": "Alice",
        "Caller-Caller-ID-Number": "1000",
        "Caller-Destination-Number": "2000",
        "Caller-Unique-ID": uuid,
        "variable_direction": "inbound",
        "variable_uuid": uuid,
        "variable_domain_name": domain,
        "variable_sip_from_user": "1000",
        "variable_sip_to_user": "2000",
    });
    if name == "CHANNEL_HANGUP_COMPLETE" {
        let map = e.as_object_mut().unwrap();
        map.insert("Hangup-Cause".into(), "NORMAL_CLEARING".into());
        map.insert("variable_hangup_cause".into(), "NORMAL_CLEARING".into());
        map.insert("variable_billsec".into(), "42".into());
        map.insert("variable_duration".into(), "47".into());
        for i in 0..280 {
            map.insert(format!("variable_rtp_stat_{i}"), format!("{}", i * 7).into());
        }
    }
    e
}

/// The contact-center engine's member-end event: numbers stay numbers.
pub fn dialer_member_end(domain: &str) -> Value {
    json!({
        "Event-Name": "CUSTOM",
        "Event-Subclass": "engine::dialer_member_end",
        "variable_domain_name": domain,
        "dialerId": "598035b7a7ec15000c40926e",
        "dialerName": "Outbound sales",
        "id": "5980360fa7ec15000c409270",
        "name": "Member 1",
        "currentNumber": "+380441234567",
        "dlr_member_number_description": "",
        "currentProbe": 2,
        "session": "b4d0c9d2-2f57-4e0f-9f1d-6b3e6b1c2a77",
        "endCause": "NORMAL_CLEARING",
    })
}

/// `base` with `patch` applied (null removes a key).
pub fn with(base: Value, patch: Value) -> Value {
    let mut out: Map<String, Value> = base.as_object().unwrap().clone();
    for (k, v) in patch.as_object().unwrap() {
        if v.is_null() {
            out.remove(k);
        } else {
            out.insert(k.clone(), v.clone());
        }
    }
    Value::Object(out)
}
