//! Attachments that are any file: kept as sent, named, typed from their
//! name, served as downloads, restricted by an allowlist and a quota.

use image::ImageFormat;
use serde_json::{Value, json};

use crate::common::{TestApp, send_message};
use crate::uploads::{picture, upload};

async fn fetch(t: &TestApp, path: &str) -> reqwest::Response {
    t.sync().await;
    t.http
        .get(format!("{}{}", t.next_url(), path))
        .send()
        .await
        .expect("sent")
}

fn header(r: &reqwest::Response, name: &str) -> String {
    r.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string()
}

#[tokio::test]
async fn any_file_is_kept_as_sent_and_served_as_a_download() {
    let t = TestApp::spawn().await;
    let (alice, _) = t.register("alice").await;
    let room = t.create_room(&alice, "r", "public").await;
    let room = room["id"].as_str().unwrap();
    let pdf = b"%PDF-1.4\n% not really a PDF, but bytes are bytes\n".to_vec();
    let (status, a) = upload(
        &t,
        &alice,
        "../Résumé \"final\".pdf",
        "application/pdf",
        pdf.clone(),
    )
    .await;
    assert_eq!(status, 201, "{a}");
    assert_eq!(a["kind"], "file");
    assert_eq!(a["mime"], "application/pdf");
    assert_eq!(a["name"], "Résumé _final_.pdf");
    assert_eq!(a["size"], pdf.len());
    assert_eq!(a["thumb_url"], "");

    let r = fetch(&t, a["url"].as_str().unwrap()).await;
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "content-type"), "application/pdf");
    assert_eq!(
        header(&r, "content-disposition"),
        "attachment; filename=\"R_sum_ _final_.pdf\"; filename*=UTF-8''R%C3%A9sum%C3%A9%20_final_.pdf"
    );
    assert_eq!(header(&r, "x-content-type-options"), "nosniff");
    assert_eq!(
        header(&r, "content-security-policy"),
        "default-src 'none'; sandbox"
    );
    assert_eq!(r.bytes().await.unwrap().as_ref(), pdf.as_slice());
    // Files have no thumbnail.
    let r = fetch(&t, &format!("{}/thumb", a["url"].as_str().unwrap())).await;
    assert_eq!(r.status(), 404);

    // A page is a download of unknown type, never a document.
    let (status, h) = upload(
        &t,
        &alice,
        "evil.html",
        "text/html",
        b"<script>alert(1)</script>".to_vec(),
    )
    .await;
    assert_eq!(status, 201, "{h}");
    assert_eq!(h["mime"], "application/octet-stream");
    let r = fetch(&t, h["url"].as_str().unwrap()).await;
    assert_eq!(header(&r, "content-type"), "application/octet-stream");
    assert!(header(&r, "content-disposition").starts_with("attachment;"));

    // Messages carry them with their names and kinds.
    let (status, body) = t
        .post(
            &format!("/api/rooms/{room}/messages"),
            &alice,
            json!({"text": "the CV", "attachments": [a["id"]]}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    t.sync().await;
    let history = t.history_all(&alice, room).await;
    let att = &history.last().unwrap()["attachments"][0];
    assert_eq!(att["name"], "Résumé _final_.pdf");
    assert_eq!(att["kind"], "file");

    // Images keep being re-encoded, shown inline, and now keep their name.
    let (status, img) = upload(
        &t,
        &alice,
        "cat.png",
        "image/png",
        picture(ImageFormat::Png, 10, 10),
    )
    .await;
    assert_eq!(status, 201, "{img}");
    assert_eq!(img["kind"], "image");
    assert_eq!(img["name"], "cat.png");
    let r = fetch(&t, img["url"].as_str().unwrap()).await;
    assert_eq!(header(&r, "content-disposition"), "inline");
}

#[tokio::test]
async fn audio_and_video_have_their_kinds() {
    let t = TestApp::spawn().await;
    let (alice, _) = t.register("alice").await;
    for (name, kind, mime) in [
        ("song.ogg", "audio", "audio/ogg"),
        ("voice.MP3", "audio", "audio/mpeg"),
        ("clip.webm", "video", "video/webm"),
        ("movie.mp4", "video", "video/mp4"),
        ("archive.zip", "file", "application/zip"),
    ] {
        let (status, a) = upload(&t, &alice, name, "application/octet-stream", vec![7; 64]).await;
        assert_eq!(status, 201, "{name}: {a}");
        assert_eq!(a["kind"], kind, "{name}");
        assert_eq!(a["mime"], mime, "{name}");
        let r = fetch(&t, a["url"].as_str().unwrap()).await;
        assert_eq!(header(&r, "content-type"), mime);
        assert!(header(&r, "content-disposition").starts_with("attachment;"));
    }
}

#[tokio::test]
async fn the_allowlist_and_the_size_limit_refuse_files() {
    let t = TestApp::spawn_with(|c| {
        c.uploads.allowed_types = vec!["application/pdf".into(), "audio/*".into(), ".zip".into()];
        c.uploads.max_file_bytes = 1000;
    })
    .await;
    let (alice, _) = t.register("alice").await;
    for (name, ok) in [
        ("a.pdf", true),
        ("b.ogg", true),
        ("c.ZIP", true),
        ("d.exe", false),
        ("e.mp4", false),
        ("noext", false),
    ] {
        let (status, e) = upload(&t, &alice, name, "application/pdf", vec![1; 100]).await;
        if ok {
            assert_eq!(status, 201, "{name}: {e}");
        } else {
            assert_eq!(status, 415, "{name}: {e}");
            assert_eq!(e["error"]["code"], "unsupported_media_type");
        }
    }
    // Images are not files: the allowlist does not apply to them.
    let (status, e) = upload(
        &t,
        &alice,
        "x.png",
        "image/png",
        picture(ImageFormat::Png, 4, 4),
    )
    .await;
    assert_eq!(status, 201, "{e}");
    let (status, e) = upload(&t, &alice, "big.pdf", "application/pdf", vec![1; 1001]).await;
    assert_eq!(status, 413, "{e}");
    assert_eq!(e["error"]["code"], "too_large");
    let (status, _) = upload(&t, &alice, "fits.pdf", "application/pdf", vec![1; 1000]).await;
    assert_eq!(status, 201);
}

#[tokio::test]
async fn the_quota_counts_every_file() {
    let t = TestApp::spawn_with(|c| c.uploads.quota_bytes_per_user = 2500).await;
    let (alice, _) = t.register("alice").await;
    let (bob, _) = t.register("bob").await;
    for name in ["a.bin", "b.bin"] {
        let (status, e) = upload(&t, &alice, name, "application/octet-stream", vec![1; 1000]).await;
        assert_eq!(status, 201, "{e}");
    }
    let (status, e) = upload(
        &t,
        &alice,
        "c.bin",
        "application/octet-stream",
        vec![1; 1000],
    )
    .await;
    assert_eq!(status, 403, "{e}");
    assert_eq!(e["error"]["code"], "forbidden");
    assert_eq!(e["error"]["reason"], "quota_exceeded");
    assert!(e["error"]["message"].as_str().unwrap().contains("quota"));
    // Someone else's quota is their own.
    let (status, _) = upload(&t, &bob, "c.bin", "application/octet-stream", vec![1; 1000]).await;
    assert_eq!(status, 201);
    // Deleting an upload gives its bytes back.
    let list = t.app().uploads(Some("alice")).unwrap();
    assert_eq!(list.len(), 2);
    assert!(list.iter().all(|u| u.kind == "file" && u.size == 1000));
    t.app().delete_upload(&list[0].id).await.unwrap();
    t.sync().await;
    let (status, e) = upload(
        &t,
        &alice,
        "c.bin",
        "application/octet-stream",
        vec![1; 1000],
    )
    .await;
    assert_eq!(status, 201, "{e}");
}

#[tokio::test]
async fn a_file_sent_in_a_message_reaches_the_room() {
    let t = TestApp::spawn().await;
    let (alice, _) = t.register("alice").await;
    let (bob, _) = t.register("bob").await;
    let room = t.create_room(&alice, "r", "public").await;
    let room = room["id"].as_str().unwrap().to_string();
    let (status, _) = t
        .post(
            &format!("/api/rooms/{room}/members"),
            &bob,
            json!({"username": "bob"}),
        )
        .await;
    assert_eq!(status, 204);
    let mut ws = t.ws(&bob).await;
    let (_, a) = upload(&t, &alice, "notes.txt", "text/plain", b"hello".to_vec()).await;
    let (status, body) = t
        .post(
            &format!("/api/rooms/{room}/messages"),
            &alice,
            json!({"attachments": [a["id"]]}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let m = ws.next_of("message").await;
    let att: &Value = &m["data"]["message"]["attachments"][0];
    assert_eq!(att["name"], "notes.txt");
    assert_eq!(att["kind"], "file");
    assert_eq!(att["mime"], "text/plain");
    let _ = send_message(&t, &alice, &room, "after").await;
}
