use reqwest::Method;
use serde_json::json;

use crate::common::TestApp;

#[tokio::test]
async fn health_check() {
    let t = TestApp::spawn().await;
    let (status, body) = t.call(Method::GET, "/healthz", None, None).await;
    assert_eq!(status, 200);
    assert_eq!(body, json!({"status": "ok"}));
    let resp = t
        .http
        .get(format!("{}/api/me", t.url))
        .send()
        .await
        .unwrap();
    let h = resp.headers();
    assert_eq!(h["x-content-type-options"], "nosniff");
    assert_eq!(h["x-frame-options"], "DENY");
    assert_eq!(h["referrer-policy"], "no-referrer");
    assert_eq!(h["cache-control"], "no-store");
}

#[tokio::test]
async fn register_login_and_me() {
    let t = TestApp::spawn().await;
    let (token, user) = t.register("Alice").await;
    assert_eq!(user["username"], "alice");
    assert_eq!(user["role"], "user");
    assert!(user["id"].is_string());

    let (status, body) = t.get("/api/me", &token).await;
    assert_eq!(status, 200);
    assert_eq!(body["user"], user);

    let (status, body) = t
        .call(
            Method::POST,
            "/api/auth/login",
            None,
            Some(json!({"username": "ALICE", "password": "password-Alice"})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["user"], user);
    let (status, _) = t.get("/api/me", body["token"].as_str().unwrap()).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn wrong_password_and_unknown_user_are_401() {
    let t = TestApp::spawn().await;
    t.register("bob").await;
    for (name, pw) in [("bob", "not-the-password"), ("nobody", "whatever-password")] {
        let (status, body) = t
            .call(
                Method::POST,
                "/api/auth/login",
                None,
                Some(json!({"username": name, "password": pw})),
            )
            .await;
        assert_eq!(status, 401, "{name}: {body}");
        assert_eq!(body["error"]["code"], "unauthorized");
        // The same message either way: no hint whether the name exists.
        assert_eq!(body["error"]["message"], "wrong username or password");
    }
}

#[tokio::test]
async fn duplicate_usernames_conflict_ignoring_case() {
    let t = TestApp::spawn().await;
    t.register("carol").await;
    let (status, body) = t
        .call(
            Method::POST,
            "/api/auth/register",
            None,
            Some(json!({"username": "CAROL", "password": "another-password"})),
        )
        .await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"]["code"], "conflict");
}

#[tokio::test]
async fn bad_input_is_400_and_names_the_field() {
    let t = TestApp::spawn().await;
    let cases = [
        (
            json!({"username": "ab", "password": "long-enough"}),
            "username",
        ),
        (
            json!({"username": "a b c", "password": "long-enough"}),
            "username",
        ),
        (
            json!({"username": "x".repeat(33), "password": "long-enough"}),
            "username",
        ),
        (json!({"username": "dave", "password": "short"}), "password"),
        (
            json!({"username": "dave", "password": "x".repeat(1025)}),
            "password",
        ),
        (json!({"username": "dave"}), "password"),
        (json!({"password": "long-enough"}), "username"),
    ];
    for (body, field) in cases {
        let (status, answer) = t
            .call(Method::POST, "/api/auth/register", None, Some(body.clone()))
            .await;
        assert_eq!(status, 400, "{body}: {answer}");
        assert_eq!(answer["error"]["code"], "bad_request");
        let message = answer["error"]["message"].as_str().unwrap();
        assert!(message.contains(field), "{body}: {message}");
    }
    // Malformed JSON.
    let resp = t
        .http
        .post(format!("{}/api/auth/register", t.url))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "bad_request");
    // Nothing was created by any of it.
    assert_eq!(t.app().users().unwrap().len(), 0);
}

#[tokio::test]
async fn oversize_bodies_are_413() {
    let t = TestApp::spawn().await;
    let big = "x".repeat(100 * 1024);
    let (status, body) = t
        .call(
            Method::POST,
            "/api/auth/register",
            None,
            Some(json!({"username": "eve", "password": big})),
        )
        .await;
    assert_eq!(status, 413, "{body}");
    assert_eq!(body["error"]["code"], "too_large");
}

#[tokio::test]
async fn missing_tampered_and_expired_tokens_are_401() {
    let secret = "a-test-secret-that-is-long-enough-for-hs256";
    let t = TestApp::spawn_with(|c| c.auth.jwt_secret = secret.into()).await;
    let (token, user) = t.register("frank").await;

    let (status, body) = t.call(Method::GET, "/api/me", None, None).await;
    assert_eq!(status, 401);
    assert_eq!(body["error"]["code"], "unauthorized");

    let mut tampered = token.clone();
    let last = tampered.pop().unwrap();
    tampered.push(if last == 'A' { 'B' } else { 'A' });
    assert_eq!(t.get("/api/me", &tampered).await.0, 401);
    assert_eq!(t.get("/api/me", "not-a-jwt").await.0, 401);

    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let claims = json!({"sub": user["id"], "iat": now - 7200, "exp": now - 3600});
    let key = jsonwebtoken::EncodingKey::from_secret(secret.as_bytes());
    let header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    let expired = jsonwebtoken::encode(&header, &claims, &key).unwrap();
    assert_eq!(t.get("/api/me", &expired).await.0, 401);
    // The same claims, unexpired, pass: the test above fails for the
    // right reason.
    let claims = json!({"sub": user["id"], "iat": now, "exp": now + 3600});
    let fresh = jsonwebtoken::encode(&header, &claims, &key).unwrap();
    assert_eq!(t.get("/api/me", &fresh).await.0, 200);
    // Signed with another secret.
    let other = jsonwebtoken::EncodingKey::from_secret(b"some-other-secret-some-other-secret");
    let forged = jsonwebtoken::encode(&header, &claims, &other).unwrap();
    assert_eq!(t.get("/api/me", &forged).await.0, 401);
}

#[tokio::test]
async fn registration_can_be_closed() {
    let t = TestApp::spawn_with(|c| {
        c.auth.registration = confab::config::Registration::Closed;
    })
    .await;
    let (status, body) = t
        .call(
            Method::POST,
            "/api/auth/register",
            None,
            Some(json!({"username": "gina", "password": "password-gina"})),
        )
        .await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["error"]["code"], "forbidden");
}

#[tokio::test]
async fn unknown_routes_are_404_json() {
    let t = TestApp::spawn().await;
    let (status, body) = t.call(Method::GET, "/api/nothing-here", None, None).await;
    assert_eq!(status, 404);
    assert_eq!(body["error"]["code"], "not_found");
}

#[tokio::test]
async fn data_survives_a_restart() {
    let mut t = TestApp::spawn().await;
    let (token, _) = t.register("henry").await;
    let room = t.create_room(&token, "kept", "public").await;
    t.restart(|_| {}).await;
    // The signing secret is kept in the store, so old tokens still work.
    let (status, body) = t.get("/api/me", &token).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = t
        .get(
            &format!("/api/rooms/{}", room["id"].as_str().unwrap()),
            &token,
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(body["room"], room);
    let (status, _) = t
        .call(
            Method::POST,
            "/api/auth/login",
            None,
            Some(json!({"username": "henry", "password": "password-henry"})),
        )
        .await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn user_lookup_by_name() {
    let t = TestApp::spawn().await;
    let (alice, _) = t.register("alice").await;
    let (bob, bob_user) = t.register("bob").await;

    let (status, body) = t.get("/api/users/BOB", &alice).await;
    assert_eq!(status, 200);
    assert_eq!(body, json!({ "user": bob_user }));

    let (status, body) = t.get("/api/users/nobody", &alice).await;
    assert_eq!(status, 404);
    assert_eq!(body["error"]["code"], "not_found");
    // A name no account could have is no such user, not a bad request.
    let (status, body) = t.get("/api/users/x", &alice).await;
    assert_eq!(status, 404);
    assert_eq!(body["error"]["code"], "not_found");

    let (status, _) = t.call(Method::GET, "/api/users/bob", None, None).await;
    assert_eq!(status, 401);

    // Being blocked does not show as a missing user.
    let (status, _) = t
        .post("/api/blocks", &bob, json!({"username": "alice"}))
        .await;
    assert!(status < 300, "{status}");
    let (status, body) = t.get("/api/users/bob", &alice).await;
    assert_eq!(status, 200);
    assert_eq!(body["user"]["username"], "bob");
}

/// In a cluster, a client may register through one node and go straight
/// to the next (a round-robin balancer): that node must not refuse the
/// token for an account it has not applied yet. Requests go straight to
/// each node here, without the harness's wait for the nodes to agree.
/// (One node alone: trivially so.)
#[tokio::test]
async fn a_token_made_on_one_node_works_at_once_on_the_others() {
    let t = TestApp::spawn().await;
    let mut urls = vec![t.url.clone()];
    urls.extend(t.others.iter().map(|(r, _)| r.url()));
    for i in 0..20 {
        let resp = t
            .http
            .post(format!("{}/api/auth/register", t.url))
            .json(&json!({"username": format!("hop{i}"), "password": "password-hop"}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 201);
        let body: serde_json::Value = resp.json().await.unwrap();
        let token = body["token"].as_str().unwrap().to_string();
        for url in urls.iter().rev() {
            let resp = t
                .http
                .get(format!("{url}/api/me"))
                .bearer_auth(&token)
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status().as_u16(), 200, "hop{i} at {url}");
        }
    }
}
