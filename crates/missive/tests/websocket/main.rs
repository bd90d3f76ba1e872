//! The delivery model over real WebSockets against an in-process server.

#[path = "../common/mod.rs"]
mod common;

mod acks;
mod connections;
mod delivery;

use common::*;
use missive_proto::{ClientFrame, ServerFrame};
