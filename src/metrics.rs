//! Counters, gauges and histograms for `/metrics`, plus the recent activity
//! the console shows (throughput history, per-room rates, an event log).
//!
//! The hot path only touches atomics (prometheus-client's counters); the
//! few mutexes here are taken once per committed message or per second by
//! the sampler, never per delivery.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use serde::Serialize;

use crate::domain::{Id, now_ms};

type Labels = Vec<(&'static str, &'static str)>;

/// One line of the console's event log.
#[derive(Debug, Clone, Serialize)]
pub struct Event {
    pub seq: u64,
    pub at: i64,
    pub kind: &'static str,
    pub text: String,
}

/// One second of throughput.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Sample {
    pub t: i64,
    pub messages: f64,
    pub deliveries: f64,
}

#[derive(Default, Clone, Copy)]
struct RoomActivity {
    messages: u64,
    last_activity: i64,
    /// Messages counted at the sampler's previous ticks, for a rate.
    window: [u64; 5],
}

pub struct Metrics {
    registry: Registry,
    pub connections: Gauge,
    pub online_users: Gauge,
    pub rooms_active: Gauge,
    pub messages: Counter,
    pub deliveries: Counter,
    pub frames_in: Counter,
    pub bytes_in: Counter,
    pub bytes_out: Counter,
    pub rejected: Family<Labels, Counter>,
    pub slow_closed: Counter,
    pub commit_batch: Histogram,
    pub commit_seconds: Histogram,
    pub delivery_seconds: Histogram,
    pub uploads: Counter,
    pub upload_bytes: Counter,
    /// Push requests by outcome (app::push).
    pub pushes: Family<Labels, Counter>,
    /// Webhook deliveries by outcome (app::webhooks).
    pub webhooks: Family<Labels, Counter>,
    pub memory_bytes: Gauge,
    started: Instant,
    events: Mutex<VecDeque<Event>>,
    event_seq: AtomicU64,
    samples: Mutex<VecDeque<Sample>>,
    rooms: Mutex<HashMap<Id, RoomActivity>>,
    last_totals: Mutex<(u64, u64)>,
}

const EVENTS_KEPT: usize = 1000;
const SAMPLES_KEPT: usize = 300;

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("confab");
        let m = Metrics {
            connections: Gauge::default(),
            online_users: Gauge::default(),
            rooms_active: Gauge::default(),
            messages: Counter::default(),
            deliveries: Counter::default(),
            frames_in: Counter::default(),
            bytes_in: Counter::default(),
            bytes_out: Counter::default(),
            rejected: Family::default(),
            slow_closed: Counter::default(),
            commit_batch: Histogram::new(exponential_buckets(1.0, 2.0, 12)),
            commit_seconds: Histogram::new(exponential_buckets(0.000_05, 2.0, 16)),
            delivery_seconds: Histogram::new(exponential_buckets(0.000_05, 2.0, 16)),
            uploads: Counter::default(),
            upload_bytes: Counter::default(),
            pushes: Family::default(),
            webhooks: Family::default(),
            memory_bytes: Gauge::default(),
            started: Instant::now(),
            events: Mutex::new(VecDeque::with_capacity(EVENTS_KEPT)),
            event_seq: AtomicU64::new(0),
            samples: Mutex::new(VecDeque::with_capacity(SAMPLES_KEPT)),
            rooms: Mutex::default(),
            last_totals: Mutex::default(),
            registry: Registry::default(),
        };
        registry.register(
            "connections",
            "Open WebSocket connections",
            m.connections.clone(),
        );
        registry.register(
            "online_users",
            "Users with at least one connection",
            m.online_users.clone(),
        );
        registry.register(
            "rooms_active",
            "Rooms with at least one online member",
            m.rooms_active.clone(),
        );
        registry.register("messages", "Messages stored", m.messages.clone());
        registry.register(
            "deliveries",
            "Frames queued to connections by fan-out",
            m.deliveries.clone(),
        );
        registry.register("frames_in", "Client frames received", m.frames_in.clone());
        registry.register(
            "bytes_in",
            "Bytes of client frames received",
            m.bytes_in.clone(),
        );
        registry.register(
            "bytes_out",
            "Bytes of frames written to clients",
            m.bytes_out.clone(),
        );
        registry.register(
            "rejected_frames",
            "Client frames refused, by reason",
            m.rejected.clone(),
        );
        registry.register(
            "slow_closed",
            "Connections closed for reading too slowly",
            m.slow_closed.clone(),
        );
        registry.register(
            "commit_batch_size",
            "Operations per durable store commit",
            m.commit_batch.clone(),
        );
        registry.register(
            "commit_latency_seconds",
            "Time to apply and durably commit one group",
            m.commit_seconds.clone(),
        );
        registry.register(
            "delivery_latency_seconds",
            "Time from fan-out to the frame being written to its socket",
            m.delivery_seconds.clone(),
        );
        registry.register("uploads", "Images uploaded", m.uploads.clone());
        registry.register(
            "upload_bytes",
            "Bytes of images stored",
            m.upload_bytes.clone(),
        );
        registry.register("pushes", "Push notifications, by outcome", m.pushes.clone());
        registry.register(
            "webhook_deliveries",
            "Webhook deliveries, by outcome",
            m.webhooks.clone(),
        );
        registry.register(
            "process_resident_memory_bytes",
            "Resident memory of the server",
            m.memory_bytes.clone(),
        );
        Metrics { registry, ..m }
    }

    /// A push request's outcome: `sent`, `gone`, `retry` or `failed`;
    /// `dropped` for a queued push not sent (read, active, unwanted).
    pub fn push(&self, outcome: &'static str) {
        self.pushes.get_or_create(&vec![("outcome", outcome)]).inc();
    }

    /// A webhook delivery's outcome: `delivered`, `retry` or `disabled`.
    pub fn webhook(&self, outcome: &'static str) {
        self.webhooks
            .get_or_create(&vec![("outcome", outcome)])
            .inc();
    }

    pub fn reject(&self, reason: &'static str) {
        self.rejected.get_or_create(&vec![("reason", reason)]).inc();
    }

    /// The Prometheus (OpenMetrics) text exposition.
    pub fn render(&self) -> String {
        if let Some(rss) = resident_memory() {
            self.memory_bytes.set(rss as i64);
        }
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }

    pub fn uptime_secs(&self) -> u64 {
        self.started.elapsed().as_secs()
    }

    pub fn event(&self, kind: &'static str, text: impl Into<String>) {
        let seq = self.event_seq.fetch_add(1, Ordering::Relaxed) + 1;
        let mut events = self.events.lock().unwrap_or_else(|e| e.into_inner());
        if events.len() == EVENTS_KEPT {
            events.pop_front();
        }
        events.push_back(Event {
            seq,
            at: now_ms(),
            kind,
            text: text.into(),
        });
    }

    pub fn events_after(&self, seq: u64) -> Vec<Event> {
        let events = self.events.lock().unwrap_or_else(|e| e.into_inner());
        events.iter().filter(|e| e.seq > seq).cloned().collect()
    }

    /// Counts a committed message for its room's rate and last activity.
    pub fn room_message(&self, room: Id) {
        self.messages.inc();
        let mut rooms = self.rooms.lock().unwrap_or_else(|e| e.into_inner());
        let r = rooms.entry(room).or_default();
        r.messages += 1;
        r.last_activity = now_ms();
    }

    pub fn forget_room(&self, room: Id) {
        self.rooms
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&room);
    }

    /// (messages per second over the last few seconds, last activity).
    pub fn room_activity(&self, room: Id) -> (f64, Option<i64>) {
        let rooms = self.rooms.lock().unwrap_or_else(|e| e.into_inner());
        match rooms.get(&room) {
            Some(r) => {
                let oldest = r.window[r.window.len() - 1];
                let rate = (r.messages.saturating_sub(oldest)) as f64 / r.window.len() as f64;
                (rate, Some(r.last_activity))
            }
            None => (0.0, None),
        }
    }

    /// Called once a second: records a throughput sample and shifts the
    /// per-room windows.
    pub fn tick(&self) {
        let messages = self.messages.get();
        let deliveries = self.deliveries.get();
        let mut last = self.last_totals.lock().unwrap_or_else(|e| e.into_inner());
        let sample = Sample {
            t: now_ms(),
            messages: messages.saturating_sub(last.0) as f64,
            deliveries: deliveries.saturating_sub(last.1) as f64,
        };
        *last = (messages, deliveries);
        drop(last);
        let mut samples = self.samples.lock().unwrap_or_else(|e| e.into_inner());
        if samples.len() == SAMPLES_KEPT {
            samples.pop_front();
        }
        samples.push_back(sample);
        drop(samples);
        let mut rooms = self.rooms.lock().unwrap_or_else(|e| e.into_inner());
        for r in rooms.values_mut() {
            r.window.rotate_right(1);
            r.window[0] = r.messages;
        }
    }

    pub fn samples(&self) -> Vec<Sample> {
        self.samples
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .copied()
            .collect()
    }
}

/// VmRSS from /proc, where there is one.
pub fn resident_memory() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prometheus_text() {
        let m = Metrics::new();
        m.messages.inc();
        m.reject("malformed");
        m.commit_seconds.observe(0.001);
        let text = m.render();
        assert!(text.contains("confab_messages_total 1"), "{text}");
        assert!(
            text.contains("confab_rejected_frames_total{reason=\"malformed\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("confab_commit_latency_seconds_bucket"),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"));
    }

    #[test]
    fn rates_and_events() {
        let m = Metrics::new();
        let room = Id::new();
        for _ in 0..10 {
            m.room_message(room);
        }
        m.tick();
        assert_eq!(m.samples().last().map(|s| s.messages), Some(10.0));
        let (rate, last) = m.room_activity(room);
        assert!(rate > 0.0 && last.is_some());
        m.event("connect", "a");
        m.event("kick", "b");
        assert_eq!(m.events_after(1).len(), 1);
    }
}
