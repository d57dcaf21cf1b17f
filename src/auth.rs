//! Passwords (argon2id) and tokens (HS256 JWTs). Hashing is slow on
//! purpose, so callers run it off the async threads.

use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use argon2::{Algorithm, Argon2, Params, Version};
use jsonwebtoken::{DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::config::AuthConfig;
use crate::domain::{Id, Password};

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("invalid or expired token")]
    BadToken,
    #[error("wrong username or password")]
    BadCredentials,
    #[error("password hashing failed: {0}")]
    Hash(String),
}

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    sub: String,
    iat: u64,
    exp: u64,
    /// The user's token generation when the token was issued: a password
    /// change, role change, ban or "log out everywhere" moves the user's
    /// generation on, and every older token stops working. Tokens from
    /// before generations existed carry none and count as 0.
    #[serde(default, rename = "gen")]
    generation: u64,
    /// The token's own id, so one token can be revoked by itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    jti: Option<String>,
}

/// What a valid token says. Whether the user still exists, is at this
/// generation and has not revoked this token is the caller's check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verified {
    pub user: Id,
    pub generation: u64,
    /// The token's id: its `jti`, or for a token issued before tokens had
    /// ids, one derived from the token itself, so that any token can be
    /// ended on its own.
    pub token: u128,
    /// Expiry, seconds since the epoch.
    pub exp: u64,
}

/// Keys and parameters, built once at start.
pub struct Auth {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    params: Params,
    ttl_secs: u64,
    /// A hash of a random password, verified against when the user does not
    /// exist, so a login for an unknown name costs the same time.
    dummy_hash: String,
    /// A key of its own for signing short-lived sign-in state (OpenID
    /// Connect), derived from the token secret so every node of a cluster
    /// has it, and never able to sign a token.
    state_key: [u8; 32],
}

impl Auth {
    pub fn new(config: &AuthConfig, stored_secret: &[u8]) -> Result<Auth, AuthError> {
        let secret: &[u8] = if config.jwt_secret.is_empty() {
            stored_secret
        } else {
            config.jwt_secret.as_bytes()
        };
        let params = Params::new(
            config.argon2_memory_kib,
            config.argon2_iterations,
            config.argon2_parallelism,
            None,
        )
        .map_err(|e| AuthError::Hash(e.to_string()))?;
        // Only HS256 is accepted: a token that names `none` or an RSA
        // algorithm is refused before its signature is looked at.
        let mut validation = Validation::new(jsonwebtoken::Algorithm::HS256);
        validation.leeway = 0;
        validation.set_required_spec_claims(&["exp", "sub"]);
        let mut auth = Auth {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            validation,
            params,
            ttl_secs: config.token_ttl_secs,
            dummy_hash: String::new(),
            state_key: {
                use sha2::Digest;
                let mut h = sha2::Sha256::new();
                h.update(b"confab sign-in state\0");
                h.update(secret);
                h.finalize().into()
            },
        };
        let mut random = [0u8; 16];
        getrandom::fill(&mut random).map_err(|e| AuthError::Hash(e.to_string()))?;
        auth.dummy_hash = auth.hash_bytes(&random)?;
        Ok(auth)
    }

    fn hasher(&self) -> Argon2<'static> {
        Argon2::new(Algorithm::Argon2id, Version::V0x13, self.params.clone())
    }

    fn hash_bytes(&self, pw: &[u8]) -> Result<String, AuthError> {
        self.hasher()
            .hash_password(pw)
            .map(|h| h.to_string())
            .map_err(|e| AuthError::Hash(e.to_string()))
    }

    pub fn hash_password(&self, pw: &Password) -> Result<String, AuthError> {
        self.hash_bytes(pw.expose().as_bytes())
    }

    /// Checks `pw` against `hash`, or against a dummy hash when there is no
    /// user, so the answer takes the same time either way.
    pub fn verify_password(&self, pw: &str, hash: Option<&str>) -> bool {
        let target = hash.unwrap_or(&self.dummy_hash);
        let ok = match PasswordHash::new(target) {
            Ok(parsed) => self
                .hasher()
                .verify_password(pw.as_bytes(), &parsed)
                .is_ok(),
            Err(_) => false,
        };
        ok && hash.is_some()
    }

    /// A token for `user` at token generation `generation`.
    pub fn issue(&self, user: Id, generation: u64) -> String {
        let now = now_secs();
        let claims = Claims {
            sub: user.to_string(),
            iat: now,
            exp: now + self.ttl_secs,
            generation,
            jti: Some(format!("{:032x}", Id::new().0)),
        };
        // HS256 signing of a small struct cannot fail.
        jsonwebtoken::encode(
            &Header::new(jsonwebtoken::Algorithm::HS256),
            &claims,
            &self.encoding,
        )
        .unwrap_or_default()
    }

    /// The key for signing sign-in state (not tokens).
    pub fn state_key(&self) -> &[u8; 32] {
        &self.state_key
    }

    /// What a validly signed, unexpired token says.
    pub fn verify(&self, token: &str) -> Result<Verified, AuthError> {
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map_err(|_| AuthError::BadToken)?;
        let c = data.claims;
        let id = match c.jti.as_deref() {
            Some(j) => u128::from_str_radix(j, 16).map_err(|_| AuthError::BadToken)?,
            None => {
                use sha2::Digest;
                let digest = sha2::Sha256::digest(token.as_bytes());
                let mut first = [0u8; 16];
                first.copy_from_slice(&digest[..16]);
                u128::from_be_bytes(first)
            }
        };
        Ok(Verified {
            user: Id::parse("token", &c.sub).map_err(|_| AuthError::BadToken)?,
            generation: c.generation,
            token: id,
            exp: c.exp,
        })
    }
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth() -> Auth {
        let config = AuthConfig {
            argon2_memory_kib: 64,
            argon2_iterations: 1,
            ..AuthConfig::default()
        };
        Auth::new(&config, &[7u8; 64]).unwrap()
    }

    #[test]
    fn passwords_verify() {
        let a = auth();
        let h = a
            .hash_password(&Password::parse("correct horse").unwrap())
            .unwrap();
        assert!(h.starts_with("$argon2id$"));
        assert!(a.verify_password("correct horse", Some(&h)));
        assert!(!a.verify_password("wrong horse!", Some(&h)));
        assert!(!a.verify_password("correct horse", None));
    }

    #[test]
    fn tokens_round_trip_and_reject_tampering() {
        let a = auth();
        let id = Id::new();
        let t = a.issue(id, 3);
        let v = a.verify(&t).unwrap();
        assert_eq!((v.user, v.generation), (id, 3));
        assert_ne!(a.verify(&a.issue(id, 3)).unwrap().token, v.token);
        let mut tampered = t.clone();
        tampered.pop();
        tampered.push(if t.ends_with('A') { 'B' } else { 'A' });
        assert!(a.verify(&tampered).is_err());
        let other = Auth::new(&AuthConfig::default(), &[8u8; 64]).unwrap();
        assert!(other.verify(&t).is_err());
    }

    /// A token issued before tokens had ids still has one to be ended by:
    /// the same for the same token, different for another.
    #[test]
    fn tokens_without_an_id_get_one_from_themselves() {
        let a = auth();
        let id = Id::new();
        let old = |iat: u64| {
            let claims = Claims {
                sub: id.to_string(),
                iat,
                exp: now_secs() + 100,
                generation: 0,
                jti: None,
            };
            jsonwebtoken::encode(
                &Header::default(),
                &claims,
                &EncodingKey::from_secret(&[7u8; 64]),
            )
            .unwrap()
        };
        let (one, two) = (old(1), old(2));
        assert_eq!(a.verify(&one).unwrap().token, a.verify(&one).unwrap().token);
        assert_ne!(a.verify(&one).unwrap().token, a.verify(&two).unwrap().token);
        assert_eq!(a.verify(&one).unwrap().user, id);
    }

    #[test]
    fn unsigned_tokens_are_refused() {
        let a = auth();
        // {"alg":"none"} header with a valid-looking body and no signature.
        let header = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0";
        let body = format!(
            "{{\"sub\":\"{}\",\"iat\":1,\"exp\":{}}}",
            Id::new(),
            now_secs() + 1000
        );
        use std::fmt::Write;
        let b64 = base64url(body.as_bytes());
        let mut token = String::new();
        let _ = write!(token, "{header}.{b64}.");
        assert!(a.verify(&token).is_err());
    }

    /// A token that names RS256 (or any algorithm but HS256) is refused
    /// even when its HMAC over the same secret is right: no algorithm
    /// confusion.
    #[test]
    fn other_algorithms_are_refused() {
        let a = auth();
        let id = Id::new();
        for alg in [
            jsonwebtoken::Algorithm::HS384,
            jsonwebtoken::Algorithm::HS512,
        ] {
            let claims = Claims {
                sub: id.to_string(),
                iat: now_secs(),
                exp: now_secs() + 100,
                generation: 0,
                jti: None,
            };
            let t = jsonwebtoken::encode(
                &Header::new(alg),
                &claims,
                &EncodingKey::from_secret(&[7u8; 64]),
            )
            .unwrap();
            assert!(a.verify(&t).is_err(), "{alg:?}");
        }
        let header = base64url(br#"{"alg":"RS256","typ":"JWT"}"#);
        let body =
            base64url(format!(r#"{{"sub":"{id}","iat":1,"exp":{}}}"#, now_secs() + 100).as_bytes());
        let forged = format!("{header}.{body}.{}", base64url(&[0u8; 32]));
        assert!(a.verify(&forged).is_err());
    }

    #[test]
    fn default_hashes_use_owasp_parameters() {
        let a = Auth::new(&AuthConfig::default(), &[1u8; 64]).unwrap();
        let h = a
            .hash_password(&Password::parse("long enough").unwrap())
            .unwrap();
        assert!(h.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{h}");
    }

    fn base64url(data: &[u8]) -> String {
        const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let mut out = String::new();
        for chunk in data.chunks(3) {
            let b = [
                chunk[0],
                *chunk.get(1).unwrap_or(&0),
                *chunk.get(2).unwrap_or(&0),
            ];
            let n = (b[0] as u32) << 16 | (b[1] as u32) << 8 | b[2] as u32;
            for i in 0..=chunk.len() {
                out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
            }
        }
        out
    }
}
