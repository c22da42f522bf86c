//! `cargo xtask flash --image FILE --device DEV [--yes] [--allow-file] [--keep-data]`: writes a
//! disk image to a disk, refusing every target that would hurt the host. `--keep-data` is an
//! update: everything but the `sbc-data` partition is written, so config, state and journal
//! stay (the partition must be where the image has it).
//!
//! Refused: a device that is mounted, used as swap or held by another driver (LVM, RAID, dm), in
//! whole or by a partition; the disk the host runs from (its root, through dm layers); a device
//! smaller than the image; anything that is not a block device unless `--allow-file` (then a
//! regular file, created if missing, that no loop device is using). The device's model and size
//! are shown and its name must be typed back (or `--yes`). The image is written with a progress
//! bar and fsync, read back bypassing the page cache (O_DIRECT), and the two sha256 compared.

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};
use std::fs;
use std::io::{BufRead, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

const CHUNK: usize = 4 << 20;
const ALIGN: usize = 4096;

/// `cargo xtask flash`'s options.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The disk image to write.
    #[arg(long, value_name = "FILE")]
    image: PathBuf,
    /// The disk to write it to.
    #[arg(long, value_name = "DEV")]
    device: PathBuf,
    /// Do not ask for the device's name to be typed back.
    #[arg(long)]
    yes: bool,
    /// Allow a regular file as the target (created if missing).
    #[arg(long)]
    allow_file: bool,
    /// An update: write everything but the sbc-data partition, so config, state and journal stay.
    #[arg(long)]
    keep_data: bool,
}

pub fn run(args: Args) -> Result<()> {
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
    let len = image_meta.len();
    // An update (--keep-data) writes everything but the data partition, which must sit at the
    // same place on the device as in the image: config, state and journal stay.
    let ranges = if args.keep_data {
        let data = gpt_partition(&args.image, DATA_PARTITION)?.with_context(|| {
            format!(
                "{} has no partition named {DATA_PARTITION}",
                args.image.display()
            )
        })?;
        let on_device = gpt_partition(&target.path, DATA_PARTITION)?;
        if on_device != Some(data) {
            bail!(
                "--keep-data: {} has no {DATA_PARTITION} partition at bytes {}..{} as the image \
                 has (found {on_device:?}); write the whole image instead",
                target.path.display(),
                data.0,
                data.1
            );
        }
        eprintln!("keeping the data partition (bytes {}..{})", data.0, data.1);
        vec![(0, data.0), (data.1, len)]
    } else {
        vec![(0, len)]
    };
    let written = write(&args.image, &target, &ranges, args.keep_data)?;
    let read_back = read_back(&target, &ranges)?;
    if read_back != written {
        bail!(
            "verification FAILED: wrote sha256 {written}, read back {read_back} from {}",
            target.path.display()
        );
    }
    let on_disk = hash_ranges(&args.image, &ranges)?;
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
        "verified: {} holds {}{} (sha256 {written})",
        target.path.display(),
        args.image.display(),
        if args.keep_data {
            " except its data partition, which was kept"
        } else {
            ""
        }
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

/// The GPT name of the partition an update keeps.
const DATA_PARTITION: &str = "sbc-data";

/// Byte range `[start, end)` of the GPT partition named `name` on a disk or image, `None` when
/// there is no GPT or no such partition.
fn gpt_partition(disk: &Path, name: &str) -> Result<Option<(u64, u64)>> {
    let mut f = fs::File::open(disk).with_context(|| format!("opening {}", disk.display()))?;
    let mut head = [0u8; 1024];
    if f.read_exact(&mut head).is_err() || &head[512..520] != b"EFI PART" {
        return Ok(None);
    }
    let u64_at = |b: &[u8], at: usize| {
        let mut x = [0u8; 8];
        x.copy_from_slice(&b[at..at + 8]);
        u64::from_le_bytes(x)
    };
    let u32_at = |b: &[u8], at: usize| {
        let mut x = [0u8; 4];
        x.copy_from_slice(&b[at..at + 4]);
        u32::from_le_bytes(x)
    };
    let hdr = &head[512..];
    let (entries_lba, count, size) = (u64_at(hdr, 72), u32_at(hdr, 80), u32_at(hdr, 84));
    if !(128..=4096).contains(&size) || count > 1024 {
        bail!(
            "{}: implausible GPT ({count} entries of {size} bytes)",
            disk.display()
        );
    }
    let mut table = vec![0u8; count as usize * size as usize];
    f.seek(SeekFrom::Start(entries_lba * 512))
        .and_then(|_| f.read_exact(&mut table))
        .with_context(|| format!("reading the GPT entries of {}", disk.display()))?;
    for entry in table.chunks(size as usize) {
        let utf16: Vec<u16> = entry[56..128]
            .chunks(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .take_while(|&c| c != 0)
            .collect();
        if String::from_utf16_lossy(&utf16) == name {
            let (first, last) = (u64_at(entry, 32), u64_at(entry, 40));
            return Ok(Some((first * 512, (last + 1) * 512)));
        }
    }
    Ok(None)
}

/// The sha256 of the given byte ranges of a file, in order.
fn hash_ranges(path: &Path, ranges: &[(u64, u64)]) -> Result<String> {
    let mut f = fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; CHUNK];
    for &(start, end) in ranges {
        f.seek(SeekFrom::Start(start))
            .with_context(|| format!("seeking in {}", path.display()))?;
        let mut pos = start;
        while pos < end {
            let n = ((end - pos) as usize).min(CHUNK);
            f.read_exact(&mut buf[..n])
                .with_context(|| format!("reading {} at byte {pos}", path.display()))?;
            hasher.update(&buf[..n]);
            pos += n as u64;
        }
    }
    Ok(crate::image::hex(&hasher.finalize()))
}

/// Writes the given ranges of the image at the same offsets and returns the sha256 of what was
/// written.
fn write(image: &Path, target: &Target, ranges: &[(u64, u64)], keep: bool) -> Result<String> {
    let mut src = fs::File::open(image).with_context(|| format!("opening {}", image.display()))?;
    let mut opts = fs::OpenOptions::new();
    opts.write(true);
    if target.block {
        // O_EXCL on a block device: the kernel refuses when anything has it mounted or claimed.
        opts.custom_flags(libc::O_EXCL);
    } else {
        // An update of an image file keeps the file (and its data partition) as it is.
        opts.create(true).truncate(!keep);
    }
    let mut dst = opts
        .open(&target.path)
        .with_context(|| format!("opening {} for writing (in use?)", target.path.display()))?;
    let total: u64 = ranges.iter().map(|(a, b)| b - a).sum();
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; CHUNK];
    let mut done = 0u64;
    let mut bar = Progress::new("writing  ", total);
    for &(start, end) in ranges {
        src.seek(SeekFrom::Start(start))
            .with_context(|| format!("seeking in {}", image.display()))?;
        dst.seek(SeekFrom::Start(start))
            .with_context(|| format!("seeking in {}", target.path.display()))?;
        let mut pos = start;
        while pos < end {
            let n = ((end - pos) as usize).min(CHUNK);
            src.read_exact(&mut buf[..n]).with_context(|| {
                format!("reading {} at byte {pos} (did it shrink?)", image.display())
            })?;
            dst.write_all(&buf[..n])
                .with_context(|| format!("writing {} at byte {pos}", target.path.display()))?;
            hasher.update(&buf[..n]);
            pos += n as u64;
            done += n as u64;
            bar.update(done);
        }
    }
    bar.finish();
    eprint!("syncing...");
    dst.sync_all()
        .with_context(|| format!("fsync of {}", target.path.display()))?;
    eprintln!(" done");
    Ok(crate::image::hex(&hasher.finalize()))
}

/// Reads the written ranges back and returns their sha256. O_DIRECT, so the answer comes from
/// the device and not from the page cache the write just filled; buffered where the file system
/// cannot do O_DIRECT (tmpfs), which is said.
fn read_back(target: &Target, ranges: &[(u64, u64)]) -> Result<String> {
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
            let f = fs::File::open(&target.path)
                .with_context(|| format!("opening {} to verify", target.path.display()))?;
            (f, false)
        }
    };
    let mut raw = vec![0u8; CHUNK + ALIGN];
    let buf = aligned(&mut raw, CHUNK);
    let total: u64 = ranges.iter().map(|(a, b)| b - a).sum();
    let mut hasher = Sha256::new();
    let mut done = 0u64;
    let mut bar = Progress::new("verifying", total);
    for &(start, end) in ranges {
        // Ranges start on partition boundaries (MiB-aligned), as O_DIRECT needs.
        if is_direct && start % ALIGN as u64 != 0 {
            bail!("internal: range start {start} is not {ALIGN}-aligned");
        }
        file.seek(SeekFrom::Start(start))
            .with_context(|| format!("seeking in {}", target.path.display()))?;
        let mut pos = start;
        while pos < end {
            let want = ((end - pos) as usize).min(CHUNK);
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
                        pos + got as u64
                    )
                })?;
                if n == 0 {
                    bail!(
                        "{} ends at byte {} before the image's end",
                        target.path.display(),
                        pos + got as u64
                    );
                }
                got += n;
            }
            hasher.update(&buf[..want]);
            pos += want as u64;
            done += want as u64;
            bar.update(done);
        }
    }
    bar.finish();
    Ok(crate::image::hex(&hasher.finalize()))
}
