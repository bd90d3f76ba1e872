//! End-to-end encrypted conversations over the network (issue 22): how a
//! conversation becomes encrypted (a first encrypted message, a group
//! created so, or switching it on), that the server then takes only
//! ciphertext and hands it on untouched, that encrypted media is stored
//! unsniffed with no thumbnail, and the operator's `e2ee` policy.

#[path = "../common/mod.rs"]
mod common;

mod devices;
mod server;
mod store;

use common::*;
use missive_client::Recipient;
use missive_proto::rest::CreateGroupRequest;
use missive_proto::{ClientFrame, MessageKind, ServerFrame};
use missive_server::config::E2eePolicy;

/// Runs the CLI as `profile` and returns its stdout; panics unless it
/// exits 0.
fn cli_ok(config_dir: &std::path::Path, url: &str, profile: &str, args: &[&str]) -> String {
    let mut args = args.to_vec();
    args.extend(["--profile", profile]);
    let (code, stdout, stderr) = cli(config_dir, url, &args);
    assert_eq!(code, 0, "{args:?}: {stderr}");
    stdout
}
