//! What a hook sends for an event: the body (default `{id, action, data}`, or the `rawBody`
//! template), the GET query string, and the templated headers. One renderer serves the
//! delivery queue and the dry run, so both produce the same bytes.

use std::borrow::Cow;
use std::fmt::Write as _;

use http::{HeaderMap, HeaderName, HeaderValue, Method};
use serde::Serialize;
use serde_json::{Map, Value};

use super::template::{Empty, Lookup, MAX_RENDERED};
use super::{Body, CompiledHook};
use crate::event::{Event, JsonEvent, plain_run};

/// A rendered webhook request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Request {
    #[serde(serialize_with = "method_str")]
    pub method: Method,
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

fn method_str<S: serde::Serializer>(m: &Method, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(m.as_str())
}

impl CompiledHook {
    /// Renders the request this hook sends for `event` under delivery id `id`. `event_name`
    /// is the event's hook event name.
    pub fn render(&self, event: &Event, event_name: &str, id: &str) -> Request {
        self.render_checked(event, event_name, id).unwrap_or_else(|(request, _)| request)
    }

    /// [`render`](Self::render), or the request cut short and why it must not be sent: its
    /// templates (`rawBody` and `headers` together) would render more than the event's size
    /// plus [`MAX_RENDERED`], or a GET's query would pass its budget (`query_budget`).
    pub fn render_checked(&self, event: &Event, event_name: &str, id: &str) -> Result<Request, (Request, String)> {
        // Only templates copy values; a hook without any renders in proportion to the event.
        let has_templates = matches!(self.body, Body::Custom(_)) || !self.headers.is_empty();
        let limit = if has_templates { MAX_RENDERED + approx_size(&event.0) } else { usize::MAX };
        let mut templated = 0;
        let mut problem = None;
        let mut query = |data: &Map<String, Value>| {
            with_query(&self.url, data).unwrap_or_else(|e| {
                problem = Some(format!("the {e}"));
                self.url.to_string()
            })
        };
        let (url, body) = match &self.body {
            Body::Custom(template) => {
                let body = template.render_within(event, limit);
                templated = body.len();
                if self.method == Method::GET {
                    // A GET carries no body: the rendered value goes in the query, as `data`
                    // does (an array's items under their indexes, as `qs` wrote them).
                    let object = match serde_json::from_str::<Value>(&body) {
                        Ok(Value::Object(object)) => object,
                        Ok(Value::Array(items)) => {
                            items.into_iter().enumerate().map(|(i, v)| (i.to_string(), v)).collect()
                        }
                        _ => Map::new(),
                    };
                    (query(&object), String::new())
                } else {
                    (self.url.to_string(), body)
                }
            }
            Body::Default => {
                let data = self.data(event);
                if self.method == Method::GET {
                    (query(&data), String::new())
                } else {
                    // Room for every entry as it stands, so the text is written without regrowing.
                    let size = data.iter().map(|(k, v)| k.len() + v.as_str().map_or(16, str::len) + 6).sum();
                    let body = default_body(id, event_name, size, |out| write_object(out, &data));
                    (self.url.to_string(), body)
                }
            }
        };
        let headers = self.render_headers_within(event, limit.saturating_sub(templated));
        let rendered = templated + headers.iter().map(|(_, v)| v.len()).sum::<usize>();
        let request = Request { method: self.method.clone(), url, headers, body };
        if rendered > limit {
            problem = Some(format!(
                "rawBody and headers render to more than {} KiB beyond the event's size",
                MAX_RENDERED >> 10
            ));
        }
        match problem {
            Some(problem) => Err((request, problem)),
            None => Ok(request),
        }
    }

    /// [`render`](Self::render) for an event given as the JSON text of an object, sent as it
    /// came: for hooks that [send the whole event](Self::sends_whole_event), and the same
    /// request, up to the JSON text's own spelling, as the parsed event gives.
    pub fn render_json(&self, event: &JsonEvent, event_name: &str, id: &str) -> Request {
        Request {
            method: self.method.clone(),
            url: self.url.to_string(),
            headers: self.render_headers(&Empty),
            body: default_body(id, event_name, event.text().len(), |out| {
                out.extend_from_slice(event.text().as_bytes());
                Ok(())
            }),
        }
    }

    /// The hook's headers rendered over `vars`, after a JSON content type when the request
    /// has a body and the hook does not set its own.
    pub fn render_headers(&self, vars: &dyn Lookup) -> Vec<(String, String)> {
        self.render_headers_within(vars, MAX_RENDERED)
    }

    /// [`render_headers`](Self::render_headers), rendering no more header values once they
    /// pass `limit` bytes together.
    fn render_headers_within(&self, vars: &dyn Lookup, limit: usize) -> Vec<(String, String)> {
        let mut headers = Vec::with_capacity(self.headers.len() + 1);
        headers.extend(self.default_content_type(&self.method).map(|(n, v)| (n.to_owned(), v.to_owned())));
        let mut rendered = 0;
        for (name, template) in &self.headers {
            if rendered > limit {
                break;
            }
            let value = header_safe(template.render_within(vars, limit - rendered));
            rendered += value.len();
            headers.push((name.as_str().to_owned(), value));
        }
        headers
    }

    /// The JSON content type a request with a body gets when the hook sets none.
    fn default_content_type(&self, method: &Method) -> Option<(&'static str, &'static str)> {
        let sets_type = self.headers.iter().any(|(name, _)| name == http::header::CONTENT_TYPE);
        (*method != Method::GET && !sets_type).then_some(("content-type", "application/json"))
    }

    /// The headers an attempt of a stored request sends: the hook's as they are now, so that
    /// correcting a fixed one (a wrong API key) rescues the deliveries waiting for a retry. A
    /// header rendered from the event keeps the value its event gave (the event is not kept);
    /// one the hook did not have then is left out. The stored headers themselves, uncopied,
    /// while the hook is as it was.
    pub fn current_headers<'a>(&self, stored: &'a Request) -> Cow<'a, [(String, String)]> {
        let was = |name: &str| stored.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str());
        let hooks = self
            .headers
            .iter()
            .filter_map(|(name, template)| Some((name.as_str(), template.literal().or_else(|| was(name.as_str()))?)));
        let current = self.default_content_type(&stored.method).into_iter().chain(hooks);
        if current.clone().eq(stored.headers.iter().map(|(n, v)| (n.as_str(), v.as_str()))) {
            return Cow::Borrowed(&stored.headers);
        }
        Cow::Owned(current.map(|(name, value)| (name.to_owned(), value.to_owned())).collect())
    }

    /// The event's data as the default body carries it: every header, or only `fields`, with
    /// keys renamed by `map`. A renamed value takes the place of a header the event has under
    /// the new name, as the original's rename overwrote it, wherever that header comes.
    fn data<'e>(&self, event: &'e Event) -> Cow<'e, Map<String, Value>> {
        if self.fields.is_empty() && self.map.is_empty() {
            return Cow::Borrowed(&event.0);
        }
        let picked: Map<String, Value> = if self.fields.is_empty() {
            event.0.clone()
        } else {
            self.fields.iter().filter_map(|f| Some((f.clone(), event.get(f)?.clone()))).collect()
        };
        let taken: std::collections::HashSet<&str> =
            picked.keys().filter_map(|k| self.map.get(k)).map(String::as_str).collect();
        let mut data = Map::with_capacity(picked.len());
        for (k, v) in picked {
            match self.map.get(&k) {
                Some(renamed) => {
                    data.insert(renamed.clone(), v);
                }
                None if !taken.contains(k.as_str()) => {
                    data.insert(k, v);
                }
                None => {}
            }
        }
        Cow::Owned(data)
    }
}

/// The default body, `{"id":…,"action":…,"data":…}`, with `data` (about `size` bytes of JSON
/// text) written by `write`, in one buffer.
fn default_body(
    id: &str,
    action: &str,
    size: usize,
    write: impl FnOnce(&mut Vec<u8>) -> serde_json::Result<()>,
) -> String {
    let mut out = Vec::with_capacity(size + id.len() + action.len() + 40);
    let written = (|| {
        out.extend_from_slice(b"{\"id\":");
        serde_json::to_writer(&mut out, id)?;
        out.extend_from_slice(b",\"action\":");
        serde_json::to_writer(&mut out, action)?;
        out.extend_from_slice(b",\"data\":");
        write(&mut out)?;
        out.push(b'}');
        Ok::<_, serde_json::Error>(())
    })();
    written.expect("JSON values serialize to a Vec");
    String::from_utf8(out).expect("serde_json writes UTF-8")
}

/// `data` as JSON text, byte for byte what `serde_json::to_writer` writes. Event values are
/// strings that rarely need an escape: each is checked in one pass and copied whole, which
/// halves the time of the default body of a 300-header event (BENCHMARKS.md).
fn write_object(out: &mut Vec<u8>, data: &Map<String, Value>) -> serde_json::Result<()> {
    out.push(b'{');
    for (i, (key, value)) in data.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_str(out, key)?;
        out.push(b':');
        match value {
            Value::String(text) => write_str(out, text)?,
            other => serde_json::to_writer(&mut *out, other)?,
        }
    }
    out.push(b'}');
    Ok(())
}

/// A JSON string: copied as it is unless a byte needs an escape, then written by serde_json.
fn write_str(out: &mut Vec<u8>, text: &str) -> serde_json::Result<()> {
    if plain_run(text.as_bytes()) == text.len() {
        out.reserve(text.len() + 2);
        out.push(b'"');
        out.extend_from_slice(text.as_bytes());
        out.push(b'"');
        Ok(())
    } else {
        serde_json::to_writer(out, text)
    }
}

/// `url` with `data` merged into its query as the original's HTTP client (`request`, with
/// `qs`) wrote it, which existing receivers parse: a data key replaces the URL's parameter of
/// that name; nested objects and arrays as `a[b]=1` and `a[0]=x` (brackets percent-encoded),
/// null as an empty value, empty objects and arrays left out, and every byte outside
/// `A-Za-z0-9-._~` percent-encoded, a space as `%20` (a `+` reaches a receiver that only
/// percent-decodes as a plus).
///
/// An error when the query would pass its [`query_budget`]: each leaf repeats its whole path,
/// so deep and wide values would otherwise make a query many times the event's size.
pub(crate) fn with_query(url: &url::Url, data: &Map<String, Value>) -> Result<String, String> {
    let budget = query_budget(data);
    let over = || format!("query string would be over {} KiB", budget >> 10);
    // The URL's own parameters stay as they are written, but for those the data replaces.
    let replaced = |pair: &str| {
        let name = pair.split('=').next().unwrap_or_default();
        let (name, _) = url::form_urlencoded::parse(name.as_bytes()).next().unwrap_or_default();
        data.contains_key(name.as_ref()) || data.contains_key(name.split('[').next().unwrap_or_default())
    };
    let own = url.query().unwrap_or_default().split('&').filter(|pair| !pair.is_empty() && !replaced(pair));
    let mut query = own.collect::<Vec<_>>().join("&");
    for (key, value) in data {
        let mut name = String::with_capacity(key.len());
        percent_encode(&mut name, key);
        push_param(&mut query, &name, value, budget).ok_or_else(over)?;
    }
    let mut url = url.clone();
    url.set_query(Some(&query).filter(|q| !q.is_empty()).map(String::as_str));
    Ok(url.to_string())
}

/// The query budget for `data`: a flat event's query is at most three times its text (every
/// byte percent-encoded), plus room for [`MAX_RENDERED`] of nesting.
fn query_budget(data: &Map<String, Value>) -> usize {
    3 * approx_size(data) + MAX_RENDERED
}

/// Appends `name=value` for a scalar, or one pair per leaf below an object or array; `name`
/// is already encoded. `None` once `query` passes `budget`.
fn push_param(query: &mut String, name: &str, value: &Value, budget: usize) -> Option<()> {
    let mut leaf = |text: &str| {
        if !query.is_empty() {
            query.push('&');
        }
        query.push_str(name);
        query.push('=');
        percent_encode(query, text);
    };
    match value {
        Value::String(text) => leaf(text),
        Value::Null => leaf(""),
        Value::Bool(_) | Value::Number(_) => leaf(&value.to_string()),
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                push_param(query, &format!("{name}%5B{i}%5D"), item, budget)?;
            }
        }
        Value::Object(map) => {
            for (key, item) in map {
                let mut nested = format!("{name}%5B");
                percent_encode(&mut nested, key);
                nested.push_str("%5D");
                push_param(query, &nested, item, budget)?;
            }
        }
    }
    (query.len() <= budget).then_some(())
}

/// RFC 3986 percent-encoding: unreserved characters as they are, every other byte as `%XX`.
fn percent_encode(out: &mut String, text: &str) {
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
}

/// About the bytes `map` takes as text: what templates may copy out of an event.
fn approx_size(map: &Map<String, Value>) -> usize {
    fn size(v: &Value) -> usize {
        match v {
            Value::String(s) => s.len() + 2,
            Value::Array(items) => items.iter().map(|i| size(i) + 1).sum::<usize>() + 2,
            Value::Object(m) => approx_size(m),
            _ => 24,
        }
    }
    map.iter().map(|(k, v)| k.len() + size(v) + 4).sum::<usize>() + 2
}

/// Header values cannot hold control characters; an event value with a newline must not be
/// able to inject a header, so those become spaces.
pub(crate) fn header_safe(value: String) -> String {
    if value.bytes().any(|b| b.is_ascii_control() && b != b'\t') {
        value.chars().map(|c| if c.is_control() && c != '\t' { ' ' } else { c }).collect()
    } else {
        value
    }
}

/// The `user-agent` of every request switchhook sends: webhooks and auth pre-requests.
pub const USER_AGENT: &str = concat!("switchhook/", env!("CARGO_PKG_VERSION"));

/// What the HTTP client adds to each request that does not set it itself.
pub fn client_headers() -> HeaderMap {
    HeaderMap::from_iter(client_defaults())
}

/// [`client_headers`] without a map to allocate, for each attempt.
fn client_defaults() -> [(HeaderName, HeaderValue); 2] {
    [
        (http::header::USER_AGENT, HeaderValue::from_static(USER_AGENT)),
        (http::header::ACCEPT, HeaderValue::from_static("*/*")),
    ]
}

/// The headers an attempt of delivery `id` sends, given the hook's rendered `headers` (the
/// stored request's, or those rendered with the auth answer): those, `webhook-id`, and the
/// [client's](client_headers) the hook does not set. Only the transport's own (`host`,
/// `content-length`), the auth answer's cookie and a signed hook's signature come on top, so
/// the dry run shows what is sent.
pub fn attempt_headers(headers: &[(String, String)], id: &str) -> Result<HeaderMap, String> {
    let mut sent = HeaderMap::with_capacity(headers.len() + 3);
    for (name, value) in headers.iter().filter(|(name, _)| !super::doc::is_framing(name)) {
        let name = HeaderName::from_bytes(name.as_bytes()).map_err(|_| format!("bad header name {name:?}"))?;
        sent.append(name, header_value(value)?);
    }
    // Every webhook names its delivery, the same id on every retry, so a receiver can drop the
    // duplicates at-least-once delivery may bring, whatever the body (a GET or a `rawBody` has
    // no `id` of its own).
    sent.insert("webhook-id", header_value(id)?);
    for (name, value) in client_defaults() {
        sent.entry(name).or_insert(value);
    }
    Ok(sent)
}

pub(crate) fn header_value(value: &str) -> Result<HeaderValue, String> {
    HeaderValue::from_str(value).map_err(|_| "a header value has characters HTTP does not allow".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Incoming;
    use crate::hook::{HookDoc, Limits};
    use proptest::strategy::Strategy as _;
    use serde_json::json;

    fn compile(patch: Value) -> CompiledHook {
        let mut body = json!({"event": "CHANNEL_ANSWER", "action": {"type": "web", "method": "POST", "url": "http://r.example/h?k=1"}});
        for (k, v) in patch.as_object().unwrap() {
            body[k] = v.clone();
        }
        HookDoc::from_body(&body, "d.com", Limits { max_retries: 10 }).unwrap().compile().unwrap()
    }

    fn event() -> Event {
        Event(
            json!({"Event-Name": "CHANNEL_ANSWER", "Unique-ID": "u1", "Caller-Caller-ID-Name": "Jo \"J\"\nS",
            "variable_domain_name": "d.com", "currentProbe": 2})
            .as_object()
            .unwrap()
            .clone(),
        )
    }

    proptest::proptest! {
        /// The default body's writer spells JSON exactly as serde_json does.
        #[test]
        fn objects_are_written_as_serde_json_writes_them(
            entries in proptest::collection::vec(("\\PC{0,8}|[\"\\\\\\x00-\\x1f\\x7f/é]{0,4}", proptest::prop_oneof![
                "\\PC{0,8}|[\"\\\\\\x00-\\x1f\\x7f/é]{0,4}".prop_map(Value::from),
                proptest::num::f64::NORMAL.prop_map(Value::from),
                proptest::num::i64::ANY.prop_map(Value::from),
                proptest::bool::ANY.prop_map(Value::from),
                proptest::strategy::Just(Value::Null),
                proptest::strategy::Just(json!([1, "a\n", {"b": null}])),
            ]), 0..12)
        ) {
            let data: Map<String, Value> = entries.into_iter().collect();
            let mut out = Vec::new();
            write_object(&mut out, &data).unwrap();
            proptest::prop_assert_eq!(String::from_utf8(out).unwrap(), serde_json::to_string(&data).unwrap());
        }
    }

    #[test]
    fn default_body_carries_the_whole_event() {
        let r = compile(json!({})).render(&event(), "CHANNEL_ANSWER", "id-1");
        let body: Value = serde_json::from_str(&r.body).unwrap();
        assert_eq!(body["id"], "id-1");
        assert_eq!(body["action"], "CHANNEL_ANSWER");
        assert_eq!(body["data"], Value::Object(event().0));
        assert!(r.body.starts_with(r#"{"id":"id-1","action":"CHANNEL_ANSWER","data":{"Event-Name""#));
        assert_eq!(r.headers, [("content-type".to_owned(), "application/json".to_owned())]);
        assert_eq!(r.url, "http://r.example/h?k=1");
    }

    #[test]
    fn json_text_sent_whole_is_the_request_the_parsed_event_gives() {
        let text = serde_json::to_string_pretty(&event().0).unwrap();
        let Ok(Incoming::Json(raw)) = Incoming::from_text(text.clone()) else { panic!("kept as text") };
        for patch in [
            json!({}),
            json!({"headers": {"X-Tenant": "acme"}}),
            json!({"action": {"type": "web", "method": "PUT", "url": "http://r/x"}}),
        ] {
            let hook = compile(patch);
            assert!(hook.sends_whole_event());
            let (whole, parsed) =
                (hook.render_json(&raw, "CHANNEL_ANSWER", "i"), hook.render(&event(), "CHANNEL_ANSWER", "i"));
            assert_eq!((&whole.method, &whole.url, &whole.headers), (&parsed.method, &parsed.url, &parsed.headers));
            let body = |r: &Request| serde_json::from_str::<Value>(&r.body).unwrap();
            assert_eq!(body(&whole), body(&parsed));
            assert!(whole.body.contains(&text), "sent as it came");
        }
        for reads_the_event in [
            json!({"filter": {"Unique-ID": {"operation": "==", "value": "u1"}}}),
            json!({"fields": ["Unique-ID"]}),
            json!({"map": {"Unique-ID": "call"}}),
            json!({"headers": {"X-Call": "${Unique-ID}"}}),
            json!({"customBody": true, "rawBody": "{}"}),
            json!({"action": {"type": "web", "method": "GET", "url": "http://r/x"}}),
        ] {
            assert!(!compile(reads_the_event.clone()).sends_whole_event(), "{reads_the_event}");
        }
    }

    #[test]
    fn fields_pick_and_map_renames() {
        let hook = compile(json!({"fields": ["Unique-ID", "currentProbe", "Missing"], "map": {"Unique-ID": "call"}}));
        let body: Value = serde_json::from_str(&hook.render(&event(), "CHANNEL_ANSWER", "i").body).unwrap();
        assert_eq!(body["data"], json!({"call": "u1", "currentProbe": 2}));
        let all = compile(json!({"map": {"Unique-ID": "call"}}));
        let body: Value = serde_json::from_str(&all.render(&event(), "CHANNEL_ANSWER", "i").body).unwrap();
        assert_eq!(body["data"]["call"], "u1");
        assert!(body["data"].get("Unique-ID").is_none());
        // Renames read the event's own keys: two that name each other swap (README).
        let swap = compile(
            json!({"fields": ["Unique-ID", "currentProbe"], "map": {"Unique-ID": "currentProbe", "currentProbe": "Unique-ID"}}),
        );
        let body: Value = serde_json::from_str(&swap.render(&event(), "CHANNEL_ANSWER", "i").body).unwrap();
        assert_eq!(body["data"], json!({"currentProbe": "u1", "Unique-ID": 2}));
    }

    #[test]
    fn get_puts_data_in_the_query() {
        let hook = compile(json!({"action": {"type": "web", "method": "get", "url": "http://r.example/h?k=1"},
            "fields": ["Unique-ID", "currentProbe"]}));
        let r = hook.render(&event(), "CHANNEL_ANSWER", "i");
        assert_eq!(
            (r.method, r.url.as_str(), r.body.as_str()),
            (Method::GET, "http://r.example/h?k=1&Unique-ID=u1&currentProbe=2", "")
        );
        assert!(r.headers.is_empty());
    }

    /// As the original's HTTP client (`request` with `qs`) wrote a GET's data: nested objects
    /// and arrays in brackets (`a[b]=1`, `a[0]=x`), every byte but `A-Za-z0-9-._~`
    /// percent-encoded, a space as `%20` (a `+` would reach a plain percent-decoder as a plus),
    /// null as an empty value, empty objects and arrays left out.
    #[test]
    fn get_query_encodes_nested_values_in_brackets_and_spaces_as_percent_20() {
        let hook = compile(json!({"action": {"type": "web", "method": "GET", "url": "http://r.example/h?k=1"}}));
        let event = Event(
            json!({"name": "Jo Smith+1 &=?#/~é", "member": {"name": "A", "tags": ["x", {"y": 2}]},
                "n": 2.5, "b": true, "z": null, "none": [], "nothing": {}, "a b": "c"})
            .as_object()
            .unwrap()
            .clone(),
        );
        assert_eq!(
            hook.render(&event, "CHANNEL_ANSWER", "i").url,
            "http://r.example/h?k=1&name=Jo%20Smith%2B1%20%26%3D%3F%23%2F~%C3%A9&member%5Bname%5D=A\
             &member%5Btags%5D%5B0%5D=x&member%5Btags%5D%5B1%5D%5By%5D=2&n=2.5&b=true&z=&a%20b=c"
        );
    }

    /// The original merged the data into `action.url`'s query, a data key replacing the
    /// URL's parameter of that name (with its nested `name[...]` parts): one value each, not
    /// two that receivers read differently.
    #[test]
    fn get_data_replaces_the_url_parameters_of_the_same_name() {
        let url = "http://r.example/h?k=1&Unique-ID=stale&currentProbe%5Bx%5D=0&currentProbeX=9&";
        let hook = compile(json!({"action": {"type": "web", "method": "GET", "url": url},
            "fields": ["Unique-ID", "currentProbe"]}));
        assert_eq!(
            hook.render(&event(), "CHANNEL_ANSWER", "i").url,
            "http://r.example/h?k=1&currentProbeX=9&Unique-ID=u1&currentProbe=2"
        );
    }

    #[test]
    fn get_data_keys_with_brackets_replace_the_same_url_parameter() {
        let url = "http://r.example/h?x%5By%5D=stale&k=1";
        let hook = compile(json!({"action": {"type": "web", "method": "GET", "url": url}, "fields": ["x[y]"]}));
        let event = Event(json!({"x[y]": "new"}).as_object().unwrap().clone());
        assert_eq!(hook.render(&event, "E", "i").url, "http://r.example/h?k=1&x%5By%5D=new");
    }

    /// Each leaf of a query repeats its whole path: a deep and wide event must not render a
    /// query many times its own size (the review of the `qs` format measured 201 MB from
    /// 109 KB).
    #[test]
    fn a_get_query_past_its_budget_is_not_rendered() {
        let hook = compile(json!({"action": {"type": "web", "method": "GET", "url": "http://r.example/h"}}));
        let mut deep = json!((0..2000).collect::<Vec<_>>());
        for _ in 0..20 {
            deep = json!({"k".repeat(1000): deep});
        }
        let event = Event(json!({"Unique-ID": "u1", "deep": deep}).as_object().unwrap().clone());
        let (cut, problem) = hook.render_checked(&event, "E", "i").unwrap_err();
        assert_eq!(cut.url, "http://r.example/h");
        assert!(problem.starts_with("the query string would be over "), "{problem}");
        let flat = Event(json!({"Unique-ID": "u1", "name": "é".repeat(5000)}).as_object().unwrap().clone());
        assert!(hook.render_checked(&flat, "E", "i").is_ok(), "a flat event's query always fits");
    }

    /// A GET hook whose `rawBody` renders to an array sends its items under their indexes, as
    /// `qs` wrote an array.
    #[test]
    fn get_with_a_raw_body_array_puts_its_items_under_their_indexes() {
        let hook = compile(json!({"action": {"type": "web", "method": "GET", "url": "http://r.example/h"},
            "customBody": true, "rawBody": "[\"${Unique-ID}\", ${currentProbe}]"}));
        assert_eq!(hook.render(&event(), "E", "i").url, "http://r.example/h?0=u1&1=2");
    }

    /// As in the original, a GET hook with `customBody` sends its rendered `rawBody` object in
    /// the query string, as it sends `data`: a GET carries no body.
    #[test]
    fn get_with_raw_body_puts_the_rendered_object_in_the_query() {
        let hook = compile(json!({"action": {"type": "web", "method": "GET", "url": "http://r.example/h?k=1"},
            "customBody": true, "rawBody": "{\"call\": \"${Unique-ID}\", \"probe\": ${currentProbe}, \"who\": \"${Caller-Caller-ID-Name}\"}"}));
        let r = hook.render(&event(), "CHANNEL_ANSWER", "i");
        assert_eq!(
            (r.url.as_str(), r.body.as_str()),
            ("http://r.example/h?k=1&call=u1&probe=2&who=Jo%20%22J%22%0AS", "")
        );
        assert!(r.headers.is_empty());
    }

    #[test]
    fn raw_body_and_header_templates() {
        let hook = compile(
            json!({"customBody": true, "rawBody": "{\"who\": \"${Caller-Caller-ID-Name}\", \"probe\": ${currentProbe}}",
            "headers": {"X-Call": "${Unique-ID}", "X-Who": "${Caller-Caller-ID-Name}", "Content-Type": "application/vnd+json"}}),
        );
        let r = hook.render(&event(), "CHANNEL_ANSWER", "i");
        let body: Value = serde_json::from_str(&r.body).unwrap();
        assert_eq!(body, json!({"who": "Jo \"J\"\nS", "probe": 2}));
        assert_eq!(
            r.headers,
            [
                ("x-call".into(), "u1".into()),
                ("x-who".into(), "Jo \"J\" S".into()),
                ("content-type".into(), "application/vnd+json".into())
            ]
        );
    }

    /// The dry run and the attempt take their headers from here: a hook's own `user-agent` or
    /// `accept` replaces the client's, and `webhook-id` is always the delivery's.
    #[test]
    fn attempt_headers_add_the_delivery_id_and_the_client_defaults_a_hook_does_not_set() {
        let pairs = |list: &[(&str, &str)]| -> Vec<(String, String)> {
            list.iter().map(|(n, v)| ((*n).to_owned(), (*v).to_owned())).collect()
        };
        let shown = |h: HeaderMap| -> Vec<(String, String)> {
            h.iter().map(|(n, v)| (n.as_str().to_owned(), v.to_str().unwrap().to_owned())).collect()
        };
        let sent = attempt_headers(&pairs(&[("x-a", "1"), ("Content-Length", "5"), ("x-a", "2")]), "d1").unwrap();
        let want = [("x-a", "1"), ("x-a", "2"), ("webhook-id", "d1"), ("user-agent", USER_AGENT), ("accept", "*/*")];
        assert_eq!(shown(sent), pairs(&want));
        let own = pairs(&[("user-agent", "crm/2"), ("webhook-id", "mine"), ("accept", "application/json")]);
        let want = [("user-agent", "crm/2"), ("webhook-id", "d1"), ("accept", "application/json")];
        assert_eq!(shown(attempt_headers(&own, "d1").unwrap()), pairs(&want));
    }

    /// An attempt sends the stored headers themselves while the hook is as it was; an edited
    /// fixed header is taken as it is now.
    #[test]
    fn current_headers_copy_only_when_the_hook_changed() {
        let headers = json!({"X-Key": "k1", "X-Call": "${Unique-ID}"});
        let stored = compile(json!({"headers": headers})).render(&event(), "CHANNEL_ANSWER", "d1");
        let same = compile(json!({"headers": headers})).current_headers(&stored);
        assert!(matches!(same, Cow::Borrowed(_)), "{same:?}");
        let edited = compile(json!({"headers": {"X-Call": "${Unique-ID}", "X-Key": "k2"}}));
        let want = [("content-type", "application/json"), ("x-call", "u1"), ("x-key", "k2")];
        let want: Vec<(String, String)> = want.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect();
        assert_eq!(edited.current_headers(&stored).into_owned(), want);
    }
}
