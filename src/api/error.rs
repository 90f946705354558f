//! The Webitel error envelope, `{"status":"error","info":...,"code":...}`, and the one place
//! where errors of other modules become HTTP answers.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::auth::TokenError;
use crate::hook::DocError;
use crate::store::StoreError;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub info: String,
}

impl ApiError {
    pub fn new(status: StatusCode, info: impl Into<String>) -> Self {
        Self { status, info: info.into() }
    }

    pub fn bad_request(info: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, info)
    }

    pub fn forbidden() -> Self {
        Self::new(StatusCode::FORBIDDEN, "Permission denied!")
    }

    pub fn domain_required() -> Self {
        Self::bad_request("Bad request: domain is required.")
    }

    pub fn bad_id() -> Self {
        Self::bad_request("Bad id")
    }
}

impl From<TokenError> for ApiError {
    fn from(e: TokenError) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, e.to_string())
    }
}

impl From<DocError> for ApiError {
    fn from(e: DocError) -> Self {
        Self::bad_request(format!("Bad request: {e}"))
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        tracing::error!(error = %e, "store request failed");
        match e {
            StoreError::Unavailable(_) => Self::new(StatusCode::SERVICE_UNAVAILABLE, "Store unavailable, try again"),
            _ => Self::new(StatusCode::INTERNAL_SERVER_ERROR, "Internal error"),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({"status": "error", "info": self.info, "code": self.status.as_u16()});
        (self.status, Json(body)).into_response()
    }
}

/// The success envelope, `{"status":"OK","data":...}`.
pub fn ok(data: impl serde::Serialize) -> Response {
    Json(json!({"status": "OK", "data": data})).into_response()
}
