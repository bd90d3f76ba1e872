//! The browser app at `/`: its files are built into the binary (see
//! `build.rs`), or read from `web.assets_dir` while working on them. Every
//! answer carries the headers that keep the page from being framed, from
//! running injected script and from having its types sniffed.

use std::collections::HashMap;
use std::path::{Component, Path};
use std::sync::{Arc, LazyLock};

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

use crate::AppState;
use crate::service::ServiceError;
use missive_proto::ErrorCode;

include!(concat!(env!("OUT_DIR"), "/web_assets.rs"));

/// Scripts and styles only from files of this origin (no inline code, no
/// eval; `wasm-unsafe-eval` lets a script of this origin compile the
/// encryption module, `e2ee/e2ee_bg.wasm`, and nothing else); images also
/// from `blob:` because media is fetched with the
/// device's token and shown through object URLs. `connect-src 'self'`
/// covers this origin's ws:/wss: too, and nothing else: an injected
/// script could not send the token elsewhere.
pub(super) const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self' 'wasm-unsafe-eval'; \
    style-src 'self'; img-src 'self' blob:; media-src 'self' blob:; \
    connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; \
    form-action 'self'; object-src 'none'";

/// ETags of the built-in files, computed once.
static EMBEDDED_ETAGS: LazyLock<HashMap<&'static str, String>> = LazyLock::new(|| {
    WEB_ASSETS
        .iter()
        .map(|(path, bytes)| (*path, etag(bytes)))
        .collect()
});

/// The router's fallback: any GET that no API route took is a file of the
/// app (`/` is `index.html`); anything else is 404 `unknown_route`.
pub(super) async fn asset(
    State(state): State<Arc<AppState>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    if method != Method::GET && method != Method::HEAD {
        return unknown_route();
    }
    let path = match uri.path().trim_start_matches('/') {
        "" => "index.html",
        path => path,
    };
    let found = match &state.config.web.assets_dir {
        Some(dir) => from_disk(dir, path).await,
        None => WEB_ASSETS
            .iter()
            .find(|(name, _)| *name == path)
            .map(|(name, bytes)| (Body::from(*bytes), EMBEDDED_ETAGS[name].clone())),
    };
    let Some((body, etag)) = found else {
        return unknown_route();
    };
    let not_modified = headers
        .get(header::IF_NONE_MATCH)
        .is_some_and(|sent| sent.as_bytes() == etag.as_bytes());
    let mut response = if not_modified {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        let mut response = body.into_response();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(content_type(path)),
        );
        response
    };
    let headers = response.headers_mut();
    if let Ok(etag) = HeaderValue::from_str(&etag) {
        headers.insert(header::ETAG, etag);
    }
    // File names carry no version, so the browser revalidates each time
    // (a cheap 304 while the ETag matches).
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    security_headers(headers);
    response
}

fn unknown_route() -> Response {
    ServiceError::new(
        ErrorCode::UnknownRoute,
        "no such endpoint or file; see docs/PROTOCOL.md",
    )
    .into_response()
}

/// The headers every page of the app is served with.
pub(super) fn security_headers(headers: &mut HeaderMap) {
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(
        "cross-origin-opener-policy",
        HeaderValue::from_static("same-origin"),
    );
}

/// Whether a WebSocket upgrade may proceed: a browser always sends the
/// page's `Origin`, and a page of another site must not talk to this
/// server with whatever the user's browser holds (cross-site WebSocket
/// hijacking). Allowed: no `Origin` (not a browser page), the server's own
/// origin (the `Host` the browser addressed), or an exact entry of
/// `web.allowed_origins`.
pub(super) fn origin_allowed(headers: &HeaderMap, allowed: &[String]) -> bool {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return true;
    };
    let Ok(origin) = origin.to_str() else {
        return false;
    };
    if allowed.iter().any(|entry| entry == origin) {
        return true;
    }
    let authority = origin
        .strip_prefix("https://")
        .or_else(|| origin.strip_prefix("http://"));
    let host = headers
        .get(header::HOST)
        .and_then(|host| host.to_str().ok());
    matches!((authority, host), (Some(authority), Some(host)) if authority.eq_ignore_ascii_case(host))
}

/// A file under `dir`, if `path` stays inside it (no `..`, no absolute
/// parts) and names a regular file.
async fn from_disk(dir: &Path, path: &str) -> Option<(Body, String)> {
    let relative = Path::new(path);
    if !relative
        .components()
        .all(|part| matches!(part, Component::Normal(_)))
    {
        return None;
    }
    let bytes = tokio::fs::read(dir.join(relative)).await.ok()?;
    let etag = etag(&bytes);
    Some((Body::from(bytes), etag))
}

fn etag(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    format!("\"{}\"", hex::encode(&digest[..12]))
}

fn content_type(path: &str) -> &'static str {
    let extension = path.rsplit_once('.').map_or("", |(_, extension)| extension);
    match extension {
        "html" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "ico" => "image/x-icon",
        "json" => "application/json",
        // Compiled while it streams in only when served as such.
        "wasm" => "application/wasm",
        "webmanifest" => "application/manifest+json",
        "txt" => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn types_follow_the_extension() {
        // Goal: scripts are served as JavaScript (module scripts are refused
        // otherwise under nosniff) and unknown files are not guessed.
        assert_eq!(content_type("app.js"), "text/javascript; charset=utf-8");
        assert_eq!(content_type("e2ee/e2ee_bg.wasm"), "application/wasm");
        assert_eq!(
            content_type("views/list.mjs"),
            "text/javascript; charset=utf-8"
        );
        assert_eq!(content_type("index.html"), "text/html; charset=utf-8");
        assert_eq!(content_type("README"), "application/octet-stream");
    }

    #[test]
    fn only_own_or_listed_origins_may_open_websockets() {
        // Goal: a page of another site is refused; the server's own pages,
        // listed origins and non-browser clients (no Origin) are let in.
        let request = |origin: Option<&str>, host: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(header::HOST, HeaderValue::from_str(host).unwrap());
            if let Some(origin) = origin {
                headers.insert(header::ORIGIN, HeaderValue::from_str(origin).unwrap());
            }
            headers
        };
        let listed = vec!["https://chat.example.com".to_owned()];
        let allowed = |origin, host| origin_allowed(&request(origin, host), &listed);
        assert!(allowed(None, "127.0.0.1:8080"));
        assert!(allowed(Some("http://127.0.0.1:8080"), "127.0.0.1:8080"));
        assert!(allowed(Some("https://chat.example.com"), "10.0.0.5:8080"));
        assert!(!allowed(Some("https://evil.example"), "127.0.0.1:8080"));
        // Exact match only: no prefix, suffix or port tricks.
        assert!(!allowed(Some("https://chat.example.com.evil.example"), "x"));
        assert!(!allowed(Some("https://chat.example.com:444"), "x"));
        assert!(!allowed(Some("http://127.0.0.1:8081"), "127.0.0.1:8080"));
        assert!(!allowed(Some("null"), "127.0.0.1:8080"));
    }

    #[tokio::test]
    async fn disk_paths_cannot_leave_the_directory() {
        // Goal: with assets_dir set, `..` or an absolute path never reads
        // outside it; a file inside is served.
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("web");
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(dir.join("index.html"), "hi").unwrap();
        std::fs::write(root.path().join("secret"), "no").unwrap();
        assert!(from_disk(&dir, "index.html").await.is_some());
        assert!(from_disk(&dir, "../secret").await.is_none());
        assert!(from_disk(&dir, "/etc/passwd").await.is_none());
        assert!(from_disk(&dir, "./index.html").await.is_none());
        assert!(from_disk(&dir, "missing.js").await.is_none());
    }
}
