//! Drawing the terminal app: the conversation list on the left, the open
//! conversation and its composer on the right, a status line (or a
//! prompt) at the bottom, and the help screen over everything.

use chrono::{Local, TimeZone};
use missive_proto::rest::ConversationKind;
use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Position, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Clear, Paragraph};

use super::model::{ConnectionState, Conversation};
use super::state::{App, ComposeMode, Focus};
use super::text::{truncate, width};

mod list;
mod messages;

use list::{draw_list, typing_line};
use messages::draw_messages;
pub(super) use messages::size;

/// Keys, as the help screen lists them.
pub(super) const HELP: &[(&str, &str)] = &[
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

pub(super) fn draw(frame: &mut Frame, app: &App) {
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
