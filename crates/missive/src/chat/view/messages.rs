//! The open conversation's messages: bubbles by side, replies quoted,
//! attachments, time and ticks, reactions, day separators and the texts
//! still in the outbox, scrolled to keep the selected message in view.

use missive_proto::MessageKind;
use missive_proto::rest::{ConversationKind, MediaRef};
use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;

use super::super::model::{Conversation, HistoryState, Msg, Tick, media_name};
use super::super::state::App;
use super::super::text::{truncate, width, wrap};
use super::{ACCENT, day_of, short_clock};

/// One screen line of the conversation and the message it belongs to.
struct Row {
    line: Line<'static>,
    seq: Option<i64>,
}

pub(super) fn draw_messages(frame: &mut Frame, app: &App, conversation: &Conversation, area: Rect) {
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
        let style = Style::default().fg(Color::Gray);
        push_body(&mut rows, body, &meta, Side::Own(pane), bubble, style, None);
    }
    let height = usize::from(area.height);
    let start = first_shown(&rows, app.selected_message, height);
    let shown: Vec<Line> = rows
        .into_iter()
        .skip(start)
        .take(height)
        .map(|r| r.line)
        .collect();
    frame.render_widget(Paragraph::new(shown), area);
}

/// The first row on screen: the newest rows fill it, unless the selected
/// message would be off it (then it is just in view).
fn first_shown(rows: &[Row], selected: Option<i64>, height: usize) -> usize {
    let mut start = rows.len().saturating_sub(height);
    if let Some(seq) = selected {
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
    start
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

/// A message's rows: a system event centred; a text as a bubble on its
/// side, with the sender's name, the quoted reply, time and ticks, and the
/// reactions.
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
        let name_style = Style::default().fg(ACCENT).add_modifier(Modifier::BOLD);
        rows.push(single(msg.from.clone(), highlight(name_style), side, seq));
    }
    if let Some(target) = &msg.reply_to {
        let quoted = truncate(
            &format!("┃ {}", quoted(conversation, target)),
            layout.bubble,
        );
        rows.push(single(
            quoted,
            highlight(Style::default().fg(Color::Gray)),
            side,
            seq,
        ));
    }
    let body = body_lines(msg, layout.bubble);
    let tick = own.then(|| conversation.tick(msg.seq, &app.me));
    let meta = meta_line(msg, tick);
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
        let reactions = truncate(&reactions.join("  "), layout.bubble);
        let style = highlight(Style::default().fg(Color::Magenta));
        rows.push(single(reactions, style, side, seq));
    }
}

/// The time after a message's text, "edited", and our own message's ticks.
fn meta_line(msg: &Msg, tick: Option<Tick>) -> String {
    let mut meta = short_clock(msg.ts_ms);
    if msg.edited && !msg.deleted {
        meta.push_str(" edited");
    }
    if let Some(tick) = tick {
        meta.push(' ');
        meta.push_str(tick_mark(tick));
    }
    meta
}

/// The message a reply quotes, as its sender and text (or that it was
/// deleted, or not loaded).
fn quoted(conversation: &Conversation, target: &str) -> String {
    conversation
        .messages
        .values()
        .find(|m| m.message_id == target)
        .map(|m| {
            if m.deleted {
                format!("{}: (deleted)", m.from)
            } else {
                format!("{}: {}", m.from, m.text)
            }
        })
        .unwrap_or_else(|| String::from("an earlier message"))
}

/// A message's text wrapped to the bubble, then a line per attachment.
fn body_lines(msg: &Msg, bubble: usize) -> Vec<String> {
    let mut body = if msg.deleted {
        vec![String::from("(message deleted)")]
    } else if msg.text.is_empty() {
        Vec::new()
    } else {
        wrap(&msg.text, bubble)
    };
    for media in &msg.media {
        body.push(truncate(&media_line(media), bubble));
    }
    body
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

/// A line of one styled text, aligned to its side.
fn single(text: String, style: Style, side: Side, seq: Option<i64>) -> Row {
    aligned(vec![Span::styled(text, style)], side, seq)
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

pub(super) fn tick_mark(tick: Tick) -> &'static str {
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

pub(crate) fn size(bytes: u64) -> String {
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
