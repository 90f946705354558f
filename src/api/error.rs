//! The Webitel error envelope, `{"status":"error","info":...,"code":...}`, and the one place
//! where errors of other modules become HTTP answers.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
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
        let unavailable =
            |why: &str| Self::new(StatusCode::SERVICE_UNAVAILABLE, format!("Store unavailable: {why}, try again"));
        match &e {
            StoreError::Unavailable(_) => unavailable("cannot reach the database"),
            StoreError::Database(db) => match db.as_database_error().and_then(|d| d.code()).as_deref() {
                // SQLite's primary result codes, also inside extended ones (low byte).
                Some(code) if sqlite_code(code) == Some(13) => unavailable("the disk is full"),
                Some(code) if sqlite_code(code) == Some(8) => unavailable("the database is read-only"),
                Some(code) if sqlite_code(code) == Some(10) => unavailable("the database cannot write to disk"),
                Some(code) if matches!(sqlite_code(code), Some(5 | 6)) => unavailable("the database is busy"),
                // PostgreSQL: a read-only transaction (a standby).
                Some("25006") => unavailable("the database is not accepting writes"),
                _ => Self::new(StatusCode::INTERNAL_SERVER_ERROR, "Internal error"),
            },
            _ => Self::new(StatusCode::INTERNAL_SERVER_ERROR, "Internal error"),
        }
    }
}

/// The primary result code of an SQLite (extended) code given as text.
fn sqlite_code(code: &str) -> Option<i64> {
    code.parse::<i64>().ok().map(|c| c & 0xff)
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({"status": "error", "info": self.info, "code": self.status.as_u16()});
        (self.status, json_utf8(body)).into_response()
    }
}

/// The success envelope, `{"status":"OK","data":...}`.
pub fn ok(data: impl serde::Serialize) -> Response {
    json_utf8(json!({"status": "OK", "data": data}))
}

/// A JSON answer whose `Content-Type` names its charset, as Express's `res.json` wrote it: some
/// clients (Windows PowerShell 5.1) read a body without one as ISO-8859-1.
fn json_utf8(body: serde_json::Value) -> Response {
    let mut response = Json(body).into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json; charset=utf-8"));
    response
}
