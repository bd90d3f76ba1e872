//! The conversation list on the left: each chat's title, presence, time,
//! preview (or who is typing) and unread count.

use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Paragraph};

use super::super::model::Conversation;
use super::super::state::{App, Focus};
use super::super::text::{truncate, width};
use super::{border_style, short_time};

pub(super) fn draw_list(frame: &mut Frame, app: &App, area: Rect) {
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
        lines.extend(entry(app, conversation, inner_width, selected));
    }
    let height = usize::from(inner.height);
    let start = (selected_line + 2).saturating_sub(height);
    let shown: Vec<Line> = lines.into_iter().skip(start).take(height).collect();
    frame.render_widget(Paragraph::new(shown), inner);
}

/// A chat's two lines in the list: presence, title and time; then the
/// preview (or who is typing) and the unread count.
fn entry(
    app: &App,
    conversation: &Conversation,
    inner_width: usize,
    selected: bool,
) -> [Line<'static>; 2] {
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
    let heading = Line::from(vec![
        Span::styled(marker, style.fg(Color::Green)),
        Span::styled(title, style.add_modifier(Modifier::BOLD)),
        Span::styled(" ".repeat(pad), style),
        Span::styled(time, style),
    ]);
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
    let preview = Line::from(vec![
        Span::styled("  ", style),
        Span::styled(preview, preview_style),
        Span::styled(" ".repeat(pad), style),
        Span::styled(badge, style.fg(Color::Yellow).add_modifier(Modifier::BOLD)),
    ]);
    [heading, preview]
}

/// "bob is typing…", "bob, carol are typing…"
pub(super) fn typing_line(conversation: &Conversation) -> Option<String> {
    if conversation.typing.is_empty() {
        return None;
    }
    let who: Vec<&str> = conversation.typing.keys().map(String::as_str).collect();
    let verb = if who.len() == 1 { "is" } else { "are" };
    Some(format!("{} {verb} typing…", who.join(", ")))
}
