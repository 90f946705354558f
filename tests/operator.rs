//! What a contact-center operator relies on when moving hooks over from the Webitel engine:
//! behaviours of the original (engine-nodejs `src/services/hook/hookClass.js`) that hooks
//! written for it depend on, checked end to end against a real receiver.

mod common;

use std::time::Duration;

use common::events::{channel, with};
use common::receiver::{Receiver, Reply};
use common::{Backend, TestServer, web};
use serde_json::json;

on_both_stores!(
    map_renames_a_key_onto_one_the_event_already_has,
    auth_cookies_are_variables_by_their_names,
    an_empty_filter_value_matches_an_absent_header,
);

const D: &str = "operator.example.com";
const WAIT: Duration = Duration::from_secs(15);

/// `map: {"a": "b"}` makes `b` carry `a`'s value, as the original's rename did
/// (`data[map[key]] = data[key]; delete data[key]`), even when the event has a `b` of its
/// own: the operator asked for `a` under that name. When the event's `b` came after `a`, it
/// was kept instead, and `a`'s value was lost.
async fn map_renames_a_key_onto_one_the_event_already_has(b: Backend) {
    let s = TestServer::start(b).await;
    let r = Receiver::start().await;
    let map =
        json!({"Unique-ID": "id", "Caller-Caller-ID-Number": "Caller-Caller-ID-Name", "Caller-Caller-ID-Name": "name"});
    s.create_hook(D, json!({"event": "CHANNEL_ANSWER", "action": web(&r.url("/all")), "map": map})).await;
    let fields = json!(["Unique-ID", "id"]);
    s.create_hook(
        D,
        json!({"event": "CHANNEL_ANSWER", "action": web(&r.url("/fields")), "map": {"Unique-ID": "id"}, "fields": fields}),
    )
    .await;
    let get = json!({"type": "web", "method": "GET", "url": r.url("/get")});
    s.create_hook(D, json!({"event": "CHANNEL_ANSWER", "action": get, "map": {"Unique-ID": "id"}, "fields": fields}))
        .await;
    // The engine's own `id` comes after `Unique-ID`.
    s.ingest(with(channel("CHANNEL_ANSWER", D, "u-1"), json!({"id": "crm-7"}))).await;

    let all = r.wait_for("/all", 1, WAIT).await[0].json();
    assert_eq!(all["data"]["id"], "u-1");
    assert!(all["data"].get("Unique-ID").is_none());
    // Renames read the event's keys, not each other's results.
    assert_eq!(all["data"]["Caller-Caller-ID-Name"], "1000");
    assert_eq!(all["data"]["name"], "Alice");
    assert!(all["data"].get("Caller-Caller-ID-Number").is_none());
    let fields = r.wait_for("/fields", 1, WAIT).await[0].json();
    assert_eq!(fields["data"], json!({"id": "u-1"}));
    let get = &r.wait_for("/get", 1, WAIT).await[0];
    assert_eq!(get.target, "/get?id=u-1");
}

/// The original exposed each cookie its auth server set as `auth:header:<cookie name>` (its
/// value, without the attributes), next to the whole `auth:header:set-cookie`: hooks send a
/// session id as `X-Session: ${auth:header:JSESSIONID}`. Those rendered empty.
async fn auth_cookies_are_variables_by_their_names(b: Backend) {
    let s = TestServer::start(b).await;
    let r = Receiver::start().await;
    r.script(
        "/auth",
        [Reply::status(200)
            .header("Set-Cookie", "JSESSIONID=abc123; Path=/; HttpOnly")
            .header("Set-Cookie", "lang=en")
            .header("Set-Cookie", "x-lang=from-cookie")
            .header("X-Lang", "uk")],
    );
    let headers = json!({"X-Session": "${auth:header:JSESSIONID}", "X-Lang": "${auth:header:lang}",
        "X-Lower": "${auth:header:jsessionid}", "X-Real": "${auth:header:x-lang}"});
    s.create_hook(
        D,
        json!({"event": "CHANNEL_ANSWER", "action": web(&r.url("/h")), "headers": headers,
        "auth": {"enabled": true, "url": r.url("/auth")}}),
    )
    .await;
    s.ingest(channel("CHANNEL_ANSWER", D, "u-1")).await;
    let got = &r.wait_for("/h", 1, WAIT).await[0];
    assert_eq!(got.header("x-session"), Some("abc123"));
    assert_eq!(got.header("x-lang"), Some("en"));
    // Cookie names are case-sensitive; a response header of the same name comes first.
    assert_eq!(got.header("x-lower"), Some(""));
    assert_eq!(got.header("x-real"), Some("uk"));
}

/// `{"operation": "!=", "value": ""}` is how hooks say "the call has a campaign id": the
/// original read the empty value as null (`value || null`), so `!=` passed only when the
/// header was there, and `==` when it was not. An absent header passed `!= ""` here, so such
/// a hook fired on every call without the header. Absent now counts as empty.
async fn an_empty_filter_value_matches_an_absent_header(b: Backend) {
    let s = TestServer::start(b).await;
    let r = Receiver::start().await;
    let header = "variable_sip_h_X-Campaign";
    for (path, operation) in [("/has", "!="), ("/none", "==")] {
        let filter = json!({header: {"operation": operation, "value": ""}});
        s.create_hook(D, json!({"event": "CHANNEL_ANSWER", "action": web(&r.url(path)), "filter": filter})).await;
    }
    for (uuid, campaign) in [("absent", json!(null)), ("empty", json!("")), ("set", json!("spring"))] {
        s.ingest(with(channel("CHANNEL_ANSWER", D, uuid), json!({header: campaign}))).await;
    }
    // Sorted: the hook is not ordered, so two events' webhooks may arrive either way round.
    let calls = |got: Vec<common::receiver::Received>| -> Vec<String> {
        let mut ids: Vec<String> =
            got.iter().map(|g| g.json()["data"]["Unique-ID"].as_str().unwrap().to_owned()).collect();
        ids.sort();
        ids
    };
    assert_eq!(calls(r.wait_for("/has", 1, WAIT).await), ["set"]);
    assert_eq!(calls(r.wait_for("/none", 2, WAIT).await), ["absent", "empty"]);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(r.received().len(), 3, "no other webhook");
}
