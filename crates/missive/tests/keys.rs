//! End-to-end encryption keys over REST (issue 22, the key directory):
//! uploads checked for form, identity keys fixed per device, one-time keys
//! claimed once each under concurrent claims, blocks and revocations
//! respected, claims rate-limited; every refusal typed and changing
//! nothing.

mod common;

use common::*;
use missive_proto::ServerFrame;
use missive_proto::rest::{IdentityKeysBody, KeyUploadRequest, OneTimeKeyBody};

/// A well-formed public key: 43 characters of unpadded base64.
fn public_key(seed: &str) -> String {
    format!("{seed:A<43}")
}

fn signature(seed: &str) -> String {
    format!("{seed:B<86}")
}

fn identity(seed: &str) -> IdentityKeysBody {
    IdentityKeysBody {
        curve25519: public_key(&format!("c{seed}")),
        ed25519: public_key(&format!("e{seed}")),
    }
}

fn one_time_keys(prefix: &str, n: usize) -> Vec<OneTimeKeyBody> {
    (0..n)
        .map(|i| OneTimeKeyBody {
            key_id: format!("{prefix}{i:04}"),
            key: public_key(&format!("{prefix}{i}")),
            signature: signature(&format!("{prefix}{i}")),
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_are_published_claimed_once_and_gone_with_their_device() {
    // Goal: a device publishes identity keys and one-time keys; others
    // read the identity keys and claim one-time keys, none handed out
    // twice when ten claims race for five keys; other identity keys for
    // the same device, malformed keys and oversized uploads are refused
    // with their codes and store nothing; a block stops claims both ways;
    // a revoked device's keys are gone; claims past the budget are
    // rate-limited; a connected device is told when claims leave it few
    // keys.
    let server = TestServer::start_with(|config| {
        config.limits.key_claims_per_sec_per_account = 1;
        config.limits.key_claim_burst_per_account = 14;
    })
    .await;
    let api = &server.api;
    let alice = server.user("alice").await;
    let alice_other = server.device("alice").await;
    let bob = server.user("bob").await;
    let carol = server.user("carol").await;

    // Refusals first: nothing is stored by any of them.
    let no_identity = KeyUploadRequest {
        identity: None,
        one_time_keys: one_time_keys("a", 1),
    };
    assert_eq!(
        refused_code(api.upload_keys(&alice, &no_identity).await),
        "invalid_field"
    );
    let mut short = one_time_keys("a", 1);
    short[0].key.pop();
    let malformed = [
        KeyUploadRequest {
            identity: Some(IdentityKeysBody {
                curve25519: "not base64!".into(),
                ed25519: public_key("e"),
            }),
            one_time_keys: Vec::new(),
        },
        KeyUploadRequest {
            identity: Some(identity("a")),
            one_time_keys: short,
        },
        KeyUploadRequest {
            identity: Some(identity("a")),
            one_time_keys: one_time_keys("a", 101),
        },
    ];
    for upload in &malformed {
        assert_eq!(
            refused_code(api.upload_keys(&alice, upload).await),
            "invalid_field"
        );
    }
    assert_eq!(api.key_count(&alice).await.unwrap().one_time_keys, 0);
    assert!(
        api.user_keys(&bob, "alice")
            .await
            .unwrap()
            .devices
            .is_empty()
    );

    let first = KeyUploadRequest {
        identity: Some(identity("a")),
        one_time_keys: one_time_keys("a", 5),
    };
    assert_eq!(
        api.upload_keys(&alice, &first).await.unwrap().one_time_keys,
        5
    );
    // A retried upload adds nothing; other identity keys are refused.
    assert_eq!(
        api.upload_keys(&alice, &first).await.unwrap().one_time_keys,
        5
    );
    let other_identity = KeyUploadRequest {
        identity: Some(identity("x")),
        one_time_keys: one_time_keys("b", 1),
    };
    assert_eq!(
        refused_code(api.upload_keys(&alice, &other_identity).await),
        "identity_key_mismatch"
    );
    assert_eq!(api.key_count(&alice).await.unwrap().one_time_keys, 5);
    // Past the 200 a device may hold: limit_exceeded, nothing added.
    let more = KeyUploadRequest {
        identity: None,
        one_time_keys: one_time_keys("m", 100),
    };
    assert_eq!(
        api.upload_keys(&alice, &more).await.unwrap().one_time_keys,
        105
    );
    let too_many = KeyUploadRequest {
        identity: None,
        one_time_keys: one_time_keys("z", 96),
    };
    assert_eq!(
        refused_code(api.upload_keys(&alice, &too_many).await),
        "limit_exceeded"
    );
    assert_eq!(api.key_count(&alice).await.unwrap().one_time_keys, 105);

    // Only the device that published keys is listed.
    let listed = api.user_keys(&bob, "alice").await.unwrap();
    assert_eq!(listed.devices.len(), 1);
    assert_eq!(listed.devices[0].curve25519, identity("a").curve25519);
    assert_eq!(listed.devices[0].ed25519, identity("a").ed25519);

    // Carol's device publishes five keys; ten claims race for them.
    let carol_keys = KeyUploadRequest {
        identity: Some(identity("c")),
        one_time_keys: one_time_keys("c", 5),
    };
    api.upload_keys(&carol, &carol_keys).await.unwrap();
    // Carol's device is connected: each claim that leaves her fewer than
    // 20 keys tells it how many are left.
    let mut carol_live = server.connect(&carol).await;
    let claims = (0..10).map(|_| {
        let api = api.clone();
        let bob = bob.clone();
        tokio::spawn(async move { api.claim_keys(&bob, "carol").await })
    });
    let mut handed_out = Vec::new();
    for claim in claims {
        let claim = claim.await.unwrap().unwrap();
        assert_eq!(claim.devices.len(), 1);
        handed_out.extend(claim.devices[0].one_time_key.clone().map(|key| key.key_id));
    }
    handed_out.sort();
    let count = handed_out.len();
    handed_out.dedup();
    assert_eq!(
        (count, handed_out.len()),
        (5, 5),
        "each key once, all of them"
    );
    assert_eq!(api.key_count(&carol).await.unwrap().one_time_keys, 0);
    let mut told = Vec::new();
    while told.len() < 5 {
        if let ServerFrame::KeysLow { one_time_keys } =
            carol_live.next_frame(PROMPTLY).await.expect("frame")
        {
            told.push(one_time_keys);
        }
    }
    told.sort_unstable();
    assert_eq!(told, [0, 1, 2, 3, 4]);
    assert_no_ephemeral(&mut carol_live).await;

    // Blocked either way: no claim.
    api.block(&carol, "bob").await.unwrap();
    assert_eq!(refused_code(api.claim_keys(&bob, "carol").await), "blocked");
    assert_eq!(refused_code(api.claim_keys(&carol, "bob").await), "blocked");
    assert_eq!(
        refused_code(api.claim_keys(&bob, "nobody").await),
        "unknown_user"
    );

    // A revoked device's keys go with it.
    let devices = api.devices(&alice_other).await.unwrap();
    let published = listed.devices[0].device_id;
    assert!(
        devices
            .devices
            .iter()
            .any(|device| device.device_id == published)
    );
    api.revoke(&alice_other, published).await.unwrap();
    assert!(
        api.user_keys(&bob, "alice")
            .await
            .unwrap()
            .devices
            .is_empty()
    );
    let claim = api.claim_keys(&bob, "alice").await.unwrap();
    assert!(claim.devices.is_empty());

    // Bob has made 13 claims (refused ones count too: the budget is
    // checked first); a budget of 14 at 1/s runs out within a few more.
    let mut limited = false;
    for _ in 0..5 {
        match api.claim_keys(&bob, "alice").await {
            Ok(_) => continue,
            Err(err) => {
                assert_eq!(refused_code(Err::<(), _>(err)), "rate_limited");
                limited = true;
                break;
            }
        }
    }
    assert!(limited, "claims past the budget are refused");
}
