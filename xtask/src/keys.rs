//! `cargo xtask keys [--force]`: the development key pair that signs update bundles
//! (`cargo xtask bundle`), and the certificate the image trusts.
//!
//! `out/keys/bundle.key.pem` (the private key, mode 0600) and `out/keys/bundle.cert.pem` (a
//! self-signed X.509 certificate, ECDSA P-256, ten years). Both live under `out/`, which git
//! ignores: a development key is made on each machine and never committed. A release is signed
//! with a key kept elsewhere; its certificate replaces this one in the image.

use crate::util;
use anyhow::{Context, Result};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The key pair's files.
#[derive(Debug, Clone)]
pub struct KeyPair {
    pub key: PathBuf,
    pub cert: PathBuf,
}

/// Where the development key pair lives.
pub fn dev_pair() -> KeyPair {
    let dir = util::root().join("out/keys");
    KeyPair {
        key: dir.join("bundle.key.pem"),
        cert: dir.join("bundle.cert.pem"),
    }
}

/// `cargo xtask keys`'s options.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Make a new pair even when one exists (bundles signed with the old key are then refused
    /// by images built with the new certificate).
    #[arg(long)]
    force: bool,
}

pub fn run(args: Args) -> Result<()> {
    let force = args.force;
    let pair = dev_pair();
    if pair.key.exists() && pair.cert.exists() && !force {
        println!(
            "keys: {} and {} exist (--force makes new ones; bundles signed with the old key are then refused by images built with the new certificate)",
            pair.key.display(),
            pair.cert.display()
        );
        return Ok(());
    }
    make(&pair, "SBC development bundle signing")?;
    println!("key:  {}", pair.key.display());
    println!("cert: {}", pair.cert.display());
    Ok(())
}

/// The development key pair, made first when it does not exist.
pub fn ensure() -> Result<KeyPair> {
    let pair = dev_pair();
    if !(pair.key.exists() && pair.cert.exists()) {
        make(&pair, "SBC development bundle signing")?;
        eprintln!(
            "xtask: made the development signing key {}",
            pair.key.display()
        );
    }
    Ok(pair)
}

/// Makes a key pair whose certificate names `common_name`.
pub fn make(pair: &KeyPair, common_name: &str) -> Result<()> {
    let dir = pair
        .key
        .parent()
        .context("a key path without a directory")?;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    util::run(
        Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-days",
                "3650",
                "-subj",
            ])
            .arg(format!("/O=SBC/CN={common_name}"))
            .arg("-keyout")
            .arg(&pair.key)
            .arg("-out")
            .arg(&pair.cert),
    )?;
    restrict(&pair.key)
}

fn restrict(key: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(key, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("setting mode of {}", key.display()))
}
