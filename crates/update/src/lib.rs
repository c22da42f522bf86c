//! Installing an update bundle on the box (SPEC §8), for the console's and `sbcctl`'s
//! `install-update`. RAUC does the work (it checks the signature, writes the slot the box is not
//! running, and points GRUB at it for one trial boot); this crate finds the bundle (on attached
//! media, or downloads it from a server: bookworm's RAUC cannot stream), asks RAUC what it is
//! and which slot it would go to, runs the install with its progress lines passed on, and
//! restarts the box into the new slot. A bundle is checked before the operator is asked.
//!
//! Why RAUC's command line rather than its D-Bus API directly: `rauc install` is the service's
//! own client (it calls `Install` over D-Bus and prints the `Progress` property as it changes),
//! so the box keeps one client of that API, kept by RAUC. Why the console may not mount the
//! media itself: it runs without capabilities. A udev rule on the box mounts every file system
//! of an attached disk that is not the system's own, read-only, under [`MEDIA_DIR`]
//! (`/usr/lib/udev/rules.d/90-sbc-media.rules`).

use console::InstallSource;
use std::collections::BTreeMap;
use std::fmt;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Where the box mounts attached media, one folder per file system (`/run/sbc-media/sdb1`).
pub const MEDIA_DIR: &str = "/run/sbc-media";

/// What an install is given: a bundle on local media or an address RAUC streams from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    File(PathBuf),
    Url(String),
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::File(p) => write!(f, "{}", p.display()),
            Target::Url(u) => f.write_str(u),
        }
    }
}

impl Target {
    /// The bundle as a local file: the one on the media, or the one fetched from the server
    /// ([`fetch`], with its progress).
    pub fn into_local(self, progress: impl FnMut(&str)) -> Result<PathBuf, String> {
        match self {
            Target::File(path) => Ok(path),
            Target::Url(url) => fetch(&url, progress),
        }
    }
}

/// Every `*.raucb` on the mounted media: at the top of each medium and one folder down, sorted.
pub fn media_bundles(media_dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for medium in sorted_entries(media_dir) {
        for entry in sorted_entries(&medium) {
            if entry.is_dir() {
                found.extend(sorted_entries(&entry).into_iter().filter(|p| is_bundle(p)));
            } else if is_bundle(&entry) {
                found.push(entry);
            }
        }
    }
    found
}

fn sorted_entries(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| rd.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    v.sort();
    v
}

fn is_bundle(p: &Path) -> bool {
    p.is_file() && p.extension().is_some_and(|e| e == "raucb")
}

/// The bundle `source` names: the one on the media (or the one named there), or the address.
/// The error is a sentence for the operator.
pub fn locate(source: &InstallSource, media_dir: &Path) -> Result<Target, String> {
    match source {
        InstallSource::Url(url) => Ok(Target::Url(url.clone())),
        InstallSource::Media { file } => {
            let all = media_bundles(media_dir);
            let relative = |p: &PathBuf| -> String {
                // Shown without the medium's folder: what the operator sees on the stick.
                p.strip_prefix(media_dir)
                    .ok()
                    .map(|r| {
                        let mut parts = r.components();
                        parts.next();
                        parts.as_path().display().to_string()
                    })
                    .unwrap_or_else(|| p.display().to_string())
            };
            match file {
                Some(name) => all
                    .iter()
                    .find(|p| relative(p) == *name)
                    .cloned()
                    .map(Target::File)
                    .ok_or_else(|| {
                        if all.is_empty() {
                            no_media(media_dir)
                        } else {
                            format!(
                                "no bundle '{name}' on the attached media; found: {}",
                                all.iter().map(relative).collect::<Vec<_>>().join(", ")
                            )
                        }
                    }),
                None => match all.as_slice() {
                    [] => Err(no_media(media_dir)),
                    [one] => Ok(Target::File(one.clone())),
                    several => Err(format!(
                        "several bundles on the attached media: {}; name one: install-update media FILE",
                        several.iter().map(relative).collect::<Vec<_>>().join(", ")
                    )),
                },
            }
        }
    }
}

fn no_media(media_dir: &Path) -> String {
    let mounted = sorted_entries(media_dir).len();
    if mounted == 0 {
        format!(
            "no attached media found (nothing mounted under {}): plug in the stick and try again",
            media_dir.display()
        )
    } else {
        format!(
            "no update bundle (*.raucb) on the attached media ({mounted} file system(s) under {})",
            media_dir.display()
        )
    }
}

/// `KEY='value'` lines as RAUC's `--output-format=shell` prints them.
pub fn parse_shell(text: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for line in text.lines() {
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        if key.is_empty() || !key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            continue;
        }
        let value = value.trim();
        // Single-quoted, with a quote inside written '\''.
        let value = value
            .strip_prefix('\'')
            .and_then(|v| v.strip_suffix('\''))
            .map_or_else(|| value.to_string(), |v| v.replace("'\\''", "'"));
        out.insert(key.to_string(), value);
    }
    out
}

/// What a bundle says it is, once RAUC has checked its signature against the box's keyring.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BundleInfo {
    pub compatible: String,
    pub version: String,
}

/// `rauc info` on a local bundle: its signature checked against the box's keyring and its
/// manifest read. A refused bundle is an error carrying RAUC's reason.
pub fn info(path: &Path) -> Result<BundleInfo, String> {
    let out = Command::new("rauc")
        .args(["info", "--output-format=shell"])
        .arg(path)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run rauc: {e}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        return Err(rauc_error(&String::from_utf8_lossy(&out.stderr)));
    }
    let vars = parse_shell(&stdout);
    Ok(BundleInfo {
        compatible: vars.get("RAUC_MF_COMPATIBLE").cloned().unwrap_or_default(),
        version: vars.get("RAUC_MF_VERSION").cloned().unwrap_or_default(),
    })
}

/// RAUC's complaint, without its log prefixes: the last line that says something.
pub fn rauc_error(stderr: &str) -> String {
    stderr
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(strip_log_prefix)
        .next_back()
        .unwrap_or("rauc failed without saying why")
        .to_string()
}

/// `rauc-Message: 12:00:00.000: text` or `(rauc:123): rauc-WARNING **: 12:00:00.000: text`
/// is `text`: what follows the first `HH:MM:SS.fff: ` of a line that starts with RAUC's name.
fn strip_log_prefix(line: &str) -> &str {
    if !(line.starts_with("rauc") || line.starts_with("(rauc")) {
        return line;
    }
    let b = line.as_bytes();
    let digits =
        |r: std::ops::Range<usize>| r.clone().all(|i| b.get(i).is_some_and(u8::is_ascii_digit));
    for i in 0..b.len() {
        if digits(i..i + 2)
            && b.get(i + 2) == Some(&b':')
            && digits(i + 3..i + 5)
            && b.get(i + 5) == Some(&b':')
            && digits(i + 6..i + 8)
            && b.get(i + 8) == Some(&b'.')
        {
            let mut j = i + 9;
            while b.get(j).is_some_and(u8::is_ascii_digit) {
                j += 1;
            }
            if line[j..].starts_with(": ") {
                return &line[j + 2..];
            }
        }
    }
    line
}

/// The slots as RAUC sees them: the one running and the one an install writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Slots {
    /// Boot name of the slot the box runs (`A`).
    pub booted: String,
    /// Boot name of the other root slot (`B`), the one an install writes.
    pub other: Option<String>,
}

/// Reads `rauc status`'s shell output into [`Slots`].
pub fn parse_slots(vars: &BTreeMap<String, String>) -> Result<Slots, String> {
    let booted = vars
        .get("RAUC_SYSTEM_BOOTED_BOOTNAME")
        .filter(|b| !b.is_empty())
        .cloned()
        .ok_or("RAUC does not know which slot the box booted from")?;
    let count: usize = vars
        .get("RAUC_SLOTS")
        .map_or(0, |s| s.split_whitespace().count());
    let other = (1..=count)
        .filter_map(|i| vars.get(&format!("RAUC_SLOT_BOOTNAME_{i}")))
        .find(|b| !b.is_empty() && **b != booted)
        .cloned();
    Ok(Slots { booted, other })
}

/// `rauc status` on the box.
pub fn slots() -> Result<Slots, String> {
    let out = Command::new("rauc")
        .args(["status", "--output-format=shell"])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run rauc: {e}"))?;
    if !out.status.success() {
        return Err(rauc_error(&String::from_utf8_lossy(&out.stderr)));
    }
    parse_slots(&parse_shell(&String::from_utf8_lossy(&out.stdout)))
}

/// Runs `rauc install`, passing each line it prints (its progress: `40% Copying image to
/// rootfs.1`) to `progress` as it comes. `Err` carries RAUC's reason; the slot the box runs is
/// never touched either way.
pub fn install(bundle: &Path, mut progress: impl FnMut(&str)) -> Result<(), String> {
    let mut child = Command::new("rauc")
        .arg("install")
        .arg(bundle)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run rauc: {e}"))?;
    let errors = read_stderr(&mut child);
    if let Some(out) = child.stdout.take() {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            let line = line.trim_end();
            if !line.trim().is_empty() {
                progress(line);
            }
        }
    }
    let status = child.wait().map_err(|e| format!("waiting for rauc: {e}"))?;
    let errors = errors.join().unwrap_or_default();
    if status.success() {
        Ok(())
    } else {
        Err(rauc_error(&errors))
    }
}

/// Where a bundle fetched from a server is kept until it is installed: RAM (`/run`), never the
/// data partition, which is small and holds the operator's state.
pub const DOWNLOAD_DIR: &str = "/run/sbc-update";

/// The largest bundle the box downloads: a root slot's file system compressed is a fraction of
/// the slot (256 MiB).
pub const MAX_BUNDLE_BYTES: u64 = 256 << 20;

/// Reads `child`'s standard error to its end on a thread of its own (so that a full pipe never
/// stalls the child while its standard output is read); join it for the text.
fn read_stderr(child: &mut std::process::Child) -> std::thread::JoinHandle<String> {
    let stderr = child.stderr.take();
    std::thread::spawn(move || {
        let mut text = String::new();
        if let Some(err) = stderr {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                text.push_str(&line);
                text.push('\n');
            }
        }
        text
    })
}

/// What curl said went wrong: its own `curl: ...` line (the first: a usage error comes
/// before its hint), else the last line it printed.
fn curl_error(stderr: &str) -> String {
    let own = stderr.lines().find_map(|l| l.strip_prefix("curl: "));
    own.or_else(|| stderr.lines().rfind(|l| !l.trim().is_empty()))
        .map_or("the download failed without saying why", str::trim)
        .to_string()
}

/// curl's command line for a download of `url` into `file`: fails on an HTTP error, follows
/// redirects, bounded in size and in silence.
fn curl_args(url: &str, file: &Path) -> Vec<String> {
    let mut args: Vec<String> = [
        "--fail",
        "--silent",
        "--show-error",
        "--location",
        "--create-dirs",
        "--connect-timeout",
        "15",
        // A server that stops sending for a minute is gone.
        "--speed-limit",
        "1",
        "--speed-time",
        "60",
    ]
    .map(String::from)
    .to_vec();
    // curl takes an option's value as the next argument, never after `=`.
    args.extend(["--max-filesize".to_string(), MAX_BUNDLE_BYTES.to_string()]);
    args.extend([
        "--output".to_string(),
        file.display().to_string(),
        url.to_string(),
    ]);
    args
}

/// Fetches `url` into [`DOWNLOAD_DIR`] with curl, run as a transient systemd service (the console
/// that asks has no network of its own), reporting the bytes received about once a second.
/// Returns the local file, which RAUC then installs like one from the media.
pub fn fetch(url: &str, mut progress: impl FnMut(&str)) -> Result<PathBuf, String> {
    let file = Path::new(DOWNLOAD_DIR).join("bundle.raucb");
    let mut child = Command::new("systemd-run")
        .args(["--quiet", "--wait", "--pipe", "--collect"])
        .arg("--unit=sbc-update-fetch")
        .arg("--description=Download of an update bundle")
        .args(["--", "/usr/bin/curl"])
        .args(curl_args(url, &file))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run systemd-run: {e}"))?;
    let errors = read_stderr(&mut child);
    progress(&format!("downloading {url}"));
    let mut shown = 0u64;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) => {}
            Err(e) => return Err(format!("waiting for the download: {e}")),
        }
        let got = std::fs::metadata(&file).map_or(0, |m| m.len());
        if got >> 23 != shown >> 23 {
            shown = got;
            progress(&format!("downloaded {} MiB", got >> 20));
        }
        // How often the operator sees the count move; the download itself is not waited on.
        std::thread::sleep(std::time::Duration::from_secs(1));
    };
    let errors = errors.join().unwrap_or_default();
    if !status.success() {
        let _ = std::fs::remove_file(&file);
        let why = curl_error(&errors);
        return Err(format!("downloading {url}: {why}"));
    }
    let got = std::fs::metadata(&file).map_or(0, |m| m.len());
    progress(&format!("downloaded {url} ({} MiB)", got >> 20));
    Ok(file)
}

/// Removes a downloaded bundle (installed or not, it is not kept).
pub fn discard_download(file: &Path) {
    if file.starts_with(DOWNLOAD_DIR) {
        let _ = std::fs::remove_file(file);
    }
}

/// Restarts the box (`systemctl reboot`: services stop in order, sbcd ends its drain within
/// its guard, the journal is flushed).
pub fn restart() -> Result<(), String> {
    let status = Command::new("systemctl")
        .arg("reboot")
        .stdin(Stdio::null())
        .status()
        .map_err(|e| format!("cannot run systemctl: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("systemctl reboot failed ({status})"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn media(files: &[&str]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for f in files {
            let p = dir.path().join(f);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(p, b"x").unwrap();
        }
        dir
    }

    /// The box's curl command line, run by the host's curl against a server that has nothing:
    /// curl accepts every option and says why it failed in words the console can show.
    #[test]
    fn the_download_command_line_is_curls_and_its_refusal_is_readable() {
        use std::io::{Read, Write};
        let Ok(status) = Command::new("curl").arg("--version").output() else {
            eprintln!("no curl on this host: the command line is checked on the box only");
            return;
        };
        assert!(status.status.success());
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = std::thread::spawn(move || {
            let (mut conn, _) = listener.accept().unwrap();
            let mut head = [0u8; 1024];
            let _ = conn.read(&mut head);
            conn.write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
                .unwrap();
        });
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("sub/bundle.raucb");
        let url = format!("http://127.0.0.1:{port}/missing.raucb");
        let out = Command::new("curl")
            .args(curl_args(&url, &file))
            .output()
            .unwrap();
        server.join().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(22), "{stderr}");
        let why = curl_error(&stderr);
        assert!(why.contains("404"), "{why}");
        assert!(!file.exists());
    }

    #[test]
    fn curls_own_line_is_the_reason_given() {
        let usage = "curl: option --max-filesize=5: is unknown\ncurl: try 'curl --help' for more information\n";
        assert_eq!(curl_error(usage), "option --max-filesize=5: is unknown");
        assert_eq!(curl_error(""), "the download failed without saying why");
    }

    #[test]
    fn the_one_bundle_on_the_media_is_found_and_several_must_be_named() {
        let d = media(&["sdb1/readme.txt", "sdb1/sbc-qemu-1.raucb"]);
        let t = locate(&InstallSource::Media { file: None }, d.path()).unwrap();
        assert_eq!(t, Target::File(d.path().join("sdb1/sbc-qemu-1.raucb")));

        let d = media(&["sdb1/a.raucb", "sdc/updates/b.raucb", "sdc/deep/er/c.raucb"]);
        let e = locate(&InstallSource::Media { file: None }, d.path()).unwrap_err();
        assert!(e.contains("a.raucb, updates/b.raucb"), "{e}");
        assert!(!e.contains("c.raucb"), "{e}");
        let t = locate(
            &InstallSource::Media {
                file: Some("updates/b.raucb".into()),
            },
            d.path(),
        )
        .unwrap();
        assert_eq!(t, Target::File(d.path().join("sdc/updates/b.raucb")));
        let e = locate(
            &InstallSource::Media {
                file: Some("z.raucb".into()),
            },
            d.path(),
        )
        .unwrap_err();
        assert!(e.starts_with("no bundle 'z.raucb'"), "{e}");
    }

    #[test]
    fn no_media_and_media_without_a_bundle_say_which() {
        let d = media(&[]);
        let e = locate(&InstallSource::Media { file: None }, d.path()).unwrap_err();
        assert!(e.starts_with("no attached media found"), "{e}");
        let d = media(&["sdb1/photo.jpg"]);
        let e = locate(&InstallSource::Media { file: None }, d.path()).unwrap_err();
        assert!(e.starts_with("no update bundle"), "{e}");
        let e = locate(
            &InstallSource::Media { file: None },
            Path::new("/nonexistent/sbc-media"),
        )
        .unwrap_err();
        assert!(e.starts_with("no attached media found"), "{e}");
    }

    #[test]
    fn rauc_shell_output_and_its_slots() {
        let text = "RAUC_SYSTEM_COMPATIBLE='sbc-qemu'\n\
                    RAUC_SYSTEM_BOOTED_BOOTNAME='A'\n\
                    RAUC_BOOT_PRIMARY='rootfs.0'\n\
                    RAUC_SLOTS='1 2'\n\
                    RAUC_SLOT_NAME_1='rootfs.0'\n\
                    RAUC_SLOT_BOOTNAME_1='A'\n\
                    RAUC_SLOT_NAME_2='rootfs.1'\n\
                    RAUC_SLOT_BOOTNAME_2='B'\n\
                    RAUC_MF_VERSION='it'\\''s 2'\n\
                    not a line\n";
        let vars = parse_shell(text);
        assert_eq!(vars["RAUC_MF_VERSION"], "it's 2");
        assert_eq!(
            parse_slots(&vars).unwrap(),
            Slots {
                booted: "A".into(),
                other: Some("B".into())
            }
        );
        let mut v = vars.clone();
        v.insert("RAUC_SYSTEM_BOOTED_BOOTNAME".into(), String::new());
        assert!(parse_slots(&v).is_err());
    }

    #[test]
    fn rauc_errors_lose_their_log_prefix() {
        let stderr = "rauc-Message: 11:02:03.123: Reading bundle: /run/sbc-media/vdb/x.raucb\n\
                      (rauc:312): rauc-WARNING **: 11:02:03.456: signature verification failed: \
                      Verify error:unable to get local issuer certificate\n";
        assert_eq!(
            rauc_error(stderr),
            "signature verification failed: Verify error:unable to get local issuer certificate"
        );
        assert_eq!(rauc_error(""), "rauc failed without saying why");
    }
}
