//! Link previews, the pure part: finding the links of a message and
//! reading a page's title, description, site name and image from its
//! `<head>` (OpenGraph, Twitter card, `<title>`, `<meta name=description>`).
//!
//! A small scanner rather than an HTML parser: only `<meta>` and `<title>`
//! of a page's first 512 KiB matter, and a full parser (html5ever and its
//! tree, or scraper on top of it) would add several crates and build time
//! to read a handful of attributes. The scanner skips comments, scripts
//! and styles, reads attributes quoted or not, decodes the usual character
//! references and stops at `<body>`. Whatever it returns is plain text the
//! clients show as text.

/// What a page says about itself.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PageMeta {
    pub title: Option<String>,
    pub description: Option<String>,
    pub site_name: Option<String>,
    /// As written in the page: may be relative to it.
    pub image: Option<String>,
}

impl PageMeta {
    pub fn is_empty(&self) -> bool {
        self.title.is_none() && self.description.is_none() && self.image.is_none()
    }
}

/// Longest title, description and site name kept, in characters.
pub const MAX_TITLE_CHARS: usize = 300;
pub const MAX_DESCRIPTION_CHARS: usize = 1000;

/// The distinct http(s) links of `text`, in order, at most `max`. A link
/// ends at whitespace or an angle bracket; punctuation that ends a
/// sentence is not part of it, nor a closing parenthesis without an
/// opening one in the link.
pub fn links(text: &str, max: usize) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut rest = text;
    while out.len() < max {
        let lower = rest.to_ascii_lowercase();
        let start = match (lower.find("https://"), lower.find("http://")) {
            (Some(a), Some(b)) => a.min(b),
            (Some(a), None) | (None, Some(a)) => a,
            (None, None) => break,
        };
        let tail = &rest[start..];
        let end = tail
            .find(|c: char| c.is_whitespace() || matches!(c, '<' | '>' | '"' | '`'))
            .unwrap_or(tail.len());
        let mut link = &tail[..end];
        loop {
            let trimmed = link.trim_end_matches(['.', ',', ';', ':', '!', '?', '\'', '*', '_']);
            let trimmed = match trimmed.strip_suffix(')') {
                Some(t) if t.matches('(').count() < t.matches(')').count() + 1 => t,
                _ => trimmed,
            };
            let trimmed = match trimmed.strip_suffix(']') {
                Some(t) if !t.contains('[') => t,
                _ => trimmed,
            };
            if trimmed.len() == link.len() {
                break;
            }
            link = trimmed;
        }
        let scheme_len = if link.to_ascii_lowercase().starts_with("https://") {
            8
        } else {
            7
        };
        if link.len() > scheme_len && link.len() <= 2048 && !out.iter().any(|l| l == link) {
            out.push(link.to_string());
        }
        rest = &tail[end.max(1)..];
    }
    out
}

/// Reads the page's metadata from its head.
pub fn parse(html: &str) -> PageMeta {
    let mut og = PageMeta::default();
    let mut twitter = PageMeta::default();
    let mut plain = PageMeta::default();
    let bytes = html.as_bytes();
    let mut i = 0;
    while let Some(off) = html[i..].find('<') {
        i += off;
        let rest = &html[i..];
        if rest.starts_with("<!--") {
            i += rest.find("-->").map(|e| e + 3).unwrap_or(rest.len());
            continue;
        }
        let name_end = rest[1..]
            .find(|c: char| c.is_ascii_whitespace() || c == '>' || c == '/')
            .map(|e| e + 1)
            .unwrap_or(rest.len());
        let name = rest[1..name_end].to_ascii_lowercase();
        let Some(tag_end) = tag_end(bytes, i + name_end) else {
            break;
        };
        let attrs_text = &html[i + name_end..tag_end];
        i = tag_end + 1;
        match name.as_str() {
            "body" => break,
            "script" | "style" | "noscript" | "template" => {
                let close = format!("</{name}");
                match find_ci(&html[i..], &close) {
                    Some(e) => i += e,
                    None => break,
                }
            }
            "title" if plain.title.is_none() => {
                let end = find_ci(&html[i..], "</title").unwrap_or(html.len() - i);
                plain.title = clean(&html[i..i + end], MAX_TITLE_CHARS);
                i += end;
            }
            "meta" => {
                let attrs = attributes(attrs_text);
                let get = |k: &str| attrs.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
                let key = get("property")
                    .or_else(|| get("name"))
                    .unwrap_or("")
                    .to_ascii_lowercase();
                let Some(content) = get("content") else {
                    continue;
                };
                let (slot, max) = match key.as_str() {
                    "og:title" => (&mut og.title, MAX_TITLE_CHARS),
                    "og:description" => (&mut og.description, MAX_DESCRIPTION_CHARS),
                    "og:site_name" => (&mut og.site_name, MAX_TITLE_CHARS),
                    "og:image" | "og:image:url" | "og:image:secure_url" => (&mut og.image, 2048),
                    "twitter:title" => (&mut twitter.title, MAX_TITLE_CHARS),
                    "twitter:description" => (&mut twitter.description, MAX_DESCRIPTION_CHARS),
                    "twitter:image" | "twitter:image:src" => (&mut twitter.image, 2048),
                    "description" => (&mut plain.description, MAX_DESCRIPTION_CHARS),
                    _ => continue,
                };
                if slot.is_none() {
                    *slot = clean(content, max);
                }
            }
            _ => {}
        }
    }
    PageMeta {
        title: og.title.or(twitter.title).or(plain.title),
        description: og.description.or(twitter.description).or(plain.description),
        site_name: og.site_name,
        image: og.image.or(twitter.image),
    }
}

/// The `>` that ends a tag starting before `from`, quotes respected.
fn tag_end(bytes: &[u8], from: usize) -> Option<usize> {
    let mut quote = None;
    for (k, &b) in bytes.iter().enumerate().skip(from) {
        match quote {
            Some(q) if b == q => quote = None,
            Some(_) => {}
            None if b == b'"' || b == b'\'' => quote = Some(b),
            None if b == b'>' => return Some(k),
            None => {}
        }
    }
    None
}

/// Case-insensitive `find` of an ASCII needle.
fn find_ci(hay: &str, needle: &str) -> Option<usize> {
    let n = needle.len();
    hay.as_bytes()
        .windows(n)
        .position(|w| w.eq_ignore_ascii_case(needle.as_bytes()))
}

/// A tag's attributes, names lower-cased, values with references decoded.
fn attributes(s: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        while i < b.len() && (b[i].is_ascii_whitespace() || b[i] == b'/') {
            i += 1;
        }
        let start = i;
        while i < b.len() && !b[i].is_ascii_whitespace() && b[i] != b'=' && b[i] != b'/' {
            i += 1;
        }
        if start == i {
            break;
        }
        let name = s[start..i].to_ascii_lowercase();
        while i < b.len() && b[i].is_ascii_whitespace() {
            i += 1;
        }
        let mut value = String::new();
        if i < b.len() && b[i] == b'=' {
            i += 1;
            while i < b.len() && b[i].is_ascii_whitespace() {
                i += 1;
            }
            if i < b.len() && (b[i] == b'"' || b[i] == b'\'') {
                let q = b[i];
                let vs = i + 1;
                let ve = b[vs..]
                    .iter()
                    .position(|&c| c == q)
                    .map(|p| vs + p)
                    .unwrap_or(b.len());
                value = decode_entities(&s[vs..ve]);
                i = (ve + 1).min(b.len());
            } else {
                let vs = i;
                while i < b.len() && !b[i].is_ascii_whitespace() {
                    i += 1;
                }
                value = decode_entities(&s[vs..i]);
            }
        }
        out.push((name, value));
    }
    out
}

/// The character references pages use in titles: the XML five, `&nbsp;`
/// and numeric ones. Others are left as written.
pub fn decode_entities(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(p) = rest.find('&') {
        out.push_str(&rest[..p]);
        rest = &rest[p..];
        let end = rest[1..].find(';').map(|e| e + 1).filter(|e| *e <= 10);
        let decoded = end.and_then(|e| {
            let name = &rest[1..e];
            let c = match name {
                "amp" => Some('&'),
                "lt" => Some('<'),
                "gt" => Some('>'),
                "quot" => Some('"'),
                "apos" => Some('\''),
                "nbsp" => Some(' '),
                _ => {
                    let num = name.strip_prefix('#')?;
                    let code = match num.strip_prefix(['x', 'X']) {
                        Some(h) => u32::from_str_radix(h, 16).ok()?,
                        None => num.parse().ok()?,
                    };
                    char::from_u32(code)
                }
            }?;
            Some((c, e + 1))
        });
        match decoded {
            Some((c, len)) => {
                out.push(c);
                rest = &rest[len..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// Text as shown: references decoded, whitespace collapsed, control
/// characters dropped, cut to `max` characters; `None` when empty.
fn clean(raw: &str, max: usize) -> Option<String> {
    let decoded = decode_entities(raw);
    let mut out = String::new();
    for word in decoded.split_whitespace() {
        if !out.is_empty() {
            out.push(' ');
        }
        out.extend(word.chars().filter(|c| !c.is_control()));
    }
    if out.is_empty() {
        return None;
    }
    if out.chars().count() > max {
        out = out.chars().take(max - 1).collect::<String>();
        out.push('…');
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_are_found_in_order_without_trailing_punctuation() {
        let t = "see https://a.example/x. and (http://b.example/p_(q)) or https://a.example/x, \
                 <https://c.example/> https://d.example";
        assert_eq!(
            links(t, 3),
            vec![
                "https://a.example/x",
                "http://b.example/p_(q)",
                "https://c.example/"
            ]
        );
        assert_eq!(
            links("no links, ftp://x.example, https://", 3),
            Vec::<String>::new()
        );
        assert_eq!(
            links("HTTPS://Up.example/A", 3),
            vec!["HTTPS://Up.example/A"]
        );
    }

    #[test]
    fn opengraph_wins_over_twitter_and_title() {
        let html = r#"<!doctype html><html><head>
            <title>Plain &amp; simple</title>
            <!-- <meta property="og:title" content="commented out"> -->
            <script>var s = "<meta property='og:title' content='in a script'>";</script>
            <meta name="twitter:title" content="Tweet title">
            <meta content='OG &quot;title&quot;' property=og:title>
            <meta property="og:description" content="  Line one
               line two ">
            <meta property="og:site_name" content="Example">
            <meta name="twitter:image" content="/t.png">
            <meta property="og:image" content="/img/a.png?x=1&amp;y=2">
            </head><body><meta property="og:site_name" content="late"></body>"#;
        let m = parse(html);
        assert_eq!(m.title.as_deref(), Some("OG \"title\""));
        assert_eq!(m.description.as_deref(), Some("Line one line two"));
        assert_eq!(m.site_name.as_deref(), Some("Example"));
        assert_eq!(m.image.as_deref(), Some("/img/a.png?x=1&y=2"));
    }

    #[test]
    fn the_title_and_description_fall_back() {
        let m = parse(
            "<HTML><HEAD><TITLE>Only &#233;l&#xE9;ments</TITLE><META NAME=description CONTENT=short></HEAD>",
        );
        assert_eq!(m.title.as_deref(), Some("Only éléments"));
        assert_eq!(m.description.as_deref(), Some("short"));
        assert!(m.image.is_none());
        assert!(parse("<p>nothing").is_empty());
        assert!(parse("<meta property=\"og:title\" content=\"unclosed").is_empty());
    }

    #[test]
    fn long_text_is_cut() {
        let html = format!("<title>{}</title>", "x".repeat(1000));
        assert_eq!(parse(&html).title.unwrap().chars().count(), MAX_TITLE_CHARS);
    }
}
