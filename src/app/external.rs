//! Accounts from elsewhere: tokens signed by the operator's own app
//! (`[auth.external]`) are accepted wherever confab's own are. The account
//! of such a token is linked to its (issuer, subject) and made on first
//! use; `store::external` keeps the link.
//!
//! `authenticate_token` stays synchronous (every edge calls it); what needs
//! to wait (fetching keys, making the account) is `admit`, which the edges
//! await first with any token they are given.

use serde_json::{Map, Value};

use super::*;
use crate::jwks::{KeySet, Keys, Verifier};
use crate::outbound::Outbound;
use crate::store::external::ExternalCommand;

/// What an identity from elsewhere says about its user.
pub struct Identity {
    pub issuer: String,
    pub subject: String,
    /// The username wanted for a new account (adjusted to confab's rules).
    pub username: String,
    /// `None`: the issuer says nothing about roles.
    pub role: Option<Role>,
}

/// The node's verifier of the operator's tokens and its outbound client.
pub struct Identities {
    pub(super) external: Option<Verifier>,
    pub(super) outbound: Option<Outbound>,
}

impl Identities {
    pub fn new(config: &Config) -> Identities {
        let outbound = match Outbound::from_config(config) {
            Ok(o) => Some(o),
            Err(e) => {
                tracing::error!(error = %e, "outbound HTTP unavailable: no key sets or sign-in providers");
                None
            }
        };
        let x = &config.auth.external;
        let external = if !x.enabled() {
            None
        } else if !x.hs256_secret.is_empty() {
            Some(Keys::Secret(jsonwebtoken::DecodingKey::from_secret(
                x.hs256_secret.as_bytes(),
            )))
        } else {
            outbound.clone().map(|o| {
                Keys::Set(KeySet::new(
                    x.jwks_url.clone(),
                    o,
                    Duration::from_secs(x.jwks_min_interval_secs),
                    Duration::from_secs(x.jwks_refresh_secs.max(1)),
                ))
            })
        }
        .map(|keys| Verifier {
            issuer: x.issuer.clone(),
            audience: x.audience.clone(),
            keys,
        });
        Identities { external, outbound }
    }
}

/// A username after confab's rules from whatever the issuer calls the user:
/// lowercase, other characters as `_`, 3 to 32 characters.
pub fn username_from(raw: &str) -> String {
    let mut name: String = raw
        .chars()
        .map(|c| {
            let c = c.to_ascii_lowercase();
            if c.is_ascii_lowercase() || c.is_ascii_digit() || "_.-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .take(32)
        .collect();
    if name.len() < 3 {
        name = format!("user-{name}");
    }
    name
}

fn claim_str<'a>(claims: &'a Map<String, Value>, name: &str) -> Option<&'a str> {
    claims
        .get(name)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
}

/// `moderator` in the role claim (a string or a list) makes a moderator;
/// anything else a user. Admin is never granted by a token.
fn role_from(claims: &Map<String, Value>, claim: &str) -> Option<Role> {
    if claim.is_empty() {
        return None;
    }
    let is_mod = |v: &Value| v.as_str() == Some("moderator");
    Some(match claims.get(claim) {
        Some(Value::Array(items)) if items.iter().any(is_mod) => Role::Moderator,
        Some(v) if is_mod(v) => Role::Moderator,
        _ => Role::User,
    })
}

/// How long a node waits to apply the log before judging a token made
/// elsewhere.
const ACCOUNT_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// A token's own id, for ending it by itself: from the token's bytes.
fn token_id(token: &str) -> u128 {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(token.as_bytes());
    let mut first = [0u8; 16];
    first.copy_from_slice(&digest[..16]);
    u128::from_be_bytes(first)
}

impl App {
    /// A token made on another node (a registration, a login, a password
    /// change there) can reach this node before the change that makes it
    /// valid has been applied here: a client that registers through one
    /// node and connects through the next would be refused. When the
    /// account is unknown here or older than the token, this waits for
    /// the node to apply the log as far as it reaches now (at most
    /// `ACCOUNT_WAIT`); `authenticate_token` then judges the token.
    async fn await_account(&self, link: &crate::store::cluster::Link, v: &crate::auth::Verified) {
        let behind = match self.store.read().and_then(|rx| rx.user(v.user)) {
            Ok(Some(rec)) => rec.token_gen < v.generation,
            Ok(None) => true,
            Err(_) => false,
        };
        if !behind {
            return;
        }
        let caught_up = async {
            if let Ok(target) = link.engine().last_position().await {
                link.wait_applied(target).await;
            }
        };
        let _ = tokio::time::timeout(ACCOUNT_WAIT, Box::pin(caught_up)).await;
    }

    /// Gets an external token ready for `authenticate_token`: its keys
    /// fetched and its account made (or its role brought up to date).
    /// Does nothing for confab's own tokens or when external tokens are
    /// off; a token that does not verify is left for `authenticate_token`
    /// to refuse.
    ///
    /// In a cluster, also waits (briefly) for this node to apply the
    /// change that made one of confab's own tokens valid, if it has not.
    pub async fn admit(&self, token: &str) {
        if let Some(link) = self.store.link()
            && let Ok(v) = self.auth.verify(token)
        {
            self.await_account(link, &v).await;
            return;
        }
        let Some(verifier) = &self.identities.external else {
            return;
        };
        if self.auth.verify(token).is_ok() {
            return;
        }
        // The key-set fetch and the account's linking are boxed: large
        // states, awaited only for external tokens, which would otherwise
        // size the future of every caller (a WebSocket connection's task
        // keeps its largest state for the connection's life).
        Box::pin(verifier.prepare(token)).await;
        let claims = match verifier.verify(token) {
            Ok(c) => c,
            Err(e) => {
                tracing::debug!(error = %e, "external token refused");
                return;
            }
        };
        let x = &self.config.auth.external;
        let Some(subject) = claim_str(&claims, "sub") else {
            return;
        };
        let identity = Identity {
            issuer: x.issuer.clone(),
            subject: subject.to_string(),
            username: username_from(claim_str(&claims, &x.username_claim).unwrap_or(subject)),
            role: role_from(&claims, &x.role_claim),
        };
        if let Err(e) = Box::pin(self.link_identity(identity)).await {
            tracing::warn!(error = %e, "cannot link an external account");
        }
    }

    /// The account linked to an identity from elsewhere, made now if
    /// there is none; its role follows the identity's, if it has one
    /// (never to or from admin).
    pub async fn link_identity(&self, identity: Identity) -> Result<UserRecord> {
        let existing = {
            let rx = self.store.read()?;
            match rx.external_user(&identity.issuer, &identity.subject)? {
                Some(id) => rx.user(id)?,
                None => None,
            }
        };
        let rec = match existing {
            Some(rec) => rec,
            None => {
                let rec: UserRecord = self
                    .store
                    .run(Command::External(ExternalCommand::Link {
                        id: Id::new(),
                        issuer: identity.issuer.clone(),
                        subject: identity.subject.clone(),
                        username: identity.username.clone(),
                        role: identity.role.unwrap_or(Role::User),
                    }))
                    .await?;
                tracing::info!(user = %rec.username, issuer = %identity.issuer, "account linked");
                rec
            }
        };
        match identity.role {
            Some(role) if role != rec.role && rec.role != Role::Admin && role != Role::Admin => {
                Ok(self
                    .store
                    .run(Command::SetRole { user: rec.id, role })
                    .await?)
            }
            _ => Ok(rec),
        }
    }

    /// `authenticate_token` for a token of the operator's app: valid with
    /// the keys at hand, of an account already linked, not ended by "log
    /// out" (this token) or "log out everywhere" (tokens issued before).
    pub(super) fn authenticate_external(&self, token: &str) -> Result<(User, Verified)> {
        let verifier = self
            .identities
            .external
            .as_ref()
            .ok_or(AppError::Auth(AuthError::BadToken))?;
        let claims = verifier.verify(token).map_err(|e| {
            tracing::debug!(error = %e, "external token refused");
            AppError::Auth(AuthError::BadToken)
        })?;
        let subject = claim_str(&claims, "sub").ok_or(AuthError::BadToken)?;
        let rx = self.store.read()?;
        let user = rx
            .external_user(&verifier.issuer, subject)?
            .ok_or(AuthError::BadToken)?;
        let rec = rx.user(user)?.ok_or(AuthError::BadToken)?;
        ban_check(&rec)?;
        let link = rx.external_link(user)?.ok_or(AuthError::BadToken)?;
        if link.not_before > 0 {
            let iat = claims.get("iat").and_then(Value::as_i64).unwrap_or(0);
            if iat.saturating_mul(1000) < link.not_before {
                return Err(AuthError::BadToken.into());
            }
        }
        let id = token_id(token);
        if rx.token_revoked(id)? {
            return Err(AuthError::BadToken.into());
        }
        let exp = claims.get("exp").and_then(Value::as_u64).unwrap_or(0);
        Ok((
            rec.public(),
            Verified {
                user,
                generation: rec.token_gen,
                token: id,
                exp,
            },
        ))
    }

    /// "Log out everywhere" for an account of the operator's app: its
    /// tokens issued until now end too.
    pub(super) async fn end_external_tokens(&self, user: Id) -> Result<()> {
        if self.store.read()?.external_link(user)?.is_some() {
            self.store
                .run::<()>(Command::External(ExternalCommand::EndTokens { user }))
                .await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usernames_follow_the_rules() {
        for raw in ["Alice", "bob smith", "x", "名前", &"a".repeat(40)] {
            let name = username_from(raw);
            assert!(Username::parse(&name).is_ok(), "{raw:?} -> {name:?}");
        }
        assert_eq!(username_from("Bob Smith"), "bob_smith");
        assert_eq!(username_from("x"), "user-x");
    }

    #[test]
    fn roles_stop_at_moderator() {
        let claims: Map<String, Value> =
            serde_json::from_value(serde_json::json!({"r": ["admin", "moderator"], "s": "admin"}))
                .unwrap_or_default();
        assert_eq!(role_from(&claims, "r"), Some(Role::Moderator));
        assert_eq!(role_from(&claims, "s"), Some(Role::User));
        assert_eq!(role_from(&claims, ""), None);
    }
}
