//! `cargo xtask bundle [--board NAME] [--testport] [--no-cargo-build] [--key FILE --cert FILE]
//! [--version TEXT] [--overlay DIR] [--output FILE]`: a signed RAUC update bundle from the same
//! build as the image.
//!
//! `--version` names the bundle's release (in its manifest and in the slot's
//! `/usr/lib/sbc/version`, what `show version` prints) instead of the image's; `--overlay DIR`
//! lays DIR's files over the image's root in the slot (a site's additions; the update tests use
//! it for a slot whose engine cannot start); `--output` says where the bundle goes (else
//! `out/image/<board>/sbc-<board>-<version>.raucb`).
//!
//! The bundle holds one image, the root slot: an ext4 file system of the image's root with the
//! kernel, initramfs and command line of that build under `/boot`, so a slot carries
//! everything it boots with (the A/B layout of SPEC §8: the boot loader picks a slot, the slot
//! brings its kernel). Its manifest names the board (`compatible = sbc-<board>`, what a box
//! accepts) and the image's version (`cargo xtask image` writes both: `out/image/<board>/version`).
//! The format is `verity`: the bundle's payload is checked block by block while it is read, so
//! a bundle changed after signing fails where it was changed, even halfway through an install.
//!
//! Signed with the development key of `cargo xtask keys` (made when missing) unless `--key`
//! and `--cert` name another pair. Before it says done, the bundle is verified against the
//! development certificate the image trusts, as the box would: a bundle signed by another key
//! is reported as such (and the task fails) rather than written silently.

use crate::image::{self, Built, Flavour};
use crate::keys::{self, KeyPair};
use crate::util;
use anyhow::{bail, Context, Result};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The size of a root slot's file system: the root (93 MiB now, at most 120 MiB by issue 17's
/// goal) with room to grow, and what each of the two root partitions will hold.
pub const SLOT_BYTES: u64 = 256 << 20;

/// `cargo xtask bundle`'s options.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The board the bundle is for.
    #[arg(long, value_name = "NAME", default_value = "qemu")]
    board: String,
    /// Bundle the system tests' build (sbcd with its test port; never for a real box).
    #[arg(long)]
    testport: bool,
    /// Use the release binaries already built instead of running cargo build.
    #[arg(long)]
    no_cargo_build: bool,
    /// Sign with this private key instead of the development one (with --cert).
    #[arg(long, value_name = "FILE", requires = "cert")]
    key: Option<PathBuf>,
    /// The certificate of --key.
    #[arg(long, value_name = "FILE", requires = "key")]
    cert: Option<PathBuf>,
    /// The release the bundle calls itself, instead of the image's (one word, such as 1.2.0).
    #[arg(long, value_name = "TEXT", value_parser = release_name)]
    version: Option<String>,
    /// Lay this folder's files over the image's root in the slot.
    #[arg(long, value_name = "DIR", value_parser = folder)]
    overlay: Option<PathBuf>,
    /// Where the bundle goes (default out/image/<board>/sbc-<board>-<version>.raucb).
    #[arg(long, value_name = "FILE")]
    output: Option<PathBuf>,
}

fn release_name(v: &str) -> Result<String, String> {
    if v.is_empty() || !v.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(format!(
            "{v:?}: one word of printable characters, such as 1.2.0"
        ));
    }
    Ok(v.to_owned())
}

fn folder(v: &str) -> Result<PathBuf, String> {
    let dir = PathBuf::from(v);
    if !dir.is_dir() {
        return Err(format!("{}: not a folder", dir.display()));
    }
    Ok(dir)
}

/// What goes into the slot besides the image's root as built.
#[derive(Debug, Clone, Default)]
pub struct Content {
    /// The release this bundle calls itself (`--version`), else the image's.
    pub version: Option<String>,
    /// Files laid over the root (`--overlay`).
    pub overlay: Option<PathBuf>,
}

pub fn run(args: Args) -> Result<()> {
    let flavour = if args.testport {
        Flavour::Testport
    } else {
        Flavour::Product
    };
    let pair = match (args.key, args.cert) {
        (Some(key), Some(cert)) => Some(KeyPair { key, cert }),
        _ => None,
    };
    let content = Content {
        version: args.version,
        overlay: args.overlay,
    };
    ensure_host()?;
    let trusted = keys::ensure()?;
    let signer = pair.unwrap_or_else(|| trusted.clone());
    let built = image::build(&args.board, !args.no_cargo_build, flavour)?;
    let bundle = make(&built, &signer, &content, args.output.as_deref())?;
    let meta = fs::metadata(&bundle).with_context(|| format!("reading {}", bundle.display()))?;
    println!("bundle: {}", bundle.display());
    println!("size:   {} bytes ({} MiB)", meta.len(), meta.len() >> 20);
    match verify(&bundle, &trusted.cert) {
        Ok(info) => {
            println!("verified against {}:", trusted.cert.display());
            print!("{info}");
            Ok(())
        }
        Err(e) => bail!(
            "the bundle is not signed by the key the image trusts ({}): {e}",
            trusted.cert.display()
        ),
    }
}

/// The host tools: RAUC itself (bookworm's 1.8) and what it builds bundles with.
pub fn ensure_host() -> Result<()> {
    util::ensure_debs(&["rauc", "squashfs-tools", "e2fsprogs", "openssl"])
}

/// Builds the bundle of `built`, signed by `signer`; returns its path.
pub fn make(
    built: &Built,
    signer: &KeyPair,
    content: &Content,
    output: Option<&Path>,
) -> Result<PathBuf> {
    let version_file = built.out.join("version");
    let line = fs::read_to_string(&version_file)
        .with_context(|| format!("reading {}", version_file.display()))?;
    let (compatible, version) = line.trim().split_once(' ').with_context(|| {
        format!(
            "{}: expected `sbc-<board> <version>`",
            version_file.display()
        )
    })?;
    let version = content.version.as_deref().unwrap_or(version);

    let work = built.out.join("bundle");
    if work.exists() {
        fs::remove_dir_all(&work).with_context(|| format!("removing {}", work.display()))?;
    }
    let content_dir = work.join("content");
    fs::create_dir_all(&content_dir)
        .with_context(|| format!("creating {}", content_dir.display()))?;

    // The image's root already carries its kernel under /boot (`cargo xtask image`).
    let mut rootfs = built.out.join("rootfs");
    if content_changes(content) {
        // A copy of the root with the changes: the image's own stays as built.
        let staged = work.join("root");
        util::run(Command::new("cp").arg("-a").arg(&rootfs).arg(&staged))?;
        if let Some(dir) = &content.overlay {
            util::run(
                Command::new("cp")
                    .arg("-a")
                    .arg(format!("{}/.", dir.display()))
                    .arg(&staged),
            )?;
        }
        fs::write(
            staged.join("usr/lib/sbc/version"),
            format!("{compatible} {version}\n"),
        )
        .context("writing the slot's version")?;
        rootfs = staged;
    }
    let slot = content_dir.join("root.ext4");
    make_ext4(&rootfs, &slot)?;
    if rootfs != built.out.join("rootfs") {
        let _ = fs::remove_dir_all(&rootfs);
    }

    fs::write(
        content_dir.join("manifest.raucm"),
        format!(
            "[update]\ncompatible={compatible}\nversion={version}\n\n[bundle]\nformat=verity\n\n\
             [image.rootfs]\nfilename=root.ext4\n"
        ),
    )
    .context("writing the bundle manifest")?;

    let bundle = output.map_or_else(
        || built.out.join(format!("{compatible}-{version}.raucb")),
        Path::to_path_buf,
    );
    if bundle.exists() {
        fs::remove_file(&bundle).with_context(|| format!("removing {}", bundle.display()))?;
    }
    util::run(
        Command::new("rauc")
            .arg("bundle")
            .arg(format!("--cert={}", signer.cert.display()))
            .arg(format!("--key={}", signer.key.display()))
            .arg(&content_dir)
            .arg(&bundle),
    )?;
    // The slot image is inside the bundle now; the staging copy is 256 MiB of mostly nothing.
    let _ = fs::remove_dir_all(&work);
    Ok(bundle)
}

fn content_changes(content: &Content) -> bool {
    content.version.is_some() || content.overlay.is_some()
}

/// `rauc info` against `keyring`: the bundle's signature and manifest as a box checks them.
/// `Ok` with what RAUC printed, `Err` with why it refused.
pub fn verify(bundle: &Path, keyring: &Path) -> Result<String> {
    let out = Command::new("rauc")
        .arg("info")
        .arg(format!("--keyring={}", keyring.display()))
        .arg(bundle)
        .output()
        .context("running rauc info")?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if out.status.success() {
        Ok(text)
    } else {
        bail!("{}", text.trim())
    }
}

/// An ext4 file system of `dir` in a file of [`SLOT_BYTES`] (sparse). RAUC writes it into the
/// slot it installs to and gives it that slot's label.
fn make_ext4(dir: &Path, file: &Path) -> Result<()> {
    let f = fs::File::create(file).with_context(|| format!("creating {}", file.display()))?;
    f.set_len(SLOT_BYTES)
        .with_context(|| format!("sizing {}", file.display()))?;
    drop(f);
    util::run(
        Command::new("mkfs.ext4")
            .args(["-q", "-F", "-d"])
            .arg(dir)
            .arg(file),
    )
}
