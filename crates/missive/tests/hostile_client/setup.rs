//! The world every case starts from: the victim's conversations (with
//! media, replies, a reaction, an edit, receipts), mallory's own, and the
//! pools mallory names things from.

use missive_client::Connection;
use missive_proto::{ClientFrame, ServerFrame};

use crate::case::{Victim, World, victim_state};
use crate::common::*;
use crate::strategy::{OVERSIZED_TEXT, Pools};

fn sent(frame: ServerFrame) -> (i64, String) {
    match frame {
        ServerFrame::Sent {
            conversation,
            message_id,
            ..
        } => (conversation, message_id),
        other => panic!("expected sent, got {other:?}"),
    }
}

/// What the victim has: a 1:1 with carol and a group with her.
struct Victims {
    direct: i64,
    group: i64,
    /// The victim's text (with media) in the 1:1.
    first: String,
    /// The victim's text in the group (reacted to by carol, edited).
    second: String,
    /// Carol's reply to `first`.
    reply: String,
    media_id: String,
}

/// Mallory's own: a group with carol, a 1:1 with her and her text in it.
struct Mallorys {
    group: i64,
    direct: i64,
    message: String,
}

/// The users, the victim's and mallory's conversations, the victim's live
/// device with its backlog read, and her state as it must stay.
pub(crate) async fn world(server: &TestServer) -> (World, Connection) {
    let victim_token = server.user("victim").await;
    let dormant_token = server.device("victim").await;
    let carol_token = server.user("carol").await;
    let mallory_token = server.user("mallory").await;
    let victims = victims_chats(server, &victim_token, &carol_token).await;
    let mallorys = mallorys_chats(server, &mallory_token).await;
    let victim_live = live_victim(server, &victim_token).await;
    let pools = pools(&victims, mallorys);
    let victim = Victim {
        token: victim_token,
        dormant_token,
        group: victims.group,
        conversations: vec![victims.direct, victims.group],
        messages: vec![
            (victims.direct, victims.first),
            (victims.group, victims.second),
            (victims.direct, victims.reply),
        ],
    };
    // The dormant device's first poll records its last-seen; from
    // then on reading the state leaves it as it is.
    victim_state(server, &victim).await;
    let before = victim_state(server, &victim).await;
    assert_eq!(
        before,
        victim_state(server, &victim).await,
        "reading the victim's state changes it"
    );
    let world = World {
        victim,
        mallory: mallory_token,
        pools,
        before,
    };
    (world, victim_live)
}

/// The victim's world: a 1:1 with carol (with media), a group with
/// carol; replies, a reaction, an edit, receipts.
async fn victims_chats(server: &TestServer, victim_token: &str, carol_token: &str) -> Victims {
    let mut victim = server.connect(victim_token).await;
    let mut carol = server.connect(carol_token).await;
    let media = server
        .api
        .upload_media(victim_token, png(4, 4))
        .await
        .expect("upload");
    let (direct, first) = sent(
        victim
            .call(|id| ClientFrame::Send {
                id,
                to: Some("carol".into()),
                conversation: None,
                client_msg_id: "v-1".into(),
                text: "hi carol".into(),
                reply_to: None,
                media: vec![media.media_id.clone()],
                encrypted: false,
            })
            .await
            .expect("send"),
    );
    let group = server.group(victim_token, "private", &["carol"]).await;
    let sent_second = victim.send_to(group, "v-2", "group hello", None).await;
    let (_, second) = sent(sent_second.expect("send"));
    let sent_reply = carol
        .send_to(direct, "c-1", "hi victim", Some(&first))
        .await;
    let (_, reply) = sent(sent_reply.expect("send"));
    carol
        .react(group, "c-2", &second, Some("👍"))
        .await
        .expect("react");
    victim
        .edit(group, "v-3", &second, "group hello!")
        .await
        .expect("edit");
    carol_acks_and_reads(server, &mut carol, carol_token, direct).await;
    carol.close().await;
    victim.close().await;
    Victims {
        direct,
        group,
        first,
        second,
        reply,
        media_id: media.media_id,
    }
}

/// Carol acks both conversations to their end (the victim's delivered
/// ticks move) and reads the 1:1 up to seq 2.
async fn carol_acks_and_reads(
    server: &TestServer,
    carol: &mut Connection,
    carol_token: &str,
    direct: i64,
) {
    let carol_list = server
        .api
        .conversations(carol_token)
        .await
        .expect("conversations");
    for summary in &carol_list.conversations {
        let position = carol
            .ack(summary.conversation, summary.last_seq)
            .await
            .expect("ack");
        assert_eq!(position, summary.last_seq);
    }
    carol
        .call(|id| ClientFrame::Read {
            id,
            conversation: direct,
            seq: 2,
        })
        .await
        .expect("read");
}

/// Mallory's own world: a group with carol and a 1:1 with her.
async fn mallorys_chats(server: &TestServer, mallory_token: &str) -> Mallorys {
    let group = server.group(mallory_token, "mine", &["carol"]).await;
    let mut hostile = server.connect(mallory_token).await;
    let (direct, message) = sent(
        hostile
            .send_text("carol", "m-0", "hello carol")
            .await
            .expect("send"),
    );
    hostile.close().await;
    Mallorys {
        group,
        direct,
        message,
    }
}

/// The victim's live device, with its backlog read: from here on nothing
/// may arrive on it.
async fn live_victim(server: &TestServer, victim_token: &str) -> Connection {
    let backlog = server
        .api
        .poll(victim_token, &[], 0)
        .await
        .expect("poll")
        .frames
        .iter()
        .filter(|frame| is_delivery(frame))
        .count();
    assert!(backlog > 0, "carol's messages wait for the victim");
    let mut victim_live = server.connect(victim_token).await;
    queued(&mut victim_live, backlog).await;
    assert_nothing_queued(&mut victim_live).await;
    victim_live
}

/// What mallory names: the victim's things, her own, and made-up ones.
fn pools(victims: &Victims, mallorys: Mallorys) -> Pools {
    let Victims {
        direct,
        group,
        first,
        second,
        reply,
        media_id,
    } = victims;
    let (direct, group) = (*direct, *group);
    let (mallory_group, mallory_direct, mallory_message) =
        (mallorys.group, mallorys.direct, mallorys.message);
    let uppercase = first.to_uppercase();
    Pools {
        conversations: vec![
            direct,
            group,
            mallory_group,
            mallory_direct,
            0,
            -1,
            group + 1000,
            i64::MAX,
            i64::MIN,
        ],
        victim_conversations: vec![direct, group],
        message_ids: vec![
            first.clone(),
            second.clone(),
            reply.clone(),
            uppercase,
            mallory_message,
            "01890000-0000-7000-8000-000000000000".into(),
            String::new(),
            "not-a-message-id".into(),
            "x".repeat(5000),
        ],
        media_ids: vec![
            media_id.clone(),
            "0123456789abcdef0123456789abcdef".into(),
            "../../etc/passwd".into(),
            String::new(),
        ],
        recipients: vec![
            "carol".into(),
            "mallory".into(),
            "nobody_here".into(),
            "VICTIM".into(),
            "victim\0".into(),
            " victim".into(),
            String::new(),
            "v".repeat(5000),
        ],
        targets: vec![
            "victim".into(),
            "carol".into(),
            "mallory".into(),
            "nobody_here".into(),
            String::new(),
        ],
        client_msg_ids: vec![
            "m-1".into(),
            "m-2".into(),
            "v-1".into(),
            "c-1".into(),
            String::new(),
            "with space".into(),
            "k".repeat(65),
        ],
        texts: vec![
            "hello".into(),
            "hello again".into(),
            String::new(),
            "   ".into(),
            "nul\0byte".into(),
            "t".repeat(OVERSIZED_TEXT),
        ],
        seqs: vec![0, 1, 2, -1, i64::MAX, i64::MIN, 1 << 40],
    }
}
