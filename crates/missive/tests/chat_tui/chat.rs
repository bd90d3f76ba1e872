//! Plain chats on the screen: two users, a group of three, texts typed
//! offline, a resize and a refusal.

use super::*;

#[test]
fn two_users_chat_both_ways_and_see_their_ticks_change() {
    // Goal: a 1:1 chat started by username works both ways, and the
    // sender's ticks go sent → delivered (the other device connected) →
    // read (the other user opened the chat); typing shows on the other
    // side; the help screen lists the keys; q quits.
    let Some(tmux) = Tmux::new() else { return };
    let (_data, config, server) = server_with_accounts(&["alice", "bob"]);

    tmux.chat(config.path(), "alice", 100, 30);
    tmux.wait_for_text("alice", "online as alice");
    tmux.keys("alice", &["n"]);
    tmux.type_text("alice", "bob");
    tmux.keys("alice", &["Enter"]);
    tmux.type_text("alice", "hello bob");
    tmux.keys("alice", &["Enter"]);
    tmux.wait_for_mark("alice", "hello bob", "✓");

    tmux.chat(config.path(), "bob", 100, 30);
    tmux.wait_for_text("bob", "(1)");
    tmux.wait_for("bob", "alice online in the list", |screen| {
        line_with(screen, "alice").is_some_and(|entry| entry.starts_with("│● alice"))
    });
    tmux.wait_for_mark("alice", "hello bob", "✓✓");

    tmux.keys("bob", &["Enter"]);
    tmux.wait_for_text("bob", "hello bob");
    tmux.wait_for_mark("alice", "hello bob", "✔✔");

    tmux.type_text("bob", "hi");
    tmux.wait_for_text("alice", "bob is typing…");
    tmux.type_text("bob", " alice");
    tmux.keys("bob", &["M-Enter"]);
    tmux.type_text("bob", "second line");
    tmux.keys("bob", &["Enter"]);
    // One text of two lines, and typing ends with the send.
    tmux.wait_for("alice", "bob's text of two lines", |screen| {
        let lines = conversation_lines(screen);
        let first = lines.iter().position(|l| l.contains("hi alice"));
        first.is_some_and(|at| lines.get(at + 1).is_some_and(|l| l.contains("second line")))
            && !screen.contains("typing…")
    });
    tmux.wait_for_mark("bob", "second line", "✔✔");

    // Every burst above was read on the one connection each app opened:
    // nothing made either reconnect.
    let connects = tokio::runtime::Runtime::new().unwrap().block_on(metric(
        &server.url,
        "missive_connect_seconds_count{step=\"ready\"}",
    ));
    assert_eq!(connects, 2.0, "one connection per app");

    tmux.keys("alice", &["Tab", "?"]);
    tmux.wait_for("alice", "the help screen", |s| {
        s.contains("Keys") && s.contains("reply, edit, delete")
    });
    tmux.keys("alice", &["Escape"]);
    tmux.wait_for("alice", "the help screen closed", |s| !s.contains(" Keys "));
    tmux.keys("alice", &["C-c"]);
    tmux.wait_for_exit("alice", "Ctrl-C");
    assert_eq!(
        history_texts(config.path(), &server.url, "bob", "alice"),
        vec!["hello bob", "hi alice\nsecond line"]
    );
}

#[test]
fn a_group_of_three_with_replies_reactions_edits_and_deletes() {
    // Goal: a group made in the app reaches its members; their texts show
    // under their names; a reply quotes, a reaction, an edit and a delete
    // made on a selected message reach the server as such.
    let Some(tmux) = Tmux::new() else { return };
    let (_data, config, server) = server_with_accounts(&["alice", "bob", "carol"]);
    let url = server.url.as_str();

    alice_makes_the_group_and_says_hello(&tmux, config.path(), url);
    carols_file_and_text_show_under_her_name(&tmux, config.path(), url);
    alice_replies_reacts_edits_and_deletes(&tmux);
    bobs_history_shows_it_all(config.path(), url);
}

/// alice makes "trip" with bob, adds carol and says hello; it is delivered
/// once both members' devices have it.
fn alice_makes_the_group_and_says_hello(tmux: &Tmux, config: &Path, url: &str) {
    tmux.chat(config, "alice", 100, 30);
    tmux.wait_for_text("alice", "online as alice");
    tmux.keys("alice", &["g"]);
    tmux.type_text("alice", "trip");
    tmux.keys("alice", &["Enter"]);
    tmux.type_text("alice", "bob");
    tmux.keys("alice", &["Enter"]);
    tmux.wait_for_text("alice", "alice created the group trip");
    tmux.wait_for_text("alice", "trip · 2 members");
    tmux.keys("alice", &["Tab", "a"]);
    tmux.type_text("alice", "carol");
    tmux.keys("alice", &["Enter"]);
    tmux.wait_for_text("alice", "alice added carol");
    tmux.wait_for_text("alice", "trip · 3 members");
    tmux.keys("alice", &["Tab"]);
    tmux.type_text("alice", "hello all");
    tmux.keys("alice", &["Enter"]);
    tmux.wait_for_mark("alice", "hello all", "✓");

    // Both members' devices receive it (bob: the creation, carol's
    // addition and the text; carol: her addition and the text): only then
    // is it delivered.
    for (member, events) in [("bob", "3"), ("carol", "2")] {
        as_user(config, url, member, &["listen", "--count", events]);
    }
    tmux.wait_for_mark("alice", "hello all", "✓✓");
}

/// carol's file opens in alice's app; her text shows under her name.
fn carols_file_and_text_show_under_her_name(tmux: &Tmux, config: &Path, url: &str) {
    let pdf = config.join("upload").join("notes.pdf");
    std::fs::create_dir(pdf.parent().unwrap()).unwrap();
    let bytes = b"%PDF-1.7\n1 0 obj << >> endobj\ntrailer\n%%EOF\n";
    std::fs::write(&pdf, bytes).unwrap();
    let pdf = pdf.display().to_string();
    as_user(
        config,
        url,
        "carol",
        &["send", "--group", "trip", "the plan", "--file", &pdf],
    );
    tmux.wait_for_text(
        "alice",
        &format!("📎 notes.pdf (application/pdf, {} B)", bytes.len()),
    );
    tmux.keys("alice", &["Up", "d"]);
    tmux.wait_for_text("alice", &format!("Saved notes.pdf ({} B)", bytes.len()));
    assert_eq!(std::fs::read(config.join("notes.pdf")).unwrap(), bytes);
    tmux.keys("alice", &["Escape"]);
    as_user(
        config,
        url,
        "carol",
        &["send", "--group", "trip", "hi from carol"],
    );
    let screen = tmux.wait_for_text("alice", "hi from carol");
    let lines = conversation_lines(&screen);
    let at = lines.iter().position(|l| l.contains("the plan")).unwrap();
    assert_eq!(
        lines[at - 1].trim_matches(['│', ' ']),
        "carol",
        "sender named above:\n{screen}"
    );
}

/// On selected messages: a reply, a reaction, an edit and a delete.
fn alice_replies_reacts_edits_and_deletes(tmux: &Tmux) {
    // Reply to carol's text (the newest), then react to it.
    tmux.keys("alice", &["Up", "r"]);
    tmux.wait_for_text("alice", "Reply to carol: hi from carol");
    tmux.type_text("alice", "great");
    tmux.keys("alice", &["Enter"]);
    tmux.wait_for_text("alice", "┃ carol: hi from carol");
    tmux.wait_for_mark("alice", "great", "✓");
    tmux.keys("alice", &["Up", "Up", "+"]);
    tmux.wait_for_text("alice", "React (1 👍");
    tmux.keys("alice", &["1", "Enter"]);
    tmux.wait_for_text("alice", "👍 alice");

    // Edit "great", then delete "hello all" (above the plan and carol's).
    tmux.keys("alice", &["Up", "e"]);
    tmux.wait_for_text("alice", "Edit message");
    tmux.type_text("alice", "!");
    tmux.keys("alice", &["Enter"]);
    tmux.wait_for_text("alice", "great!");
    tmux.keys("alice", &["Up", "Up", "Up", "Up", "x"]);
    tmux.wait_for_text("alice", "Delete this message for everyone?");
    tmux.keys("alice", &["y"]);
    tmux.wait_for_text("alice", "(message deleted)");
}

/// They reached the server as such: bob's history shows them.
fn bobs_history_shows_it_all(config: &Path, url: &str) {
    let page = as_user(config, url, "bob", &["history", "trip"]);
    let texts: Vec<&Value> = page["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["kind"] == "text")
        .collect();
    let by_text = |text: &str| {
        texts
            .iter()
            .find(|m| m["text"] == text)
            .unwrap_or_else(|| panic!("{text:?} not in {page}"))
    };
    let carols = by_text("hi from carol");
    assert_eq!(carols["reactions"][0]["emoji"], "👍", "{page}");
    assert_eq!(carols["reactions"][0]["user"], "alice");
    let reply = by_text("great!");
    assert_eq!(reply["target"], carols["message_id"]);
    assert!(reply["edited_ms"].is_i64(), "{reply}");
    assert!(
        texts
            .iter()
            .any(|m| m["deleted"] == true && m["from"] == "alice"),
        "hello all deleted: {page}"
    );
}

/// A port nothing listens on now, so a server can be restarted on it.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn texts_typed_offline_go_out_once_and_a_restart_shows_what_waited() {
    // Goal: with the server down the app says it is offline and keeps what
    // is typed in its outbox (marked waiting); when the server is back it
    // sends each once (the history holds one copy). Messages sent while
    // the app was closed are there, counted unread, when it starts again.
    let Some(tmux) = Tmux::new() else { return };
    let data = tempfile::tempdir().unwrap();
    let config = tempfile::tempdir().unwrap();
    let listen = format!("127.0.0.1:{}", free_port());
    let mut server = ServerProcess::start_listening(data.path(), &listen);
    let url = server.url.clone();
    accounts(config.path(), &url, &["alice", "bob"]);
    as_user(config.path(), &url, "bob", &["send", "alice", "first"]);

    tmux.chat(config.path(), "alice", 100, 30);
    tmux.wait_for_text("alice", "online as alice");
    tmux.keys("alice", &["Enter"]);
    tmux.wait_for_text("alice", "first");

    server.kill_9();
    tmux.wait_for_text("alice", "offline");
    tmux.type_text("alice", "sent while away");
    tmux.keys("alice", &["Enter"]);
    tmux.wait_for_mark("alice", "sent while away", "◷");
    tmux.wait_for_text("alice", "1 waiting to send");

    let server = ServerProcess::start_listening(data.path(), &listen);
    tmux.wait_for_mark("alice", "sent while away", "✓");
    tmux.wait_for_text("alice", "online as alice");
    assert_eq!(
        history_texts(config.path(), &url, "bob", "alice"),
        vec!["first", "sent while away"]
    );

    tmux.keys("alice", &["Tab", "q"]);
    tmux.wait_for_exit("alice", "q");
    for text in ["while you were out", "and another"] {
        as_user(config.path(), &url, "bob", &["send", "alice", text]);
    }
    tmux.chat(config.path(), "alice", 100, 30);
    let screen = tmux.wait_for_text("alice", "(2)");
    assert!(screen.contains("and another"), "{screen}");
    tmux.keys("alice", &["Enter"]);
    let all = [
        "first",
        "sent while away",
        "while you were out",
        "and another",
    ];
    tmux.wait_for("alice", "the whole chat, in seq order", |screen| {
        let lines = conversation_lines(screen);
        let order: Option<Vec<usize>> = all
            .iter()
            .map(|text| lines.iter().position(|l| l.contains(text)))
            .collect();
        order.is_some_and(|order| order.is_sorted())
    });
    drop(server);
}

#[test]
fn the_screen_follows_a_resize_and_a_refusal_shows_in_the_status_line() {
    // Goal: a text to someone who blocked us is marked not sent with the
    // reason in words on the status line (no crash, no JSON); the app
    // redraws to a smaller terminal (80 × 24) with nothing cut off.
    let Some(tmux) = Tmux::new() else { return };
    let (_data, config, server) = server_with_accounts(&["alice", "bob"]);
    let url = server.url.as_str();
    as_user(
        config.path(),
        url,
        "alice",
        &["send", "bob", "before the block"],
    );
    as_user(config.path(), url, "bob", &["block", "alice"]);

    tmux.chat(config.path(), "alice", 120, 40);
    tmux.wait_for_text("alice", "online as alice");
    tmux.keys("alice", &["Enter"]);
    tmux.wait_for_text("alice", "before the block");
    tmux.type_text("alice", "are you there");
    tmux.keys("alice", &["Enter"]);
    let screen = tmux.wait_for_text("alice", "Not sent: you cannot message this user");
    assert!(!screen.contains('{'), "no JSON on screen:\n{screen}");
    tmux.wait_for_mark("alice", "are you there", "✗ not sent");

    tmux.tmux(&["resize-window", "-t", "alice", "-x", "80", "-y", "24"]);
    // Redrawn whole: 24 lines of 80 columns, the frame closed above the
    // status line, which is the last (a capture may catch the redraw
    // half done, so all of it is the condition).
    let screen = tmux.wait_for("alice", "a whole 80 × 24 screen", |screen| {
        let lines: Vec<&str> = screen.lines().collect();
        lines.len() == 24
            && lines[0].chars().count() == 80
            && lines[0].ends_with('┐')
            && lines[22].starts_with('└')
            && lines[22].ends_with('┘')
            && lines[23].contains("online as alice")
    });
    assert!(screen.contains("before the block"), "{screen}");
}
