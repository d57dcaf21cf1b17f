//! Tokens signed by the operator's app (`[auth.external]`): a shared HS256
//! secret or a key set served over HTTP (by a small server in the test),
//! accepted on REST, `/ws` (query and `auth` frame) and Socket.IO, each
//! refusal the keys must make, and the account they link to.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use futures_util::{SinkExt, StreamExt};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;

use crate::common::{Closed, TestApp, Ws};

const SECRET: &str = "the-apps-own-jwt-secret-0123456789";
const ISSUER: &str = "https://app.example.com";
const AUDIENCE: &str = "confab";

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// The usual claims of the app's token for `sub`, with `extra` merged in.
fn claims(sub: &str, extra: Value) -> Value {
    let mut c = json!({
        "sub": sub, "iss": ISSUER, "aud": AUDIENCE,
        "iat": now(), "exp": now() + 600, "name": sub,
    });
    if let (Some(c), Value::Object(extra)) = (c.as_object_mut(), extra) {
        for (k, v) in extra {
            c.insert(k, v);
        }
    }
    c
}

fn hs256(claims: &Value) -> String {
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .expect("signed")
}

fn b64url(data: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(data)
}

async fn spawn_hs256(tweak: impl FnOnce(&mut confab::config::Config)) -> TestApp {
    TestApp::spawn_with(|c| {
        c.auth.external.hs256_secret = SECRET.into();
        c.auth.external.issuer = ISSUER.into();
        c.auth.external.audience = AUDIENCE.into();
        c.auth.external.username_claim = "name".into();
        c.auth.external.role_claim = "roles".into();
        tweak(c);
    })
    .await
}

async fn me(t: &TestApp, token: &str) -> (u16, Value) {
    t.get("/api/me", token).await
}

/// Socket.IO CONNECT with `token`: the reply packet's data (`{sid}` or an
/// error's `{message}`).
async fn socketio_connect(base: &str, token: &str) -> Value {
    let url = format!(
        "{}/socket.io/?EIO=4&transport=websocket",
        base.replacen("http", "ws", 1)
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(url)
        .await
        .expect("websocket connects");
    ws.send(Message::text(format!("40{}", json!({ "token": token }))))
        .await
        .expect("sent");
    loop {
        let msg = tokio::time::timeout(std::time::Duration::from_secs(10), ws.next())
            .await
            .expect("a packet in time")
            .expect("open")
            .expect("a valid frame");
        if let Message::Text(t) = msg
            && (t.starts_with("40") || t.starts_with("44"))
        {
            return serde_json::from_str(&t[2..]).expect("JSON");
        }
    }
}

#[tokio::test]
async fn an_apps_token_makes_an_account_once_and_works_everywhere() {
    let t = spawn_hs256(|_| {}).await;
    let token = hs256(&claims("u-100", json!({"name": "Alice Smith"})));
    let (status, body) = me(&t, &token).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["user"]["username"], "alice_smith");
    assert_eq!(body["user"]["role"], "user");
    let id = body["user"]["id"].clone();

    // `/ws` by query and by `auth` frame, and Socket.IO's CONNECT.
    let ws = t.ws(&token).await;
    assert_eq!(ws.hello["data"]["user"]["id"], id);
    t.sync().await;
    let mut framed = Ws::connect(&t.ws_url).await;
    let ack = framed.ok("auth", json!({ "token": token })).await;
    assert_eq!(ack["user"]["id"], id, "{ack}");
    let reply = socketio_connect(&t.next_url(), &token).await;
    assert!(reply["sid"].is_string(), "{reply}");

    // A rename in the app keeps the account (linked by subject).
    let renamed = hs256(&claims("u-100", json!({"name": "Alice Jones"})));
    let (status, body) = me(&t, &renamed).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["user"]["id"], id);
    assert_eq!(body["user"]["username"], "alice_smith");

    // A name a local account has is not taken over: the newcomer gets a
    // suffix and an account of its own.
    let (_, local) = t.register("bob").await;
    let (status, body) = me(&t, &hs256(&claims("u-200", json!({"name": "bob"})))).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["user"]["username"], "bob-2");
    assert_ne!(body["user"]["id"], local["id"]);

    // Roles: moderator at most, whatever the token asks for.
    let (_, body) = me(
        &t,
        &hs256(&claims("u-300", json!({"roles": ["moderator"]}))),
    )
    .await;
    assert_eq!(body["user"]["role"], "moderator", "{body}");
    let (_, body) = me(&t, &hs256(&claims("u-400", json!({"roles": "admin"})))).await;
    assert_eq!(body["user"]["role"], "user", "{body}");
    // The app takes moderation away again.
    let (_, body) = me(&t, &hs256(&claims("u-300", json!({"roles": []})))).await;
    assert_eq!(body["user"]["role"], "user", "{body}");

    // No password opens an account made this way.
    let (status, _) = t
        .call(
            reqwest::Method::POST,
            "/api/auth/login",
            None,
            Some(json!({"username": "alice_smith", "password": ""})),
        )
        .await;
    assert!(status == 401 || status == 400, "{status}");
}

#[tokio::test]
async fn every_kind_of_bad_token_is_refused() {
    let t = spawn_hs256(|_| {}).await;
    let sign = |c: &Value| hs256(c);
    let none = format!(
        "{}.{}.",
        b64url(br#"{"alg":"none","typ":"JWT"}"#),
        b64url(claims("u-1", json!({})).to_string().as_bytes())
    );
    let hs384 = jsonwebtoken::encode(
        &Header::new(Algorithm::HS384),
        &claims("u-1", json!({})),
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .expect("signed");
    let other_secret = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims("u-1", json!({})),
        &EncodingKey::from_secret(b"some-other-secret-of-enough-length"),
    )
    .expect("signed");
    let good = sign(&claims("u-1", json!({})));
    // Same signature, another subject.
    let parts: Vec<&str> = good.split('.').collect();
    let tampered_body = format!(
        "{}.{}.{}",
        parts[0],
        b64url(claims("u-2", json!({})).to_string().as_bytes()),
        parts[2]
    );
    let mut no_sub = claims("u-1", json!({}));
    no_sub.as_object_mut().map(|o| o.remove("sub"));
    let cases = [
        ("alg none", none),
        ("HS384 with the secret", hs384),
        ("another secret", other_secret),
        ("tampered payload", tampered_body),
        (
            "wrong issuer",
            sign(&claims("u-1", json!({"iss": "https://evil.example"}))),
        ),
        (
            "wrong audience",
            sign(&claims("u-1", json!({"aud": "someone-else"}))),
        ),
        (
            "expired",
            sign(&claims("u-1", json!({"exp": now() - 3600}))),
        ),
        (
            "not yet valid",
            sign(&claims("u-1", json!({"nbf": now() + 3600}))),
        ),
        ("no subject", sign(&no_sub)),
    ];
    for (what, token) in cases {
        let (status, body) = me(&t, &token).await;
        assert_eq!(status, 401, "{what}: {body}");
        let mut ws = Ws::connect(&format!("{}?token={token}", t.ws_url)).await;
        assert_eq!(ws.closed().await, Closed::Code(4001), "{what}");
    }
    // None of them made an account.
    assert_eq!(me(&t, &good).await.0, 200);
    let (status, body) = t.get("/api/users/u-2", &good).await;
    assert_eq!(status, 404, "{body}");
}

#[tokio::test]
async fn bans_and_logouts_end_the_apps_tokens_too() {
    let t = spawn_hs256(|_| {}).await;
    let (_, _) = t.register("warden").await;
    let moderator = t.set_role("warden", confab::domain::Role::Moderator).await;
    let first = hs256(&claims("u-9", json!({"name": "mallory", "jti": "a"})));
    let second = hs256(&claims("u-9", json!({"name": "mallory", "jti": "b"})));
    assert_eq!(me(&t, &first).await.0, 200);

    let (status, body) = t
        .post(
            "/api/moderation/ban",
            &moderator,
            json!({"username": "mallory", "reason": "spam"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(me(&t, &first).await.0, 403);
    // A fresh token from the app does not lift the ban.
    let fresh = hs256(&claims("u-9", json!({"name": "mallory", "jti": "c"})));
    assert_eq!(me(&t, &fresh).await.0, 403);
    let (status, body) = t
        .post(
            "/api/moderation/unban",
            &moderator,
            json!({"username": "mallory"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(me(&t, &first).await.0, 200);

    // Logging out ends that token alone.
    let (status, _) = t
        .call(
            reqwest::Method::POST,
            "/api/auth/logout",
            Some(&first),
            None,
        )
        .await;
    assert_eq!(status, 204);
    assert_eq!(me(&t, &first).await.0, 401);
    assert_eq!(me(&t, &second).await.0, 200);
    // Everywhere: every token the app issued until now.
    let (status, _) = t
        .call(
            reqwest::Method::POST,
            "/api/auth/logout",
            Some(&second),
            Some(json!({"everywhere": true})),
        )
        .await;
    assert_eq!(status, 204);
    assert_eq!(me(&t, &second).await.0, 401);
    assert_eq!(me(&t, &fresh).await.0, 401);
    // A token the app issues afterwards works.
    let later = hs256(&claims("u-9", json!({"name": "mallory", "iat": now() + 2})));
    assert_eq!(me(&t, &later).await.0, 200);
}

#[tokio::test]
async fn local_passwords_can_be_switched_off() {
    let t = spawn_hs256(|c| c.auth.local_passwords = false).await;
    let (status, body) = t
        .call(
            reqwest::Method::POST,
            "/api/auth/register",
            None,
            Some(json!({"username": "carol", "password": "password-carol"})),
        )
        .await;
    assert_eq!(status, 403, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("switched off")
    );
    let (status, _) = t
        .call(
            reqwest::Method::POST,
            "/api/auth/login",
            None,
            Some(json!({"username": "carol", "password": "password-carol"})),
        )
        .await;
    assert_eq!(status, 403);
    assert_eq!(me(&t, &hs256(&claims("u-1", json!({})))).await.0, 200);
}

// Fixed test keys (generated with openssl for these tests only).
const RSA_DER: &str = "MIIEowIBAAKCAQEAr/t1i1Kcai2YIofsE/oOhQkVjCtnzpdA5fBv96xjH+8OcCN19Vp7sKvFc/FcLFgIiAaR9sJDOKblL66hsUB/fRRrNTqaQmGVZPDDdKE3Ffin1bi6tD2NvmY7v+1vLL9if+q8lJAuXGj87wtaZ3R8xP44XNfAOe/SMCyv+jHbt/itULsxo34v5TG09+eYfj11DFEymPikCbggNMV/uCEznkWDMPcx6MHaEELCLjBnHWNASY4yrzwx0/AFN0VI0GRaPh4c5XZM1gjx8xMD0YDOVcwdX0kZxfxSciANFvMBoFXziqaUxVcPM2awbDrXl0YXj8rMHNvZgOJYkrB3tck23QIDAQABAoIBAAqkBGd4MfJO73P8Y/nmlMTWgnGx7i+VAFzm54js6NF1fZn/iuewS5T9zeKaJXNI9LsaKpk7sHTXIo8k2qytCbMLw6+5lg+NdvWzg8ikNtXNQy4DuBujMn7gukbQmc2gL4SB3QUz8pmuf3IKGF1JCIJLcieq+U8yK7NeAFtQcx3x1wGq51xRVPXWyDYzMPNK2bJ3XZiKwk3THM8kUtcV2F7TL2hjCgkZTAXfQzET9ZxMeRabRhzaR6RPTZNByhxyaKI73pjcoBbUg/BImk8QVTqWu0sYW6Idm5HX1URcWNgq6IpNWG5ZjHJJlbtrWyzqZUv+zv+uw0ZtZvqR/vAqsgECgYEA3joD6Wsiec3E1brsHufi+cS+vDRKBZI9LuljcIZCHaCJR0brcLLeauHAdSm2e4jRbzc6diV3azYdM475dgI8HzK3YOjYVBBcB7FOSLnoCBcpHRh19yyjioRr90oQ2g2EYgchzYhldu15LG1ON7RzBaQUVmEtuApdYLJ0CwIK3okCgYEAyrpA3PGCN94pHyy9rusKDTJ8aEXScMa4nnUAFFCqD3zRBWq/zCQZ4wD9EFrXNJurp4bY8cNIcqM7cKx4yO1kMtHqTGRKW289nn2ZUosFuBoH6yQiSpRFSoxSHlC90BxlVZH0PFF9IPvN/PQsSN6srp9NWewPyqVVlorlrE3S4LUCgYB7duoTdiVaXNs+D7L93MF7GTcLI1X40G3TsXFA5Ca5hSagBiPqokX2ReSCc6Fh8vrA+oMtftVhKFiC+61XRhiXELtXSSZfVhN7ZqPivf7O9+csthlcMV3PKJE/e9PvAdGKEQJTybLtpzRKXZQ2WLgK60UtVKJs/L0yaxMTxpe5WQKBgBUUvy/6kT78BCywu1zYJihvKo6xTAvcLlCT/Bkgtj58DURR8HXq/yIi9S3hNGXNFlGKbT7evsblAIZb+Qdz4CqEt6eP+kd9ztuPVgVGXabiVhZ2oHY+6uGwq81pOgPNICCA1/P5yVhHtwjp3z0Ios5Z1HJYYOACx16rPOzo/tfNAoGBAIMneEY8dL0bWs5f5NOuP7U9ChZqNxauhJVp3ghvVDXWvRtsngNtWyg+o4EiDrNn2HqHY6X2IEhLEtM1wHRWoWfjq2sFD9+sv90OARcVkEcAwSHL100Cbj8Px0lUOfcG0p9PurfNWINfxtkkeWUCW+aDK7UuMBNzPgUP0pEwj1L7";
const RSA_N: &str = "r_t1i1Kcai2YIofsE_oOhQkVjCtnzpdA5fBv96xjH-8OcCN19Vp7sKvFc_FcLFgIiAaR9sJDOKblL66hsUB_fRRrNTqaQmGVZPDDdKE3Ffin1bi6tD2NvmY7v-1vLL9if-q8lJAuXGj87wtaZ3R8xP44XNfAOe_SMCyv-jHbt_itULsxo34v5TG09-eYfj11DFEymPikCbggNMV_uCEznkWDMPcx6MHaEELCLjBnHWNASY4yrzwx0_AFN0VI0GRaPh4c5XZM1gjx8xMD0YDOVcwdX0kZxfxSciANFvMBoFXziqaUxVcPM2awbDrXl0YXj8rMHNvZgOJYkrB3tck23Q";
const EC_DER: &str = "MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgOpB+p6LdFMu6b5IwKOeW5XOdupbEVkJ6hmyyxVXUECShRANCAAQJES16zHNXdwudyhBN9Plf0BjWhV+JMCgXQyUtfX6E0mHvWzne5J9gcgourVyPcYYFTFt+BWVXkwuNtEoaXrOg";
const EC_X: &str = "CREtesxzV3cLncoQTfT5X9AY1oVfiTAoF0MlLX1-hNI";
const EC_Y: &str = "Ye9bOd7kn2ByCi6tXI9xhgVMW34FZVeTC420Shpes6A";
const ED_DER: &str = "MC4CAQAwBQYDK2VwBCIEINa9YtvM70GPxrgYHBr8J20FuWNrC4luStcuKFowNGZg";
const ED_X: &str = "6Jp5VLQs8gjscQ6qqMihiENCtj7AiWSeS7r7OD3SA3E";

fn der(b64: &str) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD
        .decode(b64)
        .expect("base64")
}

fn signed(alg: Algorithm, kid: &str, key: &EncodingKey, claims: &Value) -> String {
    let mut h = Header::new(alg);
    h.kid = Some(kid.into());
    jsonwebtoken::encode(&h, claims, key).expect("signed")
}

/// A key set served over plain HTTP on 127.0.0.1; counts the fetches.
struct JwksServer {
    url: String,
    body: Arc<Mutex<String>>,
    fetches: Arc<AtomicUsize>,
}

impl JwksServer {
    async fn start(keys: Value) -> JwksServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let body = Arc::new(Mutex::new(keys.to_string()));
        let fetches = Arc::new(AtomicUsize::new(0));
        let (b, f) = (body.clone(), fetches.clone());
        tokio::spawn(async move {
            while let Ok((mut sock, _)) = listener.accept().await {
                let (b, f) = (b.clone(), f.clone());
                tokio::spawn(async move {
                    let mut req = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                        match sock.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => req.extend_from_slice(&buf[..n]),
                        }
                    }
                    f.fetch_add(1, Ordering::SeqCst);
                    let body = b.lock().map(|s| s.clone()).unwrap_or_default();
                    let resp = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = sock.write_all(resp.as_bytes()).await;
                });
            }
        });
        JwksServer {
            url: format!("http://{addr}/.well-known/jwks.json"),
            body,
            fetches,
        }
    }

    fn serve(&self, keys: Value) {
        if let Ok(mut b) = self.body.lock() {
            *b = keys.to_string();
        }
    }
}

fn rsa_jwk(kid: &str) -> Value {
    json!({"kty": "RSA", "kid": kid, "use": "sig", "n": RSA_N, "e": "AQAB"})
}

async fn spawn_jwks(server: &JwksServer, min_interval: u64) -> TestApp {
    let url = server.url.clone();
    TestApp::spawn_with(move |c| {
        c.auth.external.jwks_url = url;
        c.auth.external.issuer = ISSUER.into();
        c.auth.external.audience = AUDIENCE.into();
        c.auth.external.jwks_min_interval_secs = min_interval;
        c.outbound.allow = vec!["127.0.0.1".into()];
        c.outbound.allow_http = true;
    })
    .await
}

#[tokio::test]
async fn rs256_es256_and_eddsa_keys_from_a_key_set() {
    let server = JwksServer::start(json!({"keys": [
        rsa_jwk("rsa-1"),
        {"kty": "EC", "crv": "P-256", "kid": "ec-1", "x": EC_X, "y": EC_Y},
        {"kty": "OKP", "crv": "Ed25519", "kid": "ed-1", "x": ED_X},
    ]}))
    .await;
    let t = spawn_jwks(&server, 3600).await;
    let rsa = EncodingKey::from_rsa_der(&der(RSA_DER));
    let ec = EncodingKey::from_ec_der(&der(EC_DER));
    let ed = EncodingKey::from_ed_der(&der(ED_DER));
    for (alg, kid, key, sub) in [
        (Algorithm::RS256, "rsa-1", &rsa, "k-rsa"),
        (Algorithm::ES256, "ec-1", &ec, "k-ec"),
        (Algorithm::EdDSA, "ed-1", &ed, "k-ed"),
    ] {
        let token = signed(alg, kid, key, &claims(sub, json!({})));
        let (status, body) = me(&t, &token).await;
        assert_eq!(status, 200, "{alg:?}: {body}");
        assert_eq!(body["user"]["username"], sub);
        let ws = t.ws(&token).await;
        assert_eq!(ws.hello["data"]["user"]["username"], sub);
    }

    // Each key verifies its own algorithm only.
    let confused = signed(
        Algorithm::HS256,
        "rsa-1",
        &EncodingKey::from_secret(RSA_N.as_bytes()),
        &claims("k-rsa", json!({})),
    );
    let rsa_as_ec = signed(Algorithm::RS256, "ec-1", &rsa, &claims("k-ec", json!({})));
    let ps256 = signed(Algorithm::PS256, "rsa-1", &rsa, &claims("k-rsa", json!({})));
    let wrong_iss = signed(
        Algorithm::ES256,
        "ec-1",
        &ec,
        &claims("k-ec", json!({"iss": "https://other.example"})),
    );
    let expired = signed(
        Algorithm::EdDSA,
        "ed-1",
        &ed,
        &claims("k-ed", json!({"exp": now() - 3600})),
    );
    let good = signed(Algorithm::EdDSA, "ed-1", &ed, &claims("k-ed", json!({})));
    let parts: Vec<&str> = good.split('.').collect();
    let mut sig = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(parts[2])
        .expect("signature");
    sig[0] ^= 1;
    let tampered = format!("{}.{}.{}", parts[0], parts[1], b64url(&sig));
    for (what, token) in [
        ("HS256 with the RSA key (algorithm confusion)", confused),
        ("RS256 naming the EC key", rsa_as_ec),
        ("PS256 for an RS256 key", ps256),
        ("wrong issuer", wrong_iss),
        ("expired", expired),
        ("tampered signature", tampered),
    ] {
        let (status, body) = me(&t, &token).await;
        assert_eq!(status, 401, "{what}: {body}");
    }
}

#[tokio::test]
async fn an_unknown_key_fetches_the_set_again_but_not_too_often() {
    let server = JwksServer::start(json!({"keys": [rsa_jwk("old")]})).await;
    let t = spawn_jwks(&server, 3600).await;
    let rsa = EncodingKey::from_rsa_der(&der(RSA_DER));
    let token = signed(Algorithm::RS256, "old", &rsa, &claims("r-1", json!({})));
    assert_eq!(me(&t, &token).await.0, 200);
    let nodes = 1 + t.others.len();
    let after_first = server.fetches.load(Ordering::SeqCst);
    assert!(after_first >= 1 && after_first <= nodes, "{after_first}");
    // An unknown kid asks again at most once per interval per node.
    let unknown = signed(Algorithm::RS256, "nope", &rsa, &claims("r-1", json!({})));
    for _ in 0..6 {
        assert_eq!(me(&t, &unknown).await.0, 401);
    }
    let fetched = server.fetches.load(Ordering::SeqCst);
    assert!(fetched <= after_first + nodes, "{fetched} fetches");
    // Known keys still work meanwhile.
    assert_eq!(me(&t, &token).await.0, 200);
}

#[tokio::test]
async fn a_rotated_key_is_picked_up() {
    let server = JwksServer::start(json!({"keys": [rsa_jwk("old")]})).await;
    let t = spawn_jwks(&server, 0).await;
    let rsa = EncodingKey::from_rsa_der(&der(RSA_DER));
    let ec = EncodingKey::from_ec_der(&der(EC_DER));
    let old = signed(Algorithm::RS256, "old", &rsa, &claims("rot", json!({})));
    assert_eq!(me(&t, &old).await.0, 200);
    let new = signed(Algorithm::ES256, "new", &ec, &claims("rot", json!({})));
    assert_eq!(me(&t, &new).await.0, 401, "not published yet");
    server.serve(json!({"keys": [
        {"kty": "EC", "crv": "P-256", "kid": "new", "x": EC_X, "y": EC_Y},
    ]}));
    let (status, body) = me(&t, &new).await;
    assert_eq!(status, 200, "{body}");
    // The same account, whichever key signed.
    let (_, first) = me(&t, &new).await;
    assert_eq!(first["user"]["username"], "rot");
}
