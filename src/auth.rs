//! Access tokens and permissions, as the Webitel engine had them.
//!
//! A token is an HS256 JWT whose payload is
//! `{"id","exp" (epoch MILLISECONDS),"d" (domain or null),"t" ("domain"|"root"),"v":2,"r" (role)}`.
//! The `exp` unit is why expiry is checked here rather than by the JWT library.

use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

/// Who a token speaks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Every domain; must name one with `?domain=`.
    Root,
    /// Every hook permission within its domain.
    Admin,
    /// No hook permission.
    User,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Root => "root",
            Role::Admin => "admin",
            Role::User => "user",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "root" => Some(Role::Root),
            "admin" => Some(Role::Admin),
            "user" => Some(Role::User),
            _ => None,
        }
    }

    /// The ACL of resource `hook`: letters r, c, u, d.
    pub fn allows(self, _perm: Perm) -> bool {
        self != Role::User
    }
}

/// An ACL letter on resource `hook`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Perm {
    Read,
    Create,
    Update,
    Delete,
}

/// The JWT payload, field names as on the wire.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Claims {
    pub id: String,
    /// Expiry in epoch milliseconds.
    #[serde(deserialize_with = "epoch_ms")]
    pub exp: i64,
    pub d: Option<String>,
    pub t: String,
    #[serde(default = "version")]
    pub v: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub r: Option<String>,
}

/// `exp` as the original read it, a JSON number compared with `Date.now()`: a fraction of a
/// millisecond (a script's `time.time() * 1000 + ttl`) is rounded up, so the token is still
/// valid in the millisecond it expires in, as `exp <= now` found it. Values past `i64` saturate.
fn epoch_ms<'de, D: serde::Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    let n = serde_json::Number::deserialize(d)?;
    match (n.as_i64(), n.as_u64(), n.as_f64()) {
        (Some(ms), _, _) => Ok(ms),
        (None, Some(_), _) => Ok(i64::MAX),
        (None, None, Some(ms)) => Ok(ms.ceil() as i64),
        (None, None, None) => Err(serde::de::Error::custom("exp is not a number")),
    }
}

fn version() -> i64 {
    2
}

/// A verified caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub token_id: String,
    pub role: Role,
    /// `None` for root, which chooses a domain per request.
    pub domain: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("Invalid token")]
    Invalid,
    #[error("Token Expired")]
    Expired,
}

impl Claims {
    pub fn new(id: String, exp_ms: i64, role: Role, domain: Option<String>) -> Self {
        let root = role == Role::Root;
        Claims {
            id,
            exp: exp_ms,
            d: if root { None } else { domain },
            t: if root { "root" } else { "domain" }.into(),
            v: 2,
            r: Some(role.as_str().into()),
        }
    }

    /// What the token grants. A domain token without `r` is shaped like the Webitel engine's
    /// own (the seed document's admin calls use one), so it gets the hook permissions an admin
    /// has; a domain token must name its domain, and every token needs an id.
    pub fn principal(&self) -> Result<Principal, TokenError> {
        // A token is revoked by its id: one without could never be.
        if self.id.is_empty() {
            return Err(TokenError::Invalid);
        }
        let role = match (self.t.as_str(), self.r.as_deref()) {
            ("root", None | Some("root")) => Role::Root,
            ("domain", None | Some("admin")) => Role::Admin,
            ("domain", Some("root")) | ("root", _) => return Err(TokenError::Invalid),
            ("domain", _) => Role::User,
            _ => return Err(TokenError::Invalid),
        };
        let domain = match role {
            Role::Root => None,
            _ => Some(self.d.clone().filter(|d| !d.is_empty()).ok_or(TokenError::Invalid)?),
        };
        Ok(Principal { token_id: self.id.clone(), role, domain })
    }
}

/// Signs and verifies tokens with the service's secret.
#[derive(Clone)]
pub struct TokenKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
}

impl std::fmt::Debug for TokenKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenKeys(..)")
    }
}

impl TokenKeys {
    /// Keys for a secret; `None` when the secret is empty.
    pub fn new(secret: &[u8]) -> Option<Self> {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.validate_exp = false;
        validation.required_spec_claims.clear();
        // The signature and the stored id say whom a token is for; an `aud` claim (a token
        // minted by a script or an identity service with the same secret) is not refused.
        validation.validate_aud = false;
        Some(Self {
            encoding: EncodingKey::from_secret(secret).ok()?,
            decoding: DecodingKey::from_secret(secret).ok()?,
            validation,
        })
    }

    pub fn sign(&self, claims: &Claims) -> String {
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &self.encoding).expect("HS256 signing cannot fail")
    }

    /// Checks signature, format and expiry against `now_ms`.
    pub fn verify(&self, token: &str, now_ms: i64) -> Result<Claims, TokenError> {
        let data = jsonwebtoken::decode::<Claims>(token.trim(), &self.decoding, &self.validation)
            .map_err(|_| TokenError::Invalid)?;
        if data.claims.exp <= now_ms {
            return Err(TokenError::Expired);
        }
        Ok(data.claims)
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn keys() -> TokenKeys {
        TokenKeys::new(b"0123456789abcdef0123456789abcdef").unwrap()
    }

    #[test]
    fn signs_with_the_webitel_header_and_ms_expiry() {
        let claims = Claims::new("id-1".into(), 1_900_000_000_000, Role::Admin, Some("a.com".into()));
        let token = keys().sign(&claims);
        assert!(token.starts_with("eyJ0eXAiOiJKV1QiLCJhbGciOiJIUzI1NiJ9."), "{token}");
        assert_eq!(keys().verify(&token, 1_800_000_000_000), Ok(claims));
    }

    #[test]
    fn rejects_expired_tampered_and_foreign_tokens() {
        let claims = Claims::new("id".into(), 1_000, Role::Root, None);
        let token = keys().sign(&claims);
        assert_eq!(keys().verify(&token, 1_000), Err(TokenError::Expired));
        assert_eq!(keys().verify(&token, 999).map(|c| c.t), Ok("root".into()));
        let mut tampered = token.clone();
        tampered.push('x');
        assert_eq!(keys().verify(&tampered, 0), Err(TokenError::Invalid));
        let foreign = TokenKeys::new(b"another secret, another service!").unwrap().sign(&claims);
        assert_eq!(keys().verify(&foreign, 0), Err(TokenError::Invalid));
        assert_eq!(keys().verify("not.a.token", 0), Err(TokenError::Invalid));
    }

    #[test]
    fn an_audience_claim_is_not_refused() {
        let claims =
            json!({"id": "i", "exp": 2_000, "d": "a.com", "t": "domain", "v": 2, "r": "admin", "aud": "webitel"});
        let token = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &keys().encoding).unwrap();
        assert_eq!(keys().verify(&token, 1_000).map(|c| c.d), Ok(Some("a.com".into())));
    }

    #[test]
    fn principal_follows_type_and_role() {
        let p = |t: &str, r: Option<&str>, d: Option<&str>| {
            Claims { id: "i".into(), exp: 1, d: d.map(Into::into), t: t.into(), v: 2, r: r.map(Into::into) }
                .principal()
                .map(|p| (p.role, p.domain))
        };
        assert_eq!(p("root", None, None), Ok((Role::Root, None)));
        assert_eq!(p("domain", Some("admin"), Some("a")), Ok((Role::Admin, Some("a".into()))));
        assert_eq!(p("domain", None, Some("a")), Ok((Role::Admin, Some("a".into()))));
        assert_eq!(p("domain", Some("user"), Some("a")), Ok((Role::User, Some("a".into()))));
        assert_eq!(p("domain", Some("supervisor"), Some("a")), Ok((Role::User, Some("a".into()))));
        assert_eq!(p("domain", Some("admin"), None), Err(TokenError::Invalid));
        assert_eq!(p("domain", Some("root"), Some("a")), Err(TokenError::Invalid));
        assert_eq!(p("root", Some("admin"), None), Err(TokenError::Invalid));
    }
}
