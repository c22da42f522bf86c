//! The operator's side of the appliance, without any I/O: the command grammar of SPEC §5, the
//! line editor of the serial console, and login checks. `sbc-console` (serial line) and `sbcctl`
//! (scripts) are the thin shells around it; neither decides anything this crate can.
//!
//! Not here: talking to `sbcd` (that is `control::client`), terminals and sleeping (the shells).
//!
//! # API in one paragraph
//!
//! [`parse`]`(line) -> Result<`[`Command`]`, `[`ParseError`]`>` turns one line (for `sbcctl`,
//! its argv joined with blanks) into `Command::Request(control::Request)` to send to `sbcd`,
//! `Command::Help(topic)` to answer locally with [`help_text`], or `Command::Exit`. Words may be
//! abbreviated to a unique prefix (`sh sys`); a `ParseError`'s `Display` says what was wrong and
//! suggests the nearest command. [`choices`] answers `?` and [`complete`] answers TAB for the text
//! before the cursor. Service-affecting requests are marked by
//! `control::Request::is_service_affecting`: front ends confirm those.
//!
//! The rest: [`Editor`] (a sans-IO line editor over raw terminal bytes, handle/poll style) and
//! [`auth`] (Argon2 password check, hashing, the delay after failed logins), and [`login`]
//! (what a login leads to: the factory password changed before any command; the idle logout).

pub mod auth;
pub mod editor;
pub mod grammar;
pub mod login;

pub use editor::{Action, Editor};
pub use grammar::{
    choices, complete, format_choices, help_text, parse, Choice, Command, Completion,
    InstallSource, ParseError,
};
