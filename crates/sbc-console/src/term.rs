//! The terminal: standard input and output, or a serial device opened by path; raw mode while
//! the console runs.
//!
//! Raw mode (termios `cfmakeraw`, one byte at a time) hands every key to the line editor: no
//! echo, no signals from Ctrl-C, no CR/LF translation, and a BREAK reads as a NUL byte (BRKINT
//! and PARMRK are off). A serial device is set to 115200 8N1 (SPEC §5); CLOCAL is left as the
//! port has it, so a modem-controlled line still reports hang-ups.

use nix::sys::termios::{self, BaudRate, SetArg, SpecialCharacterIndices, Termios};
use std::fs::{File, OpenOptions};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// Puts the terminal back as it was when dropped.
#[derive(Debug)]
pub struct RawMode {
    fd: OwnedFd,
    saved: Termios,
}

impl Drop for RawMode {
    fn drop(&mut self) {
        // Nothing useful to do if this fails: the terminal is gone.
        let _ = termios::tcsetattr(&self.fd, SetArg::TCSANOW, &self.saved);
    }
}

/// Raw mode on `fd` when it is a terminal; `None` for pipes and files.
pub fn raw_mode(fd: &File, set_speed: bool) -> std::io::Result<Option<RawMode>> {
    let Ok(saved) = termios::tcgetattr(fd.as_fd()) else {
        return Ok(None);
    };
    let mut t = saved.clone();
    termios::cfmakeraw(&mut t);
    t.control_chars[SpecialCharacterIndices::VMIN as usize] = 1;
    t.control_chars[SpecialCharacterIndices::VTIME as usize] = 0;
    if set_speed {
        termios::cfsetspeed(&mut t, BaudRate::B115200).map_err(std::io::Error::from)?;
    }
    termios::tcsetattr(fd.as_fd(), SetArg::TCSANOW, &t).map_err(std::io::Error::from)?;
    Ok(Some(RawMode {
        fd: fd.as_fd().try_clone_to_owned()?,
        saved,
    }))
}

/// Opens a terminal device for the console: not as our controlling terminal (a hang-up must
/// not kill us), and without waiting for a carrier.
pub fn open_device(path: &Path) -> std::io::Result<File> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(nix::libc::O_NOCTTY | nix::libc::O_NONBLOCK)
        .open(path)?;
    // Reads block from here on: the reader thread waits for bytes.
    let flags = nix::fcntl::fcntl(&file, nix::fcntl::FcntlArg::F_GETFL)?;
    let mut flags = nix::fcntl::OFlag::from_bits_truncate(flags);
    flags.remove(nix::fcntl::OFlag::O_NONBLOCK);
    nix::fcntl::fcntl(&file, nix::fcntl::FcntlArg::F_SETFL(flags))?;
    Ok(file)
}

/// Drops what was typed but not yet read (typing during a login delay does not count).
pub fn discard_typeahead(fd: &File) {
    // Not a terminal: nothing to flush.
    let _ = termios::tcflush(fd.as_fd(), termios::FlushArg::TCIFLUSH);
}

/// Turns echo off on a terminal (for `--hash-password`), restored when the guard drops.
pub fn no_echo(fd: &File) -> Option<RawMode> {
    let saved = termios::tcgetattr(fd.as_fd()).ok()?;
    let mut t = saved.clone();
    t.local_flags.remove(termios::LocalFlags::ECHO);
    termios::tcsetattr(fd.as_fd(), SetArg::TCSANOW, &t).ok()?;
    Some(RawMode {
        fd: fd.as_fd().try_clone_to_owned().ok()?,
        saved,
    })
}
