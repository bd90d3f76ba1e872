//! Drawing the terminal app: the conversation list on the left, the open
//! conversation and its composer on the right, a status line (or a
//! prompt) at the bottom, and the help screen over everything.

use chrono::{Local, TimeZone};
use missive_proto::MessageKind;
use missive_proto::rest::{ConversationKind, MediaRef};
use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Position, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Clear, Paragraph};

use super::model::{ConnectionState, Conversation, HistoryState, Msg, Tick, media_name};
use super::state::{App, ComposeMode, Focus};
use super::text::{truncate, width, wrap};

/// Keys, as the help screen lists them.
pub const HELP: &[(&str, &str)] = &[
    ("Tab", "switch between the list and the conversation"),
    ("↑ ↓  Enter", "list: choose and open a conversation"),
    ("/", "list: search conversations by name"),
    ("n", "list: new 1:1 chat by username"),
    ("g", "list: new group (name, then members)"),
    ("a", "list: add members to the selected group"),
    (
        "v",
        "list: verify the selected encrypted 1:1's keys (compare emoji)",
    ),
    ("Enter", "compose: send"),
    (
        "Alt+Enter",
        "compose: new line (Shift+Enter where the terminal tells it)",
    ),
    (
        "↑  PgUp",
        "compose: select messages (older pages load at the top)",
    ),
    ("r  e  x", "message: reply, edit, delete (your own)"),
    ("+  -", "message: react, remove your reaction"),
    ("d", "message: download its attachment here"),
    ("Esc", "back (cancels a reply or edit)"),
    ("r", "list: reconnect now when offline"),
    ("q  Ctrl-C", "quit"),
];

const LIST_WIDTH: u16 = 28;
const ACCENT: Color = Color::Cyan;

pub fn draw(frame: &mut Frame, app: &App) {
    let [main, status] =
        Layout::vertical([Constraint::Min(3), Constraint::Length(1)]).areas(frame.area());
    let list_width = LIST_WIDTH.min(main.width / 3).max(12);
    let [list, chat] =
        Layout::horizontal([Constraint::Length(list_width), Constraint::Min(10)]).areas(main);
    draw_list(frame, app, list);
    draw_chat(frame, app, chat);
    draw_status(frame, app, status);
    if app.help {
        draw_help(frame, frame.area());
    }
}

fn border_style(focused: bool) -> Style {
    if focused {
        Style::default().fg(ACCENT)
    } else {
        Style::default().fg(Color::DarkGray)
    }
}

fn draw_list(frame: &mut Frame, app: &App, area: Rect) {
    let title = if app.filter.is_empty() {
        String::from(" Chats ")
    } else {
        format!(" Chats /{} ", app.filter)
    };
    let block = Block::default()
        .borders(Borders::ALL)
        .title(title)
        .border_style(border_style(app.focus == Focus::List));
    let inner = block.inner(area);
    frame.render_widget(block, area);
    let inner_width = usize::from(inner.width);
    let mut lines = Vec::new();
    let mut selected_line = 0;
    let visible = app.visible();
    if visible.is_empty() {
        lines.push(Line::styled(
            "no chats yet: n to start one",
            Style::default().fg(Color::DarkGray),
        ));
    }
    for conversation in visible {
        let selected = app.selected.as_ref() == Some(&conversation.key);
        if selected {
            selected_line = lines.len();
        }
        let style = if selected {
            Style::default().add_modifier(Modifier::REVERSED)
        } else {
            Style::default()
        };
        let online = conversation
            .peer(&app.me)
            .and_then(|peer| app.presence.get(peer))
            .is_some_and(|(online, _)| *online);
        let marker = if online { "● " } else { "  " };
        let time = conversation
            .last
            .as_ref()
            .map(|(_, _, ts)| short_time(*ts))
            .unwrap_or_default();
        let title_room = inner_width.saturating_sub(2 + width(&time) + 1);
        let title = truncate(&conversation.title(&app.me), title_room);
        let pad = inner_width.saturating_sub(2 + width(&title) + width(&time));
        lines.push(Line::from(vec![
            Span::styled(marker, style.fg(Color::Green)),
            Span::styled(title, style.add_modifier(Modifier::BOLD)),
            Span::styled(" ".repeat(pad), style),
            Span::styled(time, style),
        ]));
        let badge = if conversation.unread > 0 {
            format!(" ({})", conversation.unread)
        } else {
            String::new()
        };
        let typing = typing_line(conversation);
        let preview = match (&typing, &conversation.last) {
            (Some(typing), _) => typing.clone(),
            (None, Some((_, text, _))) => text.clone(),
            (None, None) => String::new(),
        };
        let preview = truncate(&preview, inner_width.saturating_sub(2 + width(&badge)));
        let pad = inner_width.saturating_sub(2 + width(&preview) + width(&badge));
        let preview_style = if typing.is_some() {
            style.fg(Color::Green)
        } else {
            style.fg(Color::Gray)
        };
        lines.push(Line::from(vec![
            Span::styled("  ", style),
            Span::styled(preview, preview_style),
            Span::styled(" ".repeat(pad), style),
            Span::styled(badge, style.fg(Color::Yellow).add_modifier(Modifier::BOLD)),
        ]));
    }
    let height = usize::from(inner.height);
    let start = (selected_line + 2).saturating_sub(height);
    let shown: Vec<Line> = lines.into_iter().skip(start).take(height).collect();
    frame.render_widget(Paragraph::new(shown), inner);
}

/// "bob is typing…", "bob, carol are typing…"
fn typing_line(conversation: &Conversation) -> Option<String> {
    if conversation.typing.is_empty() {
        return None;
    }
    let who: Vec<&str> = conversation.typing.keys().map(String::as_str).collect();
    let verb = if who.len() == 1 { "is" } else { "are" };
    Some(format!("{} {verb} typing…", who.join(", ")))
}

fn draw_chat(frame: &mut Frame, app: &App, area: Rect) {
    let Some(conversation) = app.open_conversation() else {
        let block = Block::default()
            .borders(Borders::ALL)
            .border_style(border_style(false));
        let inner = block.inner(area);
        frame.render_widget(block, area);
        let hint = vec![
            Line::from(""),
            Line::from(format!("Signed in as {} on {}", app.me, app.server)),
            Line::from(""),
            Line::from("Enter opens the selected chat; n starts one, g makes a group."),
            Line::from("? lists every key."),
        ];
        frame.render_widget(
            Paragraph::new(hint).style(Style::default().fg(Color::Gray)),
            inner,
        );
        return;
    };
    let composer_rows = {
        let (rows, _) = app.composer.layout(area.width.saturating_sub(2).max(2));
        u16::try_from(rows.len()).unwrap_or(u16::MAX).clamp(1, 6)
    };
    let [messages_area, composer_area] =
        Layout::vertical([Constraint::Min(3), Constraint::Length(composer_rows + 2)]).areas(area);
    let block = Block::default()
        .borders(Borders::ALL)
        .title(Line::from(vec![
            Span::styled(
                format!(
                    " {}{} ",
                    if conversation.encrypted { "🔒 " } else { "" },
                    conversation.title(&app.me)
                ),
                Style::default().add_modifier(Modifier::BOLD),
            ),
            Span::styled(
                format!("{} ", subtitle(app, conversation)),
                Style::default().fg(Color::Gray),
            ),
        ]))
        .border_style(border_style(app.focus == Focus::Messages));
    let inner = block.inner(messages_area);
    frame.render_widget(block, messages_area);
    draw_messages(frame, app, conversation, inner);
    draw_composer(frame, app, conversation, composer_area);
}

fn subtitle(app: &App, conversation: &Conversation) -> String {
    if let Some(typing) = typing_line(conversation) {
        return format!("· {typing}");
    }
    match conversation.kind {
        ConversationKind::Group => format!("· {} members", conversation.members.len()),
        ConversationKind::Direct => {
            let peer = conversation.peer(&app.me).unwrap_or_default();
            let mut line = match app.presence.get(peer) {
                Some((true, _)) => String::from("· online"),
                Some((false, Some(seen))) => format!("· last seen {}", short_time(*seen)),
                _ => String::new(),
            };
            match app.peer_verified.get(peer) {
                Some(true) if conversation.encrypted => line.push_str(" · verified"),
                Some(false) if conversation.encrypted => line.push_str(" · not verified (v)"),
                _ => {}
            }
            line.trim_start().to_owned()
        }
    }
}

/// One screen line of the conversation and the message it belongs to.
struct Row {
    line: Line<'static>,
    seq: Option<i64>,
}

fn draw_messages(frame: &mut Frame, app: &App, conversation: &Conversation, area: Rect) {
    let pane = usize::from(area.width);
    let bubble = (pane * 3 / 4).max(16).min(pane);
    let mut rows: Vec<Row> = Vec::new();
    let note = |text: &str| Row {
        line: Line::styled(text.to_owned(), Style::default().fg(Color::DarkGray)),
        seq: None,
    };
    match conversation.history {
        HistoryState::Loading => rows.push(note("loading…")),
        HistoryState::Loaded { older: Some(_) } => rows.push(note("↑ older messages")),
        _ => {}
    }
    let mut previous: Option<&Msg> = None;
    for msg in conversation.messages.values() {
        let day = day_of(msg.ts_ms);
        if previous.is_none_or(|p| day_of(p.ts_ms) != day) {
            rows.push(centered(
                &format!("── {day} ──"),
                pane,
                Style::default().fg(Color::DarkGray),
                None,
            ));
        }
        let selected = app.selected_message == Some(msg.seq);
        let group = conversation.kind == ConversationKind::Group;
        let new_sender = previous.is_none_or(|p| p.from != msg.from || p.kind != msg.kind);
        push_message(
            &mut rows,
            app,
            conversation,
            msg,
            MessageLayout {
                pane,
                bubble,
                selected,
                name: group && new_sender && msg.from != app.me,
            },
        );
        previous = Some(msg);
    }
    for item in app.outbox_of(&conversation.key) {
        // Why it failed is on the status line.
        let meta = match &item.failed {
            Some(_) => format!("{} not sent", tick_mark(Tick::Failed)),
            None => tick_mark(Tick::Pending).to_owned(),
        };
        let body = wrap(&item.text, bubble);
        push_body(
            &mut rows,
            body,
            &meta,
            Side::Own(pane),
            bubble,
            Style::default().fg(Color::Gray),
            None,
        );
    }
    let height = usize::from(area.height);
    let total = rows.len();
    let mut start = total.saturating_sub(height);
    if let Some(seq) = app.selected_message {
        let first = rows.iter().position(|r| r.seq == Some(seq));
        let last = rows.iter().rposition(|r| r.seq == Some(seq));
        if let (Some(first), Some(last)) = (first, last) {
            if first < start {
                start = first.saturating_sub(1);
            } else if last >= start + height {
                start = last + 1 - height;
            }
        }
    }
    let shown: Vec<Line> = rows
        .into_iter()
        .skip(start)
        .take(height)
        .map(|r| r.line)
        .collect();
    frame.render_widget(Paragraph::new(shown), area);
}

#[derive(Clone, Copy)]
enum Side {
    /// Right-aligned within this pane width.
    Own(usize),
    Other,
}

struct MessageLayout {
    pane: usize,
    bubble: usize,
    selected: bool,
    /// Show the sender's name above (a group, a new sender).
    name: bool,
}

fn push_message(
    rows: &mut Vec<Row>,
    app: &App,
    conversation: &Conversation,
    msg: &Msg,
    layout: MessageLayout,
) {
    let seq = Some(msg.seq);
    let highlight = |style: Style| {
        if layout.selected {
            style.add_modifier(Modifier::REVERSED)
        } else {
            style
        }
    };
    if msg.kind == MessageKind::System {
        rows.push(centered(
            &format!("· {} ·", msg.text),
            layout.pane,
            highlight(Style::default().fg(Color::Yellow)),
            seq,
        ));
        return;
    }
    let own = msg.from == app.me;
    let side = if own {
        Side::Own(layout.pane)
    } else {
        Side::Other
    };
    if layout.name {
        rows.push(aligned(
            vec![Span::styled(
                msg.from.clone(),
                highlight(Style::default().fg(ACCENT).add_modifier(Modifier::BOLD)),
            )],
            side,
            seq,
        ));
    }
    if let Some(target) = &msg.reply_to {
        let quoted = conversation
            .messages
            .values()
            .find(|m| &m.message_id == target)
            .map(|m| {
                if m.deleted {
                    format!("{}: (deleted)", m.from)
                } else {
                    format!("{}: {}", m.from, m.text)
                }
            })
            .unwrap_or_else(|| String::from("an earlier message"));
        rows.push(aligned(
            vec![Span::styled(
                truncate(&format!("┃ {quoted}"), layout.bubble),
                highlight(Style::default().fg(Color::Gray)),
            )],
            side,
            seq,
        ));
    }
    let mut body = if msg.deleted {
        vec![String::from("(message deleted)")]
    } else if msg.text.is_empty() {
        Vec::new()
    } else {
        wrap(&msg.text, layout.bubble)
    };
    for media in &msg.media {
        body.push(truncate(&media_line(media), layout.bubble));
    }
    let mut meta = short_clock(msg.ts_ms);
    if msg.edited && !msg.deleted {
        meta.push_str(" edited");
    }
    if own {
        meta.push(' ');
        meta.push_str(tick_mark(conversation.tick(msg.seq, &app.me)));
    }
    let style = if msg.deleted {
        Style::default()
            .fg(Color::DarkGray)
            .add_modifier(Modifier::ITALIC)
    } else {
        Style::default()
    };
    push_body(
        rows,
        body,
        &meta,
        side,
        layout.bubble,
        highlight(style),
        seq,
    );
    if !msg.reactions.is_empty() {
        let reactions: Vec<String> = msg
            .reactions
            .iter()
            .map(|(user, emoji)| format!("{emoji} {user}"))
            .collect();
        rows.push(aligned(
            vec![Span::styled(
                truncate(&reactions.join("  "), layout.bubble),
                highlight(Style::default().fg(Color::Magenta)),
            )],
            side,
            seq,
        ));
    }
}

/// The body's lines, the time and ticks after the last one (or on a line
/// of their own when they do not fit).
fn push_body(
    rows: &mut Vec<Row>,
    mut body: Vec<String>,
    meta: &str,
    side: Side,
    bubble: usize,
    style: Style,
    seq: Option<i64>,
) {
    let meta_style = style.fg(Color::DarkGray);
    let last = body.pop();
    for line in body {
        rows.push(aligned(vec![Span::styled(line, style)], side, seq));
    }
    match last {
        Some(line) if width(&line) + 2 + width(meta) <= bubble => rows.push(aligned(
            vec![
                Span::styled(line, style),
                Span::styled(format!("  {meta}"), meta_style),
            ],
            side,
            seq,
        )),
        Some(line) => {
            rows.push(aligned(vec![Span::styled(line, style)], side, seq));
            rows.push(aligned(
                vec![Span::styled(meta.to_owned(), meta_style)],
                side,
                seq,
            ));
        }
        None => rows.push(aligned(
            vec![Span::styled(meta.to_owned(), meta_style)],
            side,
            seq,
        )),
    }
}

fn aligned(spans: Vec<Span<'static>>, side: Side, seq: Option<i64>) -> Row {
    let line = match side {
        Side::Own(pane) => {
            let used: usize = spans.iter().map(|s| width(&s.content)).sum();
            let mut padded = vec![Span::raw(" ".repeat(pane.saturating_sub(used + 1)))];
            padded.extend(spans);
            Line::from(padded)
        }
        Side::Other => {
            let mut padded = vec![Span::raw(" ")];
            padded.extend(spans);
            Line::from(padded)
        }
    };
    Row { line, seq }
}

fn centered(text: &str, pane: usize, style: Style, seq: Option<i64>) -> Row {
    let text = truncate(text, pane);
    let pad = pane.saturating_sub(width(&text)) / 2;
    Row {
        line: Line::from(vec![Span::raw(" ".repeat(pad)), Span::styled(text, style)]),
        seq,
    }
}

pub fn tick_mark(tick: Tick) -> &'static str {
    match tick {
        Tick::Pending => "◷",
        Tick::Sent => "✓",
        Tick::Delivered => "✓✓",
        Tick::Read => "✔✔",
        Tick::Failed => "✗",
    }
}

fn media_line(media: &MediaRef) -> String {
    format!(
        "📎 {} ({}, {})",
        media_name(media),
        media.content_type,
        size(media.size_bytes)
    )
}

pub fn size(bytes: u64) -> String {
    const KIB: f64 = 1024.0;
    let bytes_f = bytes as f64;
    if bytes_f < KIB {
        format!("{bytes} B")
    } else if bytes_f < KIB * KIB {
        format!("{:.1} KiB", bytes_f / KIB)
    } else {
        format!("{:.1} MiB", bytes_f / (KIB * KIB))
    }
}

fn draw_composer(frame: &mut Frame, app: &App, conversation: &Conversation, area: Rect) {
    let title = match &app.compose_mode {
        ComposeMode::New => String::from(" Message (Enter sends, Alt+Enter new line) "),
        ComposeMode::Reply(target) => {
            let quoted = conversation
                .messages
                .values()
                .find(|m| &m.message_id == target)
                .map(|m| format!("{}: {}", m.from, m.text))
                .unwrap_or_default();
            format!(
                " Reply to {} (Esc cancels) ",
                truncate(&quoted, usize::from(area.width).saturating_sub(24))
            )
        }
        ComposeMode::Edit(_) => String::from(" Edit message (Enter saves, Esc cancels) "),
    };
    let focused = app.focus == Focus::Compose && app.prompt.is_none() && !app.help;
    let block = Block::default()
        .borders(Borders::ALL)
        .title(title)
        .border_style(border_style(focused));
    let inner = block.inner(area);
    frame.render_widget(block, area);
    let (rows, (cursor_row, cursor_column)) = app.composer.layout(inner.width.max(2));
    let skip = usize::from(cursor_row).saturating_sub(usize::from(inner.height).saturating_sub(1));
    let lines: Vec<Line> = rows.into_iter().skip(skip).map(Line::from).collect();
    frame.render_widget(Paragraph::new(lines), inner);
    if focused {
        let row = cursor_row.saturating_sub(u16::try_from(skip).unwrap_or(0));
        frame.set_cursor_position(Position::new(
            inner.x + cursor_column.min(inner.width.saturating_sub(1)),
            inner.y + row.min(inner.height.saturating_sub(1)),
        ));
    }
}

fn draw_status(frame: &mut Frame, app: &App, area: Rect) {
    if let Some(prompt) = &app.prompt {
        let label = prompt.label();
        let text = prompt
            .editor()
            .map(|e| e.text().to_owned())
            .unwrap_or_default();
        let line = Line::from(vec![
            Span::styled(label.clone(), Style::default().fg(Color::Yellow)),
            Span::raw(text.clone()),
        ]);
        frame.render_widget(Paragraph::new(line), area);
        if prompt.editor().is_some() {
            let column = u16::try_from(width(&label) + width(&text)).unwrap_or(u16::MAX);
            frame.set_cursor_position(Position::new(
                area.x + column.min(area.width.saturating_sub(1)),
                area.y,
            ));
        }
        return;
    }
    let (state, color) = match &app.connection {
        ConnectionState::Online => (format!("● online as {}", app.me), Color::Green),
        ConnectionState::Connecting => (String::from("◌ connecting…"), Color::Yellow),
        ConnectionState::Offline { retry_at, .. } => {
            let left = retry_at.saturating_duration_since(std::time::Instant::now());
            (
                format!(
                    "○ offline, retrying in {} s (r in the list: now)",
                    left.as_secs() + u64::from(left.subsec_millis() > 0)
                ),
                Color::Red,
            )
        }
        ConnectionState::Stopped(reason) => (format!("■ disconnected: {reason}"), Color::Red),
    };
    let pending = app.outbox.iter().filter(|i| i.failed.is_none()).count();
    let mut spans = vec![Span::styled(state, Style::default().fg(color))];
    if pending > 0 {
        spans.push(Span::styled(
            format!(" · {pending} waiting to send"),
            Style::default().fg(Color::Yellow),
        ));
    }
    spans.push(Span::styled(
        " · ? help",
        Style::default().fg(Color::DarkGray),
    ));
    if let ConnectionState::Offline { reason, .. } = &app.connection {
        spans.push(Span::styled(
            format!(" · {reason}"),
            Style::default().fg(Color::DarkGray),
        ));
    }
    if let Some(notice) = &app.notice {
        let style = if notice.error {
            Style::default().fg(Color::Red).add_modifier(Modifier::BOLD)
        } else {
            Style::default().fg(Color::Gray)
        };
        spans.push(Span::raw(" · "));
        spans.push(Span::styled(notice.text.clone(), style));
    }
    frame.render_widget(Paragraph::new(Line::from(spans)), area);
}

fn draw_help(frame: &mut Frame, area: Rect) {
    let width = area.width.min(76);
    let height = (u16::try_from(HELP.len()).unwrap_or(20) + 4).min(area.height);
    let popup = Rect::new(
        area.x + (area.width - width) / 2,
        area.y + (area.height - height) / 2,
        width,
        height,
    );
    frame.render_widget(Clear, popup);
    let mut lines: Vec<Line> = HELP
        .iter()
        .map(|(keys, what)| {
            Line::from(vec![
                Span::styled(format!("{keys:>11}  "), Style::default().fg(ACCENT)),
                Span::raw(*what),
            ])
        })
        .collect();
    lines.push(Line::from(""));
    lines.push(Line::styled(
        "ticks: ◷ waiting  ✓ sent  ✓✓ delivered  ✔✔ read  ✗ not sent — any key closes",
        Style::default().fg(Color::Gray),
    ));
    frame.render_widget(
        Paragraph::new(lines).block(Block::default().borders(Borders::ALL).title(" Keys ")),
        popup,
    );
}

fn local(ts_ms: i64) -> Option<chrono::DateTime<Local>> {
    Local.timestamp_millis_opt(ts_ms).single()
}

fn short_clock(ts_ms: i64) -> String {
    local(ts_ms)
        .map(|t| t.format("%H:%M").to_string())
        .unwrap_or_default()
}

/// Today: the time; before: the date.
fn short_time(ts_ms: i64) -> String {
    let Some(t) = local(ts_ms) else {
        return String::new();
    };
    if t.date_naive() == Local::now().date_naive() {
        t.format("%H:%M").to_string()
    } else {
        t.format("%-d %b").to_string()
    }
}

fn day_of(ts_ms: i64) -> String {
    local(ts_ms)
        .map(|t| t.format("%a %-d %b %Y").to_string())
        .unwrap_or_default()
}
