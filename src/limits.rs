//! Abuse limits: fixed-window counters keyed by user, account or address,
//! a token bucket per user for messages, and open-connection counts per
//! address. All in memory: they protect a running server and need not
//! survive a restart.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use warp::http::HeaderMap;

/// At most `max` hits per `window` for each key.
pub struct Window<K> {
    window: Duration,
    max: u32,
    hits: Mutex<HashMap<K, (Instant, u32)>>,
}

impl<K: Eq + Hash + Clone> Window<K> {
    pub fn new(max: u32, window: Duration) -> Self {
        Window {
            window,
            max,
            hits: Mutex::new(HashMap::new()),
        }
    }

    fn slot<'a>(
        map: &'a mut HashMap<K, (Instant, u32)>,
        key: &K,
        window: Duration,
    ) -> &'a mut (Instant, u32) {
        let now = Instant::now();
        // Keeps the map from growing without bound under many keys.
        if map.len() > 100_000 {
            map.retain(|_, (start, _)| now.duration_since(*start) < window);
        }
        let slot = map.entry(key.clone()).or_insert((now, 0));
        if now.duration_since(slot.0) >= window {
            *slot = (now, 0);
        }
        slot
    }

    /// Takes back a hit counted by `take`, for an attempt that turned out
    /// not to count (a login that succeeded).
    pub fn refund(&self, key: &K) {
        let mut map = self.hits.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(slot) = map.get_mut(key) {
            slot.1 = slot.1.saturating_sub(1);
        }
    }

    /// Counts a hit if there is room; if not, the seconds until there is.
    /// Checked and counted under one lock, so that concurrent attempts
    /// cannot all see room first (there is no separate check to race).
    pub fn take(&self, key: &K) -> Result<(), u64> {
        let mut map = self.hits.lock().unwrap_or_else(|e| e.into_inner());
        let slot = Self::slot(&mut map, key, self.window);
        if slot.1 >= self.max {
            let left = self.window.saturating_sub(slot.0.elapsed());
            return Err(left.as_secs().max(1));
        }
        slot.1 += 1;
        Ok(())
    }
}

/// A token bucket per key: `rate` a second, up to `burst` at once.
pub struct Buckets<K> {
    rate: f64,
    burst: f64,
    state: Mutex<HashMap<K, (f64, Instant)>>,
}

impl<K: Eq + Hash + Clone> Buckets<K> {
    pub fn new(rate: f64, burst: f64) -> Self {
        Buckets {
            rate,
            burst,
            state: Mutex::new(HashMap::new()),
        }
    }

    pub fn take(&self, key: &K) -> bool {
        let now = Instant::now();
        let mut map = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() > 100_000 {
            let (rate, burst) = (self.rate, self.burst);
            map.retain(|_, (tokens, at)| {
                *tokens + now.duration_since(*at).as_secs_f64() * rate < burst
            });
        }
        let (tokens, at) = map.entry(key.clone()).or_insert((self.burst, now));
        *tokens = (*tokens + now.duration_since(*at).as_secs_f64() * self.rate).min(self.burst);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Open connections, in total and per address. The accept loop takes a
/// slot for every connection before reading from it; a slot is held by a
/// [`ConnSlot`] and given back when it drops, whatever ends the connection
/// (a close, an error, a panic).
pub struct Connections {
    max_total: usize,
    max_per_ip: usize,
    state: Mutex<(usize, HashMap<IpAddr, usize>)>,
}

pub struct ConnSlot {
    owner: Arc<Connections>,
    ip: Option<IpAddr>,
    /// Counted in the total (false for [`Connections::open_address`]).
    total: bool,
}

impl Connections {
    pub fn new(max_total: usize, max_per_ip: usize) -> Arc<Self> {
        Arc::new(Connections {
            max_total,
            max_per_ip,
            state: Mutex::new((0, HashMap::new())),
        })
    }

    /// A slot, or why there is none. `None` counts toward the total only:
    /// a trusted proxy carries many clients on its connections.
    pub fn open(self: &Arc<Self>, ip: Option<IpAddr>) -> Result<ConnSlot, &'static str> {
        self.take(ip, true)
    }

    /// A slot counted against `ip`'s limit only, for a client behind a
    /// trusted proxy whose connection already holds one in the total.
    pub fn open_address(self: &Arc<Self>, ip: IpAddr) -> Result<ConnSlot, &'static str> {
        self.take(Some(ip), false)
    }

    fn take(self: &Arc<Self>, ip: Option<IpAddr>, total: bool) -> Result<ConnSlot, &'static str> {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if total && st.0 >= self.max_total {
            return Err("the server has reached its connection limit");
        }
        if let Some(ip) = ip {
            let n = st.1.entry(ip).or_insert(0);
            if *n >= self.max_per_ip {
                return Err("too many connections from this address");
            }
            *n += 1;
        }
        if total {
            st.0 += 1;
        }
        Ok(ConnSlot {
            owner: self.clone(),
            ip,
            total,
        })
    }

    pub fn open_count(&self) -> usize {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).0
    }
}

impl Drop for ConnSlot {
    fn drop(&mut self) {
        let mut st = self.owner.state.lock().unwrap_or_else(|e| e.into_inner());
        if self.total {
            st.0 = st.0.saturating_sub(1);
        }
        if let Some(ip) = self.ip
            && let Some(n) = st.1.get_mut(&ip)
        {
            *n -= 1;
            if *n == 0 {
                st.1.remove(&ip);
            }
        }
    }
}

/// Every limiter the server keeps, built from the config.
pub struct Limiters {
    /// Login and registration attempts per client address.
    pub auth_by_ip: Window<IpAddr>,
    /// Failed logins per account and client address: an attacker
    /// elsewhere cannot lock the owner out.
    pub login_failures: Window<(String, Option<IpAddr>)>,
    pub room_creations: Window<crate::domain::Id>,
    pub uploads: Window<crate::domain::Id>,
    pub messages: Buckets<crate::domain::Id>,
    pub connections: Arc<Connections>,
}

impl Limiters {
    pub fn new(c: &crate::config::Config) -> Limiters {
        let l = &c.limits;
        Limiters {
            auth_by_ip: Window::new(l.auth_attempts_per_ip_per_min, Duration::from_secs(60)),
            login_failures: Window::new(l.login_failures_per_account, Duration::from_secs(15 * 60)),
            room_creations: Window::new(l.room_creations_per_hour, Duration::from_secs(3600)),
            uploads: Window::new(c.uploads.per_minute, Duration::from_secs(60)),
            messages: Buckets::new(f64::from(l.messages_per_sec), f64::from(l.messages_burst)),
            connections: Connections::new(l.max_connections, l.max_connections_per_ip),
        }
    }
}

/// An address as the attempt limits count it. One IPv6 client is usually
/// given a whole /64, and counting its addresses one by one would give it
/// 2^64 allowances: an IPv6 address counts as its /64.
pub fn address_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let net = u128::from(v6) & !((1u128 << 64) - 1);
                IpAddr::V6(std::net::Ipv6Addr::from(net))
            }
        },
    }
}

/// The client's address: the peer's, unless the peer is a trusted proxy,
/// in which case the nearest untrusted address in `X-Forwarded-For`.
pub fn client_ip(
    peer: Option<SocketAddr>,
    headers: &HeaderMap,
    trusted: &[IpAddr],
) -> Option<IpAddr> {
    let peer = peer?.ip();
    if !trusted.contains(&peer) {
        return Some(peer);
    }
    let forwarded: Vec<IpAddr> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    // Read right to left: each trusted proxy appended the address it saw.
    Some(
        forwarded
            .iter()
            .rev()
            .find(|ip| !trusted.contains(ip))
            .copied()
            .unwrap_or(peer),
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn ipv6_addresses_count_by_their_64() {
        use super::address_key;
        let a: std::net::IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: std::net::IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let c: std::net::IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(address_key(a), address_key(b));
        assert_ne!(address_key(a), address_key(c));
        let v4: std::net::IpAddr = "203.0.113.7".parse().unwrap();
        let mapped: std::net::IpAddr = "::ffff:203.0.113.7".parse().unwrap();
        assert_eq!(address_key(v4), v4);
        assert_eq!(address_key(mapped), v4);
    }

    use super::*;

    #[test]
    fn windows_count_and_refuse() {
        let w = Window::new(2, Duration::from_secs(60));
        assert!(w.take(&"a").is_ok());
        assert!(w.take(&"a").is_ok());
        let retry = w.take(&"a").unwrap_err();
        assert!((1..=60).contains(&retry));
        assert!(w.take(&"b").is_ok());
    }

    #[test]
    fn buckets_refill() {
        let b = Buckets::new(1000.0, 2.0);
        assert!(b.take(&1));
        assert!(b.take(&1));
        assert!(!b.take(&1));
    }

    #[test]
    fn connection_slots_come_back() {
        let c = Connections::new(3, 2);
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let a = c.open(Some(ip)).unwrap();
        let _b = c.open(Some(ip)).unwrap();
        assert!(c.open(Some(ip)).is_err());
        drop(a);
        let _c = c.open(Some(ip)).unwrap();
        let other: IpAddr = "10.0.0.2".parse().unwrap();
        let _d = c.open(Some(other)).unwrap();
        assert_eq!(c.open_count(), 3);
    }

    #[test]
    fn address_slots_leave_the_total_alone() {
        let c = Connections::new(1, 1);
        let _proxy = c.open(None).unwrap();
        let client: IpAddr = "203.0.113.1".parse().unwrap();
        let a = c.open_address(client).unwrap();
        assert!(c.open_address(client).is_err());
        assert_eq!(c.open_count(), 1);
        drop(a);
        assert_eq!(c.open_count(), 1);
        let _b = c.open_address(client).unwrap();
    }

    #[test]
    fn forwarded_for_only_from_trusted_proxies() {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", "203.0.113.9, 10.0.0.5".parse().unwrap());
        let proxy: IpAddr = "10.0.0.5".parse().unwrap();
        let peer = Some(SocketAddr::new(proxy, 4000));
        assert_eq!(client_ip(peer, &h, &[]), Some(proxy));
        assert_eq!(client_ip(peer, &h, &[proxy]), "203.0.113.9".parse().ok());
        let stranger = Some(SocketAddr::new("198.51.100.7".parse().unwrap(), 1));
        assert_eq!(
            client_ip(stranger, &h, &[proxy]),
            "198.51.100.7".parse().ok()
        );
    }
}
