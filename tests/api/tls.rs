//! TLS in the binary: HTTPS and WSS on one port with a certificate made
//! here, and a certificate swap that keeps open connections.

use std::sync::Arc;

use futures_util::{SinkExt, StreamExt};
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message as WsMessage;

use crate::common::TestApp;

/// A CA and a `localhost` certificate it signed, as PEM, plus the CA's DER.
fn authority() -> (
    CertificateDer<'static>,
    String,
    String,
    CertificateDer<'static>,
) {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca, ca_key);
    let key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["localhost".to_string()])
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    (
        ca_cert.der().clone(),
        leaf.pem(),
        key.serialize_pem(),
        leaf.der().clone(),
    )
}

fn client(roots: &[CertificateDer<'static>]) -> tokio_rustls::TlsConnector {
    let mut store = rustls::RootCertStore::empty();
    for r in roots {
        store.add(r.clone()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(store)
        .with_no_client_auth();
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

type Tls = tokio_rustls::client::TlsStream<tokio::net::TcpStream>;

async fn connect(t: &TestApp, connector: &tokio_rustls::TlsConnector) -> Tls {
    let tcp = tokio::net::TcpStream::connect(t.running.as_ref().unwrap().addr)
        .await
        .unwrap();
    connector
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .expect("TLS handshake")
}

fn presented(stream: &Tls) -> CertificateDer<'static> {
    stream.get_ref().1.peer_certificates().unwrap()[0]
        .clone()
        .into_owned()
}

async fn wss(
    t: &TestApp,
    connector: &tokio_rustls::TlsConnector,
    token: &str,
) -> tokio_tungstenite::WebSocketStream<Tls> {
    let stream = connect(t, connector).await;
    let port = t.running.as_ref().unwrap().addr.port();
    let (ws, _) =
        tokio_tungstenite::client_async(format!("wss://localhost:{port}/ws?token={token}"), stream)
            .await
            .unwrap();
    ws
}

async fn answer(ws: &mut tokio_tungstenite::WebSocketStream<Tls>, id: &str) -> Value {
    loop {
        let msg = tokio::time::timeout(crate::common::WAIT, ws.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        if let WsMessage::Text(t) = msg {
            let v: Value = serde_json::from_str(&t).unwrap();
            if v["id"] == id {
                return v;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_and_wss_on_one_port_and_a_certificate_swap_keeps_connections() {
    let dir = tempfile::tempdir().unwrap();
    let (ca_a, cert_a, key_a, leaf_a) = authority();
    let (ca_b, cert_b, key_b, leaf_b) = authority();
    let cert_path = dir.path().join("cert.pem");
    let key_path = dir.path().join("key.pem");
    std::fs::write(&cert_path, &cert_a).unwrap();
    std::fs::write(&key_path, &key_a).unwrap();
    let t = TestApp::spawn_with(|c| {
        c.server.tls_cert = Some(cert_path.clone());
        c.server.tls_key = Some(key_path.clone());
    })
    .await;
    assert!(t.running.as_ref().unwrap().url().starts_with("https://"));
    let connector = client(&[ca_a, ca_b]);

    // HTTPS.
    let mut s = connect(&t, &connector).await;
    assert_eq!(presented(&s), leaf_a);
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut response = String::new();
    s.read_to_string(&mut response).await.unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.contains(r#"{"status":"ok"}"#));

    // A chat over WSS.
    let app = t.app().clone();
    let user = app
        .create_user(
            confab::domain::Username::parse("alice").unwrap(),
            confab::domain::Password::parse("password-alice").unwrap(),
            confab::domain::Role::User,
        )
        .await
        .unwrap();
    let token = app.auth.issue(user.id, 0);
    let room = app
        .create_room(
            &confab::app::Actor::User(user),
            confab::domain::RoomName::parse("secure").unwrap(),
            confab::domain::Visibility::Public,
            None,
        )
        .await
        .unwrap();
    let mut ws = wss(&t, &connector, &token).await;
    let send = |id: &str, text: &str| {
        json!({"type": "send_message", "id": id, "data": {"room": room.id, "text": text}})
            .to_string()
    };
    ws.send(WsMessage::text(send("m1", "over tls")))
        .await
        .unwrap();
    assert_eq!(answer(&mut ws, "m1").await["type"], "ack");

    // Swap the certificate; reload as SIGHUP would.
    std::fs::write(&cert_path, &cert_b).unwrap();
    std::fs::write(&key_path, &key_b).unwrap();
    t.running
        .as_ref()
        .unwrap()
        .tls
        .as_ref()
        .unwrap()
        .reload()
        .unwrap();
    let fresh = connect(&t, &connector).await;
    assert_eq!(presented(&fresh), leaf_b);
    // The connection opened before the swap goes on.
    ws.send(WsMessage::text(send("m2", "still here")))
        .await
        .unwrap();
    let ack = answer(&mut ws, "m2").await;
    assert_eq!(ack["type"], "ack");
    assert_eq!(ack["data"]["message"]["seq"], 2);

    // A broken file is refused and the working certificate stays.
    std::fs::write(&cert_path, "not a certificate").unwrap();
    assert!(
        t.running
            .as_ref()
            .unwrap()
            .tls
            .as_ref()
            .unwrap()
            .reload()
            .is_err()
    );
    let again = connect(&t, &connector).await;
    assert_eq!(presented(&again), leaf_b);
}
