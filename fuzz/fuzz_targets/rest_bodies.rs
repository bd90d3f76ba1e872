//! Every JSON request body the REST endpoints deserialize, through the same
//! function axum's `Json` extractor runs on the body bytes
//! (`Json::<T>::from_bytes`). The first input byte picks the body type
//! (modulo the number of types), the rest is the body. Checks: no panic; a
//! decoded body re-encodes and decodes again; the input parsers the
//! services apply next accept or refuse without panicking.
#![no_main]

use axum::Json;
use libfuzzer_sys::fuzz_target;
use missive_core::{Password, Username};
use missive_proto::rest::{
    AddMembersRequest, CreateGroupRequest, LoginRequest, PollRequest, Privacy, RegisterRequest,
    RenameGroupRequest, UsernameBody,
};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// Decodes `body` as `T` like the extractor; on success re-encodes and
/// decodes again, which must succeed.
fn decode<T: DeserializeOwned + Serialize>(body: &[u8]) -> Option<T> {
    let Json(value) = Json::<T>::from_bytes(body).ok()?;
    let encoded = serde_json::to_vec(&value).expect("a decoded body encodes");
    if let Err(err) = Json::<T>::from_bytes(&encoded) {
        panic!(
            "re-encoded body {} does not decode: {err}",
            String::from_utf8_lossy(&encoded)
        );
    }
    Some(value)
}

fn usernames(users: &[String]) {
    for user in users {
        let _ = Username::parse(user);
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    match selector % 9 {
        // POST /v1/accounts
        0 => {
            if let Some(request) = decode::<RegisterRequest>(body) {
                let _ = Username::parse(&request.username);
                let _ = Password::parse(&request.password);
            }
        }
        // POST /v1/sessions
        1 => {
            if let Some(request) = decode::<LoginRequest>(body) {
                let _ = Username::parse(&request.username);
                let _ = Password::parse(&request.password);
            }
        }
        // POST /v1/groups
        2 => {
            if let Some(request) = decode::<CreateGroupRequest>(body) {
                usernames(&request.members);
            }
        }
        // PATCH /v1/groups/{id}
        3 => {
            let _ = decode::<RenameGroupRequest>(body);
        }
        // POST /v1/groups/{id}/members
        4 => {
            if let Some(request) = decode::<AddMembersRequest>(body) {
                usernames(&request.members);
            }
        }
        // POST /v1/contacts, /v1/blocks, /v1/groups/{id}/admins
        5 => {
            if let Some(request) = decode::<UsernameBody>(body) {
                let _ = Username::parse(&request.username);
            }
        }
        // PUT /v1/privacy
        6 => {
            let _ = decode::<Privacy>(body);
        }
        // POST /v1/poll
        7 => {
            let _ = decode::<PollRequest>(body);
        }
        // POST /v1/frames: lossy UTF-8, then the frame decoder.
        _ => {
            let _ = missive_proto::decode_client_frame(&String::from_utf8_lossy(body));
        }
    }
});
