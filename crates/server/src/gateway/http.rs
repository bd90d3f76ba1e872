//! REST handlers and the bearer-token extractor.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{ConnectInfo, FromRequestParts, Path, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use missive_core::DeviceId;
use missive_core::model::DeviceAuth;
use missive_proto::ErrorCode;
use missive_proto::rest::{
    DeviceInfo, DeviceList, LoginRequest, LoginResponse, RegisterRequest, RegisterResponse,
    RegistrationInfo,
};

use crate::AppState;
use crate::service::ServiceError;

/// The device behind `Authorization: Bearer <token>`.
pub(super) struct Authenticated(pub DeviceAuth);

impl FromRequestParts<Arc<AppState>> for Authenticated {
    type Rejection = ServiceError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, ServiceError> {
        let token = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.strip_prefix("Bearer "))
            .ok_or_else(|| {
                ServiceError::new(
                    ErrorCode::NotAuthenticated,
                    "send Authorization: Bearer <token>",
                )
            })?;
        let auth = state.accounts.authenticate(token.trim()).await?;
        state.accounts.note_use(&auth).await;
        // The connection no longer counts against its address's quota of
        // unauthenticated ones.
        if let Some(admitted) = parts.extensions.get::<Arc<crate::accept::Admitted>>() {
            admitted.authenticated();
        }
        Ok(Self(auth))
    }
}

/// Turns axum's JSON rejections into our typed errors.
pub(super) fn json_body<T>(body: Result<Json<T>, JsonRejection>) -> Result<T, ServiceError> {
    body.map(|Json(value)| value).map_err(|rejection| {
        let code = match rejection {
            JsonRejection::JsonDataError(_) => ErrorCode::InvalidField,
            // Over the body limit (`limits.frame_bytes_max`).
            _ if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => ErrorCode::FrameTooLarge,
            _ => ErrorCode::BadFrame,
        };
        ServiceError::new(code, rejection.body_text())
    })
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct UsersQuery {
    username: String,
}

/// `GET /v1/users?username=NAME`: `{"users": [{"username"}]}`, empty when
/// nobody has that name. A list, not a 404: "nobody" is an ordinary answer
/// (a browser reports every 404 it fetches as a console error).
pub(super) async fn users(
    State(state): State<Arc<AppState>>,
    Authenticated(_): Authenticated,
    query: Result<axum::extract::Query<UsersQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<serde_json::Value>, ServiceError> {
    let axum::extract::Query(query) = query
        .map_err(|rejection| ServiceError::new(ErrorCode::InvalidField, rejection.body_text()))?;
    let users = match state.accounts.lookup(&query.username).await {
        Ok(username) => vec![serde_json::json!({ "username": username })],
        Err(err) if err.code == ErrorCode::UnknownUser => Vec::new(),
        Err(err) => return Err(err),
    };
    Ok(Json(serde_json::json!({ "users": users })))
}

/// Any route asked with a method it does not take: 405 with a typed body.
pub(super) async fn method_not_allowed() -> ServiceError {
    ServiceError::new(
        ErrorCode::MethodNotAllowed,
        "this endpoint does not take that method; see docs/PROTOCOL.md",
    )
}

/// `GET /healthz`: 200 while the process serves HTTP.
pub(super) async fn healthz() -> &'static str {
    "ok"
}

const READY_PROBE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// `GET /readyz`: 200 when the store answers, 503 otherwise or when stopping.
pub(super) async fn readyz(State(state): State<Arc<AppState>>) -> Response {
    let (store, blobs) = tokio::join!(
        tokio::time::timeout(READY_PROBE_TIMEOUT, state.store.is_ready()),
        tokio::time::timeout(READY_PROBE_TIMEOUT, state.media.blobs_reachable())
    );
    let (store, blobs) = (matches!(store, Ok(true)), matches!(blobs, Ok(true)));
    let failing: Vec<&str> = [
        ("shutting down", state.shutdown.is_cancelled()),
        ("store", !store),
        ("bus", !state.bus.is_connected()),
        ("blobs", !blobs),
    ]
    .into_iter()
    .filter_map(|(name, failed)| failed.then_some(name))
    .collect();
    if failing.is_empty() {
        (StatusCode::OK, "ready").into_response()
    } else {
        let body = format!("not ready: {}", failing.join(", "));
        (StatusCode::SERVICE_UNAVAILABLE, body).into_response()
    }
}

/// `GET /metrics`: Prometheus text format.
pub(super) async fn metrics() -> Response {
    let body = crate::telemetry::prometheus()
        .map(metrics_exporter_prometheus::PrometheusHandle::render)
        .unwrap_or_default();
    ([("content-type", "text/plain; version=0.0.4")], body).into_response()
}

/// The client's address: the TCP peer, unless the peer is a trusted proxy
/// (`limits.trusted_proxies`), in which case the nearest untrusted address
/// in `X-Forwarded-For` (proxies append, so the right end is the newest).
/// IPv4-mapped IPv6 addresses (a dual-stack listener's peers) count as the
/// IPv4 address, and a hop written with a port counts without it.
pub(super) fn client_ip(peer: SocketAddr, headers: &HeaderMap, trusted: &[IpAddr]) -> IpAddr {
    let is_trusted = |address: IpAddr| trusted.iter().any(|t| t.to_canonical() == address);
    let mut client = peer.ip().to_canonical();
    if !is_trusted(client) {
        return client;
    }
    let forwarded = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .collect::<Vec<_>>();
    for hop in forwarded.iter().rev() {
        match parse_hop(hop.trim()) {
            Some(address) => {
                client = address;
                if !is_trusted(address) {
                    break;
                }
            }
            // Garbage from an untrusted hop: stop at the last good one.
            None => break,
        }
    }
    client
}

/// One `X-Forwarded-For` entry: an address, optionally with a port
/// (`1.2.3.4:80`, `[2001:db8::1]:80`) or in brackets.
fn parse_hop(hop: &str) -> Option<IpAddr> {
    let address = hop
        .parse::<IpAddr>()
        .ok()
        .or_else(|| hop.parse::<SocketAddr>().ok().map(|socket| socket.ip()))
        .or_else(|| {
            hop.strip_prefix('[')
                .and_then(|rest| rest.strip_suffix(']'))
                .and_then(|inner| inner.parse().ok())
        })?;
    Some(address.to_canonical())
}

/// `POST /v1/accounts`
pub(super) async fn register(
    State(state): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Result<Json<RegisterRequest>, JsonRejection>,
) -> Result<(StatusCode, Json<RegisterResponse>), ServiceError> {
    let ip = client_ip(peer, &headers, &state.config.limits.trusted_proxies);
    let created = state.accounts.register(json_body(body)?, ip).await?;
    Ok((StatusCode::CREATED, Json(created)))
}

/// `GET /v1/registration`: how this server takes registrations, so a client
/// can offer an invite field or no sign-up at all.
pub(super) async fn registration(State(state): State<Arc<AppState>>) -> Json<RegistrationInfo> {
    Json(RegistrationInfo {
        mode: state.accounts.registration_mode().as_str().to_owned(),
    })
}

/// `POST /v1/sessions`: log in, creating a device and its token.
pub(super) async fn login(
    State(state): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Result<Json<LoginRequest>, JsonRejection>,
) -> Result<(StatusCode, Json<LoginResponse>), ServiceError> {
    let ip = client_ip(peer, &headers, &state.config.limits.trusted_proxies);
    let session = state.accounts.login(json_body(body)?, ip).await?;
    Ok((StatusCode::CREATED, Json(session)))
}

/// `DELETE /v1/sessions/current`: log out (revoke the calling device).
pub(super) async fn logout(
    State(state): State<Arc<AppState>>,
    Authenticated(auth): Authenticated,
) -> Result<StatusCode, ServiceError> {
    state.accounts.revoke(&auth, auth.device).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /v1/devices`
pub(super) async fn devices(
    State(state): State<Arc<AppState>>,
    Authenticated(auth): Authenticated,
) -> Result<Json<DeviceList>, ServiceError> {
    Ok(Json(state.accounts.devices(&auth).await?))
}

/// `DELETE /v1/devices/{device_id}`
/// `PATCH /v1/devices/{device_id}` `{"name": "..."}`: rename a device of mine.
pub(super) async fn rename_device(
    State(state): State<Arc<AppState>>,
    Authenticated(auth): Authenticated,
    Path(device_id): Path<String>,
    body: Result<Json<RenameDevice>, JsonRejection>,
) -> Result<Json<DeviceInfo>, ServiceError> {
    let device_id: i64 = device_id
        .parse()
        .map_err(|_| ServiceError::new(ErrorCode::InvalidField, "device id must be an integer"))?;
    let body = json_body(body)?;
    let renamed = state
        .accounts
        .rename_device(&auth, DeviceId(device_id), body.name)
        .await?;
    Ok(Json(renamed))
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RenameDevice {
    name: String,
}

pub(super) async fn revoke(
    State(state): State<Arc<AppState>>,
    Authenticated(auth): Authenticated,
    Path(device_id): Path<String>,
) -> Result<StatusCode, ServiceError> {
    let device_id: i64 = device_id
        .parse()
        .map_err(|_| ServiceError::new(ErrorCode::InvalidField, "device id must be an integer"))?;
    state.accounts.revoke(&auth, DeviceId(device_id)).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwarded_addresses_count_only_behind_trusted_proxies() {
        // Goal: X-Forwarded-For is ignored from untrusted peers; behind a
        // trusted proxy the nearest untrusted hop is the client, so a
        // client cannot forge its address by sending the header itself.
        let proxy: IpAddr = "10.0.0.5".parse().unwrap();
        let peer = SocketAddr::new(proxy, 40000);
        let mut headers = HeaderMap::new();
        headers.insert("x-forwarded-for", "1.2.3.4, 203.0.113.9".parse().unwrap());
        assert_eq!(client_ip(peer, &headers, &[]), proxy);
        let client: IpAddr = "203.0.113.9".parse().unwrap();
        assert_eq!(client_ip(peer, &headers, &[proxy]), client);
        // Two trusted proxies in a row: skip both.
        let inner: IpAddr = "10.0.0.6".parse().unwrap();
        headers.insert("x-forwarded-for", "198.51.100.1, 10.0.0.6".parse().unwrap());
        let expected: IpAddr = "198.51.100.1".parse().unwrap();
        assert_eq!(client_ip(peer, &headers, &[proxy, inner]), expected);
        // Garbage stops the walk at the last address that parsed.
        headers.insert("x-forwarded-for", "nonsense, 203.0.113.9".parse().unwrap());
        assert_eq!(client_ip(peer, &headers, &[proxy]), client);
        headers.remove("x-forwarded-for");
        assert_eq!(client_ip(peer, &headers, &[proxy]), proxy);
    }

    #[test]
    fn mapped_addresses_and_ports_are_the_plain_address() {
        // Goal: a dual-stack listener's peer `::ffff:10.0.0.5` is the
        // trusted proxy 10.0.0.5, and hops with ports or brackets parse.
        let proxy: IpAddr = "10.0.0.5".parse().unwrap();
        let mapped: IpAddr = "::ffff:10.0.0.5".parse().unwrap();
        let peer = SocketAddr::new(mapped, 40000);
        let mut headers = HeaderMap::new();
        headers.insert("x-forwarded-for", "203.0.113.9:5678".parse().unwrap());
        let client: IpAddr = "203.0.113.9".parse().unwrap();
        assert_eq!(client_ip(peer, &headers, &[proxy]), client);
        headers.insert("x-forwarded-for", "[2001:db8::1]:80".parse().unwrap());
        assert_eq!(
            client_ip(peer, &headers, &[proxy]),
            "2001:db8::1".parse::<IpAddr>().unwrap()
        );
        headers.insert("x-forwarded-for", "[2001:db8::2]".parse().unwrap());
        assert_eq!(
            client_ip(peer, &headers, &[proxy]),
            "2001:db8::2".parse::<IpAddr>().unwrap()
        );
        // Untrusted, a mapped peer is still its IPv4 address.
        assert_eq!(client_ip(peer, &headers, &[]), proxy);
    }
}
