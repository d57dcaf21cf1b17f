//! Image uploads: judged by their bytes, cleaned, thumbnailed, served inert.

use std::io::Cursor;

use image::{DynamicImage, ImageFormat, Rgb, RgbImage};
use reqwest::multipart::{Form, Part};
use serde_json::{Value, json};

use crate::common::TestApp;

pub(crate) fn picture(format: ImageFormat, w: u32, h: u32) -> Vec<u8> {
    // A gradient, so encoders have something real to encode.
    let img = RgbImage::from_fn(w, h, |x, y| Rgb([(x % 256) as u8, (y % 256) as u8, 128]));
    let img = DynamicImage::ImageRgb8(img);
    let mut out = Cursor::new(Vec::new());
    img.write_to(&mut out, format).expect("encodes");
    out.into_inner()
}

fn crc32(data: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

fn png_chunk(kind: &[u8; 4], data: &[u8]) -> Vec<u8> {
    let mut out = (data.len() as u32).to_be_bytes().to_vec();
    let mut body = kind.to_vec();
    body.extend_from_slice(data);
    out.extend_from_slice(&body);
    out.extend_from_slice(&crc32(&body).to_be_bytes());
    out
}

/// A PNG padded with a text chunk to exactly `size` bytes.
fn png_of_size(size: usize) -> Vec<u8> {
    let base = picture(ImageFormat::Png, 16, 16);
    let iend = base.len() - 12;
    let overhead = base.len() + 12 + 5; // chunk framing + "Note\0"
    assert!(size > overhead);
    let mut text = b"Note\0".to_vec();
    text.extend(std::iter::repeat_n(b'x', size - overhead));
    let mut out = base[..iend].to_vec();
    out.extend(png_chunk(b"tEXt", &text));
    out.extend_from_slice(&base[iend..]);
    assert_eq!(out.len(), size);
    out
}

/// A JPEG carrying an EXIF block with GPS data.
fn jpeg_with_gps() -> Vec<u8> {
    let jpeg = picture(ImageFormat::Jpeg, 64, 48);
    let mut tiff = b"II*\0\x08\0\0\0".to_vec();
    // IFD0: one entry, the GPS IFD pointer (tag 0x8825) at offset 26.
    tiff.extend_from_slice(&[1, 0, 0x25, 0x88, 4, 0, 1, 0, 0, 0, 26, 0, 0, 0, 0, 0, 0, 0]);
    // GPS IFD: GPSLatitudeRef = "N", then a marker the test looks for.
    tiff.extend_from_slice(&[1, 0, 1, 0, 2, 0, 2, 0, 0, 0, b'N', 0, 0, 0, 0, 0, 0, 0]);
    tiff.extend_from_slice(b"GPS-LAT-48.8584-LON-2.2945");
    let mut app1 = b"Exif\0\0".to_vec();
    app1.extend(tiff);
    let mut out = jpeg[..2].to_vec();
    out.extend_from_slice(&[0xFF, 0xE1]);
    out.extend_from_slice(&((app1.len() + 2) as u16).to_be_bytes());
    out.extend(app1);
    out.extend_from_slice(&jpeg[2..]);
    out
}

pub(crate) async fn upload(
    t: &TestApp,
    token: &str,
    name: &str,
    mime: &str,
    bytes: Vec<u8>,
) -> (u16, Value) {
    let part = Part::bytes(bytes)
        .file_name(name.to_string())
        .mime_str(mime)
        .unwrap();
    let resp = t
        .http
        .post(format!("{}/api/uploads", t.url))
        .bearer_auth(token)
        .multipart(Form::new().part("file", part))
        .send()
        .await
        .expect("sent");
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

async fn fetch(t: &TestApp, path: &str) -> reqwest::Response {
    t.sync().await;
    t.http
        .get(format!("{}{}", t.next_url(), path))
        .send()
        .await
        .expect("sent")
}

#[tokio::test]
async fn all_four_formats_upload_and_serve_safely() {
    let t = TestApp::spawn().await;
    let (token, _) = t.register("alice").await;
    for (format, mime) in [
        (ImageFormat::Jpeg, "image/jpeg"),
        (ImageFormat::Png, "image/png"),
        (ImageFormat::Gif, "image/gif"),
        (ImageFormat::WebP, "image/webp"),
    ] {
        let (status, a) = upload(
            &t,
            &token,
            "pic",
            "application/octet-stream",
            picture(format, 640, 400),
        )
        .await;
        assert_eq!(status, 201, "{mime}: {a}");
        assert_eq!(a["mime"], mime);
        assert_eq!(
            (a["width"].as_u64(), a["height"].as_u64()),
            (Some(640), Some(400))
        );
        let id = a["id"].as_str().unwrap();
        assert_eq!(id.len(), 32, "ids are long and random");
        assert_eq!(a["url"], format!("/uploads/{id}"));
        assert_eq!(a["thumb_url"], format!("/uploads/{id}/thumb"));

        let resp = fetch(&t, a["url"].as_str().unwrap()).await;
        assert_eq!(resp.status(), 200);
        let h = resp.headers().clone();
        assert_eq!(h["content-type"], mime);
        assert_eq!(h["x-content-type-options"], "nosniff");
        assert!(h["cache-control"].to_str().unwrap().contains("immutable"));
        assert!(
            h["content-security-policy"]
                .to_str()
                .unwrap()
                .starts_with("default-src 'none'")
        );
        let etag = h["etag"].to_str().unwrap().to_string();
        let body = resp.bytes().await.unwrap();
        assert_eq!(body.len() as u64, a["size"].as_u64().unwrap());
        let img = image::load_from_memory(&body).expect("served bytes decode");
        assert_eq!((img.width(), img.height()), (640, 400));

        t.sync().await;
        let again = t
            .http
            .get(format!("{}{}", t.next_url(), a["url"].as_str().unwrap()))
            .header("if-none-match", &etag)
            .send()
            .await
            .unwrap();
        assert_eq!(again.status(), 304);

        let thumb = fetch(&t, a["thumb_url"].as_str().unwrap()).await;
        assert_eq!(thumb.status(), 200);
        assert_eq!(thumb.headers()["x-content-type-options"], "nosniff");
        let img = image::load_from_memory(&thumb.bytes().await.unwrap()).unwrap();
        assert_eq!((img.width(), img.height()), (320, 200));
    }
    assert_eq!(
        fetch(&t, "/uploads/0123456789abcdef0123456789abcdef")
            .await
            .status(),
        404
    );
    assert_eq!(
        fetch(&t, "/uploads/..%2F..%2Fconfab.redb").await.status(),
        404
    );
    assert_eq!(fetch(&t, "/uploads/../confab.redb").await.status(), 404);
}

#[tokio::test]
async fn the_type_comes_from_the_bytes_not_the_name() {
    let t = TestApp::spawn().await;
    let (token, _) = t.register("alice").await;
    let (status, a) = upload(
        &t,
        &token,
        "photo.jpg",
        "image/jpeg",
        picture(ImageFormat::Png, 20, 20),
    )
    .await;
    assert_eq!(status, 201, "{a}");
    assert_eq!(a["mime"], "image/png");
    let (status, a) = upload(
        &t,
        &token,
        "icon.png",
        "image/png",
        picture(ImageFormat::Jpeg, 20, 20),
    )
    .await;
    assert_eq!(status, 201, "{a}");
    assert_eq!(a["mime"], "image/jpeg");

    let (status, e) = upload(
        &t,
        &token,
        "notes.png",
        "image/png",
        b"just some text, honest".to_vec(),
    )
    .await;
    assert_eq!(status, 415, "{e}");
    assert_eq!(e["error"]["code"], "unsupported_media_type");

    let png = picture(ImageFormat::Png, 200, 200);
    let (status, e) = upload(
        &t,
        &token,
        "cut.png",
        "image/png",
        png[..png.len() / 2].to_vec(),
    )
    .await;
    assert_eq!(status, 415, "{e}");
}

#[tokio::test]
async fn a_decompression_bomb_is_refused_from_its_header() {
    let t = TestApp::spawn().await;
    let (token, _) = t.register("alice").await;
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&100_000u32.to_be_bytes());
    ihdr.extend_from_slice(&100_000u32.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
    let mut bomb = b"\x89PNG\r\n\x1a\n".to_vec();
    bomb.extend(png_chunk(b"IHDR", &ihdr));
    bomb.extend(png_chunk(
        b"IDAT",
        &[0x78, 0x9c, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01],
    ));
    bomb.extend(png_chunk(b"IEND", &[]));
    assert!(bomb.len() < 100);
    let (status, e) = upload(&t, &token, "bomb.png", "image/png", bomb).await;
    assert_eq!(status, 413, "{e}");
    assert_eq!(e["error"]["code"], "too_large");
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("100000x100000")
    );
}

#[tokio::test]
async fn the_size_limit_is_exact() {
    let limit = 64 * 1024;
    let t = TestApp::spawn_with(|c| c.uploads.max_bytes = limit).await;
    let (token, _) = t.register("alice").await;
    let (status, a) = upload(&t, &token, "a.png", "image/png", png_of_size(limit)).await;
    assert_eq!(status, 201, "{a}");
    let (status, e) = upload(&t, &token, "b.png", "image/png", png_of_size(limit + 1)).await;
    assert_eq!(status, 413, "{e}");
    assert_eq!(e["error"]["code"], "too_large");
    // Far over the limit: refused from Content-Length, before reading.
    let (status, _) = upload(&t, &token, "c.png", "image/png", png_of_size(4 * limit)).await;
    assert_eq!(status, 413);
}

#[tokio::test]
async fn location_metadata_never_reaches_other_users() {
    let t = TestApp::spawn().await;
    let (token, _) = t.register("alice").await;
    let original = jpeg_with_gps();
    assert!(original.windows(4).any(|w| w == b"Exif"));
    let (status, a) = upload(&t, &token, "holiday.jpg", "image/jpeg", original).await;
    assert_eq!(status, 201, "{a}");
    for path in [a["url"].as_str().unwrap(), a["thumb_url"].as_str().unwrap()] {
        let body = fetch(&t, path).await.bytes().await.unwrap();
        assert!(!body.windows(4).any(|w| w == b"Exif"), "{path} kept EXIF");
        assert!(!body.windows(7).any(|w| w == b"GPS-LAT"), "{path} kept GPS");
        image::load_from_memory(&body).expect("still an image");
    }
}

#[tokio::test]
async fn the_same_image_twice_is_stored_once() {
    let t = TestApp::spawn().await;
    let (token, _) = t.register("alice").await;
    let bytes = picture(ImageFormat::Png, 400, 300);
    let (_, a) = upload(&t, &token, "one.png", "image/png", bytes.clone()).await;
    let (_, b) = upload(&t, &token, "two.png", "image/png", bytes).await;
    assert_ne!(a["id"], b["id"]);
    let root = t.dir.path().join("uploads");
    let mut files = 0;
    for dir in std::fs::read_dir(&root).unwrap().flatten() {
        if dir.file_name() != "tmp" {
            files += std::fs::read_dir(dir.path()).unwrap().count();
        }
    }
    assert_eq!(files, 2, "one image and one thumbnail");
}

#[tokio::test]
async fn attachments_arrive_in_live_messages() {
    let t = TestApp::spawn().await;
    let (alice, _) = t.register("alice").await;
    let (bob, _) = t.register("bob").await;
    let room = t.create_room(&alice, "pics", "public").await;
    let room = room["id"].as_str().unwrap();
    let mut b = t.ws(&bob).await;
    b.ok("join_room", json!({ "room": room })).await;
    let mut a = t.ws(&alice).await;
    let (_, att) = upload(
        &t,
        &alice,
        "cat.png",
        "image/png",
        picture(ImageFormat::Png, 50, 50),
    )
    .await;
    let sent = a
        .ok(
            "send_message",
            json!({"room": room, "text": "", "attachments": [att["id"]]}),
        )
        .await;
    assert_eq!(sent["message"]["attachments"], json!([att]));
    let got = b.next_of("message").await;
    assert_eq!(got["data"]["message"]["attachments"], json!([att]));
    assert_eq!(got["data"]["message"]["text"], "");

    // Unknown ids, and other people's uploads, are refused.
    let answer = a
        .request(
            "send_message",
            json!({"room": room, "text": "x", "attachments": ["ffffffffffffffffffffffffffffffff"]}),
        )
        .await;
    assert_eq!(answer["data"]["code"], "bad_request");
    let answer = b
        .request(
            "send_message",
            json!({"room": room, "text": "mine!", "attachments": [att["id"]]}),
        )
        .await;
    assert_eq!(answer["data"]["code"], "bad_request");
    // Over HTTP too.
    let (status, body) = t
        .post(
            &format!("/api/rooms/{room}/messages"),
            &alice,
            json!({"text": "again", "attachments": [att["id"]]}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["message"]["attachments"][0]["id"], att["id"]);
    // A deleted message drops its attachments.
    let mid = sent["message"]["id"].as_str().unwrap();
    a.ok("delete_message", json!({ "message_id": mid })).await;
    let page = a.ok("history", json!({ "room": room })).await;
    assert_eq!(page["messages"][0]["attachments"], json!([]));
}

#[tokio::test]
async fn bad_requests_are_refused_clearly() {
    let t = TestApp::spawn().await;
    let (token, _) = t.register("alice").await;
    // No token.
    let part = Part::bytes(picture(ImageFormat::Png, 4, 4)).file_name("a.png");
    let resp = t
        .http
        .post(format!("{}/api/uploads", t.url))
        .multipart(Form::new().part("file", part))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    // The wrong field name.
    let part = Part::bytes(picture(ImageFormat::Png, 4, 4)).file_name("a.png");
    let resp = t
        .http
        .post(format!("{}/api/uploads", t.url))
        .bearer_auth(&token)
        .multipart(Form::new().part("image", part))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let body: Value = resp.json().await.unwrap();
    assert!(body["error"]["message"].as_str().unwrap().contains("file"));
    // Not multipart at all.
    let (status, body) = t
        .post("/api/uploads", &token, json!({"file": "data"}))
        .await;
    assert_eq!(status, 415, "{body}");
    assert_eq!(body["error"]["code"], "unsupported_media_type");
}

#[tokio::test]
async fn uploads_have_a_rate_and_a_quota() {
    let t = TestApp::spawn_with(|c| c.uploads.per_minute = 2).await;
    let (token, _) = t.register("alice").await;
    for i in 0..2 {
        let (status, _) = upload(
            &t,
            &token,
            "a.png",
            "image/png",
            picture(ImageFormat::Png, 8 + i, 8),
        )
        .await;
        assert_eq!(status, 201);
    }
    let (status, e) = upload(
        &t,
        &token,
        "a.png",
        "image/png",
        picture(ImageFormat::Png, 12, 8),
    )
    .await;
    assert_eq!(status, 429, "{e}");
    assert_eq!(e["error"]["code"], "rate_limited");

    let t = TestApp::spawn_with(|c| c.uploads.quota_bytes_per_user = 100).await;
    let (token, _) = t.register("alice").await;
    let (status, _) = upload(
        &t,
        &token,
        "a.png",
        "image/png",
        picture(ImageFormat::Png, 30, 30),
    )
    .await;
    assert_eq!(status, 201);
    let (status, e) = upload(
        &t,
        &token,
        "b.png",
        "image/png",
        picture(ImageFormat::Png, 30, 30),
    )
    .await;
    assert_eq!(status, 403, "{e}");
}

#[tokio::test]
async fn unused_uploads_are_collected_and_used_ones_kept() {
    let t = TestApp::spawn().await;
    let (alice, _) = t.register("alice").await;
    let room = t.create_room(&alice, "r", "public").await;
    let (_, used) = upload(
        &t,
        &alice,
        "a.png",
        "image/png",
        picture(ImageFormat::Png, 30, 30),
    )
    .await;
    let (_, unused) = upload(
        &t,
        &alice,
        "b.png",
        "image/png",
        picture(ImageFormat::Png, 31, 30),
    )
    .await;
    let (status, _) = t
        .post(
            &format!("/api/rooms/{}/messages", room["id"].as_str().unwrap()),
            &alice,
            json!({"text": "look", "attachments": [used["id"]]}),
        )
        .await;
    assert_eq!(status, 201);
    // With the default grace period nothing is old enough.
    t.sync().await;
    let (removed, _) = t.app().gc_uploads(3600).await.unwrap();
    assert!(removed.is_empty());
    let (removed, _) = t.app().gc_uploads(0).await.unwrap();
    let ids: Vec<&str> = removed.iter().map(|u| u.id.as_str()).collect();
    assert_eq!(ids, vec![unused["id"].as_str().unwrap()]);
    assert_eq!(
        fetch(&t, unused["url"].as_str().unwrap()).await.status(),
        404
    );
    assert_eq!(fetch(&t, used["url"].as_str().unwrap()).await.status(), 200);
    t.sync().await;
    let listed = t.app().uploads(Some("alice")).unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].refs, 1);
}

/// A 16-bit RGBA PNG of `side`×`side` black pixels: gigabytes-class
/// bitmaps in a few hundred KB. The deflate stream is one flushed block of
/// a few rows repeated: each flush ends on a byte boundary and refers only
/// to its own data, so the copies chain into one valid stream.
fn deep_png_bomb(side: u32, rows_per_block: u32) -> Vec<u8> {
    use flate2::{Compress, Compression, FlushCompress};
    assert_eq!(side % rows_per_block, 0);
    let row = 1 + side as usize * 8;
    let zeros = vec![0u8; row * rows_per_block as usize];
    let mut block = Vec::with_capacity(64 * 1024);
    Compress::new(Compression::best(), false)
        .compress_vec(&zeros, &mut block, FlushCompress::Full)
        .unwrap();
    let mut zlib = vec![0x78, 0x01];
    for _ in 0..side / rows_per_block {
        zlib.extend_from_slice(&block);
    }
    // The final, empty stored block, then Adler-32 of all-zero data.
    zlib.extend_from_slice(&[0x01, 0x00, 0x00, 0xFF, 0xFF]);
    let total = row as u64 * u64::from(side);
    zlib.extend_from_slice(&((((total % 65521) as u32) << 16) | 1).to_be_bytes());
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&side.to_be_bytes());
    ihdr.extend_from_slice(&side.to_be_bytes());
    ihdr.extend_from_slice(&[16, 6, 0, 0, 0]);
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    png.extend(png_chunk(b"IHDR", &ihdr));
    png.extend(png_chunk(b"IDAT", &zlib));
    png.extend(png_chunk(b"IEND", &[]));
    png
}

#[tokio::test]
async fn a_deep_bitmap_is_refused_by_the_memory_it_needs() {
    let t = TestApp::spawn().await;
    let (token, _) = t.register("alice").await;
    // Within the pixel limit, but 320 MB decoded at 8 bytes a pixel.
    let side = 6324;
    let bomb = deep_png_bomb(side, 12);
    assert!(bomb.len() < 1024 * 1024, "{} bytes", bomb.len());
    assert!(u64::from(side).pow(2) <= t.app().config.uploads.max_pixels);
    let (status, e) = upload(&t, &token, "deep.png", "image/png", bomb).await;
    assert_eq!(status, 413, "{e}");
    assert_eq!(e["error"]["code"], "too_large");
    let message = e["error"]["message"].as_str().unwrap();
    assert!(message.contains("6324x6324"), "{message}");
    assert!(message.contains("MiB"), "{message}");
    // The same kind of file at a sane size is fine, and so is the server.
    let (status, a) = upload(&t, &token, "small.png", "image/png", deep_png_bomb(600, 12)).await;
    assert_eq!(status, 201, "{a}");
    assert_eq!(
        (a["width"].as_u64(), a["height"].as_u64()),
        (Some(600), Some(600))
    );
    let stored = fetch(&t, a["url"].as_str().unwrap())
        .await
        .bytes()
        .await
        .unwrap();
    let img = image::load_from_memory(&stored).unwrap();
    assert_eq!(img.color(), image::ColorType::Rgba8, "stored at 8 bits");
    let (status, _) = t.get("/api/rooms", &token).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn an_animation_that_decodes_to_too_much_is_refused() {
    let t = TestApp::spawn().await;
    let (token, _) = t.register("alice").await;
    // 2000x2000 frames (16 MB each decoded) of next to no data.
    let frames = 20;
    let mut gif = b"GIF89a".to_vec();
    gif.extend_from_slice(&2000u16.to_le_bytes());
    gif.extend_from_slice(&2000u16.to_le_bytes());
    gif.extend_from_slice(&[0x80, 0, 0, 0, 0, 0, 255, 255, 255]);
    for _ in 0..frames {
        gif.push(0x2C);
        gif.extend_from_slice(&[0, 0, 0, 0]);
        gif.extend_from_slice(&2000u16.to_le_bytes());
        gif.extend_from_slice(&2000u16.to_le_bytes());
        // No local table; LZW code size 2; one sub-block: clear, end.
        gif.extend_from_slice(&[0, 2, 1, 0x2C, 0]);
    }
    gif.push(0x3B);
    assert!(gif.len() < 1024);
    let (status, e) = upload(&t, &token, "anim.gif", "image/gif", gif).await;
    assert_eq!(status, 413, "{e}");
    let message = e["error"]["message"].as_str().unwrap();
    assert!(message.contains("20 frames"), "{message}");
    let (status, a) = upload(
        &t,
        &token,
        "still.gif",
        "image/gif",
        picture(ImageFormat::Gif, 40, 30),
    )
    .await;
    assert_eq!(status, 201, "{a}");
}

fn riff_chunk(fourcc: &[u8; 4], payload: &[u8]) -> Vec<u8> {
    let mut out = fourcc.to_vec();
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(payload);
    if payload.len() % 2 == 1 {
        out.push(0);
    }
    out
}

#[tokio::test]
async fn webp_keeps_only_its_image_chunks() {
    let t = TestApp::spawn().await;
    let (token, _) = t.register("alice").await;
    let simple = picture(ImageFormat::WebP, 64, 48);
    // An extended file: VP8X announcing an ICC profile, the
    // ICCP chunk, the image, and a chunk of no known kind.
    let mut vp8x = vec![0x20, 0, 0, 0];
    vp8x.extend_from_slice(&63u32.to_le_bytes()[..3]);
    vp8x.extend_from_slice(&47u32.to_le_bytes()[..3]);
    let mut body = b"WEBP".to_vec();
    body.extend(riff_chunk(b"VP8X", &vp8x));
    body.extend(riff_chunk(b"ICCP", b"ICC-PROFILE-FINGERPRINT"));
    body.extend_from_slice(&simple[12..]);
    body.extend(riff_chunk(
        b"ZZZZ",
        b"<script>alert(1)</script> GPS 48.8584 N 2.2945 E",
    ));
    let mut file = b"RIFF".to_vec();
    file.extend_from_slice(&(body.len() as u32).to_le_bytes());
    file.extend(body);
    image::load_from_memory(&file).expect("the test file is valid");

    let (status, a) = upload(&t, &token, "x.webp", "image/webp", file).await;
    assert_eq!(status, 201, "{a}");
    let stored = fetch(&t, a["url"].as_str().unwrap())
        .await
        .bytes()
        .await
        .unwrap();
    for gone in [&b"<script>"[..], b"GPS", b"ZZZZ", b"ICCP", b"ICC-PROFILE"] {
        assert!(
            !stored.windows(gone.len()).any(|w| w == gone),
            "{} survived",
            String::from_utf8_lossy(gone)
        );
    }
    assert_eq!(&stored[12..16], b"VP8X");
    assert_eq!(
        stored[20] & (0x20 | 0x08 | 0x04),
        0,
        "flags name gone chunks"
    );
    let riff = u32::from_le_bytes(stored[4..8].try_into().unwrap()) as usize;
    assert_eq!(riff, stored.len() - 8);
    let img = image::load_from_memory(&stored).expect("still decodes");
    assert_eq!((img.width(), img.height()), (64, 48));
}

/// Identical uploads racing the collector: whenever an upload is answered,
/// its files are on disk for as long as its record exists.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn collection_never_removes_a_file_an_upload_was_told_is_stored() {
    let t = TestApp::spawn_with(|c| c.uploads.per_minute = 1_000_000).await;
    let (token, _) = t.register("alice").await;
    let app = t.app().clone();
    let alice = app.authenticate(&token).unwrap();
    let bytes = picture(ImageFormat::Png, 24, 24);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let collector = {
        let (app, stop) = (app.clone(), stop.clone());
        tokio::spawn(async move {
            let mut rounds = 0u32;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                app.gc_uploads(0).await.unwrap();
                rounds += 1;
            }
            rounds
        })
    };
    // An upload that is attached to a message at once keeps its record
    // for good: from then on its files must be on disk, whatever the
    // collector removed around it.
    let room = t.create_room(&token, "pics", "public").await;
    let room = confab::domain::Id::parse("room", room["id"].as_str().unwrap()).unwrap();
    let (mut attached, mut collected) = (0, 0);
    for _ in 0..150 {
        let uploads: Vec<_> = (0..4)
            .map(|_| {
                let (app, alice, bytes) = (app.clone(), alice.clone(), bytes.clone());
                tokio::spawn(async move { app.upload(&alice, bytes).await.unwrap() })
            })
            .collect();
        for u in uploads {
            let rec = u.await.unwrap();
            let sent = app
                .send_message(
                    &alice,
                    confab::app::SendInput {
                        target: confab::app::Target::Room(room),
                        text: String::new(),
                        attachments: vec![rec.id.clone()],
                        client_msg_id: None,
                        reply_to: None,
                        also_in_room: false,
                        previews: true,
                    },
                )
                .await;
            if sent.is_err() {
                // Collected before it could be attached.
                collected += 1;
                continue;
            }
            attached += 1;
            for hash in [&rec.file, &rec.thumb] {
                assert!(
                    app.files.path(hash).unwrap().is_file(),
                    "upload {} is attached but its file {hash} is gone",
                    rec.id
                );
            }
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    assert!(collector.await.unwrap() > 0);
    assert!(attached > 0, "no upload outlived the collector");
    assert_eq!(attached + collected, 600);
}
