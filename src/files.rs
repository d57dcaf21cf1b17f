//! Attachments that are not re-encoded images: their names, types and
//! kinds, and the headers they are served with. Knows nothing of HTTP
//! requests or the store.
//!
//! The type of a file is taken from its name's extension through a fixed
//! table, never from what the client declared nor from sniffing: it only
//! chooses how the web client offers the file (a player for audio and
//! video, a download tile otherwise). Every such file is served as a
//! download (`Content-Disposition: attachment`), `nosniff`, inside the
//! sandbox CSP, so no type can make a browser run it as a page.

/// Extensions and the type a file with them is served as. Types that a
/// browser would render as a document (HTML, SVG, XML) are absent on
/// purpose: such files are `application/octet-stream`.
const TYPES: &[(&str, &str)] = &[
    ("aac", "audio/aac"),
    ("flac", "audio/flac"),
    ("m4a", "audio/mp4"),
    ("mp3", "audio/mpeg"),
    ("oga", "audio/ogg"),
    ("ogg", "audio/ogg"),
    ("opus", "audio/ogg"),
    ("wav", "audio/wav"),
    ("weba", "audio/webm"),
    ("m4v", "video/mp4"),
    ("mov", "video/quicktime"),
    ("mp4", "video/mp4"),
    ("ogv", "video/ogg"),
    ("webm", "video/webm"),
    ("7z", "application/x-7z-compressed"),
    ("csv", "text/csv"),
    ("doc", "application/msword"),
    (
        "docx",
        "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    ),
    ("epub", "application/epub+zip"),
    ("gz", "application/gzip"),
    ("json", "application/json"),
    ("log", "text/plain"),
    ("md", "text/markdown"),
    ("odp", "application/vnd.oasis.opendocument.presentation"),
    ("ods", "application/vnd.oasis.opendocument.spreadsheet"),
    ("odt", "application/vnd.oasis.opendocument.text"),
    ("pdf", "application/pdf"),
    ("ppt", "application/vnd.ms-powerpoint"),
    (
        "pptx",
        "application/vnd.openxmlformats-officedocument.presentationml.presentation",
    ),
    ("rtf", "application/rtf"),
    ("tar", "application/x-tar"),
    ("txt", "text/plain"),
    ("xls", "application/vnd.ms-excel"),
    (
        "xlsx",
        "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    ),
    ("zip", "application/zip"),
];

/// Extensions of the image types that are re-encoded: a file named so must
/// be such an image, never a download that looks like one.
pub const IMAGE_EXTENSIONS: &[&str] = &["jpg", "jpeg", "png", "gif", "webp"];

pub const OCTET_STREAM: &str = "application/octet-stream";

/// The lower-case extension of `name`, if it has one.
pub fn extension(name: &str) -> Option<String> {
    let (stem, ext) = name.rsplit_once('.')?;
    (!stem.is_empty() && !ext.is_empty()).then(|| ext.to_ascii_lowercase())
}

/// The type a file is served as, from its name.
pub fn mime_for(name: &str) -> &'static str {
    extension(name)
        .and_then(|e| TYPES.iter().find(|(x, _)| *x == e).map(|(_, m)| *m))
        .unwrap_or(OCTET_STREAM)
}

/// `audio`, `video` or `file`, from the type.
pub fn kind_of(mime: &str) -> &'static str {
    if mime.starts_with("audio/") {
        "audio"
    } else if mime.starts_with("video/") {
        "video"
    } else {
        "file"
    }
}

/// Whether a name claims one of the re-encoded image types.
pub fn claims_image(name: &str) -> bool {
    extension(name).is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.as_str()))
}

/// Whether `uploads.allowed_types` admits a file (empty: everything).
/// Each entry is a MIME type (`application/pdf`), a family (`audio/*`) or
/// an extension (`.zip`), compared without case.
pub fn allowed(allowlist: &[String], name: &str, mime: &str) -> bool {
    if allowlist.is_empty() {
        return true;
    }
    let ext = extension(name);
    allowlist.iter().any(|entry| {
        let entry = entry.trim().to_ascii_lowercase();
        if let Some(e) = entry.strip_prefix('.') {
            ext.as_deref() == Some(e)
        } else if let Some(family) = entry.strip_suffix("/*") {
            mime.split('/').next() == Some(family)
        } else {
            entry == mime
        }
    })
}

/// Longest kept name, in characters.
const MAX_NAME_CHARS: usize = 120;

/// A file name safe to show and to put in a header: the last path
/// component only, no control or bidirectional-override characters, no
/// leading dots, at most 120 characters (the extension kept). `file` when
/// nothing is left.
pub fn sanitize_name(raw: &str) -> String {
    let last = raw.rsplit(['/', '\\']).next().unwrap_or("");
    let cleaned: String = last
        .chars()
        .filter(|c| {
            !c.is_control()
                && !matches!(
                    c,
                    '\u{200e}'
                        | '\u{200f}'
                        | '\u{202a}'..='\u{202e}'
                        | '\u{2066}'..='\u{2069}'
                        | '\u{feff}'
                )
        })
        .map(|c| match c {
            '"' | '*' | ':' | '<' | '>' | '?' | '|' => '_',
            c => c,
        })
        .collect();
    let trimmed = cleaned.trim().trim_start_matches('.').trim();
    if trimmed.is_empty() {
        return "file".into();
    }
    if trimmed.chars().count() <= MAX_NAME_CHARS {
        return trimmed.to_string();
    }
    let ext = extension(trimmed)
        .filter(|e| e.chars().count() <= 16)
        .map(|e| format!(".{e}"))
        .unwrap_or_default();
    let keep = MAX_NAME_CHARS - ext.chars().count();
    let stem: String = trimmed.chars().take(keep).collect();
    format!("{stem}{ext}")
}

/// `attachment; filename="..."; filename*=UTF-8''...` (RFC 6266): an ASCII
/// fallback for old clients, the exact name percent-encoded for the rest.
pub fn content_disposition(name: &str) -> String {
    let ascii: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() && c != '"' && c != '\\' && c != '%' || c == ' ' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let mut encoded = String::new();
    for b in name.bytes() {
        // RFC 5987 attr-char.
        if b.is_ascii_alphanumeric() || b"!#$&+-.^_`|~".contains(&b) {
            encoded.push(b as char);
        } else {
            encoded.push_str(&format!("%{b:02X}"));
        }
    }
    format!("attachment; filename=\"{ascii}\"; filename*=UTF-8''{encoded}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_sanitised() {
        assert_eq!(sanitize_name("../../etc/passwd"), "passwd");
        assert_eq!(sanitize_name("C:\\x\\report.pdf"), "report.pdf");
        assert_eq!(sanitize_name("..."), "file");
        assert_eq!(sanitize_name(".bashrc"), "bashrc");
        assert_eq!(sanitize_name("a\u{202e}fdp.exe"), "afdp.exe");
        assert_eq!(sanitize_name("a\"b\r\n.txt"), "a_b.txt");
        let long = format!("{}.pdf", "x".repeat(300));
        let s = sanitize_name(&long);
        assert_eq!(s.chars().count(), 120);
        assert!(s.ends_with(".pdf"));
    }

    #[test]
    fn types_come_from_the_extension() {
        assert_eq!(mime_for("a.PDF"), "application/pdf");
        assert_eq!(mime_for("song.mp3"), "audio/mpeg");
        assert_eq!(mime_for("page.html"), OCTET_STREAM);
        assert_eq!(mime_for("x.svg"), OCTET_STREAM);
        assert_eq!(mime_for("noext"), OCTET_STREAM);
        assert_eq!(kind_of("video/webm"), "video");
        assert_eq!(kind_of("application/pdf"), "file");
        assert!(claims_image("a.JPG"));
        assert!(!claims_image("a.pdf"));
    }

    #[test]
    fn the_allowlist_takes_types_families_and_extensions() {
        let list: Vec<String> = vec!["application/pdf".into(), "audio/*".into(), ".zip".into()];
        assert!(allowed(&[], "x.exe", OCTET_STREAM));
        assert!(allowed(&list, "a.pdf", "application/pdf"));
        assert!(allowed(&list, "a.ogg", "audio/ogg"));
        assert!(allowed(&list, "a.ZIP", "application/zip"));
        assert!(!allowed(&list, "a.exe", OCTET_STREAM));
        assert!(!allowed(&list, "a.mp4", "video/mp4"));
    }

    #[test]
    fn the_disposition_has_an_ascii_fallback_and_the_exact_name() {
        assert_eq!(
            content_disposition("résumé 1.pdf"),
            "attachment; filename=\"r_sum_ 1.pdf\"; filename*=UTF-8''r%C3%A9sum%C3%A9%201.pdf"
        );
    }
}
