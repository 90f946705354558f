//! Request extractors: the authenticated caller, the query parameters and the JSON body.
//! None of them answers with anything but the envelope.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use serde_json::{Map, Value};

use super::ApiState;
use super::error::ApiError;
use crate::auth::{Perm, Principal, Role, TokenError, now_ms};
use crate::event::UTF8_BOM;

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

    /// `limit` and `page` as a row limit and offset, read as the original engine read them:
    /// `parseInt(limit) || default`, so 0 is the default; a negative limit counts as its size
    /// (MongoDB's `limit(-n)`); a page below 1 is the first (`page > 0 ? (page - 1) * limit : 0`).
    pub fn paging(&self, default_limit: u32) -> Result<(u32, u64), ApiError> {
        let limit = match integer("limit", self.limit.as_deref())? {
            None | Some(0) => default_limit,
            Some(n) => u32::try_from(n.unsigned_abs()).unwrap_or(u32::MAX),
        };
        let page = integer("page", self.page.as_deref())?.filter(|p| *p > 0).unwrap_or(1);
        Ok((limit, (page.unsigned_abs() - 1).saturating_mul(u64::from(limit))))
    }
}

/// An optionally signed whole number, `None` when absent or blank. Anything else is a 400
/// naming the parameter: stricter than `parseInt`, which read `1e3` as 1 and `abc` as the
/// default. Values past `i64` saturate, as they still mean "all" or "past the end".
fn integer(name: &str, value: Option<&str>) -> Result<Option<i64>, ApiError> {
    let Some(v) = value.map(str::trim).filter(|v| !v.is_empty()) else {
        return Ok(None);
    };
    let digits = v.strip_prefix(['+', '-']).unwrap_or(v);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ApiError::bad_request(format!("Bad request: {name} must be an integer")));
    }
    let saturated = if v.starts_with('-') { i64::MIN } else { i64::MAX };
    Ok(Some(v.parse::<i64>().unwrap_or(saturated)))
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

/// The first token given: an empty one is none, as the original engine read them, so a client
/// that sends an emptied `X-Access-Token` with `?access_token=` is not refused.
fn token_of(parts: &Parts) -> Option<String> {
    let given = |t: &str| Some(t.trim().to_owned()).filter(|t| !t.is_empty());
    let header = |name| parts.headers.get(name).and_then(|v| v.to_str().ok());
    if let Some(t) = header("x-access-token").and_then(given) {
        return Some(t);
    }
    let bearer = header(header::AUTHORIZATION.as_str())
        .and_then(|auth| auth.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .and_then(|(_, token)| given(token));
    bearer.or_else(|| Params::parse(parts.uri.query()).access_token.as_deref().and_then(given))
}

impl FromRequestParts<ApiState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &ApiState) -> Result<Self, ApiError> {
        let token = token_of(parts).ok_or(TokenError::Invalid)?;
        let claims = state.keys.verify(&token, now_ms())?;
        let principal = claims.principal()?;
        if state.store.token_revoked_at(&principal.token_id).await?.is_some() {
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
        serde_json::from_slice(&bytes).map_err(|error| not_json_in(&bytes, error))
    }

    pub fn bytes(self) -> Result<Bytes, ApiError> {
        self.0
    }
}

/// The answer to a body that is not JSON.
pub fn not_json(error: impl std::fmt::Display) -> ApiError {
    ApiError::bad_request(format!("Bad request: body is not valid JSON: {error}"))
}

/// [`not_json`] for `body`, which `error` came from. A body that is not UTF-8 is told so, with
/// where: a Latin-1 body sent with no charset (Windows PowerShell 5.1's `-Body`) would otherwise
/// read "invalid unicode code point".
pub fn not_json_in(body: &[u8], error: serde_json::Error) -> ApiError {
    match std::str::from_utf8(body) {
        Err(bad) => not_json(format!(
            "byte {} is not UTF-8; send UTF-8, or name the body's charset in Content-Type",
            bad.valid_up_to() + 1
        )),
        Ok(_) => not_json(error),
    }
}

impl FromRequest<ApiState> for Body {
    type Rejection = std::convert::Infallible;

    async fn from_request(req: Request, state: &ApiState) -> Result<Self, Self::Rejection> {
        // Bodies are not decompressed: a compressed one is refused by its encoding rather than
        // reported as JSON that is not valid at its first byte.
        let encodings = req.headers().get_all(header::CONTENT_ENCODING).iter();
        let codings = encodings.flat_map(|v| {
            String::from_utf8_lossy(v.as_bytes()).split(',').map(|c| c.trim().to_owned()).collect::<Vec<_>>()
        });
        if let Some(encoding) = codings.into_iter().find(|c| !c.is_empty() && !c.eq_ignore_ascii_case("identity")) {
            let info = format!("Unsupported Content-Encoding {encoding:?}: send the body uncompressed");
            return Ok(Body(Err(ApiError::new(StatusCode::UNSUPPORTED_MEDIA_TYPE, info))));
        }
        let charset = charset(req.headers());
        let Ok(read) = tokio::time::timeout(state.body_timeout, Bytes::from_request(req, state)).await else {
            let info =
                format!("Request body was not received within {}", humantime::format_duration(state.body_timeout));
            return Ok(Body(Err(ApiError::new(StatusCode::REQUEST_TIMEOUT, info))));
        };
        let read = read.map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "Request body is too large")
            } else {
                ApiError::bad_request(format!("Bad request: {}", rejection.body_text()))
            }
        });
        Ok(Body(read.and_then(|bytes| utf8(bytes, charset.as_deref()))))
    }
}

/// The `charset` of the request's `Content-Type`, unquoted and in lower case.
fn charset(headers: &HeaderMap) -> Option<String> {
    let content_type = headers.get(header::CONTENT_TYPE)?.to_str().ok()?;
    content_type.split(';').skip(1).find_map(|parameter| {
        let (name, value) = parameter.split_once('=')?;
        name.trim().eq_ignore_ascii_case("charset").then(|| value.trim().trim_matches('"').to_ascii_lowercase())
    })
}

/// The body as UTF-8, which JSON is. A byte order mark says what the rest is: UTF-8's, as files
/// saved by Windows tools start with, is dropped, as the original's body parser dropped it;
/// UTF-16's is how Windows PowerShell 5.1 writes files (`>`, `Out-File`). Without one, the
/// charset its `Content-Type` names: UTF-16 (PowerShell's `charset=utf-16`), or ISO-8859-1, read
/// as windows-1252 as browsers read that label, when the body is not UTF-8 already (a UTF-8 body
/// labelled Latin-1 keeps its text). A body that is UTF-8 is read whatever its label; one that is
/// not, in a charset not read here, is 415 naming it. No charset: UTF-8.
fn utf8(bytes: Bytes, charset: Option<&str>) -> Result<Bytes, ApiError> {
    if bytes.starts_with(UTF8_BOM) {
        return Ok(bytes.slice(UTF8_BOM.len()..));
    }
    match (bytes.get(..2), charset) {
        (Some(b"\xFF\xFE"), _) => utf16(&bytes[2..], false),
        (Some(b"\xFE\xFF"), _) => utf16(&bytes[2..], true),
        // JSON starts with an ASCII character: a zero byte first is its big-endian high byte.
        (first, Some("utf-16")) => utf16(&bytes, first.is_some_and(|f| f[0] == 0)),
        (_, Some("utf-16le")) => utf16(&bytes, false),
        (_, Some("utf-16be")) => utf16(&bytes, true),
        (_, None | Some("utf-8" | "utf8" | "us-ascii")) => Ok(bytes),
        _ if std::str::from_utf8(&bytes).is_ok() => Ok(bytes),
        (_, Some("iso-8859-1" | "iso8859-1" | "latin1" | "l1" | "windows-1252" | "cp1252")) => {
            Ok(Bytes::from(bytes.iter().map(|&b| windows_1252(b)).collect::<String>()))
        }
        (_, Some(other)) => Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("Unsupported charset {other:?}: send UTF-8, UTF-16 or ISO-8859-1"),
        )),
    }
}

fn utf16(bytes: &[u8], big_endian: bool) -> Result<Bytes, ApiError> {
    let not_utf16 = || not_json("it is not the UTF-16 its byte order mark or Content-Type says");
    if bytes.len() % 2 != 0 {
        return Err(not_utf16());
    }
    let units = bytes.chunks_exact(2).map(|pair| match big_endian {
        true => u16::from_be_bytes([pair[0], pair[1]]),
        false => u16::from_le_bytes([pair[0], pair[1]]),
    });
    char::decode_utf16(units).collect::<Result<String, _>>().map(Bytes::from).map_err(|_| not_utf16())
}

/// A windows-1252 byte as a character: ISO-8859-1's, but for the typographic ones Windows puts
/// in 0x80..=0x9F (`’` is 0x92); the five it leaves unassigned stay control characters.
fn windows_1252(b: u8) -> char {
    const HIGH: [char; 32] = [
        '€', '\u{81}', '‚', 'ƒ', '„', '…', '†', '‡', 'ˆ', '‰', 'Š', '‹', 'Œ', '\u{8D}', 'Ž', '\u{8F}', '\u{90}', '‘',
        '’', '“', '”', '•', '–', '—', '˜', '™', 'š', '›', 'œ', '\u{9D}', 'ž', 'Ÿ',
    ];
    match b {
        0x80..=0x9F => HIGH[usize::from(b - 0x80)],
        _ => char::from(b),
    }
}

#[cfg(test)]
mod tests {
    use super::Params;

    fn paging(query: &str) -> Result<(u32, u64), String> {
        Params::parse(Some(query)).paging(40).map_err(|e| e.info)
    }

    #[test]
    fn paging_reads_edge_values_as_the_original_engine() {
        assert_eq!(paging(""), Ok((40, 0)));
        assert_eq!(paging("limit=0&page=0"), Ok((40, 0)));
        assert_eq!(paging("limit=-5&page=3"), Ok((5, 10)));
        assert_eq!(paging("limit=+5&page=-2"), Ok((5, 0)));
        assert_eq!(paging("limit=-9223372036854775808"), Ok((u32::MAX, 0)));
        assert_eq!(paging("limit=4294967295&page=99999999999999999999"), Ok((u32::MAX, u64::MAX)));
        assert_eq!(paging("limit=2&page=1.5"), Err("Bad request: page must be an integer".into()));
        assert_eq!(paging("limit=-&page=2"), Err("Bad request: limit must be an integer".into()));
    }
}
