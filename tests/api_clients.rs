//! The Hooks API v2 as real clients call it: the Webitel admin UI and operators' scripts, with
//! the request shapes their HTTP stacks produce. On both stores.

mod common;

use common::{Backend, TestServer, hook};
use serde_json::{Value, json};
use switchhook::auth::now_ms;

on_both_stores!(
    empty_arrays_from_php_scripts_are_empty_objects,
    a_body_saved_with_a_utf8_bom_is_read,
    an_empty_token_header_does_not_hide_the_query_token,
    the_admin_ui_hook_pages_round_trip,
    saving_an_unchanged_hook_modifies_nothing,
    framing_headers_in_a_hook_are_refused_by_name,
    a_fractional_exp_is_read_as_a_number,
    a_compressed_body_is_refused_by_its_encoding,
    an_update_that_only_reorders_keys_is_stored,
);

const DOMAIN: &str = "demo.webitel.com";

/// PHP's `json_encode` writes an empty array as `[]`, so a PHP script's `'map' => []` arrives
/// as a list. The original engine stored it and iterated it as an empty object.
async fn empty_arrays_from_php_scripts_are_empty_objects(b: Backend) {
    let s = TestServer::start(b).await;
    let body = json!({"event": "CHANNEL_HANGUP_COMPLETE", "enable": true, "description": "",
        "action": {"type": "web", "method": "POST", "url": "https://crm.example.com/hook"},
        "fields": [], "map": [], "filter": [], "headers": [],
        "auth": {"headers": [], "map": [], "enabled": false}, "customBody": false, "rawBody": ""});
    let path = format!("/api/v2/hooks?domain={DOMAIN}");
    let (status, v) = s.call("POST", &path, Some(&s.root), Some(body.clone())).await;
    assert_eq!(status, 200, "{v}");
    let id = v["data"]["insertedIds"][0].as_str().unwrap().to_owned();
    let stored = json!({"fields": [], "map": {}, "filter": {}, "headers": {},
        "auth": {"headers": {}, "map": {}, "enabled": false}});
    let (_, v) = s.call("GET", &format!("/api/v2/hooks/{id}?domain={DOMAIN}"), Some(&s.root), None).await;
    for key in ["fields", "map", "filter", "headers", "auth"] {
        assert_eq!(v["data"][key], stored[key], "{key}");
    }
    // `'auth' => []` too, and on update: it is the default auth the hook already has, so the
    // update matches the hook and modifies nothing.
    let mut update = body;
    update["auth"] = json!([]);
    let (status, v) = s.call("PUT", &format!("/api/v2/hooks/{id}?domain={DOMAIN}"), Some(&s.root), Some(update)).await;
    assert_eq!((status, &v["data"]), (200, &json!({"ok": 1, "n": 1, "nModified": 0})), "{v}");
    // A list that is not empty is still no object.
    let mut bad =
        json!({"event": "CHANNEL_ANSWER", "action": {"type": "web", "method": "POST", "url": "http://a.example/"}});
    bad["map"] = json!(["Caller-ID"]);
    let (status, v) = s.call("POST", &path, Some(&s.root), Some(bad)).await;
    assert_eq!((status, &v["info"]), (400, &Value::from("Bad request: map must be an object")));
}

/// A body file saved by Windows tools starts with a UTF-8 byte order mark (PowerShell's
/// `Invoke-RestMethod -InFile hook.json`). The original's body parser dropped it.
async fn a_body_saved_with_a_utf8_bom_is_read(b: Backend) {
    let s = TestServer::start(b).await;
    let mut body = b"\xEF\xBB\xBF".to_vec();
    body.extend(common::seed_hook().to_string().into_bytes());
    let (status, v) = s.call_raw("POST", &format!("/api/v2/hooks?domain={DOMAIN}"), &s.root, body).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["data"]["ops"][0]["event"], "CUSTOM->engine::dialer_member_end");
    let mut event = b"\xEF\xBB\xBF".to_vec();
    event.extend(br#"{"Event-Name": "CHANNEL_ANSWER", "variable_domain_name": "demo.webitel.com"}"#);
    let (status, v) = s.call_raw("POST", "/api/v2/events", &s.root, event).await;
    assert_eq!((status, &v["data"]["accepted"]), (200, &json!(1)), "{v}");
}

/// A client that clears its session keeps sending `X-Access-Token` with an empty value (the
/// admin UI's `$http` defaults), and a proxy may add an empty `Authorization`. The original
/// took the first non-empty of `access_token` and the header; an empty header is no token.
async fn an_empty_token_header_does_not_hide_the_query_token(b: Backend) {
    let s = TestServer::start(b).await;
    let path = format!("/api/v2/hooks/?domain={DOMAIN}&access_token={}", s.root);
    for (name, value) in [("X-Access-Token", ""), ("X-Access-Token", "  "), ("Authorization", "Bearer ")] {
        let r = s.http.get(s.url(&path)).header(name, value).send().await.unwrap();
        assert_eq!(r.status(), 200, "{name}: {value:?}");
    }
    // Empty everywhere is still no token.
    let r = s.http.get(s.url(&format!("/api/v2/hooks?domain={DOMAIN}&access_token="))).header("X-Access-Token", "");
    let r = r.send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(r.json::<Value>().await.unwrap()["info"], "Invalid token");
}

/// The admin UI's hook pages (webitel/web-client `src/modules/hooks/hookModel.js`), request for
/// request: its headers, its trailing slashes and `&`, the body its `parseHookToRequest` builds,
/// and the fields it reads back.
async fn the_admin_ui_hook_pages_round_trip(b: Backend) {
    let s = TestServer::start(b).await;
    let admin = s.token(switchhook::auth::Role::Admin, DOMAIN).await;
    let send = |method: &str, path: String, body: Option<Value>| {
        let mut req = s.http.request(method.parse().unwrap(), s.url(&path));
        req = req.header("x-key", "4d2a7c5e-1f0b-4c8e-9a63-2b7d9e0f4a11").header("x-access-token", &admin);
        if let Some(body) = body {
            req = req.header("Content-Type", "application/json;charset=utf-8").body(body.to_string());
        }
        async move {
            let r = req.send().await.unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        }
    };
    let form = |description: &str, delay: Value| {
        json!({"event": "CHANNEL_HANGUP_COMPLETE", "delay": delay, "enable": true, "description": description,
            "action": {"type": "web", "method": "POST", "url": "https://crm.example.com/calls"},
            "customBody": true, "rawBody": "{\"uuid\": \"${Unique-ID}\"}",
            "auth": {"headers": {}, "map": {}, "enabled": false}, "map": {}, "filter": {}, "fields": [],
            "headers": {"X-Call": "${Unique-ID}"}})
    };
    let (status, v) = send("POST", format!("/api/v2/hooks/?domain={DOMAIN}"), Some(form("calls", Value::Null))).await;
    assert_eq!(status, 200, "{v}");
    let id = v["data"]["insertedIds"][0].as_str().unwrap().to_owned();
    let list = format!(
        "/api/v2/hooks/?domain={DOMAIN}&page=1&limit=5000&columns=_id,name,enable,event,action.type,description&"
    );
    let (status, v) = send("GET", list.clone(), None).await;
    assert_eq!(
        (status, &v["data"]),
        (
            200,
            &json!([{"_id": id, "event": "CHANNEL_HANGUP_COMPLETE", "enable": true,
        "description": "calls", "action": {"type": "web"}}])
        )
    );
    let item = format!("/api/v2/hooks/{id}/?domain={DOMAIN}");
    let (_, v) = send("GET", item.clone(), None).await;
    assert_eq!((&v["data"]["rawBody"], &v["data"]["delay"]), (&json!("{\"uuid\": \"${Unique-ID}\"}"), &json!(60)));
    let (status, v) = send("PUT", item.clone(), Some(form("calls, edited", v["data"]["delay"].clone()))).await;
    assert_eq!((status, &v["data"]), (200, &json!({"ok": 1, "n": 1, "nModified": 1})));
    let (_, v) = send("GET", item.clone(), None).await;
    assert_eq!(v["data"]["description"], "calls, edited");
    let (status, v) = send("DELETE", item.clone(), None).await;
    assert_eq!((status, &v["data"]), (200, &json!({"ok": 1, "n": 1})));
    let (status, v) = send("GET", item, None).await;
    assert_eq!((status, &v), (200, &json!({"status": "OK", "data": null})));
}

/// Saving a hook without editing it: the admin UI's Save on an untouched page, or a script that
/// puts back what it read. The original's update was MongoDB's `updateOne`, whose answer is
/// the server's: `n` the documents matched, `nModified` those that changed, 0 when the new
/// document equals the stored one. Scripts that sync hooks read `nModified` to tell.
async fn saving_an_unchanged_hook_modifies_nothing(b: Backend) {
    let s = TestServer::start(b).await;
    let mut body = common::seed_hook();
    body["secret"] = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".into();
    let id = s.create_hook(DOMAIN, body).await;
    let item = format!("/api/v2/hooks/{id}?domain={DOMAIN}");
    let (_, read) = s.call("GET", &item, Some(&s.root), None).await;
    let before = s.services.store.hook(DOMAIN, &id).await.unwrap().unwrap();
    // What was read, `_id`, `domain` and the masked secret included, and the seed body again.
    for unchanged in [read["data"].clone(), common::seed_hook()] {
        let (status, v) = s.call("PUT", &item, Some(&s.root), Some(unchanged)).await;
        assert_eq!((status, &v["data"]), (200, &json!({"ok": 1, "n": 1, "nModified": 0})), "{v}");
    }
    assert_eq!(s.services.store.hook(DOMAIN, &id).await.unwrap().unwrap(), before);
    let mut edited = read["data"].clone();
    edited["description"] = "edited".into();
    let (status, v) = s.call("PUT", &item, Some(&s.root), Some(edited)).await;
    assert_eq!((status, &v["data"]), (200, &json!({"ok": 1, "n": 1, "nModified": 1})), "{v}");
}

/// The original answered through Express's `res.json`, whose `Content-Type` names the charset.
/// Windows PowerShell 5.1's `Invoke-RestMethod` reads a body without one as ISO-8859-1, so the
/// seed document's own description, "Dialer’s member was complited", came back as "Dialerâ€™s".
/// The same on both stores, so on SQLite only.
#[tokio::test]
async fn every_answer_is_json_in_utf8_as_express_wrote_it() {
    let s = TestServer::start(Backend::Sqlite).await;
    let id = s.create_hook(DOMAIN, common::seed_hook()).await;
    let user = s.token(switchhook::auth::Role::User, DOMAIN).await;
    let item = format!("/api/v2/hooks/{id}?domain={DOMAIN}");
    for (method, path, token, status) in [
        ("GET", format!("/api/v2/hooks?domain={DOMAIN}"), Some(s.root.as_str()), 200),
        ("GET", item.clone(), Some(s.root.as_str()), 200),
        ("POST", format!("/api/v2/hooks?domain={DOMAIN}"), Some(s.root.as_str()), 400),
        ("GET", item.clone(), None, 401),
        ("DELETE", item.clone(), Some(user.as_str()), 403),
        ("GET", "/api/v2/nothing".to_owned(), None, 404),
        ("GET", "/health".to_owned(), None, 200),
        ("HEAD", "/health".to_owned(), None, 200),
    ] {
        let mut req = s.http.request(method.parse().unwrap(), s.url(&path));
        if let Some(token) = token {
            req = req.header("X-Access-Token", token);
        }
        let r = req.send().await.unwrap();
        assert_eq!(r.status(), status, "{method} {path}");
        assert_eq!(r.headers()["content-type"], "application/json; charset=utf-8", "{method} {path}");
    }
    let big = "x".repeat((1 << 20) + 10);
    let path = format!("/api/v2/hooks?domain={DOMAIN}");
    let r = s.http.post(s.url(&path)).header("X-Access-Token", &s.root).body(big).send().await.unwrap();
    assert_eq!(r.status(), 413);
    assert_eq!(r.headers()["content-type"], "application/json; charset=utf-8");
    // A preflight has no body, so no type.
    let preflight = s.http.request(reqwest::Method::OPTIONS, s.url(&path)).header("Origin", "http://a.example");
    let r = preflight.header("Access-Control-Request-Method", "GET").send().await.unwrap();
    assert_eq!((r.status().as_u16(), r.headers().get("content-type")), (200, None));
    let r = s.http.get(s.url(&item)).header("X-Access-Token", &s.root).send().await.unwrap();
    assert_eq!(r.json::<Value>().await.unwrap()["data"]["description"], "Dialer’s member was complited");
}

/// Operators' scripts read the answer's head as text (`curl -si … | grep 'Content-Type:'`, PHP's
/// `get_headers`, a `$headers['Content-Type']` lookup). The original, on Node's HTTP server, sent
/// header names as Express and its CORS middleware set them, `Content-Type`, not `content-type`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_names_go_out_in_the_case_the_original_sent_them() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let s = TestServer::start(Backend::Sqlite).await;
    let addr = s.base.trim_start_matches("http://").to_owned();
    let mut sock = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let head = format!(
        "GET /api/v2/hooks?domain={DOMAIN} HTTP/1.1\r\nHost: {addr}\r\nX-Access-Token: {}\r\n\
         Origin: http://admin.example.com\r\nConnection: close\r\n\r\n",
        s.root
    );
    sock.write_all(head.as_bytes()).await.unwrap();
    let mut answer = String::new();
    sock.read_to_string(&mut answer).await.unwrap();
    let (head, body) = answer.split_once("\r\n\r\n").unwrap();
    let names: Vec<&str> = head.lines().skip(1).filter_map(|l| l.split_once(':')).map(|(n, _)| n).collect();
    for name in ["Content-Type", "Content-Length", "Access-Control-Allow-Origin", "Date"] {
        assert!(names.contains(&name), "{name} not in {names:?}");
    }
    assert_eq!(body, r#"{"status":"OK","data":[]}"#);
}

/// A hook's `headers` (or its auth pre-request's) that set `Content-Length` or
/// `Transfer-Encoding` would go out as written, with a body of another length or framing: the
/// receiver reads a few bytes, takes the rest for a next request, and the attempt fails. The
/// body's framing is the client's to write, so such a header is a 400 naming it.
async fn framing_headers_in_a_hook_are_refused_by_name(b: Backend) {
    let s = TestServer::start(b).await;
    let with = |patch: Value| {
        let mut h = hook("CHANNEL_ANSWER", "https://r.example/h");
        for (k, v) in patch.as_object().unwrap() {
            h[k] = v.clone();
        }
        h
    };
    let cases = [
        (json!({"headers": {"Content-Length": "5"}}), "Bad request: headers.Content-Length"),
        (json!({"headers": {"transfer-encoding": "chunked"}}), "Bad request: headers.transfer-encoding"),
        (
            json!({"auth": {"enabled": true, "url": "https://a.example/", "headers": {"CONTENT-LENGTH": "0"}}}),
            "Bad request: auth.headers.CONTENT-LENGTH",
        ),
    ];
    let path = format!("/api/v2/hooks?domain={DOMAIN}");
    for (patch, prefix) in cases {
        let (status, v) = s.call("POST", &path, Some(&s.root), Some(with(patch.clone()))).await;
        assert_eq!(status, 400, "{patch}: {v}");
        let info = v["info"].as_str().unwrap();
        assert!(info.starts_with(prefix) && info.contains("body"), "{patch}: {info}");
    }
    // Other headers a receiver may want stay allowed.
    let ok = with(json!({"headers": {"Content-Type": "application/json", "Host": "crm.example", "X-Len": "5"}}));
    let (status, v) = s.call("POST", &path, Some(&s.root), Some(ok)).await;
    assert_eq!(status, 200, "{v}");
}

/// A token whose payload is signed as given, with the test server's secret.
fn signed(payload: &Value) -> String {
    let key = jsonwebtoken::EncodingKey::from_secret(common::TOKEN_SECRET.as_bytes()).unwrap();
    jsonwebtoken::encode(&jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256), payload, &key).unwrap()
}

/// The original compared `exp` to `Date.now()` as numbers, so a token minted by a script as
/// `time.time() * 1000 + ttl` (a fraction of a millisecond) worked: it is not `Invalid token`.
async fn a_fractional_exp_is_read_as_a_number(b: Backend) {
    let s = TestServer::start(b).await;
    let token = |exp: f64| signed(&json!({"id": "f1", "exp": exp, "d": DOMAIN, "t": "domain", "v": 2}));
    let path = format!("/api/v2/hooks?domain={DOMAIN}");
    let (status, v) = s.call("GET", &path, Some(&token(now_ms() as f64 + 60_000.25)), None).await;
    assert_eq!((status, &v["data"]), (200, &json!([])), "{v}");
    let (status, v) = s.call("GET", &path, Some(&token(now_ms() as f64 - 0.5)), None).await;
    assert_eq!((status, v["info"].as_str()), (401, Some("Token Expired")), "{v}");
}

/// A script that compresses its body (`Content-Encoding: gzip`) was told its JSON was not
/// valid at column 1. The body is not decompressed here, so the answer names the encoding.
async fn a_compressed_body_is_refused_by_its_encoding(b: Backend) {
    let s = TestServer::start(b).await;
    let gzip_magic = vec![0x1f, 0x8b, 0x08, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x03, 0xab, 0xae, 0x05, 0x00];
    // One header, a list in one header, or a second header after `identity`.
    let cases: [(&str, &[&str], &str); 4] = [
        ("/api/v2/hooks?domain=x", &["gzip"], "gzip"),
        ("/api/v2/events", &["br"], "br"),
        ("/api/v2/events", &["identity, deflate"], "deflate"),
        ("/api/v2/hooks?domain=x", &["identity", "gzip"], "gzip"),
    ];
    for (path, headers, encoding) in cases {
        let mut request =
            s.http.post(s.url(path)).header("X-Access-Token", &s.root).header("Content-Type", "application/json");
        for value in headers {
            request = request.header("Content-Encoding", *value);
        }
        let resp = request.body(gzip_magic.clone()).send().await.unwrap();
        let status = resp.status().as_u16();
        let v: Value = resp.json().await.unwrap();
        assert_eq!(status, 415, "{path}: {v}");
        let info = format!("Unsupported Content-Encoding \"{encoding}\": send the body uncompressed");
        assert_eq!(v, json!({"status": "error", "info": info, "code": 415}));
    }
    // `identity` is no encoding at all.
    let resp = s
        .http
        .post(s.url("/api/v2/hooks?domain=x"))
        .header("X-Access-Token", &s.root)
        .header("Content-Encoding", "identity")
        .json(&hook("CHANNEL_ANSWER", "https://r.example/h"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
}

/// MongoDB compared documents with their key order, so a replacement that only reorders
/// `headers` (sent in that order) or `filter` (checked in that order) was a modification and
/// was stored. Here it was answered `nModified: 0`, and the old order stayed.
async fn an_update_that_only_reorders_keys_is_stored(b: Backend) {
    let s = TestServer::start(b).await;
    let body = |headers: Value, filter: Value| {
        let mut h = hook("CHANNEL_ANSWER", "https://r.example/h");
        h["headers"] = headers;
        h["filter"] = filter;
        h
    };
    let (a, b2) = (json!({"operation": "==", "value": "1"}), json!({"operation": "==", "value": "2"}));
    let first = body(json!({"X-A": "1", "X-B": "2"}), json!({"a": a, "b": b2}));
    let id = s.create_hook(DOMAIN, first.clone()).await;
    let path = format!("/api/v2/hooks/{id}?domain={DOMAIN}");
    let reordered = body(json!({"X-B": "2", "X-A": "1"}), json!({"b": b2, "a": a}));
    let (status, v) = s.call("PUT", &path, Some(&s.root), Some(reordered)).await;
    assert_eq!((status, &v["data"]), (200, &json!({"ok": 1, "n": 1, "nModified": 1})), "{v}");
    let (_, v) = s.call("GET", &path, Some(&s.root), None).await;
    let keys = |field: &str| v["data"][field].as_object().unwrap().keys().cloned().collect::<Vec<_>>();
    assert_eq!((keys("headers"), keys("filter")), (vec!["X-B".to_owned(), "X-A".into()], vec!["b".into(), "a".into()]));
    // The same order again changes nothing.
    let again = body(json!({"X-B": "2", "X-A": "1"}), json!({"b": b2, "a": a}));
    let (_, v) = s.call("PUT", &path, Some(&s.root), Some(again)).await;
    assert_eq!(v["data"], json!({"ok": 1, "n": 1, "nModified": 0}));
}

/// Windows PowerShell 5.1 writes files in UTF-16 with a byte order mark (`ConvertTo-Json $hook >
/// hook.json`, `Out-File`), which `Invoke-RestMethod -InFile` and `curl.exe --data-binary @hook.json`
/// send as they are; its `-Body` with `-ContentType 'application/json; charset=utf-16'` sends
/// UTF-16 without one. The original's body parser read a body in the charset its Content-Type
/// named. Such a body was answered "not valid JSON at line 1 column 1". The same on both
/// stores, so on SQLite only.
#[tokio::test]
async fn a_body_in_utf16_or_in_the_charset_it_names_is_read() {
    let s = TestServer::start(Backend::Sqlite).await;
    let send = |path: &'static str, content_type: &str, body: Vec<u8>| {
        let req = s.http.post(s.url(path)).header("X-Access-Token", &s.root).header("Content-Type", content_type);
        async move {
            let r = req.body(body).send().await.unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        }
    };
    let utf16 = |text: &str, bom: bool, big_endian: bool| -> Vec<u8> {
        let text = if bom { format!("\u{FEFF}{text}") } else { text.to_owned() };
        text.encode_utf16().flat_map(|u| if big_endian { u.to_be_bytes() } else { u.to_le_bytes() }).collect()
    };
    let mut body = common::seed_hook();
    body["description"] = "Dialer’s member ☎ was complited".into();
    let text = body.to_string();
    let hooks = "/api/v2/hooks?domain=demo.webitel.com";
    for (content_type, bytes) in [
        ("application/json", utf16(&text, true, false)),
        ("application/json", utf16(&text, true, true)),
        ("application/json; charset=utf-16", utf16(&text, false, false)),
        ("application/json; charset=\"UTF-16BE\"", utf16(&text, false, true)),
        ("application/json;charset=utf-16le", utf16(&text, true, false)),
        // No byte order mark: JSON's first character tells the byte order.
        ("application/json; charset=utf-16", utf16(&text, false, true)),
    ] {
        let (status, v) = send(hooks, content_type, bytes).await;
        assert_eq!(status, 200, "{content_type}: {v}");
        assert_eq!(v["data"]["ops"][0]["description"], body["description"], "{content_type}");
    }
    // ISO-8859-1, named: one byte a character.
    let mut cafe = hook("CHANNEL_ANSWER", "https://r.example/h");
    cafe["description"] = "Café".into();
    let latin1: Vec<u8> = cafe.to_string().chars().map(|c| c as u8).collect();
    let (status, v) = send(hooks, "application/json; charset=ISO-8859-1", latin1).await;
    assert_eq!((status, &v["data"]["ops"][0]["description"]), (200, &json!("Café")), "{v}");
    // A UTF-8 body labelled Latin-1 keeps its text; so does one labelled with a charset not read
    // here.
    for label in ["ISO-8859-1", "windows-1251"] {
        let (status, v) = send(hooks, &format!("application/json; charset={label}"), cafe.to_string().into()).await;
        assert_eq!((status, &v["data"]["ops"][0]["description"]), (200, &json!("Café")), "{label}: {v}");
    }
    // The label ISO-8859-1 is read as windows-1252, as browsers read it: 0x92 is ’.
    let mut quote = hook("CHANNEL_ANSWER", "https://r.example/h");
    quote["description"] = "Dialer\u{92}s €".into();
    let cp1252: Vec<u8> = quote.to_string().chars().map(|c| if c == '€' { 0x80 } else { c as u8 }).collect();
    for label in ["ISO-8859-1", "windows-1252"] {
        let (status, v) = send(hooks, &format!("application/json; charset={label}"), cp1252.clone()).await;
        assert_eq!((status, &v["data"]["ops"][0]["description"]), (200, &json!("Dialer’s €")), "{label}: {v}");
    }
    // Not UTF-8, in a charset not read here: 415 naming it.
    let (status, v) = send(hooks, "application/json; charset=windows-1251", cp1252).await;
    assert_eq!(status, 415, "{v}");
    assert_eq!(v["info"], "Unsupported charset \"windows-1251\": send UTF-8, UTF-16 or ISO-8859-1");
    // Events too.
    let event = json!({"Event-Name": "CHANNEL_ANSWER", "variable_domain_name": "demo.webitel.com"}).to_string();
    let (status, v) = send("/api/v2/events", "application/json", utf16(&event, true, false)).await;
    assert_eq!((status, &v["data"]["accepted"]), (200, &json!(1)), "{v}");
    // What is not UTF-16 after all is still a 400.
    let mut odd = utf16(&text, true, false);
    odd.push(b'}');
    let (status, v) = send(hooks, "application/json", odd).await;
    assert_eq!(status, 400, "{v}");
    assert!(v["info"].as_str().unwrap().starts_with("Bad request: body is not valid JSON"), "{v}");
}

/// Windows PowerShell 5.1's `Invoke-RestMethod -Body $json` with no charset sends Latin-1. Such
/// a body is not UTF-8, and the answer says so, and where, instead of "invalid unicode code
/// point at line 1 column 40".
#[tokio::test]
async fn a_body_that_is_not_utf8_is_told_so() {
    let s = TestServer::start(Backend::Sqlite).await;
    let mut cafe = hook("CHANNEL_ANSWER", "https://r.example/h");
    cafe["description"] = "Café".into();
    let text = cafe.to_string();
    let at = text.find('é').unwrap() + 1;
    let latin1: Vec<u8> = text.chars().map(|c| c as u8).collect();
    let event = json!({"Event-Name": "CHANNEL_ANSWER", "variable_domain_name": "demo.webitel.com", "x": "é"});
    let event_at = event.to_string().find('é').unwrap() + 1;
    let event: Vec<u8> = event.to_string().chars().map(|c| c as u8).collect();
    let batch = [b"[".as_slice(), &event, b"]"].concat();
    for (path, body, at) in [
        ("/api/v2/hooks?domain=demo.webitel.com", latin1, at),
        ("/api/v2/events", event, event_at),
        ("/api/v2/events", batch, event_at + 1),
    ] {
        let r = s.http.post(s.url(path)).header("X-Access-Token", &s.root).body(body).send().await.unwrap();
        assert_eq!(r.status(), 400, "{path}");
        let v: Value = r.json().await.unwrap();
        let want = format!(
            "Bad request: body is not valid JSON: byte {at} is not UTF-8; send UTF-8, or name the body's charset in \
             Content-Type"
        );
        assert_eq!(v["info"], json!(want), "{path}");
    }
}
