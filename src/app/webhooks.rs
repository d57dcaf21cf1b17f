//! Outgoing webhooks: managing endpoints (the operator and admins) and the
//! delivery task that sends what the store queued, signed as Standard
//! Webhooks (https://www.standardwebhooks.com/) ask.
//!
//! Delivery: every node runs the task; a queue head is sent by the node
//! whose `Claim` the log grants (one node at a time, for a lease), which
//! then records the attempt with `Settle`. Only a (endpoint, room) queue's
//! head is ever sent, and the next one only once the head left the queue
//! after a 2xx: in order per room per endpoint, at least once. Nothing
//! here runs in the writer or in a request: a slow endpoint holds one of
//! `webhooks.max_concurrent` slots for at most `webhooks.timeout_ms`.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use serde::Serialize;
use serde_json::{Value, json};

use super::{Actor, App, AppError, Result};
use crate::domain::{Id, now_ms};
use crate::outbound::Outbound;
use crate::store::Command;
use crate::store::push::Secret;
use crate::store::webhooks::{
    ANSWER_KEEP, Attempt, EVENT_NAMES, Head, Settled, Webhook, WebhookCommand, WebhookEvent,
};

/// Bytes of an answer read at most (of which `ANSWER_KEEP` are kept).
const ANSWER_READ: usize = 4096;
/// How long a node holds a claimed head: well past one delivery.
const LEASE_MS: i64 = 120_000;
/// How long a node that is not an endpoint's preferred one waits before it
/// sends that endpoint's events itself.
const FALLBACK_MS: i64 = 10_000;

/// The node's delivery machinery, kept on the app.
pub struct Deliverer {
    pub(super) wake: Arc<tokio::sync::Notify>,
    outbound: Option<Outbound>,
    node: String,
    inflight: super::push::InFlight,
}

impl Deliverer {
    pub(super) fn new(config: &crate::config::Config, wake: Arc<tokio::sync::Notify>) -> Self {
        Deliverer {
            wake,
            outbound: Outbound::from_config(config).ok(),
            node: if config.cluster.enabled() {
                config.cluster.node()
            } else {
                "local".into()
            },
            inflight: Default::default(),
        }
    }
}

/// An endpoint as the operator sees it: never its secret.
#[derive(Debug, Clone, Serialize)]
pub struct WebhookView {
    pub id: Id,
    pub url: String,
    pub events: Vec<String>,
    pub room: Option<Id>,
    pub enabled: bool,
    pub disabled_reason: Option<String>,
    pub created_at: i64,
    /// Until when the secret before the last rotation still signs.
    pub previous_secret_until: Option<i64>,
    /// Events waiting to be delivered.
    pub pending: u64,
}

/// A new secret: 32 random bytes, `whsec_` and base64, as the Standard
/// Webhooks libraries read it.
fn new_secret() -> Result<Secret> {
    let mut key = [0u8; 32];
    getrandom::fill(&mut key).map_err(|e| AppError::Internal(e.to_string()))?;
    Ok(Secret(format!(
        "whsec_{}",
        base64::engine::general_purpose::STANDARD.encode(key)
    )))
}

/// `v1,<base64 HMAC-SHA256>` of `{id}.{timestamp}.{body}` for each secret,
/// space-separated (the specification's way to sign with several keys
/// during a rotation).
pub fn sign(secrets: &[&str], id: &str, timestamp: i64, body: &[u8]) -> String {
    let mut out = Vec::new();
    for s in secrets {
        let raw = s.strip_prefix("whsec_").unwrap_or(s);
        let Ok(key) = base64::engine::general_purpose::STANDARD.decode(raw) else {
            continue;
        };
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &key);
        let mut ctx = ring::hmac::Context::with_key(&key);
        ctx.update(id.as_bytes());
        ctx.update(b".");
        ctx.update(timestamp.to_string().as_bytes());
        ctx.update(b".");
        ctx.update(body);
        let tag = ctx.sign();
        out.push(format!(
            "v1,{}",
            base64::engine::general_purpose::STANDARD.encode(tag.as_ref())
        ));
    }
    out.join(" ")
}

/// RFC 3339 in UTC with milliseconds, from ms since the epoch.
pub fn rfc3339(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let milli = ms.rem_euclid(1000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{milli:03}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// The body of one delivery.
pub fn payload(ev: &WebhookEvent) -> Vec<u8> {
    let body = json!({
        "type": ev.kind,
        "timestamp": rfc3339(ev.at),
        "seq": ev.seq,
        "data": ev.data,
    });
    serde_json::to_vec(&body).unwrap_or_default()
}

/// The `webhook-id` of an event: the same on every attempt and replay, so
/// a receiver drops what it has seen.
pub fn event_id(seq: u64) -> String {
    format!("evt_{seq}")
}

/// `--since`: a seq (digits), an RFC 3339 time, or a duration ago (`1h`).
fn parse_since(s: &str) -> Result<(Option<u64>, Option<i64>)> {
    let s = s.trim();
    if let Ok(seq) = s.parse::<u64>() {
        return Ok((Some(seq), None));
    }
    if let Ok(t) = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339) {
        return Ok((None, Some((t.unix_timestamp_nanos() / 1_000_000) as i64)));
    }
    let (n, unit) = s.split_at(s.len().saturating_sub(1));
    let mult = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => 0,
    };
    match n.parse::<i64>() {
        Ok(n) if mult > 0 && n >= 0 => Ok((None, Some(now_ms() - n * mult * 1000))),
        _ => Err(AppError::BadRequest(
            "since: a seq, an RFC 3339 time or a duration like 1h".into(),
        )),
    }
}

impl App {
    fn webhook_id(&self, id: &str) -> Result<Id> {
        Id::parse("webhook", id.trim()).map_err(|_| AppError::NotFound("webhook"))
    }

    fn view(&self, h: Webhook) -> Result<WebhookView> {
        let pending = self.store.read()?.webhook_backlog(h.id)?;
        let now = now_ms();
        Ok(WebhookView {
            id: h.id,
            url: h.url,
            events: h.events,
            room: h.room,
            enabled: h.enabled,
            disabled_reason: h.disabled_reason,
            created_at: h.created_at,
            previous_secret_until: (h.old_secret.is_some() && h.old_until > now)
                .then_some(h.old_until),
            pending,
        })
    }

    /// Adds an endpoint; gives it with its secret, which is shown only here.
    pub async fn webhook_add(
        &self,
        actor: &Actor,
        url: &str,
        events: &[String],
        room: Option<&str>,
    ) -> Result<(WebhookView, String)> {
        if url.len() > 2048 {
            return Err(AppError::BadRequest("url: at most 2048 bytes".into()));
        }
        let mut names: Vec<String> = Vec::new();
        for e in events.iter().flat_map(|e| e.split(',')) {
            let e = e.trim();
            if e.is_empty() {
                continue;
            }
            if e != "*" && !EVENT_NAMES.contains(&e) {
                return Err(AppError::BadRequest(format!(
                    "events: unknown event {e:?} (known: {})",
                    EVENT_NAMES.join(", ")
                )));
            }
            if !names.iter().any(|n| n == e) {
                names.push(e.to_string());
            }
        }
        if names.is_empty() {
            return Err(AppError::BadRequest(
                "events: name at least one, e.g. message.created".into(),
            ));
        }
        let room = match room {
            Some(r) => Some(self.find_room(r)?.id),
            None => None,
        };
        let outbound = self
            .webhooks
            .outbound
            .as_ref()
            .ok_or_else(|| AppError::Internal("outbound HTTP is unavailable".into()))?;
        outbound
            .vet(url, true)
            .await
            .map_err(|e| AppError::BadRequest(format!("url: {e}")))?;
        let secret = new_secret()?;
        let h = Webhook {
            id: Id::new(),
            url: url.to_string(),
            events: names,
            room,
            secret: secret.clone(),
            old_secret: None,
            old_until: 0,
            enabled: true,
            created_at: now_ms(),
            disabled_reason: None,
        };
        self.store
            .run::<()>(Command::Webhook(WebhookCommand::Add(h.clone())))
            .await?;
        self.audit(actor, "webhook_add", url, None, json!({ "id": h.id }))
            .await?;
        Ok((self.view(h)?, secret.0))
    }

    pub fn webhook_list(&self) -> Result<Vec<WebhookView>> {
        let hooks = self.store.read()?.webhooks()?;
        hooks.into_iter().map(|h| self.view(h)).collect()
    }

    fn webhook_get(&self, id: Id) -> Result<Webhook> {
        self.store
            .read()?
            .webhook(id)?
            .ok_or(AppError::NotFound("webhook"))
    }

    pub async fn webhook_remove(&self, actor: &Actor, id: &str) -> Result<()> {
        let id = self.webhook_id(id)?;
        let h = self.webhook_get(id)?;
        self.store
            .run::<()>(Command::Webhook(WebhookCommand::Remove { id }))
            .await?;
        self.audit(actor, "webhook_remove", &h.url, None, json!({ "id": id }))
            .await
    }

    /// A new secret, shown once; the old one signs too for
    /// `webhooks.rotation_overlap_secs`.
    pub async fn webhook_rotate(&self, actor: &Actor, id: &str) -> Result<(WebhookView, String)> {
        let id = self.webhook_id(id)?;
        let h = self.webhook_get(id)?;
        let secret = new_secret()?;
        let old_until = now_ms().saturating_add(
            (self.config.webhooks.rotation_overlap_secs as i64).saturating_mul(1000),
        );
        self.store
            .run::<()>(Command::Webhook(WebhookCommand::Rotate {
                id,
                secret: secret.clone(),
                old_until,
            }))
            .await?;
        self.audit(actor, "webhook_rotate", &h.url, None, json!({ "id": id }))
            .await?;
        Ok((self.view(self.webhook_get(id)?)?, secret.0))
    }

    pub async fn webhook_set_enabled(
        &self,
        actor: &Actor,
        id: &str,
        enabled: bool,
    ) -> Result<WebhookView> {
        let id = self.webhook_id(id)?;
        let h = self.webhook_get(id)?;
        self.store
            .run::<()>(Command::Webhook(WebhookCommand::SetEnabled {
                id,
                enabled,
                reason: (!enabled).then(|| "disabled by an administrator".to_string()),
            }))
            .await?;
        let action = if enabled {
            "webhook_enable"
        } else {
            "webhook_disable"
        };
        self.audit(actor, action, &h.url, None, json!({ "id": id }))
            .await?;
        self.view(self.webhook_get(id)?)
    }

    pub fn webhook_deliveries(&self, id: &str, limit: usize) -> Result<Vec<Attempt>> {
        let id = self.webhook_id(id)?;
        self.webhook_get(id)?;
        Ok(self
            .store
            .read()?
            .webhook_attempts(id, limit.clamp(1, 200))?)
    }

    /// Queues again what the outbox still holds from `since` on (a seq, a
    /// time or a duration ago); gives how many events.
    pub async fn webhook_replay(&self, actor: &Actor, id: &str, since: &str) -> Result<usize> {
        let id = self.webhook_id(id)?;
        let h = self.webhook_get(id)?;
        let (since_seq, since_at) = parse_since(since)?;
        let n = self
            .store
            .run::<usize>(Command::Webhook(WebhookCommand::Replay {
                id,
                since_seq,
                since_at,
            }))
            .await?;
        self.audit(
            actor,
            "webhook_replay",
            &h.url,
            None,
            json!({ "id": id, "since": since, "events": n }),
        )
        .await?;
        Ok(n)
    }

    /// The JSON answer for one endpoint with its secret (add, rotate).
    pub fn webhook_with_secret(view: &WebhookView, secret: &str) -> Value {
        json!({ "id": view.id, "secret": secret, "webhook": view })
    }
}

/// Runs the delivery task until `stop`.
pub fn spawn_delivery(app: Arc<App>, stop: tokio::sync::watch::Receiver<bool>) {
    if !app.config.webhooks.enabled || app.webhooks.outbound.is_none() {
        return;
    }
    let wake = app.webhooks.wake.clone();
    let concurrency = app.config.webhooks.max_concurrent;
    super::push::run_due(app, "webhooks", concurrency, 5, wake, stop, scan);
}

/// Starts the heads that are due; returns when the next one is.
fn scan(
    app: &Arc<App>,
    slots: &Arc<tokio::sync::Semaphore>,
    stop: &tokio::sync::watch::Receiver<bool>,
) -> Result<i64> {
    let now = now_ms();
    let mut next = now + 5000;
    let rx = app.store.read()?;
    let mut hooks = std::collections::HashMap::new();
    for h in rx.webhooks()? {
        hooks.insert(h.id, h);
    }
    for head in rx.webhook_heads(4096)? {
        let Some(h) = hooks.get(&head.webhook) else {
            continue;
        };
        if !h.enabled {
            continue;
        }
        let p = &head.pending;
        let mut fire = p.due;
        if !super::push::preferred(app, head.webhook) {
            fire += FALLBACK_MS;
        }
        if let Some(c) = &p.claim
            && c.until > now
            && c.node != app.webhooks.node
        {
            fire = fire.max(c.until);
        }
        if fire > now {
            next = next.min(fire);
            continue;
        }
        let key = (head.webhook, head.room);
        let permit = match app.webhooks.inflight.start(slots, key) {
            super::push::Start::Busy => continue,
            super::push::Start::Full => {
                next = now + 50;
                break;
            }
            super::push::Start::Go(permit) => permit,
        };
        let (app, mut stop, hook) = (app.clone(), stop.clone(), h.clone());
        tokio::spawn(async move {
            tokio::select! {
                r = deliver(&app, hook, head) => if let Err(e) = r {
                    tracing::warn!(error = %e, "webhooks: delivery failed");
                },
                _ = stop.wait_for(|s| *s) => {}
            }
            app.webhooks.inflight.finish(key);
            drop(permit);
            app.webhooks.wake.notify_one();
        });
    }
    Ok(next)
}

async fn deliver(app: &Arc<App>, hook: Webhook, head: Head) -> Result<()> {
    let d = &app.webhooks;
    let (webhook, room, seq) = (head.webhook, head.room, head.seq);
    let granted = app
        .store
        .run::<bool>(Command::Webhook(WebhookCommand::Claim {
            webhook,
            room,
            seq,
            node: d.node.clone(),
            lease_ms: LEASE_MS,
        }))
        .await?;
    if !granted {
        return Ok(());
    }
    let settle = |attempt, settled| {
        Command::Webhook(WebhookCommand::Settle {
            webhook,
            room,
            seq,
            node: d.node.clone(),
            attempt,
            settled,
        })
    };
    let started = now_ms();
    let Some(ev) = app.store.read()?.webhook_event(seq)? else {
        // Trimmed from the outbox: nothing left to send.
        let a = Attempt {
            n: 0,
            seq,
            kind: String::new(),
            at: started,
            status: None,
            answer: "the event is no longer in the outbox".into(),
            ms: 0,
            ok: false,
        };
        app.store.run::<()>(settle(a, Settled::Delivered)).await?;
        return Ok(());
    };
    let body = payload(&ev);
    let id = event_id(ev.seq);
    let ts = started / 1000;
    let signature = sign(&hook.signing_secrets(started), &id, ts, &body);
    let headers = vec![
        ("content-type", "application/json".to_string()),
        ("webhook-id", id),
        ("webhook-timestamp", ts.to_string()),
        ("webhook-signature", signature),
    ];
    let outbound = d
        .outbound
        .clone()
        .ok_or_else(|| AppError::Internal("outbound HTTP is unavailable".into()))?;
    let cfg = &app.config.webhooks;
    let sent = tokio::time::timeout(
        Duration::from_millis(cfg.timeout_ms),
        outbound.send_capped(
            hyper::Method::POST,
            &hook.url,
            true,
            headers,
            Bytes::from(body),
            ANSWER_READ,
        ),
    )
    .await;
    let ms = (now_ms() - started).max(0) as u64;
    let (status, answer, ok) = match sent {
        Ok(Ok(r)) => {
            let mut text = String::from_utf8_lossy(&r.body).into_owned();
            if text.len() > ANSWER_KEEP {
                let mut cut = ANSWER_KEEP;
                while !text.is_char_boundary(cut) {
                    cut -= 1;
                }
                text.truncate(cut);
            }
            (Some(r.status), text, (200..300).contains(&r.status))
        }
        Ok(Err(e)) => (None, e.to_string(), false),
        Err(_) => (None, "timed out".to_string(), false),
    };
    let attempt = Attempt {
        n: 0,
        seq,
        kind: ev.kind.clone(),
        at: started,
        status,
        answer: answer.clone(),
        ms,
        ok,
    };
    let settled = if ok {
        app.metrics.webhook("delivered");
        Settled::Delivered
    } else {
        let first = head.pending.first_failure.unwrap_or(started);
        let window = (cfg.retry_window_secs as i64).saturating_mul(1000);
        if started.saturating_sub(first) >= window {
            app.metrics.webhook("disabled");
            tracing::warn!(webhook = %webhook, url = %hook.url, "webhooks: endpoint disabled after its retry window");
            let reason = format!(
                "no successful delivery for {}s (last: {})",
                cfg.retry_window_secs,
                status.map(|s| s.to_string()).unwrap_or(answer)
            );
            Settled::GiveUp {
                entry: crate::store::AuditEntry {
                    seq: 0,
                    at: started,
                    actor: "server".into(),
                    action: "webhook_disabled".into(),
                    target: hook.url.clone(),
                    reason: Some(reason),
                    details: json!({ "id": webhook, "seq": seq }),
                },
            }
        } else {
            app.metrics.webhook("retry");
            let backoff = (cfg.retry_base_ms as i64)
                .saturating_mul(1i64 << head.pending.attempt.min(30))
                .min(cfg.retry_max_ms as i64);
            // Never past the window's end by more than needed to give up.
            let due = (started + backoff).min(first + window);
            Settled::Retry { due }
        }
    };
    app.store.run::<()>(settle(attempt, settled)).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_of_known_instants() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(951_782_400_123), "2000-02-29T00:00:00.123Z");
        assert_eq!(rfc3339(1_700_000_000_000), "2023-11-14T22:13:20.000Z");
    }

    #[test]
    fn signs_like_the_specification_example() {
        // The example of the Standard Webhooks specification.
        let sig = sign(
            &["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"],
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            br#"{"test": 2432232314}"#,
        );
        assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn since_reads_seqs_times_and_durations() {
        assert_eq!(parse_since("42").ok(), Some((Some(42), None)));
        assert_eq!(
            parse_since("2023-11-14T22:13:20Z").ok(),
            Some((None, Some(1_700_000_000_000)))
        );
        assert!(matches!(parse_since("1h"), Ok((None, Some(_)))));
        assert!(parse_since("yesterday").is_err());
    }
}
