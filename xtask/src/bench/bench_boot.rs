//! `cargo xtask bench boot [--runs N] [--verbose]`: QEMU start to SIP-online, boot after boot.
//!
//! Boots the system tests' image (`cargo xtask image --testport`, built first unless
//! `--no-build`) as `cargo xtask qemu` would, with a throw-away overlay, N times in a row. From
//! QEMU's start a phone's OPTIONS goes to the access listener (the forwarded host port) every
//! 100 ms; SIP-online is the first one answered 200 (issue 17: at most 10 s under TCG). The
//! serial console is read too, for the kernel's first line, the login prompt and, with
//! `--verbose` (the whole boot on the console, which slows it a little), the systemd units that
//! took longest to start. The last boot's console, with times, is left in
//! `out/bench/boot-console.txt`.
//!
//! A benchmark: it prints (one JSON line to `out/bench/boot.json` too) and never fails on a
//! number. Boot times under TCG follow the host's load closely: the load average is printed
//! with every run, and figures taken beside a build mean little.

use crate::util;
use anyhow::{bail, Context, Result};
use std::io::Read;
use std::net::UdpSocket;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// A boot that is not SIP-online after this is given up (and reported as such).
const BOOT_LIMIT: Duration = Duration::from_secs(180);

/// `cargo xtask bench boot`'s options.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Boots in a row.
    #[arg(long, value_name = "N", default_value_t = 5,
          value_parser = clap::value_parser!(u32).range(1..=100))]
    runs: u32,
    /// Boot the image that is there instead of building it first.
    #[arg(long)]
    no_build: bool,
    /// The whole boot on the console, and the slowest units of each boot.
    #[arg(long)]
    verbose: bool,
}

/// What one boot showed, in seconds from QEMU's start.
#[derive(Debug, Default)]
struct Boot {
    kernel: Option<f64>,
    login: Option<f64>,
    sip_online: Option<f64>,
    load: f64,
    /// `(seconds, unit)` of the units systemd reported started, with the time since the
    /// previous such line (verbose runs only).
    slowest: Vec<(f64, String)>,
}

pub fn run(args: Args) -> Result<()> {
    let exe = std::env::current_exe().context("finding xtask's own binary")?;
    if !args.no_build {
        let status = Command::new(&exe)
            .args(["image", "--board", "qemu", "--testport"])
            .status()
            .context("running xtask image")?;
        if !status.success() {
            bail!("xtask image --testport failed");
        }
    }
    let mut boots = Vec::new();
    for run in 1..=args.runs {
        let boot = one_boot(&exe, args.verbose)?;
        let show = |v: Option<f64>| v.map_or("-".to_string(), |s| format!("{s:.1} s"));
        println!(
            "boot {run}: kernel {}, login prompt {}, SIP-online {} (load average {:.2})",
            show(boot.kernel),
            show(boot.login),
            show(boot.sip_online),
            boot.load
        );
        if args.verbose {
            for (gap, unit) in &boot.slowest {
                println!("    {gap:5.2} s before {unit}");
            }
        }
        boots.push(boot);
    }
    let mut online: Vec<f64> = boots.iter().filter_map(|b| b.sip_online).collect();
    online.sort_by(f64::total_cmp);
    let failed = boots.len() - online.len();
    let (min, median, max) = match online.as_slice() {
        [] => (None, None, None),
        s => (Some(s[0]), Some(s[s.len() / 2]), Some(s[s.len() - 1])),
    };
    let fmt = |v: Option<f64>| v.map_or("-".into(), |s| format!("{s:.1} s"));
    println!(
        "SIP-online over {} boots: min {}, median {}, max {}; {} never online within {} s \
         (goal: at most 10 s)",
        boots.len(),
        fmt(min),
        fmt(median),
        fmt(max),
        failed,
        BOOT_LIMIT.as_secs()
    );
    let json = |v: Option<f64>| v.map_or("null".into(), |s| format!("{s:.2}"));
    let line = format!(
        "{{\"bench\":\"boot\",\"runs\":{},\"verbose\":{},\"sip_online_s\":[{}],\"login_s\":[{}],\
         \"load\":[{}],\"min_s\":{},\"median_s\":{},\"max_s\":{},\"never_online\":{}}}\n",
        boots.len(),
        args.verbose,
        boots
            .iter()
            .map(|b| json(b.sip_online))
            .collect::<Vec<_>>()
            .join(","),
        boots
            .iter()
            .map(|b| json(b.login))
            .collect::<Vec<_>>()
            .join(","),
        boots
            .iter()
            .map(|b| format!("{:.2}", b.load))
            .collect::<Vec<_>>()
            .join(","),
        json(min),
        json(median),
        json(max),
        failed
    );
    let out = util::root().join("out/bench");
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    std::fs::write(out.join("boot.json"), line).context("writing out/bench/boot.json")?;
    Ok(())
}

/// One boot: QEMU as `cargo xtask qemu --print-command` gives it, until SIP-online or the limit.
fn one_boot(exe: &std::path::Path, verbose: bool) -> Result<Boot> {
    let probe = UdpSocket::bind("127.0.0.1:0").context("binding the phone's socket")?;
    // The forwarded port: one the kernel just gave out and took back.
    let sip_port = UdpSocket::bind("127.0.0.1:0")?.local_addr()?.port();
    let mut args = vec![
        "qemu".to_string(),
        "--testport".into(),
        "--no-build".into(),
        "--snapshot".into(),
        "--no-reboot".into(),
        "--sip-port".into(),
        sip_port.to_string(),
        "--print-command".into(),
    ];
    if verbose {
        args.push("--verbose".into());
    }
    let printed = Command::new(exe)
        .args(&args)
        .output()
        .context("running xtask qemu --print-command")?;
    if !printed.status.success() {
        bail!(
            "xtask qemu --print-command failed: {}",
            String::from_utf8_lossy(&printed.stderr)
        );
    }
    let mut cmd = printed_command(&String::from_utf8_lossy(&printed.stdout))?;
    let load = load_average();
    let started = Instant::now();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("starting QEMU")?;
    let guard = KillOnDrop(&mut child);
    let serial = guard.0.stdout.take().context("QEMU's serial console")?;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        // Lines as they come, and a partial line that holds the login prompt (written without
        // a newline after it).
        let mut serial = serial;
        let mut pending: Vec<u8> = Vec::new();
        let mut buf = [0u8; 4096];
        while let Ok(n) = serial.read(&mut buf) {
            if n == 0 {
                break;
            }
            pending.extend_from_slice(&buf[..n]);
            while let Some(end) = pending.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = pending.drain(..=end).collect();
                let line = String::from_utf8_lossy(&line).into_owned();
                if tx.send((started.elapsed(), line)).is_err() {
                    return;
                }
            }
            if pending.windows(7).any(|w| w == b"login: ") {
                let line = String::from_utf8_lossy(&pending).into_owned();
                pending.clear();
                if tx.send((started.elapsed(), line)).is_err() {
                    return;
                }
            }
        }
    });

    let mut boot = Boot {
        load,
        ..Boot::default()
    };
    probe.set_read_timeout(Some(Duration::from_millis(100)))?;
    let target = format!("127.0.0.1:{sip_port}");
    let mut seq = 0u32;
    let mut last_unit_at = 0.0;
    let mut units: Vec<(f64, String)> = Vec::new();
    let mut console = String::new();
    while started.elapsed() < BOOT_LIMIT {
        while let Ok((at, line)) = rx.try_recv() {
            let at = at.as_secs_f64();
            console.push_str(&format!("{at:7.2} {}\n", line.trim_end()));
            if boot.kernel.is_none() && line.contains("Linux version") {
                boot.kernel = Some(at);
            }
            if boot.login.is_none() && line.contains("login: ") {
                boot.login = Some(at);
            }
            if let Some(i) = line.find("] Started ").or_else(|| line.find("] Reached ")) {
                let what = line[i + 2..].trim().trim_end_matches('.').to_string();
                units.push((at - last_unit_at, what));
                last_unit_at = at;
            }
        }
        seq += 1;
        let options = format!(
            "OPTIONS sip:10.0.2.15:5060 SIP/2.0\r\n\
             Via: SIP/2.0/UDP 127.0.0.1:{local};branch=z9hG4bK-boot-{seq}\r\n\
             Max-Forwards: 70\r\n\
             From: <sip:bench@127.0.0.1>;tag=boot\r\n\
             To: <sip:10.0.2.15:5060>\r\n\
             Call-ID: boot-{seq}@127.0.0.1\r\n\
             CSeq: {seq} OPTIONS\r\n\
             Content-Length: 0\r\n\r\n",
            local = probe.local_addr()?.port()
        );
        let sent_at = Instant::now();
        let _ = probe.send_to(options.as_bytes(), &target);
        let mut buf = [0u8; 4096];
        while sent_at.elapsed() < Duration::from_millis(100) {
            match probe.recv(&mut buf) {
                Ok(n) if buf[..n].starts_with(b"SIP/2.0 200") => {
                    boot.sip_online = Some(started.elapsed().as_secs_f64());
                    break;
                }
                Ok(_) => continue,
                Err(_) => break,
            }
        }
        if boot.sip_online.is_some() {
            break;
        }
        if let Ok(Some(status)) = guard.0.try_wait() {
            bail!("QEMU exited during the boot: {status}");
        }
    }
    let log = util::root().join("out/bench/boot-console.txt");
    std::fs::create_dir_all(util::root().join("out/bench"))?;
    std::fs::write(&log, console).with_context(|| format!("writing {}", log.display()))?;
    units.sort_by(|a, b| b.0.total_cmp(&a.0));
    units.truncate(8);
    boot.slowest = units;
    Ok(boot)
}

/// QEMU is killed whatever happens to the run.
struct KillOnDrop<'a>(&'a mut Child);

impl Drop for KillOnDrop<'_> {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `program`, `env` and `arg` lines of `cargo xtask qemu --print-command`, as a command.
fn printed_command(text: &str) -> Result<Command> {
    let mut program = None;
    let mut envs = Vec::new();
    let mut args = Vec::new();
    for line in text.lines() {
        if let Some(p) = line.strip_prefix("program ") {
            program = Some(p.to_string());
        } else if let Some(e) = line.strip_prefix("env ") {
            let (k, v) = e.split_once('=').context("an env line without =")?;
            envs.push((k.to_string(), v.to_string()));
        } else if let Some(a) = line.strip_prefix("arg ") {
            args.push(a.to_string());
        }
    }
    let mut cmd = Command::new(program.context("no program line in the QEMU command")?);
    cmd.envs(envs).args(args);
    Ok(cmd)
}

/// The host's one-minute load average, printed beside each boot.
fn load_average() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|t| t.split_whitespace().next()?.parse().ok())
        .unwrap_or(f64::NAN)
}
