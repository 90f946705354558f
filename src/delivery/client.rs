//! Sending one attempt: the auth pre-request when the hook has one, the signed webhook
//! request, and what came back. One keep-alive HTTP client serves every hook.

use std::borrow::Cow;
use std::collections::HashMap;
use std::time::{Duration, Instant};

use http::{HeaderMap, HeaderName};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use super::{destination, sign};
use crate::event::Event;
use crate::hook::payload::{Request, attempt_headers, client_headers, header_safe, header_value, with_query};
use crate::hook::template::{Lookup, MAX_RENDERED, Template};
use crate::hook::{CompiledAuth, CompiledHook};
use crate::store::LeasedDelivery;

/// The logged error of an attempt that shutdown interrupted before its receiver answered.
const INTERRUPTED: &str = "interrupted: the service shut down before the receiver answered; it is sent again";

/// How much of a response body the delivery log keeps.
pub const RESPONSE_EXCERPT: usize = 1024;
/// How much of a response is read before the connection is given back (larger bodies are
/// cut off, which costs the connection but bounds memory).
const RESPONSE_READ_LIMIT: usize = 64 * 1024;

/// What one attempt produced.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AttemptResult {
    pub status: Option<u16>,
    pub retry_after: Option<Duration>,
    pub duration: Duration,
    pub error: Option<String>,
    pub response: Option<String>,
}

impl AttemptResult {
    pub fn success(&self) -> bool {
        self.status.is_some_and(|s| (200..300).contains(&s))
    }

    pub fn failed(error: impl Into<String>) -> Self {
        AttemptResult { error: Some(error.into()), ..Default::default() }
    }
}

impl From<String> for AttemptResult {
    fn from(error: String) -> Self {
        AttemptResult::failed(error)
    }
}

/// The shared HTTP client.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    /// `delivery.block_private_networks`: see [`destination`].
    public_only: bool,
}

impl Client {
    pub fn new(public_only: bool) -> Self {
        let mut builder = reqwest::Client::builder();
        if public_only {
            // A proxy would reach names this resolver never sees; and the proxy's own name,
            // resolved here, is usually private.
            builder = builder.dns_resolver(destination::PublicOnly).no_proxy();
        }
        let http = builder
            .redirect(reqwest::redirect::Policy::none())
            .pool_idle_timeout(Duration::from_secs(60))
            .pool_max_idle_per_host(256)
            .tcp_nodelay(true)
            .default_headers(client_headers())
            .build()
            .expect("the HTTP client builds (is a crypto provider installed?)");
        Client { http, public_only }
    }

    /// A request to `url`, unless its address is one `delivery.block_private_networks` refuses
    /// (names are refused as they resolve).
    fn request(&self, method: http::Method, url: &str) -> Result<reqwest::RequestBuilder, String> {
        if self.public_only {
            destination::check_literal(&url.parse().map_err(|e| format!("bad URL: {e}"))?)?;
        }
        Ok(self.http.request(method, url))
    }

    /// Sends `delivery` for `hook` once, with `body`, its request's body, taken from it: the
    /// request owns it, which spares a copy of every body. `now_secs` stamps the signature.
    /// `Err`, the interrupted attempt, when `interrupt` is cancelled before the receiver
    /// answers (shutdown); once it has, its status decides, and an interrupt only cuts its
    /// body short.
    pub async fn attempt(
        &self,
        hook: &CompiledHook,
        delivery: &LeasedDelivery,
        body: String,
        now_secs: i64,
        interrupt: &CancellationToken,
    ) -> Result<AttemptResult, AttemptResult> {
        let started = Instant::now();
        let prepared = tokio::select! {
            biased;
            prepared = self.prepare(hook, delivery, body, now_secs) => Some(prepared),
            () = interrupt.cancelled() => None,
        };
        let answered = match prepared {
            Some(Ok(request)) => self.send(request, hook.timeout_ms, interrupt).await,
            Some(Err(failed)) => Some(failed),
            None => None,
        };
        let duration = started.elapsed();
        match answered {
            Some(result) => Ok(AttemptResult { duration, ..result }),
            None => Err(AttemptResult { duration, ..AttemptResult::failed(INTERRUPTED) }),
        }
    }

    /// The webhook request: the [attempt headers](attempt_headers) of the stored headers (or
    /// of those rendered now with the auth answer), the auth cookie, signature headers, body.
    /// An attempt that fails before the webhook is sent (the auth pre-request did) is the error.
    async fn prepare(
        &self,
        hook: &CompiledHook,
        d: &LeasedDelivery,
        body: String,
        now_secs: i64,
    ) -> Result<reqwest::Request, AttemptResult> {
        let auth_cookie;
        let pairs = match (&hook.auth, &d.event) {
            (Some(auth), Some(event)) => {
                let event = Event::from_json(event.as_bytes()).map_err(|e| format!("stored event: {e}"))?;
                let answer = self.authenticate(auth, &event, hook.timeout_ms).await?;
                let vars = WithAuth { vars: &answer.vars, cookies: &answer.cookies, event: &event };
                auth_cookie = answer.cookie;
                Cow::Owned(hook.render_headers(&vars))
            }
            _ => {
                auth_cookie = None;
                hook.current_headers(&d.request)
            }
        };
        let mut headers = attempt_headers(&pairs, &d.id)?;
        if let Some(cookie) = auth_cookie {
            // One `Cookie` header (RFC 6265 allows no more): the hook's own cookies, then the
            // auth server's.
            let own =
                headers.get_all(http::header::COOKIE).iter().filter_map(|v| v.to_str().ok()).filter(|v| !v.is_empty());
            let cookies: Vec<&str> = own.chain([cookie.as_str()]).collect();
            let value = header_value(&cookies.join("; "))?;
            headers.insert(http::header::COOKIE, value);
        }
        if let Some(key) = &hook.signing_key {
            headers.insert("webhook-timestamp", header_value(&now_secs.to_string())?);
            let signature = sign::signature(key, &d.id, now_secs, body.as_bytes());
            headers.insert("webhook-signature", header_value(&signature)?);
        }
        let mut builder = self.request(d.request.method.clone(), target(hook, &d.request))?.headers(headers);
        if !body.is_empty() {
            builder = builder.body(body);
        }
        Ok(builder.build().map_err(|e| format!("cannot build the request: {}", e.without_url()))?)
    }

    /// Sends `request` within `timeout_ms`. The status decides the outcome: a 2xx whose body
    /// then stalls or breaks is delivered (the receiver has taken it; failing it would send it
    /// again), with what arrived of the body as its excerpt. `None` when `interrupt` comes
    /// before the status.
    async fn send(
        &self,
        request: reqwest::Request,
        timeout_ms: u32,
        interrupt: &CancellationToken,
    ) -> Option<AttemptResult> {
        let timed_out = || format!("timed out after {timeout_ms} ms");
        let deadline = tokio::time::Instant::now() + Duration::from_millis(u64::from(timeout_ms));
        let sent = tokio::select! {
            biased;
            sent = tokio::time::timeout_at(deadline, self.http.execute(request)) => sent,
            () = interrupt.cancelled() => return None,
        };
        let response = match sent {
            Err(_) => return Some(AttemptResult::failed(timed_out())),
            Ok(Err(e)) => return Some(AttemptResult::failed(describe(&e))),
            Ok(Ok(response)) => response,
        };
        let status = response.status().as_u16();
        let retry_after = retry_after(response.headers());
        let moved = response.status().is_redirection().then(|| redirect_target(&response)).flatten();
        let mut body = Vec::new();
        let read = tokio::select! {
            biased;
            read = tokio::time::timeout_at(deadline, read_limited(response, RESPONSE_READ_LIMIT, &mut body)) => Some(read),
            () = interrupt.cancelled() => None,
        };
        let trouble = match read {
            Some(Ok(Ok(()))) => None,
            Some(Ok(Err(e))) => Some(describe(&e)),
            Some(Err(_)) => Some(timed_out()),
            None => Some("the service shut down".to_owned()),
        };
        let error = match trouble {
            _ if (200..300).contains(&status) => None,
            None => Some(match moved {
                Some(to) => format!("answered {status}, a redirect to {to} (redirects are not followed)"),
                None => format!("answered {status}"),
            }),
            Some(trouble) => Some(format!("answered {status}, then the body failed: {trouble}")),
        };
        Some(AttemptResult {
            status: Some(status),
            retry_after,
            error,
            response: Some(excerpt(&body)),
            duration: Duration::ZERO,
        })
    }

    /// Runs the auth pre-request and collects its variables. A failure carries the auth
    /// server's `Retry-After`, honoured as a receiver's is. When the hook's headers read the
    /// answer's fields ([`CompiledAuth::reads_body`]), a JSON answer too large to read fails
    /// the attempt.
    async fn authenticate(
        &self,
        auth: &CompiledAuth,
        event: &Event,
        timeout_ms: u32,
    ) -> Result<AuthAnswer, AttemptResult> {
        // The auth request's templates share one budget, as a webhook's do.
        let mut rendered = 0;
        let mut render = |template: &Template| {
            let value = template.render_within(event, (MAX_RENDERED + 1).saturating_sub(rendered));
            rendered += value.len();
            value
        };
        let params: serde_json::Map<String, Value> =
            auth.map.iter().map(|(k, t)| (k.clone(), Value::String(render(t)))).collect();
        let headers: Vec<(&HeaderName, String)> =
            auth.headers.iter().map(|(name, t)| (name, header_safe(render(t)))).collect();
        if rendered > MAX_RENDERED {
            let error = format!("the auth request's map and headers render to more than {} KiB", MAX_RENDERED >> 10);
            return Err(error.into());
        }
        let url = match auth.method == http::Method::GET {
            true => with_query(&auth.url, &params).map_err(|e| format!("the auth request's {e}"))?,
            false => auth.url.to_string(),
        };
        let mut builder = self.request(auth.method.clone(), &url).map_err(|e| format!("auth request: {e}"))?;
        for (name, value) in &headers {
            builder = builder.header(*name, header_value(value)?);
        }
        if auth.method != http::Method::GET {
            builder = builder.json(&params);
        }
        let timeout = Duration::from_millis(u64::from(timeout_ms));
        let response = builder.timeout(timeout).send().await.map_err(|e| format!("auth request: {}", describe(&e)))?;
        // SPEC §4: anything but 200 fails the attempt.
        let status = response.status();
        if status != http::StatusCode::OK {
            let retry_after = retry_after(response.headers());
            // What the auth server said, for the delivery log (its own body, not the webhook's).
            let mut said = Vec::new();
            let _ = read_limited(response, RESPONSE_EXCERPT, &mut said).await;
            let error = match excerpt(&said).trim() {
                "" => format!("auth request answered {}", status.as_u16()),
                said => format!("auth request answered {}: {said}", status.as_u16()),
            };
            return Err(AttemptResult { retry_after, ..AttemptResult::failed(error) });
        }
        let mut vars = HashMap::new();
        for name in response.headers().keys() {
            let values: Vec<&str> = response.headers().get_all(name).iter().filter_map(|v| v.to_str().ok()).collect();
            // A header answered more than once is one variable, as in the original: its
            // `Set-Cookie`s joined by `;`, other headers by `, ` (as Node.js joined them).
            let separator = if name == http::header::SET_COOKIE { ";" } else { ", " };
            if !values.is_empty() {
                vars.insert(format!("auth:header:{}", name.as_str()), values.join(separator));
            }
        }
        let cookie = auth.cookie.then(|| cookie_header(response.headers())).flatten();
        let cookies = cookie_values(response.headers());
        // One byte past the limit tells a cut-off answer from one that fits.
        let mut body = Vec::new();
        read_limited(response, RESPONSE_READ_LIMIT + 1, &mut body)
            .await
            .map_err(|e| format!("auth answer: {}", describe(&e)))?;
        if auth.reads_body && body.len() > RESPONSE_READ_LIMIT && body.trim_ascii_start().starts_with(b"{") {
            let error = format!(
                "the auth answer is JSON larger than {} KiB, whose fields cannot be read",
                RESPONSE_READ_LIMIT >> 10
            );
            return Err(error.into());
        }
        if let Ok(Value::Object(fields)) = serde_json::from_slice::<Value>(&body) {
            for (key, value) in fields {
                let text = match value {
                    Value::String(s) => s,
                    Value::Number(_) | Value::Bool(_) => value.to_string(),
                    _ => continue,
                };
                vars.insert(format!("auth:body:{key}"), text);
            }
        }
        Ok(AuthAnswer { vars, cookies, cookie })
    }
}

struct AuthAnswer {
    vars: HashMap<String, String>,
    /// Each cookie the auth server set, by its name: its value.
    cookies: HashMap<String, String>,
    cookie: Option<String>,
}

/// Where an attempt goes: the hook's URL as it is now, so that correcting it rescues the
/// deliveries waiting for a retry. A GET goes where it was rendered to: its query mixes the
/// event's data with the URL's own parameters (a key, say), which cannot be told apart, and
/// must not go to another address.
fn target<'a>(hook: &'a CompiledHook, request: &'a Request) -> &'a str {
    match request.method == http::Method::GET {
        true => &request.url,
        false => hook.url.as_str(),
    }
}

/// Header templates see `auth:body:<key>` and `auth:header:<name>` before the event. As in
/// the original, `auth:header:<name>` is also the value of the cookie of that name (names
/// are case-sensitive) when the answer has no header of that name.
struct WithAuth<'a> {
    vars: &'a HashMap<String, String>,
    cookies: &'a HashMap<String, String>,
    event: &'a Event,
}

impl Lookup for WithAuth<'_> {
    fn resolve(&self, name: &str, path: &[String]) -> Option<Value> {
        if let Some(header) = name.strip_prefix("auth:header:") {
            let value = self.vars.get(&format!("auth:header:{}", header.to_ascii_lowercase()));
            return value.or_else(|| self.cookies.get(header)).cloned().map(Value::String);
        }
        if name.starts_with("auth:") {
            return self.vars.get(name).cloned().map(Value::String);
        }
        self.event.resolve(name, path)
    }
}

/// Each `Set-Cookie`'s `name=value`, without its attributes.
fn set_cookies(headers: &HeaderMap) -> impl Iterator<Item = &str> {
    let values = headers.get_all(http::header::SET_COOKIE).iter().filter_map(|v| v.to_str().ok());
    values.filter_map(|v| v.split(';').next()).map(str::trim).filter(|p| !p.is_empty())
}

/// `Set-Cookie` answers as one `Cookie` header: each cookie's `name=value`.
fn cookie_header(headers: &HeaderMap) -> Option<String> {
    let pairs: Vec<&str> = set_cookies(headers).collect();
    (!pairs.is_empty()).then(|| pairs.join("; "))
}

/// Each `Set-Cookie`'s `name=value` as a name and a value, a later cookie of a name replacing
/// an earlier one, as the original read them.
fn cookie_values(headers: &HeaderMap) -> HashMap<String, String> {
    let pairs = set_cookies(headers).filter_map(|p| p.split_once('='));
    pairs
        .map(|(name, value)| (name.trim().to_owned(), value.trim().to_owned()))
        .filter(|(n, _)| !n.is_empty())
        .collect()
}

/// Where a 3xx answer's `Location` points, resolved against the request's URL, for the
/// operator to fix `action.url` by: without its query, fragment and user info, which may
/// carry credentials.
fn redirect_target(response: &reqwest::Response) -> Option<url::Url> {
    let location = response.headers().get(http::header::LOCATION)?.to_str().ok()?;
    let mut to = response.url().join(location).ok()?;
    to.set_query(None);
    to.set_fragment(None);
    let _ = to.set_username("");
    let _ = to.set_password(None);
    // Bounded as the response excerpt is.
    (to.as_str().len() <= RESPONSE_EXCERPT).then_some(to)
}

/// `Retry-After` as seconds (digits only, RFC 9110 §10.2.3: `+5` is not a delay) or an HTTP
/// date. Seconds too many for a `u64` saturate, as RFC 9111 §1.2.2 reads cache delta-seconds.
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(http::header::RETRY_AFTER)?.to_str().ok()?.trim();
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        return Some(Duration::from_secs(value.parse::<u64>().unwrap_or(u64::MAX)));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(std::time::SystemTime::now()).unwrap_or(Duration::ZERO))
}

/// Reads up to `limit` bytes of `response` into `body`, which keeps what arrived if it fails.
async fn read_limited(mut response: reqwest::Response, limit: usize, body: &mut Vec<u8>) -> Result<(), reqwest::Error> {
    while let Some(chunk) = response.chunk().await? {
        let room = limit.saturating_sub(body.len());
        body.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if body.len() >= limit {
            break;
        }
    }
    Ok(())
}

/// The first KiB of `body` as text. A UTF-8 character cut at the end (by this cut, or by the
/// read) is left out; bytes that are not UTF-8 (a page in a legacy charset) become
/// replacement characters.
fn excerpt(body: &[u8]) -> String {
    let mut end = body.len().min(RESPONSE_EXCERPT);
    if let Err(e) = std::str::from_utf8(&body[..end])
        && e.error_len().is_none()
    {
        end = e.valid_up_to();
    }
    String::from_utf8_lossy(&body[..end]).into_owned()
}

/// An error without the URL (it may carry credentials in its query).
fn describe(e: &reqwest::Error) -> String {
    let kind = if e.is_connect() {
        "connection failed"
    } else if e.is_timeout() {
        "timed out"
    } else if e.is_body() || e.is_decode() {
        "response body failed"
    } else {
        "request failed"
    };
    let mut text = kind.to_owned();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn retry_after_reads_seconds_and_dates() {
        let mut h = HeaderMap::new();
        h.insert(http::header::RETRY_AFTER, HeaderValue::from_static("7"));
        assert_eq!(retry_after(&h), Some(Duration::from_secs(7)));
        h.insert(http::header::RETRY_AFTER, HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT"));
        assert_eq!(retry_after(&h), Some(Duration::ZERO));
        h.insert(http::header::RETRY_AFTER, HeaderValue::from_static("soon"));
        assert_eq!(retry_after(&h), None);
    }

    /// Seconds past the largest integer held are read as a very long wait (the caller caps it
    /// at 24 h), as RFC 9111 §1.2.2 reads cache delta-seconds; they were ignored, which retried
    /// after the hook's `delay`. Only digits are seconds (RFC 9110 §10.2.3).
    #[test]
    fn retry_after_past_u64_is_a_long_wait() {
        let mut h = HeaderMap::new();
        h.insert(http::header::RETRY_AFTER, HeaderValue::from_static("99999999999999999999999"));
        assert_eq!(retry_after(&h), Some(Duration::from_secs(u64::MAX)));
        for not_seconds in ["-5", "+5", "5s"] {
            h.insert(http::header::RETRY_AFTER, HeaderValue::from_static(not_seconds));
            assert_eq!(retry_after(&h), None, "{not_seconds}");
        }
    }

    #[test]
    fn cookies_become_one_cookie_header() {
        let mut h = HeaderMap::new();
        h.append(http::header::SET_COOKIE, HeaderValue::from_static("sid=abc; Path=/; HttpOnly"));
        h.append(http::header::SET_COOKIE, HeaderValue::from_static("lang=en"));
        assert_eq!(cookie_header(&h).as_deref(), Some("sid=abc; lang=en"));
        assert_eq!(cookie_header(&HeaderMap::new()), None);
    }

    #[test]
    fn cookie_values_are_read_by_name() {
        let mut h = HeaderMap::new();
        h.append(http::header::SET_COOKIE, HeaderValue::from_static("sid=abc=1; Path=/"));
        h.append(http::header::SET_COOKIE, HeaderValue::from_static("flag; Secure"));
        h.append(http::header::SET_COOKIE, HeaderValue::from_static("lang=en"));
        h.append(http::header::SET_COOKIE, HeaderValue::from_static("lang=uk"));
        let want = [("sid", "abc=1"), ("lang", "uk")];
        assert_eq!(cookie_values(&h), want.map(|(n, v)| (n.to_owned(), v.to_owned())).into());
    }

    #[test]
    fn excerpts_stop_at_1_kib_on_a_char_boundary() {
        let body = "é".repeat(600);
        let e = excerpt(body.as_bytes());
        assert!(e.len() <= RESPONSE_EXCERPT && e.chars().all(|c| c == 'é'), "{}", e.len());
        assert_eq!(excerpt(b"short"), "short");
        // An auth answer is read 1 KiB at most: the read may split its last character too.
        let mut read = "é".repeat(511).into_bytes();
        read.extend_from_slice(b"a\xc3");
        assert_eq!(excerpt(&read), "é".repeat(511) + "a");
    }

    /// A long error page in a legacy charset (Latin-1, Windows-1251) keeps its first KiB,
    /// with replacement characters, rather than only the text before its first such byte.
    #[test]
    fn a_long_body_not_in_utf8_keeps_its_first_kib() {
        let body = b"caf\xe9 ".repeat(600);
        let e = excerpt(&body);
        assert_eq!(e, String::from_utf8_lossy(&body[..RESPONSE_EXCERPT]));
        assert!(e.starts_with("caf\u{fffd} caf\u{fffd} "), "{e}");
    }
}
