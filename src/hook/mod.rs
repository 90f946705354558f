//! Hooks: the API document ([`HookDoc`]) and its compiled, ready-to-run form ([`CompiledHook`]).
//!
//! Pure code: no I/O. Everything that can fail about a hook fails here, when it is stored or
//! loaded, never per event.

pub mod doc;
pub mod filter;
pub mod id;
pub mod payload;
pub mod template;

use base64::Engine as _;
use http::{HeaderName, HeaderValue, Method};

pub use doc::{Backoff, DocError, HookDoc, Limits};
use filter::Filter;
use template::{Syntax, Template};

/// Per-attempt timeout when a hook sets none.
pub const DEFAULT_TIMEOUT_MS: u32 = 10_000;

/// The body a hook sends.
#[derive(Debug, Clone)]
pub enum Body {
    /// `{"id","action","data"}` with `data` = the event, or its `fields` renamed by `map`.
    Default,
    /// `rawBody` rendered as a JSON template.
    Custom(Template),
}

/// The auth pre-request of a hook.
#[derive(Debug, Clone)]
pub struct CompiledAuth {
    pub url: url::Url,
    pub method: Method,
    pub headers: Vec<(HeaderName, Template)>,
    pub map: Vec<(String, Template)>,
    pub cookie: bool,
    /// Whether the hook's headers read the answer's fields (`${auth:body:…}`).
    pub reads_body: bool,
}

/// A hook ready to match and render: regexes, templates, method and URL parsed once.
#[derive(Debug, Clone)]
pub struct CompiledHook {
    pub domain: String,
    pub event: String,
    pub enabled: bool,
    pub filters: Vec<Filter>,
    pub method: Method,
    pub url: url::Url,
    pub fields: Vec<String>,
    pub map: indexmap::IndexMap<String, String>,
    pub headers: Vec<(HeaderName, Template)>,
    pub body: Body,
    pub auth: Option<CompiledAuth>,
    pub retries: u32,
    pub delay_secs: u32,
    pub backoff: Backoff,
    pub timeout_ms: u32,
    pub ordered: bool,
    /// HMAC key for Standard Webhooks signatures, when the hook has a `secret`.
    pub signing_key: Option<Vec<u8>>,
}

impl CompiledHook {
    pub fn new(doc: &HookDoc) -> Result<Self, DocError> {
        let filters = doc
            .filter
            .iter()
            .map(|(header, spec)| {
                Filter::compile(header, &spec.operation, &spec.value)
                    .map_err(|e| DocError::Field { field: format!("filter.{header}"), problem: e.to_string() })
            })
            .collect::<Result<_, _>>()?;
        let body = if doc.custom_body {
            Body::Custom(doc::template(&doc.raw_body, Syntax::Json, "rawBody")?)
        } else {
            Body::Default
        };
        let headers = header_templates(&doc.headers, "headers")?;
        let auth = if doc.auth.enabled {
            let url = doc.auth.url.as_deref().unwrap_or_default();
            Some(CompiledAuth {
                url: doc::http_url(url, "auth.url")?,
                method: parse_method(doc.auth.method.as_deref().unwrap_or("GET")),
                headers: header_templates(&doc.auth.headers, "auth.headers")?,
                map: doc
                    .auth
                    .map
                    .iter()
                    .map(|(k, v)| Ok((k.clone(), doc::template(v, Syntax::Text, &format!("auth.map.{k}"))?)))
                    .collect::<Result<_, DocError>>()?,
                cookie: doc.auth.cookie.unwrap_or(false),
                reads_body: headers.iter().any(|(_, t)| t.refers_to("auth:body:")),
            })
        } else {
            None
        };
        Ok(Self {
            domain: doc.domain.clone(),
            event: doc.event.clone(),
            enabled: doc.enable,
            filters,
            method: parse_method(&doc.action.method),
            url: doc::http_url(&doc.action.url, "action.url")?,
            fields: doc.fields.clone(),
            map: doc.map.clone(),
            headers,
            body,
            auth,
            retries: doc.retries,
            delay_secs: doc.delay,
            backoff: doc.backoff.unwrap_or(Backoff::Fixed),
            timeout_ms: doc.timeout.unwrap_or(DEFAULT_TIMEOUT_MS),
            ordered: doc.ordered.unwrap_or(false),
            signing_key: doc
                .secret
                .as_deref()
                .map(signing_key)
                .transpose()
                .map_err(|problem| DocError::Field { field: "secret".into(), problem })?,
        })
    }
}

impl CompiledHook {
    /// Whether the hook sends every event it gets whole and unchanged, reading nothing from
    /// it: no filters, the default body with every header in it, and literal headers. Such a
    /// hook can send an event's JSON text as it came, without parsing it.
    pub fn sends_whole_event(&self) -> bool {
        self.filters.is_empty()
            && matches!(self.body, Body::Default)
            && self.fields.is_empty()
            && self.map.is_empty()
            && self.method != Method::GET
            && self.headers.iter().all(|(_, template)| template.literal().is_some())
    }

    /// The first filter `event` fails, if any.
    pub fn failed_filter(&self, event: &crate::event::Event) -> Option<&Filter> {
        self.filters.iter().find(|f| !f.test(event.get(f.header())))
    }
}

/// Methods were validated against [`doc::METHODS`]; upper-casing makes them standard.
fn parse_method(m: &str) -> Method {
    Method::from_bytes(m.to_ascii_uppercase().as_bytes()).unwrap_or(Method::POST)
}

fn header_templates(
    headers: &indexmap::IndexMap<String, String>,
    field: &str,
) -> Result<Vec<(HeaderName, Template)>, DocError> {
    headers
        .iter()
        .filter(|(name, _)| !doc::is_framing(name))
        .map(|(name, value)| {
            let field = format!("{field}.{name}");
            let name = HeaderName::from_bytes(name.as_bytes()).map_err(|_| DocError::Field {
                field: field.clone(),
                problem: "is not a valid HTTP header name".into(),
            })?;
            let template = doc::template(value, Syntax::Text, &field)?;
            if HeaderValue::from_str(&template.render(&template::Empty)).is_err() {
                return Err(DocError::Field {
                    field,
                    problem: "contains characters not allowed in an HTTP header".into(),
                });
            }
            Ok((name, template))
        })
        .collect()
}

/// The HMAC key of a Standard Webhooks secret: `whsec_<base64>` is decoded (with or without
/// its `=` padding, as the Standard Webhooks libraries take it), any other string is used as
/// its bytes.
pub fn signing_key(secret: &str) -> Result<Vec<u8>, String> {
    match secret.strip_prefix("whsec_") {
        Some(b64) => match base64::engine::general_purpose::STANDARD_NO_PAD.decode(b64.trim_end_matches('=')) {
            Ok(key) if !key.is_empty() => Ok(key),
            _ => Err("must be whsec_ followed by base64, or a plain string".into()),
        },
        None => Ok(secret.as_bytes().to_vec()),
    }
}

#[cfg(test)]
mod tests {
    use super::{CompiledHook, signing_key};

    /// A hook stored before framing headers were refused loads, and leaves them out.
    #[test]
    fn a_stored_hooks_framing_headers_are_left_out() {
        use serde_json::json;
        let body = json!({
            "event": "CHANNEL_ANSWER",
            "action": {"type": "web", "method": "POST", "url": "http://r.example/h"},
            "auth": {"enabled": true, "url": "http://r.example/login"},
        });
        let doc = super::HookDoc::from_body(&body, "d", super::Limits { max_retries: 0 }).unwrap();
        let mut stored = serde_json::to_value(&doc).unwrap();
        stored["headers"] = json!({"Content-Length": "5", "X-A": "1", "transfer-encoding": "chunked"});
        stored["auth"]["headers"] = json!({"CONTENT-LENGTH": "9", "X-B": "2"});
        let hook = CompiledHook::new(&serde_json::from_value(stored).unwrap()).unwrap();
        let names = |h: &[(http::HeaderName, _)]| h.iter().map(|(n, _)| n.as_str().to_owned()).collect::<Vec<_>>();
        assert_eq!(names(&hook.headers), ["x-a"]);
        assert_eq!(names(&hook.auth.unwrap().headers), ["x-b"]);
    }

    #[test]
    fn whsec_secrets_decode_with_or_without_padding_and_others_are_their_bytes() {
        // "key" is a2V5 padded; "hi" is aGk= padded and aGk bare, as the libraries accept.
        assert_eq!(signing_key("whsec_a2V5"), Ok(b"key".to_vec()));
        assert_eq!(signing_key("whsec_aGk="), Ok(b"hi".to_vec()));
        assert_eq!(signing_key("whsec_aGk"), Ok(b"hi".to_vec()));
        assert_eq!(signing_key("plain secret"), Ok(b"plain secret".to_vec()));
        assert!(signing_key("whsec_").is_err());
        assert!(signing_key("whsec_!!").is_err());
    }
}
