//! What a delivery carries and how it is checked: the marker in the
//! message text, the per-connection sequence check, and latency
//! histograms that travel between processes.

use std::collections::HashSet;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// Latencies are recorded in microseconds, up to a minute.
pub const MAX_LATENCY_US: u64 = 60_000_000;

pub fn histogram() -> Histogram<u64> {
    // Three significant digits over 1 µs .. 60 s: valid bounds, cannot fail.
    Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).unwrap_or_else(|_| {
        Histogram::new(3).unwrap_or_else(|_| unreachable!("3 significant digits is valid"))
    })
}

pub fn record(h: &mut Histogram<u64>, us: u64) {
    let _ = h.record(us.clamp(1, MAX_LATENCY_US));
}

/// A histogram as (value, count) pairs, to cross a process boundary.
pub fn export(h: &Histogram<u64>) -> Vec<(u64, u64)> {
    h.iter_recorded()
        .map(|v| (v.value_iterated_to(), v.count_at_value()))
        .collect()
}

pub fn import(into: &mut Histogram<u64>, pairs: &[(u64, u64)]) {
    for &(v, n) in pairs {
        let _ = into.record_n(v.clamp(1, MAX_LATENCY_US), n);
    }
}

/// Percentiles in milliseconds.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Pcts {
    pub count: u64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl Pcts {
    pub fn of(h: &Histogram<u64>) -> Pcts {
        if h.is_empty() {
            return Pcts::default();
        }
        let ms = |us: u64| us as f64 / 1000.0;
        Pcts {
            count: h.len(),
            p50_ms: ms(h.value_at_quantile(0.50)),
            p90_ms: ms(h.value_at_quantile(0.90)),
            p99_ms: ms(h.value_at_quantile(0.99)),
            max_ms: ms(h.max()),
        }
    }
}

/// The text of a benchmark message: who sent it (index of the sender in
/// its room), its number in that sender's stream, and the wall-clock send
/// time in µs (sender and receiver share the machine's clock), padded to
/// a realistic length. The marker has no character JSON would escape, so
/// a receiver can find it without parsing the whole frame.
pub fn message_text(sender: u32, seq: u64, sent_us: u64, len: usize) -> String {
    message_text_with(sender, seq, sent_us, len, "")
}

/// `message_text` with `extra` (mentions) after the marker, padded to the
/// same length, so a phase with mentions sends as many bytes as one
/// without.
pub fn message_text_with(sender: u32, seq: u64, sent_us: u64, len: usize, extra: &str) -> String {
    let mut t = format!("~{sender}:{seq}:{sent_us}~{extra}");
    while t.len() < len {
        t.push('x');
    }
    t
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Marker {
    pub sender: u32,
    pub seq: u64,
    pub sent_us: u64,
}

/// Finds the marker of a `message` frame, without a full JSON parse: at
/// tens of thousands of deliveries a second the generator's one core is
/// a budget too.
pub fn find_marker(frame: &str) -> Option<Marker> {
    let at = frame.find("\"text\":\"~")? + "\"text\":\"~".len();
    let rest = &frame[at..];
    let end = rest.find('~')?;
    let mut parts = rest[..end].split(':');
    let sender = parts.next()?.parse().ok()?;
    let seq = parts.next()?.parse().ok()?;
    let sent_us = parts.next()?.parse().ok()?;
    Some(Marker {
        sender,
        seq,
        sent_us,
    })
}

/// What kind of server frame this is, judged from its `type` field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Message,
    Ack,
    Error,
    Authenticated,
    Other,
}

pub fn kind(frame: &str) -> Kind {
    // confab writes `type` first; other servers may write it anywhere,
    // but none of these strings can occur inside a benchmark message.
    if frame.contains("\"type\":\"message\"") {
        Kind::Message
    } else if frame.contains("\"type\":\"ack\"") {
        Kind::Ack
    } else if frame.contains("\"type\":\"error\"") {
        Kind::Error
    } else if frame.contains("\"type\":\"authenticated\"") {
        Kind::Authenticated
    } else {
        Kind::Other
    }
}

/// Outcome of one delivery against what the receiver has seen before.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// The next one expected from that sender.
    InOrder,
    /// New, but later ones from that sender arrived first.
    Late,
    /// New, skipping some not seen yet.
    Ahead,
    Duplicate,
    /// From a sender this room does not have.
    Foreign,
}

/// Holes kept per connection before the checker gives up remembering
/// them; past this a run has failed long ago.
const MAX_HOLES: usize = 100_000;

/// Per-receiver check of each sender's stream: every number exactly
/// once, in order.
#[derive(Debug, Default)]
pub struct Checker {
    next: Vec<u64>,
    holes: HashSet<(u32, u64)>,
    /// Deliveries that were new (in order, late or ahead).
    pub unique: u64,
}

impl Checker {
    pub fn new(senders: usize) -> Checker {
        Checker {
            next: vec![0; senders],
            holes: HashSet::new(),
            unique: 0,
        }
    }

    pub fn see(&mut self, sender: u32, seq: u64) -> Seen {
        let Some(next) = self.next.get_mut(sender as usize) else {
            return Seen::Foreign;
        };
        if seq == *next {
            *next += 1;
            self.unique += 1;
            Seen::InOrder
        } else if seq > *next {
            for missing in *next..seq {
                if self.holes.len() >= MAX_HOLES {
                    break;
                }
                self.holes.insert((sender, missing));
            }
            *next = seq + 1;
            self.unique += 1;
            Seen::Ahead
        } else if self.holes.remove(&(sender, seq)) {
            self.unique += 1;
            Seen::Late
        } else {
            Seen::Duplicate
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers_round_trip_through_a_frame() {
        let text = message_text(3, 41, 1_700_000_000_123_456, 100);
        assert_eq!(text.len(), 100);
        let frame = format!(
            r#"{{"type":"message","data":{{"message":{{"id":"x","text":"{text}","seq":9}}}},"ts":1}}"#
        );
        assert_eq!(kind(&frame), Kind::Message);
        assert_eq!(
            find_marker(&frame),
            Some(Marker {
                sender: 3,
                seq: 41,
                sent_us: 1_700_000_000_123_456
            })
        );
        assert_eq!(find_marker(r#"{"text":"hello"}"#), None);
        assert_eq!(kind(r#"{"data":{},"id":"s1","type":"ack"}"#), Kind::Ack);
    }

    #[test]
    fn checker_counts_gaps_lates_and_duplicates() {
        let mut c = Checker::new(2);
        assert_eq!(c.see(0, 0), Seen::InOrder);
        assert_eq!(c.see(0, 2), Seen::Ahead);
        assert_eq!(c.see(0, 1), Seen::Late);
        assert_eq!(c.see(0, 1), Seen::Duplicate);
        assert_eq!(c.see(0, 2), Seen::Duplicate);
        assert_eq!(c.see(1, 0), Seen::InOrder);
        assert_eq!(c.see(5, 0), Seen::Foreign);
        assert_eq!(c.unique, 4);
    }

    #[test]
    fn histograms_cross_processes() {
        let mut h = histogram();
        for v in [10, 20, 20, 5_000, 80_000_000] {
            record(&mut h, v);
        }
        let mut back = histogram();
        import(&mut back, &export(&h));
        assert_eq!(back.len(), 5);
        assert_eq!(Pcts::of(&back), Pcts::of(&h));
    }
}
