//! The twin key file (`[twin] key_file`). Decides what a usable key file is: a regular file that
//! only its owner may read or write, whose content is the key.
//!
//! The content is the key as raw bytes, used as is for HMAC-SHA256; one trailing newline (`\n`
//! or `\r\n`) is dropped so that a key written with `echo` or an editor still matches its twin's.
//! Hex is not decoded: a hex string is simply a key of printable bytes, and `head -c 32
//! /dev/urandom > twin.key` works as well. Both nodes must hold the same bytes.

use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The shortest key accepted, in bytes (after the trailing newline is dropped). HMAC-SHA256
/// wants 32; 16 is the floor below which a key is a mistake, not a choice.
pub const MIN_KEY_LEN: usize = 16;

/// Why the twin key file was refused.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    #[error("cannot open the twin key file {path}: {source}")]
    Open {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("the twin key file {path} is not a regular file")]
    NotRegular { path: PathBuf },
    #[error(
        "the twin key file {path} has mode {mode:04o}: \
         group and others must have no access (0600 or stricter)"
    )]
    Permissions { path: PathBuf, mode: u32 },
    #[error("cannot read the twin key file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("the twin key in {path} is {len} bytes; at least {MIN_KEY_LEN} are needed")]
    TooShort { path: PathBuf, len: usize },
}

/// Reads the twin key from `path`, refusing a file others could read or a key too short to be
/// one. Mode and type are checked on the opened file, so a swap between check and read cannot
/// slip another file in.
pub fn read_key_file(path: &Path) -> Result<Vec<u8>, KeyFileError> {
    let path_buf = || path.to_path_buf();
    // O_NONBLOCK: opening a FIFO put in the key's place must fail the type check below, not
    // block the daemon waiting for a writer.
    let mut file: File = OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NONBLOCK)
        .open(path)
        .map_err(|source| KeyFileError::Open {
            path: path_buf(),
            source,
        })?;
    let read_err = |source| KeyFileError::Read {
        path: path_buf(),
        source,
    };
    let meta = file.metadata().map_err(read_err)?;
    if !meta.is_file() {
        return Err(KeyFileError::NotRegular { path: path_buf() });
    }
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(KeyFileError::Permissions {
            path: path_buf(),
            mode,
        });
    }
    let mut key = Vec::new();
    file.read_to_end(&mut key).map_err(read_err)?;
    if key.last() == Some(&b'\n') {
        key.pop();
        if key.last() == Some(&b'\r') {
            key.pop();
        }
    }
    if key.len() < MIN_KEY_LEN {
        return Err(KeyFileError::TooShort {
            path: path_buf(),
            len: key.len(),
        });
    }
    Ok(key)
}
