//! What the server takes and hands on in an encrypted conversation, and the
//! operator's `e2ee` policy.

use super::*;
use missive_client::{Api, Connection};

/// An encrypted body as a client would send it.
const CIPHERTEXT: &str = "AwgAEiBhYmNkZWZnaGlqa2xtbm9wcXJzdHV2d3h5ejAxMjM0NQ+/=";

fn plain_send(
    conversation: i64,
    client_msg_id: &str,
) -> impl FnOnce(Option<String>) -> ClientFrame {
    let client_msg_id = client_msg_id.to_owned();
    move |id| ClientFrame::Send {
        id,
        to: None,
        conversation: Some(conversation),
        client_msg_id,
        text: "plain words".into(),
        reply_to: None,
        media: Vec::new(),
        encrypted: false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_encrypted_conversation_carries_only_ciphertext_untouched() {
    // Goal: a first encrypted message to a user creates an encrypted 1:1;
    // its ciphertext reaches the recipient byte for byte as kind
    // `encrypted`; the list says `encrypted`; plain sends and replies
    // beside the ciphertext are refused with their codes; media uploaded
    // encrypted is stored as opaque bytes (no sniffing, no thumbnail, no
    // filename) and only such media rides an encrypted message; a plain
    // 1:1 is switched on by either member (system event `encrypted`), a
    // group by an admin only, and a group may be created encrypted.
    let server = TestServer::start().await;
    let api = &server.api;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let carol = server.user("carol").await;
    let mut a = server.connect(&alice).await;
    let (conversation, mut b) =
        a_first_encrypted_message_opens_an_encrypted_one_to_one(&server, &mut a, &bob).await;
    plain_sends_and_replies_beside_ciphertext_are_refused(&mut a, conversation).await;
    encrypted_media_stays_opaque(&server, &alice, &mut a, &mut b, conversation).await;
    let _c = either_member_switches_a_one_to_one_on(&server, &bob, &carol).await;
    groups_are_created_encrypted_or_switched_on_by_an_admin(
        api,
        [&alice, &bob, &carol],
        &mut a,
        &mut b,
    )
    .await;
}

/// alice's first encrypted message to bob creates an encrypted 1:1 whose
/// ciphertext reaches bob byte for byte. Returns the conversation and
/// bob's connection.
async fn a_first_encrypted_message_opens_an_encrypted_one_to_one(
    server: &TestServer,
    a: &mut Connection,
    bob: &str,
) -> (i64, Connection) {
    let api = &server.api;
    let ciphertext = CIPHERTEXT;
    let sent = a
        .send_encrypted(Recipient::User("bob"), "e1", ciphertext, Vec::new())
        .await
        .expect("an encrypted first message");
    let ServerFrame::Sent { conversation, .. } = sent else {
        panic!("expected sent, got {sent:?}");
    };
    let mut b = server.connect(bob).await;
    match &queued(&mut b, 1).await[..] {
        [
            ServerFrame::Message {
                kind: MessageKind::Encrypted,
                text,
                ..
            },
        ] => assert_eq!(text, ciphertext),
        other => panic!("expected the ciphertext, got {other:?}"),
    }
    let listed = api.conversations(bob).await.expect("list");
    assert!(listed.conversations[0].encrypted);
    (conversation, b)
}

/// Plain sends, replies and control characters beside the ciphertext are
/// refused with their codes.
async fn plain_sends_and_replies_beside_ciphertext_are_refused(
    a: &mut Connection,
    conversation: i64,
) {
    let ciphertext = CIPHERTEXT;
    assert_eq!(
        refused_code(a.call(plain_send(conversation, "p1")).await),
        "conversation_encrypted"
    );
    let reply = a
        .call(|id| ClientFrame::Send {
            id,
            to: None,
            conversation: Some(conversation),
            client_msg_id: "e2".into(),
            text: ciphertext.into(),
            reply_to: Some("0000000000000000000000000000".into()),
            media: Vec::new(),
            encrypted: true,
        })
        .await;
    assert_eq!(refused_code(reply), "invalid_field");
    let control = a
        .send_encrypted(
            Recipient::Conversation(conversation),
            "e3",
            "not\u{7}ascii",
            Vec::new(),
        )
        .await;
    assert_eq!(refused_code(control), "invalid_field");
}

/// Media: encrypted bytes stay opaque, even when they look like a PNG, and
/// only such media rides an encrypted message.
async fn encrypted_media_stays_opaque(
    server: &TestServer,
    alice: &str,
    a: &mut Connection,
    b: &mut Connection,
    conversation: i64,
) {
    let api = &server.api;
    let ciphertext = CIPHERTEXT;
    let sealed = api
        .upload_encrypted_media(alice, png(8, 8))
        .await
        .expect("encrypted upload");
    assert_eq!(
        (sealed.content_type.as_str(), sealed.thumbnail),
        ("application/octet-stream", false)
    );
    let plain_media = api
        .upload_media(alice, png(8, 8))
        .await
        .expect("plain upload");
    let named = reqwest::Client::new()
        .post(format!(
            "{}/v1/media?encrypted=true&filename=a.txt",
            server.url()
        ))
        .bearer_auth(alice)
        .body(vec![1, 2, 3])
        .send()
        .await
        .expect("upload");
    assert_eq!(named.status(), 400, "a filename beside encrypted bytes");
    let refused = a
        .send_encrypted(
            Recipient::Conversation(conversation),
            "e4",
            ciphertext,
            vec![plain_media.media_id],
        )
        .await;
    assert_eq!(refused_code(refused), "unknown_media");
    a.send_encrypted(
        Recipient::Conversation(conversation),
        "e5",
        ciphertext,
        vec![sealed.media_id.clone()],
    )
    .await
    .expect("ciphertext with encrypted media");
    match &queued(b, 1).await[..] {
        [ServerFrame::Message { kind, media, .. }] => {
            assert_eq!(*kind, MessageKind::Encrypted);
            assert_eq!(media[0].media_id, sealed.media_id);
        }
        other => panic!("expected the ciphertext with media, got {other:?}"),
    }
}

/// A plain 1:1 is switched on by either member, for good. Returns carol's
/// connection.
async fn either_member_switches_a_one_to_one_on(
    server: &TestServer,
    bob: &str,
    carol: &str,
) -> Connection {
    let api = &server.api;
    let ciphertext = CIPHERTEXT;
    let mut c = server.connect(carol).await;
    let plain = c.send_text("bob", "c1", "hi bob").await.expect("plain");
    let ServerFrame::Sent {
        conversation: bc, ..
    } = plain
    else {
        panic!("expected sent");
    };
    assert_eq!(
        refused_code(
            c.send_encrypted(Recipient::Conversation(bc), "c2", ciphertext, Vec::new())
                .await
        ),
        "conversation_not_encrypted"
    );
    api.encrypt_conversation(bob, bc)
        .await
        .expect("bob turns it on");
    let on = queued(&mut c, 1).await;
    assert!(
        matches!(&on[..], [ServerFrame::Message { kind: MessageKind::System, event: Some(event), .. }]
            if event["action"] == "encrypted" && event["actor"] == "bob"),
        "{on:?}"
    );
    assert_eq!(
        refused_code(c.call(plain_send(bc, "c3")).await),
        "conversation_encrypted"
    );
    c.send_encrypted(Recipient::Conversation(bc), "c4", ciphertext, Vec::new())
        .await
        .expect("ciphertext once on");
    c
}

/// Groups: created encrypted, or switched on by an admin only.
async fn groups_are_created_encrypted_or_switched_on_by_an_admin(
    api: &Api,
    [alice, bob, carol]: [&str; 3],
    a: &mut Connection,
    b: &mut Connection,
) {
    let sealed_group = api
        .create_group_as(
            alice,
            &CreateGroupRequest {
                name: "sealed".into(),
                members: vec!["bob".into()],
                encrypted: Some(true),
            },
        )
        .await
        .expect("an encrypted group");
    assert!(sealed_group.encrypted);
    let open = api
        .create_group(alice, "open", &["bob"])
        .await
        .expect("a plain group");
    assert!(!open.encrypted);
    let by_member = b
        .call(|id| ClientFrame::Encrypt {
            id,
            conversation: open.conversation,
        })
        .await;
    assert_eq!(refused_code(by_member), "not_admin");
    assert_eq!(
        refused_code(api.encrypt_conversation(carol, open.conversation).await),
        "unknown_conversation"
    );
    let by_admin = a
        .call(|id| ClientFrame::Encrypt {
            id,
            conversation: open.conversation,
        })
        .await
        .expect("the admin turns it on");
    assert!(matches!(by_admin, ServerFrame::Ok { .. }));
    assert!(
        api.group(bob, open.conversation)
            .await
            .expect("info")
            .encrypted
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_policy_requires_or_forbids_encryption() {
    // Goal: under `e2ee = "required"` plaintext is refused everywhere
    // (`encryption_required`, nothing created) and a group is encrypted
    // unless it asks not to be, which is refused too; under `off`
    // ciphertext, encrypted groups and switching on are refused
    // (`encryption_disabled`) and plain messages flow.
    let required = TestServer::start_with(|config| config.e2ee = E2eePolicy::Required).await;
    let alice = required.user("alice").await;
    let bob = required.user("bob").await;
    let mut a = required.connect(&alice).await;
    assert_eq!(
        refused_code(a.send_text("bob", "p1", "plain").await),
        "encryption_required"
    );
    assert!(
        required
            .api
            .conversations(&bob)
            .await
            .expect("list")
            .conversations
            .is_empty(),
        "a refused send created nothing"
    );
    a.send_encrypted(Recipient::User("bob"), "e1", "AAAA", Vec::new())
        .await
        .expect("ciphertext");
    let group = required
        .api
        .create_group(&alice, "team", &["bob"])
        .await
        .expect("a group");
    assert!(group.encrypted, "encrypted by default");
    let plain_group = required
        .api
        .create_group_as(
            &alice,
            &CreateGroupRequest {
                name: "open".into(),
                members: Vec::new(),
                encrypted: Some(false),
            },
        )
        .await;
    assert_eq!(refused_code(plain_group), "encryption_required");

    let off = TestServer::start_with(|config| config.e2ee = E2eePolicy::Off).await;
    let alice = off.user("alice").await;
    off.user("bob").await;
    let mut a = off.connect(&alice).await;
    assert_eq!(
        refused_code(
            a.send_encrypted(Recipient::User("bob"), "e1", "AAAA", Vec::new())
                .await
        ),
        "encryption_disabled"
    );
    let plain = a.send_text("bob", "p1", "plain").await.expect("plain");
    let ServerFrame::Sent { conversation, .. } = plain else {
        panic!("expected sent");
    };
    assert_eq!(
        refused_code(off.api.encrypt_conversation(&alice, conversation).await),
        "encryption_disabled"
    );
    let sealed_group = off
        .api
        .create_group_as(
            &alice,
            &CreateGroupRequest {
                name: "sealed".into(),
                members: Vec::new(),
                encrypted: Some(true),
            },
        )
        .await;
    assert_eq!(refused_code(sealed_group), "encryption_disabled");
}
