//! Debian packages fetched for the image without installing them on the host: the kernel,
//! busybox for the initramfs, and the mirror list the root file system is bootstrapped from.
//!
//! Everything goes through the host's own apt configuration (the mirror it already uses), and
//! downloaded `.deb` files stay in the cache so that a second build needs no network.

use crate::util;
use anyhow::{bail, Context, Result};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The Debian release the image is built from.
pub const SUITE: &str = "bookworm";

/// `deb URI SUITE main` lines for every bookworm suite the host's apt sources name (the release,
/// its updates and its security suite), so that the image gets the same packages as the host
/// would. Falls back to deb.debian.org when the host names none.
pub fn mirror_lines() -> Vec<String> {
    let mut lines = Vec::new();
    let mut files = vec![PathBuf::from("/etc/apt/sources.list")];
    if let Ok(rd) = fs::read_dir("/etc/apt/sources.list.d") {
        let mut extra: Vec<PathBuf> = rd.flatten().map(|e| e.path()).collect();
        extra.sort();
        files.extend(extra);
    }
    for file in files {
        let Ok(text) = fs::read_to_string(&file) else {
            continue;
        };
        if file.extension().is_some_and(|e| e == "sources") {
            deb822_lines(&text, &mut lines);
        } else {
            one_line_lines(&text, &mut lines);
        }
    }
    lines.dedup();
    if lines.is_empty() {
        lines.push(format!("deb http://deb.debian.org/debian {SUITE} main"));
    }
    lines
}

fn keep(uri: &str, suite: &str, lines: &mut Vec<String>) {
    let is_debian_suite = suite == SUITE || suite.starts_with(&format!("{SUITE}-"));
    // Backports would change package versions behind our back; the image uses the release.
    if is_debian_suite && !suite.ends_with("-backports") && uri.starts_with("http") {
        let line = format!("deb {uri} {suite} main");
        if !lines.contains(&line) {
            lines.push(line);
        }
    }
}

fn one_line_lines(text: &str, lines: &mut Vec<String>) {
    for line in text.lines() {
        let words: Vec<&str> = line
            .split_whitespace()
            .filter(|w| !w.starts_with('['))
            .collect();
        if words.len() >= 4 && words[0] == "deb" && words[3..].contains(&"main") {
            keep(words[1], words[2], lines);
        }
    }
}

fn deb822_lines(text: &str, lines: &mut Vec<String>) {
    for stanza in text.split("\n\n") {
        let field = |name: &str| {
            stanza
                .lines()
                .find_map(|l| l.strip_prefix(name).map(|v| v.trim().to_string()))
                .unwrap_or_default()
        };
        let types = field("Types:");
        let components = field("Components:");
        if !types.split_whitespace().any(|t| t == "deb")
            || !components.split_whitespace().any(|c| c == "main")
        {
            continue;
        }
        for uri in field("URIs:").split_whitespace() {
            for suite in field("Suites:").split_whitespace() {
                keep(uri, suite, lines);
            }
        }
    }
}

/// The versioned kernel package that `meta` (e.g. `linux-image-amd64`) depends on, resolved
/// through the host's apt lists.
pub fn resolve_kernel_package(meta: &str) -> Result<String> {
    let out = Command::new("apt-cache")
        .args(["depends", meta])
        .output()
        .with_context(|| format!("running apt-cache depends {meta}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    for line in text.lines() {
        if let Some(dep) = line.trim().strip_prefix("Depends: ") {
            if dep.starts_with("linux-image-") {
                return Ok(dep.trim().to_string());
            }
        }
    }
    bail!(
        "apt-cache depends {meta} names no linux-image package (run `apt-get update` first?): {}",
        text.trim()
    )
}

/// Downloads `package` into `dir` unless a `.deb` of it is already there; returns its path.
pub fn download(package: &str, dir: &Path) -> Result<PathBuf> {
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    if let Some(found) = find_deb(package, dir)? {
        return Ok(found);
    }
    eprintln!("xtask image: downloading {package}");
    let fetch = || {
        Command::new("apt-get")
            // Root downloads into a folder the _apt user cannot write; say so instead of warning.
            .args(["download", "-qq", "-o", "APT::Sandbox::User=root", package])
            .current_dir(dir)
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    };
    if !fetch() {
        // Stale apt lists name files the mirror no longer has: refresh once and retry.
        util::run(Command::new("apt-get").args(["update", "-qq"]))?;
        if !fetch() {
            bail!("apt-get download {package} failed (in {})", dir.display());
        }
    }
    find_deb(package, dir)?.with_context(|| {
        format!(
            "apt-get download {package} left no .deb in {}",
            dir.display()
        )
    })
}

fn find_deb(package: &str, dir: &Path) -> Result<Option<PathBuf>> {
    let prefix = format!("{package}_");
    let rd = fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))?;
    for entry in rd.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with(&prefix) && name.ends_with(".deb") {
            return Ok(Some(entry.path()));
        }
    }
    Ok(None)
}

/// Unpacks a `.deb`'s files into `dest` (no maintainer scripts run).
pub fn unpack(deb: &Path, dest: &Path) -> Result<()> {
    fs::create_dir_all(dest).with_context(|| format!("creating {}", dest.display()))?;
    util::run(Command::new("dpkg-deb").arg("-x").arg(deb).arg(dest))
}
