//! Authorization, black-box through the public protocol (issue 8): for
//! every client frame and every REST endpoint, an outsider (mallory) tries
//! it against a conversation, message, media object, group or device that
//! is not hers. Each attempt must be refused with its typed code, over the
//! WebSocket and over `/v1/frames` alike, and must change nothing for the
//! members: no frame reaches their devices (checked with ping round trips,
//! never sleeps), and their history, receipts, conversation list and group
//! are exactly as before.
//!
//! Most attempts are rows of a table ([`table::Row`]: who, what, expected
//! code) run by one helper ([`support::World::refuse`]) over every
//! transport the action exists on: the WebSocket, long-poll (`/v1/frames`,
//! and `/v1/poll` for acks) and REST.

#[path = "../common/mod.rs"]
mod common;

mod blocks;
mod devices;
mod groups;
mod log;
mod media;
mod outsiders;
mod sender;
mod support;
mod table;
mod tokens;
