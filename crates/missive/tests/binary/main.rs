//! Tests that spawn the built `missive` binary: crash durability under
//! `kill -9`, the CLI walkthrough with its exit codes, config errors.

#[path = "../common/mod.rs"]
mod common;

mod admin;
mod cli;
mod server;

use std::sync::{Arc, Mutex};

use common::*;
use missive_client::{Api, Connection};
use missive_proto::ServerFrame;
