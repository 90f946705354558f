//! The delivery log (`GET /api/v2/hooks/{id}/deliveries`) and manual retry
//! (`POST /api/v2/deliveries/{id}/retry`), both scoped to the caller's domain.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::json;

use super::ApiState;
use super::error::{ApiError, ok};
use super::extract::{Caller, Id, Params};
use crate::auth::{Perm, now_ms};
use crate::hook::id::parse_id;
use crate::store::{RetryOutcome, Status};

const DEFAULT_LIMIT: u32 = 40;

pub async fn list(
    State(state): State<ApiState>,
    caller: Caller,
    params: Params,
    Id(hook_id): Id,
) -> Result<Response, ApiError> {
    let domain = caller.scope(Perm::Read, &params)?;
    let hook_id = parse_id(&hook_id).ok_or_else(ApiError::bad_id)?;
    let status = match params.status.as_deref().filter(|s| !s.is_empty()) {
        None => None,
        Some(s) => Some(
            Status::parse(&s.to_ascii_lowercase())
                .ok_or_else(|| ApiError::bad_request("Bad request: status must be pending, delivered or failed"))?,
        ),
    };
    let (limit, offset) = params.paging(DEFAULT_LIMIT)?;
    let deliveries = state.store.deliveries(&domain, &hook_id, status, limit, offset).await?;
    Ok(ok(deliveries))
}

pub async fn retry(
    State(state): State<ApiState>,
    caller: Caller,
    params: Params,
    Id(id): Id,
) -> Result<Response, ApiError> {
    let domain = caller.scope(Perm::Update, &params)?;
    let id = uuid::Uuid::parse_str(&id).map_err(|_| ApiError::bad_id())?.to_string();
    match state.store.retry_delivery(&domain, &id, now_ms()).await? {
        RetryOutcome::Queued => {
            state.router.wake();
            Ok(ok(json!({"id": id, "status": Status::Pending.as_str()})))
        }
        RetryOutcome::NotFound => Err(ApiError::new(StatusCode::NOT_FOUND, "Delivery not found")),
        RetryOutcome::NotFailed(status) => Err(ApiError::new(
            StatusCode::CONFLICT,
            format!("Only failed deliveries can be retried; this one is {}", status.as_str()),
        )),
        RetryOutcome::HookDeleted => {
            Err(ApiError::new(StatusCode::CONFLICT, "The hook of this delivery was deleted; it cannot be retried"))
        }
    }
}
