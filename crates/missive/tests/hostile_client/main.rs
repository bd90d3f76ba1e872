//! A hostile client cannot touch another user's state (issue 8). Against
//! one real server, `mallory` sends random sequences of frames — every
//! frame kind, naming the victim's conversations, messages, media and
//! seqs, her own, and made-up ones; oversized and malformed fields; raw
//! garbage — over the WebSocket and over `/v1/frames`. After every sequence
//! the victim's state is byte-for-byte what it was: conversation list
//! (with its receipt cursors), histories, receipts, group, devices,
//! contacts, blocks, privacy, what waits for a device of the victim;
//! nothing new reached the victim's live connection; and no reply to
//! mallory describes a conversation of the victim's.
//!
//! The cases run in order on one server (each starts from where the last
//! one left mallory's own state). The seed is printed; set
//! `PROPTEST_RNG_SEED` to replay a failing run. Shrinking is off: a change
//! to the victim's state would persist across shrink attempts, so the
//! failing sequence is reported whole.
//!
//! `strategy` makes the sequences, `setup` the world they run against,
//! `case` runs one and compares; `regression` holds what it found.

#[path = "../common/mod.rs"]
mod common;

mod case;
mod regression;
mod setup;
mod strategy;

use std::collections::BTreeMap;
use std::sync::Mutex;

use common::*;
use proptest::test_runner::{Config as ProptestConfig, RngSeed, TestRunner};

const CASES: u32 = 32;

#[test]
fn a_hostile_client_never_changes_another_users_state() {
    // Goal: no sequence of frames from one user — valid kinds naming other
    // people's conversations, messages, media and seqs, oversized or
    // malformed fields, garbage — changes what another user has or sees.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let server = runtime.block_on(TestServer::start_with(|config| {
        // Rate limits would refuse most of the sequence before it reaches
        // the checks this test is about.
        config.limits.sends_per_sec_per_device = 0;
        config.limits.sends_per_sec_per_account = 0;
        // Its random group frames must reach the authorization checks,
        // not stop at the settings-change limit.
        config.limits.settings_changes_per_sec_per_account = 0;
    }));
    let (world, victim_live) = runtime.block_on(setup::world(&server));

    let seed = std::env::var("PROPTEST_RNG_SEED")
        .ok()
        .and_then(|seed| seed.parse().ok())
        .unwrap_or_else(rand_seed);
    eprintln!("hostile_client: seed {seed} (PROPTEST_RNG_SEED={seed} replays it)");
    let config = ProptestConfig {
        cases: CASES,
        max_shrink_iters: 0,
        failure_persistence: None,
        rng_seed: RngSeed::Fixed(seed),
        ..ProptestConfig::default()
    };
    let mallory_messages = Mutex::new(Vec::new());
    let refusals = Mutex::new(BTreeMap::new());
    let victim_live = Mutex::new(victim_live);
    let result = TestRunner::new(config).run(&strategy::sequence(), |sequence| {
        let mut live = victim_live.lock().unwrap();
        runtime.block_on(case::run_case(
            &server,
            &world,
            &mut live,
            &sequence,
            &mallory_messages,
            &refusals,
        ))
    });
    if let Err(failure) = result {
        panic!("seed {seed}: {failure}");
    }
    assert_got_past_decoding(
        &mallory_messages.into_inner().unwrap(),
        &refusals.into_inner().unwrap(),
    );
}

/// The sequences got past decoding: some were stored, some were refused
/// by the membership check itself.
fn assert_got_past_decoding(mallory_messages: &[String], refusals: &BTreeMap<String, usize>) {
    eprintln!(
        "hostile_client: {} sends stored; refusals by code: {refusals:?}",
        mallory_messages.len()
    );
    assert!(!mallory_messages.is_empty(), "nothing was stored");
    // Outsiders get unknown_conversation, the removed not_member.
    assert!(
        refusals.contains_key("not_member") || refusals.contains_key("unknown_conversation"),
        "{refusals:?}"
    );
}

/// A seed from the OS's per-process hash keys (no extra dependency).
fn rand_seed() -> u64 {
    use std::hash::{BuildHasher, RandomState};
    RandomState::new().hash_one(std::process::id())
}
