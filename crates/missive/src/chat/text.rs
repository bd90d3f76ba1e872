//! Text for a terminal: an input line that may hold several lines, and
//! wrapping by display width (a CJK character or an emoji takes two
//! columns).

use unicode_width::{UnicodeWidthChar, UnicodeWidthStr};

/// What the user is typing: the text and a cursor (a byte offset on a
/// character boundary).
#[derive(Clone, Debug, Default)]
pub(super) struct Editor {
    text: String,
    cursor: usize,
}

impl Editor {
    pub(super) fn with_text(text: &str) -> Self {
        Self {
            text: text.to_owned(),
            cursor: text.len(),
        }
    }

    pub(super) fn text(&self) -> &str {
        &self.text
    }

    /// Empties the editor and returns what it held.
    pub(super) fn take(&mut self) -> String {
        self.cursor = 0;
        std::mem::take(&mut self.text)
    }

    pub(super) fn insert(&mut self, c: char) {
        self.text.insert(self.cursor, c);
        self.cursor += c.len_utf8();
    }

    /// Pasted text, with `\r\n` and `\r` read as line breaks.
    pub(super) fn insert_str(&mut self, text: &str) {
        let text = text.replace("\r\n", "\n").replace('\r', "\n");
        self.text.insert_str(self.cursor, &text);
        self.cursor += text.len();
    }

    pub(super) fn backspace(&mut self) {
        if let Some(c) = self.text[..self.cursor].chars().next_back() {
            self.cursor -= c.len_utf8();
            self.text.remove(self.cursor);
        }
    }

    pub(super) fn delete(&mut self) {
        if self.cursor < self.text.len() {
            self.text.remove(self.cursor);
        }
    }

    pub(super) fn left(&mut self) {
        if let Some(c) = self.text[..self.cursor].chars().next_back() {
            self.cursor -= c.len_utf8();
        }
    }

    pub(super) fn right(&mut self) {
        if let Some(c) = self.text[self.cursor..].chars().next() {
            self.cursor += c.len_utf8();
        }
    }

    /// To the start of the cursor's line.
    pub(super) fn home(&mut self) {
        self.cursor = self.text[..self.cursor].rfind('\n').map_or(0, |at| at + 1);
    }

    /// To the end of the cursor's line.
    pub(super) fn end(&mut self) {
        self.cursor += self.text[self.cursor..]
            .find('\n')
            .unwrap_or(self.text.len() - self.cursor);
    }

    /// One line up, keeping the column where it can; false on the first
    /// line.
    pub(super) fn up(&mut self) -> bool {
        let line_start = self.text[..self.cursor].rfind('\n').map_or(0, |at| at + 1);
        if line_start == 0 {
            return false;
        }
        let column = self.text[line_start..self.cursor].chars().count();
        let previous_start = self.text[..line_start - 1]
            .rfind('\n')
            .map_or(0, |at| at + 1);
        self.cursor = advance(&self.text, previous_start, line_start - 1, column);
        true
    }

    /// One line down; false on the last line.
    pub(super) fn down(&mut self) -> bool {
        let Some(line_end) = self.text[self.cursor..]
            .find('\n')
            .map(|at| self.cursor + at)
        else {
            return false;
        };
        let line_start = self.text[..self.cursor].rfind('\n').map_or(0, |at| at + 1);
        let column = self.text[line_start..self.cursor].chars().count();
        let next_start = line_end + 1;
        let next_end = self.text[next_start..]
            .find('\n')
            .map_or(self.text.len(), |at| next_start + at);
        self.cursor = advance(&self.text, next_start, next_end, column);
        true
    }

    /// The text wrapped to `width` columns, character by character (what
    /// is being typed is not word-wrapped, so the cursor never jumps), and
    /// the cursor's (row, column) in it.
    pub(super) fn layout(&self, width: u16) -> (Vec<String>, (u16, u16)) {
        let width = usize::from(width.max(2));
        let mut rows = vec![String::new()];
        let mut column = 0;
        let mut cursor = (0, 0);
        for (at, c) in self.text.char_indices().chain([(self.text.len(), '\0')]) {
            if at == self.cursor {
                if column >= width {
                    rows.push(String::new());
                    column = 0;
                }
                cursor = (rows.len() - 1, column);
            }
            if c == '\0' && at == self.text.len() {
                break;
            }
            if c == '\n' {
                rows.push(String::new());
                column = 0;
                continue;
            }
            let c_width = c.width().unwrap_or(0);
            if column + c_width > width {
                rows.push(String::new());
                column = 0;
            }
            if let Some(row) = rows.last_mut() {
                row.push(c);
            }
            column += c_width;
        }
        let row = u16::try_from(cursor.0).unwrap_or(u16::MAX);
        let column = u16::try_from(cursor.1).unwrap_or(u16::MAX);
        (rows, (row, column))
    }
}

/// The byte offset `column` characters after `start`, at most `end`.
fn advance(text: &str, start: usize, end: usize, column: usize) -> usize {
    text[start..end]
        .char_indices()
        .nth(column)
        .map_or(end, |(at, _)| start + at)
}

/// `text` word-wrapped to `width` columns: line breaks kept, words longer
/// than a line cut.
pub(super) fn wrap(text: &str, width: usize) -> Vec<String> {
    let width = width.max(1);
    let mut lines = Vec::new();
    for paragraph in text.split('\n') {
        let mut line = String::new();
        let mut line_width = 0;
        for word in paragraph.split(' ') {
            let word_width = word.width();
            let space = usize::from(!line.is_empty());
            if line_width + space + word_width <= width {
                if space == 1 {
                    line.push(' ');
                }
                line.push_str(word);
                line_width += space + word_width;
                continue;
            }
            if !line.is_empty() {
                lines.push(std::mem::take(&mut line));
                line_width = 0;
            }
            for c in word.chars() {
                let c_width = c.width().unwrap_or(0);
                if line_width + c_width > width {
                    lines.push(std::mem::take(&mut line));
                    line_width = 0;
                }
                line.push(c);
                line_width += c_width;
            }
        }
        lines.push(line);
    }
    lines
}

/// `text` cut to `width` columns, ending in `…` when cut; line breaks
/// become spaces.
pub(super) fn truncate(text: &str, width: usize) -> String {
    let flat: String = text
        .chars()
        .map(|c| if c == '\n' { ' ' } else { c })
        .collect();
    if flat.width() <= width {
        return flat;
    }
    let mut out = String::new();
    let mut used = 0;
    for c in flat.chars() {
        let c_width = c.width().unwrap_or(0);
        if used + c_width + 1 > width {
            break;
        }
        out.push(c);
        used += c_width;
    }
    out.push('…');
    out
}

pub(super) fn width(text: &str) -> usize {
    text.width()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_editor_moves_by_characters_and_lines() {
        // Goal: multi-byte text never splits a character, and up/down keep
        // the column across lines of different lengths.
        let mut editor = Editor::default();
        editor.insert_str("héllo\r\nwörld!");
        assert_eq!(editor.text(), "héllo\nwörld!");
        editor.backspace();
        assert_eq!(editor.text(), "héllo\nwörld");
        editor.home();
        editor.right();
        editor.right();
        assert!(editor.up());
        editor.insert('X');
        assert_eq!(editor.text(), "héXllo\nwörld");
        assert!(!editor.up());
        assert!(editor.down());
        editor.end();
        editor.insert('?');
        assert_eq!(editor.text(), "héXllo\nwörld?");
        assert!(!editor.down());
        assert_eq!(editor.take(), "héXllo\nwörld?");
        assert!(editor.text().is_empty());
        editor.backspace();
        editor.delete();
        assert!(editor.text().is_empty());
    }

    #[test]
    fn the_editor_lays_out_wide_characters_and_finds_its_cursor() {
        // Goal: a row never passes the width, wide characters count two,
        // and the cursor lands after the last character typed.
        let mut editor = Editor::default();
        editor.insert_str("ab漢字cd\nx");
        let (rows, cursor) = editor.layout(4);
        assert_eq!(rows, vec!["ab漢", "字cd", "x"]);
        assert_eq!(cursor, (2, 1));
        let (rows, cursor) = Editor::with_text("abcd").layout(4);
        assert_eq!(rows, vec!["abcd", ""]);
        assert_eq!(cursor, (1, 0));
    }

    #[test]
    fn wrapping_keeps_words_and_cuts_only_what_cannot_fit() {
        // Goal: words move to the next line whole unless longer than a
        // line; explicit line breaks stay.
        assert_eq!(wrap("one two three", 7), vec!["one two", "three"]);
        assert_eq!(wrap("abcdefghij", 4), vec!["abcd", "efgh", "ij"]);
        assert_eq!(wrap("a\n\nb", 10), vec!["a", "", "b"]);
        assert_eq!(truncate("hello world", 8), "hello w…");
        assert_eq!(truncate("a\nb", 8), "a b");
    }
}
