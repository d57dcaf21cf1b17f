//! OpenID Connect sign-in for the web client: the authorization code flow
//! with PKCE (S256), `state` and `nonce`, the ID token verified against the
//! provider's key set (found through its discovery document). Every
//! request to the provider goes through `Outbound`.
//!
//! The flow's secrets (state, nonce, PKCE verifier) live in a short-lived
//! cookie signed with a key derived from the token secret, not in this
//! node's memory: in a cluster the callback may reach another node, and
//! every node has the same secret.

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::Deserialize;
use serde_json::{Map, Value};

use super::external::{Identity, username_from};
use super::*;
use crate::config::OidcProviderConfig;
use crate::jwks::{KeySet, Keys, Verifier};

/// The cookie that carries a sign-in in progress.
pub const STATE_COOKIE: &str = "confab_oidc";
/// How long a sign-in may take at the provider.
const STATE_TTL_SECS: u64 = 600;

/// What the provider's discovery document says, and its keys.
struct Discovered {
    authorization_endpoint: String,
    token_endpoint: String,
    verifier: Verifier,
}

/// The providers of this node, each discovered on first use.
#[derive(Default)]
pub struct Providers {
    discovered: tokio::sync::Mutex<HashMap<String, Arc<Discovered>>>,
}

use std::collections::HashMap;

#[derive(Serialize, Deserialize)]
struct State {
    /// Provider.
    p: String,
    /// The `state` parameter.
    s: String,
    /// The nonce the ID token must carry.
    n: String,
    /// The PKCE verifier.
    v: String,
    /// The redirect URI sent (the token request repeats it).
    r: String,
    exp: u64,
}

fn random_b64(bytes: usize) -> Result<String> {
    let mut buf = vec![0u8; bytes];
    getrandom::fill(&mut buf).map_err(|e| AppError::Internal(e.to_string()))?;
    Ok(b64url(&buf))
}

fn b64url(data: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(data)
}

/// `application/x-www-form-urlencoded` (and query) escaping.
pub fn form_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn form(pairs: &[(&str, &str)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| format!("{}={}", form_escape(k), form_escape(v)))
        .collect::<Vec<_>>()
        .join("&")
}

fn refused(why: &str) -> AppError {
    AppError::Unauthorized(format!("sign-in failed: {why}"))
}

fn now_secs() -> u64 {
    (crate::domain::now_ms() / 1000).max(0) as u64
}

impl App {
    fn oidc_provider(&self, name: &str) -> Result<&OidcProviderConfig> {
        self.config
            .auth
            .oidc
            .iter()
            .find(|p| p.name == name)
            .ok_or(AppError::NotFound("sign-in provider"))
    }

    async fn discover(&self, p: &OidcProviderConfig) -> Result<Arc<Discovered>> {
        let mut cache = self.providers.discovered.lock().await;
        if let Some(d) = cache.get(&p.name) {
            return Ok(d.clone());
        }
        let outbound = self
            .identities
            .outbound
            .clone()
            .ok_or_else(|| AppError::Internal("outbound HTTP is unavailable".into()))?;
        let url = format!(
            "{}/.well-known/openid-configuration",
            p.issuer.trim_end_matches('/')
        );
        let resp = outbound
            .send_capped(
                hyper::Method::GET,
                &url,
                true,
                vec![("accept", "application/json".into())],
                bytes::Bytes::new(),
                crate::outbound::JSON_CAP,
            )
            .await
            .map_err(|e| AppError::Internal(format!("discovery of {}: {e}", p.name)))?;
        #[derive(Deserialize)]
        struct Doc {
            issuer: String,
            authorization_endpoint: String,
            token_endpoint: String,
            jwks_uri: String,
        }
        let doc: Doc = serde_json::from_slice(&resp.body)
            .map_err(|e| AppError::Internal(format!("discovery of {}: {e}", p.name)))?;
        // The document must speak for the issuer configured (OpenID
        // Connect Discovery 1.0, section 4.3).
        if doc.issuer != p.issuer {
            return Err(AppError::Internal(format!(
                "discovery of {}: issuer {:?} is not the one configured",
                p.name, doc.issuer
            )));
        }
        let d = Arc::new(Discovered {
            authorization_endpoint: doc.authorization_endpoint,
            token_endpoint: doc.token_endpoint,
            verifier: Verifier {
                issuer: doc.issuer,
                audience: p.client_id.clone(),
                keys: Keys::Set(KeySet::new(
                    doc.jwks_uri,
                    outbound,
                    Duration::from_secs(30),
                    Duration::from_secs(3600),
                )),
            },
        });
        cache.insert(p.name.clone(), d.clone());
        Ok(d)
    }

    /// The providers shown on the sign-in page: (name, label).
    pub fn oidc_providers(&self) -> Vec<(String, String)> {
        self.config
            .auth
            .oidc
            .iter()
            .map(|p| {
                let label = if p.label.is_empty() {
                    &p.name
                } else {
                    &p.label
                };
                (p.name.clone(), label.clone())
            })
            .collect()
    }

    /// Starts a sign-in at provider `name`: where to send the browser, and
    /// the signed state cookie's value. `own_callback`: this server's
    /// callback URL as the request reached it, used unless the provider's
    /// `redirect_url` is configured.
    pub async fn oidc_start(&self, name: &str, own_callback: String) -> Result<(String, String)> {
        let p = self.oidc_provider(name)?;
        let d = self.discover(p).await?;
        let redirect = if p.redirect_url.is_empty() {
            own_callback
        } else {
            p.redirect_url.clone()
        };
        let state = State {
            p: p.name.clone(),
            s: random_b64(16)?,
            n: random_b64(16)?,
            v: random_b64(32)?,
            r: redirect,
            exp: now_secs() + STATE_TTL_SECS,
        };
        let challenge = {
            use sha2::Digest;
            b64url(&sha2::Sha256::digest(state.v.as_bytes()))
        };
        let scope = p.scopes.join(" ");
        let query = form(&[
            ("response_type", "code"),
            ("client_id", &p.client_id),
            ("redirect_uri", &state.r),
            ("scope", &scope),
            ("state", &state.s),
            ("nonce", &state.n),
            ("code_challenge", &challenge),
            ("code_challenge_method", "S256"),
        ]);
        let sep = if d.authorization_endpoint.contains('?') {
            '&'
        } else {
            '?'
        };
        let location = format!("{}{sep}{query}", d.authorization_endpoint);
        let cookie = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &state,
            &EncodingKey::from_secret(self.auth.state_key()),
        )
        .map_err(|e| AppError::Internal(e.to_string()))?;
        Ok((location, cookie))
    }

    /// Finishes a sign-in: the state checked against the cookie, the code
    /// exchanged, the ID token verified (signature, issuer, audience,
    /// expiry, nonce); returns a confab token for the linked account.
    pub async fn oidc_callback(
        &self,
        name: &str,
        code: &str,
        state: &str,
        cookie: Option<&str>,
    ) -> Result<(String, User)> {
        let p = self.oidc_provider(name)?;
        let cookie =
            cookie.ok_or_else(|| refused("the sign-in was not started here, or took too long"))?;
        let mut v = Validation::new(Algorithm::HS256);
        v.leeway = 0;
        v.required_spec_claims = ["exp".to_string()].into_iter().collect();
        v.validate_aud = false;
        let st = jsonwebtoken::decode::<State>(
            cookie,
            &DecodingKey::from_secret(self.auth.state_key()),
            &v,
        )
        .map_err(|_| refused("the sign-in state is invalid or expired"))?
        .claims;
        // Constant-time is not needed: the cookie's state is no secret
        // from its own browser, and a wrong guess ends the flow.
        if st.p != p.name || st.s != state || state.is_empty() {
            return Err(refused("the state does not match"));
        }
        let d = self.discover(p).await?;
        let outbound = self
            .identities
            .outbound
            .clone()
            .ok_or_else(|| AppError::Internal("outbound HTTP is unavailable".into()))?;
        let mut fields = vec![
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", st.r.as_str()),
            ("code_verifier", st.v.as_str()),
        ];
        let mut headers = vec![
            (
                "content-type",
                "application/x-www-form-urlencoded".to_string(),
            ),
            ("accept", "application/json".to_string()),
        ];
        if p.client_secret.is_empty() {
            fields.push(("client_id", p.client_id.as_str()));
        } else {
            use base64::Engine as _;
            // client_secret_basic (RFC 6749 section 2.3.1): both parts
            // form-encoded first.
            let basic = base64::engine::general_purpose::STANDARD.encode(format!(
                "{}:{}",
                form_escape(&p.client_id),
                form_escape(&p.client_secret)
            ));
            headers.push(("authorization", format!("Basic {basic}")));
        }
        let resp = outbound
            .send_capped(
                hyper::Method::POST,
                &d.token_endpoint,
                true,
                headers,
                bytes::Bytes::from(form(&fields)),
                crate::outbound::JSON_CAP,
            )
            .await
            .map_err(|e| AppError::Internal(format!("token request to {}: {e}", p.name)))?;
        let body: Map<String, Value> = serde_json::from_slice(&resp.body).unwrap_or_default();
        if resp.status != 200 {
            tracing::warn!(provider = %p.name, status = resp.status, error = ?body.get("error"), "code exchange refused");
            return Err(refused("the provider refused the code"));
        }
        let id_token = body
            .get("id_token")
            .and_then(Value::as_str)
            .ok_or_else(|| refused("the provider sent no ID token"))?;
        d.verifier.prepare(id_token).await;
        let claims = d.verifier.verify(id_token).map_err(|e| {
            tracing::warn!(provider = %p.name, error = %e, "ID token refused");
            refused("the ID token does not verify")
        })?;
        if claims.get("nonce").and_then(Value::as_str) != Some(st.n.as_str()) {
            return Err(refused("the nonce does not match"));
        }
        let subject = claims
            .get("sub")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .ok_or_else(|| refused("the ID token names no subject"))?;
        let wanted = claims
            .get(&p.username_claim)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .unwrap_or(subject);
        let rec = self
            .link_identity(Identity {
                issuer: p.issuer.clone(),
                subject: subject.to_string(),
                username: username_from(wanted),
                role: None,
            })
            .await?;
        ban_check(&rec)?;
        Ok((self.auth.issue(rec.id, rec.token_gen), rec.public()))
    }
}
