//! Request extractors: the authenticated caller, the query parameters and the JSON body.
//! None of them answers with anything but the envelope.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use serde_json::{Map, Value};

use super::ApiState;
use super::error::ApiError;
use crate::auth::{Perm, Principal, Role, TokenError, now_ms};

/// Query parameters the API understands; the rest are ignored.
#[derive(Debug, Default)]
pub struct Params {
    pub domain: Option<String>,
    pub limit: Option<String>,
    pub page: Option<String>,
    pub columns: Option<String>,
    pub status: Option<String>,
    access_token: Option<String>,
}

impl Params {
    fn parse(query: Option<&str>) -> Self {
        let mut p = Params::default();
        for (key, value) in url::form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
            let slot = match key.as_ref() {
                "domain" => &mut p.domain,
                "limit" => &mut p.limit,
                "page" => &mut p.page,
                "columns" => &mut p.columns,
                "status" => &mut p.status,
                "access_token" => &mut p.access_token,
                _ => continue,
            };
            slot.get_or_insert_with(|| value.into_owned());
        }
        p
    }

    /// A positive integer parameter, `default` when absent.
    pub fn number(&self, name: &str, value: Option<&str>, default: u32) -> Result<u32, ApiError> {
        match value.map(str::trim).filter(|v| !v.is_empty()) {
            None => Ok(default),
            Some(v) => v
                .parse::<u32>()
                .ok()
                .filter(|n| *n >= 1)
                .ok_or_else(|| ApiError::bad_request(format!("Bad request: {name} must be a positive integer"))),
        }
    }

    /// `limit` and `page` as a row limit and offset.
    pub fn paging(&self, default_limit: u32) -> Result<(u32, u64), ApiError> {
        let limit = self.number("limit", self.limit.as_deref(), default_limit)?;
        let page = self.number("page", self.page.as_deref(), 1)?;
        Ok((limit, u64::from(page - 1) * u64::from(limit)))
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Params {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Params::parse(parts.uri.query()))
    }
}

/// The caller, authenticated by `X-Access-Token`, `Authorization: Bearer` or `?access_token=`.
#[derive(Debug, Clone)]
pub struct Caller(pub Principal);

impl Caller {
    /// Checks the permission; returns the caller's own domain, or `None` for root.
    pub fn own_domain(&self, perm: Perm) -> Result<Option<&str>, ApiError> {
        if !self.0.role.allows(perm) {
            return Err(ApiError::forbidden());
        }
        match (&self.0.domain, self.0.role) {
            (Some(own), _) => Ok(Some(own)),
            (None, Role::Root) => Ok(None),
            (None, _) => Err(ApiError::forbidden()),
        }
    }

    /// Checks the permission and returns the domain the request acts in: a domain token's
    /// own, whatever `?domain=` says, or root's `?domain=`.
    pub fn scope(&self, perm: Perm, params: &Params) -> Result<String, ApiError> {
        match self.own_domain(perm)? {
            Some(own) => Ok(own.to_owned()),
            None => {
                let domain =
                    params.domain.clone().filter(|d| !d.trim().is_empty()).ok_or_else(ApiError::domain_required)?;
                if domain.len() > 255 || domain.chars().any(|c| c.is_control() || c.is_whitespace()) {
                    return Err(ApiError::bad_request("Bad request: domain must be a domain name"));
                }
                Ok(domain)
            }
        }
    }
}

fn token_of(parts: &Parts) -> Option<String> {
    let header = |name| parts.headers.get(name).and_then(|v| v.to_str().ok());
    if let Some(t) = header("x-access-token") {
        return Some(t.to_owned());
    }
    let bearer = header(header::AUTHORIZATION.as_str())
        .and_then(|auth| auth.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim().to_owned());
    bearer.or_else(|| Params::parse(parts.uri.query()).access_token)
}

impl FromRequestParts<ApiState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &ApiState) -> Result<Self, ApiError> {
        let token = token_of(parts).ok_or(TokenError::Invalid)?;
        let claims = state.keys.verify(&token, now_ms())?;
        let principal = claims.principal()?;
        if state.store.token_revoked(&principal.token_id).await? {
            return Err(TokenError::Invalid.into());
        }
        Ok(Caller(principal))
    }
}

/// The `{id}` of a route, as text. An id that is not even UTF-8 is a `Bad id` in the
/// envelope, like any other malformed id (axum would answer in plain text).
pub struct Id(pub String);

impl<S: Send + Sync> FromRequestParts<S> for Id {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match axum::extract::Path::<String>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(id)) => Ok(Id(id)),
            Err(_) => Err(ApiError::bad_id()),
        }
    }
}

/// The request body, read but not yet judged: a handler checks permissions before it looks at
/// the body, so a caller without rights learns nothing from body errors.
pub struct Body(Result<Bytes, ApiError>);

impl Body {
    /// The body as a JSON value; an empty body is an empty object, as the original engine read it.
    pub fn json(self) -> Result<Value, ApiError> {
        let bytes = self.0?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(Value::Object(Map::new()));
        }
        serde_json::from_slice(&bytes).map_err(not_json)
    }

    pub fn bytes(self) -> Result<Bytes, ApiError> {
        self.0
    }
}

/// The answer to a body that is not JSON.
pub fn not_json(error: impl std::fmt::Display) -> ApiError {
    ApiError::bad_request(format!("Bad request: body is not valid JSON: {error}"))
}

impl<S: Send + Sync> FromRequest<S> for Body {
    type Rejection = std::convert::Infallible;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        Ok(Body(Bytes::from_request(req, state).await.map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "Request body is too large")
            } else {
                ApiError::bad_request(format!("Bad request: {}", rejection.body_text()))
            }
        })))
    }
}
