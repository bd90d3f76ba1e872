//! Group roles: a removed member loses access at once, only admins manage.

use missive_proto::{ClientFrame, ServerFrame, TypingState};
use reqwest::Method;

use crate::common::*;
use crate::support::*;
use crate::table::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_member_loses_access_at_once() {
    // Goal: the moment alice removes mallory from a group, mallory can no
    // longer send, react, edit or delete (even her own messages), type,
    // mark read, see history, receipts or the group, download its media or
    // thumbnails, or leave it; nothing sent later reaches her, no receipt
    // for her earlier message reaches her, and typing is no longer relayed
    // to her either way — even though the relay targets were cached while
    // she was a member.
    // Method: everything is first shown to work while she is a member (so
    // each refusal below is a real change), then she is removed and every
    // attempt is made over both transports; bob's connection proves
    // delivery still works for members.
    let mut world = World::new().await;
    let team = team_with_mallory(&mut world).await;
    fill_relay_caches(&mut world, team.group).await;
    let removed_seq = remove_mallory(&mut world, team.group).await;
    refuse_the_removed(&mut world, &team).await;
    let after_seq = members_go_on(&mut world, team.group).await;
    acks_up_to_the_removal(&mut world, team.group, removed_seq, after_seq).await;
    assert_nothing_stored_for_mallory(&world, &team).await;
}

/// Alice's group "team" with bob and mallory, and what is in it.
struct Team {
    group: i64,
    /// Alice's photo message.
    photo: String,
    /// Mallory's own text.
    own: String,
    /// The photo's bytes and thumbnail.
    media_paths: [String; 2],
}

/// The group, alice's photo and mallory's text in it; mallory may
/// download the photo and its thumbnail while a member.
async fn team_with_mallory(world: &mut World) -> Team {
    let api = &world.server.api;
    let group = world.group(&world.alice, "team", &["bob", "mallory"]).await;
    let upload = api
        .upload_media(&world.alice, png(64, 48))
        .await
        .expect("upload");
    let photo = ClientFrame::Send {
        id: Some("photo".into()),
        to: None,
        conversation: Some(group),
        client_msg_id: "photo".into(),
        text: "look".into(),
        reply_to: None,
        media: vec![upload.media_id.clone()],
        encrypted: false,
    };
    let (photo, _, _) = sent_message(world.alice_ws.request(&photo, "photo").await.expect("send"));
    let sent = world.mallory_ws.send_to(group, "m-own", "mine", None);
    let (own, _, _) = sent_message(sent.await.expect("send"));
    // created, photo, mallory's text
    queued(&mut world.bob_ws, 3).await;
    queued(&mut world.mallory_ws, 2).await;
    let media_paths = [
        format!("/v1/media/{}", upload.media_id),
        format!("/v1/media/{}/thumbnail", upload.media_id),
    ];
    for path in &media_paths {
        let answer = get(&world.server, &world.mallory, path).await;
        assert_eq!(answer.0, 200, "a member may download {path}");
    }
    Team {
        group,
        photo,
        own,
        media_paths,
    }
}

/// Fills the typing relay caches every way while mallory is a member.
async fn fill_relay_caches(world: &mut World, group: i64) {
    let start = TypingState::Start;
    world
        .types("alice", group, start, &["bob", "mallory"])
        .await;
    world
        .types("mallory", group, start, &["alice", "bob"])
        .await;
    // Bob's typing filled his cache too; drain it everywhere.
    let stop = TypingState::Stop;
    world.types("bob", group, stop, &["alice", "mallory"]).await;
}

/// Alice removes mallory, who is told; the seq of that event.
async fn remove_mallory(world: &mut World, group: i64) -> i64 {
    world
        .server
        .api
        .remove_member(&world.alice, group, "mallory")
        .await
        .expect("remove");
    let removed = queued(&mut world.mallory_ws, 1).await;
    assert!(
        matches!(&removed[0], ServerFrame::Message { event: Some(event), .. } if event["action"] == "removed"),
        "{removed:?}"
    );
    queued(&mut world.bob_ws, 1).await;
    removed[0].ack_point().expect("an event").1
}

/// Every action on the group is `not_member` now (acks apart: a removed
/// member may still ack what she was sent), its media `unknown_media`.
async fn refuse_the_removed(world: &mut World, team: &Team) {
    let not_an_ack = |action: &Action| !action.is_ack();
    let actions = conversation_actions(team.group, &team.photo, "gone")
        .into_iter()
        .filter(not_an_ack);
    let mut table = rows(Who::Mallory, actions, "not_member");
    let own = message_actions(team.group, &team.own, "💩", "gone-own");
    table.extend(rows(Who::Mallory, own, "not_member"));
    let media = team
        .media_paths
        .iter()
        .map(|path| Action::rest(Method::GET, path, None));
    table.extend(rows(Who::Mallory, media, "unknown_media"));
    world.refuse(table).await;
}

/// Members go on (typing, a message, bob's ack and read); the seq of the
/// new message.
async fn members_go_on(world: &mut World, group: i64) -> i64 {
    world
        .types("alice", group, TypingState::Start, &["bob"])
        .await;
    world
        .alice_ws
        .send_to(group, "after", "after she left", None)
        .await
        .expect("send");
    let after = queued(&mut world.bob_ws, 1).await;
    // Bob receives, acks and reads mallory's earlier text: no receipt may
    // reach her now.
    ack_received(&mut world.bob_ws, &after).await;
    let read = ClientFrame::Read {
        id: Some("rd".into()),
        conversation: group,
        seq: 100,
    };
    world.bob_ws.request(&read, "rd").await.expect("read");
    after[0].ack_point().expect("an event").1
}

/// She may ack what she was sent, up to the event of her removal, and
/// nothing beyond it; nothing reached her in either direction.
async fn acks_up_to_the_removal(world: &mut World, group: i64, removed: i64, after: i64) {
    assert!(after > removed);
    assert_eq!(
        world.mallory_ws.ack(group, removed).await.expect("ack"),
        removed
    );
    let beyond = ack(group, after, "beyond");
    world
        .refuse(rows(Who::Mallory, [beyond], "invalid_field"))
        .await;
    assert_nothing_queued(&mut world.mallory_ws).await;
    assert_no_ephemeral(&mut world.mallory_ws).await;
}

/// Nothing of mallory's was stored after her removal, nothing was
/// reacted, edited or deleted, and the group left her list.
async fn assert_nothing_stored_for_mallory(world: &World, team: &Team) {
    let api = &world.server.api;
    let history = api
        .history(&world.alice, team.group, "")
        .await
        .expect("history");
    assert!(
        history
            .messages
            .iter()
            .all(|m| m.from != "mallory" || m.message_id == team.own || m.event.is_some()),
        "nothing of mallory's after her removal: {history:?}"
    );
    assert!(
        history
            .messages
            .iter()
            .all(|m| m.reactions.is_empty() && m.edited_ms.is_none() && !m.deleted),
        "{history:?}"
    );
    let list = api.conversations(&world.mallory).await.expect("list");
    assert!(
        list.conversations
            .iter()
            .all(|c| c.conversation != team.group),
        "a former group is not listed: {list:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_admins_manage_a_group() {
    // Goal: a plain member can read and write but not rename, add, remove,
    // promote (not even themself) or demote (`not_admin`, over REST and
    // frames), and nobody hears of the attempts; being admin of one group
    // gives no rights in another; a demoted admin loses the rights at once.
    // Method: alice admin, bob member, carol outside; then alice promotes
    // bob (so bob's later success shows the refusals were about his role)
    // and demotes him again.
    let mut world = World::new().await;
    let carol = world.server.user("carol").await;
    let mut carol_ws = world.server.connect(&carol).await;
    let group = world.group(&world.alice, "club", &["bob"]).await;
    let bobs = world.group(&world.bob, "bob's own", &["alice"]).await;
    queued(&mut world.bob_ws, 1).await;
    queued(&mut world.alice_ws, 1).await;
    let api = &world.server.api;
    let before = api.group(&world.alice, group).await.expect("group");

    let bobs_change = GroupChange {
        name: "bob's club",
        add: "carol",
        remove: "alice",
        promote: "bob",
        demote: "alice",
    };
    let attempts = group_actions(group, "bob", &bobs_change);
    world.refuse(rows(Who::Bob, attempts, "not_admin")).await;
    world.assert_members_undisturbed().await;
    assert_nothing_queued(&mut carol_ws).await;
    let api = &world.server.api;
    assert_eq!(api.group(&world.alice, group).await.expect("group"), before);
    let carols = api.conversations(&carol).await.expect("list");
    assert!(carols.conversations.is_empty());

    // Admin of "bob's own" (where he may add carol) is no admin of "club".
    api.add_members(&world.bob, bobs, &["carol"])
        .await
        .expect("an admin may add");
    queued(&mut carol_ws, 1).await;
    assert_eq!(
        refused_code(api.add_members(&world.bob, group, &["carol"]).await),
        "not_admin"
    );
    // Promoted, bob may; demoted again, at once he may not.
    api.promote(&world.alice, group, "bob")
        .await
        .expect("promote");
    api.rename_group(&world.bob, group, "bob's club")
        .await
        .expect("an admin may rename");
    api.demote(&world.alice, group, "bob")
        .await
        .expect("demote");
    // Frames only: with REST as well, the attempts would pass the
    // per-account limit on settings changes (`rate_limited`).
    let attempts = group_actions(group, "demoted", &bobs_change)
        .into_iter()
        .map(Action::frame_only);
    world.refuse(rows(Who::Bob, attempts, "not_admin")).await;
    assert_nothing_queued(&mut carol_ws).await;
}
