//! What an upload is, judged from its bytes alone: the type by magic bytes
//! against an allow-list (never the name or a client's content type), and
//! for images a bounded decode into the pixel size and a JPEG thumbnail.
//! Its own crate, with no I/O and one dependency (`image`), so the server
//! uses it and the `media_sniff` fuzz target (fuzz/) builds it quickly.

/// Bytes looked at to recognise the type: [`sniff`] sees the first this many.
pub const SNIFF_BYTES: usize = 64;

/// The allow-list: (magic test, content type). Images, video, audio, PDF.
pub fn sniff(head: &[u8]) -> Option<&'static str> {
    let at = |offset: usize, magic: &[u8]| head.get(offset..offset + magic.len()) == Some(magic);
    if at(0, &[0xFF, 0xD8, 0xFF]) {
        Some("image/jpeg")
    } else if at(0, b"\x89PNG\r\n\x1a\n") {
        Some("image/png")
    } else if at(0, b"GIF87a") || at(0, b"GIF89a") {
        Some("image/gif")
    } else if at(0, b"RIFF") && at(8, b"WEBP") {
        Some("image/webp")
    } else if at(0, b"RIFF") && at(8, b"WAVE") {
        Some("audio/wav")
    } else if at(4, b"ftyp") {
        Some("video/mp4")
    } else if at(0, &[0x1A, 0x45, 0xDF, 0xA3]) {
        Some("video/webm")
    } else if at(0, b"OggS") {
        Some("audio/ogg")
    } else if at(0, b"ID3") || (head.len() >= 2 && head[0] == 0xFF && head[1] & 0xE0 == 0xE0) {
        Some("audio/mpeg")
    } else if at(0, b"%PDF-") {
        Some("application/pdf")
    } else {
        None
    }
}

/// Longest edge of a thumbnail, and the largest image edge decoded at all.
pub const THUMBNAIL_EDGE: u32 = 320;
pub const IMAGE_EDGE_MAX: u32 = 16_384;
/// Memory a single decode may allocate (decompression bombs stop here).
pub const DECODE_ALLOC_MAX: u64 = 256 * 1024 * 1024;
/// Pixels an image may have (64 MP): decoding time grows with them, and
/// the allocation bound alone lets a grayscale image reach 268 MP.
pub const IMAGE_PIXELS_MAX: u64 = 64 * 1024 * 1024;

/// An image's pixel size and its JPEG preview.
pub struct Thumbnail {
    pub width: u32,
    pub height: u32,
    pub jpeg: Vec<u8>,
}

/// Decodes an uploaded image (bounded in edge length and allocation) and
/// encodes its JPEG thumbnail; `Err` (the reason) when it does not decode.
/// Also the entry point of the `media_sniff` fuzz target (fuzz/), which
/// feeds it what [`sniff`] took for an image, as an upload does.
pub fn make_thumbnail(bytes: &[u8]) -> Result<Thumbnail, String> {
    // The header alone tells the size: refuse before any pixel is decoded.
    let (width, height) = image::ImageReader::new(std::io::Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|err| err.to_string())?
        .into_dimensions()
        .map_err(|err| err.to_string())?;
    if u64::from(width) * u64::from(height) > IMAGE_PIXELS_MAX {
        return Err(format!(
            "{width}×{height} is over the limit of {IMAGE_PIXELS_MAX} pixels"
        ));
    }
    let mut reader = image::ImageReader::new(std::io::Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|err| err.to_string())?;
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(IMAGE_EDGE_MAX);
    limits.max_image_height = Some(IMAGE_EDGE_MAX);
    limits.max_alloc = Some(DECODE_ALLOC_MAX);
    reader.limits(limits);
    let decoded = reader.decode().map_err(|err| err.to_string())?;
    // A GIF may declare a 773×0 screen and still "decode": no pixels.
    if decoded.width() == 0 || decoded.height() == 0 {
        return Err("the image has no pixels".into());
    }
    let preview = decoded.thumbnail(THUMBNAIL_EDGE, THUMBNAIL_EDGE).to_rgb8();
    let mut jpeg = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, 80)
        .encode_image(&preview)
        .map_err(|err| err.to_string())?;
    Ok(Thumbnail {
        width: decoded.width(),
        height: decoded.height(),
        jpeg,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sniffing_follows_the_bytes_not_names() {
        // Goal: each allowed format is recognised by its magic bytes;
        // anything else (HTML, scripts, empty) is refused.
        let cases: &[(&[u8], Option<&str>)] = &[
            (b"\xFF\xD8\xFF\xE0rest", Some("image/jpeg")),
            (b"\x89PNG\r\n\x1a\nrest", Some("image/png")),
            (b"RIFF\0\0\0\0WEBPVP8 ", Some("image/webp")),
            (b"\0\0\0\x18ftypmp42", Some("video/mp4")),
            (b"%PDF-1.7", Some("application/pdf")),
            (b"<html><script>", None),
            (b"#!/bin/sh", None),
            (b"", None),
        ];
        for (head, expected) in cases {
            assert_eq!(sniff(head), *expected, "{head:?}");
        }
    }

    #[test]
    fn an_image_without_pixels_is_refused() {
        // Goal: regression (fuzz/ media_sniff): this GIF declares a 773×0
        // screen; it decoded into a zero-height image and a broken
        // thumbnail was stored. An image with no pixels does not decode.
        let gif: &[u8] = b"GIF89a\x05\x03\x00\x00\x80\x00\x00\x00\x00\x00\x00\x00\x00\
            !\xf9\x04\x08\x00\x00\x00\x00,\x08\x00\x00\x00\x05\x00\x03\x00\x83\x00\x00\
            \x07\x00P\x07\x00\xa0\x072\x00\x072P\x072\xa0\x07d\x00\x07dP\x07d\xa0\x07\x96\x00\
            \x07\x96P\x07\x96\xa0\x07\xc8\x00\x07\xc8P\x07\xc8\xa0\x07\x00\x00\x00\x04\x0b\x10\
            \x0c\x93X G5Q\xd0r\x11\x00;";
        assert_eq!(gif.len(), 100);
        assert_eq!(sniff(gif), Some("image/gif"));
        let refused = make_thumbnail(gif).err().expect("refused");
        assert!(refused.contains("no pixels"), "{refused}");
    }

    /// A PNG that only declares its size: signature, IHDR (8-bit RGBA),
    /// an empty IDAT and IEND, with correct CRCs.
    fn png_declaring(width: u32, height: u32, color_type: u8) -> Vec<u8> {
        fn crc32(bytes: &[u8]) -> u32 {
            let mut crc = 0xFFFF_FFFFu32;
            for &byte in bytes {
                crc ^= u32::from(byte);
                for _ in 0..8 {
                    crc = if crc & 1 == 1 {
                        (crc >> 1) ^ 0xEDB8_8320
                    } else {
                        crc >> 1
                    };
                }
            }
            !crc
        }
        let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
        let mut chunk = |kind: &[u8], data: &[u8]| {
            png.extend_from_slice(&(data.len() as u32).to_be_bytes());
            let start = png.len();
            png.extend_from_slice(kind);
            png.extend_from_slice(data);
            let crc = crc32(&png[start..]);
            png.extend_from_slice(&crc.to_be_bytes());
        };
        let mut header = Vec::new();
        header.extend_from_slice(&width.to_be_bytes());
        header.extend_from_slice(&height.to_be_bytes());
        header.extend_from_slice(&[8, color_type, 0, 0, 0]);
        chunk(b"IHDR", &header);
        chunk(b"IDAT", &[0x78, 0x9C, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01]);
        chunk(b"IEND", &[]);
        png
    }

    #[test]
    fn image_bombs_are_refused_before_decoding() {
        // Goal: a tiny image declaring a huge size is refused from its
        // header, before any pixel buffer exists: past the edge limit
        // (100,000² would be 40 GB of RGBA), or within it but over the
        // decoder's memory limit (16,384² RGBA is 1 GiB > 256 MiB), or
        // over the pixel limit though within both (10,000² grayscale is
        // 100 MP in 95 MiB). Color types: 6 RGBA, 0 grayscale.
        for (width, height, color_type) in [
            (100_000, 100_000, 6),
            (IMAGE_EDGE_MAX + 1, 1, 6),
            (IMAGE_EDGE_MAX, IMAGE_EDGE_MAX, 6),
            (10_000, 10_000, 0),
        ] {
            let png = png_declaring(width, height, color_type);
            assert!(png.len() < 100);
            assert_eq!(sniff(&png), Some("image/png"));
            let refused = make_thumbnail(&png).err().expect("refused");
            assert!(
                refused.to_lowercase().contains("limit"),
                "{width}×{height}: {refused}"
            );
        }
        // The same header at a sane size gets as far as the pixel data:
        // the refusal above is the size, not the forged chunks.
        let small = make_thumbnail(&png_declaring(2, 2, 6))
            .err()
            .expect("no pixel data");
        assert!(!small.to_lowercase().contains("limit"), "{small}");
    }

    /// A tiny image of each decoded format, encoded by the image crate.
    fn tiny_images() -> Vec<(&'static str, &'static str, Vec<u8>)> {
        let pixels =
            image::RgbImage::from_fn(5, 3, |x, y| image::Rgb([x as u8 * 50, y as u8 * 80, 7]));
        let image = image::DynamicImage::ImageRgb8(pixels);
        [
            ("tiny.png", "image/png", image::ImageFormat::Png),
            ("tiny.jpg", "image/jpeg", image::ImageFormat::Jpeg),
            ("tiny.gif", "image/gif", image::ImageFormat::Gif),
            ("tiny.webp", "image/webp", image::ImageFormat::WebP),
        ]
        .into_iter()
        .map(|(name, content_type, format)| {
            let mut bytes = std::io::Cursor::new(Vec::new());
            image.write_to(&mut bytes, format).expect("encode");
            (name, content_type, bytes.into_inner())
        })
        .collect()
    }

    #[test]
    fn every_image_format_sniffs_and_thumbnails() {
        // Goal: each allowed image format is recognised and decoded into
        // its size and a JPEG preview. These bytes are also the fuzzing
        // seeds: MISSIVE_FUZZ_SEEDS=fuzz/corpus/media_sniff writes them.
        let seeds = std::env::var_os("MISSIVE_FUZZ_SEEDS");
        for (name, content_type, bytes) in tiny_images() {
            assert_eq!(
                sniff(&bytes[..bytes.len().min(SNIFF_BYTES)]),
                Some(content_type),
                "{name}"
            );
            let thumbnail = make_thumbnail(&bytes).expect(name);
            assert_eq!((thumbnail.width, thumbnail.height), (5, 3), "{name}");
            assert!(thumbnail.jpeg.starts_with(&[0xFF, 0xD8, 0xFF]), "{name}");
            if let Some(dir) = &seeds {
                std::fs::write(std::path::Path::new(dir).join(name), &bytes).expect("write seed");
            }
        }
    }
}
