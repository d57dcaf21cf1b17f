//! Image uploads: judging, cleaning and thumbnailing the bytes, and keeping
//! the files. Knows nothing of HTTP; runs on blocking threads.
//!
//! The type is judged from the bytes alone. Dimensions are read from the
//! header before anything is decoded, so a small file that claims a huge
//! bitmap is refused before it costs memory. What other users receive never
//! carries the uploader's metadata:
//! - JPEG and PNG are decoded and re-encoded (EXIF orientation applied
//!   first), so nothing but pixels survives.
//! - WebP keeps its image data (animation and quality intact) with its EXIF
//!   and XMP chunks removed.
//! - GIF has no EXIF block; comment and application extensions (where XMP
//!   lives) are removed, the animation loop extension excepted.

use std::io::{Cursor, Write};
use std::path::{Path, PathBuf};

use image::{DynamicImage, ImageDecoder, ImageFormat, ImageReader, Limits};
use sha2::{Digest, Sha256};

use crate::config::UploadsConfig;

#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    #[error("file: not a JPEG, PNG, GIF or WebP image")]
    Unsupported,
    #[error("file: the image could not be decoded ({0})")]
    Corrupt(String),
    #[error(
        "file: {width}x{height} is larger than the allowed {max_w}x{max_h} and {max_pixels} pixels"
    )]
    TooLarge {
        width: u32,
        height: u32,
        max_w: u32,
        max_h: u32,
        max_pixels: u64,
    },
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
}

/// A checked image, ready to store.
#[derive(Debug)]
pub struct Processed {
    pub mime: &'static str,
    pub width: u32,
    pub height: u32,
    pub bytes: Vec<u8>,
    pub thumb: Vec<u8>,
    pub thumb_mime: &'static str,
}

pub fn mime_of(format: ImageFormat) -> Option<&'static str> {
    match format {
        ImageFormat::Jpeg => Some("image/jpeg"),
        ImageFormat::Png => Some("image/png"),
        ImageFormat::Gif => Some("image/gif"),
        ImageFormat::WebP => Some("image/webp"),
        _ => None,
    }
}

/// Judges, cleans and thumbnails an upload. CPU-heavy: call it from a
/// blocking thread.
pub fn process(data: &[u8], cfg: &UploadsConfig) -> Result<Processed, UploadError> {
    let format = image::guess_format(data).map_err(|_| UploadError::Unsupported)?;
    let mime = mime_of(format).ok_or(UploadError::Unsupported)?;
    let mut reader = ImageReader::with_format(Cursor::new(data), format);
    // Width and height are checked below, from the header, so the answer
    // can say what was refused; the allocation cap backs that up.
    let mut limits = Limits::default();
    // Room for the decoded bitmap (up to 4 bytes a pixel, 16-bit
    // channels at most double that) and the decoder's own buffers.
    limits.max_alloc = Some(cfg.max_pixels.saturating_mul(8).saturating_add(64 << 20));
    reader.limits(limits);
    let mut decoder = reader.into_decoder().map_err(classify)?;
    let (width, height) = decoder.dimensions();
    let too_large = || UploadError::TooLarge {
        width,
        height,
        max_w: cfg.max_width,
        max_h: cfg.max_height,
        max_pixels: cfg.max_pixels,
    };
    if width == 0 || height == 0 {
        return Err(UploadError::Corrupt("empty image".into()));
    }
    if width > cfg.max_width
        || height > cfg.max_height
        || u64::from(width) * u64::from(height) > cfg.max_pixels
    {
        return Err(too_large());
    }
    let orientation = decoder
        .orientation()
        .unwrap_or(image::metadata::Orientation::NoTransforms);
    let mut img = DynamicImage::from_decoder(decoder).map_err(classify)?;
    let (bytes, width, height) = match format {
        ImageFormat::Jpeg => {
            img.apply_orientation(orientation);
            (encode(&img, ImageFormat::Jpeg)?, img.width(), img.height())
        }
        ImageFormat::Png => (encode(&img, ImageFormat::Png)?, width, height),
        ImageFormat::WebP => (strip_webp(data)?, width, height),
        _ => (strip_gif(data)?, width, height),
    };
    let thumb_img = if img.width() > cfg.thumb_size || img.height() > cfg.thumb_size {
        img.thumbnail(cfg.thumb_size, cfg.thumb_size)
    } else {
        img
    };
    let (thumb, thumb_mime) = if format == ImageFormat::Jpeg {
        (encode(&thumb_img, ImageFormat::Jpeg)?, "image/jpeg")
    } else {
        (encode(&thumb_img, ImageFormat::Png)?, "image/png")
    };
    Ok(Processed {
        mime,
        width,
        height,
        bytes,
        thumb,
        thumb_mime,
    })
}

fn classify(e: image::ImageError) -> UploadError {
    match e {
        image::ImageError::Limits(_) => UploadError::Corrupt("over the size limits".into()),
        image::ImageError::Unsupported(_) => UploadError::Unsupported,
        e => UploadError::Corrupt(e.to_string()),
    }
}

fn encode(img: &DynamicImage, format: ImageFormat) -> Result<Vec<u8>, UploadError> {
    let mut out = Cursor::new(Vec::new());
    match format {
        ImageFormat::Jpeg => {
            // JPEG has no alpha: flatten to RGB first.
            let rgb = DynamicImage::ImageRgb8(img.to_rgb8());
            let enc = image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 90);
            rgb.write_with_encoder(enc)
        }
        _ => img.write_to(&mut out, format),
    }
    .map_err(|e| UploadError::Corrupt(e.to_string()))?;
    Ok(out.into_inner())
}

/// Copies a WebP file without its EXIF and XMP chunks, clearing their
/// flags in the VP8X header.
pub fn strip_webp(data: &[u8]) -> Result<Vec<u8>, UploadError> {
    let bad = || UploadError::Corrupt("malformed WebP container".into());
    if data.len() < 12 || &data[0..4] != b"RIFF" || &data[8..12] != b"WEBP" {
        return Err(bad());
    }
    let mut out = Vec::with_capacity(data.len());
    out.extend_from_slice(b"RIFF\0\0\0\0WEBP");
    let mut pos = 12;
    while pos + 8 <= data.len() {
        let fourcc = &data[pos..pos + 4];
        let size = u32::from_le_bytes([data[pos + 4], data[pos + 5], data[pos + 6], data[pos + 7]])
            as usize;
        let end = pos
            .checked_add(8)
            .and_then(|p| p.checked_add(size))
            .ok_or_else(bad)?;
        if end > data.len() {
            return Err(bad());
        }
        let padded = (end + (size & 1)).min(data.len());
        if fourcc != b"EXIF" && fourcc != b"XMP " {
            let start = out.len();
            out.extend_from_slice(&data[pos..padded]);
            if fourcc == b"VP8X" && size >= 1 {
                // Bit 3: EXIF present; bit 2: XMP present.
                out[start + 8] &= !0b0000_1100;
            }
        }
        pos = padded;
    }
    let riff_size = u32::try_from(out.len() - 8).map_err(|_| bad())?;
    out[4..8].copy_from_slice(&riff_size.to_le_bytes());
    Ok(out)
}

/// Copies a GIF without comment and application extensions, keeping the
/// NETSCAPE loop extension that animations need.
pub fn strip_gif(data: &[u8]) -> Result<Vec<u8>, UploadError> {
    let bad = || UploadError::Corrupt("malformed GIF".into());
    let get = |i: usize| data.get(i).copied().ok_or_else(bad);
    if data.len() < 13 || !(data.starts_with(b"GIF87a") || data.starts_with(b"GIF89a")) {
        return Err(bad());
    }
    let mut pos = 13;
    let flags = get(10)?;
    if flags & 0x80 != 0 {
        pos += 3 * (1usize << ((flags & 0x07) + 1));
    }
    if pos > data.len() {
        return Err(bad());
    }
    let mut out = data[..pos].to_vec();
    // Skips data sub-blocks from `p`; returns the index after the terminator.
    let sub_blocks = |mut p: usize| -> Result<usize, UploadError> {
        loop {
            let n = get(p)? as usize;
            p += 1;
            if n == 0 {
                return Ok(p);
            }
            p += n;
        }
    };
    loop {
        match get(pos)? {
            0x3B => {
                out.push(0x3B);
                return Ok(out);
            }
            0x21 => {
                let label = get(pos + 1)?;
                let end = sub_blocks(pos + 2)?;
                let keep = match label {
                    0xFE => false,
                    0xFF => {
                        let n = get(pos + 2)? as usize;
                        let id = data.get(pos + 3..pos + 3 + n.min(11)).ok_or_else(bad)?;
                        id.starts_with(b"NETSCAPE2.0") || id.starts_with(b"ANIMEXTS1.0")
                    }
                    _ => true,
                };
                if keep {
                    out.extend_from_slice(data.get(pos..end).ok_or_else(bad)?);
                }
                pos = end;
            }
            0x2C => {
                let mut p = pos + 10;
                let f = get(pos + 9)?;
                if f & 0x80 != 0 {
                    p += 3 * (1usize << ((f & 0x07) + 1));
                }
                // LZW minimum code size, then the image data sub-blocks.
                let end = sub_blocks(p + 1)?;
                out.extend_from_slice(data.get(pos..end).ok_or_else(bad)?);
                pos = end;
            }
            _ => return Err(bad()),
        }
    }
}

/// Files on disk, named by the SHA-256 of their content, so the same image
/// uploaded twice is stored once. No path component ever comes from a
/// client: names are hex digests made here.
#[derive(Clone)]
pub struct FileStore {
    root: PathBuf,
}

impl FileStore {
    pub fn new(data_dir: &Path) -> FileStore {
        FileStore {
            root: data_dir.join("uploads"),
        }
    }

    /// A file store rooted at `root` itself (a backup's copy of the files).
    pub fn new_at(root: &Path) -> FileStore {
        FileStore {
            root: root.to_path_buf(),
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn hash(bytes: &[u8]) -> String {
        let digest = Sha256::digest(bytes);
        digest.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// The path of a stored file. `hash` must be one of ours: 64 hex digits.
    pub fn path(&self, hash: &str) -> Option<PathBuf> {
        let valid = hash.len() == 64 && hash.bytes().all(|b| b.is_ascii_hexdigit());
        valid.then(|| self.root.join(&hash[..2]).join(hash))
    }

    /// Writes `bytes` under their hash: to a temporary file, fsynced, then
    /// renamed, so a crash never leaves a partial file under a real name.
    pub fn put(&self, bytes: &[u8]) -> Result<String, UploadError> {
        let hash = Self::hash(bytes);
        let path = self
            .path(&hash)
            .ok_or_else(|| UploadError::Io(std::io::Error::other("bad hash")))?;
        if path.exists() {
            return Ok(hash);
        }
        let dir = path.parent().unwrap_or(&self.root).to_path_buf();
        std::fs::create_dir_all(&dir)?;
        let tmp_dir = self.root.join("tmp");
        std::fs::create_dir_all(&tmp_dir)?;
        let mut tmp = tempfile::NamedTempFile::new_in(&tmp_dir)?;
        tmp.write_all(bytes)?;
        tmp.as_file().sync_all()?;
        tmp.persist(&path).map_err(|e| UploadError::Io(e.error))?;
        std::fs::File::open(&dir)?.sync_all()?;
        Ok(hash)
    }

    pub fn remove(&self, hash: &str) {
        if let Some(path) = self.path(hash) {
            let _ = std::fs::remove_file(path);
        }
    }

    /// Every stored hash, for sweeping files no record names.
    pub fn list(&self) -> Vec<String> {
        let mut out = Vec::new();
        let Ok(dirs) = std::fs::read_dir(&self.root) else {
            return out;
        };
        for dir in dirs.flatten() {
            let name = dir.file_name().to_string_lossy().to_string();
            if name.len() != 2 {
                continue;
            }
            if let Ok(files) = std::fs::read_dir(dir.path()) {
                for f in files.flatten() {
                    let h = f.file_name().to_string_lossy().to_string();
                    if self.path(&h).is_some() {
                        out.push(h);
                    }
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> UploadsConfig {
        UploadsConfig::default()
    }

    fn png(w: u32, h: u32) -> Vec<u8> {
        let img = DynamicImage::ImageRgba8(image::RgbaImage::from_pixel(
            w,
            h,
            image::Rgba([10, 20, 30, 255]),
        ));
        encode(&img, ImageFormat::Png).unwrap()
    }

    #[test]
    fn judges_by_bytes() {
        assert!(matches!(
            process(b"hello, world", &cfg()),
            Err(UploadError::Unsupported)
        ));
        let p = process(&png(400, 200), &cfg()).unwrap();
        assert_eq!((p.mime, p.width, p.height), ("image/png", 400, 200));
        let thumb = image::load_from_memory(&p.thumb).unwrap();
        assert_eq!((thumb.width(), thumb.height()), (320, 160));
    }

    #[test]
    fn truncated_files_are_corrupt() {
        let data = png(64, 64);
        let cut = &data[..data.len() / 2];
        assert!(matches!(process(cut, &cfg()), Err(UploadError::Corrupt(_))));
    }

    #[test]
    fn webp_loses_exif_and_xmp() {
        let img = DynamicImage::ImageRgba8(image::RgbaImage::new(8, 8));
        let webp = encode(&img, ImageFormat::WebP).unwrap();
        // Wrap into an extended file with EXIF and XMP chunks.
        let body = &webp[12..];
        let mut file = b"RIFF\0\0\0\0WEBP".to_vec();
        file.extend_from_slice(b"VP8X");
        file.extend_from_slice(&10u32.to_le_bytes());
        file.extend_from_slice(&[0b0000_1100, 0, 0, 0, 7, 0, 0, 7, 0, 0]);
        file.extend_from_slice(body);
        for (cc, payload) in [
            (b"EXIF", &b"GPS-SECRET"[..]),
            (b"XMP ", &b"<x>SECRET</x>"[..]),
        ] {
            file.extend_from_slice(cc);
            file.extend_from_slice(&(payload.len() as u32).to_le_bytes());
            file.extend_from_slice(payload);
            if payload.len() % 2 == 1 {
                file.push(0);
            }
        }
        let size = (file.len() - 8) as u32;
        file[4..8].copy_from_slice(&size.to_le_bytes());
        let clean = strip_webp(&file).unwrap();
        assert!(!clean.windows(6).any(|w| w == b"SECRET"));
        assert_eq!(clean[20] & 0b1100, 0);
        assert!(image::load_from_memory(&clean).is_ok());
    }

    #[test]
    fn gif_loses_comments() {
        let img = DynamicImage::ImageRgba8(image::RgbaImage::new(4, 4));
        let gif = encode(&img, ImageFormat::Gif).unwrap();
        // Insert a comment extension right before the trailer.
        let mut with_comment = gif[..gif.len() - 1].to_vec();
        with_comment.extend_from_slice(&[0x21, 0xFE, 6]);
        with_comment.extend_from_slice(b"SECRET");
        with_comment.extend_from_slice(&[0, 0x3B]);
        let clean = strip_gif(&with_comment).unwrap();
        assert!(!clean.windows(6).any(|w| w == b"SECRET"));
        assert!(image::load_from_memory(&clean).is_ok());
    }

    #[test]
    fn file_names_are_only_hashes() {
        let fs = FileStore::new(Path::new("/data"));
        assert!(fs.path("../../etc/passwd").is_none());
        assert!(fs.path(&"a".repeat(64)).is_some());
        assert!(fs.path(&"g".repeat(64)).is_none());
    }
}
