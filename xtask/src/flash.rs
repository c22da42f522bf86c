//! `cargo xtask flash --image FILE --device DEV [--yes] [--allow-file]`: writes a disk image to
//! a disk, refusing every target that would hurt the host.
//!
//! Refused: a device that is mounted, used as swap or held by another driver (LVM, RAID, dm), in
//! whole or by a partition; the disk the host runs from (its root, through dm layers); a device
//! smaller than the image; anything that is not a block device unless `--allow-file` (then a
//! regular file, created if missing, that no loop device is using). The device's model and size
//! are shown and its name must be typed back (or `--yes`). The image is written with a progress
//! bar and fsync, read back bypassing the page cache (O_DIRECT), and the two sha256 compared.

use crate::image::sha256_file;
use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};
use std::fs;
use std::io::{BufRead, Read, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

const CHUNK: usize = 4 << 20;
const ALIGN: usize = 4096;

#[derive(Debug)]
struct Args {
    image: PathBuf,
    device: PathBuf,
    yes: bool,
    allow_file: bool,
}

fn parse(args: &[String]) -> Result<Args> {
    let usage = "usage: cargo xtask flash --image FILE --device DEV [--yes] [--allow-file]";
    let (mut image, mut device, mut yes, mut allow_file) = (None, None, false, false);
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--image" => image = Some(PathBuf::from(it.next().context("--image needs a file")?)),
            "--device" => {
                device = Some(PathBuf::from(it.next().context("--device needs a device")?))
            }
            "--yes" => yes = true,
            "--allow-file" => allow_file = true,
            other => bail!("unknown argument `{other}`; {usage}"),
        }
    }
    Ok(Args {
        image: image.with_context(|| format!("--image is missing; {usage}"))?,
        device: device.with_context(|| format!("--device is missing; {usage}"))?,
        yes,
        allow_file,
    })
}

pub fn run(args: &[String]) -> Result<()> {
    let args = parse(args)?;
    let image_meta = fs::metadata(&args.image)
        .with_context(|| format!("reading the image {}", args.image.display()))?;
    if !image_meta.is_file() || image_meta.len() == 0 {
        bail!("{} is not a non-empty image file", args.image.display());
    }
    let target = Target::inspect(&args.device, args.allow_file)?;
    target.refuse_unsafe(image_meta.len())?;

    eprintln!("target: {}", target.describe());
    eprintln!(
        "image:  {} ({} MiB)",
        args.image.display(),
        image_meta.len() >> 20
    );
    if !args.yes {
        confirm(&target)?;
    }
    let written = write(&args.image, &target, image_meta.len())?;
    let read_back = read_back(&target, image_meta.len())?;
    if read_back != written {
        bail!(
            "verification FAILED: wrote sha256 {written}, read back {read_back} from {}",
            target.path.display()
        );
    }
    let on_disk = sha256_file(&args.image)?;
    if on_disk != written {
        bail!(
            "{} changed while it was written (sha256 {on_disk}, written {written})",
            args.image.display()
        );
    }
    if target.block {
        // Let the kernel see the new partition table; harmless when it cannot.
        let _ = Command::new("blockdev")
            .arg("--rereadpt")
            .arg(&target.path)
            .stderr(std::process::Stdio::null())
            .status();
    }
    println!(
        "verified: {} holds {} (sha256 {written})",
        target.path.display(),
        args.image.display()
    );
    Ok(())
}

/// A write target and what the host knows about it.
#[derive(Debug)]
struct Target {
    path: PathBuf,
    block: bool,
    /// `major:minor` of a block device.
    devno: Option<String>,
    /// `/sys/class/block/<name>` of a block device.
    sys: Option<PathBuf>,
    size: Option<u64>,
}

impl Target {
    fn inspect(given: &Path, allow_file: bool) -> Result<Target> {
        let meta = match fs::metadata(given) {
            Ok(m) => Some(m),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(e).with_context(|| format!("reading {}", given.display())),
        };
        match meta {
            Some(m) if m.file_type().is_block_device() => {
                let path = fs::canonicalize(given)
                    .with_context(|| format!("resolving {}", given.display()))?;
                let devno = format!("{}:{}", major(m.rdev()), minor(m.rdev()));
                let sys = fs::canonicalize(format!("/sys/dev/block/{devno}"))
                    .with_context(|| format!("finding {devno} in /sys/dev/block"))?;
                let sectors: u64 = read_trim(&sys.join("size"))?
                    .parse()
                    .with_context(|| format!("reading the size of {}", path.display()))?;
                Ok(Target { path, block: true, devno: Some(devno), sys: Some(sys), size: Some(sectors * 512) })
            }
            Some(m) if m.is_file() && allow_file => {
                let path = fs::canonicalize(given)
                    .with_context(|| format!("resolving {}", given.display()))?;
                Ok(Target { path, block: false, devno: None, sys: None, size: None })
            }
            None if allow_file => {
                let parent = given.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
                let dir = fs::canonicalize(parent)
                    .with_context(|| format!("resolving the folder of {}", given.display()))?;
                let name = given.file_name().with_context(|| format!("{} names no file", given.display()))?;
                Ok(Target { path: dir.join(name), block: false, devno: None, sys: None, size: None })
            }
            Some(m) if m.is_file() => bail!(
                "{} is a regular file, not a block device; pass --allow-file to write an image file",
                given.display()
            ),
            None => bail!("{} does not exist (pass --allow-file to create an image file)", given.display()),
            Some(_) => bail!("{} is neither a block device nor a regular file", given.display()),
        }
    }

    fn describe(&self) -> String {
        let Some(sys) = &self.sys else {
            return format!("{} (a regular file)", self.path.display());
        };
        let disk = whole_disk(sys);
        let field = |f: &str| read_trim(&disk.join("device").join(f)).unwrap_or_default();
        let model = format!("{} {}", field("vendor"), field("model"))
            .trim()
            .to_string();
        let size = self.size.unwrap_or(0);
        format!(
            "{} — {} — {} bytes ({:.1} GiB){}",
            self.path.display(),
            if model.is_empty() {
                "unknown model".into()
            } else {
                model
            },
            size,
            size as f64 / (1u64 << 30) as f64,
            if read_trim(&disk.join("removable")).is_ok_and(|r| r == "1") {
                ", removable"
            } else {
                ""
            }
        )
    }

    fn refuse_unsafe(&self, image_len: u64) -> Result<()> {
        if !self.block {
            return refuse_file_in_use(&self.path);
        }
        let (Some(sys), Some(devno), Some(size)) = (&self.sys, &self.devno, self.size) else {
            bail!(
                "internal: block device {} without sysfs data",
                self.path.display()
            );
        };
        let disk = whole_disk(sys);
        // The device itself, or when it is a whole disk, each of its partitions.
        let mut members = vec![(devno.clone(), sys.clone())];
        if disk == *sys {
            for p in partitions(sys) {
                if let Ok(d) = read_trim(&p.join("dev")) {
                    members.push((d, p));
                }
            }
        }
        let mounts =
            fs::read_to_string("/proc/self/mountinfo").context("reading /proc/self/mountinfo")?;
        for (d, p) in &members {
            let name = p
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            if let Some(line) = mounts
                .lines()
                .find(|l| l.split_whitespace().nth(2) == Some(d.as_str()))
            {
                let at = line.split_whitespace().nth(4).unwrap_or("?");
                bail!(
                    "refusing {}: {name} is mounted at {at}",
                    self.path.display()
                );
            }
            let holders = list_dir(&p.join("holders"));
            if !holders.is_empty() {
                bail!(
                    "refusing {}: {name} is in use by {} (LVM, RAID or dm)",
                    self.path.display(),
                    holders.join(", ")
                );
            }
        }
        let swaps = fs::read_to_string("/proc/swaps").unwrap_or_default();
        for (_, p) in &members {
            let name = p
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            if swaps
                .lines()
                .skip(1)
                .any(|l| l.split_whitespace().next() == Some(&format!("/dev/{name}")))
            {
                bail!("refusing {}: {name} is used as swap", self.path.display());
            }
        }
        for host_disk in host_root_disks(&mounts) {
            if host_disk == disk {
                bail!(
                    "refusing {}: it is the disk the host runs from (its root file system)",
                    self.path.display()
                );
            }
        }
        if size < image_len {
            bail!(
                "refusing {}: it holds {size} bytes, the image needs {image_len}",
                self.path.display()
            );
        }
        Ok(())
    }
}

fn refuse_file_in_use(path: &Path) -> Result<()> {
    for loopdev in list_dir(Path::new("/sys/block"))
        .iter()
        .filter(|n| n.starts_with("loop"))
    {
        let backing = read_trim(
            &Path::new("/sys/block")
                .join(loopdev)
                .join("loop/backing_file"),
        );
        if backing.map(PathBuf::from).is_ok_and(|b| b == path) {
            bail!(
                "refusing {}: the file is attached to /dev/{loopdev}",
                path.display()
            );
        }
    }
    Ok(())
}

fn major(rdev: u64) -> u64 {
    ((rdev >> 32) & 0xffff_f000) | ((rdev >> 8) & 0xfff)
}

fn minor(rdev: u64) -> u64 {
    ((rdev >> 12) & 0xffff_ff00) | (rdev & 0xff)
}

fn read_trim(path: &Path) -> Result<String> {
    Ok(fs::read_to_string(path)
        .with_context(|| format!("reading {}", path.display()))?
        .trim()
        .to_string())
}

fn list_dir(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// The sysfs folder of the whole disk a block device belongs to.
fn whole_disk(sys: &Path) -> PathBuf {
    if sys.join("partition").exists() {
        if let Some(parent) = sys.parent() {
            return parent.to_path_buf();
        }
    }
    sys.to_path_buf()
}

fn partitions(disk: &Path) -> Vec<PathBuf> {
    list_dir(disk)
        .into_iter()
        .map(|n| disk.join(n))
        .filter(|p| p.join("partition").exists())
        .collect()
}

/// The whole disks under the host's root file system, following dm/md layers down through
/// `slaves/`.
fn host_root_disks(mountinfo: &str) -> Vec<PathBuf> {
    let mut disks = Vec::new();
    let Some(root) = mountinfo
        .lines()
        .find(|l| l.split_whitespace().nth(4) == Some("/"))
    else {
        return disks;
    };
    let Some(devno) = root.split_whitespace().nth(2) else {
        return disks;
    };
    let Ok(start) = fs::canonicalize(format!("/sys/dev/block/{devno}")) else {
        return disks;
    };
    let mut todo = vec![start];
    while let Some(dev) = todo.pop() {
        let disk = whole_disk(&dev);
        let slaves = list_dir(&disk.join("slaves"));
        for s in &slaves {
            if let Ok(p) = fs::canonicalize(disk.join("slaves").join(s)) {
                todo.push(p);
            }
        }
        if slaves.is_empty() && !disks.contains(&disk) {
            disks.push(disk);
        }
    }
    disks
}

fn confirm(target: &Target) -> Result<()> {
    let full = target.path.display().to_string();
    let short = target
        .path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    eprint!("everything on {full} will be overwritten; type its name ({short}) to go on: ");
    std::io::stderr().flush().ok();
    let mut answer = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut answer)
        .context("reading the confirmation")?;
    let answer = answer.trim();
    if answer != short && answer != full {
        bail!("not confirmed (typed {answer:?}); nothing was written");
    }
    Ok(())
}

/// An ALIGN-aligned window of a buffer, for O_DIRECT (safe code: the window is found, not made).
fn aligned(buf: &mut [u8], len: usize) -> &mut [u8] {
    let offset = (ALIGN - (buf.as_ptr() as usize % ALIGN)) % ALIGN;
    &mut buf[offset..offset + len]
}

/// A progress bar on stderr: redrawn in place on a terminal, a line per quarter otherwise.
struct Progress {
    verb: &'static str,
    total: u64,
    started: Instant,
    shown_pct: Option<u64>,
    tty: bool,
}

impl Progress {
    fn new(verb: &'static str, total: u64) -> Self {
        use std::io::IsTerminal;
        Progress {
            verb,
            total,
            started: Instant::now(),
            shown_pct: None,
            tty: std::io::stderr().is_terminal(),
        }
    }

    fn update(&mut self, done: u64) {
        let pct = (done * 100).checked_div(self.total).unwrap_or(100);
        let step = if self.tty { pct } else { pct / 25 * 25 };
        if self.shown_pct == Some(step) {
            return;
        }
        self.shown_pct = Some(step);
        let secs = self.started.elapsed().as_secs_f64().max(0.001);
        let width = 30;
        let filled = (pct as usize * width) / 100;
        let line = format!(
            "{} [{}{}] {pct:3}% {}/{} MiB {:.0} MiB/s",
            self.verb,
            "#".repeat(filled),
            " ".repeat(width - filled),
            done >> 20,
            self.total >> 20,
            (done as f64 / (1u64 << 20) as f64) / secs
        );
        if self.tty {
            eprint!("\r{line} ");
            std::io::stderr().flush().ok();
        } else {
            eprintln!("{line}");
        }
    }

    fn finish(&self) {
        if self.tty {
            eprintln!();
        }
    }
}

/// Writes the image and returns the sha256 of what was written.
fn write(image: &Path, target: &Target, len: u64) -> Result<String> {
    let mut src = fs::File::open(image).with_context(|| format!("opening {}", image.display()))?;
    let mut opts = fs::OpenOptions::new();
    opts.write(true);
    if target.block {
        // O_EXCL on a block device: the kernel refuses when anything has it mounted or claimed.
        opts.custom_flags(libc::O_EXCL);
    } else {
        opts.create(true).truncate(true);
    }
    let mut dst = opts
        .open(&target.path)
        .with_context(|| format!("opening {} for writing (in use?)", target.path.display()))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; CHUNK];
    let mut done = 0u64;
    let mut bar = Progress::new("writing  ", len);
    loop {
        let n = src
            .read(&mut buf)
            .with_context(|| format!("reading {}", image.display()))?;
        if n == 0 {
            break;
        }
        dst.write_all(&buf[..n])
            .with_context(|| format!("writing {} at byte {done}", target.path.display()))?;
        hasher.update(&buf[..n]);
        done += n as u64;
        bar.update(done);
    }
    bar.finish();
    eprint!("syncing...");
    dst.sync_all()
        .with_context(|| format!("fsync of {}", target.path.display()))?;
    eprintln!(" done");
    if done != len {
        bail!(
            "{} changed size while it was written ({done} of {len} bytes)",
            image.display()
        );
    }
    Ok(crate::image::hex(&hasher.finalize()))
}

/// Reads the first `len` bytes back and returns their sha256. O_DIRECT, so the answer comes from
/// the device and not from the page cache the write just filled; buffered where the file system
/// cannot do O_DIRECT (tmpfs), which is said.
fn read_back(target: &Target, len: u64) -> Result<String> {
    let direct = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECT)
        .open(&target.path);
    let (mut file, is_direct) = match direct {
        Ok(f) => (f, true),
        Err(_) => {
            eprintln!(
                "note: {} cannot be read with O_DIRECT; verifying through the page cache",
                target.path.display()
            );
            (
                fs::File::open(&target.path)
                    .with_context(|| format!("opening {} to verify", target.path.display()))?,
                false,
            )
        }
    };
    let mut raw = vec![0u8; CHUNK + ALIGN];
    let buf = aligned(&mut raw, CHUNK);
    let mut hasher = Sha256::new();
    let mut done = 0u64;
    let mut bar = Progress::new("verifying", len);
    while done < len {
        let want = ((len - done) as usize).min(CHUNK);
        // O_DIRECT reads whole blocks; the hash takes only the image's bytes.
        let ask = if is_direct {
            want.div_ceil(ALIGN) * ALIGN
        } else {
            want
        };
        let mut got = 0;
        while got < want {
            let n = file.read(&mut buf[got..ask]).with_context(|| {
                format!(
                    "reading {} back at byte {}",
                    target.path.display(),
                    done + got as u64
                )
            })?;
            if n == 0 {
                bail!(
                    "{} ends at byte {} before the image's {len}",
                    target.path.display(),
                    done + got as u64
                );
            }
            got += n;
        }
        hasher.update(&buf[..want]);
        done += want as u64;
        bar.update(done);
    }
    bar.finish();
    Ok(crate::image::hex(&hasher.finalize()))
}
