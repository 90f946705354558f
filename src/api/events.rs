//! `POST /api/v2/events`: HTTP ingest, the first event source. Answers only once the events'
//! deliveries are committed.

use axum::extract::State;
use axum::response::Response;
use serde_json::json;
use serde_json::value::RawValue;

use super::ApiState;
use super::error::{ApiError, ok};
use super::extract::{Body, Caller, not_json, not_json_in};
use crate::auth::Perm;
use crate::event::{EventError, Incoming};

/// Largest ingest body.
pub const BODY_LIMIT: usize = crate::event::MAX_BODY;

pub async fn ingest(State(state): State<ApiState>, caller: Caller, body: Body) -> Result<Response, ApiError> {
    // Injecting events creates deliveries: it takes the create permission. A domain token
    // may only inject events of its own domain.
    let own_domain = caller.own_domain(Perm::Create)?;
    let _working = state.ingest.acquire().await.expect("the ingest semaphore is never closed");
    let events = events_of(&body.bytes()?)?;
    if let Some(domain) = own_domain {
        if events.iter().any(|e| e.headers().domain().as_deref() != Some(domain)) {
            return Err(ApiError::forbidden());
        }
    }
    let accepted = state.router.accept(&events, false).await?;
    Ok(ok(json!({"accepted": accepted.events, "deliveries": accepted.deliveries})))
}

/// One event object, or an array of them, each kept as JSON text for the router (see
/// [`Incoming`]). The body must be valid JSON throughout, and not empty.
fn events_of(whole: &[u8]) -> Result<Vec<Incoming>, ApiError> {
    let body = whole.trim_ascii();
    let event = |text: &str| match Incoming::from_text(text.to_owned()) {
        Ok(event) => Ok(event),
        Err(EventError::Json(error)) => Err(not_json(error)),
        Err(error) => Err(ApiError::bad_request(format!("Bad request: {error}"))),
    };
    match body.first() {
        // Not an empty event: that would be an event without a domain, which a domain token
        // is refused (403) and root's router drops, both of which hide the caller's mistake.
        None => Err(ApiError::bad_request("Bad request: body is empty")),
        Some(b'[') => {
            // Most batches are FreeSWITCH's flat objects, which the quick look splits alone.
            if let Some(events) = std::str::from_utf8(body).ok().and_then(Incoming::all_from_text) {
                return Ok(events);
            }
            let items: Vec<&RawValue> = serde_json::from_slice(body).map_err(|error| not_json_in(whole, error))?;
            items
                .iter()
                .enumerate()
                .map(|(i, item)| match item.get().starts_with('{') {
                    true => event(item.get()),
                    false => Err(ApiError::bad_request(format!("Bad request: event {i} is not a JSON object"))),
                })
                .collect()
        }
        _ => match serde_json::from_slice::<&RawValue>(body).map_err(|error| not_json_in(whole, error))? {
            item if item.get().starts_with('{') => Ok(vec![event(item.get())?]),
            _ => Err(ApiError::bad_request("Bad request: body must be an event object or an array of them")),
        },
    }
}
