//! The upload judgement of `POST /v1/media` on the complete bytes: the type
//! is sniffed from the first `SNIFF_BYTES`, and what sniffs as an image is
//! decoded (bounded) into its size and a JPEG thumbnail, as
//! `Media::upload` does. Checks: no panic, no unbounded memory or time
//! (libFuzzer's -rss_limit_mb and -timeout; single huge allocations are
//! caught only with `FUZZ_SANITIZER=address`), and an accepted image
//! respects the edge bound and yields a thumbnail.
#![no_main]

use libfuzzer_sys::fuzz_target;
use missive_media::{IMAGE_EDGE_MAX, SNIFF_BYTES, make_thumbnail, sniff};

fuzz_target!(|data: &[u8]| {
    let head = &data[..data.len().min(SNIFF_BYTES)];
    let Some(content_type) = sniff(head) else {
        return;
    };
    if !content_type.starts_with("image/") {
        return;
    }
    if let Ok(thumbnail) = make_thumbnail(data) {
        assert!(thumbnail.width >= 1 && thumbnail.width <= IMAGE_EDGE_MAX);
        assert!(thumbnail.height >= 1 && thumbnail.height <= IMAGE_EDGE_MAX);
        assert!(thumbnail.jpeg.starts_with(&[0xFF, 0xD8, 0xFF]));
    }
});
