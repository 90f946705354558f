//! `/api/v2/hooks`: list, item, create, update, delete, with MongoDB-shaped results.

use std::collections::HashMap;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{Map, Value, json};

use super::ApiState;
use super::error::{ApiError, ok};
use super::extract::{Body, Caller, Id, Params};
use crate::auth::{Perm, now_ms};
use crate::delivery::destination;
use crate::event::Event;
use crate::hook::id::{new_id, parse_id};
use crate::hook::payload::attempt_headers;
use crate::hook::{CompiledHook, HookDoc};
use crate::store::StoredHook;

/// Page size when a list request gives no `limit`.
const DEFAULT_LIMIT: u32 = 40;

pub async fn list(State(state): State<ApiState>, caller: Caller, params: Params) -> Result<Response, ApiError> {
    let domain = caller.scope(Perm::Read, &params)?;
    let (limit, offset) = params.paging(DEFAULT_LIMIT)?;
    let columns = params.columns.as_deref().map(Columns::parse).filter(|c| !c.0.is_empty());
    let hooks = state.store.hooks(&domain, limit, offset).await?;
    let docs: Vec<Value> = hooks
        .iter()
        .map(|h| {
            let doc = h.doc.to_api_json(&h.id);
            match &columns {
                Some(cols) => project(&doc, cols),
                None => doc,
            }
        })
        .collect();
    Ok(ok(docs))
}

pub async fn item(
    State(state): State<ApiState>,
    caller: Caller,
    params: Params,
    Id(id): Id,
) -> Result<Response, ApiError> {
    let domain = caller.scope(Perm::Read, &params)?;
    let id = parse_id(&id).ok_or_else(ApiError::bad_id)?;
    let hook = state.store.hook(&domain, &id).await?;
    Ok(ok(hook.map(|h| h.doc.to_api_json(&h.id))))
}

pub async fn create(
    State(state): State<ApiState>,
    caller: Caller,
    params: Params,
    body: Body,
) -> Result<Response, ApiError> {
    let domain = caller.scope(Perm::Create, &params)?;
    let doc = HookDoc::from_body(&body.json()?, &domain, state.limits)?;
    let compiled = doc.compile()?;
    check_destinations(&state, &compiled)?;
    let hook = StoredHook { id: new_id(), doc };
    let _writing = state.hook_writes.lock().await;
    let most = state.max_hooks_per_domain;
    if state.store.count_hooks(&domain).await? >= most {
        return Err(ApiError::bad_request(format!(
            "Bad request: domain {domain} already has {most} hooks, the most it may have (max_hooks_per_domain)"
        )));
    }
    state.store.insert_hook(&hook, now_ms()).await?;
    state.router.index.upsert(&hook.id, compiled);
    Ok(ok(json!({
        "result": {"ok": 1, "n": 1},
        "ops": [hook.doc.to_insert_json(&hook.id)],
        "insertedCount": 1,
        "insertedIds": [hook.id],
    })))
}

pub async fn update(
    State(state): State<ApiState>,
    caller: Caller,
    params: Params,
    Id(id): Id,
    body: Body,
) -> Result<Response, ApiError> {
    let domain = caller.scope(Perm::Update, &params)?;
    let id = parse_id(&id).ok_or_else(ApiError::bad_id)?;
    let body = body.json()?;
    let _writing = state.hook_writes.lock().await;
    // MongoDB's answer: `n` the hooks matched, `nModified` those that changed. A document equal
    // to the stored one, key order included, changes nothing and is not written, as MongoDB
    // did not write it.
    let (n, modified) = match state.store.hook(&domain, &id).await? {
        Some(stored) => {
            let hook = StoredHook { doc: stored.doc.updated(&body, state.limits)?, id };
            let compiled = hook.doc.compile()?;
            check_destinations(&state, &compiled)?;
            if same_document(&hook.doc, &stored.doc) {
                (1, 0)
            } else {
                let updated = state.store.update_hook(&hook, now_ms()).await?;
                if updated {
                    state.router.index.upsert(&hook.id, compiled);
                }
                (u8::from(updated), u8::from(updated))
            }
        }
        None => {
            // Nothing to update, but a bad body is still reported as such.
            HookDoc::from_body(&body, &domain, state.limits)?;
            (0, 0)
        }
    };
    Ok(ok(json!({"ok": 1, "n": n, "nModified": modified})))
}

/// Equal as MongoDB compared documents: with their keys' order, which `headers` are sent in and
/// `filter` is checked in (`==` on maps would ignore it).
fn same_document(a: &HookDoc, b: &HookDoc) -> bool {
    a == b && serde_json::to_string(a).ok() == serde_json::to_string(b).ok()
}

/// With `delivery.block_private_networks`, a URL that is a private address is refused when the
/// hook is written, not only at each attempt (a name is checked as it resolves, when sent).
fn check_destinations(state: &ApiState, hook: &CompiledHook) -> Result<(), ApiError> {
    match blocked_destination(state, hook) {
        Some(problem) => Err(ApiError::bad_request(format!("Bad request: {problem}"))),
        None => Ok(()),
    }
}

/// The first of the hook's URLs `delivery.block_private_networks` refuses, as `field: problem`.
fn blocked_destination(state: &ApiState, hook: &CompiledHook) -> Option<String> {
    if !state.block_private_networks {
        return None;
    }
    let auth = hook.auth.as_ref().map(|auth| ("auth.url", &auth.url));
    std::iter::once(("action.url", &hook.url))
        .chain(auth)
        .find_map(|(field, url)| destination::check_literal(url).err().map(|e| format!("{field}: {e}")))
}

pub async fn delete(
    State(state): State<ApiState>,
    caller: Caller,
    params: Params,
    Id(id): Id,
) -> Result<Response, ApiError> {
    let domain = caller.scope(Perm::Delete, &params)?;
    let id = parse_id(&id).ok_or_else(ApiError::bad_id)?;
    let _writing = state.hook_writes.lock().await;
    let deleted = state.store.delete_hook(&domain, &id).await?;
    if deleted {
        state.router.index.remove(&id);
    }
    Ok(ok(json!({"ok": 1, "n": u8::from(deleted)})))
}

/// `POST /api/v2/hooks/{id}/test`: would this hook fire for the event in the body, and what
/// exactly would it send? Nothing is sent.
pub async fn test(
    State(state): State<ApiState>,
    caller: Caller,
    params: Params,
    Id(id): Id,
    body: Body,
) -> Result<Response, ApiError> {
    let domain = caller.scope(Perm::Read, &params)?;
    let id = parse_id(&id).ok_or_else(ApiError::bad_id)?;
    let Value::Object(headers) = body.json()? else {
        return Err(ApiError::bad_request("Bad request: body must be an event (a JSON object)"));
    };
    let stored =
        state.store.hook(&domain, &id).await?.ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "Hook not found"))?;
    let hook = stored.doc.compile()?;
    Ok(ok(dry_run(&hook, &Event::new(headers), blocked_destination(&state, &hook))?))
}

/// The dry run's answer: the first reason the hook would not fire, and the request it renders.
/// `blocked`: the hook's URL `delivery.block_private_networks` refuses (a hook written before
/// it was turned on).
fn dry_run(hook: &CompiledHook, event: &Event, blocked: Option<String>) -> Result<Value, ApiError> {
    let name = event.hook_event_name();
    let domain = event.domain();
    let failed = hook.failed_filter(event);
    let reason = if !hook.enabled {
        Some("the hook is disabled".to_owned())
    } else if domain.as_deref() != Some(hook.domain.as_str()) {
        Some(match &domain {
            Some(d) => format!("the event's domain is {d:?}, the hook's is {:?}", hook.domain),
            None => "the event has no domain (variable_domain_name, variable_w_domain, Channel-Presence-ID, variable_presence_id)".to_owned(),
        })
    } else if name.as_deref() != Some(hook.event.as_str()) {
        Some(format!("the event is {:?}, the hook listens to {:?}", name.as_deref().unwrap_or(""), hook.event))
    } else {
        failed.map(|f| format!("filter on {:?} failed", f.header()))
    };
    let unsendable = |problem: String| ApiError::bad_request(format!("Bad request: {problem}; it would not be sent"));
    let id = uuid::Uuid::now_v7().to_string();
    let request =
        hook.render_checked(event, name.as_deref().unwrap_or(&hook.event), &id).map_err(|(_, p)| unsendable(p))?;
    let headers = attempt_headers(&request.headers, &id).map_err(unsendable)?;
    let mut notes = Vec::new();
    if hook.signing_key.is_some() {
        notes.push("webhook-timestamp and webhook-signature are added when it is sent".to_owned());
    }
    if let Some(auth) = &hook.auth {
        notes.push("headers are rendered after the auth pre-request, whose auth:* variables are empty here".to_owned());
        if auth.cookie {
            notes.push("the auth answer's cookies are added in the Cookie header when it is sent".to_owned());
        }
    }
    if let Some(problem) = blocked {
        notes.push(format!("{problem}: every attempt fails"));
    }
    Ok(json!({
        "matched": reason.is_none(),
        "reason": reason,
        "failedFilter": failed.map(|f| json!({
            "header": f.header(), "operation": f.operation(), "value": f.value(), "actual": event.get(f.header()),
        })),
        "request": {
            "method": request.method.as_str(),
            "url": request.url,
            "headers": headers
                .iter()
                .map(|(n, v)| json!([n.as_str(), String::from_utf8_lossy(v.as_bytes())]))
                .collect::<Vec<_>>(),
            "body": request.body,
        },
        "notes": notes,
    }))
}

/// How deep a hook document can be: request bodies are read to 128 levels of nesting.
const MAX_COLUMN_DEPTH: usize = 128;

/// `columns=_id,action.type,` as a tree of dotted paths, empty entries dropped; `None` keeps
/// the whole value, whatever deeper paths also name it. Built once per request, so projecting
/// a hook costs a lookup per field, however long the list of columns (a URL holds thousands).
#[derive(Debug, Default)]
struct Columns(HashMap<String, Option<Columns>>);

impl Columns {
    fn parse(raw: &str) -> Self {
        let mut root = Columns::default();
        for column in raw.split(',').map(str::trim).filter(|c| !c.is_empty()) {
            root.insert(column);
        }
        root
    }

    /// Adds a dotted path, without recursion: a URL holds a path of 30000 parts. Parts past
    /// [`MAX_COLUMN_DEPTH`] are left out, which changes nothing, as no hook is nested deeper.
    fn insert(&mut self, path: &str) {
        let mut parts = path.split('.').take(MAX_COLUMN_DEPTH + 1).enumerate().peekable();
        let mut node = self;
        while let Some((depth, part)) = parts.next() {
            if depth == MAX_COLUMN_DEPTH {
                return;
            }
            let entry = node.0.entry(part.to_owned()).or_insert_with(|| Some(Columns::default()));
            if parts.peek().is_none() {
                *entry = None;
                return;
            }
            match entry {
                Some(below) => node = below,
                None => return,
            }
        }
    }

    /// The fields of `value` the columns name, in the value's own order.
    fn pick(&self, value: &Value) -> Map<String, Value> {
        let Value::Object(map) = value else {
            return Map::new();
        };
        let picked = map.iter().filter_map(|(key, child)| match self.0.get(key)? {
            None => Some((key.clone(), child.clone())),
            Some(below) if child.is_object() => Some((key.clone(), Value::Object(below.pick(child)))),
            Some(_) => None,
        });
        picked.collect()
    }
}

/// A MongoDB inclusion projection: `_id` always, then the listed paths, in document order.
fn project(doc: &Value, columns: &Columns) -> Value {
    let mut out = Map::new();
    if let Some(id) = doc.get("_id") {
        out.insert("_id".into(), id.clone());
    }
    out.extend(columns.pick(doc));
    Value::Object(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn projection_keeps_id_and_dotted_paths_in_document_order() {
        let doc = json!({"_id": "1", "domain": "d", "event": "E", "enable": true,
            "action": {"type": "web", "method": "POST"}, "description": ""});
        let cols = Columns::parse("_id,enable,event,action.type,description,nope.x,");
        assert_eq!(
            project(&doc, &cols).to_string(),
            r#"{"_id":"1","event":"E","enable":true,"action":{"type":"web"},"description":""}"#
        );
        assert_eq!(project(&doc, &Columns::parse("unknown")), json!({"_id": "1"}));
        // A column named whole keeps it whole, before or after deeper paths into it.
        for whole in ["action.type,action", "action,action.type", "action,action,action.method.x"] {
            assert_eq!(project(&doc, &Columns::parse(whole))["action"], doc["action"], "{whole}");
        }
        // A path of 30000 parts is read as far as a hook can be deep, without recursion.
        let deep = ["action"; 30_000].join(".");
        assert_eq!(project(&doc, &Columns::parse(&deep)), json!({"_id": "1", "action": {}}));
    }
}
