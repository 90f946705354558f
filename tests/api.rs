//! The Hooks API v2, black-box over HTTP, on both stores.

mod common;

use common::events::channel;
use common::{Backend, TestServer, hook, seed_hook};
use serde_json::{Value, json};
use switchhook::auth::{Claims, Role, TokenKeys, now_ms};
use switchhook::store::Revocation;

on_both_stores!(
    seed_create_returns_insert_shape_and_list_shows_defaults,
    item_update_delete_and_not_found,
    list_projects_columns_and_pages,
    malformed_ids_are_bad_id,
    rejects_missing_tampered_expired_and_revoked_tokens,
    accepts_token_from_query_and_bearer,
    user_role_is_denied_and_root_needs_domain,
    admin_of_one_domain_never_reaches_another,
    each_validation_rule_names_its_field,
    update_keeps_a_masked_secret_and_clears_an_empty_one,
    bodies_that_are_not_json_or_too_large_get_the_envelope,
    unknown_routes_and_methods_get_the_envelope,
    health_reports_the_store,
    cors_preflight_needs_no_token_and_every_answer_names_the_origin,
    wrong_method_on_a_known_route_is_not_found,
    paging_edge_values_read_as_the_original_did,
    update_resets_original_keys_it_leaves_out_and_keeps_extensions,
    empty_ingest_body_is_a_400_for_every_caller,
    an_untouched_auth_form_and_null_keys_are_accepted,
    a_domain_has_at_most_max_hooks_per_domain,
);

const DOMAIN: &str = "demo.webitel.com";

async fn create(s: &TestServer, token: &str, body: Value) -> String {
    let (status, v) = s.call("POST", &format!("/api/v2/hooks?domain={DOMAIN}"), Some(token), Some(body)).await;
    assert_eq!(status, 200, "{v}");
    v["data"]["insertedIds"][0].as_str().unwrap().to_owned()
}

async fn seed_create_returns_insert_shape_and_list_shows_defaults(b: Backend) {
    let s = TestServer::start(b).await;
    let (status, v) = s.call("POST", "/api/v2/hooks?domain=demo.webitel.com", Some(&s.root), Some(seed_hook())).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["status"], "OK");
    let data = &v["data"];
    let id = data["insertedIds"][0].as_str().unwrap();
    assert_eq!(id.len(), 24);
    assert!(id.bytes().all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c)), "{id}");
    assert_eq!(data["result"], json!({"ok": 1, "n": 1}));
    assert_eq!(data["insertedCount"], 1);
    let mut expected = seed_hook();
    let obj = expected.as_object_mut().unwrap();
    obj.insert("domain".into(), DOMAIN.into());
    obj.insert("retries".into(), 0.into());
    obj.insert("delay".into(), 60.into());
    obj.insert("_id".into(), id.into());
    assert_eq!(data["ops"], json!([expected]));

    let (status, v) = s.call("GET", "/api/v2/hooks?domain=demo.webitel.com", Some(&s.root), None).await;
    assert_eq!(status, 200);
    assert_eq!(v["data"], json!([expected]));

    // A minimal document gets every default.
    let id = create(&s, &s.root, hook("CHANNEL_CREATE", "https://requestb.in/yoe4hwyo")).await;
    let (_, v) = s.call("GET", &format!("/api/v2/hooks/{id}?domain={DOMAIN}"), Some(&s.root), None).await;
    assert_eq!(
        v["data"],
        json!({"_id": id, "domain": DOMAIN, "event": "CHANNEL_CREATE", "enable": true, "description": "",
            "action": {"type": "web", "method": "POST", "url": "https://requestb.in/yoe4hwyo"},
            "fields": [], "map": {}, "filter": {}, "headers": {},
            "auth": {"headers": {}, "map": {}, "enabled": false},
            "customBody": false, "rawBody": "", "retries": 0, "delay": 60})
    );
}

async fn item_update_delete_and_not_found(b: Backend) {
    let s = TestServer::start(b).await;
    let id = create(&s, &s.root, seed_hook()).await;
    let path = format!("/api/v2/hooks/{id}?domain={DOMAIN}");

    let (status, v) = s.call("GET", &path, Some(&s.root), None).await;
    assert_eq!((status, v["data"]["_id"].as_str()), (200, Some(id.as_str())));

    let mut changed = seed_hook();
    changed["description"] = "changed".into();
    changed["enable"] = false.into();
    changed["_id"] = "ffffffffffffffffffffffff".into();
    changed["bogus"] = "ignored".into();
    let (status, v) = s.call("PUT", &path, Some(&s.root), Some(changed)).await;
    assert_eq!((status, &v), (200, &json!({"status": "OK", "data": {"ok": 1, "n": 1, "nModified": 1}})));
    let (_, v) = s.call("GET", &path, Some(&s.root), None).await;
    assert_eq!(v["data"]["description"], "changed");
    assert_eq!(v["data"]["enable"], false);
    assert_eq!(v["data"]["_id"], id.as_str());
    assert!(v["data"].get("bogus").is_none());

    let (status, v) = s.call("DELETE", &path, Some(&s.root), None).await;
    assert_eq!((status, &v["data"]), (200, &json!({"ok": 1, "n": 1})));

    // Now gone: item null, update and delete touch nothing.
    let (status, v) = s.call("GET", &path, Some(&s.root), None).await;
    assert_eq!((status, &v), (200, &json!({"status": "OK", "data": null})));
    let (status, v) = s.call("PUT", &path, Some(&s.root), Some(seed_hook())).await;
    assert_eq!((status, &v["data"]), (200, &json!({"ok": 1, "n": 0, "nModified": 0})));
    let (status, v) = s.call("DELETE", &path, Some(&s.root), None).await;
    assert_eq!((status, &v["data"]), (200, &json!({"ok": 1, "n": 0})));
}

async fn list_projects_columns_and_pages(b: Backend) {
    let s = TestServer::start(b).await;
    let mut ids = Vec::new();
    for i in 0..5 {
        let mut h = hook(&format!("EVENT_{i}"), "http://127.0.0.1:9/x");
        h["description"] = format!("hook {i}").into();
        ids.push(create(&s, &s.root, h).await);
    }
    let (status, v) = s
        .call(
            "GET",
            "/api/v2/hooks/?domain=demo.webitel.com&columns=_id,enable,event,action.type,description&limit=5000&page=1&",
            Some(&s.root),
            None,
        )
        .await;
    assert_eq!(status, 200, "{v}");
    let data = v["data"].as_array().unwrap();
    assert_eq!(data.len(), 5);
    assert_eq!(
        data[0],
        json!({"_id": ids[0], "event": "EVENT_0", "enable": true, "description": "hook 0", "action": {"type": "web"}})
    );
    let keys: Vec<_> = data[0].as_object().unwrap().keys().collect();
    assert_eq!(keys, ["_id", "event", "enable", "description", "action"]);

    let (_, v) = s.call("GET", "/api/v2/hooks?domain=demo.webitel.com&limit=2&page=2", Some(&s.root), None).await;
    let page: Vec<_> = v["data"].as_array().unwrap().iter().map(|h| h["_id"].clone()).collect();
    assert_eq!(page, [json!(ids[2]), json!(ids[3])]);
    let (_, v) = s.call("GET", "/api/v2/hooks?domain=demo.webitel.com&limit=2&page=9", Some(&s.root), None).await;
    assert_eq!(v["data"], json!([]));
}

async fn malformed_ids_are_bad_id(b: Backend) {
    let s = TestServer::start(b).await;
    for method in ["GET", "PUT", "DELETE"] {
        for id in ["123", "zzzzzzzzzzzzzzzzzzzzzzzz", "598035b7a7ec15000c40926e0"] {
            let body = (method == "PUT").then(seed_hook);
            let (status, v) = s.call(method, &format!("/api/v2/hooks/{id}?domain={DOMAIN}"), Some(&s.root), body).await;
            assert_eq!(
                (status, &v),
                (400, &json!({"status": "error", "info": "Bad id", "code": 400})),
                "{method} {id}"
            );
        }
    }
}

fn keys() -> TokenKeys {
    TokenKeys::new(common::TOKEN_SECRET.as_bytes()).unwrap()
}

async fn rejects_missing_tampered_expired_and_revoked_tokens(b: Backend) {
    let s = TestServer::start(b).await;
    let path = format!("/api/v2/hooks?domain={DOMAIN}");
    let invalid = json!({"status": "error", "info": "Invalid token", "code": 401});

    let (status, v) = s.call("GET", &path, None, None).await;
    assert_eq!((status, &v), (401, &invalid));

    let admin = s.token(Role::Admin, DOMAIN).await;
    let (head, rest) = admin.split_once('.').unwrap();
    let (payload, sig) = rest.split_once('.').unwrap();
    let forged_payload = {
        use base64::Engine;
        let engine = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let mut claims: Value = serde_json::from_slice(&engine.decode(payload).unwrap()).unwrap();
        claims["d"] = "other.com".into();
        engine.encode(claims.to_string())
    };
    for bad in [
        format!("{head}.{forged_payload}.{sig}"),
        format!("{admin}x"),
        "garbage".to_owned(),
        TokenKeys::new(b"some other secret").unwrap().sign(&Claims::new(
            "x".into(),
            now_ms() + 60_000,
            Role::Root,
            None,
        )),
        // alg: none, with the same claims.
        format!("eyJ0eXAiOiJKV1QiLCJhbGciOiJub25lIn0.{payload}."),
    ] {
        let (status, v) = s.call("GET", &path, Some(&bad), None).await;
        assert_eq!((status, &v), (401, &invalid), "{bad}");
    }

    let expired = keys().sign(&Claims::new("e".into(), now_ms() - 1, Role::Admin, Some(DOMAIN.into())));
    let (status, v) = s.call("GET", &path, Some(&expired), None).await;
    assert_eq!((status, &v), (401, &json!({"status": "error", "info": "Token Expired", "code": 401})));

    let (status, _) = s.call("GET", &path, Some(&admin), None).await;
    assert_eq!(status, 200);
    let id = keys().verify(&admin, 0).unwrap().id;
    let revoked_at = now_ms();
    assert_eq!(s.services.store.revoke_token(&id, revoked_at).await.unwrap(), Revocation::Revoked);
    let (status, v) = s.call("GET", &path, Some(&admin), None).await;
    assert_eq!((status, &v), (401, &invalid));
    // Revoking it again keeps the first time; an unknown id is not found.
    let store = &s.services.store;
    let again = store.revoke_token(&id, revoked_at + 1000).await.unwrap();
    assert_eq!(again, Revocation::AlreadyRevoked { at_ms: revoked_at });
    assert_eq!(store.token_revoked_at(&id).await.unwrap(), Some(revoked_at));
    assert_eq!(store.revoke_token("no-such-id", revoked_at).await.unwrap(), Revocation::NotFound);
}

async fn accepts_token_from_query_and_bearer(b: Backend) {
    let s = TestServer::start(b).await;
    let r = s.http.get(s.url(&format!("/api/v2/hooks?domain={DOMAIN}&access_token={}", s.root))).send().await.unwrap();
    assert_eq!(r.status(), 200);
    // Another Authorization scheme does not hide the query token.
    let r = s
        .http
        .get(s.url(&format!("/api/v2/hooks?domain={DOMAIN}&access_token={}", s.root)))
        .basic_auth("proxy", Some("pw"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // A root caller's domain must be a domain name.
    let (status, v) = s.call("GET", "/api/v2/hooks?domain=a%00b", Some(&s.root), None).await;
    assert_eq!((status, &v["info"]), (400, &json!("Bad request: domain must be a domain name")));
    let r = s.http.get(s.url(&format!("/api/v2/hooks?domain={DOMAIN}"))).bearer_auth(&s.root).send().await.unwrap();
    assert_eq!(r.status(), 200);
}

async fn user_role_is_denied_and_root_needs_domain(b: Backend) {
    let s = TestServer::start(b).await;
    let id = create(&s, &s.root, seed_hook()).await;
    let user = s.token(Role::User, DOMAIN).await;
    let denied = json!({"status": "error", "info": "Permission denied!", "code": 403});
    for (method, path, body) in [
        ("GET", "/api/v2/hooks".to_owned(), None),
        ("POST", "/api/v2/hooks".to_owned(), Some(seed_hook())),
        ("GET", format!("/api/v2/hooks/{id}"), None),
        ("PUT", format!("/api/v2/hooks/{id}"), Some(seed_hook())),
        ("DELETE", format!("/api/v2/hooks/{id}"), None),
    ] {
        let (status, v) = s.call(method, &path, Some(&user), body.clone()).await;
        assert_eq!((status, &v), (403, &denied), "{method} {path}");
        let (status, v) = s.call(method, &path, Some(&s.root), body).await;
        assert_eq!(
            (status, &v),
            (400, &json!({"status": "error", "info": "Bad request: domain is required.", "code": 400})),
            "{method} {path}"
        );
    }
    // A token of the seed document's shape (no "r") acts as the domain's admin, as the seed's
    // calls show; only in its own domain.
    let legacy =
        keys().sign(&Claims { r: None, ..Claims::new("l".into(), now_ms() + 60_000, Role::User, Some(DOMAIN.into())) });
    let (status, v) = s.call("GET", "/api/v2/hooks?domain=other.com", Some(&legacy), None).await;
    assert_eq!((status, v["data"].as_array().map(Vec::len)), (200, Some(1)));
}

async fn admin_of_one_domain_never_reaches_another(b: Backend) {
    let s = TestServer::start(b).await;
    let theirs = create(&s, &s.root, seed_hook()).await; // in demo.webitel.com
    let other = s.token(Role::Admin, "other.com").await;

    // Listing, even naming the other domain, shows only its own (empty) domain.
    for q in ["", "?domain=demo.webitel.com"] {
        let (status, v) = s.call("GET", &format!("/api/v2/hooks{q}"), Some(&other), None).await;
        assert_eq!((status, &v["data"]), (200, &json!([])), "{q}");
    }
    let path = format!("/api/v2/hooks/{theirs}?domain={DOMAIN}");
    let (_, v) = s.call("GET", &path, Some(&other), None).await;
    assert_eq!(v["data"], Value::Null);
    let (_, v) = s.call("PUT", &path, Some(&other), Some(hook("X", "http://evil.example/"))).await;
    assert_eq!(v["data"]["n"], 0);
    let (_, v) = s.call("DELETE", &path, Some(&other), None).await;
    assert_eq!(v["data"]["n"], 0);

    // A hook it creates with ?domain= of the other lands in its own domain.
    let mine = create(&s, &other, hook("CHANNEL_ANSWER", "http://127.0.0.1:9/")).await;
    let (_, v) = s.call("GET", &format!("/api/v2/hooks/{mine}"), Some(&other), None).await;
    assert_eq!(v["data"]["domain"], "other.com");

    // The victim's hook is untouched.
    let (_, v) = s.call("GET", &path, Some(&s.root), None).await;
    assert_eq!(v["data"]["event"], "CUSTOM->engine::dialer_member_end");
    let (_, v) = s.call("GET", &format!("/api/v2/hooks?domain={DOMAIN}"), Some(&s.root), None).await;
    assert_eq!(v["data"].as_array().unwrap().len(), 1);
}

async fn each_validation_rule_names_its_field(b: Backend) {
    let s = TestServer::start(b).await;
    let admin = s.token(Role::Admin, DOMAIN).await;
    let with = |patch: Value| {
        let mut h = seed_hook();
        for (k, v) in patch.as_object().unwrap() {
            if v.is_null() {
                h.as_object_mut().unwrap().remove(k);
            } else {
                h[k] = v.clone();
            }
        }
        h
    };
    let cases: Vec<(Value, &str)> = vec![
        (with(json!({"event": null})), "Bad request: event name is required."),
        (with(json!({"event": ""})), "Bad request: event name is required."),
        (with(json!({"event": 5})), "Bad request: event must be a string"),
        (
            with(json!({"event": "CHANNEL_ANSWER\n\napi system touch /tmp/x"})),
            "Bad request: event must be an event name like CHANNEL_ANSWER",
        ),
        (with(json!({"event": "ALL"})), "Bad request: event must name one event; ALL is not an event"),
        (with(json!({"event": "channel_answer"})), "Bad request: event must be an event name like CHANNEL_ANSWER"),
        (with(json!({"event": "CUSTOM->a b"})), "Bad request: event must have a subclass without spaces"),
        (with(json!({"action": null})), "Bad request: action options is required."),
        (with(json!({"action": {"type": "web", "method": "POST"}})), "Bad request: action options is required."),
        (
            with(json!({"action": {"type": "email", "method": "POST", "url": "http://a/"}})),
            "Bad request: action.type must be \"web\"",
        ),
        (
            with(json!({"action": {"type": "web", "method": "FETCH", "url": "http://a/"}})),
            "Bad request: action.method must be one of GET, POST, PUT, PATCH, DELETE",
        ),
        (
            with(json!({"action": {"type": "web", "method": "post", "url": "ftp://a/"}})),
            "Bad request: action.url must be an absolute http or https URL",
        ),
        (
            with(json!({"action": {"type": "web", "method": "post", "url": "/relative"}})),
            "Bad request: action.url must be an absolute http or https URL",
        ),
        (with(json!({"enable": "yes"})), "Bad request: enable must be true or false"),
        (with(json!({"fields": "Caller-ID"})), "Bad request: fields must be an array of header names"),
        (with(json!({"map": {"a": 1}})), "Bad request: map.a must be a string"),
        (
            with(json!({"filter": {"Caller-ID": {"operation": "~", "value": "1"}}})),
            "Bad request: filter.Caller-ID unknown operation \"~\" (expected one of ==, !=, <, >, <=, >=, reg)",
        ),
        (
            with(json!({"filter": {"Caller-ID": {"operation": "reg", "value": "/(unclosed/"}}})),
            "Bad request: filter.Caller-ID invalid regular expression",
        ),
        (with(json!({"filter": {"Caller-ID": {"value": "1"}}})), "Bad request: filter.Caller-ID.operation is required"),
        (
            with(json!({"filter": {"Caller-ID": {"operation": "=="}}})),
            "Bad request: filter.Caller-ID.value is required",
        ),
        (
            with(json!({"filter": {"Caller-ID": "x"}})),
            "Bad request: filter.Caller-ID must be an object with operation and value",
        ),
        (
            with(json!({"headers": {"bad header": "x"}})),
            "Bad request: headers.bad header is not a valid HTTP header name",
        ),
        (
            with(json!({"headers": {"X-A": "${unclosed"}})),
            "Bad request: headers.X-A has an invalid template: unclosed \"${\" at byte 0",
        ),
        (with(json!({"auth": {"enabled": true}})), "Bad request: auth.url is required when auth is enabled"),
        (
            with(json!({"auth": {"enabled": true, "url": "http://a/", "method": "BREW"}})),
            "Bad request: auth.method must be one of GET, POST, PUT, PATCH, DELETE",
        ),
        (with(json!({"retries": 101})), "Bad request: retries must be an integer from 0 to 100"),
        (with(json!({"retries": -1})), "Bad request: retries must be an integer from 0 to 100"),
        (with(json!({"delay": 0})), "Bad request: delay must be an integer from 1 to 86400"),
        (with(json!({"timeout": 0})), "Bad request: timeout must be an integer from 1 to 300000"),
        (with(json!({"backoff": "linear"})), "Bad request: backoff must be \"fixed\" or \"exponential\""),
        (
            with(json!({"rawBody": "{\"a\": \"${x}\""})),
            "Bad request: rawBody must be a JSON template when customBody is true",
        ),
        (with(json!({"rawBody": ""})), "Bad request: rawBody must be a JSON template when customBody is true"),
        (
            with(json!({"secret": "whsec_***not base64"})),
            "Bad request: secret must be whsec_ followed by base64, or a plain string",
        ),
        (
            with(json!({"secret": "s3cret", "action": {"type": "web", "method": "get", "url": "http://a/"}})),
            "Bad request: secret cannot sign a GET hook: its data goes in the query string, which a signature does not cover; use POST, PUT, PATCH or DELETE, or remove the secret with \"secret\": \"\"",
        ),
        // 132 bytes as written, 259 as a RabbitMQ binding key (every `:` is `%3A`): amqprs
        // panicked on such a key, killing the source (the AMQP audit).
        (
            with(json!({"event": format!("CUSTOM->{}", "a:".repeat(62))})),
            "Bad request: event is too long: its RabbitMQ binding key would be over 255 bytes",
        ),
        (
            with(
                json!({"filter": (0..65).map(|i| (format!("h{i}"), json!({"operation": "==", "value": "1"}))).collect::<serde_json::Map<_, _>>()}),
            ),
            "Bad request: filter must have at most 64 entries, not 65",
        ),
        (with(json!({"rawBody": "x".repeat((256 << 10) + 1)})), "Bad request: rawBody must be at most 256 KiB"),
        (json!([1, 2]), "Bad request: body must be a JSON object"),
    ];
    for (body, info) in cases {
        for method in ["POST", "PUT"] {
            let path = if method == "POST" {
                "/api/v2/hooks".to_owned()
            } else {
                "/api/v2/hooks/598035b7a7ec15000c40926e".to_owned()
            };
            let (status, v) = s.call(method, &path, Some(&admin), Some(body.clone())).await;
            assert_eq!(status, 400, "{method} {body}: {v}");
            let got = v["info"].as_str().unwrap();
            assert!(got.starts_with(info), "{method} {body}:\n got {got}\nwant {info}");
        }
    }
    // Nothing was stored.
    let (_, v) = s.call("GET", "/api/v2/hooks", Some(&admin), None).await;
    assert_eq!(v["data"], json!([]));
    // Lenient where the original was: method case, numeric strings, a rawBody that is not
    // JSON while customBody is off.
    let ok = with(json!({"action": {"type": "web", "method": "post", "url": "http://a/"}, "retries": "3",
        "customBody": false, "rawBody": "not json"}));
    let (status, v) = s.call("POST", "/api/v2/hooks", Some(&admin), Some(ok)).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["data"]["ops"][0]["retries"], 3);
    assert_eq!(v["data"]["ops"][0]["action"]["method"], "post");
}

async fn update_keeps_a_masked_secret_and_clears_an_empty_one(b: Backend) {
    let s = TestServer::start(b).await;
    let mut h = hook("CHANNEL_ANSWER", "http://127.0.0.1:9/");
    h["secret"] = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".into();
    h["retries"] = 5.into();
    let id = create(&s, &s.root, h).await;
    let path = format!("/api/v2/hooks/{id}?domain={DOMAIN}");
    let (_, v) = s.call("GET", &path, Some(&s.root), None).await;
    assert_eq!(v["data"]["secret"], "********");

    // A client that read the hook and PUTs it back, masked secret included, keeps the secret.
    let mut back = v["data"].clone();
    back["event"] = "CHANNEL_HANGUP".into();
    let (_, r) = s.call("PUT", &path, Some(&s.root), Some(back)).await;
    assert_eq!(r["data"]["n"], 1);
    let stored = s.services.store.hook(DOMAIN, &id).await.unwrap().unwrap();
    assert_eq!(stored.doc.secret.as_deref(), Some("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"));
    assert_eq!(stored.doc.event, "CHANNEL_HANGUP");

    // An empty secret removes it.
    let mut clear = hook("CHANNEL_BRIDGE", "http://127.0.0.1:9/b");
    clear["secret"] = "".into();
    s.call("PUT", &path, Some(&s.root), Some(clear)).await;
    let (_, v) = s.call("GET", &path, Some(&s.root), None).await;
    assert!(v["data"].get("secret").is_none(), "{v}");
}

async fn bodies_that_are_not_json_or_too_large_get_the_envelope(b: Backend) {
    let s = TestServer::start(b).await;
    let (status, v) =
        s.call_raw("POST", &format!("/api/v2/hooks?domain={DOMAIN}"), &s.root, b"{not json".to_vec()).await;
    assert_eq!(status, 400);
    assert!(v["info"].as_str().unwrap().starts_with("Bad request: body is not valid JSON"), "{v}");
    let (status, v) =
        s.call_raw("POST", &format!("/api/v2/hooks?domain={DOMAIN}"), &s.root, vec![0xff, 0xfe, b'{']).await;
    assert_eq!((status, &v["status"]), (400, &json!("error")));
    let nested = "[".repeat(10_000);
    let (status, _) = s.call_raw("POST", &format!("/api/v2/hooks?domain={DOMAIN}"), &s.root, nested.into_bytes()).await;
    assert_eq!(status, 400);
    let (status, v) = s.call_raw("POST", &format!("/api/v2/hooks?domain={DOMAIN}"), &s.root, Vec::new()).await;
    assert_eq!((status, &v["info"]), (400, &json!("Bad request: event name is required.")));

    let mut big = seed_hook();
    big["description"] = "x".repeat(1 << 20).into();
    let (status, v) =
        s.call_raw("POST", &format!("/api/v2/hooks?domain={DOMAIN}"), &s.root, big.to_string().into_bytes()).await;
    assert_eq!((status, &v["status"], &v["code"]), (413, &json!("error"), &json!(413)), "{v}");
    // The server is still fine.
    let (status, _) = s.call("GET", &format!("/api/v2/hooks?domain={DOMAIN}"), Some(&s.root), None).await;
    assert_eq!(status, 200);
}

async fn unknown_routes_and_methods_get_the_envelope(b: Backend) {
    let s = TestServer::start(b).await;
    let (status, v) = s.call("GET", "/api/v2/nothing?x=1", Some(&s.root), None).await;
    assert_eq!((status, &v), (404, &json!({"status": "error", "info": "/api/v2/nothing not found.", "code": 404})));
    // Trailing slashes work on every route.
    let id = create(&s, &s.root, seed_hook()).await;
    let (status, v) = s.call("GET", &format!("/api/v2/hooks/{id}/?domain={DOMAIN}"), Some(&s.root), None).await;
    assert_eq!((status, &v["data"]["_id"]), (200, &json!(id)));
}

async fn health_reports_the_store(b: Backend) {
    let s = TestServer::start(b).await;
    let (status, v) = s.call("GET", "/health", None, None).await;
    assert_eq!((status, &v["status"]), (200, &json!("OK")));
    if let Some(pg) = &s.pg {
        common::PgDatabase::drop_now(pg.admin_url(), pg.name()).await;
        let (status, v) = s.call("GET", "/health", None, None).await;
        assert_eq!((status, &v["status"]), (503, &json!("error")), "{v}");
    }
}

/// A browser admin client's page, served from another origin.
const ORIGIN: &str = "http://admin.example.com:8080";

async fn cors_preflight_needs_no_token_and_every_answer_names_the_origin(b: Backend) {
    let s = TestServer::start(b).await;
    let id = create(&s, &s.root, seed_hook()).await;
    // The preflight carries no token; on every route, trailing slash or not, even unknown ones.
    let item = format!("/api/v2/hooks/{id}");
    for path in ["/api/v2/hooks", "/api/v2/hooks/", &item, "/api/v2/events", "/api/v2/nothing"] {
        let r = s
            .http
            .request(reqwest::Method::OPTIONS, s.url(path))
            .header("Origin", ORIGIN)
            .header("Access-Control-Request-Method", "PUT")
            .header("Access-Control-Request-Headers", "x-access-token,content-type")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "OPTIONS {path}");
        let h = r.headers();
        assert_eq!(h["access-control-allow-origin"], ORIGIN, "OPTIONS {path}");
        assert_eq!(h["access-control-allow-methods"], "GET,POST,PUT,PATCH,DELETE,OPTIONS", "OPTIONS {path}");
        assert_eq!(
            h["access-control-allow-headers"], "content-type,accept,x-access-token,x-key,authorization",
            "OPTIONS {path}"
        );
    }
    // Every answer names the origin, errors included, so the page can read them.
    let user = s.token(Role::User, DOMAIN).await;
    for (method, path, token, status) in [
        ("GET", format!("/api/v2/hooks/?domain={DOMAIN}"), Some(s.root.as_str()), 200),
        ("GET", "/api/v2/hooks".to_owned(), None, 401),
        ("DELETE", item.clone(), Some(user.as_str()), 403),
        ("GET", "/api/v2/nothing".to_owned(), Some(s.root.as_str()), 404),
        ("PUT", format!("{item}?domain={DOMAIN}"), Some(s.root.as_str()), 400),
    ] {
        let mut req = s.http.request(method.parse().unwrap(), s.url(&path)).header("Origin", ORIGIN);
        if let Some(token) = token {
            req = req.header("X-Access-Token", token);
        }
        let r = req.send().await.unwrap();
        assert_eq!(r.status(), status, "{method} {path}");
        assert_eq!(r.headers()["access-control-allow-origin"], ORIGIN, "{method} {path}");
    }
    // The preflights changed nothing.
    let (_, v) = s.call("GET", &format!("{item}?domain={DOMAIN}"), Some(&s.root), None).await;
    assert_eq!(v["data"]["_id"], id.as_str());
}

async fn wrong_method_on_a_known_route_is_not_found(b: Backend) {
    let s = TestServer::start(b).await;
    let id = create(&s, &s.root, seed_hook()).await;
    for (method, path, token) in [
        ("PATCH", "/api/v2/hooks".to_owned(), Some(s.root.as_str())),
        ("DELETE", "/api/v2/hooks".to_owned(), Some(s.root.as_str())),
        ("POST", format!("/api/v2/hooks/{id}"), Some(s.root.as_str())),
        ("PATCH", format!("/api/v2/hooks/{id}/"), None),
        ("GET", format!("/api/v2/hooks/{id}/test"), Some(s.root.as_str())),
        ("GET", "/api/v2/events".to_owned(), Some(s.root.as_str())),
        ("PUT", "/health".to_owned(), None),
    ] {
        let (status, v) = s.call(method, &format!("{path}?domain={DOMAIN}"), token, None).await;
        let info = format!("{} not found.", path.trim_end_matches('/'));
        assert_eq!((status, &v), (404, &json!({"status": "error", "info": info, "code": 404})), "{method} {path}");
    }
    // The hook is untouched.
    let (_, v) = s.call("GET", &format!("/api/v2/hooks/{id}?domain={DOMAIN}"), Some(&s.root), None).await;
    assert_eq!(v["data"]["_id"], id.as_str());
}

async fn paging_edge_values_read_as_the_original_did(b: Backend) {
    let s = TestServer::start(b).await;
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(create(&s, &s.root, hook(&format!("EVENT_{i}"), "http://127.0.0.1:9/x")).await);
    }
    // parseInt(limit) || 40; a negative limit is its absolute value (MongoDB); page <= 0 is the first.
    let huge = "99999999999999999999999";
    for (query, want) in [
        ("limit=0", &ids[..]),
        ("limit=", &ids[..]),
        ("limit=-2", &ids[..2]),
        ("limit=-2&page=2", &ids[2..4]),
        ("limit=2&page=0", &ids[..2]),
        ("limit=2&page=-3", &ids[..2]),
        ("limit=+2&page=+3", &ids[4..]),
        ("limit=%202%20&page=%202", &ids[2..4]),
        (&format!("limit={huge}"), &ids[..]),
        (&format!("limit=-{huge}&page=-{huge}"), &ids[..]),
        (&format!("limit=2&page={huge}"), &[]),
    ] {
        let (status, v) = s.call("GET", &format!("/api/v2/hooks?domain={DOMAIN}&{query}"), Some(&s.root), None).await;
        assert_eq!(status, 200, "{query}: {v}");
        let got: Vec<&str> = v["data"].as_array().unwrap().iter().map(|h| h["_id"].as_str().unwrap()).collect();
        assert_eq!(got, want, "{query}");
    }
    // What is not a number stays a 400 naming the field, on both paged routes.
    let deliveries = format!("/api/v2/hooks/{}/deliveries", ids[0]);
    for bad in ["limit=abc", "limit=1e3", "limit=0x10", "limit=-", "page=x", "page=2.5", "page=--1"] {
        for route in ["/api/v2/hooks", deliveries.as_str()] {
            let (status, v) = s.call("GET", &format!("{route}?domain={DOMAIN}&{bad}"), Some(&s.root), None).await;
            let field = bad.split('=').next().unwrap();
            let info = format!("Bad request: {field} must be an integer");
            assert_eq!((status, &v), (400, &json!({"status": "error", "info": info, "code": 400})), "{route} {bad}");
        }
    }
    let (status, v) =
        s.call("GET", &format!("{deliveries}?domain={DOMAIN}&limit=0&page=-1"), Some(&s.root), None).await;
    assert_eq!((status, &v["data"]), (200, &json!([])));
}

async fn update_resets_original_keys_it_leaves_out_and_keeps_extensions(b: Backend) {
    let s = TestServer::start(b).await;
    let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let mut h = seed_hook();
    let extensions = json!({"retries": 5, "delay": 30, "timeout": 5000, "ordered": true, "backoff": "fixed"});
    for (key, value) in extensions.as_object().unwrap() {
        h[key] = value.clone();
    }
    h["event"] = "CHANNEL_ANSWER".into();
    h["enable"] = false.into();
    h["fields"] = json!(["Caller-Caller-ID-Number"]);
    h["map"] = json!({"number": "Caller-Caller-ID-Number"});
    h["filter"] = json!({"Caller-Caller-ID-Number": {"operation": "==", "value": "2000"}});
    h["auth"] = json!({"headers": {"X-Key": "k"}, "map": {}, "enabled": true, "url": "http://127.0.0.1:9/auth"});
    h["secret"] = secret.into();
    let id = create(&s, &s.root, h).await;
    let path = format!("/api/v2/hooks/{id}?domain={DOMAIN}");
    let event = channel("CHANNEL_ANSWER", DOMAIN, "3f1c2a8e-5b7d-4c19-9e0f-2a6b8d4c1e77");
    let test = format!("/api/v2/hooks/{id}/test?domain={DOMAIN}");
    let (_, v) = s.call("POST", &test, Some(&s.root), Some(event.clone())).await;
    assert_eq!(v["data"]["failedFilter"]["header"], "Caller-Caller-ID-Number", "{v}");

    // A legacy client clears the filter (and the rest) by leaving the keys out, as MongoDB's
    // whole-document update did; what it does not know of stays.
    let (status, v) = s.call("PUT", &path, Some(&s.root), Some(hook("CHANNEL_ANSWER", "http://127.0.0.1:9/b"))).await;
    assert_eq!((status, &v["data"]), (200, &json!({"ok": 1, "n": 1, "nModified": 1})));
    let (_, v) = s.call("GET", &path, Some(&s.root), None).await;
    assert_eq!(
        v["data"],
        json!({"_id": id, "domain": DOMAIN, "event": "CHANNEL_ANSWER", "enable": true, "description": "",
            "action": {"type": "web", "method": "POST", "url": "http://127.0.0.1:9/b"},
            "fields": [], "map": {}, "filter": {}, "headers": {},
            "auth": {"headers": {}, "map": {}, "enabled": false},
            "customBody": false, "rawBody": "", "retries": 5, "delay": 30, "secret": "********",
            "timeout": 5000, "ordered": true, "backoff": "fixed"})
    );
    let stored = s.services.store.hook(DOMAIN, &id).await.unwrap().unwrap();
    assert_eq!(stored.doc.secret.as_deref(), Some(secret));
    // The running hook is the new document: the old filter no longer holds it back.
    let (_, v) = s.call("POST", &test, Some(&s.root), Some(event)).await;
    assert_eq!((&v["data"]["matched"], &v["data"]["failedFilter"]), (&json!(true), &Value::Null), "{v}");

    // Extensions the body names are changed; the others still stay.
    let mut change = hook("CHANNEL_ANSWER", "http://127.0.0.1:9/b");
    change["retries"] = 0.into();
    change["ordered"] = false.into();
    s.call("PUT", &path, Some(&s.root), Some(change)).await;
    let (_, v) = s.call("GET", &path, Some(&s.root), None).await;
    let got: Vec<&Value> =
        ["retries", "delay", "timeout", "ordered", "backoff", "secret"].map(|k| &v["data"][k]).into();
    assert_eq!(got, [&json!(0), &json!(30), &json!(5000), &json!(false), &json!("fixed"), &json!("********")]);
}

async fn empty_ingest_body_is_a_400_for_every_caller(b: Backend) {
    let s = TestServer::start(b).await;
    let admin = s.token(Role::Admin, DOMAIN).await;
    let empty = json!({"status": "error", "info": "Bad request: body is empty", "code": 400});
    for token in [&s.root, &admin] {
        for body in ["", " \r\n\t"] {
            let (status, v) = s.call_raw("POST", "/api/v2/events", token, body.into()).await;
            assert_eq!((status, &v), (400, &empty), "{body:?}");
        }
    }
    // A caller without the right still learns nothing from the body.
    let user = s.token(Role::User, DOMAIN).await;
    let (status, v) = s.call_raw("POST", "/api/v2/events", &user, Vec::new()).await;
    assert_eq!((status, &v["info"]), (403, &json!("Permission denied!")));
}

/// What an admin form sends when nobody touched the auth part (empty strings, auth off) or left
/// keys empty (null): accepted as the defaults, not refused.
async fn an_untouched_auth_form_and_null_keys_are_accepted(b: Backend) {
    let s = TestServer::start(b).await;
    let mut body = seed_hook();
    body["auth"] = json!({"enabled": false, "url": "", "method": "", "headers": {}, "map": {}, "cookie": false});
    body["description"] = Value::Null;
    body["filter"] = Value::Null;
    let id = create(&s, &s.root, body).await;
    let (_, v) = s.call("GET", &format!("/api/v2/hooks/{id}?domain={DOMAIN}"), Some(&s.root), None).await;
    assert_eq!(v["data"]["auth"]["enabled"], false);
    assert_eq!(v["data"]["auth"].get("method"), None, "{}", v["data"]["auth"]);
    assert_eq!((&v["data"]["description"], &v["data"]["filter"]), (&json!(""), &json!({})));
}

/// One domain cannot fill the service with hooks: past `max_hooks_per_domain` a create is a
/// 400 naming the limit; other domains are not affected, and a deleted hook frees its place.
async fn a_domain_has_at_most_max_hooks_per_domain(b: Backend) {
    let s = TestServer::start_configured(b, |c| c.max_hooks_per_domain = 2).await;
    let first = create(&s, &s.root, seed_hook()).await;
    let mut disabled = hook("CHANNEL_ANSWER", "http://x/");
    disabled["enable"] = json!(false);
    create(&s, &s.root, disabled).await;
    let path = format!("/api/v2/hooks?domain={DOMAIN}");
    let (status, v) = s.call("POST", &path, Some(&s.root), Some(seed_hook())).await;
    let info = "Bad request: domain demo.webitel.com already has 2 hooks, the most it may have (max_hooks_per_domain)";
    assert_eq!((status, &v), (400, &json!({"status": "error", "info": info, "code": 400})));
    assert_eq!(s.call("GET", &path, Some(&s.root), None).await.1["data"].as_array().unwrap().len(), 2);
    // A domain at its limit still edits its hooks.
    let item = format!("/api/v2/hooks/{first}?domain={DOMAIN}");
    let (status, v) = s.call("PUT", &item, Some(&s.root), Some(seed_hook())).await;
    assert_eq!((status, &v["data"]["n"]), (200, &json!(1)));

    s.create_hook("other.webitel.com", seed_hook()).await;
    let (status, _) = s.call("DELETE", &item, Some(&s.root), None).await;
    assert_eq!(status, 200);
    create(&s, &s.root, seed_hook()).await;
}

/// A `columns` list as long as a URL holds (9000 names, 63 KB) over a page of 1500 hooks is
/// answered about as fast as the plain list. Each field of a hook was compared with every
/// column, so such a request held a worker thread for seconds (every request on it waiting),
/// longer the more hooks a domain had. The projection is the same on both stores: SQLite only.
#[tokio::test]
async fn a_list_with_a_long_columns_list_costs_no_more_than_its_hooks() {
    use switchhook::hook::{HookDoc, id::new_id};
    let s = TestServer::start(Backend::Sqlite).await;
    let limits = switchhook::hook::Limits { max_retries: 100 };
    let doc = HookDoc::from_body(&hook("CHANNEL_CREATE", "http://127.0.0.1:9/x"), DOMAIN, limits).unwrap();
    for _ in 0..1500 {
        let stored = switchhook::store::StoredHook { id: new_id(), doc: doc.clone() };
        s.services.store.insert_hook(&stored, now_ms()).await.unwrap();
    }
    // Timed against the plain list in the same run, so a loaded machine slows both.
    let started = std::time::Instant::now();
    let (status, _) = s.call("GET", &format!("/api/v2/hooks?domain={DOMAIN}&limit=5000"), Some(&s.root), None).await;
    let plain = started.elapsed();
    assert_eq!(status, 200);
    let columns = ["action"; 9000].join(",");
    let started = std::time::Instant::now();
    let path = format!("/api/v2/hooks?domain={DOMAIN}&limit=5000&columns={columns},event.x,action.type");
    let (status, v) = s.call("GET", &path, Some(&s.root), None).await;
    let took = started.elapsed();
    assert_eq!(status, 200, "{v}");
    let data = v["data"].as_array().unwrap();
    assert_eq!(data.len(), 1500);
    assert_eq!(data[0]["action"], json!({"type": "web", "method": "POST", "url": "http://127.0.0.1:9/x"}));
    assert_eq!(data[0].as_object().unwrap().keys().collect::<Vec<_>>(), ["_id", "action"]);
    assert!(
        took < plain * 4 + std::time::Duration::from_millis(500),
        "the list took {took:?}, {plain:?} without columns"
    );
}

/// An admin form keeps what was typed in the auth section after auth is switched off: a half
/// typed URL there is kept as it is, not refused, and checked when auth is switched on.
#[tokio::test]
async fn a_disabled_auths_unfinished_url_is_kept_and_checked_when_enabled() {
    let s = TestServer::start(Backend::Sqlite).await;
    let mut doc = seed_hook();
    doc["auth"] = json!({"enabled": false, "url": "crm.local/auth", "method": "POST"});
    let id = create(&s, &s.root, doc.clone()).await;
    let path = format!("/api/v2/hooks/{id}?domain={DOMAIN}");
    let (_, v) = s.call("GET", &path, Some(&s.root), None).await;
    assert_eq!(v["data"]["auth"]["url"], "crm.local/auth");

    doc["auth"]["enabled"] = true.into();
    let (status, v) = s.call("PUT", &path, Some(&s.root), Some(doc)).await;
    assert_eq!(status, 400, "{v}");
    assert!(v["info"].as_str().unwrap().starts_with("Bad request: auth.url"), "{v}");
}
