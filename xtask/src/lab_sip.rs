//! `cargo xtask lab core|call|register|phone`: the lab's SIP peers, SIPp running the scenarios
//! shipped in `lab/sipp/`, for the README's walkthrough and for trying a box by hand.
//!
//! - `core`: the box's upstream. Answers OPTIONS (the box probes its upstreams; SIPp's built-in
//!   `uas` never answers them, and the box took it out of rotation), REGISTER and calls, in any
//!   order, until Ctrl-C.
//! - `call`: a phone places calls through the box and holds each for `--hold` seconds; a call
//!   the box turns away with 503 is reported, not failed.
//! - `register`: a phone registers through the box (answering a digest challenge when given
//!   `--password`); a 503 of a draining box is reported, not failed.
//! - `phone`: registers, then answers calls on the address it registered until Ctrl-C.
//!
//! What each peer sees is printed as it happens (the scenarios' `<log>` lines), one line each,
//! so a person (or the walkthrough test, `crates/sbcd/tests/walkthrough.rs`) can follow it
//! without SIPp's screen. The defaults are the QEMU appliance's (README): the box's SIP on
//! 127.0.0.1:5060, its upstream on 127.0.0.1:25070; phones register from 127.0.0.1:5090.
//! `SBC_LAB_TARGET`, `SBC_LAB_CORE_PORT` and `SBC_LAB_PHONE_PORT` change the defaults (the
//! walkthrough test points them at a host sbcd on free ports); the options change them for one
//! run.

use crate::util;
use anyhow::{bail, Context, Result};
use std::io::Read;
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// What a run of `lab` was asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Options {
    target: SocketAddr,
    port: Option<u16>,
    hold_secs: u64,
    calls: u32,
    to: String,
    user: String,
    password: Option<String>,
    expires_secs: u64,
}

fn default_target() -> Result<SocketAddr> {
    let text = std::env::var("SBC_LAB_TARGET").unwrap_or_else(|_| "127.0.0.1:5060".into());
    text.parse()
        .with_context(|| format!("SBC_LAB_TARGET={text} is not an address such as 127.0.0.1:5060"))
}

fn default_core_port() -> Result<u16> {
    match std::env::var("SBC_LAB_CORE_PORT") {
        Ok(text) => text
            .parse()
            .with_context(|| format!("SBC_LAB_CORE_PORT={text} is not a port number")),
        Err(_) => Ok(25070),
    }
}

/// The phone's port when `--port` is not given: one fixed address, so that registering again
/// refreshes the same binding (and, while the box drains, removes it: SPEC §2 rule 5).
fn default_phone_port() -> Result<u16> {
    match std::env::var("SBC_LAB_PHONE_PORT") {
        Ok(text) => text
            .parse()
            .with_context(|| format!("SBC_LAB_PHONE_PORT={text} is not a port number")),
        Err(_) => Ok(5090),
    }
}

/// `cargo xtask lab`'s arguments: the peer and its options.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Defaults: --target $SBC_LAB_TARGET or 127.0.0.1:5060 (the box's SIP); \
core --port $SBC_LAB_CORE_PORT or 25070 (the box's upstream); register and phone --port \
$SBC_LAB_PHONE_PORT or 5090 (the same contact each time: registering again refreshes the binding)."
)]
pub struct Args {
    #[command(subcommand)]
    role: Role,
}

/// The lab's peers. Every one takes the same options; each uses those that concern it.
#[derive(Debug, clap::Subcommand)]
enum Role {
    /// The box's upstream: answers OPTIONS, REGISTER and calls, in any order, until Ctrl-C.
    Core(LabOptions),
    /// A phone places calls through the box and holds each for --hold seconds.
    Call(LabOptions),
    /// A phone registers through the box (answering a digest challenge with --password).
    Register(LabOptions),
    /// Registers, then answers calls on the address it registered until Ctrl-C.
    Phone(LabOptions),
}

#[derive(Debug, clap::Args)]
struct LabOptions {
    /// The box's SIP address [default: $SBC_LAB_TARGET or 127.0.0.1:5060].
    #[arg(long, value_name = "ADDR")]
    target: Option<SocketAddr>,
    /// The peer's own port (core: $SBC_LAB_CORE_PORT or 25070; register and phone:
    /// $SBC_LAB_PHONE_PORT or 5090; call: a free one).
    #[arg(long, value_name = "N")]
    port: Option<u16>,
    /// How long each call is held, in seconds.
    #[arg(long, value_name = "SECS", default_value_t = 0)]
    hold: u64,
    /// How many calls to place.
    #[arg(long, value_name = "N", default_value_t = 1,
          value_parser = clap::value_parser!(u32).range(1..))]
    calls: u32,
    /// The user called.
    #[arg(long, value_name = "USER", default_value = "1000")]
    to: String,
    /// The user that registers or calls.
    #[arg(long, value_name = "U", default_value = "alice")]
    user: String,
    /// The password for a digest challenge.
    #[arg(long, value_name = "P")]
    password: Option<String>,
    /// The registration's lifetime, in seconds.
    #[arg(long, value_name = "SECS", default_value_t = 120)]
    expires: u64,
}

fn parse(o: LabOptions) -> Result<Options> {
    Ok(Options {
        target: match o.target {
            Some(target) => target,
            None => default_target()?,
        },
        port: o.port,
        hold_secs: o.hold,
        calls: o.calls,
        to: o.to,
        user: o.user,
        password: o.password,
        expires_secs: o.expires,
    })
}

pub fn run(args: Args) -> Result<()> {
    let (peer, o): (fn(&Options) -> Result<()>, LabOptions) = match args.role {
        Role::Core(o) => (core, o),
        Role::Call(o) => (call, o),
        Role::Register(o) => (|o| register(o).map(|_| ()), o),
        Role::Phone(o) => (phone, o),
    };
    let options = parse(o)?;
    util::ensure_debs(&["sip-tester"])?;
    peer(&options)
}

fn scenario(name: &str) -> PathBuf {
    util::root().join("lab/sipp").join(name)
}

fn core(o: &Options) -> Result<()> {
    let port = match o.port {
        Some(p) => p,
        None => default_core_port()?,
    };
    let mut sipp = Sipp::new("core", "answer.xml")?;
    sipp.args(["-p", &port.to_string()]);
    let mut child = sipp.spawn()?;
    wait_bound(&mut child, port)?;
    println!(
        "lab core: listening on 127.0.0.1:{port} (answers OPTIONS, REGISTER and calls); Ctrl-C ends it"
    );
    let status = sipp.follow(&mut child, ignore_interrupts)?;
    finish("core", &sipp, status)
}

fn call(o: &Options) -> Result<()> {
    let mut sipp = Sipp::new("call", "call.xml")?;
    sipp.args([o.target.to_string()]);
    sipp.args(["-s", &o.to, "-key", "caller", &o.user]);
    sipp.args([
        "-m",
        &o.calls.to_string(),
        "-d",
        &(o.hold_secs * 1000).to_string(),
    ]);
    sipp.args(["-p", &local_port(o.port)?.to_string()]);
    // No answer at all (no box there) fails the run after SIPp's own retransmissions.
    let limit = o.hold_secs * u64::from(o.calls) + 40;
    sipp.args(["-timeout", &format!("{limit}s"), "-timeout_error"]);
    println!(
        "lab call: {} call(s) to {}@{}, each held {} s",
        o.calls, o.to, o.target, o.hold_secs
    );
    let mut child = sipp.spawn()?;
    let status = sipp.follow(&mut child, || {})?;
    let logs = sipp.logs();
    let answered = logs.iter().filter(|l| *l == "answered").count();
    let refused = logs.iter().filter(|l| l.starts_with("refused")).count();
    println!(
        "lab call: {answered} answered, {refused} refused, {} failed",
        o.calls as usize - (answered + refused).min(o.calls as usize)
    );
    finish("call", &sipp, status)
}

/// What a registration came to.
#[derive(Debug, PartialEq, Eq)]
enum Registered {
    Yes,
    Refused,
}

fn register(o: &Options) -> Result<Registered> {
    let mut sipp = Sipp::new("register", "register.xml")?;
    sipp.args([o.target.to_string()]);
    sipp.args(["-s", &o.user, "-au", &o.user, "-m", "1"]);
    sipp.args(["-key", "expires", &o.expires_secs.to_string()]);
    if let Some(password) = &o.password {
        sipp.args(["-ap", password]);
    }
    let port = match o.port {
        Some(p) => p,
        None => default_phone_port()?,
    };
    sipp.args(["-p", &port.to_string()]);
    sipp.args(["-timeout", "40s", "-timeout_error"]);
    let mut child = sipp.spawn()?;
    let status = sipp.follow(&mut child, || {})?;
    finish("register", &sipp, status)?;
    let logs = sipp.logs();
    if logs.iter().any(|l| l.starts_with("registered")) {
        Ok(Registered::Yes)
    } else if logs.iter().any(|l| l.starts_with("refused")) {
        Ok(Registered::Refused)
    } else {
        bail!("lab register: not registered (challenged again: a wrong or missing --password?)")
    }
}

fn phone(o: &Options) -> Result<()> {
    let port = match o.port {
        Some(p) => p,
        None => default_phone_port()?,
    };
    let o = Options {
        port: Some(port),
        ..o.clone()
    };
    if register(&o)? == Registered::Refused {
        bail!("lab phone: the registration was refused; not waiting for calls");
    }
    let mut sipp = Sipp::new("phone", "answer.xml")?;
    sipp.args(["-p", &port.to_string()]);
    let mut child = sipp.spawn()?;
    wait_bound(&mut child, port)?;
    println!(
        "lab phone: {} registered from 127.0.0.1:{port}, answering calls there; Ctrl-C ends it",
        o.user
    );
    let status = sipp.follow(&mut child, ignore_interrupts)?;
    finish("phone", &sipp, status)
}

/// After the child is started: Ctrl-C reaches SIPp (same process group), which writes its
/// statistics and exits; this process stays to report it.
#[allow(unsafe_code)]
fn ignore_interrupts() {
    // SAFETY: SIG_IGN installs no handler code; the disposition is set once, after SIPp was
    // started (so SIPp keeps the default), and nothing else in xtask handles SIGINT.
    unsafe {
        libc::signal(libc::SIGINT, libc::SIG_IGN);
    }
}

/// `port`, or a free one: SIPp left to choose its own writes 5060 into Via and Contact.
fn local_port(port: Option<u16>) -> Result<u16> {
    match port {
        Some(p) => Ok(p),
        None => Ok(UdpSocket::bind(("127.0.0.1", 0))
            .and_then(|s| s.local_addr())
            .context("finding a free UDP port on 127.0.0.1")?
            .port()),
    }
}

/// Waits until `port` on 127.0.0.1 is bound (SIPp listens) or SIPp exited.
fn wait_bound(child: &mut Child, port: u16) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = child.try_wait()? {
            bail!("sipp exited before listening on 127.0.0.1:{port}: {status}");
        }
        if UdpSocket::bind(("127.0.0.1", port)).is_err() {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("sipp did not bind 127.0.0.1:{port} within 20 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn finish(role: &str, sipp: &Sipp, status: ExitStatus) -> Result<()> {
    // SIPp ends with SIGINT as a person's Ctrl-C: exit 0 when no call failed.
    if status.success() {
        return Ok(());
    }
    let errors =
        read_lossy(&sipp.dir.join("stderr.log")) + &read_lossy(&sipp.dir.join("errors.log"));
    let tail: Vec<&str> = errors.lines().rev().take(30).collect();
    for line in tail.iter().rev() {
        eprintln!("lab {role}: sipp: {line}");
    }
    bail!("sipp ({role}) ended with {status}")
}

/// One SIPp run: its arguments and a directory for its log and error trace.
struct Sipp {
    role: &'static str,
    args: Vec<String>,
    dir: PathBuf,
}

impl Sipp {
    fn new(role: &'static str, file: &str) -> Result<Sipp> {
        let path = scenario(file);
        if !path.exists() {
            bail!("no scenario {}", path.display());
        }
        let dir = util::root()
            .join("out/lab")
            .join(format!("{role}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let d = |f: &str| dir.join(f).display().to_string();
        let args = vec![
            "-sf".into(),
            path.display().to_string(),
            "-i".into(),
            "127.0.0.1".into(),
            "-nostdin".into(),
            "-trace_logs".into(),
            "-log_file".into(),
            d("log.log"),
            "-trace_err".into(),
            "-error_file".into(),
            d("errors.log"),
        ];
        Ok(Sipp { role, args, dir })
    }

    fn args<S: Into<String>>(&mut self, more: impl IntoIterator<Item = S>) {
        self.args.extend(more.into_iter().map(Into::into));
    }

    fn spawn(&self) -> Result<Child> {
        let _ = std::fs::remove_file(self.dir.join("log.log"));
        Command::new("sipp")
            .args(&self.args)
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(
                std::fs::File::create(self.dir.join("stderr.log"))
                    .context("creating sipp's stderr file")?,
            )
            .spawn()
            .context("starting sipp (Debian package sip-tester)")
    }

    /// Prints each `<log>` line as SIPp writes it until SIPp exits; `started` runs once the
    /// child is being followed.
    fn follow(&self, child: &mut Child, started: impl FnOnce()) -> Result<ExitStatus> {
        started();
        let path = self.dir.join("log.log");
        let mut printed = 0;
        let mut options_seen = false;
        loop {
            let exited = child.try_wait()?;
            let text = read_lossy(&path);
            // Whole lines only: SIPp may be half-way through one.
            let complete = text.rfind('\n').map_or(0, |i| i + 1);
            for line in text[printed.min(complete)..complete].lines() {
                let line = line.trim();
                if line == "options" {
                    // The box probes every few seconds: the first is news, the rest noise.
                    if !options_seen {
                        println!("lab {}: OPTIONS answered 200 (the box's probe; the next ones are not shown)", self.role);
                    }
                    options_seen = true;
                } else if !line.is_empty() {
                    println!("lab {}: {line}", self.role);
                }
            }
            printed = complete;
            if let Some(status) = exited {
                return Ok(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn logs(&self) -> Vec<String> {
        read_lossy(&self.dir.join("log.log"))
            .lines()
            .map(|l| l.trim().to_owned())
            .collect()
    }
}

impl Drop for Sipp {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn read_lossy(path: &Path) -> String {
    let mut bytes = Vec::new();
    if let Ok(mut f) = std::fs::File::open(path) {
        let _ = f.read_to_end(&mut bytes);
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(clap::Parser)]
    struct Lab {
        #[command(flatten)]
        args: Args,
    }

    fn parse_words(words: &[&str]) -> Result<Options> {
        use clap::Parser;
        let argv = ["lab", "call"].into_iter().chain(words.iter().copied());
        let Role::Call(o) = Lab::try_parse_from(argv)?.args.role else {
            unreachable!("parsed as call");
        };
        parse(o)
    }

    #[test]
    fn options_are_read_and_errors_name_the_argument() {
        let o = parse_words(&[
            "--target",
            "127.0.0.1:15060",
            "--hold",
            "15",
            "--calls",
            "2",
        ])
        .expect("valid");
        assert_eq!(o.target, "127.0.0.1:15060".parse().expect("address"));
        assert_eq!((o.hold_secs, o.calls), (15, 2));
        let e = parse_words(&["--hold", "soon"]).expect_err("not a number");
        assert!(e.to_string().contains("--hold"), "{e}");
        assert!(e.to_string().contains("soon"), "{e}");
        let e = parse_words(&["--bogus"]).expect_err("unknown");
        assert!(e.to_string().contains("--bogus"), "{e}");
        let e = parse_words(&["--calls", "0"]).expect_err("no calls");
        assert!(e.to_string().contains("--calls"), "{e}");
    }
}
