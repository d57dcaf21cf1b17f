//! Requests the server makes to addresses that clients gave it (a push
//! service's endpoint today). Such a URL can point anywhere, so every
//! request here is made as if an attacker chose the target (SSRF):
//!
//! - the host is resolved here, every address is vetted, and the
//!   connection goes to a vetted address itself, so no second resolution
//!   (DNS rebinding) can swap in another;
//! - loopback, private, link-local (cloud metadata included), unique-local,
//!   shared (CGNAT), multicast, broadcast, documentation, reserved and
//!   unspecified addresses are refused, IPv4 inside IPv6 (mapped,
//!   compatible, NAT64, 6to4) judged as the IPv4 address it carries;
//!   `outbound.allow` exempts addresses or ranges (tests use 127.0.0.1);
//! - https unless the caller allows http, and then only to an allowlisted
//!   address with `outbound.allow_http` on;
//! - `server.fetch_allowed_hosts` names hosts exempt from both rules: an
//!   operator's own services by name, where listing their addresses would
//!   be brittle;
//! - no redirect is followed (a 3xx is the caller's answer);
//! - short connect and total timeouts; a response body is read up to a
//!   small limit and the rest dropped with the connection;
//! - a recognisable `User-Agent`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{HeaderMap, Method, Request, Uri};

use crate::config::OutboundConfig;

/// Answers read whole as JSON documents (a key set, a provider's
/// discovery document, a token response): far above what they are, far
/// below what would hurt.
pub const JSON_CAP: usize = 256 * 1024;

pub const USER_AGENT: &str = concat!("confab/", env!("CARGO_PKG_VERSION"), " (chat server)");

#[derive(Debug, thiserror::Error)]
pub enum OutboundError {
    #[error("bad URL: {0}")]
    BadUrl(String),
    /// The target is not one the server may reach (scheme or address).
    #[error("refused: {0}")]
    Refused(String),
    #[error("name resolution failed: {0}")]
    Dns(String),
    #[error("cannot connect: {0}")]
    Connect(String),
    #[error("timed out")]
    Timeout,
    #[error("TLS: {0}")]
    Tls(String),
    #[error("HTTP: {0}")]
    Http(String),
}

impl OutboundError {
    /// Worth trying again later: the target may answer then. A refusal or
    /// a bad URL will not change.
    pub fn transient(&self) -> bool {
        !matches!(self, OutboundError::BadUrl(_) | OutboundError::Refused(_))
    }
}

/// An address range: `127.0.0.1`, `10.0.0.0/8`, `::1`, `fd00::/8`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    net: IpAddr,
    bits: u8,
}

impl Cidr {
    pub fn parse(s: &str) -> Result<Cidr, String> {
        let (addr, bits) = match s.split_once('/') {
            Some((a, b)) => (a, Some(b)),
            None => (s, None),
        };
        let net: IpAddr = addr
            .trim()
            .parse()
            .map_err(|_| format!("{s:?} is not an address or CIDR range"))?;
        let max = if net.is_ipv4() { 32 } else { 128 };
        let bits = match bits {
            Some(b) => b
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|b| *b <= max)
                .ok_or_else(|| format!("{s:?}: the prefix length must be 0 to {max}"))?,
            None => max,
        };
        Ok(Cidr { net, bits })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.net, canonical(ip)) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                let mask = u32::MAX.checked_shl(32 - self.bits as u32).unwrap_or(0);
                u32::from(n) & mask == u32::from(a) & mask
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                let mask = u128::MAX.checked_shl(128 - self.bits as u32).unwrap_or(0);
                u128::from(n) & mask == u128::from(a) & mask
            }
            _ => false,
        }
    }
}

/// An IPv4-mapped IPv6 address is the IPv4 address it maps.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => ip,
        },
        v4 => v4,
    }
}

/// Whether `ip` is an ordinary address on the public internet.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => public_v4(v4),
        IpAddr::V6(v6) => public_v6(v6),
    }
}

fn public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    !(a == 0 // "this network", unspecified
        || a == 10
        || a == 127
        || (a == 100 && (64..128).contains(&b)) // shared address space (CGNAT)
        || (a == 169 && b == 254) // link-local, cloud metadata
        || (a == 172 && (16..32).contains(&b))
        || (a == 192 && b == 0 && c == 0) // IETF protocol assignments
        || (a == 192 && b == 0 && c == 2) // documentation
        || (a == 192 && b == 88 && c == 99) // 6to4 relay anycast
        || (a == 192 && b == 168)
        || (a == 198 && (18..20).contains(&b)) // benchmarking
        || (a == 198 && b == 51 && c == 100) // documentation
        || (a == 203 && b == 0 && c == 113) // documentation
        || a >= 224) // multicast, reserved, broadcast
}

fn public_v6(ip: Ipv6Addr) -> bool {
    let s = ip.segments();
    let v = u128::from(ip);
    if let Some(v4) = ip.to_ipv4_mapped() {
        return public_v4(v4);
    }
    // ::/96 (unspecified, loopback, IPv4-compatible), NAT64 64:ff9b::/96
    // and 64:ff9b:1::/48: judged by the IPv4 address they carry, if any.
    if v >> 32 == 0 {
        return v > 0xffff && public_v4(Ipv4Addr::from(v as u32));
    }
    if s[0] == 0x64 && s[1] == 0xff9b && (s[2..6] == [0, 0, 0, 0] || s[2] == 1) {
        return public_v4(Ipv4Addr::from(v as u32));
    }
    // 6to4 carries an IPv4 address in its next 32 bits.
    if s[0] == 0x2002 {
        return public_v4(Ipv4Addr::from(((v >> 80) & 0xffff_ffff) as u32));
    }
    !((s[0] & 0xfe00) == 0xfc00 // unique local (fd00:ec2::254 metadata too)
        || (s[0] & 0xffc0) == 0xfe80 // link-local
        || (s[0] & 0xffc0) == 0xfec0 // site-local (deprecated)
        || (s[0] & 0xff00) == 0xff00 // multicast
        || (s[0] == 0x2001 && s[1] == 0x0db8) // documentation
        || (s[0] == 0x2001 && s[1] == 0) // Teredo
        || (s[0] == 0x0100 && s[1..4] == [0, 0, 0])) // discard-only
}

/// A parsed target URL.
#[derive(Debug, Clone)]
pub struct Target {
    pub https: bool,
    pub host: String,
    pub port: u16,
    pub path: String,
}

impl Target {
    pub fn parse(url: &str) -> Result<Target, OutboundError> {
        let bad = |m: &str| OutboundError::BadUrl(m.into());
        if url.len() > 2048 {
            return Err(bad("longer than 2048 bytes"));
        }
        let uri: Uri = url.parse().map_err(|_| bad("not a URL"))?;
        let https = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => return Err(bad("the scheme must be https")),
        };
        let auth = uri.authority().ok_or_else(|| bad("no host"))?;
        if auth.as_str().contains('@') {
            return Err(bad("credentials in a URL are not accepted"));
        }
        let host = auth.host().trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() {
            return Err(bad("no host"));
        }
        let port = auth.port_u16().unwrap_or(if https { 443 } else { 80 });
        if port == 0 {
            return Err(bad("port 0"));
        }
        let path = uri
            .path_and_query()
            .map(|p| p.as_str().to_string())
            .unwrap_or_else(|| "/".into());
        Ok(Target {
            https,
            host: host.to_ascii_lowercase(),
            port,
            path,
        })
    }

    /// `scheme://host[:port]`, the port only when it is not the scheme's
    /// own (a VAPID audience, a Host header).
    pub fn origin(&self) -> String {
        format!(
            "{}://{}",
            if self.https { "https" } else { "http" },
            self.authority()
        )
    }

    pub fn authority(&self) -> String {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        let default = if self.https { 443 } else { 80 };
        if self.port == default {
            host
        } else {
            format!("{host}:{}", self.port)
        }
    }
}

/// What came back. `body` holds at most the configured number of bytes.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// The body was longer than the cap and was cut there.
    pub truncated: bool,
}

/// The outbound client: cheap to clone.
#[derive(Clone)]
pub struct Outbound {
    inner: Arc<Inner>,
}

struct Inner {
    allow: Vec<Cidr>,
    /// `host` or `host:port`, lower case.
    allow_hosts: Vec<String>,
    allow_http: bool,
    connect_timeout: Duration,
    timeout: Duration,
    max_body: usize,
    tls: Arc<rustls::ClientConfig>,
}

impl Outbound {
    /// The client the server's configuration describes.
    pub fn from_config(config: &crate::config::Config) -> Result<Outbound, String> {
        Outbound::new(&config.outbound, &config.server.fetch_allowed_hosts)
    }

    pub fn new(cfg: &OutboundConfig, allow_hosts: &[String]) -> Result<Outbound, String> {
        let allow = cfg
            .allow
            .iter()
            .map(|s| Cidr::parse(s))
            .collect::<Result<Vec<_>, _>>()?;
        let mut roots = rustls::RootCertStore::empty();
        // The system's trust store: push services are public sites with
        // ordinary certificates. A machine without one cannot reach them,
        // which shows in the error of each request, not at start.
        let found = rustls_native_certs::load_native_certs();
        for cert in found.certs {
            let _ = roots.add(cert);
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots)
            .with_no_client_auth();
        tls.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Outbound {
            inner: Arc::new(Inner {
                allow,
                allow_hosts: allow_hosts
                    .iter()
                    .map(|h| h.trim().to_ascii_lowercase())
                    .filter(|h| !h.is_empty())
                    .collect(),
                allow_http: cfg.allow_http,
                connect_timeout: Duration::from_millis(cfg.connect_timeout_ms.max(1)),
                timeout: Duration::from_millis(cfg.timeout_ms.max(1)),
                max_body: cfg.max_response_bytes,
                tls: Arc::new(tls),
            }),
        })
    }

    fn allowed(&self, ip: IpAddr) -> bool {
        self.inner.allow.iter().any(|c| c.contains(ip))
    }

    /// The URL's host is one the operator named as reachable whatever it
    /// resolves to, by name alone or with this port.
    fn host_allowed(&self, target: &Target) -> bool {
        let with_port = format!("{}:{}", target.host, target.port);
        let bracketed = format!("[{}]:{}", target.host, target.port);
        self.inner.allow_hosts.iter().any(|h| {
            h == &target.host
                || h.trim_start_matches('[').trim_end_matches(']') == target.host
                || *h == with_port
                || *h == bracketed
        })
    }

    /// Parses `url` and resolves its host to the addresses a request may
    /// go to; refuses the URL if any address is not one of them (a name
    /// that resolves to both a public and a private address is refused
    /// whole). `https_only`: the caller's own rule, e.g. Web Push.
    pub async fn vet(
        &self,
        url: &str,
        https_only: bool,
    ) -> Result<(Target, Vec<SocketAddr>), OutboundError> {
        let target = Target::parse(url)?;
        let addrs: Vec<SocketAddr> = match target.host.parse::<IpAddr>() {
            Ok(ip) => vec![SocketAddr::new(ip, target.port)],
            Err(_) => {
                let lookup = tokio::net::lookup_host((target.host.as_str(), target.port));
                tokio::time::timeout(self.inner.connect_timeout, lookup)
                    .await
                    .map_err(|_| OutboundError::Timeout)?
                    .map_err(|e| OutboundError::Dns(e.to_string()))?
                    .collect()
            }
        };
        if addrs.is_empty() {
            return Err(OutboundError::Dns("no address".into()));
        }
        if self.host_allowed(&target) {
            return Ok((target, addrs));
        }
        for a in &addrs {
            let ip = a.ip();
            if !is_public(ip) && !self.allowed(ip) {
                return Err(OutboundError::Refused(format!(
                    "{} is not a public address",
                    canonical(ip)
                )));
            }
        }
        if !target.https {
            let all_allowed = addrs.iter().all(|a| self.allowed(a.ip()));
            if https_only && !(self.inner.allow_http && all_allowed) {
                return Err(OutboundError::Refused("the scheme must be https".into()));
            }
        }
        Ok((target, addrs))
    }

    /// Sends one request to `url` and reads the answer, all within the
    /// total timeout. Redirects are not followed.
    pub async fn send(
        &self,
        method: Method,
        url: &str,
        https_only: bool,
        headers: Vec<(&'static str, String)>,
        body: Bytes,
    ) -> Result<Response, OutboundError> {
        let cap = self.inner.max_body;
        self.send_capped(method, url, https_only, headers, body, cap)
            .await
    }

    /// `send`, reading at most `max_body` bytes of the answer instead of
    /// the configured default: a page or an image needs more than a push
    /// service's reply. `Response::truncated` tells whether more came.
    pub async fn send_capped(
        &self,
        method: Method,
        url: &str,
        https_only: bool,
        headers: Vec<(&'static str, String)>,
        body: Bytes,
        max_body: usize,
    ) -> Result<Response, OutboundError> {
        let work = async {
            let (target, addrs) = self.vet(url, https_only).await?;
            self.exchange(&target, &addrs, method, headers, body, max_body)
                .await
        };
        tokio::time::timeout(self.inner.timeout, work)
            .await
            .map_err(|_| OutboundError::Timeout)?
    }

    async fn exchange(
        &self,
        target: &Target,
        addrs: &[SocketAddr],
        method: Method,
        headers: Vec<(&'static str, String)>,
        body: Bytes,
        max_body: usize,
    ) -> Result<Response, OutboundError> {
        let mut last = OutboundError::Connect("no address".into());
        let mut tcp = None;
        for a in addrs {
            match tokio::time::timeout(
                self.inner.connect_timeout,
                tokio::net::TcpStream::connect(a),
            )
            .await
            {
                Ok(Ok(s)) => {
                    tcp = Some(s);
                    break;
                }
                Ok(Err(e)) => last = OutboundError::Connect(e.to_string()),
                Err(_) => last = OutboundError::Timeout,
            }
        }
        let tcp = tcp.ok_or(last)?;
        let _ = tcp.set_nodelay(true);
        let mut req = Request::builder()
            .method(method)
            .uri(target.path.as_str())
            .header("host", target.authority())
            .header("user-agent", USER_AGENT);
        for (k, v) in headers {
            req = req.header(k, v);
        }
        let req = req
            .body(Full::new(body))
            .map_err(|e| OutboundError::Http(e.to_string()))?;
        if target.https {
            let name = rustls::pki_types::ServerName::try_from(target.host.clone())
                .map_err(|e| OutboundError::Tls(e.to_string()))?;
            let tls = tokio_rustls::TlsConnector::from(self.inner.tls.clone())
                .connect(name, tcp)
                .await
                .map_err(|e| OutboundError::Tls(e.to_string()))?;
            self.roundtrip(tls, req, max_body).await
        } else {
            self.roundtrip(tcp, req, max_body).await
        }
    }

    async fn roundtrip<S>(
        &self,
        io: S,
        req: Request<Full<Bytes>>,
        max_body: usize,
    ) -> Result<Response, OutboundError>
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let http = |e: hyper::Error| OutboundError::Http(e.to_string());
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(io))
                .await
                .map_err(http)?;
        // The connection is driven beside the request and dropped with it.
        let driver = tokio::spawn(async move {
            let _ = conn.await;
        });
        let result = async {
            let resp = sender.send_request(req).await.map_err(http)?;
            let status = resp.status().as_u16();
            let headers = resp.headers().clone();
            let mut body = resp.into_body();
            let mut buf = Vec::new();
            let mut truncated = false;
            loop {
                match body.frame().await {
                    Some(Ok(f)) => {
                        if let Some(d) = f.data_ref() {
                            let room = max_body - buf.len();
                            if d.len() > room {
                                buf.extend_from_slice(&d[..room]);
                                truncated = true;
                                break;
                            }
                            buf.extend_from_slice(d);
                        }
                    }
                    Some(Err(e)) => return Err(http(e)),
                    None => break,
                }
            }
            Ok(Response {
                status,
                headers,
                body: Bytes::from(buf),
                truncated,
            })
        }
        .await;
        driver.abort();
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn only_public_addresses_are_public() {
        for s in [
            "0.0.0.0",
            "127.0.0.1",
            "127.255.0.9",
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "224.0.0.1",
            "255.255.255.255",
            "240.0.0.1",
            "192.0.2.1",
            "198.18.0.1",
            "::",
            "::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "::127.0.0.1",
            "64:ff9b::a9fe:a9fe",
            "2002:7f00:1::1",
            "fe80::1",
            "fc00::1",
            "fd00:ec2::254",
            "ff02::1",
            "2001:db8::1",
            "2001:0:4136:e378::1",
        ] {
            assert!(!is_public(ip(s)), "{s} must not count as public");
        }
        for s in [
            "8.8.8.8",
            "1.1.1.1",
            "172.32.0.1",
            "100.128.0.1",
            "::ffff:8.8.8.8",
            "2606:4700::1111",
            "2a00:1450:4001::200e",
            "64:ff9b::808:808",
        ] {
            assert!(is_public(ip(s)), "{s} is public");
        }
    }

    #[test]
    fn cidrs_match_their_range_and_mapped_addresses() {
        let c = Cidr::parse("127.0.0.0/8").unwrap();
        assert!(c.contains(ip("127.9.9.9")));
        assert!(c.contains(ip("::ffff:127.0.0.1")));
        assert!(!c.contains(ip("128.0.0.1")));
        let one = Cidr::parse("127.0.0.1").unwrap();
        assert!(!one.contains(ip("127.0.0.2")));
        assert!(Cidr::parse("::1").unwrap().contains(ip("::1")));
        assert!(Cidr::parse("10.0.0.0/33").is_err());
        assert!(Cidr::parse("example.com").is_err());
        assert!(Cidr::parse("0.0.0.0/0").unwrap().contains(ip("8.8.8.8")));
    }

    #[test]
    fn urls_parse_with_their_origin() {
        let t = Target::parse("https://push.example.com/a/b?c=1").unwrap();
        assert_eq!(t.origin(), "https://push.example.com");
        assert_eq!(t.path, "/a/b?c=1");
        let t = Target::parse("http://127.0.0.1:8080/x").unwrap();
        assert_eq!(t.origin(), "http://127.0.0.1:8080");
        let t = Target::parse("https://[::1]:444/").unwrap();
        assert_eq!(t.host, "::1");
        assert_eq!(t.origin(), "https://[::1]:444");
        assert!(Target::parse("ftp://x/").is_err());
        assert!(Target::parse("https://user:pw@x/").is_err());
        assert!(Target::parse("/relative").is_err());
    }

    fn client(allow: &[&str], allow_http: bool) -> Outbound {
        Outbound::new(
            &OutboundConfig {
                allow: allow.iter().map(|s| s.to_string()).collect(),
                allow_http,
                ..OutboundConfig::default()
            },
            &[],
        )
        .unwrap()
    }

    #[tokio::test]
    async fn allowed_hosts_are_exempt_from_both_rules_by_name_and_port() {
        let hosts = ["localhost".to_string(), "127.0.0.2:8443".to_string()];
        let c = Outbound::new(&OutboundConfig::default(), &hosts).unwrap();
        assert!(c.vet("http://localhost:9/", true).await.is_ok());
        assert!(c.vet("http://LOCALHOST/x", true).await.is_ok());
        assert!(c.vet("http://127.0.0.2:8443/", true).await.is_ok());
        // The same address by another port, or another loopback name, is
        // still refused.
        assert!(c.vet("http://127.0.0.2:8444/", true).await.is_err());
        assert!(c.vet("https://127.0.0.1/", true).await.is_err());
    }

    #[tokio::test]
    async fn an_answer_longer_than_the_cap_is_cut_and_marked() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            for _ in 0..2 {
                let (mut s, _) = listener.accept().await.unwrap();
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf).await;
                let body = vec![b'x'; 100_000];
                let head = format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n", body.len());
                let _ = s.write_all(head.as_bytes()).await;
                let _ = s.write_all(&body).await;
            }
        });
        let c = client(&["127.0.0.1"], true);
        let url = format!("http://127.0.0.1:{port}/");
        let r = c
            .send_capped(Method::GET, &url, false, vec![], Bytes::new(), 1000)
            .await
            .unwrap();
        assert_eq!((r.body.len(), r.truncated), (1000, true));
        let r = c
            .send_capped(Method::GET, &url, false, vec![], Bytes::new(), 200_000)
            .await
            .unwrap();
        assert_eq!((r.body.len(), r.truncated), (100_000, false));
    }

    #[tokio::test]
    async fn private_targets_are_refused_unless_allowed() {
        let c = client(&[], false);
        for url in [
            "https://127.0.0.1/",
            "https://[::1]/",
            "https://[::ffff:7f00:1]/",
            "https://169.254.169.254/latest",
            "https://localhost/",
            "https://10.0.0.1/",
        ] {
            let e = c.vet(url, true).await.unwrap_err();
            assert!(matches!(e, OutboundError::Refused(_)), "{url}: {e}");
        }
        let e = c.vet("http://8.8.8.8/", true).await.unwrap_err();
        assert!(matches!(e, OutboundError::Refused(_)), "{e}");
        // Allowed: the address, but http only with allow_http too.
        let c = client(&["127.0.0.1"], false);
        assert!(c.vet("https://127.0.0.1:9/", true).await.is_ok());
        assert!(c.vet("http://127.0.0.1:9/", true).await.is_err());
        assert!(c.vet("https://127.0.0.2:9/", true).await.is_err());
        let c = client(&["127.0.0.1"], true);
        assert!(c.vet("http://127.0.0.1:9/", true).await.is_ok());
        // allow_http never opens plain http to an address not allowlisted.
        assert!(c.vet("http://8.8.8.8/", true).await.is_err());
    }
}
