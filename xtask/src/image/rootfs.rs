//! The base root file system: a minimal Debian bootstrapped with mmdebstrap into a cached
//! tarball, and its unpacking into a staging directory for each image build.
//!
//! The tarball depends only on the package list and the mirrors, so it is rebuilt only when
//! `image/packages` changes; everything of ours is laid over the unpacked copy afterwards.

use super::debs;
use super::inputs::Fingerprint;
use crate::util;
use anyhow::{Context, Result};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Bumped when the bootstrap recipe below changes in a way the inputs do not show.
const RECIPE: &str = "rootfs-7";

/// Paths dpkg never unpacks: documentation, man pages, locales. Copyright files stay (licences).
const DPKG_EXCLUDES: &[&str] = &[
    "path-exclude=/usr/share/man/*",
    "path-exclude=/usr/share/doc/*",
    "path-include=/usr/share/doc/*/copyright",
    "path-exclude=/usr/share/info/*",
    "path-exclude=/usr/share/locale/*",
    "path-exclude=/usr/share/i18n/*",
    "path-exclude=/usr/share/lintian/*",
    "path-exclude=/usr/share/bash-completion/*",
    "path-exclude=/usr/share/zsh/*",
    // The hardware database: its sources (10 MB of text) and the 13 MB it compiles to. udev
    // runs without it; the box names its interfaces itself (net.ifnames=0) and needs no
    // vendor names. Bookworm's packages still ship under /lib (merged by a symlink), so both
    // spellings are excluded.
    "path-exclude=/usr/lib/udev/hwdb.d/*",
    "path-exclude=/lib/udev/hwdb.d/*",
    // iconv's character set modules (8 MB): nothing on the box converts character sets.
    "path-exclude=/usr/lib/x86_64-linux-gnu/gconv/*",
    // Of grub-common, only grub-editenv: the boot loader itself is on the disk, not in the root.
    "path-exclude=/usr/lib/grub/*",
    "path-exclude=/usr/share/grub/*",
    "path-exclude=/usr/sbin/grub-*",
    "path-exclude=/usr/bin/grub-*",
    "path-include=/usr/bin/grub-editenv",
    "path-exclude=/etc/grub.d/*",
];

/// Reads `image/packages`: one package per line, `#` comments.
pub fn package_list(root: &Path) -> Result<Vec<String>> {
    let path = root.join("image/packages");
    let text = fs::read_to_string(&path)
        .with_context(|| format!("reading the package list {}", path.display()))?;
    Ok(text
        .lines()
        .map(|l| l.split('#').next().unwrap_or("").trim())
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect())
}

/// Returns the cached base tarball, bootstrapping it first when its inputs changed.
pub fn base_tarball(root: &Path, cache: &Path) -> Result<PathBuf> {
    let packages = package_list(root)?;
    let mirrors = debs::mirror_lines();
    let mut fp = Fingerprint::new(RECIPE);
    fp.text(debs::SUITE);
    for p in &packages {
        fp.text(p);
    }
    for m in &mirrors {
        fp.text(m);
    }
    for e in DPKG_EXCLUDES {
        fp.text(e);
    }
    let key = fp.hex();
    let dir = cache.join("rootfs");
    let tarball = dir.join(format!("base-{}.tar", &key[..16]));
    if tarball.exists() {
        eprintln!(
            "xtask image: base root file system cached ({})",
            tarball.display()
        );
        return Ok(tarball);
    }
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    eprintln!(
        "xtask image: bootstrapping Debian {} ({})",
        debs::SUITE,
        packages.join(", ")
    );
    let partial = dir.join(format!("base-{}.tar.partial", &key[..16]));
    let mut cmd = Command::new("mmdebstrap");
    // `essential` leaves out apt and the other "important" packages an appliance never uses.
    cmd.args(["--variant=essential", "--quiet"])
        // Merged /usr made by symlinks with `usr-is-merged` to say so, as debootstrap does.
        // mmdebstrap's default installs the `usrmerge` package instead, which needs perl and
        // its modules: about 50 MB the box never runs.
        .arg("--hook-dir=/usr/share/mmdebstrap/hooks/merged-usr")
        .arg(format!("--include={}", packages.join(",")))
        .arg("--format=tar");
    for e in DPKG_EXCLUDES {
        cmd.arg(format!("--dpkgopt={e}"));
    }
    // The apt lists and package caches are useless in an image without apt.
    cmd.arg("--customize-hook=rm -rf \"$1\"/var/lib/apt/lists/* \"$1\"/var/cache/apt/*");
    // perl (10 MB) runs only dpkg's and debconf's maintainer scripts, during this bootstrap. The
    // box never installs a package: an update is a whole root slot (RAUC). The packages stay
    // listed in dpkg's database, for the licences and for knowing what the image holds.
    cmd.arg(
        "--customize-hook=rm -rf \"$1\"/usr/bin/perl \"$1\"/usr/bin/perl5.* \"$1\"/usr/lib/x86_64-linux-gnu/perl-base",
    );
    // udev's postinst compiled a hardware database from the sources it had; without them it
    // holds nothing of use.
    cmd.arg("--customize-hook=rm -f \"$1\"/usr/lib/udev/hwdb.bin \"$1\"/etc/udev/hwdb.bin");
    cmd.arg(debs::SUITE).arg(&partial);
    for m in &mirrors {
        cmd.arg(m);
    }
    util::run(&mut cmd)?;
    fs::rename(&partial, &tarball)
        .with_context(|| format!("moving {} into place", partial.display()))?;
    Ok(tarball)
}

/// Unpacks the base tarball into a fresh `dest`, keeping owners, modes and device nodes.
pub fn unpack(tarball: &Path, dest: &Path) -> Result<()> {
    if dest.exists() {
        fs::remove_dir_all(dest).with_context(|| format!("removing old {}", dest.display()))?;
    }
    fs::create_dir_all(dest).with_context(|| format!("creating {}", dest.display()))?;
    util::run(
        Command::new("tar")
            .args([
                "--extract",
                "--numeric-owner",
                "--preserve-permissions",
                "--xattrs",
            ])
            .arg("--file")
            .arg(tarball)
            .arg("--directory")
            .arg(dest),
    )
}
