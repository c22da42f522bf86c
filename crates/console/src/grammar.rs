//! The operator command grammar of SPEC §5: one tree of words, walked by the parser, by `?` and
//! by tab completion, so the three can never disagree.
//!
//! Decisions made here: keywords match case-insensitively and by unique prefix (`sh sys`);
//! an exact keyword wins over a longer one it is a prefix of; numbers are plain decimal with a
//! range per argument; `--hold-ms=2500` is read as `--hold-ms 2500`. What a command *does* is
//! decided by `sbcd`; this module only turns text into a [`control::Request`].

use control::{Request, TargetState};
use std::fmt;

/// A line the operator typed, understood.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Something for `sbcd`: send it over the control socket.
    Request(Request),
    /// `help [topic]`: answered by the front end with [`help_text`].
    Help(Option<String>),
    /// `exit`: the front end ends the session.
    Exit,
    /// `install-update ...`: the front end installs an update bundle through RAUC (SPEC §8),
    /// after confirmation, and restarts into it. Not for `sbcd`: updating is the system's job.
    Install(InstallSource),
}

/// Where `install-update` takes its bundle from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InstallSource {
    /// Attached media (a USB stick): the one bundle found there, or the one named.
    Media { file: Option<String> },
    /// A server on the core network.
    Url(String),
}

/// What the command tree accepts at one position.
#[derive(Debug)]
enum Word {
    Key(&'static str),
    Number {
        name: &'static str,
        min: u64,
        max: u64,
    },
    /// Any one word, kept as typed (a file name, a URL); `check` says why one is refused.
    Text {
        name: &'static str,
        check: fn(&str) -> Result<(), &'static str>,
    },
}

/// Numbers collected on the way down the tree.
#[derive(Debug, Default)]
struct Args {
    numbers: Vec<u64>,
    texts: Vec<String>,
}

#[derive(Debug)]
struct Node {
    word: Word,
    help: &'static str,
    /// Present when a command may end after this word.
    build: Option<fn(&Args) -> Command>,
    children: &'static [Node],
}

const fn key(
    word: &'static str,
    help: &'static str,
    build: Option<fn(&Args) -> Command>,
    children: &'static [Node],
) -> Node {
    Node {
        word: Word::Key(word),
        help,
        build,
        children,
    }
}

const fn number(
    name: &'static str,
    min: u64,
    max: u64,
    help: &'static str,
    build: fn(&Args) -> Command,
) -> Node {
    Node {
        word: Word::Number { name, min, max },
        help,
        build: Some(build),
        children: &[],
    }
}

const fn text(
    name: &'static str,
    help: &'static str,
    check: fn(&str) -> Result<(), &'static str>,
    build: fn(&Args) -> Command,
) -> Node {
    Node {
        word: Word::Text { name, check },
        help,
        build: Some(build),
        children: &[],
    }
}

fn req(r: Request) -> Command {
    Command::Request(r)
}

fn first_number(a: &Args) -> u64 {
    a.numbers.first().copied().unwrap_or_default()
}

fn first_text(a: &Args) -> String {
    a.texts.first().cloned().unwrap_or_default()
}

/// A bundle's file name on the media: a plain name or a path below the medium's top folder,
/// never one that climbs out of it.
fn check_bundle_file(word: &str) -> Result<(), &'static str> {
    if word.split('/').any(|part| part == "..") {
        return Err("a file on the media, without '..'");
    }
    if !word.ends_with(".raucb") {
        return Err("an update bundle's name ends in .raucb");
    }
    Ok(())
}

/// A bundle's address: `http://` or `https://` and a host.
fn check_url(word: &str) -> Result<(), &'static str> {
    let rest = word
        .strip_prefix("http://")
        .or_else(|| word.strip_prefix("https://"))
        .ok_or("an address that starts with http:// or https://")?;
    if rest.split('/').next().unwrap_or_default().is_empty() {
        return Err("an address with a host (http://HOST[:PORT]/PATH)");
    }
    Ok(())
}

/// Longest guard an operator may ask for: a week. Longer is almost certainly a typo.
const MAX_GUARD_SECS: u64 = control::MAX_GUARD_SECS;
const MAX_LOG_LINES: u64 = 100_000;
const MAX_HOLD_MS: u64 = 600_000;

static SHOW: [Node; 11] = [
    key(
        "system-state",
        "online/draining/offline, counts, guard time left",
        Some(|_| req(Request::ShowSystemState)),
        &[],
    ),
    key(
        "calls",
        "active INVITE sessions",
        Some(|_| req(Request::ShowCalls)),
        &[],
    ),
    key(
        "registrations",
        "cached registration bindings",
        Some(|_| req(Request::ShowRegistrations)),
        &[],
    ),
    key(
        "upstreams",
        "upstream servers and whether they are in rotation",
        Some(|_| req(Request::ShowUpstreams)),
        &[],
    ),
    key(
        "twin",
        "the twin appliance: role, peer, last keep-alive",
        Some(|_| req(Request::ShowTwin)),
        &[],
    ),
    key(
        "health",
        "uptime, thread pinning, watchdog, recoveries",
        Some(|_| req(Request::ShowHealth)),
        &[],
    ),
    key(
        "version",
        "the image, daemon and kernel versions",
        Some(|_| req(Request::ShowVersion)),
        &[],
    ),
    key("stats", "counters", Some(|_| req(Request::ShowStats)), &[]),
    key(
        "metrics",
        "the counters and states in the Prometheus text format",
        Some(|_| req(Request::ShowMetrics)),
        &[],
    ),
    key(
        "panel",
        "front panel: LEDs and button",
        Some(|_| req(Request::ShowPanel)),
        &[],
    ),
    key(
        "log",
        "recent log lines",
        Some(|_| req(Request::ShowLog { lines: None })),
        &[number(
            "lines",
            1,
            MAX_LOG_LINES,
            "how many of the most recent lines",
            |a| {
                req(Request::ShowLog {
                    lines: Some(u32::try_from(first_number(a)).unwrap_or(u32::MAX)),
                })
            },
        )],
    ),
];

static GUARD: [Node; 1] = [number(
    "seconds",
    0,
    MAX_GUARD_SECS,
    "end the drain at most this many seconds from now",
    |a| {
        req(Request::SetSystemState {
            target: TargetState::Offline,
            guard_secs: Some(first_number(a)),
        })
    },
)];

static OFFLINE_OPTIONS: [Node; 1] = [key(
    "guard",
    "override the configured guard time",
    None,
    &GUARD,
)];

static SET_STATE: [Node; 2] = [
    key(
        "offline",
        "drain: finish calls, turn new ones away, then go offline",
        Some(|_| {
            req(Request::SetSystemState {
                target: TargetState::Offline,
                guard_secs: None,
            })
        }),
        &OFFLINE_OPTIONS,
    ),
    key(
        "online",
        "serve again at once (aborts a drain)",
        Some(|_| {
            req(Request::SetSystemState {
                target: TargetState::Online,
                guard_secs: None,
            })
        }),
        &[],
    ),
];

static HOLD_MS: [Node; 1] = [number(
    "ms",
    0,
    MAX_HOLD_MS,
    "how long the button is held, in milliseconds",
    |a| {
        req(Request::PanelPress {
            hold_ms: first_number(a),
        })
    },
)];

static PRESS: [Node; 1] = [key("--hold-ms", "hold time", None, &HOLD_MS)];

static PANEL: [Node; 1] = [key(
    "press",
    "press the simulated panel button (sim board)",
    None,
    &PRESS,
)];

static MEDIA_FILE: [Node; 1] = [text(
    "file",
    "this bundle (a .raucb file on the media)",
    check_bundle_file,
    |a| {
        Command::Install(InstallSource::Media {
            file: Some(first_text(a)),
        })
    },
)];

static URL: [Node; 1] = [text(
    "url",
    "the bundle's address (http://HOST[:PORT]/PATH.raucb)",
    check_url,
    |a| Command::Install(InstallSource::Url(first_text(a))),
)];

static INSTALL: [Node; 2] = [
    key(
        "media",
        "from attached media (USB stick): the one bundle found there",
        Some(|_| Command::Install(InstallSource::Media { file: None })),
        &MEDIA_FILE,
    ),
    key("url", "from a server on the core network", None, &URL),
];

static ROOT: [Node; 9] = [
    key("show", "display information", None, &SHOW),
    key(
        "set-system-state",
        "take the box out of service or back in",
        None,
        &SET_STATE,
    ),
    key(
        "switchover",
        "move this node's service addresses to the twin",
        Some(|_| req(Request::Switchover)),
        &[],
    ),
    key(
        "reboot",
        "restart the appliance",
        Some(|_| req(Request::Reboot)),
        &[],
    ),
    key(
        "install-update",
        "install a signed update bundle into the other root slot and restart into it",
        None,
        &INSTALL,
    ),
    key("panel", "simulated front panel", None, &PANEL),
    key(
        "help",
        "list commands, or explain one",
        Some(|_| Command::Help(None)),
        // Topic words are walked from the root (see `walk`).
        &[],
    ),
    key("exit", "end this session", Some(|_| Command::Exit), &[]),
    // What many router consoles call `exit`: accepting both saves a wrong guess.
    key("logout", "end this session", Some(|_| Command::Exit), &[]),
];

/// Why a line is not a command. `Display` says what was wrong and, when one is near, suggests
/// what the operator probably meant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParseError {
    /// Nothing but blanks.
    Empty,
    /// A word that fits nowhere at its position.
    Unknown {
        word: String,
        /// The words understood before it, in full (`show`).
        after: String,
        /// What would have fitted.
        expected: Vec<String>,
        /// The nearest complete command or word, when one is close enough to be a typo.
        suggestion: Option<String>,
    },
    /// An abbreviation that fits several words.
    Ambiguous {
        word: String,
        after: String,
        candidates: Vec<String>,
    },
    /// The line stopped before the command was complete.
    Incomplete {
        after: String,
        expected: Vec<String>,
    },
    /// A number was expected and the word is not one in range.
    BadNumber {
        word: String,
        name: String,
        min: u64,
        max: u64,
    },
    /// A word that is not what the argument takes (`why` says what it takes).
    BadText {
        word: String,
        name: String,
        why: &'static str,
    },
    /// Words after a complete command that takes no more.
    Unexpected { word: String, after: String },
}

impl ParseError {
    /// The command or word this error proposes instead, if any.
    pub fn suggestion(&self) -> Option<&str> {
        match self {
            ParseError::Unknown { suggestion, .. } => suggestion.as_deref(),
            _ => None,
        }
    }
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParseError::Empty => f.write_str("empty command (type 'help' or '?')"),
            ParseError::Unknown {
                word,
                after,
                expected,
                suggestion,
            } => {
                write!(f, "unknown word '{word}'")?;
                if !after.is_empty() {
                    write!(f, " after '{after}'")?;
                }
                match suggestion {
                    Some(s) => write!(f, "; did you mean '{s}'?"),
                    None => write!(f, "; expected one of: {}", expected.join(", ")),
                }
            }
            ParseError::Ambiguous {
                word,
                after,
                candidates,
            } => {
                write!(f, "'{word}' is ambiguous")?;
                if !after.is_empty() {
                    write!(f, " after '{after}'")?;
                }
                write!(f, ": could be {}", candidates.join(", "))
            }
            ParseError::Incomplete { after, expected } => write!(
                f,
                "incomplete command '{after}'; expected one of: {}",
                expected.join(", ")
            ),
            ParseError::BadNumber {
                word,
                name,
                min,
                max,
            } => write!(
                f,
                "'{word}' is not a valid <{name}>: expected a whole number from {min} to {max}"
            ),
            ParseError::BadText { word, name, why } => {
                write!(f, "'{word}' is not a valid <{name}>: expected {why}")
            }
            ParseError::Unexpected { word, after } => {
                write!(f, "unexpected '{word}': '{after}' takes nothing more")
            }
        }
    }
}

impl std::error::Error for ParseError {}

/// A word of the line with its byte range.
#[derive(Debug, Clone, Copy)]
struct Token<'a> {
    text: &'a str,
    start: usize,
}

fn tokenize<'a>(line: &'a str) -> Vec<Token<'a>> {
    let mut out = Vec::new();
    let mut start = None;
    let push = |s: usize, e: usize, out: &mut Vec<Token<'a>>| {
        let text = &line[s..e];
        // `--flag=value` is the same as `--flag value`.
        if let (true, Some(eq)) = (text.starts_with("--"), text.find('=')) {
            out.push(Token {
                text: &text[..eq],
                start: s,
            });
            if eq + 1 < text.len() {
                out.push(Token {
                    text: &text[eq + 1..],
                    start: s + eq + 1,
                });
            }
        } else {
            out.push(Token { text, start: s });
        }
    };
    for (i, c) in line.char_indices() {
        match (c.is_whitespace(), start) {
            (true, Some(s)) => {
                push(s, i, &mut out);
                start = None;
            }
            (false, None) => start = Some(i),
            _ => {}
        }
    }
    if let Some(s) = start {
        push(s, line.len(), &mut out);
    }
    out
}

fn level_nodes(level: Level) -> Vec<&'static Node> {
    match level {
        Level::Root => ROOT.iter().collect(),
        Level::Children(c) => c.iter().collect(),
    }
}

/// Where in the tree the walk stands: the root (also where help topics are walked) or the
/// children of a node.
#[derive(Debug, Clone, Copy)]
enum Level {
    Root,
    Children(&'static [Node]),
}

/// How a node is shown to people: its keyword, or `<name>` for an argument.
fn display(node: &Node) -> String {
    match node.word {
        Word::Key(k) => k.to_string(),
        Word::Number { name, .. } | Word::Text { name, .. } => format!("<{name}>"),
    }
}

fn resolve(level: Level, word: &str, after: &str) -> Result<&'static Node, ParseError> {
    let nodes = level_nodes(level);
    let lower = word.to_ascii_lowercase();
    let keys = nodes.iter().filter_map(|n| match n.word {
        Word::Key(k) => Some((k, *n)),
        _ => None,
    });
    if let Some((_, n)) = keys.clone().find(|(k, _)| *k == lower) {
        return Ok(n);
    }
    let prefixed: Vec<(&str, &Node)> = keys.filter(|(k, _)| k.starts_with(&lower)).collect();
    match prefixed.as_slice() {
        [(_, n)] => return Ok(n),
        [_, _, ..] => {
            return Err(ParseError::Ambiguous {
                word: word.to_string(),
                after: after.to_string(),
                candidates: prefixed.iter().map(|(k, _)| k.to_string()).collect(),
            })
        }
        [] => {}
    }
    for n in &nodes {
        match n.word {
            Word::Number { name, min, max } => {
                let bad = || ParseError::BadNumber {
                    word: word.to_string(),
                    name: name.to_string(),
                    min,
                    max,
                };
                if !word.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(bad());
                }
                let v: u64 = word.parse().map_err(|_| bad())?;
                if v < min || v > max {
                    return Err(bad());
                }
                return Ok(n);
            }
            Word::Text { name, check } => {
                return match check(word) {
                    Ok(()) => Ok(n),
                    Err(why) => Err(ParseError::BadText {
                        word: word.to_string(),
                        name: name.to_string(),
                        why,
                    }),
                };
            }
            Word::Key(_) => {}
        }
    }
    Err(ParseError::Unknown {
        word: word.to_string(),
        after: after.to_string(),
        expected: nodes.iter().map(|n| display(n)).collect(),
        suggestion: suggest(level, &lower),
    })
}

/// The nearest keyword at this level; failing that, at the root, the nearest complete command
/// whose last keyword is near (`calls` suggests `show calls`).
fn suggest(level: Level, word: &str) -> Option<String> {
    let limit = |k: &str| if k.len().min(word.len()) <= 4 { 1 } else { 2 };
    let nodes = level_nodes(level);
    let best = nodes
        .iter()
        .filter_map(|n| match n.word {
            Word::Key(k) => Some((distance(k, word), k)),
            _ => None,
        })
        .filter(|(d, k)| *d <= limit(k))
        .min();
    if let Some((_, k)) = best {
        return Some(k.to_string());
    }
    if let Level::Root = level {
        let mut all = Vec::new();
        collect_commands(Level::Root, &mut Vec::new(), &mut all);
        return all
            .into_iter()
            .filter_map(|(path, _)| {
                let words: Vec<&str> = path.split(' ').collect();
                words
                    .iter()
                    .skip(1)
                    .filter(|w| !w.starts_with('<'))
                    .map(|w| distance(w, word))
                    .min()
                    .map(|d| (d, words.len(), path.clone()))
                    .filter(|(d, _, _)| *d <= limit(word))
            })
            .min()
            .map(|(_, _, path)| path);
    }
    None
}

/// Optimal string alignment distance: Levenshtein plus swapping two neighbours, the commonest
/// typing slip (`shwo`).
fn distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let w = b.len() + 1;
    let mut d = vec![0usize; (a.len() + 1) * w];
    for i in 0..=a.len() {
        d[i * w] = i;
    }
    for (j, cell) in d.iter_mut().enumerate().take(w) {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut v = (d[(i - 1) * w + j] + 1)
                .min(d[i * w + j - 1] + 1)
                .min(d[(i - 1) * w + j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                v = v.min(d[(i - 2) * w + j - 2] + 1);
            }
            d[i * w + j] = v;
        }
    }
    d[a.len() * w + b.len()]
}

/// Every complete command under `level` as (usage, help of its last word).
fn collect_commands(level: Level, prefix: &mut Vec<String>, out: &mut Vec<(String, &'static str)>) {
    for n in level_nodes(level) {
        prefix.push(display(n));
        if n.build.is_some() {
            out.push((prefix.join(" "), n.help));
        }
        if !n.children.is_empty() {
            collect_commands(Level::Children(n.children), prefix, out);
        }
        prefix.pop();
    }
}

/// The state of a walk over some words of a line.
struct Walk {
    level: Level,
    /// The node of the last word, when there was one.
    last: Option<&'static Node>,
    /// The words understood so far, canonical (`show system-state`).
    path: Vec<String>,
    args: Args,
}

/// Walks `tokens`; after `help` the topic is walked from the root, so `help sh` completes and
/// lists like `sh`.
fn walk(tokens: &[Token<'_>]) -> Result<Walk, ParseError> {
    let mut w = Walk {
        level: Level::Root,
        last: None,
        path: Vec::new(),
        args: Args::default(),
    };
    for tok in tokens {
        let after = w.path.join(" ");
        if let (Some(_), Level::Children(&[])) = (w.last, w.level) {
            return Err(ParseError::Unexpected {
                word: tok.text.to_string(),
                after,
            });
        }
        let n = resolve(w.level, tok.text, &after)?;
        match n.word {
            Word::Number { .. } => {
                if let Ok(v) = tok.text.parse() {
                    w.args.numbers.push(v);
                }
                w.path.push(tok.text.to_string());
            }
            Word::Text { .. } => {
                w.args.texts.push(tok.text.to_string());
                w.path.push(tok.text.to_string());
            }
            Word::Key(_) => w.path.push(display(n)),
        }
        w.last = Some(n);
        if matches!(n.word, Word::Key("help")) && w.path.len() == 1 {
            // The topic is walked from the root, so `help sh` lists and completes like `sh`.
            w.level = Level::Root;
            w.path.clear();
        } else {
            w.level = Level::Children(n.children);
        }
    }
    Ok(w)
}

/// Parses one command line (an `sbcctl` argv joined with spaces, or a console line).
pub fn parse(line: &str) -> Result<Command, ParseError> {
    let tokens = tokenize(line);
    if tokens.is_empty() {
        return Err(ParseError::Empty);
    }
    // `help <topic>` is parsed leniently: any topic is accepted and explained as well as
    // possible by `help_text`, since asking for help must never itself be an error.
    if let Ok(n) = resolve(Level::Root, tokens[0].text, "") {
        if matches!(n.word, Word::Key("help")) {
            let topic: Vec<&str> = tokens[1..].iter().map(|t| t.text).collect();
            return Ok(Command::Help((!topic.is_empty()).then(|| topic.join(" "))));
        }
    }
    let w = walk(&tokens)?;
    let after = w.path.join(" ");
    match w.last.and_then(|n| n.build) {
        Some(build) => Ok(build(&w.args)),
        None => Err(ParseError::Incomplete {
            after,
            expected: level_nodes(w.level).iter().map(|n| display(n)).collect(),
        }),
    }
}

/// One thing that may come next, for `?`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Choice {
    /// A keyword, `<name>` for an argument, or `<cr>` when the command may end here.
    pub word: String,
    pub help: &'static str,
}

/// What may come at the end of `before_cursor`: the words that start with a partly typed word,
/// or, after a blank, everything that may follow. An error when the words typed so far are not
/// a command prefix (the console prints it).
pub fn choices(before_cursor: &str) -> Result<Vec<Choice>, ParseError> {
    let tokens = tokenize(before_cursor);
    let (done, partial) = split_partial(before_cursor, &tokens);
    let w = walk(done)?;
    let mut out = Vec::new();
    let partial_lower = partial.map(|p| p.text.to_ascii_lowercase());
    for n in level_nodes(w.level) {
        let fits = match (&n.word, &partial_lower) {
            (_, None) => true,
            (Word::Key(k), Some(p)) => k.starts_with(p.as_str()),
            (Word::Number { .. }, Some(p)) => p.bytes().all(|b| b.is_ascii_digit()),
            (Word::Text { .. }, Some(_)) => true,
        };
        if fits {
            out.push(Choice {
                word: display(n),
                help: n.help,
            });
        }
    }
    if partial.is_none() && w.last.is_some_and(|n| n.build.is_some()) {
        out.push(Choice {
            word: "<cr>".to_string(),
            help: "run the command",
        });
    }
    if out.is_empty() {
        if let Some(p) = partial {
            // Report the typo the same way the parser would.
            resolve(w.level, p.text, &w.path.join(" "))?;
        }
    }
    Ok(out)
}

/// The `?` listing as the console prints it: one choice per line, help aligned.
pub fn format_choices(choices: &[Choice]) -> String {
    let width = choices.iter().map(|c| c.word.len()).max().unwrap_or(0);
    let mut out = String::new();
    for c in choices {
        out.push_str(&format!("  {:<width$}  {}\n", c.word, c.help));
    }
    out
}

/// Tab completion of the word that ends at the cursor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Completion {
    /// Byte offset in the line where the word being completed starts.
    pub start: usize,
    /// Every keyword that fits there (arguments are not completed).
    pub candidates: Vec<String>,
    /// The longest text all candidates share: what replaces the line from `start` to the
    /// cursor. With one candidate it is that word, and the editor adds a blank after it.
    pub common: String,
}

impl Completion {
    /// True when exactly one word fits: it is complete and a blank may follow.
    pub fn is_unique(&self) -> bool {
        self.candidates.len() == 1
    }
}

/// Completes the word before the cursor (empty candidates when nothing fits).
pub fn complete(before_cursor: &str) -> Completion {
    let tokens = tokenize(before_cursor);
    let (done, partial) = split_partial(before_cursor, &tokens);
    let start = partial.map_or(before_cursor.len(), |p| p.start);
    let prefix = partial.map_or(String::new(), |p| p.text.to_ascii_lowercase());
    let candidates: Vec<String> = match walk(done) {
        Ok(w) => level_nodes(w.level)
            .iter()
            .filter_map(|n| match n.word {
                Word::Key(k) if k.starts_with(&prefix) => Some(k.to_string()),
                _ => None,
            })
            .collect(),
        Err(_) => Vec::new(),
    };
    let common = common_prefix(&candidates)
        .unwrap_or_else(|| partial.map_or(String::new(), |p| p.text.to_string()));
    Completion {
        start,
        candidates,
        common,
    }
}

fn common_prefix(words: &[String]) -> Option<String> {
    let first = words.first()?;
    let mut len = first.len();
    for w in &words[1..] {
        len = len.min(
            first
                .bytes()
                .zip(w.bytes())
                .take_while(|(a, b)| a == b)
                .count(),
        );
    }
    Some(first[..len].to_string())
}

/// Splits the tokens into those complete and the word being typed (none after a blank).
fn split_partial<'a, 'b>(
    line: &str,
    tokens: &'b [Token<'a>],
) -> (&'b [Token<'a>], Option<Token<'a>>) {
    let ends_in_word = line.chars().last().is_some_and(|c| !c.is_whitespace());
    match tokens.split_last() {
        Some((last, done)) if ends_in_word => (done, Some(*last)),
        _ => (tokens, None),
    }
}

/// The answer to `help [topic]`: every command with what it does, or those under the topic.
pub fn help_text(topic: Option<&str>) -> String {
    let mut all = Vec::new();
    let mut heading = String::from(
        "Commands (words may be abbreviated; '?' lists what may come next, TAB completes):\n",
    );
    match topic {
        None => collect_commands(Level::Root, &mut Vec::new(), &mut all),
        Some(t) => {
            let tokens = tokenize(t);
            match walk(&tokens) {
                Ok(w) => {
                    let mut prefix = w.path.clone();
                    if w.last.is_some_and(|n| n.build.is_some()) {
                        all.push((prefix.join(" "), w.last.map_or("", |n| n.help)));
                    }
                    collect_commands(w.level, &mut prefix, &mut all);
                    heading = String::new();
                }
                Err(e) => return format!("no help for '{t}': {e}\n"),
            }
        }
    }
    let width = all.iter().map(|(u, _)| u.len()).max().unwrap_or(0);
    let mut out = heading;
    for (usage, help) in all {
        out.push_str(&format!("  {usage:<width$}  {help}\n"));
    }
    if topic.is_none() {
        out.push_str(&format!("  {:<width$}  {}\n", "?", "what may come next"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(line: &str) -> Command {
        match parse(line) {
            Ok(c) => c,
            Err(e) => panic!("{line:?}: {e}"),
        }
    }

    #[test]
    fn every_spec_command_parses() {
        let cases = [
            ("show system-state", req(Request::ShowSystemState)),
            (
                "set-system-state offline",
                req(Request::SetSystemState {
                    target: TargetState::Offline,
                    guard_secs: None,
                }),
            ),
            (
                "set-system-state offline guard 30",
                req(Request::SetSystemState {
                    target: TargetState::Offline,
                    guard_secs: Some(30),
                }),
            ),
            (
                "set-system-state online",
                req(Request::SetSystemState {
                    target: TargetState::Online,
                    guard_secs: None,
                }),
            ),
            ("show calls", req(Request::ShowCalls)),
            ("show registrations", req(Request::ShowRegistrations)),
            ("show upstreams", req(Request::ShowUpstreams)),
            ("show twin", req(Request::ShowTwin)),
            ("switchover", req(Request::Switchover)),
            ("show health", req(Request::ShowHealth)),
            ("show version", req(Request::ShowVersion)),
            ("show stats", req(Request::ShowStats)),
            ("show metrics", req(Request::ShowMetrics)),
            ("show panel", req(Request::ShowPanel)),
            ("show log", req(Request::ShowLog { lines: None })),
            ("show log 20", req(Request::ShowLog { lines: Some(20) })),
            ("reboot", req(Request::Reboot)),
            ("help", Command::Help(None)),
            ("help show log", Command::Help(Some("show log".into()))),
            ("exit", Command::Exit),
            ("logout", Command::Exit),
            (
                "panel press --hold-ms 2500",
                req(Request::PanelPress { hold_ms: 2500 }),
            ),
            (
                "panel press --hold-ms=300",
                req(Request::PanelPress { hold_ms: 300 }),
            ),
        ];
        for (line, want) in cases {
            assert_eq!(ok(line), want, "{line}");
        }
    }

    #[test]
    fn abbreviations_blanks_and_case() {
        assert_eq!(ok("sh sys"), req(Request::ShowSystemState));
        assert_eq!(ok("  SHOW   Calls  "), req(Request::ShowCalls));
        assert_eq!(
            ok("se of g 5"),
            req(Request::SetSystemState {
                target: TargetState::Offline,
                guard_secs: Some(5)
            })
        );
        assert_eq!(ok("sw"), req(Request::Switchover));
        assert_eq!(ok("sh st"), req(Request::ShowStats));
        assert_eq!(ok("sh\tlog\t7"), req(Request::ShowLog { lines: Some(7) }));
    }

    #[test]
    fn ambiguous_abbreviation_lists_the_candidates() {
        let e = parse("s").unwrap_err();
        assert!(matches!(&e, ParseError::Ambiguous { candidates, .. } if candidates.len() == 3));
        assert!(e.to_string().contains("set-system-state"), "{e}");
        let e = parse("show s").unwrap_err();
        assert_eq!(
            e.to_string(),
            "'s' is ambiguous after 'show': could be system-state, stats"
        );
        // `set-system-state o` fits offline and online.
        assert!(matches!(
            parse("set-system-state o"),
            Err(ParseError::Ambiguous { .. })
        ));
    }

    #[test]
    fn typos_suggest_the_nearest_command() {
        let e = parse("shwo calls").unwrap_err();
        assert_eq!(e.suggestion(), Some("show"));
        assert_eq!(e.to_string(), "unknown word 'shwo'; did you mean 'show'?");
        let e = parse("show regstrations").unwrap_err();
        assert_eq!(e.suggestion(), Some("registrations"));
        assert!(e.to_string().contains("after 'show'"), "{e}");
        let e = parse("set-sytem-state online").unwrap_err();
        assert_eq!(e.suggestion(), Some("set-system-state"));
        // A second-level word typed alone points at the full command.
        assert_eq!(parse("calls").unwrap_err().suggestion(), Some("show calls"));
        assert_eq!(
            parse("upstream").unwrap_err().suggestion(),
            Some("show upstreams")
        );
        // Far from everything: no guess, the list of what fits instead.
        let e = parse("frobnicate").unwrap_err();
        assert_eq!(e.suggestion(), None);
        assert!(
            e.to_string()
                .contains("expected one of: show, set-system-state"),
            "{e}"
        );
    }

    #[test]
    fn incomplete_and_extra_words_are_reported() {
        assert_eq!(parse("   "), Err(ParseError::Empty));
        let e = parse("show").unwrap_err();
        assert!(matches!(&e, ParseError::Incomplete { after, .. } if after == "show"));
        assert!(e.to_string().contains("system-state"), "{e}");
        let e = parse("set-system-state offline guard").unwrap_err();
        assert!(e.to_string().contains("<seconds>"), "{e}");
        let e = parse("show calls now").unwrap_err();
        assert_eq!(
            e,
            ParseError::Unexpected {
                word: "now".into(),
                after: "show calls".into()
            }
        );
        assert!(matches!(
            parse("set-system-state online guard 5"),
            Err(ParseError::Unexpected { .. })
        ));
        assert!(matches!(
            parse("panel press"),
            Err(ParseError::Incomplete { .. })
        ));
    }

    #[test]
    fn numbers_are_checked() {
        for bad in [
            "-1",
            "ten",
            "1e3",
            "99999999999999999999999",
            "604801",
            "0x10",
        ] {
            let line = format!("set-system-state offline guard {bad}");
            let e = parse(&line).unwrap_err();
            assert!(matches!(e, ParseError::BadNumber { .. }), "{line}: {e:?}");
        }
        assert!(parse("set-system-state offline guard 0").is_ok());
        assert!(matches!(
            parse("show log 0"),
            Err(ParseError::BadNumber { .. })
        ));
        let e = parse("show log many").unwrap_err();
        assert_eq!(
            e.to_string(),
            "'many' is not a valid <lines>: expected a whole number from 1 to 100000"
        );
    }

    #[test]
    fn install_update_takes_media_or_an_address_kept_as_typed() {
        assert_eq!(
            ok("install-update media"),
            Command::Install(InstallSource::Media { file: None })
        );
        assert_eq!(
            ok("inst med Updates/SBC-2.raucb"),
            Command::Install(InstallSource::Media {
                file: Some("Updates/SBC-2.raucb".into())
            })
        );
        assert_eq!(
            ok("install-update url http://10.0.2.2:8080/Sbc.raucb"),
            Command::Install(InstallSource::Url("http://10.0.2.2:8080/Sbc.raucb".into()))
        );
        let e = parse("install-update media ../etc/x.raucb").unwrap_err();
        assert!(matches!(e, ParseError::BadText { .. }), "{e:?}");
        let e = parse("install-update media notes.txt").unwrap_err();
        assert_eq!(
            e.to_string(),
            "'notes.txt' is not a valid <file>: expected an update bundle's name ends in .raucb"
        );
        for bad in ["ftp://host/x.raucb", "http:///x.raucb", "x.raucb"] {
            let e = parse(&format!("install-update url {bad}")).unwrap_err();
            assert!(matches!(e, ParseError::BadText { .. }), "{bad}: {e:?}");
        }
        assert!(matches!(
            parse("install-update url"),
            Err(ParseError::Incomplete { .. })
        ));
        assert!(matches!(
            parse("install-update media a.raucb b.raucb"),
            Err(ParseError::Unexpected { .. })
        ));
    }

    #[test]
    fn question_mark_lists_what_may_come_next() {
        let words = |line: &str| -> Vec<String> {
            choices(line).unwrap().into_iter().map(|c| c.word).collect()
        };
        let root = words("");
        assert!(root.contains(&"show".to_string()) && root.contains(&"exit".to_string()));
        assert!(!root.contains(&"<cr>".to_string()));
        assert_eq!(words("s"), ["show", "set-system-state", "switchover"]);
        assert_eq!(words("show s"), ["system-state", "stats"]);
        assert_eq!(words("show log "), ["<lines>", "<cr>"]);
        assert_eq!(words("set-system-state offline "), ["guard", "<cr>"]);
        assert_eq!(words("set-system-state offline guard "), ["<seconds>"]);
        assert_eq!(words("show calls "), ["<cr>"]);
        assert_eq!(words("install-update media "), ["<file>", "<cr>"]);
        assert_eq!(words("install-update url h"), ["<url>"]);
        let topics = words("help ");
        assert!(topics.contains(&"show".to_string()) && topics.contains(&"<cr>".to_string()));
        assert_eq!(words("help show s"), ["system-state", "stats"]);
        let e = choices("shwo ").unwrap_err();
        assert_eq!(e.suggestion(), Some("show"));
        assert!(choices("show xyz").is_err());
    }

    #[test]
    fn tab_completes_keywords() {
        let c = complete("sh");
        assert_eq!(
            (c.start, c.common.as_str(), c.is_unique()),
            (0, "show", true)
        );
        let c = complete("show sy");
        assert_eq!((c.start, c.common.as_str()), (5, "system-state"));
        let c = complete("show s");
        assert_eq!(c.candidates, ["system-state", "stats"]);
        assert_eq!(c.common, "s");
        let c = complete("s");
        assert_eq!(c.common, "s");
        assert_eq!(c.candidates.len(), 3);
        let c = complete("set-system-state o");
        assert_eq!(c.common, "o");
        let c = complete("set-system-state of");
        assert_eq!(c.common, "offline");
        let c = complete("show ");
        assert_eq!(c.start, 5);
        assert_eq!(c.candidates.len(), 11);
        let c = complete("panel press --h");
        assert_eq!(c.common, "--hold-ms");
        // Nothing to complete after a bad word or at a number.
        assert!(complete("shwo c").candidates.is_empty());
        assert!(complete("show log ").candidates.is_empty());
        // Help topics complete like commands.
        assert_eq!(complete("help sh").common, "show");
        assert_eq!(complete("help show ca").common, "calls");
        // Abbreviated earlier words still lead the way.
        assert_eq!(complete("sh reg").common, "registrations");
    }

    #[test]
    fn help_lists_commands_and_topics() {
        let all = help_text(None);
        for usage in [
            "show system-state",
            "set-system-state offline guard <seconds>",
            "show log <lines>",
            "panel press --hold-ms <ms>",
            "exit",
        ] {
            assert!(all.contains(usage), "{usage} missing from\n{all}");
        }
        let show = help_text(Some("sh"));
        assert!(
            show.contains("show calls") && !show.contains("reboot"),
            "{show}"
        );
        let one = help_text(Some("set-system-state offline"));
        assert!(
            one.contains("set-system-state offline guard <seconds>"),
            "{one}"
        );
        assert!(help_text(Some("bogus")).starts_with("no help for 'bogus'"));
    }

    #[test]
    fn distance_counts_swaps_as_one() {
        assert_eq!(distance("show", "shwo"), 1);
        assert_eq!(distance("", "abc"), 3);
        assert_eq!(distance("kitten", "sitting"), 3);
    }
}
