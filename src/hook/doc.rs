//! The hook document as the API stores and returns it, and its validation.
//!
//! A request body is read key by key from the whitelist (unknown keys and `_id` are dropped),
//! each value is checked with an error that names the field, and absent keys take the
//! defaults of the original engine (on update, only the original's own keys do: see
//! [`HookDoc::updated`]). The result is also compiled once ([`super::CompiledHook`])
//! so a document that is stored is one that can run.

use indexmap::IndexMap;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::CompiledHook;
use super::filter::{self, Filter};
use super::template::{Syntax, Template};

/// What API reads show instead of a hook's `secret`; sending it back keeps the stored secret.
pub const SECRET_MASK: &str = "********";

/// The keys the original engine's update wrote: it replaced the stored document with them,
/// so a PUT that leaves one out resets it to its create default. The other keys (`retries`,
/// `delay` and our extensions) are unknown to its clients and keep their stored values, so a
/// legacy admin client editing a hook does not wipe its signing secret or retry policy.
pub const REPLACED_ON_UPDATE: [&str; 11] =
    ["event", "enable", "description", "action", "fields", "map", "filter", "headers", "auth", "customBody", "rawBody"];

/// HTTP methods a hook (or its auth pre-request) may use.
pub const METHODS: [&str; 5] = ["GET", "POST", "PUT", "PATCH", "DELETE"];

/// Bounds on hook settings that come from configuration.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_retries: u32,
}

/// A bad hook document. The message is what the API returns after `Bad request: `.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DocError {
    #[error("event name is required.")]
    EventRequired,
    #[error("action options is required.")]
    ActionRequired,
    #[error("{field} {problem}")]
    Field { field: String, problem: String },
}

fn bad(field: impl Into<String>, problem: impl Into<String>) -> DocError {
    DocError::Field { field: field.into(), problem: problem.into() }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Action {
    #[serde(rename = "type")]
    pub kind: String,
    pub method: String,
    pub url: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FilterSpec {
    pub operation: String,
    pub value: Value,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Auth {
    pub headers: IndexMap<String, String>,
    pub map: IndexMap<String, String>,
    pub enabled: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cookie: Option<bool>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backoff {
    Fixed,
    Exponential,
}

/// A stored hook document, in the original engine's field order, plus our extensions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HookDoc {
    pub domain: String,
    pub event: String,
    pub enable: bool,
    pub description: String,
    pub action: Action,
    pub fields: Vec<String>,
    pub map: IndexMap<String, String>,
    pub filter: IndexMap<String, FilterSpec>,
    pub headers: IndexMap<String, String>,
    pub auth: Auth,
    pub custom_body: bool,
    pub raw_body: String,
    pub retries: u32,
    pub delay: u32,
    /// Standard Webhooks signing secret; write-only through the API.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    /// Per-attempt timeout in milliseconds (default 10 s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<u32>,
    /// Deliver one call's events (by `Unique-ID`) strictly in order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ordered: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff: Option<Backoff>,
}

impl HookDoc {
    /// Validates a create body for `domain`.
    pub fn from_body(body: &Value, domain: &str, limits: Limits) -> Result<Self, DocError> {
        let map = body_object(body)?;
        check_required(map)?;
        Self::parse(map, domain, limits)
    }

    /// Validates an update body (PUT) against the stored document. The original engine
    /// replaced the whole document, so a key of [`REPLACED_ON_UPDATE`] the body leaves out
    /// takes its create default (leaving `filter` out clears the filter). Every other key
    /// keeps its stored value when left out, and a masked secret keeps the stored secret.
    pub fn updated(&self, body: &Value, limits: Limits) -> Result<Self, DocError> {
        let changes = body_object(body)?;
        check_required(changes)?;
        let Value::Object(mut doc) = serde_json::to_value(self).expect("a hook serializes") else {
            unreachable!("a hook serializes to an object")
        };
        doc.retain(|key, _| !REPLACED_ON_UPDATE.contains(&key.as_str()));
        for (key, value) in changes {
            if key == "secret" && value.as_str() == Some(SECRET_MASK) {
                continue;
            }
            doc.insert(key.clone(), value.clone());
        }
        Self::parse(&doc, &self.domain, limits)
    }

    fn parse(map: &Map<String, Value>, domain: &str, limits: Limits) -> Result<Self, DocError> {
        let doc = HookDoc {
            domain: domain.to_owned(),
            event: event_name(map)?,
            enable: boolean(map, "enable")?.unwrap_or(true),
            description: string(map, "description")?.unwrap_or_default(),
            action: action(map)?,
            fields: fields(map)?,
            map: string_map(map, "map")?,
            filter: filters(map)?,
            headers: request_headers(map, "headers")?,
            auth: auth(map)?,
            custom_body: boolean(map, "customBody")?.unwrap_or(false),
            raw_body: raw_body(map)?,
            retries: integer(map, "retries", 0, limits.max_retries)?.unwrap_or(0),
            delay: integer(map, "delay", 1, 86_400)?.unwrap_or(60),
            secret: secret(map)?,
            timeout: integer(map, "timeout", 1, 300_000)?,
            ordered: boolean(map, "ordered")?,
            backoff: backoff(map)?,
        };
        if doc.secret.is_some() && doc.action.method.eq_ignore_ascii_case("GET") {
            // Standard Webhooks signs the body; a GET carries the event in its query string.
            return Err(bad(
                "secret",
                "cannot sign a GET hook: its data goes in the query string, which a signature does not cover; use POST, PUT, PATCH or DELETE, or remove the secret with \"secret\": \"\"",
            ));
        }
        doc.compile()?;
        Ok(doc)
    }

    /// Compiles the document: filters, templates, URL and method.
    pub fn compile(&self) -> Result<CompiledHook, DocError> {
        CompiledHook::new(self)
    }

    /// The document as API reads return it: `_id` first, the secret masked.
    pub fn to_api_json(&self, id: &str) -> Value {
        let mut out = Map::new();
        out.insert("_id".into(), id.into());
        self.write_fields(&mut out);
        Value::Object(out)
    }

    /// The document as the create result's `ops` shows it: `_id` last, as MongoDB did.
    pub fn to_insert_json(&self, id: &str) -> Value {
        let mut out = Map::new();
        self.write_fields(&mut out);
        out.insert("_id".into(), id.into());
        Value::Object(out)
    }

    fn write_fields(&self, out: &mut Map<String, Value>) {
        let Value::Object(fields) = serde_json::to_value(self).expect("a hook serializes") else {
            unreachable!("a hook serializes to an object")
        };
        for (key, value) in fields {
            let value = if key == "secret" { SECRET_MASK.into() } else { value };
            out.insert(key, value);
        }
    }
}

fn body_object(body: &Value) -> Result<&Map<String, Value>, DocError> {
    body.as_object().ok_or_else(|| bad("body", "must be a JSON object"))
}

/// The two checks whose messages existing clients match on, done on the raw body.
fn check_required(map: &Map<String, Value>) -> Result<(), DocError> {
    match map.get("event") {
        None | Some(Value::Null) => return Err(DocError::EventRequired),
        Some(Value::String(s)) if s.trim().is_empty() => return Err(DocError::EventRequired),
        _ => {}
    }
    let has =
        |key: &str| map.get("action").and_then(|a| a.get(key)).is_some_and(|v| !v.is_null() && v.as_str() != Some(""));
    if ["type", "method", "url"].iter().all(|k| has(k)) { Ok(()) } else { Err(DocError::ActionRequired) }
}

fn event_name(map: &Map<String, Value>) -> Result<String, DocError> {
    let name = string(map, "event")?.unwrap_or_default();
    crate::event::check_hook_event(&name).map_err(|problem| bad("event", problem))?;
    Ok(name)
}

fn present<'m>(map: &'m Map<String, Value>, key: &str) -> Option<&'m Value> {
    map.get(key).filter(|v| !v.is_null())
}

fn string(map: &Map<String, Value>, key: &str) -> Result<Option<String>, DocError> {
    match present(map, key) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(bad(key, "must be a string")),
    }
}

fn boolean(map: &Map<String, Value>, key: &str) -> Result<Option<bool>, DocError> {
    match present(map, key) {
        None => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(_) => Err(bad(key, "must be true or false")),
    }
}

/// An integer in `min..=max`; a string of digits is accepted too, as HTML forms send them.
fn integer(map: &Map<String, Value>, key: &str, min: u32, max: u32) -> Result<Option<u32>, DocError> {
    let Some(value) = present(map, key) else {
        return Ok(None);
    };
    let n = match value {
        Value::Number(n) => {
            n.as_u64().or_else(|| n.as_f64().filter(|f| f.fract() == 0.0 && *f >= 0.0).map(|f| f as u64))
        }
        Value::String(s) => s.trim().parse::<u64>().ok(),
        _ => None,
    };
    match n {
        Some(n) if (u64::from(min)..=u64::from(max)).contains(&n) => Ok(Some(n as u32)),
        _ => Err(bad(key, format!("must be an integer from {min} to {max}"))),
    }
}

/// An object, absent when null or `[]`: PHP's `json_encode` writes an empty array as `[]`, and
/// the original engine took such a `map` or `filter` for an empty one.
fn object<'m>(map: &'m Map<String, Value>, key: &str) -> Result<Option<&'m Map<String, Value>>, DocError> {
    match present(map, key) {
        None => Ok(None),
        Some(Value::Array(items)) if items.is_empty() => Ok(None),
        Some(Value::Object(o)) => Ok(Some(o)),
        Some(_) => Err(bad(key, "must be an object")),
    }
}

fn string_map(map: &Map<String, Value>, key: &str) -> Result<IndexMap<String, String>, DocError> {
    let Some(obj) = object(map, key)? else {
        return Ok(IndexMap::new());
    };
    obj.iter()
        .map(|(k, v)| match v {
            Value::String(s) => Ok((k.clone(), s.clone())),
            _ => Err(bad(format!("{key}.{k}"), "must be a string")),
        })
        .collect()
}

/// Whether `name` is one of the body's framing headers (`Content-Length`, `Transfer-Encoding`).
/// The HTTP client writes them from the body: a hook's own would go out as written, so a
/// receiver would read a body of another length and take the rest for a next request. A write
/// that sets one is refused; a hook stored before that leaves them out when it sends.
pub fn is_framing(name: &str) -> bool {
    ["content-length", "transfer-encoding"].iter().any(|f| name.eq_ignore_ascii_case(f))
}

/// Headers a request is sent with: no [framing](is_framing) ones.
fn request_headers(map: &Map<String, Value>, key: &str) -> Result<IndexMap<String, String>, DocError> {
    let headers = string_map(map, key)?;
    match headers.keys().find(|name| is_framing(name)) {
        Some(name) => Err(bad(format!("{key}.{name}"), "is written from the body when it is sent; remove it")),
        None => Ok(headers),
    }
}

fn method(value: &str, field: &str) -> Result<String, DocError> {
    if METHODS.iter().any(|m| m.eq_ignore_ascii_case(value)) {
        Ok(value.to_owned())
    } else {
        Err(bad(field, "must be one of GET, POST, PUT, PATCH, DELETE"))
    }
}

/// An absolute http or https URL.
pub(crate) fn http_url(value: &str, field: &str) -> Result<url::Url, DocError> {
    match url::Url::parse(value) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.has_host() => Ok(u),
        _ => Err(bad(field, "must be an absolute http or https URL")),
    }
}

fn action(map: &Map<String, Value>) -> Result<Action, DocError> {
    let Some(obj) = object(map, "action")? else {
        return Err(DocError::ActionRequired);
    };
    let field = |key: &str| match obj.get(key) {
        Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
        None | Some(Value::Null) => Err(DocError::ActionRequired),
        Some(_) => Err(bad(format!("action.{key}"), "must be a string")),
    };
    let kind = field("type")?;
    if kind != "web" {
        return Err(bad("action.type", "must be \"web\""));
    }
    let url = field("url")?;
    http_url(&url, "action.url")?;
    Ok(Action { kind, method: method(&field("method")?, "action.method")?, url })
}

fn fields(map: &Map<String, Value>) -> Result<Vec<String>, DocError> {
    match present(map, "fields") {
        None => Ok(Vec::new()),
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| match v {
                Value::String(s) if !s.is_empty() => Ok(s.clone()),
                _ => Err(bad("fields", "must be an array of header names")),
            })
            .collect(),
        Some(_) => Err(bad("fields", "must be an array of header names")),
    }
}

/// Filters a hook may have: a hook with thousands of them could take the memory of every
/// domain. Their regular expressions also share a size budget (`filter::REGEX_BUDGET`) and a
/// length (`filter::MAX_REGEX_TEXT`).
pub const MAX_FILTERS: usize = 64;

fn filters(map: &Map<String, Value>) -> Result<IndexMap<String, FilterSpec>, DocError> {
    let Some(obj) = object(map, "filter")? else {
        return Ok(IndexMap::new());
    };
    if obj.len() > MAX_FILTERS {
        return Err(bad("filter", format!("must have at most {MAX_FILTERS} entries, not {}", obj.len())));
    }
    // The regexes share one budget (see `filter::REGEX_BUDGET`), and one of text.
    let patterns: Vec<&Value> = obj
        .values()
        .filter(|spec| spec.get("operation").and_then(Value::as_str) == Some("reg"))
        .filter_map(|spec| spec.get("value"))
        .collect();
    let regexes = patterns.len();
    let text: usize = patterns.iter().map(|v| v.as_str().map_or(0, str::len)).sum();
    if text > filter::MAX_REGEX_TEXT {
        let most = filter::MAX_REGEX_TEXT >> 10;
        return Err(bad("filter", format!("reg patterns must be at most {most} KiB together, not {text} bytes")));
    }
    obj.iter()
        .map(|(header, spec)| {
            let field = format!("filter.{header}");
            let spec = spec.as_object().ok_or_else(|| bad(&field, "must be an object with operation and value"))?;
            let operation = match spec.get("operation") {
                Some(Value::String(op)) => op.clone(),
                _ => return Err(bad(format!("{field}.operation"), "is required")),
            };
            let value = spec.get("value").cloned().ok_or_else(|| bad(format!("{field}.value"), "is required"))?;
            Filter::compile_within(header, &operation, &value, regexes).map_err(|e| bad(&field, e.to_string()))?;
            Ok((header.clone(), FilterSpec { operation, value }))
        })
        .collect()
}

fn auth(map: &Map<String, Value>) -> Result<Auth, DocError> {
    let Some(obj) = object(map, "auth")? else {
        return Ok(Auth::default());
    };
    let field = |key: &str| format!("auth.{key}");
    let enabled = boolean(obj, "enabled").map_err(|_| bad(field("enabled"), "must be true or false"))?;
    let url = string(obj, "url").map_err(|_| bad(field("url"), "must be a string"))?;
    // An empty method is left out (GET), as an admin form with an untouched field sends it.
    let method = string(obj, "method")
        .map_err(|_| bad(field("method"), "must be a string"))?
        .filter(|m| !m.is_empty())
        .map(|m| method(&m, "auth.method"))
        .transpose()?;
    let cookie = boolean(obj, "cookie").map_err(|_| bad(field("cookie"), "must be true or false"))?;
    let enabled = enabled.unwrap_or(false);
    // A disabled auth's URL is kept unchecked: an admin form keeps what was typed there when
    // auth is switched off. It is checked when auth is switched on.
    match &url {
        Some(u) if !u.is_empty() && enabled => {
            http_url(u, "auth.url")?;
        }
        _ if enabled => return Err(bad("auth.url", "is required when auth is enabled")),
        _ => {}
    }
    Ok(Auth {
        headers: request_headers(obj, "headers").map_err(|e| prefix("auth.", e))?,
        map: string_map(obj, "map").map_err(|e| prefix("auth.", e))?,
        enabled,
        url,
        method,
        cookie,
    })
}

/// `rawBody`, no longer than what a template may render.
fn raw_body(map: &Map<String, Value>) -> Result<String, DocError> {
    let raw = string(map, "rawBody")?.unwrap_or_default();
    let most = super::template::MAX_RENDERED;
    if raw.len() > most {
        return Err(bad("rawBody", format!("must be at most {} KiB", most >> 10)));
    }
    Ok(raw)
}

fn prefix(p: &str, err: DocError) -> DocError {
    match err {
        DocError::Field { field, problem } => bad(format!("{p}{field}"), problem),
        other => other,
    }
}

fn secret(map: &Map<String, Value>) -> Result<Option<String>, DocError> {
    let Some(secret) = string(map, "secret")?.filter(|s| !s.is_empty()) else {
        return Ok(None);
    };
    if secret == SECRET_MASK {
        return Err(bad("secret", "must be the secret itself, not its mask"));
    }
    super::signing_key(&secret).map_err(|problem| bad("secret", problem))?;
    Ok(Some(secret))
}

fn backoff(map: &Map<String, Value>) -> Result<Option<Backoff>, DocError> {
    match string(map, "backoff")?.as_deref() {
        None => Ok(None),
        Some("fixed") => Ok(Some(Backoff::Fixed)),
        Some("exponential") => Ok(Some(Backoff::Exponential)),
        Some(_) => Err(bad("backoff", "must be \"fixed\" or \"exponential\"")),
    }
}

/// Checks that a template parses; with JSON syntax, also that it renders to valid JSON.
pub(crate) fn template(src: &str, syntax: Syntax, field: &str) -> Result<Template, DocError> {
    let t = Template::parse(src, syntax).map_err(|e| bad(field, format!("has an invalid template: {e}")))?;
    if syntax == Syntax::Json {
        let sample = t.render(&super::template::Empty);
        if let Err(e) = serde_json::from_str::<serde::de::IgnoredAny>(&sample) {
            return Err(bad(field, format!("must be a JSON template when customBody is true: {e}")));
        }
    }
    Ok(t)
}
