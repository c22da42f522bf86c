//! `cargo xtask image [--board qemu|apu2]`: the appliance's disk image.
//!
//! Steps, each skipped when its inputs did not change (see `docs/image.md`):
//! 1. `cargo build --release --workspace --bins`; the binaries in [`BINARIES`] go to /usr/bin.
//!    `--testport` adds `--features sbcd/testport` (the system tests' port, docs/box.md) and
//!    builds into `out/image/<board>-testport`: the image for boxes never has the port.
//! 2. A minimal Debian root (`image/packages`) bootstrapped once into a cached tarball.
//! 3. The kernel from Debian's packages, only the board's modules, and a small initramfs.
//! 4. Our files laid over the root: `image/overlay`, `image/board/<board>/overlay`, `systemd/`,
//!    the board profile, unit links from `image/units`.
//! 5. A GPT disk image: BIOS boot (GRUB), boot, root and data partitions.
//!
//! Prints the image's path, size and sha256.

mod debs;
mod disk;
mod grub;
pub(crate) mod initramfs;
mod inputs;
pub(crate) mod kernel;
mod rootfs;

use crate::util;
use anyhow::{bail, Context, Result};
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

pub use debs::download as download_deb;
pub use inputs::hex;

/// The programs the image carries, as `cargo build --release --workspace --bins` names them.
/// The one place that lists them: the image, the units and the system test go by this list.
pub const BINARIES: &[&str] = &["sbcd", "sbcctl", "sbc-console"];

/// Boards the image can be built for (a folder `image/board/<name>` each).
pub const BOARDS: &[&str] = &["qemu", "apu2"];

/// Bumped when the assembly below changes in a way the fingerprinted inputs do not show.
const RECIPE: &str = "image-12";

/// What a build produced.
#[derive(Debug)]
pub struct Built {
    pub board: String,
    /// Where the image and its pieces are (`out/image/<board>[-testport]`).
    pub out: PathBuf,
    pub image: PathBuf,
    /// The boot partition's files, also kept on the host for QEMU's direct kernel boot.
    pub boot_dir: PathBuf,
    /// The kernel command line GRUB passes (also in `boot_dir/cmdline`).
    pub cmdline: String,
    /// Entries of [`BINARIES`] the build did not produce (the image lacks them).
    pub missing: Vec<String>,
    pub sha256: String,
    pub rebuilt: bool,
}

/// `cargo xtask image`'s options.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The board the image is for.
    #[arg(long, default_value = "qemu", value_parser = BOARDS.to_vec())]
    board: String,
    /// Use the release binaries already there instead of running cargo build (for working on
    /// the image while the workspace does not build).
    #[arg(long)]
    no_cargo_build: bool,
    /// The QEMU system tests' image: sbcd with its test port (never for a real box).
    #[arg(long)]
    testport: bool,
}

/// Which image: the one for boxes, or the system tests' one with the test port compiled in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavour {
    Product,
    Testport,
}

pub fn run(args: Args) -> Result<()> {
    let started = std::time::Instant::now();
    let flavour = if args.testport {
        Flavour::Testport
    } else {
        Flavour::Product
    };
    let built = build(&args.board, !args.no_cargo_build, flavour)?;
    report(&built, started.elapsed())
}

fn report(built: &Built, took: std::time::Duration) -> Result<()> {
    let meta = fs::metadata(&built.image)
        .with_context(|| format!("reading size of {}", built.image.display()))?;
    let allocated = std::os::unix::fs::MetadataExt::blocks(&meta) * 512;
    println!("image:  {}", built.image.display());
    println!(
        "size:   {} bytes ({} MiB; {} MiB allocated, the file is sparse)",
        meta.len(),
        meta.len() >> 20,
        allocated >> 20
    );
    println!("sha256: {}", built.sha256);
    if let Ok(v) = fs::read_to_string(built.out.join("version")) {
        println!("version: {}", v.trim());
    }
    let rootfs = built.out.join("rootfs");
    if let Ok(bytes) = util::tree_size(&rootfs) {
        println!(
            "root:   {} MiB of files ({})",
            bytes >> 20,
            rootfs.display()
        );
    }
    let compressed = built.out.join(format!("sbc-{}.img.zst", built.board));
    if let Ok(meta) = fs::metadata(&compressed) {
        println!(
            "zstd:   {} bytes ({} MiB, {})",
            meta.len(),
            meta.len() >> 20,
            compressed.display()
        );
    }
    eprintln!(
        "xtask image: {} in {:.1} s",
        if built.rebuilt {
            "built"
        } else {
            "unchanged, nothing to do"
        },
        took.as_secs_f64()
    );
    if !built.missing.is_empty() {
        eprintln!(
            "xtask image: WARNING: the image lacks {} (not built by cargo yet)",
            built.missing.join(", ")
        );
    }
    Ok(())
}

/// Where downloads and the bootstrapped root are cached between runs (`SBC_CACHE_DIR`, else
/// `out/cache`).
pub fn cache_dir() -> PathBuf {
    std::env::var_os("SBC_CACHE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| util::root().join("out/cache"))
}

/// Where one board's image and its pieces go.
pub fn out_dir(board: &str, flavour: Flavour) -> PathBuf {
    let name = match flavour {
        Flavour::Product => board.to_string(),
        Flavour::Testport => format!("{board}-testport"),
    };
    util::root().join("out/image").join(name)
}

/// The cargo target directory holding the release binaries.
fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| util::root().join("target"))
}

fn ensure_host() -> Result<()> {
    let uid = Command::new("id")
        .arg("-u")
        .output()
        .context("running id -u")?;
    if String::from_utf8_lossy(&uid.stdout).trim() != "0" {
        bail!(
            "cargo xtask image must run as root: the root file system's files belong to root \
             and its device nodes need mknod (run: sudo -E cargo xtask image)"
        );
    }
    util::ensure_debs(&[
        "mmdebstrap",
        "fdisk",
        "e2fsprogs",
        "grub-pc-bin",
        "kmod",
        "xz-utils",
        "binutils",
        "zstd",
        // The development signing key pair (cargo xtask keys), whose certificate the image
        // trusts.
        "openssl",
    ])
}

/// Builds the image for `board`, or finds it current.
pub fn build(board: &str, cargo_build: bool, flavour: Flavour) -> Result<Built> {
    ensure_host()?;
    let root = util::root();
    let cache = cache_dir();
    let out = out_dir(board, flavour);
    let board_image_dir = root.join("image/board").join(board);
    if !board_image_dir.is_dir() {
        bail!(
            "{} is missing: no image recipe for board {board}",
            board_image_dir.display()
        );
    }
    fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;

    if cargo_build {
        let mut args = vec!["build", "--release", "--workspace", "--bins"];
        if flavour == Flavour::Testport {
            // Cargo keeps both builds of sbcd (features are part of its fingerprint), so
            // switching between the two images costs a copy, not a rebuild.
            args.extend(["--features", "sbcd/testport"]);
        }
        eprintln!("xtask image: cargo {}", args.join(" "));
        util::run(
            Command::new(env!("CARGO"))
                .current_dir(&root)
                .env("CARGO_TARGET_DIR", target_dir())
                .args(&args),
        )?;
    }
    let release = target_dir().join("release");
    let mut binaries = Vec::new();
    let mut missing = Vec::new();
    for name in BINARIES {
        let path = release.join(name);
        if path.is_file() {
            binaries.push(path);
        } else {
            missing.push(name.to_string());
        }
    }

    check_testport(&binaries, flavour)?;

    let base = rootfs::base_tarball(&root, &cache)?;
    let kernel = kernel::Kernel::fetch(&cache)?;
    let busybox = fetch_busybox(&cache)?;
    let board_profile = root.join("board").join(board);
    // The board's command line; GRUB adds the slot it starts. A direct kernel boot (QEMU's
    // `-kernel`) starts slot A.
    let board_cmdline = kernel_cmdline(&board_profile)?;
    let (slot_a, label_a) = grub::SLOTS[0];
    let cmdline = format!("{board_cmdline} {}", grub::slot_args(slot_a, label_a));

    let version = image_version(board)?;
    // The certificate whose bundles the image accepts (RAUC's keyring).
    let signing = crate::keys::ensure()?;
    let mut fp = inputs::Fingerprint::new(RECIPE);
    fp.file(&signing.cert)?;
    fp.text(board)
        .text(&version)
        .text(&format!("{flavour:?}"))
        .text(&base.to_string_lossy())
        .text(&kernel.package)
        .text(&cmdline);
    fp.text(&kernel::fingerprint(&kernel)?);
    fp.file(&busybox)?;
    for bin in &binaries {
        fp.text(&bin.to_string_lossy()).file(bin)?;
    }
    for dir in ["image/overlay", "systemd", "image/data", "image/testport"] {
        fp.text(dir).tree(&root.join(dir))?;
    }
    fp.file(&root.join("image/units"))?;
    fp.tree(&board_image_dir)?.tree(&root.join("board"))?;
    let fingerprint = fp.hex();

    let image = out.join(format!("sbc-{board}.img"));
    let boot_dir = out.join("boot");
    let stamp = out.join("inputs.sha256");
    let sums = out.join("sbc.sha256");
    if image.exists() && inputs::is_current(&stamp, &fingerprint) {
        let sha256 = fs::read_to_string(&sums)
            .ok()
            .and_then(|s| s.split_whitespace().next().map(String::from))
            .map_or_else(|| inputs::sha256_file(&image), Ok)?;
        return Ok(Built {
            board: board.into(),
            out,
            image,
            boot_dir,
            cmdline,
            missing,
            sha256,
            rebuilt: false,
        });
    }
    // A half-written image must never look current.
    let _ = fs::remove_file(&stamp);

    eprintln!("xtask image: assembling the root file system");
    let rootdir = out.join("rootfs");
    rootfs::unpack(&base, &rootdir)?;
    customize_root(
        &root,
        board,
        &rootdir,
        &binaries,
        &board_profile,
        &out.join("debug"),
    )?;
    if flavour == Flavour::Testport {
        // What only the test image has: the unit drop-ins that let the port's tty through
        // the sandbox.
        overlay(&root.join("image/testport"), &rootdir)?;
    }
    let mut wanted = kernel::read_list(&board_image_dir.join("modules"))?;
    wanted.extend(board_modules(&board_profile)?);
    let modules = kernel.closure(&wanted)?;
    kernel.install_modules(&modules, &rootdir)?;
    write_version(&rootdir, &out, &version)?;
    write_rauc(&rootdir, board, &signing.cert)?;
    mark_updated(&rootdir)?;

    eprintln!("xtask image: kernel {} and initramfs", kernel.release);
    if boot_dir.exists() {
        fs::remove_dir_all(&boot_dir)
            .with_context(|| format!("removing old {}", boot_dir.display()))?;
    }
    fs::create_dir_all(&boot_dir).with_context(|| format!("creating {}", boot_dir.display()))?;
    let mut initrd_wanted = kernel::read_list(&board_image_dir.join("initrd-modules"))?;
    // The watchdog driver too: with /dev/watchdog0 there before systemd starts, PID 1 arms the
    // hardware watchdog at once instead of whenever udev gets to the device.
    initrd_wanted.extend(board_watchdog_module(&board_profile)?);
    let initrd_modules = kernel.closure(&initrd_wanted)?;
    let flat = out.join("initrd-modules");
    if flat.exists() {
        fs::remove_dir_all(&flat).with_context(|| format!("removing {}", flat.display()))?;
    }
    let order = kernel.copy_flat(&initrd_modules, &flat)?;
    initramfs::write(&busybox, &flat, &order, &boot_dir.join("initrd.img"))?;
    fs::copy(kernel.vmlinuz(), boot_dir.join("vmlinuz"))
        .with_context(|| format!("copying {}", kernel.vmlinuz().display()))?;
    fs::write(boot_dir.join("cmdline"), format!("{cmdline}\n"))
        .with_context(|| format!("writing {}/cmdline", boot_dir.display()))?;
    fs::write(
        boot_dir.join("kernel-release"),
        format!("{}\n", kernel.release),
    )
    .with_context(|| format!("writing {}/kernel-release", boot_dir.display()))?;
    // The slot brings what it boots with.
    let slot_boot = rootdir.join("boot");
    fs::create_dir_all(slot_boot.join("grub"))
        .with_context(|| format!("creating {}", slot_boot.display()))?;
    for name in ["vmlinuz", "initrd.img", "cmdline", "kernel-release"] {
        fs::copy(boot_dir.join(name), slot_boot.join(name))
            .with_context(|| format!("copying {name} into the root slot"))?;
    }
    // The boot partition: GRUB's slot choice and its environment block.
    let boot_part = out.join("boot-partition");
    if boot_part.exists() {
        fs::remove_dir_all(&boot_part)
            .with_context(|| format!("removing old {}", boot_part.display()))?;
    }
    fs::create_dir_all(&boot_part).with_context(|| format!("creating {}", boot_part.display()))?;
    fs::write(boot_part.join("grub.cfg"), grub::config(&board_cmdline))
        .context("writing grub.cfg")?;
    grub::write_factory_env(&boot_part.join("grubenv"))?;
    // Slot B of a factory image is an empty file system.
    let empty_slot = out.join("empty-slot");
    if !empty_slot.exists() {
        fs::create_dir_all(&empty_slot)
            .with_context(|| format!("creating {}", empty_slot.display()))?;
    }

    let datadir = out.join("data");
    stage_data(&root, board, &datadir)?;

    eprintln!("xtask image: writing the GPT disk image");
    disk::check_fits(&boot_part, disk::BOOT)?;
    disk::check_fits(&rootdir, disk::ROOT_A)?;
    disk::check_fits(&datadir, disk::DATA)?;
    let partial = out.join(format!("sbc-{board}.img.partial"));
    disk::partition(&partial)?;
    grub::install(&partial, &out.join("grub"))?;
    disk::mkfs(&partial, disk::BOOT, "ext2", "sbc-boot", &boot_part)?;
    disk::mkfs(&partial, disk::ROOT_A, "ext4", label_a, &rootdir)?;
    disk::mkfs(
        &partial,
        disk::ROOT_B,
        "ext4",
        grub::SLOTS[1].1,
        &empty_slot,
    )?;
    disk::mkfs(&partial, disk::DATA, "ext4", "sbc-data", &datadir)?;
    fs::rename(&partial, &image)
        .with_context(|| format!("moving {} into place", image.display()))?;

    // QEMU boots the uncompressed kernel (PVH) when it can be had: no decompression in TCG.
    kernel::extract_vmlinux(&boot_dir.join("vmlinuz"), &out.join("vmlinux"))?;

    // The distribution artifact: what a download or a USB stick carries.
    let compressed = out.join(format!("sbc-{board}.img.zst"));
    util::run(
        Command::new("zstd")
            .args(["--quiet", "--force", "-T0", "-9"])
            .arg(&image)
            .arg("-o")
            .arg(&compressed),
    )?;

    let sha256 = inputs::sha256_file(&image)?;
    fs::write(
        &sums,
        format!(
            "{sha256}  {}\n",
            image
                .file_name()
                .map_or_else(String::new, |n| n.to_string_lossy().into_owned())
        ),
    )
    .with_context(|| format!("writing {}", sums.display()))?;
    // What the image carries, for the system test to decide whether it can run.
    let carried: Vec<&str> = BINARIES
        .iter()
        .copied()
        .filter(|b| !missing.iter().any(|m| m == b))
        .collect();
    fs::write(out.join("binaries"), carried.join("\n") + "\n")
        .with_context(|| format!("writing {}/binaries", out.display()))?;
    inputs::mark_current(&stamp, &fingerprint)?;
    Ok(Built {
        board: board.into(),
        out,
        image,
        boot_dir,
        cmdline,
        missing,
        sha256,
        rebuilt: true,
    })
}

/// What the image calls itself, on the box (`/usr/lib/sbc/version`, which `show version`
/// prints) and beside the image (`version`): `sbc-<board> <workspace version>+g<commit>`, with
/// `-dirty` when the work tree differs from the commit, or `SBC_VERSION` when set (a release
/// names itself).
pub fn image_version(board: &str) -> Result<String> {
    if let Ok(v) = std::env::var("SBC_VERSION") {
        if !v.trim().is_empty() {
            return Ok(format!("sbc-{board} {}", v.trim()));
        }
    }
    let git = |args: &[&str]| -> Option<String> {
        let out = Command::new("git")
            .current_dir(util::root())
            .args(args)
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
    };
    let commit = git(&["rev-parse", "--short=10", "HEAD"]).unwrap_or_else(|| "unknown".into());
    let dirty =
        git(&["status", "--porcelain", "--untracked-files=no"]).is_some_and(|s| !s.is_empty());
    Ok(format!(
        "sbc-{board} {}+g{commit}{}",
        env!("CARGO_PKG_VERSION"),
        if dirty { "-dirty" } else { "" }
    ))
}

/// RAUC's view of the box: the two root slots by GPT name, the slot GRUB started named on the
/// kernel command line (`rauc.slot=`, the slot's `bootname`), GRUB's environment block on the
/// boot partition, what bundles it takes (this board's, verity only, signed by `cert`), and
/// its status kept on the data partition, so an update's record survives the slot switch.
fn write_rauc(rootdir: &Path, board: &str, cert: &Path) -> Result<()> {
    let dir = rootdir.join("etc/rauc");
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    fs::copy(cert, dir.join("keyring.pem"))
        .with_context(|| format!("copying {} into the image", cert.display()))?;
    let mut conf = format!(
        "# Written by cargo xtask image (xtask/src/image.rs).\n\
         [system]\n\
         compatible=sbc-{board}\n\
         bootloader=grub\n\
         grubenv=/boot/grub/grubenv\n\
         statusfile=/var/lib/sbc/rauc.status\n\
         bundle-formats=-plain\n\n\
         [keyring]\n\
         path=/etc/rauc/keyring.pem\n\n\
         [handlers]\n\
         post-install=/usr/lib/sbc/rauc-post-install\n"
    );
    for (i, (name, label)) in grub::SLOTS.iter().enumerate() {
        conf.push_str(&format!(
            "\n[slot.rootfs.{i}]\ndevice=/dev/disk/by-partlabel/{label}\ntype=ext4\nbootname={name}\n"
        ));
    }
    fs::write(dir.join("system.conf"), conf).context("writing /etc/rauc/system.conf")
}

fn write_version(rootdir: &Path, out: &Path, version: &str) -> Result<()> {
    let dir = rootdir.join("usr/lib/sbc");
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    for path in [dir.join("version"), out.join("version")] {
        fs::write(&path, format!("{version}\n"))
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

/// Copies our binaries into the root without their line tables (most of sbcd's size), and keeps
/// those as `<debug_dir>/<name>.debug`, the artifact that turns a field backtrace's addresses
/// into lines. Each stripped binary names its debug file and carries its checksum
/// (`.gnu_debuglink`), so a debugger finds the matching one and refuses a stale one.
fn install_stripped(binaries: &[PathBuf], bindir: &Path, debug_dir: &Path) -> Result<()> {
    if debug_dir.exists() {
        fs::remove_dir_all(debug_dir)
            .with_context(|| format!("removing old {}", debug_dir.display()))?;
    }
    fs::create_dir_all(debug_dir).with_context(|| format!("creating {}", debug_dir.display()))?;
    for bin in binaries {
        let name = bin.file_name().context("binary path without a file name")?;
        let dest = bindir.join(name);
        let debug = debug_dir.join(format!("{}.debug", name.to_string_lossy()));
        util::run(
            Command::new("objcopy")
                .arg("--only-keep-debug")
                .arg(bin)
                .arg(&debug),
        )?;
        util::run(
            Command::new("objcopy")
                .arg("--strip-debug")
                .arg("--strip-unneeded")
                .arg(format!("--add-gnu-debuglink={}", debug.display()))
                .arg(bin)
                .arg(&dest),
        )?;
        fs::set_permissions(&dest, fs::Permissions::from_mode(0o755))
            .with_context(|| format!("setting mode of {}", dest.display()))?;
    }
    Ok(())
}

/// Text only the test port's code carries (its greeting, crates/sbcd/src/testport.rs; a
/// literal the compiler keeps, unlike a short constant it may turn into immediates).
const TESTPORT_MARKER: &[u8] = b"testport: ready ";

/// The product image must not carry the test port and the test image must: checked on the
/// sbcd binary itself, so a stale or mixed-up build in the target directory cannot slip by.
fn check_testport(binaries: &[PathBuf], flavour: Flavour) -> Result<()> {
    let Some(sbcd) = binaries.iter().find(|b| b.ends_with("sbcd")) else {
        return Ok(());
    };
    let bytes = fs::read(sbcd).with_context(|| format!("reading {}", sbcd.display()))?;
    let has_port = bytes
        .windows(TESTPORT_MARKER.len())
        .any(|w| w == TESTPORT_MARKER);
    match (flavour, has_port) {
        (Flavour::Product, true) => bail!(
            "{} carries the system tests' port (built with --features sbcd/testport); \
             rebuild it without, or use --testport for the test image",
            sbcd.display()
        ),
        (Flavour::Testport, false) => bail!(
            "{} has no test port; build it with --features sbcd/testport",
            sbcd.display()
        ),
        _ => Ok(()),
    }
}

/// The image built before, without checking that it is current (`cargo xtask qemu --no-build`).
pub fn existing(board: &str, flavour: Flavour) -> Result<Built> {
    let out = out_dir(board, flavour);
    let image = out.join(format!("sbc-{board}.img"));
    if !image.exists() {
        bail!(
            "{} does not exist; run cargo xtask image --board {board}",
            image.display()
        );
    }
    let boot_dir = out.join("boot");
    let cmdline = fs::read_to_string(boot_dir.join("cmdline"))
        .with_context(|| format!("reading {}/cmdline", boot_dir.display()))?
        .trim()
        .to_string();
    let sha256 = fs::read_to_string(out.join("sbc.sha256"))
        .ok()
        .and_then(|s| s.split_whitespace().next().map(String::from))
        .map_or_else(|| inputs::sha256_file(&image), Ok)?;
    let missing = BINARIES
        .iter()
        .filter(|b| !target_dir().join("release").join(b).is_file())
        .map(|b| b.to_string())
        .collect();
    Ok(Built {
        board: board.into(),
        out,
        image,
        boot_dir,
        cmdline,
        missing,
        sha256,
        rebuilt: false,
    })
}

/// The kernel command line: ours, then the board's `board/<board>/cmdline` (CPU isolation and
/// the like), so that the board can override ours.
fn kernel_cmdline(board_profile: &Path) -> Result<String> {
    let mut line = String::from(
        "console=ttyS0,115200n8 quiet loglevel=3 net.ifnames=0 panic=5 \
         systemd.show_status=auto rd.udev.log_level=3",
    );
    let path = board_profile.join("cmdline");
    if path.exists() {
        let extra =
            fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
        for l in extra.lines() {
            let l = l.split('#').next().unwrap_or("").trim();
            if !l.is_empty() {
                line.push(' ');
                line.push_str(l);
            }
        }
    } else {
        eprintln!(
            "xtask image: note: {} does not exist; no board kernel arguments",
            path.display()
        );
    }
    Ok(line)
}

pub(crate) fn fetch_busybox(cache: &Path) -> Result<PathBuf> {
    let bin = cache.join("busybox/bin/busybox");
    if !bin.exists() {
        let deb = debs::download("busybox-static", &cache.join("debs"))?;
        debs::unpack(&deb, &cache.join("busybox"))?;
        // Older packages put it under /bin, newer ones under /usr/bin.
        let alt = cache.join("busybox/usr/bin/busybox");
        if !bin.exists() && alt.exists() {
            return Ok(alt);
        }
    }
    if !bin.exists() {
        let alt = cache.join("busybox/usr/bin/busybox");
        if alt.exists() {
            return Ok(alt);
        }
        bail!(
            "busybox-static unpacked into {} but has no busybox binary",
            cache.join("busybox").display()
        );
    }
    Ok(bin)
}

/// Copies a tree over `dest`, keeping modes and symlinks; files end up owned by root.
fn overlay(src: &Path, dest: &Path) -> Result<()> {
    if !src.exists() {
        return Ok(());
    }
    fs::create_dir_all(dest).with_context(|| format!("creating {}", dest.display()))?;
    util::run(
        Command::new("cp")
            .args(["-R", "--no-dereference", "--preserve=mode,links", "-T"])
            .arg(src)
            .arg(dest),
    )
}

fn customize_root(
    root: &Path,
    board: &str,
    rootdir: &Path,
    binaries: &[PathBuf],
    board_profile: &Path,
    debug_dir: &Path,
) -> Result<()> {
    overlay(&root.join("image/overlay"), rootdir)?;
    overlay(
        &root.join("image/board").join(board).join("overlay"),
        rootdir,
    )?;
    overlay(&root.join("systemd"), &rootdir.join("etc/systemd"))?;

    let bindir = rootdir.join("usr/bin");
    install_stripped(binaries, &bindir, debug_dir)?;

    // The board profile is part of the image, not of the data partition: it describes the
    // hardware this image was built for.
    // All profiles, not just this board's: a profile may inherit another.
    let share = rootdir.join("usr/share/sbc");
    overlay(&root.join("board"), &share.join("board"))?;
    if !board_profile.is_dir() {
        eprintln!(
            "xtask image: WARNING: {} does not exist; the image carries no board profile",
            board_profile.display()
        );
    }
    let factory = root.join("image/board").join(board).join("sbc.toml");
    fs::create_dir_all(&share).with_context(|| format!("creating {}", share.display()))?;
    fs::copy(&factory, share.join("sbc.toml"))
        .with_context(|| format!("copying the default config {}", factory.display()))?;
    housekeeping_affinity(board_profile, rootdir)?;

    fs::write(rootdir.join("etc/hostname"), "sbc\n").context("writing /etc/hostname")?;
    // Empty: systemd makes a machine id on the first boot of each box.
    fs::write(rootdir.join("etc/machine-id"), "").context("writing /etc/machine-id")?;
    for dir in [
        "data",
        "etc/sbc",
        "etc/systemd/network",
        "var/lib/sbc",
        "var/log/journal",
    ] {
        fs::create_dir_all(rootdir.join(dir)).with_context(|| format!("creating /{dir}"))?;
    }
    link_units(root, rootdir)
}

/// The board profile as plain TOML (`board/<board>/board.toml`), or `None` when the board has
/// none yet. The image reads only the few keys it needs; `crates/board` validates the rest.
fn board_toml(board_profile: &Path) -> Result<Option<toml::Table>> {
    let path = board_profile.join("board.toml");
    let Ok(text) = fs::read_to_string(&path) else {
        return Ok(None);
    };
    let table = toml::from_str(&text)
        .with_context(|| format!("parsing the board profile {}", path.display()))?;
    Ok(Some(table))
}

/// `[kernel] modules` of the board profile: drivers the board's hardware needs.
fn board_modules(board_profile: &Path) -> Result<Vec<String>> {
    let Some(t) = board_toml(board_profile)? else {
        return Ok(Vec::new());
    };
    let list = t
        .get("kernel")
        .and_then(|k| k.get("modules"))
        .and_then(|m| m.as_array())
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    Ok(list)
}

/// `[watchdog] module` of the board profile, if any.
fn board_watchdog_module(board_profile: &Path) -> Result<Option<String>> {
    let Some(t) = board_toml(board_profile)? else {
        return Ok(None);
    };
    Ok(t.get("watchdog")
        .and_then(|w| w.get("module"))
        .and_then(|m| m.as_str())
        .map(String::from))
}

/// Writes systemd's board-specific settings from the board profile: `CPUAffinity=` from
/// `[cores] housekeeping` (a CPU list such as "0" or "0-1"), and `RuntimeWatchdogSec=` and
/// `WatchdogDevice=` from `[watchdog]`. What the profile does not name keeps the defaults of
/// `systemd/system.conf.d/10-sbc.conf`.
fn housekeeping_affinity(board_profile: &Path, rootdir: &Path) -> Result<()> {
    let Some(t) = board_toml(board_profile)? else {
        return Ok(());
    };
    let profile = board_profile.join("board.toml");
    let mut lines = Vec::new();
    let cpus = match t.get("cores").and_then(|c| c.get("housekeeping")) {
        Some(toml::Value::String(s)) => Some(s.clone()),
        Some(toml::Value::Array(a)) => Some(
            a.iter()
                .filter_map(|v| v.as_integer())
                .map(|i| i.to_string())
                .collect::<Vec<_>>()
                .join(" "),
        ),
        Some(toml::Value::Integer(i)) => Some(i.to_string()),
        _ => None,
    };
    if let Some(cpus) = cpus {
        if cpus.trim().is_empty()
            || !cpus
                .chars()
                .all(|c| c.is_ascii_digit() || matches!(c, '-' | ',' | ' '))
        {
            bail!(
                "{}: cores.housekeeping = {cpus:?} is not a CPU list like \"0\" or \"0-1\"",
                profile.display()
            );
        }
        lines.push(format!("CPUAffinity={}", cpus.replace(',', " ")));
    }
    let watchdog = t.get("watchdog");
    if let Some(secs) = watchdog
        .and_then(|w| w.get("runtime_secs"))
        .and_then(|v| v.as_integer())
    {
        if !(1..=600).contains(&secs) {
            bail!(
                "{}: watchdog.runtime_secs = {secs} is not between 1 and 600",
                profile.display()
            );
        }
        lines.push(format!("RuntimeWatchdogSec={secs}s"));
    }
    if let Some(dev) = watchdog
        .and_then(|w| w.get("device"))
        .and_then(|v| v.as_str())
    {
        if !dev.starts_with("/dev/") || dev.contains(char::is_whitespace) {
            bail!(
                "{}: watchdog.device = {dev:?} is not a /dev path",
                profile.display()
            );
        }
        lines.push(format!("WatchdogDevice={dev}"));
    }
    if lines.is_empty() {
        return Ok(());
    }
    let dropin = rootdir.join("etc/systemd/system.conf.d/20-board.conf");
    fs::create_dir_all(dropin.parent().unwrap_or(rootdir))
        .with_context(|| format!("creating the directory of {}", dropin.display()))?;
    fs::write(
        &dropin,
        format!(
            "# From the board profile (cores.housekeeping, watchdog): everything but sbcd's SIP\n\
             # workers runs on the housekeeping cores; PID 1 feeds the board's hardware watchdog.\n\
             [Manager]\n{}\n",
            lines.join("\n")
        ),
    )
    .with_context(|| format!("writing {}", dropin.display()))
}

/// Applies `image/units`: `enable UNIT TARGET` links a unit into TARGET's wants, `mask UNIT`
/// and `mask-generator NAME` point it at /dev/null, `default UNIT` sets the default target. Done by hand because the host may have no systemctl.
fn link_units(root: &Path, rootdir: &Path) -> Result<()> {
    let list = root.join("image/units");
    let text = fs::read_to_string(&list).with_context(|| format!("reading {}", list.display()))?;
    let etc = rootdir.join("etc/systemd/system");
    for (n, line) in text.lines().enumerate() {
        let words: Vec<&str> = line
            .split('#')
            .next()
            .unwrap_or("")
            .split_whitespace()
            .collect();
        let (link, target) = match words.as_slice() {
            [] => continue,
            ["enable", unit, wanted_by] => {
                let template = unit.split_once('@').map(|(a, b)| {
                    format!("{a}@{}", b.rsplit_once('.').map_or("", |(_, ext)| ext))
                });
                let candidates = [
                    format!("etc/systemd/system/{unit}"),
                    format!("usr/lib/systemd/system/{unit}"),
                ];
                let mut found = candidates.iter().find(|c| rootdir.join(c).exists()).cloned();
                if found.is_none() {
                    if let Some(t) = template {
                        let t = t.replacen('@', "@.", 1);
                        found = [format!("etc/systemd/system/{t}"), format!("usr/lib/systemd/system/{t}")]
                            .into_iter()
                            .find(|c| rootdir.join(c).exists());
                    }
                }
                let Some(found) = found else {
                    bail!("{}:{}: unit {unit} exists neither in systemd/ nor in the root", list.display(), n + 1);
                };
                (etc.join(format!("{wanted_by}.wants")).join(unit), PathBuf::from(format!("/{found}")))
            }
            ["mask", unit] => (etc.join(unit), PathBuf::from("/dev/null")),
            ["mask-generator", name] => {
                (rootdir.join("etc/systemd/system-generators").join(name), PathBuf::from("/dev/null"))
            }
            ["default", unit] => {
                (etc.join("default.target"), PathBuf::from(format!("/usr/lib/systemd/system/{unit}")))
            }
            _ => bail!("{}:{}: expected `enable UNIT TARGET`, `mask UNIT`, `mask-generator NAME` or `default UNIT`, found `{line}`", list.display(), n + 1),
        };
        if let Some(dir) = link.parent() {
            fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let _ = fs::remove_file(&link);
        std::os::unix::fs::symlink(&target, &link)
            .with_context(|| format!("linking {} to {}", link.display(), target.display()))?;
    }
    Ok(())
}

/// Marks /etc and /var as up to date with /usr, so that the first boot does not spend seconds
/// on ldconfig, hwdb and catalog rebuilds (`ConditionNeedsUpdate=`): the image is built whole.
fn mark_updated(rootdir: &Path) -> Result<()> {
    for f in ["etc/.updated", "var/.updated"] {
        fs::write(rootdir.join(f), "# written by cargo xtask image\n")
            .with_context(|| format!("writing /{f}"))?;
    }
    Ok(())
}

/// The data partition's first content: the board's default config and empty folders for state,
/// the journal and the site's network settings.
fn stage_data(root: &Path, board: &str, datadir: &Path) -> Result<()> {
    if datadir.exists() {
        fs::remove_dir_all(datadir)
            .with_context(|| format!("removing old {}", datadir.display()))?;
    }
    overlay(&root.join("image/data"), datadir)?;
    for dir in [
        "etc/sbc",
        "etc/systemd/network",
        "var/lib/sbc",
        "var/log/journal",
    ] {
        fs::create_dir_all(datadir.join(dir)).with_context(|| format!("creating data/{dir}"))?;
    }
    let factory = root.join("image/board").join(board).join("sbc.toml");
    let dest = datadir.join("etc/sbc/sbc.toml");
    fs::copy(&factory, &dest)
        .with_context(|| format!("copying {} to {}", factory.display(), dest.display()))?;
    // The config may carry the console's password hash: readable by root only.
    fs::set_permissions(datadir.join("etc/sbc"), fs::Permissions::from_mode(0o750))
        .context("setting mode of data/etc/sbc")?;
    fs::set_permissions(&dest, fs::Permissions::from_mode(0o640))
        .context("setting mode of data/etc/sbc/sbc.toml")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_product_image_refuses_a_test_port_and_the_test_image_needs_one() {
        let dir = std::env::temp_dir().join(format!("xtask-testport-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
        let sbcd = dir.join("sbcd");
        let with_port = [b"\x7fELF...".as_slice(), b"\r\ntestport: ready ", b"..."].concat();
        fs::write(&sbcd, &with_port).unwrap_or_else(|e| panic!("{e}"));
        let bins = [sbcd.clone()];
        assert!(check_testport(&bins, Flavour::Product).is_err());
        assert!(check_testport(&bins, Flavour::Testport).is_ok());
        fs::write(&sbcd, b"\x7fELF... no port here").unwrap_or_else(|e| panic!("{e}"));
        assert!(check_testport(&bins, Flavour::Product).is_ok());
        assert!(check_testport(&bins, Flavour::Testport).is_err());
        // No sbcd in the image at all: nothing to check.
        assert!(check_testport(&[], Flavour::Product).is_ok());
        let _ = fs::remove_dir_all(&dir);
    }
}
