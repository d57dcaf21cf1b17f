//! Verifying JWTs that confab did not sign: the operator's app's tokens
//! (`[auth.external]`) and OpenID Connect ID tokens. A key set fetched
//! from a JWKS URL is cached, fetched again when a token names a key it
//! does not hold (at most once per `min_interval`) and when it is older
//! than `refresh`.
//!
//! Each key accepts exactly one algorithm, fixed by the key itself (the
//! shared secret: HS256; an RSA key: RS256 or the JWK's own RSA `alg`; a
//! P-256 key: ES256; an Ed25519 key: EdDSA), never by the token's header:
//! `none` and HS256 signed with a public key (algorithm confusion) cannot
//! pass. A JWKS never supplies HMAC keys.

use std::sync::RwLock;
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Map, Value};

use crate::outbound::Outbound;

/// A token that does not verify. Why stays in the server's log.
#[derive(Debug, thiserror::Error)]
#[error("token refused: {0}")]
pub struct Refused(pub String);

struct Key {
    kid: Option<String>,
    alg: Algorithm,
    key: DecodingKey,
}

struct Cached {
    keys: Vec<Key>,
    /// When the set was last asked for (successfully or not).
    tried: Option<Instant>,
    fetched: Option<Instant>,
}

/// The keys at a JWKS URL.
pub struct KeySet {
    url: String,
    outbound: Outbound,
    min_interval: Duration,
    refresh: Duration,
    cached: RwLock<Cached>,
    fetching: tokio::sync::Mutex<()>,
}

impl KeySet {
    pub fn new(
        url: String,
        outbound: Outbound,
        min_interval: Duration,
        refresh: Duration,
    ) -> KeySet {
        KeySet {
            url,
            outbound,
            min_interval,
            refresh,
            cached: RwLock::new(Cached {
                keys: Vec::new(),
                tried: None,
                fetched: None,
            }),
            fetching: tokio::sync::Mutex::new(()),
        }
    }

    /// The key a token's `kid` names (with no `kid`: the only key).
    fn find(&self, kid: Option<&str>) -> Option<(Algorithm, DecodingKey)> {
        let cached = self.cached.read().ok()?;
        let key = match kid {
            Some(kid) => cached.keys.iter().find(|k| k.kid.as_deref() == Some(kid)),
            None if cached.keys.len() == 1 => cached.keys.first(),
            None => None,
        }?;
        Some((key.alg, key.key.clone()))
    }

    /// Fetches the set again if it does not hold `kid` or is stale, unless
    /// it was asked for within the minimum interval.
    pub async fn ensure(&self, kid: Option<&str>) {
        let due = |c: &Cached| {
            let recent = c.tried.is_some_and(|t| t.elapsed() < self.min_interval);
            let stale = c.fetched.is_none_or(|t| t.elapsed() >= self.refresh);
            !recent && (stale || self.find(kid).is_none())
        };
        if !self.cached.read().map(|c| due(&c)).unwrap_or(false) {
            return;
        }
        let _one_at_a_time = self.fetching.lock().await;
        if !self.cached.read().map(|c| due(&c)).unwrap_or(false) {
            return;
        }
        if let Ok(mut c) = self.cached.write() {
            c.tried = Some(Instant::now());
        }
        match self.fetch().await {
            Ok(keys) => {
                tracing::info!(url = %self.url, keys = keys.len(), "key set fetched");
                if let Ok(mut c) = self.cached.write() {
                    c.keys = keys;
                    c.fetched = Some(Instant::now());
                }
            }
            // The keys held so far stay in use.
            Err(e) => tracing::warn!(url = %self.url, error = %e, "key set fetch failed"),
        }
    }

    async fn fetch(&self) -> Result<Vec<Key>, String> {
        let resp = self
            .outbound
            .send_capped(
                hyper::Method::GET,
                &self.url,
                true,
                vec![("accept", "application/json".into())],
                bytes::Bytes::new(),
                crate::outbound::JSON_CAP,
            )
            .await
            .map_err(|e| e.to_string())?;
        if resp.status != 200 {
            return Err(format!("status {}", resp.status));
        }
        let set: Value = serde_json::from_slice(&resp.body).map_err(|e| e.to_string())?;
        let keys = set
            .get("keys")
            .and_then(Value::as_array)
            .ok_or("no \"keys\" array")?;
        // One key confab cannot use does not spoil the others.
        Ok(keys
            .iter()
            .filter_map(|k| serde_json::from_value::<Jwk>(k.clone()).ok())
            .filter_map(|jwk| {
                let alg = pinned(&jwk)?;
                let key = DecodingKey::from_jwk(&jwk).ok()?;
                Some(Key {
                    kid: jwk.common.key_id.clone(),
                    alg,
                    key,
                })
            })
            .collect())
    }
}

/// The one algorithm a published key verifies.
fn pinned(jwk: &Jwk) -> Option<Algorithm> {
    if matches!(
        jwk.common.public_key_use,
        Some(PublicKeyUse::Encryption | PublicKeyUse::Other(_))
    ) {
        return None;
    }
    let given = jwk.common.key_algorithm;
    let (natural, allowed): (Algorithm, &[KeyAlgorithm]) = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => (
            Algorithm::RS256,
            &[
                KeyAlgorithm::RS256,
                KeyAlgorithm::RS384,
                KeyAlgorithm::RS512,
                KeyAlgorithm::PS256,
                KeyAlgorithm::PS384,
                KeyAlgorithm::PS512,
            ],
        ),
        AlgorithmParameters::EllipticCurve(p) => match p.curve {
            EllipticCurve::P256 => (Algorithm::ES256, &[KeyAlgorithm::ES256]),
            EllipticCurve::P384 => (Algorithm::ES384, &[KeyAlgorithm::ES384]),
            _ => return None,
        },
        AlgorithmParameters::OctetKeyPair(p) => match p.curve {
            EllipticCurve::Ed25519 => (Algorithm::EdDSA, &[KeyAlgorithm::EdDSA]),
            _ => return None,
        },
        // Never an HMAC secret from a published set.
        _ => return None,
    };
    match given {
        None => Some(natural),
        Some(a) if allowed.contains(&a) => a.to_string().parse().ok(),
        Some(_) => None,
    }
}

/// Where a verifier's keys come from.
pub enum Keys {
    Secret(DecodingKey),
    Set(KeySet),
}

/// Checks signature, `iss`, `aud`, `exp`, `nbf` and `sub` of tokens of one
/// issuer.
pub struct Verifier {
    pub issuer: String,
    pub audience: String,
    pub keys: Keys,
}

/// Seconds of clock difference tolerated between the issuer and confab.
const LEEWAY_SECS: u64 = 5;

impl Verifier {
    /// Makes sure the keys a token names are at hand, fetching if needed.
    pub async fn prepare(&self, token: &str) {
        if let Keys::Set(set) = &self.keys
            && let Ok(header) = jsonwebtoken::decode_header(token)
        {
            set.ensure(header.kid.as_deref()).await;
        }
    }

    /// The claims of a token that verifies with the keys at hand.
    pub fn verify(&self, token: &str) -> Result<Map<String, Value>, Refused> {
        let header = jsonwebtoken::decode_header(token).map_err(|e| Refused(e.to_string()))?;
        let (alg, key) = match &self.keys {
            Keys::Secret(k) => (Algorithm::HS256, k.clone()),
            Keys::Set(set) => set
                .find(header.kid.as_deref())
                .ok_or_else(|| Refused(format!("unknown key {:?}", header.kid)))?,
        };
        let mut v = Validation::new(alg);
        v.leeway = LEEWAY_SECS;
        v.validate_nbf = true;
        v.set_issuer(&[&self.issuer]);
        v.set_audience(&[&self.audience]);
        v.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        let data = jsonwebtoken::decode::<Map<String, Value>>(token, &key, &v)
            .map_err(|e| Refused(e.to_string()))?;
        Ok(data.claims)
    }
}
