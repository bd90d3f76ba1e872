//! What the property found, kept as plain tests.

use missive_client::Connection;
use missive_proto::{ClientFrame, ServerFrame};

use crate::common::*;
use crate::strategy::refused_send_to_victim;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_send_to_a_user_creates_no_conversation() {
    // Goal: regression (found by the property above): a `send {to}` refused
    // for its own fields (client_msg_id, text, reply_to, media) created the
    // empty 1:1 conversation first, which then showed in the recipient's
    // list. A refused request changes nothing.
    let server = TestServer::start().await;
    let victim = server.user("victim").await;
    let mallory = server.user("mallory").await;
    let mut hostile = server.connect(&mallory).await;
    for bad in 0..7 {
        let frame = refused_send_to_victim(Some(format!("r{bad}")), bad);
        hostile.send_frame(&frame).await.expect("send");
        let reply = loop {
            match hostile.next_frame(PROMPTLY).await.expect("reply") {
                ServerFrame::Error { id, code, .. } if id == Some(format!("r{bad}")) => break code,
                frame if is_delivery(&frame) => continue,
                other => panic!("send {bad} was not refused: {other:?}"),
            }
        };
        assert_ne!(reply.as_str(), "internal", "send {bad}");
    }
    // Refused by a block (decided from the store, not the frame): the
    // same, either way round.
    let blocker = server.user("blocker").await;
    server.api.block(&blocker, "mallory").await.expect("block");
    let refused = hostile.send_text("blocker", "b0", "hello").await;
    assert_eq!(refused_code(refused), "blocked");
    let mut blocking = server.connect(&blocker).await;
    let refused = blocking.send_text("mallory", "b1", "hello").await;
    assert_eq!(refused_code(refused), "blocked");
    let newcomer = refused_by_the_store(&server, &mut hostile, &victim).await;
    for token in [&victim, &blocker, &newcomer] {
        let list = server
            .api
            .conversations(token)
            .await
            .expect("conversations");
        assert!(list.conversations.is_empty(), "{list:?}");
    }
    let list = server.api.conversations(&mallory).await.expect("list");
    assert_eq!(
        list.conversations.len(),
        1,
        "only the one with friend: {list:?}"
    );
}
/// Refused for what the store checks against the conversation: a reply
/// to a message of another conversation, or media mallory did not upload.
/// The first message to `newcomer` must not create theirs; returns
/// newcomer's token.
async fn refused_by_the_store(
    server: &TestServer,
    hostile: &mut Connection,
    victim: &str,
) -> String {
    let newcomer = server.user("newcomer").await;
    server.user("friend").await;
    let elsewhere = match hostile.send_text("friend", "f0", "hi").await {
        Ok(ServerFrame::Sent { message_id, .. }) => message_id,
        other => panic!("expected sent, got {other:?}"),
    };
    let victims_media = server
        .api
        .upload_media(victim, b"%PDF-1.7 the victim's".to_vec())
        .await
        .expect("upload")
        .media_id;
    for (n, (reply_to, media, code)) in [
        (Some(elsewhere), Vec::new(), "unknown_message"),
        (None, vec![victims_media], "unknown_media"),
    ]
    .into_iter()
    .enumerate()
    {
        let refused = hostile
            .call(|id| ClientFrame::Send {
                id,
                to: Some("newcomer".into()),
                conversation: None,
                client_msg_id: format!("n{n}"),
                text: "hello".into(),
                reply_to,
                media,
                encrypted: false,
            })
            .await;
        assert_eq!(refused_code(refused), code);
    }
    newcomer
}
