//! Reading back: history pages, search and the conversation list.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_pages_both_ways_and_the_conversation_list_counts_unread() {
    // Goal: history pages newest-first with next_before and oldest-first
    // from a seq; the conversation list has last message, unread counts and
    // members, most recent first.
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    server.user("carol").await;
    let mut alice_ws = server.connect(&alice).await;
    let mut id = 0;
    for i in 1..=25 {
        id = sent_message(
            alice_ws
                .send_text("bob", &format!("m{i}"), &format!("text {i}"))
                .await
                .unwrap(),
        )
        .1;
    }
    history_pages_both_ways(&server, &bob, id).await;
    the_list_counts_unread_most_recent_first(&server, &alice, &bob, id).await;
}

/// Pages newest-first with next_before, oldest-first from a seq; bad
/// queries and outsiders are refused.
async fn history_pages_both_ways(server: &TestServer, bob: &str, id: i64) {
    let page = server.api.history(bob, id, "limit=10").await.unwrap();
    let page_seqs: Vec<_> = page.messages.iter().map(|m| m.seq).collect();
    assert_eq!(page_seqs, (16..=25).rev().collect::<Vec<_>>());
    assert_eq!(page.next_before, Some(16));
    let page = server
        .api
        .history(bob, id, "limit=10&before=16")
        .await
        .unwrap();
    assert_eq!(page.messages.first().map(|m| m.seq), Some(15));
    let page = server
        .api
        .history(bob, id, "limit=10&before=6")
        .await
        .unwrap();
    assert_eq!(page.messages.len(), 5);
    assert_eq!(page.next_before, None);
    let page = server.api.history(bob, id, "after=20").await.unwrap();
    let page_seqs: Vec<_> = page.messages.iter().map(|m| m.seq).collect();
    assert_eq!(page_seqs, [21, 22, 23, 24, 25]);
    assert_eq!(
        refused_code(server.api.history(bob, id, "after=1&before=5").await),
        "invalid_field"
    );
    assert_eq!(
        refused_code(server.api.history(bob, id, "limit=abc").await),
        "invalid_field"
    );
    // A page of nothing is a mistake, not a request for one message.
    assert_eq!(
        refused_code(server.api.history(bob, id, "limit=0").await),
        "invalid_field"
    );
    assert_eq!(
        refused_code(server.api.history(bob, 999, "").await),
        "unknown_conversation"
    );
    let carol = server.device("carol").await;
    assert_eq!(
        refused_code(server.api.history(&carol, id, "").await),
        "unknown_conversation"
    );
}

/// Bob reads up to 20 and writes: his list has the newer group first, and
/// the 1:1 with 5 unread and his text as its last message.
async fn the_list_counts_unread_most_recent_first(
    server: &TestServer,
    alice: &str,
    bob: &str,
    id: i64,
) {
    let group = server
        .api
        .create_group(alice, "later", &["bob"])
        .await
        .unwrap();
    let mut bob_ws = server.connect(bob).await;
    let read = ClientFrame::Read {
        id: Some("r".into()),
        conversation: id,
        seq: 20,
    };
    bob_ws.request(&read, "r").await.unwrap();
    // Bob's own text above his read pointer is not unread for him.
    bob_ws.send_to(id, "b1", "my own", None).await.unwrap();
    let list = server.api.conversations(bob).await.unwrap();
    let summary: Vec<_> = list
        .conversations
        .iter()
        .map(|c| (c.conversation, c.unread, c.members.clone()))
        .collect();
    assert_eq!(
        summary,
        [
            (
                group.conversation,
                0,
                vec!["alice".to_string(), "bob".to_string()]
            ),
            (id, 5, vec!["alice".to_string(), "bob".to_string()]),
        ]
    );
    let direct = &list.conversations[1];
    assert_eq!(
        direct.last_message.as_ref().map(|m| m.text.as_str()),
        Some("my own")
    );
    assert_eq!(list.conversations[0].name.as_deref(), Some("later"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_search_finds_texts_and_file_names_newest_first() {
    // Goal: `?q=` returns the member's visible texts containing the words
    // (any case, Unicode; or a file name they carry), newest first, with
    // `next_before` to go on; deleted texts, reactions and events before
    // the caller joined are not found; an empty q or one with `after` is
    // invalid_field; an outsider gets unknown_conversation.
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let carol = server.user("carol").await;
    let eve = server.user("eve").await;
    let id = server.group(&alice, "trip", &["bob"]).await;
    let mut alice_ws = server.connect(&alice).await;
    let (early, _, _) = sent_message(
        alice_ws
            .send_to(id, "s0", "Zürich before carol", None)
            .await
            .unwrap(),
    );
    server
        .api
        .add_members(&alice, id, &["carol"])
        .await
        .unwrap();
    let texts = [
        "Meet in ZÜRICH at 9",
        "no match here",
        "zürich again",
        "gone: zürich",
    ];
    let mut ids = Vec::new();
    for (n, text) in texts.iter().enumerate() {
        let (message, _, _) = sent_message(
            alice_ws
                .send_to(id, &format!("s{}", n + 1), text, None)
                .await
                .unwrap(),
        );
        ids.push(message);
    }
    sent_message(alice_ws.delete(id, "del", &ids[3]).await.unwrap());
    sent_message(alice_ws.react(id, "re", &ids[0], Some("👍")).await.unwrap());
    search_finds_what_each_member_may_see(&server, [&bob, &carol], id, &early).await;
    searches_page_and_bad_ones_are_refused(&server, [&bob, &eve], id).await;
}

/// carol finds the two visible texts after she joined, bob also the one
/// before; deleted texts and reactions are not found.
async fn search_finds_what_each_member_may_see(
    server: &TestServer,
    [bob, carol]: [&str; 2],
    id: i64,
    early: &str,
) {
    let found = server.api.search(carol, id, "zürich", None).await.unwrap();
    let found_texts: Vec<&str> = found.messages.iter().map(|m| m.text.as_str()).collect();
    assert_eq!(found_texts, ["zürich again", "Meet in ZÜRICH at 9"]);
    assert_eq!(
        found.next_before, None,
        "the whole visible history was searched"
    );
    let bob_found = server.api.search(bob, id, "ZÜRICH", None).await.unwrap();
    assert_eq!(
        bob_found.messages.len(),
        3,
        "bob was there for the first one"
    );
    assert_eq!(bob_found.messages[2].message_id, early);
    let older = server
        .api
        .search(bob, id, "zürich", Some(bob_found.messages[0].seq))
        .await
        .unwrap();
    assert_eq!(older.messages.len(), 2, "strictly below before");
}

async fn searches_page_and_bad_ones_are_refused(
    server: &TestServer,
    [bob, eve]: [&str; 2],
    id: i64,
) {
    let one = server
        .api
        .history(bob, id, "q=z%C3%BCrich&limit=1")
        .await
        .unwrap();
    assert_eq!(one.messages.len(), 1);
    assert_eq!(
        one.next_before,
        Some(one.messages[0].seq),
        "go on from there"
    );

    for query in ["q=", "q=%20%20", "q=x&after=1"] {
        assert_eq!(
            refused_code(server.api.history(bob, id, query).await),
            "invalid_field",
            "{query}"
        );
    }
    assert_eq!(
        refused_code(server.api.search(eve, id, "zürich", None).await),
        "unknown_conversation"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_conversation_list_comes_in_pages() {
    // Goal: `limit` pages the list, most recent activity first, each
    // conversation once across pages, with `next` until the last page; a
    // bad cursor or limit 0 is invalid_field.
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let mut alice_ws = server.connect(&alice).await;
    let mut expected = Vec::new();
    for n in 0..5 {
        let peer = format!("peer{n}");
        server.user(&peer).await;
        let (_, conversation, _) = sent_message(
            alice_ws
                .send_text(&peer, &format!("c{n}"), "hi")
                .await
                .unwrap(),
        );
        expected.push(conversation);
    }
    expected.reverse();
    let mut seen = Vec::new();
    let mut before: Option<String> = None;
    let mut pages = 0;
    loop {
        let page = server
            .api
            .conversations_page(&alice, before.as_deref(), Some(2))
            .await
            .unwrap();
        pages += 1;
        assert!(page.conversations.len() <= 2);
        seen.extend(page.conversations.iter().map(|c| c.conversation));
        match page.next {
            Some(next) => before = Some(next),
            None => break,
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(seen, expected, "newest first, each once");
    assert_eq!(
        server
            .api
            .conversations(&alice)
            .await
            .unwrap()
            .conversations
            .len(),
        5
    );
    for query in ["before=nonsense", "limit=0", "before=1.x"] {
        let answer = reqwest::Client::new()
            .get(format!("{}/v1/conversations?{query}", server.url()))
            .bearer_auth(&alice)
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 400, "{query}");
        let body: serde_json::Value = answer.json().await.unwrap();
        assert_eq!(body["error"]["code"], "invalid_field", "{query}");
    }
}
