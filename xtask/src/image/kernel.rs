//! The board's kernel from Debian's packages: the versioned `linux-image` package is unpacked
//! once into the cache, and only the modules a board lists (plus what they depend on) go into
//! the image.
//!
//! Module lists live in `image/board/<board>/modules` (everything the running box loads) and
//! `image/board/<board>/initrd-modules` (what mounting the root needs, loaded by the initramfs
//! in dependency order). A name the kernel has neither as a module nor built in is an error, so
//! a typo cannot silently leave a driver out.

use super::debs;
use super::inputs;
use crate::util;
use anyhow::{bail, Context, Result};
use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The Debian metapackage that names the current kernel for x86-64 boards. The generic flavour,
/// not `cloud`: the cloud kernel lacks GPIO and the i6300esb watchdog.
const KERNEL_META: &str = "linux-image-amd64";

/// An unpacked kernel package in the cache.
#[derive(Debug)]
pub struct Kernel {
    /// e.g. `linux-image-6.1.0-56-amd64`
    pub package: String,
    /// e.g. `6.1.0-56-amd64`, the directory name under `lib/modules`
    pub release: String,
    /// the unpacked package
    pub tree: PathBuf,
    /// module name (with `_`) -> path relative to `lib/modules/<release>`
    modules: BTreeMap<String, String>,
    /// path -> the paths it depends on (from depmod)
    deps: BTreeMap<String, Vec<String>>,
    builtin: BTreeSet<String>,
}

impl Kernel {
    /// Resolves, downloads (once) and unpacks (once) the current kernel package.
    pub fn fetch(cache: &Path) -> Result<Kernel> {
        let package = match debs::resolve_kernel_package(KERNEL_META) {
            Ok(p) => p,
            // Offline with a warm cache: use the newest kernel already unpacked.
            Err(e) => newest_cached(cache).with_context(|| format!("{e:#}"))?,
        };
        let release = package
            .strip_prefix("linux-image-")
            .with_context(|| format!("unexpected kernel package name {package}"))?
            .to_string();
        let tree = cache.join("kernel").join(&package);
        let stamp = cache.join("kernel").join(format!("{package}.unpacked"));
        if !stamp.exists() {
            let deb = debs::download(&package, &cache.join("debs"))?;
            if tree.exists() {
                fs::remove_dir_all(&tree)
                    .with_context(|| format!("removing partial {}", tree.display()))?;
            }
            debs::unpack(&deb, &tree)?;
            // The package ships no modules.dep; the postinst would run depmod on the host.
            util::run(Command::new("depmod").arg("-b").arg(&tree).arg(&release))?;
            fs::write(&stamp, &package).with_context(|| format!("writing {}", stamp.display()))?;
        }
        let moddir = tree.join("lib/modules").join(&release);
        let dep_text = fs::read_to_string(moddir.join("modules.dep"))
            .with_context(|| format!("reading modules.dep of {package}"))?;
        let mut modules = BTreeMap::new();
        let mut deps = BTreeMap::new();
        for line in dep_text.lines() {
            let Some((path, rest)) = line.split_once(':') else {
                continue;
            };
            modules.insert(module_name(path), path.to_string());
            deps.insert(
                path.to_string(),
                rest.split_whitespace().map(String::from).collect(),
            );
        }
        let builtin_text = fs::read_to_string(moddir.join("modules.builtin"))
            .with_context(|| format!("reading modules.builtin of {package}"))?;
        let builtin = builtin_text.lines().map(module_name).collect();
        Ok(Kernel {
            package,
            release,
            tree,
            modules,
            deps,
            builtin,
        })
    }

    pub fn vmlinuz(&self) -> PathBuf {
        self.tree
            .join("boot")
            .join(format!("vmlinuz-{}", self.release))
    }

    fn moddir(&self) -> PathBuf {
        self.tree.join("lib/modules").join(&self.release)
    }

    /// The module files (relative paths) needed for `names`, each after everything it depends
    /// on: the order `insmod` must load them in. Built-in names need nothing.
    pub fn closure(&self, names: &[String]) -> Result<Vec<String>> {
        let mut order = Vec::new();
        let mut seen = BTreeSet::new();
        let mut unknown = Vec::new();
        for name in names {
            let key = name.replace('-', "_");
            match self.modules.get(&key) {
                Some(path) => self.visit(path, &mut seen, &mut order),
                None if self.builtin.contains(&key) => {}
                None => unknown.push(name.clone()),
            }
        }
        if !unknown.is_empty() {
            bail!(
                "kernel {} has neither a module nor a built-in driver named: {}",
                self.release,
                unknown.join(", ")
            );
        }
        Ok(order)
    }

    fn visit(&self, path: &str, seen: &mut BTreeSet<String>, order: &mut Vec<String>) {
        if !seen.insert(path.to_string()) {
            return;
        }
        for dep in self.deps.get(path).into_iter().flatten() {
            self.visit(dep, seen, order);
        }
        order.push(path.to_string());
    }

    /// Copies the given module files into `root`'s module tree and runs depmod there, so that
    /// udev and modprobe on the box find them.
    pub fn install_modules(&self, files: &[String], root: &Path) -> Result<()> {
        let dest = root.join("usr/lib/modules").join(&self.release);
        for rel in files {
            copy_into(&self.moddir().join(rel), &dest.join(rel))?;
        }
        for meta in [
            "modules.order",
            "modules.builtin",
            "modules.builtin.modinfo",
        ] {
            copy_into(&self.moddir().join(meta), &dest.join(meta))?;
        }
        util::run(
            Command::new("depmod")
                .arg("-b")
                .arg(root)
                .arg(&self.release),
        )
    }

    /// Copies module files flat into `dest` and returns their file names in load order.
    pub fn copy_flat(&self, files: &[String], dest: &Path) -> Result<Vec<String>> {
        let mut names = Vec::new();
        for rel in files {
            let name = Path::new(rel)
                .file_name()
                .with_context(|| format!("module path {rel} has no file name"))?
                .to_string_lossy()
                .into_owned();
            copy_into(&self.moddir().join(rel), &dest.join(&name))?;
            names.push(name);
        }
        Ok(names)
    }
}

fn module_name(path: &str) -> String {
    let file = path.rsplit('/').next().unwrap_or(path);
    let stem = file.split(".ko").next().unwrap_or(file);
    stem.replace('-', "_")
}

fn newest_cached(cache: &Path) -> Result<String> {
    let dir = cache.join("kernel");
    let mut found: Vec<String> = fs::read_dir(&dir)
        .with_context(|| format!("no kernel cached in {}", dir.display()))?
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.strip_suffix(".unpacked").map(String::from)
        })
        .collect();
    found.sort();
    found
        .pop()
        .with_context(|| format!("no kernel cached in {}", dir.display()))
}

fn copy_into(from: &Path, to: &Path) -> Result<()> {
    if let Some(parent) = to.parent() {
        fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    }
    fs::copy(from, to)
        .with_context(|| format!("copying {} to {}", from.display(), to.display()))?;
    Ok(())
}

/// Reads a module list file: one name per line, `#` comments.
pub fn read_list(path: &Path) -> Result<Vec<String>> {
    let text = fs::read_to_string(path)
        .with_context(|| format!("reading module list {}", path.display()))?;
    Ok(text
        .lines()
        .map(|l| l.split('#').next().unwrap_or("").trim())
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect())
}

/// Extracts the uncompressed ELF kernel from a bzImage, for QEMU's PVH boot: loading it skips
/// the in-guest XZ decompression, which costs seconds under TCG. `None` when the payload is not
/// XZ or the result is not ELF (the caller then boots the bzImage).
pub fn extract_vmlinux(vmlinuz: &Path, dest: &Path) -> Result<Option<PathBuf>> {
    let image = fs::read(vmlinuz).with_context(|| format!("reading {}", vmlinuz.display()))?;
    // x86 boot protocol: setup_sects at 0x1f1, payload_offset/length at 0x248/0x24c, relative
    // to the protected-mode code that follows the setup sectors.
    let le32 = |at: usize| -> Option<usize> {
        image
            .get(at..at + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
    };
    let setup_sects = match image.get(0x1f1) {
        Some(0) => 4,
        Some(n) => *n as usize,
        None => return Ok(None),
    };
    let (Some(off), Some(len)) = (le32(0x248), le32(0x24c)) else {
        return Ok(None);
    };
    let start = (setup_sects + 1) * 512 + off;
    let Some(payload) = image.get(start..start + len) else {
        return Ok(None);
    };
    if !payload.starts_with(b"\xfd7zXZ\0") {
        return Ok(None);
    }
    let xz_in = dest.with_extension("xz");
    fs::write(&xz_in, payload).with_context(|| format!("writing {}", xz_in.display()))?;
    let out = Command::new("xz")
        .args(["--decompress", "--stdout", "--single-stream"])
        .arg(&xz_in)
        .output()
        .context("running xz to unpack the kernel payload")?;
    let _ = fs::remove_file(&xz_in);
    if !out.status.success() || !out.stdout.starts_with(b"\x7fELF") {
        return Ok(None);
    }
    fs::write(dest, &out.stdout).with_context(|| format!("writing {}", dest.display()))?;
    Ok(Some(dest.to_path_buf()))
}

/// The sha256 of the kernel image, for the image's fingerprint.
pub fn fingerprint(kernel: &Kernel) -> Result<String> {
    inputs::sha256_file(&kernel.vmlinuz())
}
