//! A line editor over raw terminal bytes, without I/O: bytes from the serial line go in, the bytes
//! to echo and the lines typed come out.
//!
//! Decisions made here: any byte sequence is accepted (invalid UTF-8 and unknown escape
//! sequences are dropped, a NUL — what a BREAK reads as on a serial line — is ignored and ends any
//! half-read sequence); escape sequences may arrive split across reads; `CR`, `LF` and `CR LF` each
//! end one line; lines and history are bounded. Every character is taken to be one column wide
//! (the grammar is ASCII; anything wider only misplaces the cursor, never the text).

use crate::grammar::Completion;
use std::collections::VecDeque;

/// What the shell must do next, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Bytes to write to the terminal (echo, cursor movement, redraws).
    Write(Vec<u8>),
    /// A line was entered. The editor is idle until [`Editor::begin`] shows the next prompt.
    Line(String),
    /// Ctrl-C: the line was dropped. Call [`Editor::begin`] for a fresh prompt.
    Cancelled,
    /// Ctrl-D on an empty line.
    Eof,
    /// TAB: complete the text before the cursor, then call [`Editor::apply_completion`].
    Complete { before_cursor: String },
    /// `?`: list what may come after the text before the cursor, then call
    /// [`Editor::show_below`].
    Help { before_cursor: String },
}

/// Where the escape-sequence reader stands.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Escape {
    Ground,
    /// After ESC.
    Start,
    /// After `ESC [`: parameter and intermediate bytes so far.
    Csi(Vec<u8>),
    /// After `ESC O` (keypad mode arrows, Home, End).
    Ss3,
}

/// Longest escape sequence kept; longer ones are noise and are dropped.
const MAX_ESCAPE: usize = 16;

/// The line editor.
///
/// # Contract
///
/// Feed terminal bytes with [`handle_input`](Self::handle_input), then call
/// [`poll_action`](Self::poll_action) until it returns `None`, acting on each action in order.
/// Input is processed lazily, one action at a time, so what the shell does about an action
/// (turning echo off after the login name, applying a completion) takes effect for the very next
/// byte even when the person typed ahead. After `Line` or `Cancelled`, call
/// [`begin`](Self::begin) to show the next prompt.
#[derive(Debug)]
pub struct Editor {
    prompt: String,
    line: Vec<char>,
    cursor: usize,
    echo: bool,
    record_history: bool,
    max_line: usize,
    history: VecDeque<String>,
    max_history: usize,
    /// Position while browsing history, and the line being edited before browsing started.
    browsing: Option<(usize, Vec<char>)>,
    input: VecDeque<u8>,
    escape: Escape,
    /// A UTF-8 sequence being read: bytes so far and how many it needs in all.
    utf8: Vec<u8>,
    utf8_len: usize,
    after_cr: bool,
    out: Vec<u8>,
    queued: VecDeque<Action>,
}

impl Editor {
    /// An editor showing `prompt`, keeping at most `max_history` lines of history.
    pub fn new(prompt: &str, max_history: usize) -> Editor {
        Editor {
            prompt: prompt.to_string(),
            line: Vec::new(),
            cursor: 0,
            echo: true,
            record_history: true,
            max_line: 512,
            history: VecDeque::new(),
            max_history,
            browsing: None,
            input: VecDeque::new(),
            escape: Escape::Ground,
            utf8: Vec::new(),
            utf8_len: 0,
            after_cr: false,
            out: Vec::new(),
            queued: VecDeque::new(),
        }
    }

    /// Changes the prompt shown by the next [`begin`](Self::begin) or redraw.
    pub fn set_prompt(&mut self, prompt: &str) {
        self.prompt = prompt.to_string();
    }

    /// Echo off is password entry: nothing typed is shown or kept in history, and TAB and `?`
    /// are ordinary characters.
    pub fn set_echo(&mut self, echo: bool) {
        self.echo = echo;
    }

    /// Whether entered lines go into history (off for answers like a login name or `y`).
    pub fn set_history(&mut self, record: bool) {
        self.record_history = record;
    }

    /// The lines entered, oldest first.
    pub fn history(&self) -> impl Iterator<Item = &str> {
        self.history.iter().map(String::as_str)
    }

    /// The line being edited.
    pub fn line(&self) -> String {
        self.line.iter().collect()
    }

    /// Forgets typed-ahead input (after a login delay, typing during it must not count).
    pub fn discard_input(&mut self) {
        self.input.clear();
        self.escape = Escape::Ground;
        self.utf8.clear();
    }

    /// Starts a new line: returns the prompt to write.
    pub fn begin(&mut self) -> Vec<u8> {
        self.line.clear();
        self.cursor = 0;
        self.browsing = None;
        let mut out = std::mem::take(&mut self.out);
        out.extend_from_slice(self.prompt.as_bytes());
        out
    }

    /// Bytes read from the terminal.
    pub fn handle_input(&mut self, bytes: &[u8]) {
        self.input.extend(bytes);
    }

    /// The next thing to do; `None` once all input is consumed and written.
    #[must_use]
    pub fn poll_action(&mut self) -> Option<Action> {
        loop {
            if let Some(a) = self.queued.pop_front() {
                return Some(a);
            }
            match self.input.pop_front() {
                Some(b) => self.step(b),
                None => {
                    return (!self.out.is_empty())
                        .then(|| Action::Write(std::mem::take(&mut self.out)))
                }
            }
        }
    }

    /// Text printed above the line being edited (an asynchronous notice), which is then redrawn
    /// as it was.
    pub fn show_above(&mut self, text: &str) -> Vec<u8> {
        let mut out = std::mem::take(&mut self.out);
        out.extend_from_slice(b"\r\x1b[K");
        out.extend_from_slice(&crlf(text));
        self.redraw_into(&mut out);
        out
    }

    /// Text printed below the line being edited (a `?` listing), then the prompt and the line
    /// again.
    pub fn show_below(&mut self, text: &str) -> Vec<u8> {
        let mut out = std::mem::take(&mut self.out);
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(&crlf(text));
        self.redraw_into(&mut out);
        out
    }

    /// Applies a completion of the text before the cursor: the partial word becomes what all
    /// candidates share (plus a blank when only one fits); with several candidates and nothing
    /// more to add, they are listed below the line.
    pub fn apply_completion(&mut self, completion: &Completion) -> Vec<u8> {
        let before: String = self.line[..self.cursor].iter().collect();
        let start_byte = completion.start.min(before.len());
        let start = before
            .get(..start_byte)
            .map_or(self.cursor, |s| s.chars().count());
        let typed: Vec<char> = self.line[start..self.cursor].to_vec();
        let mut insert: Vec<char> = completion.common.chars().collect();
        if completion.is_unique() && self.line.get(self.cursor) != Some(&' ') {
            insert.push(' ');
        }
        if completion.candidates.is_empty() {
            self.out.push(0x07);
            return std::mem::take(&mut self.out);
        }
        let unchanged = insert == typed;
        if !unchanged && self.line.len() - typed.len() + insert.len() <= self.max_line {
            let old = self.cursor;
            let at_end = self.cursor == self.line.len();
            self.line.splice(start..self.cursor, insert.iter().copied());
            self.cursor = start + insert.len();
            if at_end && insert.starts_with(&typed) && self.echo {
                // The common case, typing at the end: only the new letters go out.
                let added: String = insert[typed.len()..].iter().collect();
                self.out.extend_from_slice(added.as_bytes());
            } else {
                self.repaint(old, start);
            }
        }
        if completion.candidates.len() > 1 && unchanged {
            return self.show_below(&format!("{}\n", completion.candidates.join("  ")));
        }
        std::mem::take(&mut self.out)
    }

    fn emit(&mut self, action: Action) {
        if !self.out.is_empty() {
            self.queued
                .push_back(Action::Write(std::mem::take(&mut self.out)));
        }
        self.queued.push_back(action);
    }

    fn step(&mut self, b: u8) {
        let after_cr = std::mem::replace(&mut self.after_cr, false);
        match std::mem::replace(&mut self.escape, Escape::Ground) {
            Escape::Ground => {}
            Escape::Start => match b {
                b'[' => return self.escape = Escape::Csi(Vec::new()),
                b'O' => return self.escape = Escape::Ss3,
                0x1b => return self.escape = Escape::Start,
                // ESC then anything else (Alt-key, a lone ESC): the ESC is dropped and the byte
                // read as itself.
                _ => {}
            },
            Escape::Csi(mut params) => match b {
                0x20..=0x3f if params.len() < MAX_ESCAPE => {
                    params.push(b);
                    return self.escape = Escape::Csi(params);
                }
                // Too long for any real key: keep reading it, keep none of it.
                0x20..=0x3f => return self.escape = Escape::Csi(params),
                0x40..=0x7e => return self.csi(&params, b),
                // A control byte inside a sequence: the sequence was noise; read the byte.
                _ => {}
            },
            Escape::Ss3 => {
                if let 0x40..=0x7e = b {
                    return self.csi(&[], b);
                }
            }
        }
        if self.utf8_len > 0 {
            if b & 0xc0 == 0x80 {
                self.utf8.push(b);
                if self.utf8.len() == self.utf8_len {
                    let bytes = std::mem::take(&mut self.utf8);
                    self.utf8_len = 0;
                    if let Some(c) = std::str::from_utf8(&bytes)
                        .ok()
                        .and_then(|s| s.chars().next())
                    {
                        if !c.is_control() {
                            self.insert(c);
                        }
                    }
                }
                return;
            }
            // Not a continuation: the sequence was invalid and is dropped.
            self.utf8.clear();
            self.utf8_len = 0;
        }
        match b {
            // NUL: a BREAK on a serial line. Nothing to do but forget half-read sequences.
            0x00 => {}
            0x01 => self.move_to(0),
            0x02 => self.move_to(self.cursor.saturating_sub(1)),
            0x03 => {
                if self.echo {
                    self.out.extend_from_slice(b"^C\r\n");
                } else {
                    self.out.extend_from_slice(b"\r\n");
                }
                self.line.clear();
                self.cursor = 0;
                self.browsing = None;
                self.emit(Action::Cancelled);
            }
            0x04 if self.line.is_empty() => self.emit(Action::Eof),
            0x04 => self.delete_at_cursor(),
            0x05 => self.move_to(self.line.len()),
            0x06 => self.move_to((self.cursor + 1).min(self.line.len())),
            0x08 | 0x7f => self.backspace(),
            0x09 if self.echo => {
                let before_cursor = self.line[..self.cursor].iter().collect();
                self.emit(Action::Complete { before_cursor });
            }
            0x0a if after_cr => {}
            0x0a | 0x0d => {
                self.after_cr = b == 0x0d;
                self.enter();
            }
            0x0b => {
                let old = self.cursor;
                self.line.truncate(self.cursor);
                self.repaint(old, old);
            }
            0x0c if self.echo => {
                self.out.extend_from_slice(b"\x1b[H\x1b[2J");
                let mut out = std::mem::take(&mut self.out);
                self.redraw_into(&mut out);
                self.out = out;
            }
            0x0e => self.history_next(),
            0x10 => self.history_prev(),
            0x15 => {
                let old = self.cursor;
                self.line.drain(..self.cursor);
                self.cursor = 0;
                self.repaint(old, 0);
            }
            0x17 => self.delete_word(),
            0x1b => self.escape = Escape::Start,
            b'?' if self.echo => {
                let before_cursor = self.line[..self.cursor].iter().collect();
                self.emit(Action::Help { before_cursor });
            }
            0x20..=0x7e => self.insert(char::from(b)),
            0xc2..=0xdf => self.start_utf8(b, 2),
            0xe0..=0xef => self.start_utf8(b, 3),
            0xf0..=0xf4 => self.start_utf8(b, 4),
            // Other control bytes, stray continuation bytes, bytes never valid in UTF-8.
            _ => {}
        }
    }

    fn start_utf8(&mut self, b: u8, len: usize) {
        self.utf8.clear();
        self.utf8.push(b);
        self.utf8_len = len;
    }

    fn csi(&mut self, params: &[u8], fin: u8) {
        match (params, fin) {
            (_, b'A') => self.history_prev(),
            (_, b'B') => self.history_next(),
            (_, b'C') => self.move_to((self.cursor + 1).min(self.line.len())),
            (_, b'D') => self.move_to(self.cursor.saturating_sub(1)),
            (_, b'H') | (b"1" | b"7", b'~') => self.move_to(0),
            (_, b'F') | (b"4" | b"8", b'~') => self.move_to(self.line.len()),
            (b"3", b'~') => self.delete_at_cursor(),
            _ => {}
        }
    }

    fn enter(&mut self) {
        self.out.extend_from_slice(b"\r\n");
        let line: String = self.line.iter().collect();
        if self.echo
            && self.record_history
            && !line.trim().is_empty()
            && self.history.back() != Some(&line)
        {
            if self.history.len() >= self.max_history {
                self.history.pop_front();
            }
            if self.max_history > 0 {
                self.history.push_back(line.clone());
            }
        }
        self.line.clear();
        self.cursor = 0;
        self.browsing = None;
        self.emit(Action::Line(line));
    }

    fn insert(&mut self, c: char) {
        if self.line.len() >= self.max_line {
            self.out.push(0x07);
            return;
        }
        let old = self.cursor;
        self.line.insert(self.cursor, c);
        self.cursor += 1;
        if self.cursor == self.line.len() {
            if self.echo {
                let mut buf = [0u8; 4];
                self.out
                    .extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            }
        } else {
            self.repaint(old, old);
        }
    }

    fn backspace(&mut self) {
        if self.cursor == 0 {
            return;
        }
        let old = self.cursor;
        self.cursor -= 1;
        self.line.remove(self.cursor);
        self.repaint(old, self.cursor);
    }

    fn delete_at_cursor(&mut self) {
        if self.cursor < self.line.len() {
            self.line.remove(self.cursor);
            self.repaint(self.cursor, self.cursor);
        }
    }

    fn delete_word(&mut self) {
        let mut start = self.cursor;
        while start > 0 && self.line[start - 1] == ' ' {
            start -= 1;
        }
        while start > 0 && self.line[start - 1] != ' ' {
            start -= 1;
        }
        let old = self.cursor;
        self.line.drain(start..self.cursor);
        self.cursor = start;
        self.repaint(old, start);
    }

    fn history_prev(&mut self) {
        let pos = match &self.browsing {
            None if self.history.is_empty() => return self.out.push(0x07),
            None => self.history.len() - 1,
            Some((0, _)) => return self.out.push(0x07),
            Some((p, _)) => p - 1,
        };
        let saved = match self.browsing.take() {
            Some((_, saved)) => saved,
            None => self.line.clone(),
        };
        self.browsing = Some((pos, saved));
        let entry: Vec<char> = self.history[pos].chars().collect();
        self.replace_line(entry);
    }

    fn history_next(&mut self) {
        let Some((pos, saved)) = self.browsing.take() else {
            return self.out.push(0x07);
        };
        if pos + 1 < self.history.len() {
            let entry: Vec<char> = self.history[pos + 1].chars().collect();
            self.browsing = Some((pos + 1, saved));
            self.replace_line(entry);
        } else {
            self.replace_line(saved);
        }
    }

    fn replace_line(&mut self, new: Vec<char>) {
        let old = self.cursor;
        self.line = new;
        self.cursor = self.line.len();
        self.repaint(old, 0);
    }

    fn move_to(&mut self, to: usize) {
        let from = self.cursor;
        self.cursor = to;
        if self.echo {
            move_cursor(&mut self.out, from, to);
        }
    }

    /// Brings the terminal up to date after an edit: the terminal cursor is at column `old`,
    /// and everything from column `from` on may have changed.
    fn repaint(&mut self, old: usize, from: usize) {
        if !self.echo {
            return;
        }
        move_cursor(&mut self.out, old, from);
        let tail: String = self.line[from..].iter().collect();
        self.out.extend_from_slice(tail.as_bytes());
        self.out.extend_from_slice(b"\x1b[K");
        move_cursor(&mut self.out, self.line.len(), self.cursor);
    }

    /// Prompt and line from the start of a fresh terminal line, cursor where it belongs.
    fn redraw_into(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.prompt.as_bytes());
        if self.echo {
            let line: String = self.line.iter().collect();
            out.extend_from_slice(line.as_bytes());
            move_cursor(out, self.line.len(), self.cursor);
        }
    }
}

fn move_cursor(out: &mut Vec<u8>, from: usize, to: usize) {
    use std::io::Write;
    // Writing into a Vec cannot fail.
    let _ = match from.cmp(&to) {
        std::cmp::Ordering::Greater => write!(out, "\x1b[{}D", from - to),
        std::cmp::Ordering::Less => write!(out, "\x1b[{}C", to - from),
        std::cmp::Ordering::Equal => Ok(()),
    };
}

/// Text with bare `\n` turned into `\r\n`: a raw terminal does not return the carriage itself.
pub fn crlf(text: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len() + 8);
    let mut prev = 0u8;
    for &b in text.as_bytes() {
        if b == b'\n' && prev != b'\r' {
            out.push(b'\r');
        }
        out.push(b);
        prev = b;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::grammar::complete;

    /// Feeds bytes and collects actions, answering completions and help the way the console
    /// does.
    fn run(ed: &mut Editor, bytes: &[u8]) -> (Vec<u8>, Vec<Action>) {
        ed.handle_input(bytes);
        let mut written = Vec::new();
        let mut actions = Vec::new();
        while let Some(a) = ed.poll_action() {
            match &a {
                Action::Write(w) => written.extend_from_slice(w),
                Action::Complete { before_cursor } => {
                    let c = complete(before_cursor);
                    written.extend(ed.apply_completion(&c));
                }
                Action::Help { .. } => written.extend(ed.show_below("LIST\n")),
                _ => {}
            }
            if !matches!(a, Action::Write(_)) {
                actions.push(a);
            }
        }
        (written, actions)
    }

    fn lines(actions: &[Action]) -> Vec<String> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Line(l) => Some(l.clone()),
                _ => None,
            })
            .collect()
    }

    fn ed() -> Editor {
        let mut e = Editor::new("sbc-a> ", 3);
        let _ = e.begin();
        e
    }

    #[test]
    fn typing_echoes_and_enter_completes_the_line() {
        let mut e = ed();
        let (w, a) = run(&mut e, b"show calls\r");
        assert_eq!(w, b"show calls\r\n");
        assert_eq!(a, [Action::Line("show calls".into())]);
    }

    #[test]
    fn cr_lf_and_lf_each_end_one_line() {
        let mut e = ed();
        let (_, a) = run(&mut e, b"a\r\nb\nc\r\rd\n\n");
        assert_eq!(lines(&a), ["a", "b", "c", "", "d", ""]);
    }

    #[test]
    fn cursor_keys_edit_in_the_middle() {
        let mut e = ed();
        // "shw calls", left x6 to after "sh", insert "o" -> "show calls"
        let (_, a) = run(
            &mut e,
            b"shw calls\x1b[D\x1b[D\x1b[D\x1b[D\x1b[D\x1b[D\x1b[Do\r",
        );
        assert_eq!(lines(&a), ["show calls"]);
        // Home / End in their various spellings, Delete, Ctrl-A/E.
        let _ = e.begin();
        let (_, a) = run(&mut e, b"Xshow\x1b[H\x1b[3~\x1b[F calls\r");
        assert_eq!(lines(&a), ["show calls"]);
        let _ = e.begin();
        let (_, a) = run(&mut e, b"how\x01s\x05 x\x1bOH\x1bOF\x1b[1~\x1b[4~\r");
        assert_eq!(lines(&a), ["show x"]);
    }

    #[test]
    fn backspace_both_ways_and_kill_keys() {
        let mut e = ed();
        let (_, a) = run(&mut e, b"shox\x7f\x08w\r");
        assert_eq!(lines(&a), ["shw"]);
        let _ = e.begin();
        let (_, a) = run(&mut e, b"garbage\x15show\r");
        assert_eq!(lines(&a), ["show"]);
        let _ = e.begin();
        let (_, a) = run(&mut e, b"show calls\x01\x06\x06\x06\x06\x0b\r");
        assert_eq!(lines(&a), ["show"]);
        let _ = e.begin();
        let (_, a) = run(&mut e, b"show bogus  \x17calls\r");
        assert_eq!(lines(&a), ["show calls"]);
        // Ctrl-D with text deletes under the cursor.
        let _ = e.begin();
        let (_, a) = run(&mut e, b"shoow\x02\x02\x04\r");
        assert_eq!(lines(&a), ["show"]);
    }

    #[test]
    fn ctrl_c_cancels_ctrl_d_ends_ctrl_l_redraws() {
        let mut e = ed();
        let (w, a) = run(&mut e, b"reboot\x03");
        assert_eq!(a, [Action::Cancelled]);
        assert!(w.ends_with(b"^C\r\n"));
        assert_eq!(e.line(), "");
        let _ = e.begin();
        let (_, a) = run(&mut e, b"\x04");
        assert_eq!(a, [Action::Eof]);
        let _ = e.begin();
        let (w, _) = run(&mut e, b"sh\x0c");
        assert!(w.ends_with(b"\x1b[H\x1b[2Jsbc-a> sh"), "{w:?}");
    }

    #[test]
    fn history_is_browsed_and_bounded() {
        let mut e = ed();
        for l in ["one", "two", "two", "three", "four"] {
            let _ = run(&mut e, format!("{l}\r").as_bytes());
            let _ = e.begin();
        }
        assert_eq!(e.history().collect::<Vec<_>>(), ["two", "three", "four"]);
        let (_, a) = run(&mut e, b"draft\x1b[A\x1b[A\r");
        assert_eq!(lines(&a), ["three"]);
        let _ = e.begin();
        // Up past the oldest stays there; down past the newest gives the draft back.
        let (_, a) = run(
            &mut e,
            b"dr\x1b[A\x1b[A\x1b[A\x1b[A\x1b[B\x1b[B\x1b[B\x1b[B\r",
        );
        assert_eq!(lines(&a), ["dr"]);
        let _ = e.begin();
        let (_, a) = run(&mut e, b"\x10\x10\x0e\r");
        assert_eq!(lines(&a), ["dr"]);
    }

    #[test]
    fn escape_sequences_split_across_reads() {
        let mut e = ed();
        let _ = run(&mut e, b"show x\x1b");
        let _ = run(&mut e, b"[");
        let _ = run(&mut e, b"D");
        let _ = run(&mut e, b"\x1b[3");
        let (_, a) = run(&mut e, b"~calls\r");
        assert_eq!(lines(&a), ["show calls"], "left, then delete the x");
    }

    #[test]
    fn invalid_utf8_nul_and_unknown_sequences_are_dropped() {
        let mut e = ed();
        let (_, a) = run(
            &mut e,
            b"s\xff\xfeh\xc3\x00o\x1b[99;99;99Zw\x1b\x00 \xe2\x82calls\x1b[1;5C\r",
        );
        assert_eq!(lines(&a), ["show calls"]);
        // Valid UTF-8 is kept (one column per character).
        let _ = e.begin();
        let (_, a) = run(&mut e, "caf\u{e9}\r".as_bytes());
        assert_eq!(lines(&a), ["caf\u{e9}"]);
        // A sequence longer than any real key is noise, and does not eat what follows.
        let _ = e.begin();
        let mut noise = b"\x1b[".to_vec();
        noise.extend(std::iter::repeat_n(b'1', 1000));
        noise.extend(b"~ok\r");
        let (_, a) = run(&mut e, &noise);
        assert_eq!(lines(&a), ["ok"]);
    }

    #[test]
    fn line_length_is_bounded() {
        let mut e = ed();
        let (w, a) = run(&mut e, &[b'a'; 2000]);
        assert!(a.is_empty());
        assert_eq!(e.line().len(), 512);
        assert!(w.contains(&0x07));
    }

    #[test]
    fn tab_completes_and_lists() {
        let mut e = ed();
        let (w, _) = run(&mut e, b"sh\t");
        assert_eq!(e.line(), "show ");
        assert!(w.ends_with(b"ow "), "{w:?}");
        let (_, _) = run(&mut e, b"s\t");
        assert_eq!(e.line(), "show s");
        // Ambiguous and nothing more to add: the candidates are listed, the line redrawn.
        let (w, _) = run(&mut e, b"\t");
        let text = String::from_utf8_lossy(&w);
        assert!(text.contains("system-state  stats"), "{text}");
        assert!(text.ends_with("sbc-a> show s"), "{text}");
        let (_, a) = run(&mut e, b"y\tx\r");
        assert_eq!(lines(&a), ["show system-state x"]);
        // Completion in the middle of a line keeps the rest.
        let _ = e.begin();
        let (_, a) = run(&mut e, b"sh calls\x01\x06\x06\t\r");
        assert_eq!(lines(&a), ["show calls"]);
        // Nothing fits: a bell.
        let _ = e.begin();
        let (w, _) = run(&mut e, b"zz\t");
        assert!(w.ends_with(b"\x07"));
    }

    #[test]
    fn question_mark_asks_for_help_with_the_text_before_the_cursor() {
        let mut e = ed();
        let (w, a) = run(&mut e, b"show ?");
        assert_eq!(
            a,
            [Action::Help {
                before_cursor: "show ".into()
            }]
        );
        assert!(w.ends_with(b"\r\nLIST\r\nsbc-a> show "));
        assert_eq!(e.line(), "show ");
    }

    #[test]
    fn typed_ahead_input_waits_for_the_shell() {
        // The password after the login name must not be echoed even when typed ahead.
        let mut e = ed();
        e.handle_input(b"admin\rsecret\r");
        let mut seen = Vec::new();
        while let Some(a) = e.poll_action() {
            match a {
                Action::Write(w) => seen.extend(w),
                Action::Line(l) if l == "admin" => {
                    e.set_echo(false);
                    e.set_prompt("Password: ");
                    seen.extend(e.begin());
                }
                Action::Line(l) => assert_eq!(l, "secret"),
                other => panic!("{other:?}"),
            }
        }
        let text = String::from_utf8_lossy(&seen);
        assert!(!text.contains("secret"), "{text}");
        assert!(text.contains("admin\r\nPassword: "), "{text}");
        assert_eq!(e.history().count(), 1, "the password is not in history");
        e.set_echo(true);
        e.set_history(false);
        let _ = e.begin();
        let (_, a) = run(&mut e, b"y\r");
        assert_eq!(lines(&a), ["y"]);
        assert_eq!(e.history().count(), 1, "nor answers with history off");
    }

    #[test]
    fn notices_above_redraw_the_partial_line() {
        let mut e = ed();
        let _ = run(&mut e, b"show cal\x1b[D");
        let w = e.show_above("%SYSTEM-STATE: online -> draining (button)\n");
        assert_eq!(
            w,
            b"\r\x1b[K%SYSTEM-STATE: online -> draining (button)\r\nsbc-a> show cal\x1b[1D"
        );
    }

    #[test]
    fn crlf_does_not_double() {
        assert_eq!(crlf("a\nb\r\nc"), b"a\r\nb\r\nc");
    }
}

#[cfg(test)]
mod proptests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Whatever arrives on the line, in whatever pieces, the editor neither panics nor lets
        /// its line grow past the bound, and a final CR always yields a line.
        #[test]
        fn never_panics_on_arbitrary_bytes(
            chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..64), 0..32),
            echo in any::<bool>(),
        ) {
            let mut e = Editor::new("> ", 4);
            e.set_echo(echo);
            let _ = e.begin();
            for chunk in &chunks {
                e.handle_input(chunk);
                while let Some(a) = e.poll_action() {
                    match a {
                        Action::Complete { before_cursor } => {
                            let c = crate::grammar::complete(&before_cursor);
                            let _ = e.apply_completion(&c);
                        }
                        Action::Help { before_cursor } => {
                            let text = match crate::grammar::choices(&before_cursor) {
                                Ok(c) => crate::grammar::format_choices(&c),
                                Err(err) => err.to_string(),
                            };
                            let _ = e.show_below(&text);
                        }
                        Action::Line(l) => {
                            prop_assert!(l.chars().count() <= 512);
                            let _ = crate::grammar::parse(&l);
                            let _ = e.begin();
                        }
                        Action::Cancelled | Action::Eof => { let _ = e.begin(); }
                        Action::Write(_) => {}
                    }
                }
                prop_assert!(e.line().chars().count() <= 512);
                let _ = e.show_above("notice\n");
            }
            // NUL (a BREAK) then CR always gets back to a clean line.
            e.handle_input(b"\x00\x18\r");
            let mut got_line = false;
            while let Some(a) = e.poll_action() {
                if matches!(a, Action::Line(_)) { got_line = true; }
            }
            prop_assert!(got_line);
        }

        /// The grammar functions accept any text.
        #[test]
        fn grammar_never_panics(line in "\\PC{0,40}") {
            let _ = crate::grammar::parse(&line);
            let _ = crate::grammar::choices(&line);
            let _ = crate::grammar::complete(&line);
            let _ = crate::grammar::help_text(Some(&line));
        }
    }
}
