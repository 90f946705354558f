//! FreeSWITCH-shaped events for tests, as they arrive from ESL or mod_amqp (string values) or
//! from the contact-center engine (typed values).

use serde_json::{Map, Value, json};
use switchhook::simulate::calls::Switch;

/// A channel event of `name` for call `uuid` in `domain`, as FreeSWITCH sends it (from the
/// simulated switch: a HANGUP_COMPLETE carries hundreds of `variable_*`), with the values the
/// tests rely on pinned.
pub fn channel(name: &str, domain: &str, uuid: &str) -> Value {
    let mut switch = Switch::new(7, vec![domain.to_owned()]);
    let event = switch.call().into_iter().find(|e| e.get("Event-Name") == Some(&json!(name))).expect("a call has it");
    let pinned = json!({
        "Unique-ID": uuid,
        "Caller-Unique-ID": uuid,
        "Channel-Call-UUID": uuid,
        "variable_uuid": uuid,
        "Channel-Name": format!("sofia/internal/1000@{domain}"),
        "Call-Direction": "inbound",
        "Channel-Presence-ID": format!("1000@{domain}"),
        "Caller-Caller-ID-Name": "Alice",
        "Caller-Caller-ID-Number": "1000",
        "Caller-Destination-Number": "2000",
        "variable_transfer_history": null,
    });
    let mut e = with(Value::Object(event.0), pinned);
    if name == "CHANNEL_HANGUP_COMPLETE" {
        e = with(
            e,
            json!({"Hangup-Cause": "NORMAL_CLEARING", "variable_hangup_cause": "NORMAL_CLEARING", "variable_billsec": "42"}),
        );
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
