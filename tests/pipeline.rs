//! Events in, webhooks out: matching, rendering, delivery, retries, signatures, the delivery
//! log and the dry run, against a real receiver, on both stores.

mod common;

use common::web;

use std::time::Duration;

use common::events::{channel, dialer_member_end, with};
use common::receiver::{Receiver, Reply};
use common::{Backend, TestServer, seed_hook};
use serde_json::{Value, json};
use switchhook::auth::Role;

on_both_stores!(
    filters_decide_which_hooks_fire,
    domain_resolution_picks_the_hook_domain,
    default_body_fields_map_and_get_query,
    get_query_and_auth_query_are_written_as_the_original_wrote_them,
    seed_raw_body_stays_valid_json_with_quotes_and_newlines,
    header_templates_and_auth_pre_request_with_cookie,
    auth_answer_headers_given_twice_are_all_kept,
    auth_cookies_and_the_hooks_own_cookie_go_in_one_cookie_header,
    retries_until_success_with_the_same_id,
    exhausted_retries_fail_and_manual_retry_requeues,
    receiver_down_then_restart_still_delivers,
    an_attempt_cut_short_by_shutdown_is_logged_and_uses_no_retry,
    stored_requests_are_sent_as_rendered_after_a_restart,
    a_damaged_stored_request_fails_its_delivery_and_the_rest_are_sent,
    deliveries_in_flight_at_a_crash_are_sent_after_restart,
    hook_changes_affect_only_later_events,
    signatures_verify_independently,
    dry_run_renders_the_bytes_that_are_sent,
    ingest_is_domain_scoped_and_all_or_nothing,
    delivery_log_is_domain_scoped,
    the_delivery_log_lists_one_batchs_deliveries_newest_first,
    retention_prunes_finished_deliveries,
    metrics_count_events_and_deliveries,
    odd_bytes_from_receivers_and_events_are_stored,
    a_slow_hook_or_domain_does_not_hold_up_others,
    whole_events_are_sent_in_the_source_spelling_unless_a_key_repeats,
    an_ordered_hook_keeps_each_calls_order_without_event_sequence,
    an_ordered_hook_takes_a_unique_id_too_long_for_an_index,
    disabling_a_hook_pauses_its_waiting_retries,
    a_lease_left_behind_runs_out_while_other_attempts_run,
    deliveries_past_the_in_memory_hand_over_wait_in_the_store_and_each_goes_out_once,
);

const D: &str = "demo.example.com";
const WAIT: Duration = Duration::from_secs(15);

async fn filters_decide_which_hooks_fire(b: Backend) {
    let s = TestServer::start(b).await;
    let r = Receiver::start().await;
    let cases = [
        ("eq", json!({"Caller-Caller-ID-Number": {"operation": "==", "value": "1000"}}), true),
        ("eq-miss", json!({"Caller-Caller-ID-Number": {"operation": "==", "value": "1001"}}), false),
        ("ne", json!({"Call-Direction": {"operation": "!=", "value": "outbound"}}), true),
        ("absent", json!({"variable_transfer_history": {"operation": "==", "value": "null"}}), true),
        ("present", json!({"variable_transfer_history": {"operation": "!=", "value": "null"}}), false),
        ("num-gt", json!({"variable_billsec": {"operation": ">", "value": "9"}}), true),
        ("num-le", json!({"variable_billsec": {"operation": "<=", "value": "41"}}), false),
        ("str-lt", json!({"Hangup-Cause": {"operation": "<", "value": "O"}}), true),
        ("str-ge", json!({"Hangup-Cause": {"operation": ">=", "value": "P"}}), false),
        ("reg-i", json!({"Channel-Name": {"operation": "reg", "value": "/^SOFIA\\/internal/i"}}), true),
        ("reg-case", json!({"Channel-Name": {"operation": "reg", "value": "/^SOFIA\\/internal/"}}), false),
        ("reg-bare", json!({"Caller-Destination-Number": {"operation": "reg", "value": "^2\\d{3}$"}}), true),
        ("reg-missing", json!({"variable_nope": {"operation": "reg", "value": ".*"}}), false),
        // JavaScript look-arounds, as hooks written for the original use them.
        ("reg-ahead", json!({"Channel-Name": {"operation": "reg", "value": "/^sofia\\/(?!external)/i"}}), true),
        ("reg-ahead-miss", json!({"Channel-Name": {"operation": "reg", "value": "/^sofia\\/(?!internal)/i"}}), false),
        (
            "all-must-pass",
            json!({"Call-Direction": {"operation": "==", "value": "inbound"},
            "variable_billsec": {"operation": "<", "value": "10"}}),
            false,
        ),
    ];
    for (name, filter, _) in &cases {
        s.create_hook(
            D,
            json!({"event": "CHANNEL_HANGUP_COMPLETE", "action": web(&r.url(&format!("/{name}"))), "filter": filter}),
        )
        .await;
    }
    let data = s.ingest(channel("CHANNEL_HANGUP_COMPLETE", D, "call-1")).await;
    let expected: Vec<_> = cases.iter().filter(|c| c.2).map(|c| format!("/{}", c.0)).collect();
    assert_eq!(data, json!({"accepted": 1, "deliveries": expected.len()}));
    for path in &expected {
        r.wait_for(path, 1, WAIT).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut got: Vec<String> = r.received().iter().map(|q| q.path().to_owned()).collect();
    got.sort();
    let mut want = expected.clone();
    want.sort();
    assert_eq!(got, want);

    // An unknown operation is refused when the hook is stored, naming the filter.
    let (status, v) = s
        .call("POST", &format!("/api/v2/hooks?domain={D}"), Some(&s.root),
            Some(json!({"event": "X", "action": web(&r.url("/x")), "filter": {"a": {"operation": "like", "value": "1"}}})))
        .await;
    assert_eq!(status, 400);
    assert!(v["info"].as_str().unwrap().contains("filter.a unknown operation \"like\""), "{v}");
}

async fn domain_resolution_picks_the_hook_domain(b: Backend) {
    let s = TestServer::start(b).await;
    let r = Receiver::start().await;
    for domain in ["d.com", "w.com", "c.com", "p.com"] {
        s.create_hook(domain, json!({"event": "CHANNEL_ANSWER", "action": web(&r.url(&format!("/{domain}")))})).await;
    }
    let base = json!({"Event-Name": "CHANNEL_ANSWER", "variable_domain_name": "d.com", "variable_w_domain": "w.com",
        "Channel-Presence-ID": "1000@c.com", "variable_presence_id": "1000@p.com"});
    let events = json!([
        base.clone(),
        with(base.clone(), json!({"variable_domain_name": null})),
        with(base.clone(), json!({"variable_domain_name": "", "variable_w_domain": null})),
        with(base.clone(), json!({"variable_domain_name": null, "variable_w_domain": null, "Channel-Presence-ID": null})),
        {"Event-Name": "CHANNEL_ANSWER", "Unique-ID": "no-domain"},
    ]);
    let data = s.ingest(events).await;
    assert_eq!(data, json!({"accepted": 5, "deliveries": 4}));
    for domain in ["d.com", "w.com", "c.com", "p.com"] {
        assert_eq!(r.wait_for(&format!("/{domain}"), 1, WAIT).await.len(), 1);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(r.received().len(), 4);
}

async fn default_body_fields_map_and_get_query(b: Backend) {
    let s = TestServer::start(b).await;
    let r = Receiver::start().await;
    let whole = s.create_hook(D, json!({"event": "CHANNEL_HANGUP_COMPLETE", "action": web(&r.url("/whole"))})).await;
    s.create_hook(D, json!({"event": "CHANNEL_HANGUP_COMPLETE", "action": web(&r.url("/picked")),
        "fields": ["Unique-ID", "variable_billsec", "Hangup-Cause"], "map": {"Unique-ID": "call_id", "variable_billsec": "billsec"}}))
        .await;
    let get_hook = s.create_hook(D, json!({"event": "CHANNEL_HANGUP_COMPLETE", "action": {"type": "web", "method": "GET", "url": r.url("/get?src=fs")},
        "fields": ["Unique-ID", "Caller-Caller-ID-Name"]}))
        .await;
    s.create_hook(D, json!({"event": "CUSTOM->engine::dialer_member_end", "action": web(&r.url("/engine"))})).await;
    let event = channel("CHANNEL_HANGUP_COMPLETE", D, "call-7");
    s.ingest(json!([event.clone(), dialer_member_end(D)])).await;

    let got = r.wait_for("/whole", 1, WAIT).await;
    let body = got[0].json();
    assert_eq!(body["action"], "CHANNEL_HANGUP_COMPLETE");
    assert_eq!(body["data"], event);
    let headers = body["data"].as_object().unwrap();
    assert!(headers.keys().filter(|k| k.starts_with("variable_")).count() > 150, "a real HANGUP_COMPLETE");
    assert_eq!(got[0].header("content-type"), Some("application/json"));
    let log = s.settled(D, &whole, 1).await;
    assert_eq!(body["id"], log[0]["id"]);

    let picked = r.wait_for("/picked", 1, WAIT).await[0].json();
    assert_eq!(picked["data"], json!({"call_id": "call-7", "billsec": "42", "Hangup-Cause": "NORMAL_CLEARING"}));

    let get = &r.wait_for("/get", 1, WAIT).await[0];
    assert_eq!(get.method, "GET");
    assert_eq!(get.target, "/get?src=fs&Unique-ID=call-7&Caller-Caller-ID-Name=Alice");
    assert!(get.body.is_empty());
    // Unsigned, a GET still names its delivery, for the receiver to drop duplicates by.
    assert_eq!(get.header("webhook-id"), s.deliveries(D, &get_hook, "").await[0]["id"].as_str());
    assert_eq!(get.header("webhook-signature"), None);

    let engine = r.wait_for("/engine", 1, WAIT).await[0].json();
    assert_eq!(engine["action"], "CUSTOM->engine::dialer_member_end");
    assert_eq!(engine["data"]["currentProbe"], 2, "numbers stay numbers");
}

/// The original's HTTP client (`request` with `qs`) wrote a GET hook's data and a GET auth
/// request's `map` with nested values in brackets and spaces as `%20`; receivers built for it
/// parse exactly that.
async fn get_query_and_auth_query_are_written_as_the_original_wrote_them(b: Backend) {
    let s = TestServer::start(b).await;
    let r = Receiver::start().await;
    r.script("/auth", [Reply::status(200).body(r#"{"token": "t 1"}"#)]);
    s.create_hook(
        D,
        json!({"event": "CUSTOM->engine::dialer_member_end",
        "action": {"type": "web", "method": "GET", "url": r.url("/get?src=engine")},
        "fields": ["dialerName", "currentProbe", "member"],
        "headers": {"X-Token": "${auth:body:token}"},
        "auth": {"enabled": true, "url": r.url("/auth?app=sh"), "map": {"who": "${dialerName}", "plus": "a+b"}}}),
    )
    .await;
    let member = json!({"member": {"name": "Member 1", "tags": ["vip", "new"]}});
    s.ingest(with(dialer_member_end(D), member)).await;
    let got = &r.wait_for("/get", 1, WAIT).await[0];
    assert_eq!(
        got.target,
        "/get?src=engine&dialerName=Outbound%20sales&currentProbe=2&member%5Bname%5D=Member%201\
         &member%5Btags%5D%5B0%5D=vip&member%5Btags%5D%5B1%5D=new"
    );
    assert_eq!(got.header("x-token"), Some("t 1"));
    let auth = &r.at("/auth")[0];
    assert_eq!((auth.method.as_str(), auth.target.as_str()), ("GET", "/auth?app=sh&who=Outbound%20sales&plus=a%2Bb"));
}

async fn seed_raw_body_stays_valid_json_with_quotes_and_newlines(b: Backend) {
    let s = TestServer::start(b).await;
    let r = Receiver::start().await;
    let mut seed = seed_hook();
    seed["action"]["url"] = r.url("/seed").into();
    s.create_hook(D, seed).await;
    let mut named = seed_hook();
    named["event"] = "CHANNEL_ANSWER".into();
    named["action"]["url"] = r.url("/named").into();
    named["rawBody"] =
        "{\"caller\": \"${Caller-Caller-ID-Name}\", \"uuid\": \"${Unique-ID}\", \"probe\": ${currentProbe}}".into();
    s.create_hook(D, named).await;

    let tricky = "O'Brien \"The Boss\"\nLine 2 \\ end";
    let member = with(dialer_member_end(D), json!({"endCause": tricky}));
    let answer = with(channel("CHANNEL_ANSWER", D, "u-1"), json!({"Caller-Caller-ID-Name": tricky}));
    s.ingest(json!([member, answer])).await;

    let seed_got = &r.wait_for("/seed", 1, WAIT).await[0];
    assert_eq!(seed_got.header("content-type"), Some("application/json"));
    assert_eq!(
        seed_got.json(),
        json!({"dlr_id": "598035b7a7ec15000c40926e", "member_id": "5980360fa7ec15000c409270", "end_cause": tricky})
    );
    let named_got = r.wait_for("/named", 1, WAIT).await[0].json();
    assert_eq!(named_got, json!({"caller": tricky, "uuid": "u-1", "probe": null}));
}

async fn header_templates_and_auth_pre_request_with_cookie(b: Backend) {
    let s = TestServer::start(b).await;
    let r = Receiver::start().await;
    r.script(
        "/auth",
        [Reply::status(200)
            .header("Set-Cookie", "sid=s3cr3t; Path=/; HttpOnly")
            .header("X-Session", "sess-9")
            .body(r#"{"token": "tok-123", "ttl": 60}"#)],
    );
    s.create_hook(
        D,
        json!({"event": "CHANNEL_ANSWER", "action": web(&r.url("/plain")),
        "headers": {"X-Call": "${Unique-ID}", "X-Domain": "${domain_name}", "X-Static": "v1"}}),
    )
    .await;
    s.create_hook(D, json!({
        "event": "CHANNEL_ANSWER", "action": web(&r.url("/secured")),
        "headers": {"Authorization": "Bearer ${auth:body:token}", "X-Session": "${auth:header:x-session}", "X-Call": "${Unique-ID}"},
        "auth": {"enabled": true, "url": r.url("/auth"), "method": "POST", "cookie": true,
            "headers": {"X-Api-Key": "key-1", "X-Who": "${Caller-Caller-ID-Name}"}, "map": {"login": "robot", "call": "${Unique-ID}"}}
    }))
    .await;
    // A line break in a caller name cannot add a header to the auth pre-request (the audit
    // found it failed every attempt there instead).
    s.ingest(with(channel("CHANNEL_ANSWER", D, "u-42"), json!({"Caller-Caller-ID-Name": "Al\r\nX-Injected: 1"}))).await;

    let plain = &r.wait_for("/plain", 1, WAIT).await[0];
    assert_eq!(
        (plain.header("x-call"), plain.header("x-domain"), plain.header("x-static")),
        (Some("u-42"), Some(D), Some("v1"))
    );
    let secured = &r.wait_for("/secured", 1, WAIT).await[0];
    assert_eq!(secured.header("authorization"), Some("Bearer tok-123"));
    assert_eq!(secured.header("x-session"), Some("sess-9"));
    assert_eq!(secured.header("cookie"), Some("sid=s3cr3t"));
    assert_eq!(secured.header("x-call"), Some("u-42"));
    let auth = &r.at("/auth")[0];
    assert_eq!(auth.method, "POST");
    assert_eq!(auth.header("x-api-key"), Some("key-1"));
    assert_eq!((auth.header("x-who"), auth.header("x-injected")), (Some("Al  X-Injected: 1"), None));
    assert_eq!(auth.json(), json!({"login": "robot", "call": "u-42"}));

    // A failing auth pre-request fails the attempt, and the log says what the auth server said;
    // the webhook is not sent.
    r.script("/auth", [Reply::status(401).body("{\"error\":\"bad key\"}\n")]);
    let hooks = s.deliveries(D, &secured_hook(&s).await, "").await;
    assert_eq!(hooks.len(), 1);
    s.ingest(channel("CHANNEL_ANSWER", D, "u-43")).await;
    let id = secured_hook(&s).await;
    let log = s.settled(D, &id, 2).await;
    let failed = log.iter().find(|d| d["status"] == "failed").expect("a failed delivery");
    assert_eq!(failed["log"][0]["error"], r#"auth request answered 401: {"error":"bad key"}"#);
    assert_eq!(r.at("/secured").len(), 1);
}

/// The original joined a header its auth server answered more than once (`Set-Cookie` above
/// all) into one `auth:header:` value; keeping only the last lost the session cookie.
async fn auth_answer_headers_given_twice_are_all_kept(b: Backend) {
    let s = TestServer::start(b).await;
    let r = Receiver::start().await;
    r.script(
        "/auth",
        [Reply::status(200)
            .header("Set-Cookie", "sid=abc; Path=/")
            .header("Set-Cookie", "lang=en")
            .header("X-Role", "agent")
            .header("X-Role", "supervisor")],
    );
    s.create_hook(
        D,
        json!({"event": "CHANNEL_ANSWER", "action": web(&r.url("/h")),
        "headers": {"X-Cookies": "${auth:header:Set-Cookie}", "X-Roles": "${auth:header:x-role}"},
        "auth": {"enabled": true, "url": r.url("/auth")}}),
    )
    .await;
    s.ingest(channel("CHANNEL_ANSWER", D, "u-1")).await;
    let got = &r.wait_for("/h", 1, WAIT).await[0];
    assert_eq!(got.header("x-cookies"), Some("sid=abc; Path=/;lang=en"));
    assert_eq!(got.header("x-roles"), Some("agent, supervisor"));
}

/// A hook with a `Cookie` header of its own and `cookie: true` sends one `Cookie` header with
/// both (RFC 6265: never more than one), not two that receivers read only the first of.
async fn auth_cookies_and_the_hooks_own_cookie_go_in_one_cookie_header(b: Backend) {
    let s = TestServer::start(b).await;
    let r = Receiver::start().await;
    let answer = Reply::status(200).header("Set-Cookie", "sid=abc; Path=/").header("Set-Cookie", "n=1");
    r.script("/auth", [answer.clone(), answer]);
    // The second hook's own cookie renders empty: it adds nothing, not a leading "; ".
    for (path, own) in [("/h", "tenant=${domain_name}"), ("/empty", "${nope}")] {
        s.create_hook(
            D,
            json!({"event": "CHANNEL_ANSWER", "action": web(&r.url(path)), "headers": {"Cookie": own},
            "auth": {"enabled": true, "url": r.url("/auth"), "cookie": true}}),
        )
        .await;
    }
    s.ingest(channel("CHANNEL_ANSWER", D, "u-1")).await;
    for (path, expected) in [("/h", format!("tenant={D}; sid=abc; n=1")), ("/empty", "sid=abc; n=1".to_owned())] {
        let got = &r.wait_for(path, 1, WAIT).await[0];
        let cookies: Vec<&str> = got.headers.get_all("cookie").iter().map(|v| v.to_str().unwrap()).collect();
        assert_eq!(cookies, [expected]);
    }
}

async fn secured_hook(s: &TestServer) -> String {
    let (_, v) = s.call("GET", &format!("/api/v2/hooks?domain={D}"), Some(&s.root), None).await;
    let hooks = v["data"].as_array().unwrap();
    hooks.iter().find(|h| h["auth"]["enabled"] == true).unwrap()["_id"].as_str().unwrap().to_owned()
}

async fn retries_until_success_with_the_same_id(b: Backend) {
    let s = TestServer::start(b).await;
    let r = Receiver::start().await;
    r.script("/flaky", [Reply::status(500).body("boom"), Reply::status(500), Reply::status(200)]);
    let id = s
        .create_hook(D, json!({"event": "CHANNEL_ANSWER", "action": web(&r.url("/flaky")), "retries": 3, "delay": 1}))
        .await;
    s.ingest(channel("CHANNEL_ANSWER", D, "u-1")).await;
    let got = r.wait_for("/flaky", 3, WAIT).await;
    let ids: Vec<Value> = got.iter().map(|q| q.json()["id"].clone()).collect();
    assert!(ids.iter().all(|i| *i == ids[0]), "{ids:?}");
    // The first attempt sends the request in hand; the retries read it back from the store.
    assert!(got.iter().all(|q| q.body == got[0].body), "every attempt sends the same bytes");
    for pair in got.windows(2) {
        let gap = pair[1].at - pair[0].at;
        assert!(gap >= Duration::from_millis(950) && gap < Duration::from_secs(4), "gap {gap:?}");
    }
    let log = s.settled(D, &id, 1).await;
    assert_eq!(log[0]["status"], "delivered");
    assert_eq!(log[0]["attempts"], 3);
    assert_eq!(log[0]["id"], ids[0]);
    let codes: Vec<Value> = log[0]["log"].as_array().unwrap().iter().map(|a| a["statusCode"].clone()).collect();
    assert_eq!(codes, [json!(500), json!(500), json!(200)]);
    assert_eq!(log[0]["log"][0]["response"], "boom");
    assert_eq!(log[0]["log"][0]["error"], "answered 500");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(r.at("/flaky").len(), 3, "no attempt after success");
}

async fn exhausted_retries_fail_and_manual_retry_requeues(b: Backend) {
    let s = TestServer::start(b).await;
    let r = Receiver::start().await;
    r.script("/down", [Reply::status(503), Reply::status(502).body("bad gateway")]);
    let id = s
        .create_hook(D, json!({"event": "CHANNEL_ANSWER", "action": web(&r.url("/down")), "retries": 1, "delay": 1}))
        .await;
    s.ingest(channel("CHANNEL_ANSWER", D, "u-1")).await;
    let log = s.settled(D, &id, 1).await;
    let d = &log[0];
    assert_eq!((&d["status"], &d["attempts"], &d["nextAttemptAt"]), (&json!("failed"), &json!(2), &Value::Null));
    let attempts = d["log"].as_array().unwrap();
    assert_eq!(attempts.len(), 2);
    assert_eq!((&attempts[1]["statusCode"], &attempts[1]["response"]), (&json!(502), &json!("bad gateway")));
    assert!(attempts[0]["durationMs"].is_u64() && attempts[0]["at"].is_i64());
    assert_eq!(s.deliveries(D, &id, "status=failed").await.len(), 1);
    assert_eq!(s.deliveries(D, &id, "status=delivered").await.len(), 0);
    assert_eq!(s.deliveries(D, &id, "status=FAILED").await.len(), 1, "the status is read in any case");
    let (status, _) =
        s.call("GET", &format!("/api/v2/hooks/{id}/deliveries?domain={D}&status=lost"), Some(&s.root), None).await;
    assert_eq!(status, 400);

    // Manual retry: queued now, and the receiver (answering 200 by now) gets it.
    let delivery = d["id"].as_str().unwrap();
    let path = format!("/api/v2/deliveries/{delivery}/retry?domain={D}");
    let (status, v) = s.call("POST", &path, Some(&s.root), None).await;
    assert_eq!((status, &v["data"]), (200, &json!({"id": delivery, "status": "pending"})));
    r.wait_for("/down", 3, WAIT).await;
    let log = s.settled(D, &id, 1).await;
    assert_eq!((&log[0]["status"], &log[0]["attempts"]), (&json!("delivered"), &json!(3)));
    let (status, v) = s.call("POST", &path, Some(&s.root), None).await;
    assert_eq!((status, &v["info"]), (409, &json!("Only failed deliveries can be retried; this one is delivered")));
    let (status, _) = s.call("POST", "/api/v2/deliveries/not-a-uuid/retry?domain=x", Some(&s.root), None).await;
    assert_eq!(status, 400);

    // A failed delivery of a hook deleted since has nowhere to go: refused up front, where it
    // was queued and then failed again ("the hook was deleted").
    r.script("/gone", [Reply::status(500)]);
    let gone = s.create_hook(D, json!({"event": "CHANNEL_HANGUP", "action": web(&r.url("/gone"))})).await;
    s.ingest(channel("CHANNEL_HANGUP", D, "u-2")).await;
    let failed = s.settled(D, &gone, 1).await[0]["id"].as_str().unwrap().to_owned();
    let (status, _) = s.call("DELETE", &format!("/api/v2/hooks/{gone}?domain={D}"), Some(&s.root), None).await;
    assert_eq!(status, 200);
    let path = format!("/api/v2/deliveries/{failed}/retry?domain={D}");
    let (status, v) = s.call("POST", &path, Some(&s.root), None).await;
    assert_eq!((status, &v["info"]), (409, &json!("The hook of this delivery was deleted; it cannot be retried")));
    assert_eq!(s.deliveries(D, &gone, "").await[0]["status"], "failed", "the log is kept as it was");
}

/// A hook whose receiver is down (nothing listens on the port), and events for it, one per
/// call in `uuids`, each tried once and waiting to be retried. Returns the port and the hook.
async fn waiting_for_a_receiver(s: &TestServer, uuids: &[&str], patch: Value) -> (u16, String) {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let url = format!("http://127.0.0.1:{port}/late");
    let id = s.create_hook(D, json!({"event": "CHANNEL_ANSWER", "action": web(&url), "retries": 5, "delay": 1})).await;
    for uuid in uuids {
        let accepted = s.ingest(with(channel("CHANNEL_ANSWER", D, uuid), patch.clone())).await;
        assert_eq!(accepted["deliveries"], 1);
    }
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let log = s.deliveries(D, &id, "").await;
        if log.len() == uuids.len() && log.iter().all(|d| d["attempts"] != 0) {
            return (port, id);
        }
        assert!(std::time::Instant::now() < deadline, "{log:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn receiver_down_then_restart_still_delivers(b: Backend) {
    let s = TestServer::start(b).await;
    // The first attempt fails (nothing listens); stop the server while it waits to retry.
    let (port, id) = waiting_for_a_receiver(&s, &["u-1"], json!({})).await;
    let (config, dir, pg) = s.stop().await;
    let r = Receiver::start_on(port).await;
    let s = TestServer::start_with(config, dir, pg).await;
    let got = r.wait_for("/late", 1, WAIT).await;
    let log = s.settled(D, &id, 1).await;
    assert_eq!(log[0]["status"], "delivered");
    assert_eq!(got[0].json()["id"], log[0]["id"]);
    let first = &log[0]["log"][0];
    assert!(first["statusCode"].is_null() && first["error"].as_str().unwrap().contains("connection"), "{first}");
}

/// Every attempt is in the log (SPEC §5), the one that shutdown cuts short when its 15 s grace
/// is over too. It uses up none of the hook's retries: after the restart the delivery has its
/// whole budget. Before, the attempt left no trace, and counting it would have cost a retry.
async fn an_attempt_cut_short_by_shutdown_is_logged_and_uses_no_retry(b: Backend) {
    let s = TestServer::start(b).await;
    let r = Receiver::start().await;
    let never = tokio_util::sync::CancellationToken::new();
    r.script("/slow", [Reply::status(200).until(&never), Reply::status(500), Reply::status(500)]);
    let hook = json!({"event": "CHANNEL_ANSWER", "action": web(&r.url("/slow")), "retries": 1, "delay": 1,
        "timeout": 120000});
    let id = s.create_hook(D, hook).await;
    s.ingest(channel("CHANNEL_ANSWER", D, "u-1")).await;
    r.wait_for("/slow", 1, WAIT).await;
    let stopping = std::time::Instant::now();
    let s = s.restart().await;
    assert!(stopping.elapsed() >= Duration::from_secs(15), "shutdown waited for the attempt: {:?}", stopping.elapsed());
    let log = s.settled(D, &id, 1).await;
    let attempts = log[0]["log"].as_array().unwrap();
    assert_eq!((&log[0]["status"], &log[0]["attempts"], attempts.len()), (&json!("failed"), &json!(3), 3), "{log:#?}");
    let cut = &attempts[0];
    assert!(cut["statusCode"].is_null(), "{cut}");
    assert!(cut["error"].as_str().unwrap().starts_with("interrupted: the service shut down"), "{cut}");
    assert!(cut["durationMs"].as_u64().unwrap() >= 14_000, "it ran for the grace: {cut}");
    let codes: Vec<&Value> = attempts[1..].iter().map(|a| &a["statusCode"]).collect();
    assert_eq!(codes, [&json!(500), &json!(500)], "both of the hook's attempts after the restart");
    assert_eq!(r.at("/slow").len(), 3);
    never.cancel();
}

/// The stored requests, by delivery id: `(body, body_lz4)` as the database holds them.
async fn stored_requests(url: &str) -> Vec<(String, String, Option<Vec<u8>>)> {
    let sql = "SELECT id, body, body_lz4 FROM delivery_payloads ORDER BY id";
    on_store_db!(url, |conn| sqlx::query_as(sql).fetch_all(&mut conn).await.expect("read requests"))
}

/// Overwrites the stored request of delivery `id`.
async fn set_stored_request(url: &str, id: &str, body: &str, body_lz4: Option<Vec<u8>>) {
    let sql = "UPDATE delivery_payloads SET body = $1, body_lz4 = $2 WHERE id = $3";
    let updated = on_store_db!(url, |conn| sqlx::query(sql)
        .bind(body)
        .bind(body_lz4)
        .bind(id)
        .execute(&mut conn)
        .await
        .unwrap()
        .rows_affected());
    assert_eq!(updated, 1);
}

/// Requests wait in the store while the receiver is down: SQLite keeps them lz4-compressed,
/// PostgreSQL as text. After a restart each is sent exactly as rendered, and so is a SQLite
/// request stored as text, as before compression.
async fn stored_requests_are_sent_as_rendered_after_a_restart(b: Backend) {
    let s = TestServer::start(b).await;
    let name = "Zoë \"电话\" \\ 📞";
    let (port, id) = waiting_for_a_receiver(&s, &["u-1", "u-2"], json!({"Caller-Caller-ID-Name": name})).await;
    let (config, dir, pg) = s.stop().await;
    let rows = stored_requests(&config.database_url).await;
    assert_eq!(rows.len(), 2);
    let sqlite = !config.database_url.starts_with("postgres");
    let mut sent_as = std::collections::HashMap::new();
    for (delivery, body, body_lz4) in &rows {
        let text = match body_lz4 {
            Some(packed) => {
                assert!(sqlite && body.is_empty(), "only SQLite compresses, and then keeps no text");
                String::from_utf8(lz4_flex::decompress_size_prepended(packed).unwrap()).unwrap()
            }
            None => {
                assert!(!sqlite, "SQLite stores requests compressed");
                body.clone()
            }
        };
        let doc: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(doc["data"]["Caller-Caller-ID-Name"], name);
        sent_as.insert(delivery.clone(), text);
    }
    if sqlite {
        let (delivery, ..) = &rows[1];
        set_stored_request(&config.database_url, delivery, &sent_as[delivery], None).await;
    }
    let r = Receiver::start_on(port).await;
    let s = TestServer::start_with(config, dir, pg).await;
    let got = r.wait_for("/late", 2, WAIT).await;
    for q in &got {
        let delivery = q.json()["id"].as_str().unwrap().to_owned();
        assert_eq!(std::str::from_utf8(&q.body).unwrap(), sent_as[&delivery]);
    }
    let log = s.settled(D, &id, 2).await;
    assert!(log.iter().all(|d| d["status"] == "delivered"), "{log:?}");
}

/// A stored request that cannot be read (here a damaged compressed body) fails its delivery,
/// with the reason in its log; it does not hold up the deliveries leased with it.
async fn a_damaged_stored_request_fails_its_delivery_and_the_rest_are_sent(b: Backend) {
    let s = TestServer::start(b).await;
    let (port, id) = waiting_for_a_receiver(&s, &["u-1", "u-2", "u-3"], json!({})).await;
    let (config, dir, pg) = s.stop().await;
    let rows = stored_requests(&config.database_url).await;
    let damaged = rows[0].0.clone();
    set_stored_request(&config.database_url, &damaged, "", Some(vec![7, 0])).await;
    let r = Receiver::start_on(port).await;
    let s = TestServer::start_with(config, dir, pg).await;
    let got = r.wait_for("/late", 2, WAIT).await;
    assert!(got.iter().all(|q| q.json()["id"] != damaged.as_str()));
    let log = s.settled(D, &id, 3).await;
    for d in &log {
        if d["id"] == damaged.as_str() {
            assert_eq!(d["status"], "failed", "{d}");
            let error = d["log"].as_array().unwrap().last().unwrap()["error"].as_str().unwrap();
            assert!(error.contains(&damaged) && error.contains("truncated"), "{error}");
        } else {
            assert_eq!(d["status"], "delivered", "{d}");
        }
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(r.at("/late").len(), 2, "the damaged request is not tried again");
}

async fn deliveries_in_flight_at_a_crash_are_sent_after_restart(b: Backend) {
    let s = TestServer::start(b).await;
    let r = Receiver::start().await;
    r.script("/slow", [Reply::status(200).delay(Duration::from_secs(5))]);
    let id = s.create_hook(D, json!({"event": "CHANNEL_ANSWER", "action": web(&r.url("/slow"))})).await;
    s.ingest(channel("CHANNEL_ANSWER", D, "u-1")).await;
    r.wait_for("/slow", 1, WAIT).await;
    let (config, dir, pg) = s.crash().await;
    let s = TestServer::start_with(config, dir, pg).await;
    let got = r.wait_for("/slow", 2, WAIT).await;
    assert_eq!(got[0].json()["id"], got[1].json()["id"]);
    let log = s.settled(D, &id, 1).await;
    assert_eq!((&log[0]["status"], &log[0]["attempts"]), (&json!("delivered"), &json!(1)));
}

async fn hook_changes_affect_only_later_events(b: Backend) {
    let s = TestServer::start(b).await;
    let r = Receiver::start().await;
    let id = s
        .create_hook(D, json!({"event": "CHANNEL_ANSWER", "action": web(&r.url("/h")), "fields": ["Unique-ID"]}))
        .await;
    s.ingest(channel("CHANNEL_ANSWER", D, "first")).await;
    let path = format!("/api/v2/hooks/{id}?domain={D}");
    let (_, v) = s
        .call(
            "PUT",
            &path,
            Some(&s.root),
            Some(
                json!({"event": "CHANNEL_ANSWER", "action": web(&r.url("/h")), "fields": ["Caller-Caller-ID-Number"]}),
            ),
        )
        .await;
    assert_eq!(v["data"]["n"], 1);
    s.ingest(channel("CHANNEL_ANSWER", D, "second")).await;
    let got = r.wait_for("/h", 2, WAIT).await;
    let mut bodies: Vec<Value> = got.iter().map(|q| q.json()["data"].clone()).collect();
    bodies.sort_by_key(|b| b.to_string());
    assert_eq!(bodies, [json!({"Caller-Caller-ID-Number": "1000"}), json!({"Unique-ID": "first"})]);

    s.call(
        "PUT",
        &path,
        Some(&s.root),
        Some(json!({"event": "CHANNEL_ANSWER", "action": web(&r.url("/h")), "enable": false})),
    )
    .await;
    let data = s.ingest(channel("CHANNEL_ANSWER", D, "third")).await;
    assert_eq!(data["deliveries"], 0);
    s.call(
        "PUT",
        &path,
        Some(&s.root),
        Some(json!({"event": "CHANNEL_ANSWER", "action": web(&r.url("/h")), "enable": true})),
    )
    .await;
    assert_eq!(s.ingest(channel("CHANNEL_ANSWER", D, "fourth")).await["deliveries"], 1);
    r.wait_for("/h", 3, WAIT).await;
    s.call("DELETE", &path, Some(&s.root), None).await;
    assert_eq!(s.ingest(channel("CHANNEL_ANSWER", D, "fifth")).await["deliveries"], 0);
}

async fn signatures_verify_independently(b: Backend) {
    use base64::Engine;
    use hmac::{KeyInit, Mac};
    let s = TestServer::start(b).await;
    let r = Receiver::start().await;
    let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    s.create_hook(D, json!({"event": "CHANNEL_ANSWER", "action": web(&r.url("/signed")), "secret": secret})).await;
    s.create_hook(
        D,
        json!({"event": "CHANNEL_ANSWER", "action": web(&r.url("/plain-secret")), "secret": "just a passphrase"}),
    )
    .await;
    s.ingest(channel("CHANNEL_ANSWER", D, "u-1")).await;
    let b64 = base64::engine::general_purpose::STANDARD;
    for (path, key) in
        [("/signed", b64.decode(&secret[6..]).unwrap()), ("/plain-secret", b"just a passphrase".to_vec())]
    {
        let got = &r.wait_for(path, 1, WAIT).await[0];
        let (id, ts, sig) = (
            got.header("webhook-id").unwrap(),
            got.header("webhook-timestamp").unwrap(),
            got.header("webhook-signature").unwrap(),
        );
        assert_eq!(id, got.json()["id"].as_str().unwrap());
        let now = switchhook::auth::now_ms() / 1000;
        assert!((now - ts.parse::<i64>().unwrap()).abs() < 60);
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(&key).unwrap();
        mac.update(format!("{id}.{ts}.").as_bytes());
        mac.update(&got.body);
        let expected = format!("v1,{}", b64.encode(mac.finalize().into_bytes()));
        assert_eq!(sig, expected, "{path}");
    }
    // Unsigned hooks carry no signature headers.
    let hooks = s.call("GET", &format!("/api/v2/hooks?domain={D}"), Some(&s.root), None).await.1;
    assert!(hooks["data"].as_array().unwrap().iter().all(|h| h["secret"] == "********"));
}

async fn dry_run_renders_the_bytes_that_are_sent(b: Backend) {
    let s = TestServer::start(b).await;
    let r = Receiver::start().await;
    let raw = s
        .create_hook(D, json!({"event": "CHANNEL_ANSWER", "action": web(&r.url("/raw")), "customBody": true,
            "rawBody": "{\"who\": \"${Caller-Caller-ID-Name}\", \"n\": ${Caller-Caller-ID-Number}}", "headers": {"X-Call": "${Unique-ID}"},
            "filter": {"Call-Direction": {"operation": "==", "value": "inbound"}}}))
        .await;
    let default = s.create_hook(D, json!({"event": "CHANNEL_ANSWER", "action": web(&r.url("/default"))})).await;
    let event = with(channel("CHANNEL_ANSWER", D, "u-9"), json!({"Caller-Caller-ID-Name": "Zoë \"Z\"\n"}));

    let test = |id: &str, ev: Value| {
        let path = format!("/api/v2/hooks/{id}/test?domain={D}");
        let s = &s;
        async move { s.call("POST", &path, Some(&s.root), Some(ev)).await }
    };
    let (status, dry) = test(&raw, event.clone()).await;
    assert_eq!(status, 200, "{dry}");
    let dry = &dry["data"];
    assert_eq!(dry["matched"], true);
    let (_, dry_default) = test(&default, event.clone()).await;
    s.ingest(event.clone()).await;
    let sent = &r.wait_for("/raw", 1, WAIT).await[0];
    assert_eq!(dry["request"]["body"].as_str().unwrap().as_bytes(), &sent.body[..]);
    assert_eq!(dry["request"]["url"], r.url("/raw"));
    assert_eq!(dry["request"]["method"], "POST");
    // Every header the attempt carried, but the transport's own (the ops audit missed
    // `user-agent`); `webhook-id` is the delivery id, the dry run's own.
    let dry_id = dry["request"]["headers"][2][1].as_str().unwrap();
    // A time-ordered id, as real deliveries have (the ops audit saw a random one).
    assert_eq!(uuid::Uuid::parse_str(dry_id).unwrap().get_version_num(), 7, "{dry_id}");
    let agent = concat!("switchhook/", env!("CARGO_PKG_VERSION"));
    assert_eq!(
        dry["request"]["headers"],
        json!([
            ["content-type", "application/json"],
            ["x-call", "u-9"],
            ["webhook-id", dry_id],
            ["user-agent", agent],
            ["accept", "*/*"]
        ])
    );
    let mut got: Vec<(&str, &str)> = sent
        .headers
        .iter()
        .filter(|(name, _)| !["host", "content-length"].contains(&name.as_str()))
        .map(|(name, value)| (name.as_str(), if name == "webhook-id" { dry_id } else { value.to_str().unwrap() }))
        .collect();
    got.sort();
    let mut shown: Vec<(&str, &str)> = dry["request"]["headers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|pair| (pair[0].as_str().unwrap(), pair[1].as_str().unwrap()))
        .collect();
    shown.sort();
    assert_eq!(got, shown);
    // The default body differs only in its delivery id.
    let sent_default = r.wait_for("/default", 1, WAIT).await[0].json();
    let mut dry_body: Value = serde_json::from_str(dry_default["data"]["request"]["body"].as_str().unwrap()).unwrap();
    assert_eq!(dry_default["data"]["request"]["headers"][1], json!(["webhook-id", dry_body["id"]]));
    dry_body["id"] = sent_default["id"].clone();
    assert_eq!(dry_body, sent_default);

    // Notes say what is added only when it is sent.
    assert_eq!(dry["notes"], json!([]));
    let auth = json!({"enabled": true, "url": r.url("/login"), "cookie": true});
    let noted = json!({"event": "CHANNEL_ANSWER", "action": web(&r.url("/noted")), "secret": "pass", "auth": auth});
    let (_, v) = test(&s.create_hook(D, noted).await, event.clone()).await;
    assert_eq!(
        v["data"]["notes"],
        json!([
            "webhook-timestamp and webhook-signature are added when it is sent",
            "headers are rendered after the auth pre-request, whose auth:* variables are empty here",
            "the auth answer's cookies are added in the Cookie header when it is sent"
        ])
    );

    // Mismatches say why, and nothing is sent.
    let (_, v) = test(&raw, with(event.clone(), json!({"Call-Direction": "outbound"}))).await;
    assert_eq!(v["data"]["matched"], false);
    assert_eq!(
        v["data"]["failedFilter"],
        json!({"header": "Call-Direction", "operation": "==", "value": "inbound", "actual": "outbound"})
    );
    let (_, v) = test(&raw, with(event.clone(), json!({"variable_domain_name": "other.com"}))).await;
    assert_eq!(v["data"]["reason"], "the event's domain is \"other.com\", the hook's is \"demo.example.com\"");
    let (_, v) = test(&raw, with(event.clone(), json!({"Event-Name": "CHANNEL_CREATE"}))).await;
    assert_eq!(v["data"]["reason"], "the event is \"CHANNEL_CREATE\", the hook listens to \"CHANNEL_ANSWER\"");
    let (status, _) = test(&raw, json!([1])).await;
    assert_eq!(status, 400);
    let (status, _) = test("598035b7a7ec15000c40926e", event.clone()).await;
    assert_eq!(status, 404);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(r.received().len(), 2);
}

async fn ingest_is_domain_scoped_and_all_or_nothing(b: Backend) {
    let s = TestServer::start(b).await;
    let r = Receiver::start().await;
    let id = s.create_hook(D, json!({"event": "CHANNEL_ANSWER", "action": web(&r.url("/h"))})).await;
    let admin = s.token(Role::Admin, D).await;
    let user = s.token(Role::User, D).await;
    let post = |token: String, body: Value| {
        let s = &s;
        async move { s.call("POST", "/api/v2/events", Some(&token), Some(body)).await }
    };
    let own = channel("CHANNEL_ANSWER", D, "own");
    let foreign = channel("CHANNEL_ANSWER", "other.com", "foreign");
    let (status, v) = post(admin.clone(), json!([own.clone(), foreign.clone()])).await;
    assert_eq!((status, &v["info"]), (403, &json!("Permission denied!")));
    let (status, _) = post(admin.clone(), json!({"Event-Name": "CHANNEL_ANSWER"})).await;
    assert_eq!(status, 403, "an event without a domain is not the token's domain");
    let (status, _) = post(user, own.clone()).await;
    assert_eq!(status, 403);
    let (status, v) = post(admin.clone(), json!([own.clone(), 5])).await;
    assert_eq!((status, &v["info"]), (400, &json!("Bad request: event 1 is not a JSON object")));
    let (status, _) = post(admin.clone(), json!("CHANNEL_ANSWER")).await;
    assert_eq!(status, 400);
    let (status, _) = s.call_raw("POST", "/api/v2/events", &admin, b"{\"Event-Name\":".to_vec()).await;
    assert_eq!(status, 400);
    let (status, _) = s.call("POST", "/api/v2/events", None, Some(own.clone())).await;
    assert_eq!(status, 401);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(s.deliveries(D, &id, "").await.is_empty(), "nothing partially stored");

    let (status, v) = post(admin.clone(), json!([own.clone(), own.clone()])).await;
    assert_eq!((status, &v["data"]), (200, &json!({"accepted": 2, "deliveries": 2})));
    let (status, v) = post(admin.clone(), json!([])).await;
    assert_eq!((status, &v["data"]), (200, &json!({"accepted": 0, "deliveries": 0})));
    // A large batch within 10 MiB is fine.
    let many: Vec<Value> = (0..1000).map(|i| channel("CHANNEL_ANSWER", D, &format!("c{i}"))).collect();
    let (status, v) = post(admin, Value::Array(many)).await;
    assert_eq!((status, &v["data"]), (200, &json!({"accepted": 1000, "deliveries": 1000})));
    r.wait_for("/h", 1002, Duration::from_secs(60)).await;
}

/// The delivery log is newest first, also among deliveries made at the same moment: the events
/// of one ingest batch (or one ESL commit) share their `createdAt`, and those were listed
/// oldest first: the log read u-4, u-1, u-2, u-3 for a batch of u-1, u-2, u-3 and then u-4.
async fn the_delivery_log_lists_one_batchs_deliveries_newest_first(b: Backend) {
    let s = TestServer::start(b).await;
    let r = Receiver::start().await;
    let id = s.create_hook(D, json!({"event": "CHANNEL_ANSWER", "action": web(&r.url("/h"))})).await;
    let batch: Vec<Value> = ["u-1", "u-2", "u-3"].map(|u| channel("CHANNEL_ANSWER", D, u)).into();
    s.ingest(json!(batch)).await;
    s.ingest(channel("CHANNEL_ANSWER", D, "u-4")).await;
    let log = s.settled(D, &id, 4).await;
    let calls: std::collections::HashMap<Value, Value> = r
        .wait_for("/h", 4, WAIT)
        .await
        .iter()
        .map(|q| (q.json()["id"].clone(), q.json()["data"]["Unique-ID"].clone()))
        .collect();
    let order: Vec<&Value> = log.iter().map(|d| &calls[&d["id"]]).collect();
    assert_eq!(order, [&json!("u-4"), &json!("u-3"), &json!("u-2"), &json!("u-1")], "{log:#?}");
    // Paging follows the same order.
    let second = s.deliveries(D, &id, "limit=2&page=2").await;
    assert_eq!(second.iter().map(|d| &calls[&d["id"]]).collect::<Vec<_>>(), [&json!("u-2"), &json!("u-1")]);
}

async fn delivery_log_is_domain_scoped(b: Backend) {
    let s = TestServer::start(b).await;
    let r = Receiver::start().await;
    r.script("/h", [Reply::status(500)]);
    let id = s.create_hook(D, json!({"event": "CHANNEL_ANSWER", "action": web(&r.url("/h"))})).await;
    s.ingest(channel("CHANNEL_ANSWER", D, "u-1")).await;
    let log = s.settled(D, &id, 1).await;
    let delivery = log[0]["id"].as_str().unwrap().to_owned();
    let other = s.token(Role::Admin, "other.com").await;
    let (status, v) = s.call("GET", &format!("/api/v2/hooks/{id}/deliveries?domain={D}"), Some(&other), None).await;
    assert_eq!((status, &v["data"]), (200, &json!([])));
    let (status, _) =
        s.call("POST", &format!("/api/v2/deliveries/{delivery}/retry?domain={D}"), Some(&other), None).await;
    assert_eq!(status, 404);
    let user = s.token(Role::User, D).await;
    let (status, _) = s.call("GET", &format!("/api/v2/hooks/{id}/deliveries"), Some(&user), None).await;
    assert_eq!(status, 403);
    let (status, _) = s.call("POST", &format!("/api/v2/deliveries/{delivery}/retry"), Some(&user), None).await;
    assert_eq!(status, 403);
    let own = s.token(Role::Admin, D).await;
    let (status, v) = s.call("GET", &format!("/api/v2/hooks/{id}/deliveries"), Some(&own), None).await;
    assert_eq!((status, v["data"].as_array().unwrap().len()), (200, 1));
}

async fn retention_prunes_finished_deliveries(b: Backend) {
    let s = TestServer::start(b).await;
    let r = Receiver::start().await;
    r.script("/down", [Reply::status(500)]);
    let id = s.create_hook(D, json!({"event": "CHANNEL_ANSWER", "action": web(&r.url("/h"))})).await;
    let failing = s.create_hook(D, json!({"event": "CHANNEL_ANSWER", "action": web(&r.url("/down"))})).await;
    s.ingest(channel("CHANNEL_ANSWER", D, "u-1")).await;
    s.settled(D, &id, 1).await;
    s.settled(D, &failing, 1).await;
    // A failed delivery keeps its request (it may be retried by hand); both keep their attempts.
    assert_eq!(s.count_rows("attempts").await, 2);
    assert_eq!(s.count_rows("delivery_payloads").await, 1);
    let (mut config, dir, pg) = s.stop().await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    config.delivery.retention = Duration::from_millis(10);
    let s = TestServer::start_with(config, dir, pg).await;
    let deadline = std::time::Instant::now() + WAIT;
    while s.count_rows("deliveries").await > 0 {
        assert!(std::time::Instant::now() < deadline, "never pruned");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(s.deliveries(D, &id, "").await.is_empty());
    // A delivery's attempts and request go with it.
    assert_eq!(s.count_rows("attempts").await, 0);
    assert_eq!(s.count_rows("delivery_payloads").await, 0);
}

async fn metrics_count_events_and_deliveries(b: Backend) {
    let s = TestServer::start(b).await;
    let r = Receiver::start().await;
    let id = s.create_hook(D, json!({"event": "CHANNEL_ANSWER", "action": web(&r.url("/h"))})).await;
    s.ingest(json!([channel("CHANNEL_ANSWER", D, "u-1"), {"Event-Name": "CHANNEL_ANSWER"}])).await;
    s.settled(D, &id, 1).await;
    let text = s.http.get(s.url("/metrics")).send().await.unwrap().text().await.unwrap();
    for name in [
        "switchhook_events_received_total",
        "switchhook_events_matched_total",
        "switchhook_events_dropped_total",
        "switchhook_deliveries_total{outcome=\"delivered\"}",
        "switchhook_attempt_duration_seconds_bucket",
    ] {
        assert!(text.contains(name), "{name} missing from:\n{text}");
    }
    assert!(!text.contains(D), "metrics must not name domains");
}

async fn odd_bytes_from_receivers_and_events_are_stored(b: Backend) {
    let s = TestServer::start(b).await;
    let r = Receiver::start().await;
    r.script("/nul", [Reply::status(500).body("bad\0bytes")]);
    let nul =
        s.create_hook(D, json!({"event": "CHANNEL_ANSWER", "action": web(&r.url("/nul")), "ordered": true})).await;
    let other = s.create_hook(D, json!({"event": "CHANNEL_ANSWER", "action": web(&r.url("/ok"))})).await;
    let data = s.ingest(channel("CHANNEL_ANSWER", D, "u\u{0}1")).await;
    assert_eq!(data["deliveries"], 2);
    let log = s.settled(D, &nul, 1).await;
    assert_eq!(log[0]["log"][0]["response"], "bad\u{fffd}bytes");
    let log = s.settled(D, &other, 1).await;
    assert_eq!(log[0]["status"], "delivered");
    // Half a surrogate pair, as JavaScript's JSON.stringify writes a caller name cut short: one
    // object and a batch are taken, with U+FFFD in its place (both were 400).
    let token = s.token(Role::Admin, D).await;
    let cut = |u: &str| {
        let text = channel("CHANNEL_ANSWER", D, u).to_string();
        text.replacen("\"Alice\"", "\"Alice \\ud83d\"", 1)
    };
    assert!(cut("s1").contains("\\ud83d"));
    for body in [cut("s1"), format!("[{},{}]", cut("s2"), cut("s3"))] {
        let (status, answer) = s.call_raw("POST", "/api/v2/events", &token, body.into_bytes()).await;
        assert_eq!(status, 200, "{answer}");
    }
    let got = r.wait_for("/ok", 4, WAIT).await;
    let names: Vec<Value> = got
        .iter()
        .map(|q| q.json()["data"].clone())
        .filter(|d| d["Unique-ID"].as_str().is_some_and(|u| u.starts_with('s')))
        .map(|d| d["Caller-Caller-ID-Name"].clone())
        .collect();
    assert_eq!(names, ["Alice \u{fffd}"; 3], "{got:?}");
}

/// Neither one slow hook nor the slow hooks of one domain together take every slot: with 4
/// in all, 2 per hook and 3 per domain, two slow hooks of one domain hold 3 (2 and 1), and the
/// other domain's delivery goes at once.
async fn a_slow_hook_or_domain_does_not_hold_up_others(b: Backend) {
    let s = TestServer::start_configured(b, |c| {
        c.delivery.concurrency = 4;
        c.delivery.per_hook_concurrency = 2;
        c.delivery.per_domain_concurrency = 3;
    })
    .await;
    let r = Receiver::start().await;
    for path in ["/slow", "/slow2"] {
        r.script(path, (0..8).map(|_| Reply::status(200).delay(Duration::from_secs(3))));
        s.create_hook("slow.com", json!({"event": "CHANNEL_ANSWER", "action": web(&r.url(path))})).await;
    }
    s.create_hook("fast.com", json!({"event": "CHANNEL_ANSWER", "action": web(&r.url("/fast"))})).await;
    let slow: Vec<Value> = (0..8).map(|i| channel("CHANNEL_ANSWER", "slow.com", &format!("s{i}"))).collect();
    s.ingest(Value::Array(slow)).await;
    let deadline = std::time::Instant::now() + WAIT;
    while r.at("/slow").len() + r.at("/slow2").len() < 3 {
        assert!(std::time::Instant::now() < deadline, "the slow domain never used its slots");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let started = std::time::Instant::now();
    s.ingest(channel("CHANNEL_ANSWER", "fast.com", "f1")).await;
    r.wait_for("/fast", 1, WAIT).await;
    assert!(started.elapsed() < Duration::from_millis(1500), "fast hook waited {:?}", started.elapsed());
    let (one, two) = (r.at("/slow").len(), r.at("/slow2").len());
    assert_eq!(one + two, 3, "the slow domain keeps to its 3 in flight ({one} + {two})");
    assert!(one <= 2 && two <= 2, "each hook keeps to its 2 in flight ({one}, {two})");
}

/// A hook that sends events whole gets the ingested text as it came; text with a repeated key
/// is parsed first, so the receiver sees what the parsed event says (the last value).
async fn whole_events_are_sent_in_the_source_spelling_unless_a_key_repeats(b: Backend) {
    let s = TestServer::start(b).await;
    let r = Receiver::start().await;
    s.create_hook(D, json!({"event": "CHANNEL_ANSWER", "action": web(&r.url("/whole"))})).await;
    let as_sent =
        format!(r#"{{ "Event-Name" : "CHANNEL_ANSWER", "variable_domain_name": "{D}", "n": 1.50, "u": "a\/b" }}"#);
    let repeated = format!(r#"{{"Event-Name":"CHANNEL_ANSWER","variable_domain_name":"{D}","x":"1","x":"2"}}"#);
    let body = format!("[{as_sent}, {repeated}]").into_bytes();
    let (status, v) = s.call_raw("POST", "/api/v2/events", &s.root, body).await;
    assert_eq!((status, &v["data"]), (200, &json!({"accepted": 2, "deliveries": 2})));
    let got = r.wait_for("/whole", 2, WAIT).await;
    let text = |i: usize| String::from_utf8(got[i].body.to_vec()).unwrap();
    let (spelled, parsed) = if text(0).contains("1.50") { (text(0), text(1)) } else { (text(1), text(0)) };
    assert!(spelled.ends_with(&format!(r#","data":{as_sent}}}"#)), "{spelled}");
    // On the wire, not through a JSON reader (which would keep the last of a repeat too).
    assert!(!parsed.contains(r#""x":"1""#), "{parsed}");
    let parsed: Value = serde_json::from_str(&parsed).unwrap();
    assert_eq!(parsed["data"], json!({"Event-Name": "CHANNEL_ANSWER", "variable_domain_name": D, "x": "2"}));
}

/// Events from the engine or HTTP ingest often carry no `Event-Sequence`: an ordered hook
/// keeps each call's events in the order they came all the same, through failures, and sends
/// the next one as soon as the last is done rather than at the next poll.
async fn an_ordered_hook_keeps_each_calls_order_without_event_sequence(b: Backend) {
    let s = TestServer::start(b).await;
    let r = Receiver::start().await;
    r.script("/ordered", [Reply::status(500), Reply::status(500)]);
    let hook = json!({"event": "CHANNEL_ANSWER", "action": web(&r.url("/ordered")), "ordered": true, "retries": 5, "delay": 1});
    s.create_hook(D, hook).await;
    let send = |call: &str, n: u32| with(channel("CHANNEL_ANSWER", D, call), json!({"Event-Sequence": null, "N": n}));
    for (call, n) in [("a", 1), ("a", 2), ("b", 1), ("a", 3), ("b", 2)] {
        s.ingest(send(call, n)).await;
    }
    let in_order = |got: &[common::receiver::Received], call: &str| -> Vec<u64> {
        let mut ns: Vec<u64> = got
            .iter()
            .map(|q| q.json()["data"].clone())
            .filter(|d| d["Unique-ID"] == call)
            .map(|d| d["N"].as_u64().unwrap())
            .collect();
        // A retry sends the same event again; an event after a later one would stay.
        ns.dedup();
        ns
    };
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let got = r.at("/ordered");
        if got.len() >= 7 {
            assert_eq!(in_order(&got, "a"), [1, 2, 3], "{:?}", in_order(&got, "a"));
            assert_eq!(in_order(&got, "b"), [1, 2]);
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{} requests", got.len());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Each answered at once: the call's ten events go one after the other, not one a second.
    let started = std::time::Instant::now();
    for n in 1..=10 {
        s.ingest(send("c", n)).await;
    }
    let got = r.wait_for("/ordered", 17, WAIT).await;
    assert_eq!(in_order(&got, "c"), (1..=10).collect::<Vec<u64>>());
    assert!(started.elapsed() < Duration::from_secs(4), "ten ordered events took {:?}", started.elapsed());

    // One at a time even when a call mixes events without and with `Event-Sequence` (the
    // engine's and FreeSWITCH's): the second waits until the first, in flight, is answered.
    r.script("/ordered", [Reply::status(200).delay(Duration::from_secs(1))]);
    s.ingest(send("d", 1)).await;
    r.wait_for("/ordered", 18, WAIT).await;
    s.ingest(with(send("d", 2), json!({"Event-Sequence": "5"}))).await;
    let got = r.wait_for("/ordered", 19, WAIT).await;
    assert_eq!(in_order(&got, "d"), [1, 2]);
    let gap = got[18].at - got[17].at;
    assert!(gap >= Duration::from_millis(950), "the second went {gap:?} after the first, before its answer");
}

/// A Unique-ID is any text an HTTP or RabbitMQ publisher sends. One of 12 KB, which
/// PostgreSQL cannot hold in an index entry, made every commit of its batch fail (500 here; a
/// RabbitMQ batch held unacknowledged and retried for ever, stalling the queue): the ordered
/// hook's events of that call are taken, and still go in order.
async fn an_ordered_hook_takes_a_unique_id_too_long_for_an_index(b: Backend) {
    let s = TestServer::start(b).await;
    let r = Receiver::start().await;
    let hook = json!({"event": "CHANNEL_ANSWER", "action": web(&r.url("/long")), "ordered": true});
    s.create_hook(D, hook).await;
    // Text PostgreSQL cannot compress below its index limit.
    let mut seed = 0x2545_f491_4f6c_dd1d_u64;
    let call: String = (0..12_000)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            char::from(b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"[(seed % 62) as usize])
        })
        .collect();
    for n in 1..=2 {
        let event = with(channel("CHANNEL_ANSWER", D, &call), json!({"Event-Sequence": null, "N": n}));
        let (status, v) = s.call("POST", "/api/v2/events", Some(&s.root), Some(event)).await;
        assert_eq!((status, &v["data"]), (200, &json!({"accepted": 1, "deliveries": 1})), "{v}");
    }
    let got = r.wait_for("/long", 2, WAIT).await;
    let ns: Vec<Value> = got.iter().map(|q| q.json()["data"]["N"].clone()).collect();
    assert_eq!(ns, [json!(1), json!(2)]);
}

/// An operator disables a hook to stop what it sends: retries already waiting are held, not
/// sent and not failed, and go out once the hook is enabled again.
async fn disabling_a_hook_pauses_its_waiting_retries(b: Backend) {
    let s = TestServer::start(b).await;
    let (port, id) = waiting_for_a_receiver(&s, &["u-1"], json!({})).await;
    let r = Receiver::start_on(port).await;
    let path = format!("/api/v2/hooks/{id}?domain={D}");
    let (_, v) = s.call("GET", &path, Some(&s.root), None).await;
    let mut doc = v["data"].clone();
    doc["enable"] = json!(false);
    let (status, _) = s.call("PUT", &path, Some(&s.root), Some(doc.clone())).await;
    assert_eq!(status, 200);
    // The retry was due a second after the first attempt.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(r.at("/late").is_empty(), "a disabled hook sends nothing");
    let log = s.deliveries(D, &id, "").await;
    assert_eq!((&log[0]["status"], &log[0]["attempts"]), (&json!("pending"), &json!(1)));

    doc["enable"] = json!(true);
    s.call("PUT", &path, Some(&s.root), Some(doc)).await;
    assert_eq!(r.wait_for("/late", 1, WAIT).await[0].json()["id"], log[0]["id"]);
    let log = s.settled(D, &id, 1).await;
    assert_eq!((&log[0]["status"], &log[0]["attempts"]), (&json!("delivered"), &json!(2)));
}

/// A lease this node holds but no attempt of it renews (left behind when the store failed a
/// give-back or a hook lookup) runs out, and its delivery is sent, while other attempts run
/// and renew theirs.
async fn a_lease_left_behind_runs_out_while_other_attempts_run(b: Backend) {
    let s = TestServer::start_configured(b, |c| {
        c.delivery.lease = Duration::from_secs(3);
        c.delivery.node_id = Some("node-a".into());
    })
    .await;
    let r = Receiver::start().await;
    r.script("/slow", [Reply::status(200).delay(Duration::from_secs(12))]);
    let slow = json!({"event": "CHANNEL_ANSWER", "action": web(&r.url("/slow")), "timeout": 20_000});
    s.create_hook("slow.com", slow).await;
    r.script("/left", [Reply::status(500)]);
    let left = json!({"event": "CHANNEL_ANSWER", "action": web(&r.url("/left")), "retries": 1, "delay": 3600});
    let id = s.create_hook(D, left).await;
    s.ingest(channel("CHANNEL_ANSWER", D, "c-1")).await;
    let deadline = std::time::Instant::now() + WAIT;
    while s.deliveries(D, &id, "").await.first().map(|d| d["attempts"].clone()) != Some(json!(1)) {
        assert!(std::time::Instant::now() < deadline, "the first attempt was never recorded");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    s.ingest(channel("CHANNEL_ANSWER", "slow.com", "c-2")).await;
    r.wait_for("/slow", 1, WAIT).await;

    // Its retry, due now and left leased to this node for the next 3 s.
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
    let marked = on_store_db!(&s.config.database_url, |conn| sqlx::query(
        "UPDATE deliveries SET next_at = $1, lease_owner = 'node-a', lease_until = $2 WHERE hook_id = $3"
    )
    .bind(now)
    .bind(now + 3000)
    .bind(&id)
    .execute(&mut conn)
    .await
    .map(|done| done.rows_affected())
    .unwrap());
    assert_eq!(marked, 1);
    let started = std::time::Instant::now();
    r.wait_for("/left", 2, WAIT).await;
    // Renewed with the slow attempt, it would wait for that attempt's 12 s.
    assert!(started.elapsed() < Duration::from_secs(7), "the left lease held for {:?}", started.elapsed());
}

/// Two nodes on one PostgreSQL. Node A sends one attempt at a time to a slow receiver, so the
/// deliveries it handed over in memory wait there: the second past half its lease (A renews it
/// and sends it), the third past all of it (node B leases it and sends it; A, finding it taken,
/// leaves it). Each delivery goes out once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_waiting_in_memory_past_its_lease_goes_out_once_across_nodes() {
    let Some(backend) = Backend::postgres() else { return };
    let a = TestServer::start_configured(backend, |c| {
        c.delivery.lease = Duration::from_secs(3);
        c.delivery.node_id = Some("node-a".into());
        (c.delivery.concurrency, c.delivery.per_hook_concurrency, c.delivery.per_domain_concurrency) = (1, 1, 1);
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = common::config_for(dir.path(), Some(a.config.database_url.clone()));
    config.delivery.lease = Duration::from_secs(3);
    config.delivery.node_id = Some("node-b".into());
    // The store issued its root token once, to A's folder.
    std::fs::copy(a.dir.path().join("root.token"), dir.path().join("root.token")).unwrap();
    let _b = TestServer::start_with(config, dir, None).await;

    let r = Receiver::start().await;
    r.script("/slow", (0..4).map(|_| Reply::status(200).delay(Duration::from_millis(2500))));
    a.create_hook(D, json!({"event": "CHANNEL_ANSWER", "action": web(&r.url("/slow"))})).await;
    let events: Vec<Value> = (0..3).map(|i| channel("CHANNEL_ANSWER", D, &format!("c-{i}"))).collect();
    a.ingest(Value::Array(events)).await;
    r.wait_for("/slow", 3, WAIT).await;
    // A takes the third from memory once its second attempt ends, 5 s after the first began.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let got = r.at("/slow");
    let mut ids: Vec<&str> = got.iter().map(|q| q.header("webhook-id").unwrap()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!((got.len(), ids.len()), (3, 3), "each delivery goes out once");
}

/// The router hands freshly committed deliveries to the dispatcher in memory, already leased,
/// up to 8 per attempt it may have in flight (`HOT_PER_ATTEMPT`); the rest of a batch waits
/// in the store unleased, where any node may lease it. With one attempt at a time and the
/// first held at the receiver, a batch of 100 leaves 8 leased (9 if the dispatcher leased the
/// first from the store itself), and once the receiver answers, each of the 100 goes out once,
/// well before a lease could run out (a delivery leased but never handed over would wait 60 s).
async fn deliveries_past_the_in_memory_hand_over_wait_in_the_store_and_each_goes_out_once(b: Backend) {
    const EVENTS: usize = 100;
    let s = TestServer::start_configured(b, |c| {
        (c.delivery.concurrency, c.delivery.per_hook_concurrency, c.delivery.per_domain_concurrency) = (1, 1, 1);
    })
    .await;
    let r = Receiver::start().await;
    let release = tokio_util::sync::CancellationToken::new();
    r.script("/h", [Reply::status(200).until(&release)]);
    let id = s.create_hook(D, json!({"event": "CHANNEL_ANSWER", "action": web(&r.url("/h"))})).await;
    let events: Vec<Value> = (0..EVENTS).map(|i| channel("CHANNEL_ANSWER", D, &format!("c-{i}"))).collect();
    assert_eq!(s.ingest(Value::Array(events)).await["deliveries"], EVENTS);
    r.wait_for("/h", 1, WAIT).await;
    let leased = s.count_rows("deliveries WHERE lease_owner IS NOT NULL").await;
    assert!((8..=9).contains(&leased), "{leased} of {EVENTS} deliveries leased with one attempt in flight, not 8");

    release.cancel();
    r.wait_for("/h", EVENTS, WAIT).await;
    let deadline = std::time::Instant::now() + WAIT;
    let log = loop {
        let log = s.deliveries(D, &id, "limit=1000").await;
        if log.len() == EVENTS && log.iter().all(|d| d["status"] != "pending") {
            break log;
        }
        assert!(std::time::Instant::now() < deadline, "deliveries never settled: {log:#?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(log.iter().all(|d| d["status"] == "delivered" && d["attempts"] == 1), "{log:#?}");
    // Settled: nothing is left to send, so these are all the requests there will be.
    let got = r.at("/h");
    let distinct = |key: &str| {
        let mut values: Vec<String> = got.iter().map(|q| q.json().pointer(key).unwrap().to_string()).collect();
        values.sort();
        values.dedup();
        values.len()
    };
    assert_eq!(
        (got.len(), distinct("/id"), distinct("/data/Unique-ID")),
        (EVENTS, EVENTS, EVENTS),
        "each delivery goes out once"
    );
}
