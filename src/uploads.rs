//! Image uploads: judging, cleaning and thumbnailing the bytes, and keeping
//! the files. Knows nothing of HTTP; runs on blocking threads.
//!
//! The type is judged from the bytes alone. Before anything is decoded,
//! `plan` reads the header and the container: dimensions, bit depth and
//! channels, the frames of an animation, and from them the most memory that
//! processing will hold at once (`Plan::cost`). A small file that claims a
//! huge or deep bitmap is refused before it costs memory, and the app runs
//! decodes only while their costs fit its budget together. What other users
//! receive never carries the uploader's metadata:
//! - JPEG and PNG are decoded and re-encoded at 8 bits a channel (EXIF
//!   orientation applied first), so nothing but pixels survives.
//! - WebP keeps its image chunks only (animation and quality intact):
//!   EXIF, XMP, the ICC profile and any unknown chunk are removed.
//! - GIF has no EXIF block; comment and application extensions (where XMP
//!   lives) are removed, the animation loop extension excepted.

use std::io::{Cursor, Write};
use std::path::{Path, PathBuf};

use image::{ColorType, DynamicImage, ImageDecoder, ImageFormat, ImageReader, Limits};
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
    #[error(
        "file: processing this {width}x{height} image ({color:?}) takes {needed_mib} MiB of memory, more than the allowed {max_mib} MiB"
    )]
    TooHeavy {
        width: u32,
        height: u32,
        color: ColorType,
        needed_mib: u64,
        max_mib: u64,
    },
    #[error(
        "file: the animation's {frames} frames decode to {needed_mib} MiB, more than the allowed {max_mib} MiB"
    )]
    AnimationTooLarge {
        frames: u64,
        needed_mib: u64,
        max_mib: u64,
    },
    #[error("file: decoding the image needs more memory than allowed")]
    OverMemory,
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

/// An upload judged from its header and container, no pixel decoded yet.
#[derive(Debug, Clone)]
pub struct Plan {
    format: ImageFormat,
    mime: &'static str,
    pub width: u32,
    pub height: u32,
    /// The most memory, in bytes, that `run` holds at once (`peak_bytes`).
    pub cost: u64,
}

/// The frames of an image, from its container.
#[derive(Debug, Clone, Copy, Default)]
struct Frames {
    count: u64,
    /// Pixels of every frame together.
    total: u64,
    /// Pixels of the largest frame.
    largest: u64,
}

/// Judges an upload without decoding it: the type from its bytes, the size
/// and pixel layout from its header, and what processing it would cost.
/// Cheap, but it walks a whole GIF or WebP: call it from a blocking thread.
pub fn plan(data: &[u8], cfg: &UploadsConfig) -> Result<Plan, UploadError> {
    let format = image::guess_format(data).map_err(|_| UploadError::Unsupported)?;
    let mime = mime_of(format).ok_or(UploadError::Unsupported)?;
    let decoder = reader(data, format, cfg).into_decoder().map_err(classify)?;
    let (width, height) = decoder.dimensions();
    let color = decoder.color_type();
    if width == 0 || height == 0 {
        return Err(UploadError::Corrupt("empty image".into()));
    }
    let pixels = u64::from(width) * u64::from(height);
    if width > cfg.max_width || height > cfg.max_height || pixels > cfg.max_pixels {
        return Err(UploadError::TooLarge {
            width,
            height,
            max_w: cfg.max_width,
            max_h: cfg.max_height,
            max_pixels: cfg.max_pixels,
        });
    }
    let frames = match format {
        ImageFormat::Gif => scan_gif(data, None)?,
        ImageFormat::WebP => scan_webp(data, None)?,
        _ => Frames {
            count: 1,
            total: pixels,
            largest: pixels,
        },
    };
    // The server decodes only the first frame, but every client that shows
    // an animation decodes all of them, again on every loop.
    let animation = frames.total.saturating_mul(4);
    if frames.count > 1 && animation > cfg.max_animation_bytes {
        return Err(UploadError::AnimationTooLarge {
            frames: frames.count,
            needed_mib: animation.div_ceil(MIB),
            max_mib: cfg.max_animation_bytes / MIB,
        });
    }
    let cost = peak_bytes(format, data, width, height, color, &frames, cfg.thumb_size);
    if cost > cfg.max_decode_bytes {
        return Err(UploadError::TooHeavy {
            width,
            height,
            color,
            needed_mib: cost.div_ceil(MIB),
            max_mib: cfg.max_decode_bytes / MIB,
        });
    }
    Ok(Plan {
        format,
        mime,
        width,
        height,
        cost,
    })
}

const MIB: u64 = 1024 * 1024;

/// Decoder state of fixed size (Huffman and LZW tables, row buffers, the
/// deflate window), not worth modelling one by one.
const DECODER_FIXED: u64 = MIB;

/// The most memory processing an image holds at once, from its header:
/// the decoded bitmap (width × height × bytes a pixel, bit depth and
/// channels included) plus the largest set of buffers alive beside it.
/// - PNG: an 8-bit copy of the bitmap (a deeper one is converted before
///   encoding), or the encoded file, which deflate keeps within the size of
///   that 8-bit bitmap (stored blocks at worst).
/// - JPEG: the larger of the decoder's coefficients (2 bytes a sample,
///   the whole image's when the file is progressive or not interleaved), a
///   rotated copy for the EXIF orientation, or the encoded file.
/// - GIF: the first frame decoded apart when it does not fill the canvas
///   (a frame may be as large as the largest frame).
/// - WebP: the decoder's own frame (YUV planes and alpha, or the lossless
///   ARGB pixels, at most 4 bytes a pixel); an animation adds its RGBA
///   canvas and an RGBA frame.
///
/// Every format also holds a copy of the input (the JPEG decoder's, or the
/// cleaned GIF or WebP), the thumbnail and its encoding, and fixed state.
fn peak_bytes(
    format: ImageFormat,
    data: &[u8],
    width: u32,
    height: u32,
    color: ColorType,
    frames: &Frames,
    thumb_size: u32,
) -> u64 {
    let pixels = u64::from(width) * u64::from(height);
    let decoded = pixels.saturating_mul(u64::from(color.bytes_per_pixel()));
    let beside = match format {
        ImageFormat::Png => pixels.saturating_mul(u64::from(color.channel_count())),
        ImageFormat::Jpeg => jpeg_coefficient_bytes(data, width, height).max(decoded),
        ImageFormat::Gif => frames.largest.saturating_mul(4),
        _ if frames.count > 1 => pixels.saturating_mul(4 + 4 + 4),
        _ => pixels.saturating_mul(4),
    };
    let thumb = u64::from(thumb_size).pow(2) * 8 * 2;
    decoded
        .saturating_add(beside)
        .saturating_add(data.len() as u64)
        .saturating_add(thumb)
        .saturating_add(DECODER_FIXED)
}

/// What a JPEG decoder may keep of coefficients: 2 bytes a sample of every
/// component at its own resolution, for the whole image, padded to whole
/// MCUs. A file whose frame header cannot be read counts as four
/// full-resolution components.
fn jpeg_coefficient_bytes(data: &[u8], width: u32, height: u32) -> u64 {
    let worst = u64::from(width) * u64::from(height) * 4 * 2;
    let mut pos = 2;
    while let (Some(&0xFF), Some(&marker)) = (data.get(pos), data.get(pos + 1)) {
        match marker {
            // Fill byte, or a marker without a length.
            0xFF => pos += 1,
            0x01 | 0xD0..=0xD8 => pos += 2,
            // Start of frame (0xC4, 0xC8 and 0xCC are not frames).
            0xC0..=0xCF if !matches!(marker, 0xC4 | 0xC8 | 0xCC) => {
                return sof_coefficients(data.get(pos + 4..).unwrap_or(&[]), width, height)
                    .unwrap_or(worst);
            }
            // Start of scan or end of image before any frame header.
            0xDA | 0xD9 => return worst,
            _ => {
                let len = match data.get(pos + 2..pos + 4) {
                    Some(b) => usize::from(u16::from_be_bytes([b[0], b[1]])),
                    None => return worst,
                };
                pos += 2 + len;
            }
        }
    }
    worst
}

/// Coefficient bytes from a frame header's body (precision, height, width,
/// then each component's id, sampling factors and table).
fn sof_coefficients(sof: &[u8], width: u32, height: u32) -> Option<u64> {
    let n = usize::from(*sof.get(5)?);
    let comps = sof.get(6..6 + 3 * n)?;
    let factors: Vec<(u64, u64)> = comps
        .chunks(3)
        .map(|c| (u64::from(c[1] >> 4).max(1), u64::from(c[1] & 0x0F).max(1)))
        .collect();
    let h_max = factors.iter().map(|f| f.0).max()?;
    let v_max = factors.iter().map(|f| f.1).max()?;
    // Whole MCUs: 8 samples of the least sampled component each way.
    let mcu_w = u64::from(width).div_ceil(8 * h_max) * 8 * h_max;
    let mcu_h = u64::from(height).div_ceil(8 * v_max) * 8 * v_max;
    let samples: u64 = factors
        .iter()
        .map(|(h, v)| (mcu_w / h_max * h) * (mcu_h / v_max * v))
        .sum();
    Some(samples * 2)
}

impl Plan {
    /// Cleans, re-encodes and thumbnails the image `plan` judged.
    /// CPU-heavy: call it from a blocking thread, holding `cost` bytes of
    /// the decode budget.
    pub fn run(&self, data: &[u8], cfg: &UploadsConfig) -> Result<Processed, UploadError> {
        // GIF and WebP are kept as sent, minus their metadata: decode what
        // is kept, so what is stored is known to decode.
        let clean = match self.format {
            ImageFormat::WebP => Some(strip_webp(data)?),
            ImageFormat::Gif => Some(strip_gif(data)?),
            _ => None,
        };
        let source = clean.as_deref().unwrap_or(data);
        let mut decoder = reader(source, self.format, cfg)
            .into_decoder()
            .map_err(classify)?;
        // The header was judged from the file as sent; the cleaned file
        // must say the same.
        if decoder.dimensions() != (self.width, self.height) {
            return Err(UploadError::Corrupt("inconsistent headers".into()));
        }
        let orientation = decoder
            .orientation()
            .unwrap_or(image::metadata::Orientation::NoTransforms);
        let mut img = DynamicImage::from_decoder(decoder).map_err(classify)?;
        let bytes = match (self.format, clean) {
            (ImageFormat::Jpeg, _) => {
                img.apply_orientation(orientation);
                encode(&img, ImageFormat::Jpeg)?
            }
            (_, Some(clean)) => clean,
            _ => {
                img = to_8_bits(img);
                encode(&img, ImageFormat::Png)?
            }
        };
        let (width, height) = (img.width(), img.height());
        let thumb_img = if width > cfg.thumb_size || height > cfg.thumb_size {
            to_8_bits(img.thumbnail(cfg.thumb_size, cfg.thumb_size))
        } else {
            to_8_bits(img)
        };
        let (thumb, thumb_mime) = if self.format == ImageFormat::Jpeg {
            (encode(&thumb_img, ImageFormat::Jpeg)?, "image/jpeg")
        } else {
            (encode(&thumb_img, ImageFormat::Png)?, "image/png")
        };
        Ok(Processed {
            mime: self.mime,
            width,
            height,
            bytes,
            thumb,
            thumb_mime,
        })
    }
}

/// A reader whose decoders may allocate at most `max_decode_bytes`: a
/// second line behind `plan`'s estimate, for what a decoder allocates that
/// the estimate did not foresee.
fn reader<'a>(
    data: &'a [u8],
    format: ImageFormat,
    cfg: &UploadsConfig,
) -> ImageReader<Cursor<&'a [u8]>> {
    let mut reader = ImageReader::with_format(Cursor::new(data), format);
    let mut limits = Limits::default();
    limits.max_alloc = Some(cfg.max_decode_bytes);
    reader.limits(limits);
    reader
}

/// The same picture at 8 bits a channel, which is what browsers show: a
/// 16-bit PNG is stored at half the size, and its encoder needs no
/// byte-swapped copy of the bitmap.
fn to_8_bits(img: DynamicImage) -> DynamicImage {
    match img {
        DynamicImage::ImageLuma8(_)
        | DynamicImage::ImageLumaA8(_)
        | DynamicImage::ImageRgb8(_)
        | DynamicImage::ImageRgba8(_) => img,
        DynamicImage::ImageLuma16(_) => DynamicImage::ImageLuma8(img.to_luma8()),
        DynamicImage::ImageLumaA16(_) => DynamicImage::ImageLumaA8(img.to_luma_alpha8()),
        DynamicImage::ImageRgb16(_) | DynamicImage::ImageRgb32F(_) => {
            DynamicImage::ImageRgb8(img.to_rgb8())
        }
        _ => DynamicImage::ImageRgba8(img.to_rgba8()),
    }
}

fn classify(e: image::ImageError) -> UploadError {
    match e {
        image::ImageError::Limits(_) => UploadError::OverMemory,
        image::ImageError::Unsupported(_) => UploadError::Unsupported,
        e => UploadError::Corrupt(e.to_string()),
    }
}

fn encode(img: &DynamicImage, format: ImageFormat) -> Result<Vec<u8>, UploadError> {
    let mut out = Cursor::new(Vec::new());
    match (format, img) {
        (ImageFormat::Jpeg, DynamicImage::ImageRgb8(_) | DynamicImage::ImageLuma8(_)) => {
            let enc = image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 90);
            img.write_with_encoder(enc)
        }
        (ImageFormat::Jpeg, _) => {
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

/// The chunks a WebP file keeps: its image data and animation. Everything
/// else (EXIF, XMP, the ICC profile, chunks of no known kind) can carry
/// what the uploader did not mean to share.
const WEBP_KEPT: [&[u8; 4]; 6] = [b"VP8 ", b"VP8L", b"VP8X", b"ALPH", b"ANIM", b"ANMF"];
/// What a frame of an animation keeps of the chunks it holds.
const WEBP_FRAME_KEPT: [&[u8; 4]; 3] = [b"VP8 ", b"VP8L", b"ALPH"];
/// VP8X flags that stay: alpha (0x10) and animation (0x02). ICC (0x20),
/// EXIF (0x08) and XMP (0x04) name chunks that are gone.
const VP8X_KEPT_FLAGS: u8 = 0x10 | 0x02;

/// Copies a WebP file keeping only `WEBP_KEPT` chunks (and, inside each
/// animation frame, `WEBP_FRAME_KEPT`), with the VP8X flags and the RIFF
/// size made to match. Bytes past the RIFF chunk are dropped.
pub fn strip_webp(data: &[u8]) -> Result<Vec<u8>, UploadError> {
    let mut out = Vec::with_capacity(data.len());
    scan_webp(data, Some(&mut out))?;
    Ok(out)
}

fn bad_webp() -> UploadError {
    UploadError::Corrupt("malformed WebP container".into())
}

/// Walks a WebP file's chunks, counting its frames; with `out`, writes the
/// cleaned file there.
fn scan_webp(data: &[u8], mut out: Option<&mut Vec<u8>>) -> Result<Frames, UploadError> {
    if data.len() < 12 || &data[0..4] != b"RIFF" || &data[8..12] != b"WEBP" {
        return Err(bad_webp());
    }
    let riff_end = le_u32(&data[4..8])
        .checked_add(8)
        .ok_or_else(bad_webp)?
        .min(data.len());
    if let Some(out) = out.as_deref_mut() {
        out.extend_from_slice(b"RIFF\0\0\0\0WEBP");
    }
    let mut frames = Frames::default();
    let mut canvas = None;
    // A RIFF size below 4 would end the file before its own header.
    let body = data.get(12..riff_end).ok_or_else(bad_webp)?;
    for (fourcc, chunk) in chunks(body)? {
        if !WEBP_KEPT.contains(&fourcc) {
            continue;
        }
        match fourcc {
            b"VP8X" if chunk.len() >= 18 => {
                let w = u64::from(le_u24(&chunk[12..15])) + 1;
                let h = u64::from(le_u24(&chunk[15..18])) + 1;
                canvas = Some(w * h);
            }
            b"ANMF" if chunk.len() >= 24 => {
                let w = u64::from(le_u24(&chunk[14..17])) + 1;
                let h = u64::from(le_u24(&chunk[17..20])) + 1;
                frames.count += 1;
                frames.total = frames.total.saturating_add(w * h);
                frames.largest = frames.largest.max(w * h);
            }
            b"VP8X" | b"ANMF" => return Err(bad_webp()),
            _ => {}
        }
        let Some(out) = out.as_deref_mut() else {
            continue;
        };
        let start = out.len();
        if fourcc == b"ANMF" {
            // The frame's header (position, size, duration, flags), then
            // its own chunks, filtered too.
            out.extend_from_slice(&chunk[..24]);
            for (inner, sub) in chunks(&chunk[24..])? {
                if WEBP_FRAME_KEPT.contains(&inner) {
                    out.extend_from_slice(sub);
                }
            }
            let size = u32::try_from(out.len() - start - 8).map_err(|_| bad_webp())?;
            out[start + 4..start + 8].copy_from_slice(&size.to_le_bytes());
        } else {
            out.extend_from_slice(chunk);
            if fourcc == b"VP8X" {
                out[start + 8] &= VP8X_KEPT_FLAGS;
            }
        }
    }
    if frames.count == 0 {
        let single = canvas.unwrap_or(0);
        frames = Frames {
            count: 1,
            total: single,
            largest: single,
        };
    }
    if let Some(out) = out {
        let riff_size = u32::try_from(out.len() - 8).map_err(|_| bad_webp())?;
        out[4..8].copy_from_slice(&riff_size.to_le_bytes());
    }
    Ok(frames)
}

/// A RIFF chunk: its fourcc, and its whole bytes (header, payload and
/// padding).
type Chunk<'a> = (&'a [u8; 4], &'a [u8]);

/// The RIFF chunks of `data`, in order.
fn chunks(data: &[u8]) -> Result<Vec<Chunk<'_>>, UploadError> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos + 8 <= data.len() {
        let fourcc: &[u8; 4] = data[pos..pos + 4].try_into().map_err(|_| bad_webp())?;
        let size = le_u32(&data[pos + 4..pos + 8]);
        let end = pos
            .checked_add(8)
            .and_then(|p| p.checked_add(size))
            .ok_or_else(bad_webp)?;
        if end > data.len() {
            return Err(bad_webp());
        }
        let padded = (end + (size & 1)).min(data.len());
        out.push((fourcc, &data[pos..padded]));
        pos = padded;
    }
    Ok(out)
}

fn le_u32(b: &[u8]) -> usize {
    u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize
}

fn le_u24(b: &[u8]) -> u32 {
    u32::from_le_bytes([b[0], b[1], b[2], 0])
}

/// Copies a GIF without comment and application extensions, keeping the
/// NETSCAPE loop extension that animations need.
pub fn strip_gif(data: &[u8]) -> Result<Vec<u8>, UploadError> {
    let mut out = Vec::with_capacity(data.len());
    scan_gif(data, Some(&mut out))?;
    Ok(out)
}

/// Walks a GIF's blocks, counting its frames; with `out`, writes the
/// cleaned file there.
fn scan_gif(data: &[u8], mut out: Option<&mut Vec<u8>>) -> Result<Frames, UploadError> {
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
    let mut emit = |bytes: &[u8]| {
        if let Some(out) = out.as_deref_mut() {
            out.extend_from_slice(bytes);
        }
    };
    emit(&data[..pos]);
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
    let mut frames = Frames::default();
    loop {
        match get(pos)? {
            0x3B => {
                emit(&[0x3B]);
                return Ok(frames);
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
                    emit(data.get(pos..end).ok_or_else(bad)?);
                }
                pos = end;
            }
            0x2C => {
                let w = u16::from_le_bytes([get(pos + 5)?, get(pos + 6)?]);
                let h = u16::from_le_bytes([get(pos + 7)?, get(pos + 8)?]);
                let area = u64::from(w) * u64::from(h);
                frames.count += 1;
                frames.total = frames.total.saturating_add(area);
                frames.largest = frames.largest.max(area);
                let mut p = pos + 10;
                let f = get(pos + 9)?;
                if f & 0x80 != 0 {
                    p += 3 * (1usize << ((f & 0x07) + 1));
                }
                // LZW minimum code size, then the image data sub-blocks.
                let end = sub_blocks(p + 1)?;
                emit(data.get(pos..end).ok_or_else(bad)?);
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

    /// Whether the file `hash` is on disk.
    pub fn exists(&self, hash: &str) -> bool {
        self.path(hash).is_some_and(|p| p.is_file())
    }

    /// Removes a file; true if there was one. Only ever called from a store
    /// write operation that has just seen no record name it (see
    /// `App::remove_files`).
    pub fn remove(&self, hash: &str) -> bool {
        self.path(hash)
            .is_some_and(|path| std::fs::remove_file(path).is_ok())
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

    fn process(data: &[u8], cfg: &UploadsConfig) -> Result<Processed, UploadError> {
        plan(data, cfg)?.run(data, cfg)
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

    /// Whatever a client does to a WebP's container (sizes that lie, a
    /// file cut anywhere), the answer is an error or an image, never a
    /// panic.
    #[test]
    fn mangled_webp_containers_never_panic() {
        let img = DynamicImage::ImageRgba8(image::RgbaImage::new(8, 8));
        let file = encode(&img, ImageFormat::WebP).unwrap();
        let mut cases = Vec::new();
        for riff in [0u32, 1, 2, 3, 4, 5, 11, 12, u32::MAX - 7, u32::MAX] {
            let mut f = file.clone();
            f[4..8].copy_from_slice(&riff.to_le_bytes());
            cases.push(f);
        }
        for at in 0..file.len().min(64) {
            for byte in [0x00, 0x01, 0x7f, 0xff] {
                let mut f = file.clone();
                f[at] = byte;
                cases.push(f);
            }
        }
        for cut in 0..file.len() {
            cases.push(file[..cut].to_vec());
        }
        for f in &cases {
            let _ = plan(f, &cfg());
            let _ = strip_webp(f);
        }
    }

    #[test]
    fn webp_loses_what_follows_its_riff_chunk() {
        let img = DynamicImage::ImageRgba8(image::RgbaImage::new(8, 8));
        let mut file = encode(&img, ImageFormat::WebP).unwrap();
        file.extend_from_slice(b"ZZZZ\x06\0\0\0SECRET");
        let clean = strip_webp(&file).unwrap();
        assert!(!clean.windows(6).any(|w| w == b"SECRET"));
        assert_eq!(clean.len(), file.len() - 14);
        assert!(image::load_from_memory(&clean).is_ok());
    }

    #[test]
    fn deep_bitmaps_cost_their_bytes() {
        let frames = Frames::default();
        let rgba16 = peak_bytes(
            ImageFormat::Png,
            &[],
            6324,
            6324,
            ColorType::Rgba16,
            &frames,
            320,
        );
        let rgba8 = peak_bytes(
            ImageFormat::Png,
            &[],
            6324,
            6324,
            ColorType::Rgba8,
            &frames,
            320,
        );
        // The bitmap at 8 bytes a pixel, then its 8-bit copy.
        assert!(rgba16 >= 6324 * 6324 * 12, "{rgba16}");
        assert_eq!(rgba16 - rgba8, 6324 * 6324 * 4);
        assert!(rgba16 > UploadsConfig::default().max_decode_bytes);
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
