//! The browser app as a browser first meets it: `/` and its files with the
//! security headers, and the WebSocket upgrade's `Origin` check.

mod common;

use common::*;
use reqwest::StatusCode;
use reqwest::header::{self, HeaderMap};

fn assert_security_headers(headers: &HeaderMap) {
    let csp = headers[header::CONTENT_SECURITY_POLICY].to_str().unwrap();
    assert!(csp.contains("script-src 'self'"), "{csp}");
    assert!(!csp.contains("unsafe-inline"), "{csp}");
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    assert!(csp.contains("connect-src 'self';"), "{csp}");
    assert_eq!(headers[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
}

#[tokio::test]
async fn the_app_is_served_at_the_root_with_its_security_headers() {
    // Goal: `/` is the app's page, its script is served as JavaScript (a
    // module script is refused otherwise), both under a CSP with no inline
    // script; an unchanged file revalidates as 304; unknown paths and
    // other methods are 404 `unknown_route`, and an endpoint asked with the
    // wrong method 405 `method_not_allowed`, each with a JSON error body.
    let server = TestServer::start().await;
    let http = reqwest::Client::new();
    let page = http.get(server.url()).send().await.unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    assert!(
        page.headers()[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    assert_security_headers(page.headers());
    let html = page.text().await.unwrap();
    assert!(html.contains(r#"type="module""#), "{html}");

    let script = http
        .get(format!("{}/app.js", server.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(script.status(), StatusCode::OK);
    assert_eq!(
        script.headers()[header::CONTENT_TYPE],
        "text/javascript; charset=utf-8"
    );
    assert_security_headers(script.headers());
    let etag = script.headers()[header::ETAG].clone();
    let again = http
        .get(format!("{}/app.js", server.url()))
        .header(header::IF_NONE_MATCH, etag)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), StatusCode::NOT_MODIFIED);
    unknown_routes_and_wrong_methods_are_typed(&server, &http).await;
}

/// Unknown paths and other methods on `/` are 404 `unknown_route`; an
/// endpoint asked with the wrong method 405 `method_not_allowed`.
async fn unknown_routes_and_wrong_methods_are_typed(server: &TestServer, http: &reqwest::Client) {
    let code = |body: serde_json::Value| body["error"]["code"].as_str().map(str::to_owned);
    for missing in ["/nope.js", "/../Cargo.toml", "/v1/nothing"] {
        let response = http
            .get(format!("{}{missing}", server.url()))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::NOT_FOUND, "{missing}");
        let body = response.json().await.unwrap();
        assert_eq!(code(body).as_deref(), Some("unknown_route"), "{missing}");
    }
    let post = http.post(server.url()).send().await.unwrap();
    assert_eq!(post.status(), StatusCode::NOT_FOUND);
    assert_eq!(
        code(post.json().await.unwrap()).as_deref(),
        Some("unknown_route")
    );
    // An endpoint asked with a method it does not take says so, typed.
    for (method, path) in [
        ("GET", "/v1/sessions"),
        ("GET", "/v1/accounts"),
        ("PUT", "/v1/devices"),
    ] {
        let response = http
            .request(method.parse().unwrap(), format!("{}{path}", server.url()))
            .send()
            .await
            .unwrap();
        assert_eq!(
            response.status(),
            StatusCode::METHOD_NOT_ALLOWED,
            "{method} {path}"
        );
        let body = response.json().await.unwrap();
        assert_eq!(
            code(body).as_deref(),
            Some("method_not_allowed"),
            "{method} {path}"
        );
    }
}

/// A WebSocket upgrade request as a browser sends it, from `origin`.
async fn upgrade_from(server: &TestServer, origin: Option<&str>) -> reqwest::Response {
    let mut request = reqwest::Client::new()
        .get(format!("{}/v1/ws", server.url()))
        .header(header::CONNECTION, "Upgrade")
        .header(header::UPGRADE, "websocket")
        .header(header::SEC_WEBSOCKET_VERSION, "13")
        .header(header::SEC_WEBSOCKET_KEY, "dGhlIHNhbXBsZSBub25jZQ==");
    if let Some(origin) = origin {
        request = request.header(header::ORIGIN, origin);
    }
    request.send().await.unwrap()
}

#[tokio::test]
async fn websockets_from_other_sites_pages_are_refused() {
    // Goal: a page of another origin cannot open a WebSocket (403,
    // origin_not_allowed); the server's own pages, configured origins and
    // non-browser clients can.
    let server = TestServer::start_with(|config| {
        config.web.allowed_origins = vec!["https://chat.example.com".into()];
    })
    .await;
    let refused = upgrade_from(&server, Some("https://evil.example")).await;
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    let body: serde_json::Value = refused.json().await.unwrap();
    assert_eq!(body["error"]["code"], "origin_not_allowed");

    let own = server.url();
    for origin in [Some(own.as_str()), Some("https://chat.example.com"), None] {
        let response = upgrade_from(&server, origin).await;
        assert_eq!(
            response.status(),
            StatusCode::SWITCHING_PROTOCOLS,
            "{origin:?}"
        );
    }
}
