//! The operator's intent on disk, so that a box taken out of service stays out across a restart
//! or a reboot (SPEC §2), and a first boot comes up online.
//!
//! # What is kept, and what it means at start
//!
//! Only the *intent* is kept: `online`, or `offline` for both draining and offline. At start:
//!
//! - no file (first boot): **online**;
//! - `online`: **online**;
//! - `offline` — whether the box was draining or already offline when it stopped: **offline**.
//!   A restarted engine holds no dialogs of its own any more (they died with it, or the twin
//!   carries them), so there is nothing left to drain, and coming back draining would still
//!   accept calls to registered endpoints: that is rejoining service, which an operator who took
//!   the box out does not expect. Returning is an explicit act (`set-system-state online` or a
//!   long press);
//! - a file that cannot be read or understood: **offline**, and the error (naming the file) is
//!   returned for the owner to report. Coming up online could put a box that was taken out for
//!   maintenance back into service by itself; offline is the side that cannot do harm, and the
//!   operator is told why.
//!
//! # Format
//!
//! One JSON object, versioned so a later build can read or refuse an older file knowingly:
//! `{"version":1,"intent":"offline","cause":"operator","saved_at_unix_ms":1763770000000}`.
//!
//! # Atomicity
//!
//! [`save`] writes a temporary file in the same directory, fsyncs it, renames it over the real
//! one and fsyncs the directory: after a crash at any point the file is either the old record
//! or the new one, never a mix. A temporary left by a crash is ignored by [`load`] and replaced
//! by the next [`save`].

use crate::{Cause, SystemState};
use serde::{Deserialize, Serialize};
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

/// The file's name inside the data directory.
pub const FILE_NAME: &str = "system-state.json";
const TEMP_NAME: &str = ".system-state.json.tmp";
/// The format version this build writes and reads.
pub const FORMAT_VERSION: u32 = 1;

/// What the operator last asked for: in service or out of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Intent {
    Online,
    Offline,
}

impl Intent {
    /// The intent a state stands for: draining is the way to offline.
    pub fn of(state: SystemState) -> Intent {
        match state {
            SystemState::Online => Intent::Online,
            SystemState::Draining | SystemState::Offline => Intent::Offline,
        }
    }

    /// The state to come up in for this intent (see the module doc).
    pub fn start_state(self) -> SystemState {
        match self {
            Intent::Online => SystemState::Online,
            Intent::Offline => SystemState::Offline,
        }
    }
}

/// One saved record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Record {
    pub version: u32,
    pub intent: Intent,
    /// Why the state last changed (for the operator reading the file or the start-up log).
    pub cause: Cause,
    /// Wall-clock time of the save, milliseconds since the Unix epoch (informative only).
    pub saved_at_unix_ms: u64,
}

impl Record {
    /// A record of the current format.
    pub fn new(intent: Intent, cause: Cause, saved_at_unix_ms: u64) -> Record {
        Record {
            version: FORMAT_VERSION,
            intent,
            cause,
            saved_at_unix_ms,
        }
    }
}

/// Why the saved state could not be read back.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read saved system state {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("saved system state {path} is corrupt: {reason}")]
    Corrupt { path: PathBuf, reason: String },
}

/// Why the state could not be saved; the file on disk is unchanged.
#[derive(Debug, thiserror::Error)]
#[error("cannot save system state to {path} ({step}): {source}")]
pub struct SaveError {
    pub path: PathBuf,
    /// Which step failed: `write`, `fsync`, `rename`, `fsync directory`.
    pub step: &'static str,
    pub source: std::io::Error,
}

/// The path of the record in `dir`.
pub fn path(dir: &Path) -> PathBuf {
    dir.join(FILE_NAME)
}

/// The record as written to disk, newline included.
pub fn encode(record: &Record) -> String {
    // A struct of plain fields always serialises; the fallback only keeps this infallible.
    let mut s = serde_json::to_string(record).unwrap_or_default();
    s.push('\n');
    s
}

/// Reads a record from the bytes of the file at `path` (used only in messages).
pub fn decode(bytes: &[u8], path: &Path) -> Result<Record, LoadError> {
    let corrupt = |reason: String| LoadError::Corrupt {
        path: path.to_path_buf(),
        reason,
    };
    #[derive(Deserialize)]
    struct VersionOnly {
        version: u32,
    }
    let v: VersionOnly = serde_json::from_slice(bytes).map_err(|e| corrupt(e.to_string()))?;
    if v.version != FORMAT_VERSION {
        return Err(corrupt(format!(
            "format version {} (this build reads {FORMAT_VERSION})",
            v.version
        )));
    }
    serde_json::from_slice(bytes).map_err(|e| corrupt(e.to_string()))
}

/// Reads the record in `dir`: `Ok(None)` when there is none yet (first start).
pub fn load(dir: &Path) -> Result<Option<Record>, LoadError> {
    let path = path(dir);
    match std::fs::read(&path) {
        Ok(bytes) => decode(&bytes, &path).map(Some),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(LoadError::Io { path, source }),
    }
}

/// Writes `record` to `dir` atomically (see the module doc).
pub fn save(dir: &Path, record: &Record) -> Result<(), SaveError> {
    let final_path = path(dir);
    let temp = dir.join(TEMP_NAME);
    let fail = |step, source| SaveError {
        path: final_path.clone(),
        step,
        source,
    };
    let result = (|| {
        let mut f = File::create(&temp).map_err(|e| fail("write", e))?;
        f.write_all(encode(record).as_bytes())
            .map_err(|e| fail("write", e))?;
        f.sync_all().map_err(|e| fail("fsync", e))?;
        drop(f);
        std::fs::rename(&temp, &final_path).map_err(|e| fail("rename", e))?;
        // The rename itself lives in the directory: without this it may not survive a power cut.
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| fail("fsync directory", e))
    })();
    if result.is_err() {
        // Best effort: a stale temporary is harmless (ignored by load) but untidy.
        let _ = std::fs::remove_file(&temp);
    }
    result
}

/// What to start in, decided from the data directory.
#[derive(Debug)]
pub struct Restored {
    /// The state to start the [`Machine`](crate::Machine) in.
    pub state: SystemState,
    /// The record read, if one was.
    pub record: Option<Record>,
    /// Why the record could not be used: the owner reports it (the box then starts offline).
    pub problem: Option<LoadError>,
}

/// Chooses the start state from what [`load`] found (see the module doc for the rules).
pub fn decide(loaded: Result<Option<Record>, LoadError>) -> Restored {
    match loaded {
        Ok(None) => Restored {
            state: SystemState::Online,
            record: None,
            problem: None,
        },
        Ok(Some(record)) => Restored {
            state: record.intent.start_state(),
            record: Some(record),
            problem: None,
        },
        Err(problem) => Restored {
            state: SystemState::Offline,
            record: None,
            problem: Some(problem),
        },
    }
}

/// [`load`] then [`decide`].
pub fn restore(dir: &Path) -> Restored {
    decide(load(dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn first_start_without_a_file_is_online() {
        let dir = tempfile::tempdir().unwrap();
        let r = restore(dir.path());
        assert_eq!(r.state, SystemState::Online);
        assert!(r.record.is_none() && r.problem.is_none());
    }

    #[test]
    fn round_trip_keeps_the_intent() {
        let dir = tempfile::tempdir().unwrap();
        for (state, start) in [
            (SystemState::Offline, SystemState::Offline),
            (SystemState::Online, SystemState::Online),
            // A box that was draining when it stopped does not rejoin service.
            (SystemState::Draining, SystemState::Offline),
        ] {
            let rec = Record::new(Intent::of(state), Cause::Operator, 1_763_770_000_000);
            save(dir.path(), &rec).unwrap();
            let r = restore(dir.path());
            assert_eq!(r.record, Some(rec));
            assert_eq!(r.state, start, "saved while {state}");
        }
    }

    #[test]
    fn the_format_is_versioned_json() {
        let rec = Record::new(Intent::Offline, Cause::GuardExpired, 5);
        assert_eq!(
            encode(&rec),
            "{\"version\":1,\"intent\":\"offline\",\"cause\":\"guard-expired\",\"saved_at_unix_ms\":5}\n"
        );
    }

    #[test]
    fn a_corrupt_file_starts_offline_and_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = path(dir.path());
        for bad in [
            &b""[..],
            b"{\"version\":1,\"intent\":\"onl",
            b"\xff\xfe binary",
            b"{\"version\":1,\"intent\":\"sideways\",\"cause\":\"operator\",\"saved_at_unix_ms\":0}",
            b"{\"version\":2,\"intent\":\"online\"}",
        ] {
            std::fs::write(&p, bad).unwrap();
            let r = restore(dir.path());
            assert_eq!(r.state, SystemState::Offline, "{bad:?}");
            let msg = r.problem.expect("a problem is reported").to_string();
            assert!(msg.contains(&p.display().to_string()), "{msg}");
            assert!(msg.contains("corrupt"), "{msg}");
        }
        let msg = decode(b"{\"version\":2}", &p).unwrap_err().to_string();
        assert!(msg.contains("format version 2"), "{msg}");
    }

    #[test]
    fn an_unreadable_file_starts_offline() {
        let dir = tempfile::tempdir().unwrap();
        // A directory where the file should be: reading it fails with something other than
        // "not found".
        std::fs::create_dir(path(dir.path())).unwrap();
        let r = restore(dir.path());
        assert_eq!(r.state, SystemState::Offline);
        assert!(matches!(r.problem, Some(LoadError::Io { .. })));
    }

    #[test]
    fn atomic_write_leaves_no_partial_file() {
        let dir = tempfile::tempdir().unwrap();
        let old = Record::new(Intent::Offline, Cause::Operator, 1);
        save(dir.path(), &old).unwrap();
        assert_eq!(files(dir.path()), [FILE_NAME], "no temporary left behind");
        // A crash in the middle of a later save leaves a partial temporary: the record is
        // still the old one, and the next save replaces the temporary.
        std::fs::write(dir.path().join(TEMP_NAME), b"{\"version\":1,\"inte").unwrap();
        assert_eq!(load(dir.path()).unwrap(), Some(old));
        let new = Record::new(Intent::Online, Cause::Button, 2);
        save(dir.path(), &new).unwrap();
        assert_eq!(load(dir.path()).unwrap(), Some(new));
        assert_eq!(files(dir.path()), [FILE_NAME]);
    }

    #[test]
    fn a_failed_save_says_where_and_keeps_the_old_record() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("no-such-dir");
        let e = save(&missing, &Record::new(Intent::Online, Cause::Operator, 0)).unwrap_err();
        assert_eq!(e.step, "write");
        assert!(e.to_string().contains("no-such-dir"), "{e}");
        // The rename target is a non-empty directory: rename fails, the temporary is removed.
        let target = path(dir.path());
        std::fs::create_dir(&target).unwrap();
        std::fs::write(target.join("x"), b"x").unwrap();
        let e = save(dir.path(), &Record::new(Intent::Online, Cause::Operator, 0)).unwrap_err();
        assert_eq!(e.step, "rename");
        assert!(!dir.path().join(TEMP_NAME).exists());
    }
}
