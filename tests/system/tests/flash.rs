//! `cargo xtask flash` against targets that cannot hurt the host: a regular file (refused
//! without `--allow-file`, written and verified with it), a character device, the host's root
//! disk (refused), and, where the machine has loop devices and we are root, a loop device that
//! is too small (refused), one whose backing file is the target (refused), and one big enough
//! (written and verified). The image is a small stand-in: flash does not care what it holds.

use std::process::Command;
use system_tests::*;

const IMAGE_BYTES: usize = 8 << 20;

fn stand_in_image(dir: &std::path::Path) -> std::path::PathBuf {
    // Not all zero, so that a write that silently did nothing cannot verify.
    let bytes: Vec<u8> = (0..IMAGE_BYTES).map(|i| (i * 7 % 251) as u8).collect();
    let path = dir.join("stand-in.img");
    write_file(&path, &bytes);
    path
}

fn flash(args: &[&str]) -> (bool, String) {
    let mut all = vec!["flash"];
    all.extend_from_slice(args);
    let out = xtask(&all);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn flash_refuses_what_it_must_and_verifies_a_file() {
    let dir = scratch("flash");
    let image = stand_in_image(&dir);
    let image_s = image.to_string_lossy().into_owned();
    let target = dir.join("target.img");
    let target_s = target.to_string_lossy().into_owned();

    let (ok, text) = flash(&["--image", &image_s, "--device", &target_s, "--yes"]);
    assert!(
        !ok && text.contains("--allow-file"),
        "a file without --allow-file: {text}"
    );
    write_file(&target, b"existing");
    let (ok, text) = flash(&["--image", &image_s, "--device", &target_s, "--yes"]);
    assert!(
        !ok && text.contains("not a block device"),
        "an existing file: {text}"
    );

    let (ok, text) = flash(&[
        "--image",
        &image_s,
        "--device",
        "/dev/null",
        "--yes",
        "--allow-file",
    ]);
    assert!(
        !ok && text.contains("neither a block device"),
        "a character device: {text}"
    );

    let (ok, text) = flash(&[
        "--image",
        &image_s,
        "--device",
        &target_s,
        "--yes",
        "--allow-file",
    ]);
    assert!(ok && text.contains("verified"), "writing a file: {text}");
    let written =
        std::fs::read(&target).unwrap_or_else(|e| panic!("reading the written target: {e}"));
    let wanted =
        std::fs::read(&image).unwrap_or_else(|e| panic!("reading the stand-in image: {e}"));
    assert!(written == wanted, "the target file differs from the image");

    // An update keeps the data partition; it needs an image with a GPT (sfdisk makes one).
    if have("sfdisk") {
        keep_data_update(&dir);
    } else {
        eprintln!("no sfdisk here: the --keep-data case is not tested");
    }

    // The disk the host runs from, when "/" is on a plain block device.
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    if let Some(dev) = mounts
        .lines()
        .find(|l| l.split_whitespace().nth(1) == Some("/"))
        .and_then(|l| l.split_whitespace().next())
        .filter(|d| d.starts_with("/dev/"))
    {
        let (ok, text) = flash(&["--image", &image_s, "--device", dev, "--yes"]);
        assert!(
            !ok && text.contains("refusing"),
            "the host's root device {dev}: {text}"
        );
    }
}

/// A 16 MiB stand-in with the appliance's partition names: `sbc-root` at 1..5 MiB, `sbc-data`
/// at 5..15 MiB.
fn gpt_stand_in(dir: &std::path::Path) -> std::path::PathBuf {
    use std::io::Write;
    let path = dir.join("gpt-stand-in.img");
    let bytes: Vec<u8> = (0..16usize << 20).map(|i| (i * 13 % 241) as u8).collect();
    write_file(&path, &bytes);
    let mut child = Command::new("sfdisk")
        .args(["--quiet", "--no-reread", "--no-tell-kernel"])
        .arg(&path)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("starting sfdisk: {e}"));
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(
                b"label: gpt\nstart=2048, size=8192, name=\"sbc-root\"\n\
                  start=10240, size=20480, name=\"sbc-data\"\n",
            )
            .unwrap_or_else(|e| panic!("writing to sfdisk: {e}"));
    }
    let status = child
        .wait()
        .unwrap_or_else(|e| panic!("waiting for sfdisk: {e}"));
    assert!(status.success(), "sfdisk on {} failed", path.display());
    path
}

fn keep_data_update(dir: &std::path::Path) {
    let image = gpt_stand_in(dir);
    let image = image.as_path();
    let image_s = image.to_string_lossy().into_owned();
    let target = dir.join("update.img");
    let target_s = target.to_string_lossy().into_owned();
    let (ok, text) = flash(&[
        "--image",
        &image_s,
        "--device",
        &target_s,
        "--yes",
        "--allow-file",
    ]);
    assert!(ok, "first install: {text}");
    let (ok, text) = flash(&[
        "--image",
        &image_s,
        "--device",
        &target_s,
        "--yes",
        "--allow-file",
        "--keep-data",
    ]);
    assert!(
        ok && text.contains("kept"),
        "an update with --keep-data: {text}"
    );
    // Something the box wrote into its data partition.
    let marker_at: u64 = 10 << 20;
    {
        use std::io::{Seek, SeekFrom, Write};
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .open(&target)
            .unwrap_or_else(|e| panic!("opening {target_s}: {e}"));
        f.seek(SeekFrom::Start(marker_at))
            .and_then(|_| f.write_all(b"state-of-the-box"))
            .unwrap_or_else(|e| panic!("writing a marker into {target_s}: {e}"));
    }
    let (ok, text) = flash(&[
        "--image",
        &image_s,
        "--device",
        &target_s,
        "--yes",
        "--allow-file",
        "--keep-data",
    ]);
    assert!(
        ok && text.contains("kept"),
        "a second update with --keep-data: {text}"
    );
    let after = std::fs::read(&target).unwrap_or_else(|e| panic!("reading {target_s}: {e}"));
    let at = marker_at as usize;
    assert_eq!(
        &after[at..at + 16],
        b"state-of-the-box",
        "the data partition was overwritten"
    );
    let (ok, text) = flash(&[
        "--image",
        &image_s,
        "--device",
        &target_s,
        "--yes",
        "--allow-file",
    ]);
    assert!(ok, "a full write: {text}");
    let after = std::fs::read(&target).unwrap_or_else(|e| panic!("reading {target_s}: {e}"));
    assert_ne!(
        &after[at..at + 16],
        b"state-of-the-box",
        "a full write kept old data"
    );
    let _ = std::fs::remove_file(&target);
}

#[test]
fn flash_on_loop_devices() {
    if !is_root() || !have("losetup") || !std::path::Path::new("/dev/loop-control").exists() {
        // CI runs as root with loop devices: there a missing prerequisite fails the test.
        assert!(
            std::env::var_os("CI").is_none(),
            "flash on loop devices needs root, losetup and /dev/loop-control under CI=true"
        );
        eprintln!(
            "no loop devices here (needs root and losetup); the file target test covers flash"
        );
        return;
    }
    let dir = scratch("flash-loop");
    let image = stand_in_image(&dir);
    let image_s = image.to_string_lossy().into_owned();
    let attach = |file: &std::path::Path, bytes: u64| -> Option<LoopDev> {
        let f = std::fs::File::create(file)
            .unwrap_or_else(|e| panic!("creating a loop backing file: {e}"));
        f.set_len(bytes)
            .unwrap_or_else(|e| panic!("sizing a loop backing file: {e}"));
        let out = Command::new("losetup")
            .args(["--find", "--show"])
            .arg(file)
            .output()
            .ok()?;
        let dev = String::from_utf8_lossy(&out.stdout).trim().to_string();
        (out.status.success() && !dev.is_empty()).then_some(LoopDev(dev))
    };

    let small_file = dir.join("small.img");
    let Some(small) = attach(&small_file, (IMAGE_BYTES / 2) as u64) else {
        assert!(
            std::env::var_os("CI").is_none(),
            "losetup could not attach a loop device under CI=true"
        );
        eprintln!("losetup could not attach a loop device; skipping the loop cases");
        return;
    };
    let (ok, text) = flash(&["--image", &image_s, "--device", &small.0, "--yes"]);
    assert!(
        !ok && text.contains("the image needs"),
        "a too small device: {text}"
    );
    let (ok, text) = flash(&[
        "--image",
        &image_s,
        "--device",
        &small_file.to_string_lossy(),
        "--yes",
        "--allow-file",
    ]);
    assert!(
        !ok && text.contains("attached to"),
        "a file behind a loop device: {text}"
    );
    drop(small);

    let big_file = dir.join("big.img");
    let big = attach(&big_file, (IMAGE_BYTES * 2) as u64)
        .unwrap_or_else(|| panic!("attaching a second loop device failed"));
    let (ok, text) = flash(&["--image", &image_s, "--device", &big.0, "--yes"]);
    assert!(
        ok && text.contains("verified"),
        "a big enough loop device: {text}"
    );
}

/// A loop device, detached when dropped.
struct LoopDev(String);

impl Drop for LoopDev {
    fn drop(&mut self) {
        let _ = Command::new("losetup").arg("-d").arg(&self.0).status();
    }
}
