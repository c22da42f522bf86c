//! Fingerprints of build inputs, so that a step whose inputs did not change is skipped.
//!
//! A fingerprint is a sha256 over everything that decides a step's output: file names, modes and
//! contents of the input trees, plus free-form strings (versions, package lists, recipe
//! revisions). It is stored next to the output; equal fingerprints mean the output is current.

use anyhow::{Context, Result};
use sha2::{Digest, Sha256};
use std::fs;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// Accumulates the inputs of one build step.
#[derive(Debug, Default)]
pub struct Fingerprint {
    hasher: Sha256,
}

impl Fingerprint {
    pub fn new(step: &str) -> Self {
        let mut f = Self::default();
        f.text(step);
        f
    }

    /// Adds a string; length-prefixed so that ("ab","c") and ("a","bc") differ.
    pub fn text(&mut self, s: &str) -> &mut Self {
        self.hasher.update((s.len() as u64).to_le_bytes());
        self.hasher.update(s.as_bytes());
        self
    }

    /// Adds a file's content, or a marker when it does not exist (its absence is an input too).
    pub fn file(&mut self, path: &Path) -> Result<&mut Self> {
        if !path.exists() {
            self.text("absent");
            return Ok(self);
        }
        self.text("file");
        let digest = sha256_file(path)?;
        self.text(&digest);
        Ok(self)
    }

    /// Adds a directory tree: every entry's relative path, type, mode and content, in a stable
    /// order. A missing directory counts as empty.
    pub fn tree(&mut self, dir: &Path) -> Result<&mut Self> {
        let mut entries = Vec::new();
        if dir.exists() {
            walk(dir, dir, &mut entries)?;
        }
        entries.sort();
        for rel in entries {
            let path = dir.join(&rel);
            let meta = fs::symlink_metadata(&path)
                .with_context(|| format!("reading metadata of {}", path.display()))?;
            self.text(&rel);
            self.text(&format!("{:o}", meta.permissions().mode()));
            if meta.file_type().is_symlink() {
                let target = fs::read_link(&path)
                    .with_context(|| format!("reading link {}", path.display()))?;
                self.text(&target.to_string_lossy());
            } else if meta.is_file() {
                self.file(&path)?;
            }
        }
        Ok(self)
    }

    pub fn hex(&self) -> String {
        hex(&self.hasher.clone().finalize())
    }
}

fn walk(base: &Path, dir: &Path, out: &mut Vec<String>) -> Result<()> {
    let rd = fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))?;
    for entry in rd {
        let entry = entry.with_context(|| format!("listing {}", dir.display()))?;
        let path = entry.path();
        let rel = path
            .strip_prefix(base)
            .unwrap_or(&path)
            .to_string_lossy()
            .into_owned();
        let ft = entry
            .file_type()
            .with_context(|| format!("reading type of {}", path.display()))?;
        out.push(rel);
        if ft.is_dir() {
            walk(base, &path, out)?;
        }
    }
    Ok(())
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The sha256 of a file, as lowercase hex.
pub fn sha256_file(path: &Path) -> Result<String> {
    let mut file =
        fs::File::open(path).with_context(|| format!("opening {} to hash it", path.display()))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file
            .read(&mut buf)
            .with_context(|| format!("reading {} to hash it", path.display()))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex(&hasher.finalize()))
}

/// True when `stamp` holds exactly `fingerprint` (the step's output is current).
pub fn is_current(stamp: &Path, fingerprint: &str) -> bool {
    fs::read_to_string(stamp)
        .map(|s| s.trim() == fingerprint)
        .unwrap_or(false)
}

/// Records that the step's output now matches `fingerprint`.
pub fn mark_current(stamp: &Path, fingerprint: &str) -> Result<()> {
    fs::write(stamp, format!("{fingerprint}\n"))
        .with_context(|| format!("writing build stamp {}", stamp.display()))
}
