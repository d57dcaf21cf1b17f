use reqwest::Method;
use serde_json::json;

use crate::common::TestApp;

fn id(v: &serde_json::Value) -> String {
    v["id"].as_str().expect("id").to_string()
}

#[tokio::test]
async fn create_list_get_and_members() {
    let t = TestApp::spawn().await;
    let (alice, alice_user) = t.register("alice").await;
    let (status, body) = t
        .post(
            "/api/rooms",
            &alice,
            json!({"name": "general", "topic": "all things"}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let room = &body["room"];
    assert_eq!(room["name"], "general");
    assert_eq!(room["kind"], "room");
    assert_eq!(room["visibility"], "public");
    assert_eq!(room["topic"], "all things");
    assert_eq!(room["owner"], alice_user["id"]);
    assert!(room["created_at"].as_i64().unwrap() > 1_600_000_000_000);

    let (status, body) = t.get("/api/rooms", &alice).await;
    assert_eq!(status, 200);
    assert_eq!(body["rooms"].as_array().unwrap().len(), 1);

    let (status, body) = t.get(&format!("/api/rooms/{}", id(room)), &alice).await;
    assert_eq!(status, 200);
    assert_eq!(body["members"], json!([alice_user]));

    let (bob, bob_user) = t.register("bob").await;
    let (status, _) = t
        .post(
            &format!("/api/rooms/{}/members", id(room)),
            &bob,
            json!({"username": "bob"}),
        )
        .await;
    assert_eq!(status, 204);
    let (_, body) = t.get(&format!("/api/rooms/{}", id(room)), &alice).await;
    let names: Vec<&str> = body["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["username"].as_str().unwrap())
        .collect();
    assert!(
        names.contains(&"alice") && names.contains(&"bob"),
        "{names:?}"
    );
    let _ = bob_user;
}

#[tokio::test]
async fn room_names_are_validated_and_unique() {
    let t = TestApp::spawn().await;
    let (alice, _) = t.register("alice").await;
    for bad in [
        "",
        "General",
        "has space",
        "dots.not.allowed",
        &"x".repeat(65),
    ] {
        let (status, body) = t.post("/api/rooms", &alice, json!({ "name": bad })).await;
        assert_eq!(status, 400, "{bad:?}: {body}");
        assert!(body["error"]["message"].as_str().unwrap().contains("name"));
    }
    let (status, body) = t
        .post(
            "/api/rooms",
            &alice,
            json!({"name": "x", "visibility": "secret"}),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    t.create_room(&alice, "taken", "public").await;
    let (status, body) = t.post("/api/rooms", &alice, json!({"name": "taken"})).await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"]["code"], "conflict");
}

#[tokio::test]
async fn private_rooms_are_closed_to_non_members() {
    let t = TestApp::spawn().await;
    let (alice, _) = t.register("alice").await;
    let (bob, _) = t.register("bob").await;
    let secret = t.create_room(&alice, "secret", "private").await;
    t.create_room(&alice, "open", "public").await;

    let (_, body) = t.get("/api/rooms", &bob).await;
    let names: Vec<&str> = body["rooms"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["open"]);
    let (_, body) = t.get("/api/rooms", &alice).await;
    assert_eq!(body["rooms"].as_array().unwrap().len(), 2);

    let path = format!("/api/rooms/{}", id(&secret));
    let (status, body) = t.get(&path, &bob).await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["error"]["code"], "forbidden");
    // Bob cannot add himself to a private room.
    let (status, _) = t
        .post(&format!("{path}/members"), &bob, json!({"username": "bob"}))
        .await;
    assert_eq!(status, 403);
    // The owner can add him, and then he sees it.
    let (status, _) = t
        .post(
            &format!("{path}/members"),
            &alice,
            json!({"username": "bob"}),
        )
        .await;
    assert_eq!(status, 204);
    assert_eq!(t.get(&path, &bob).await.0, 200);
    let (status, _) = t
        .post(
            &format!("{path}/members"),
            &alice,
            json!({"username": "nobody"}),
        )
        .await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn patch_and_delete_need_the_owner_or_staff() {
    let t = TestApp::spawn().await;
    let (alice, _) = t.register("alice").await;
    let (bob, _) = t.register("bob").await;
    let room = t.create_room(&alice, "lounge", "public").await;
    let path = format!("/api/rooms/{}", id(&room));

    let (status, body) = t
        .call(
            Method::PATCH,
            &path,
            Some(&bob),
            Some(json!({"topic": "mine now"})),
        )
        .await;
    assert_eq!(status, 403, "{body}");
    let (status, _) = t.call(Method::DELETE, &path, Some(&bob), None).await;
    assert_eq!(status, 403);

    let (status, body) = t
        .call(
            Method::PATCH,
            &path,
            Some(&alice),
            Some(json!({"topic": "quiet please", "visibility": "private"})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["room"]["topic"], "quiet please");
    assert_eq!(body["room"]["visibility"], "private");
    let (status, _) = t
        .call(
            Method::PATCH,
            &path,
            Some(&alice),
            Some(json!({"visibility": "hidden"})),
        )
        .await;
    assert_eq!(status, 400);

    // A moderator may patch but not delete; an admin may do both.
    let bob = t.set_role("bob", confab::domain::Role::Moderator).await;
    let (status, body) = t
        .call(
            Method::PATCH,
            &path,
            Some(&bob),
            Some(json!({"topic": "moderated"})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(t.call(Method::DELETE, &path, Some(&bob), None).await.0, 403);

    let (status, _) = t.call(Method::DELETE, &path, Some(&alice), None).await;
    assert_eq!(status, 204);
    assert_eq!(t.get(&path, &alice).await.0, 404);
    assert_eq!(t.get("/api/rooms/not-an-id", &alice).await.0, 404);
    // The name is free again.
    t.create_room(&alice, "lounge", "public").await;
}

#[tokio::test]
async fn room_calls_need_a_token() {
    let t = TestApp::spawn().await;
    let (status, body) = t.call(Method::GET, "/api/rooms", None, None).await;
    assert_eq!(status, 401);
    assert_eq!(body["error"]["code"], "unauthorized");
    let (status, _) = t
        .call(Method::POST, "/api/rooms", None, Some(json!({"name": "x"})))
        .await;
    assert_eq!(status, 401);
}
