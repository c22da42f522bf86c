//! `cargo xtask qemu [--board qemu] [--twin [--lab NETNS]]`: boots the appliance image in QEMU.
//!
//! The guest gets the QEMU board's hardware: three virtio NICs (eth0 access, eth1 core, eth2
//! cross-connect), an i6300esb watchdog that resets the machine, the PS/2 keyboard whose key
//! stands for the panel button (see `cargo xtask press`), ttyS0 on the terminal for
//! `sbc-console` (and the kernel's few messages; `--verbose` shows the whole boot there), and a
//! QMP socket. SIP on the host's 127.0.0.1:5060 (UDP and TCP) is forwarded to the guest's access
//! port; the guest reaches the host as 10.0.3.2 on its core port.
//!
//! `--link access=LOCAL_PORT:REMOTE_PORT` (or `core=`) cables that port to a QEMU datagram
//! socket on the host's 127.0.0.1 instead of user networking, for a test guest on the other end
//! (`cargo xtask peer --net ADDR/PREFIX:REMOTE_PORT:LOCAL_PORT`, `peer.rs`): user networking
//! cannot carry SCTP. The port keeps the board's addresses (10.0.2.15/24, 10.0.3.15/24), the
//! configuration and the firewall stay the factory's, so the peer stands where the phones
//! (10.0.2.0/24) or the core (10.0.3.2, the factory upstream) stand. A linked access port has no
//! `--sip-port` forwarding. `--config FILE` boots the box with FILE as its `/etc/sbc/sbc.toml`
//! (by fw_cfg and `sbc.lab`, as the twin's nodes get theirs: `sbc-lab-config.service` copies it
//! before the firewall and sbcd read it), for a lab that needs listeners the factory file lacks;
//! it implies `--snapshot`, so the box's own disk never keeps it.
//!
//! `--disk FILE` boots FILE (a qcow2 overlay or a raw image, written in place) instead of the
//! node's overlay, so a test owns the box's disk across restarts and QEMU runs; `--media FILE`
//! adds FILE read-only as a second virtio disk (`/dev/vdb`), standing for the USB stick an
//! operator brings an update bundle on (`install-update media` on the console).
//!
//! The kernel is booted directly (`-kernel`/`-initrd`/`-append` with the boot partition's
//! files, the uncompressed kernel through PVH when available): that skips SeaBIOS, GRUB and the
//! kernel's own decompression, seconds under TCG. `--bios` boots the disk through SeaBIOS and
//! GRUB instead, exactly as the APU2 does.
//!
//! `--twin` boots two appliances, nodes 1 and 2 (a and b), in a lab network namespace (`lab.rs`):
//! their access and core ports share two bridges with the host's test side (192.0.2.1 the
//! phones, 198.51.100.1 the core), their cross-connects a third; each node gets its twin
//! configuration, the lab's addresses and one shared key through fw_cfg. Node a's console is on
//! the terminal, node b's on a socket. With `--print-command` both machines are printed (each
//! after a `node NAME` line) and the namespace is left for the caller to delete.
//! `--twin --bios` boots each node through SeaBIOS and GRUB from a disk of its own, a copy of
//! the image made for the run with the node's files on its data partition, as a site sets up a
//! box (`site.rs`): GRUB's command line cannot carry `sbc.lab`. Such a pair can be updated
//! (`install-update`, A/B slots) as two boxes are; `--media` gives both nodes the same stick.
//!
//! Guest writes go to a qcow2 overlay per node (`out/qemu/<node>/disk.qcow2`, the twin's nodes
//! being `twin-a` and `twin-b`), so the built image stays as built and the box's data survives
//! between runs until `--fresh`; `--snapshot` throws them away at exit.

mod install;
mod lab;
pub mod peer;
pub mod qmp;
mod site;

use crate::image;
use crate::util;
use anyhow::{bail, Context, Result};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

pub use install::Qemu;

#[derive(Debug, Clone)]
struct Opts {
    board: String,
    twin: bool,
    snapshot: bool,
    fresh: bool,
    bios: bool,
    build: bool,
    sip_port: u16,
    qmp: Option<PathBuf>,
    print_command: bool,
    no_reboot: bool,
    verbose: bool,
    /// Boot the system tests' image (`cargo xtask image --testport`).
    testport: bool,
    /// The twin lab's network namespace.
    lab: String,
    /// `--twin-misses N`: the lab's failure detection, in keep-alive intervals.
    twin_misses: Option<u32>,
    /// Ports cabled to a datagram socket instead of user networking (`--link`).
    links: Vec<Link>,
    /// The single box's `/etc/sbc/sbc.toml` for this boot (`--config`), by fw_cfg.
    config: Option<PathBuf>,
    /// `--disk FILE`: boot this disk (qcow2 or raw, written in place) instead of the node's.
    disk: Option<PathBuf>,
    /// `--media PATH`: a second disk, read-only, standing for a USB stick (an update bundle's):
    /// a disk image, or a bundle or folder to put on one.
    media: Option<PathBuf>,
}

/// `--link PORT=LOCAL_PORT:REMOTE_PORT`: one of the single box's SIP ports on a QEMU datagram
/// socket link (`-netdev dgram`) between 127.0.0.1:LOCAL_PORT and 127.0.0.1:REMOTE_PORT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Link {
    port: LinkedPort,
    local_port: u16,
    remote_port: u16,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LinkedPort {
    Access,
    Core,
}

impl Link {
    fn parse(v: &str) -> Result<Link> {
        let bad = || format!("{v}: expected access|core=LOCAL_PORT:REMOTE_PORT");
        let (port, ports) = v.split_once('=').with_context(bad)?;
        let port = match port {
            "access" => LinkedPort::Access,
            "core" => LinkedPort::Core,
            _ => bail!("{}", bad()),
        };
        let (local, remote) = ports.split_once(':').with_context(bad)?;
        Ok(Link {
            port,
            local_port: local.parse().with_context(bad)?,
            remote_port: remote.parse().with_context(bad)?,
        })
    }

    /// The QEMU netdev that stands for the port's cable.
    fn netdev(&self, id: &str) -> String {
        format!(
            "dgram,id={id},local.type=inet,local.host=127.0.0.1,local.port={},\
             remote.type=inet,remote.host=127.0.0.1,remote.port={}",
            self.local_port, self.remote_port
        )
    }
}

/// `cargo xtask qemu`'s options.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The board (only qemu boots in QEMU).
    #[arg(long, default_value = "qemu")]
    board: String,
    /// Boot two appliances, nodes a and b, in a lab network namespace.
    #[arg(long)]
    twin: bool,
    /// The host's UDP and TCP port forwarded to the guest's SIP on its access port.
    #[arg(long, value_name = "N", default_value_t = 5060)]
    sip_port: u16,
    /// Throw the guest's writes away at exit.
    #[arg(long)]
    snapshot: bool,
    /// Start from the built image again (a new overlay).
    #[arg(long)]
    fresh: bool,
    /// Boot the disk through SeaBIOS and GRUB, as the APU2 does, instead of the kernel directly.
    #[arg(long)]
    bios: bool,
    /// Boot the image that is there instead of building it first.
    #[arg(long)]
    no_build: bool,
    /// Exit QEMU when the guest reboots.
    #[arg(long)]
    no_reboot: bool,
    /// Show the whole boot on the console.
    #[arg(long)]
    verbose: bool,
    /// The QMP socket's path.
    #[arg(long, value_name = "PATH")]
    qmp: Option<PathBuf>,
    /// Print the QEMU command instead of running it.
    #[arg(long)]
    print_command: bool,
    /// Boot the system tests' image (`cargo xtask image --testport`).
    #[arg(long)]
    testport: bool,
    /// The twin lab's network namespace.
    #[arg(long, value_name = "NETNS", default_value = "sbc-lab")]
    lab: String,
    /// The twins take over after N silent keep-alive intervals of 100 ms (default 3, SPEC §7's);
    /// more for guests that stall under TCG on a loaded host.
    #[arg(long, value_name = "N")]
    twin_misses: Option<u32>,
    /// Cable a port to a QEMU datagram socket on 127.0.0.1 instead of user networking
    /// (repeatable, once per port).
    #[arg(long, value_name = "access|core=LOCAL_PORT:REMOTE_PORT", value_parser = Link::parse)]
    link: Vec<Link>,
    /// Boot with this file as /etc/sbc/sbc.toml (implies --snapshot).
    #[arg(long, value_name = "SBC_TOML")]
    config: Option<PathBuf>,
    /// Boot this disk (qcow2 or raw, written in place) instead of the node's overlay.
    #[arg(long, value_name = "FILE")]
    disk: Option<PathBuf>,
    /// A second disk, read-only, standing for a USB stick: an image, or a bundle or folder to
    /// put on one.
    #[arg(long, value_name = "IMAGE|BUNDLE|DIR")]
    media: Option<PathBuf>,
}

/// The options checked together, paths made absolute: QEMU reads the files from its own
/// working directory.
fn parse(args: Args) -> Result<Opts> {
    let absolute = |name: &str, path: Option<PathBuf>| -> Result<Option<PathBuf>> {
        path.map(|p| {
            p.canonicalize()
                .with_context(|| format!("{name} {}", p.display()))
        })
        .transpose()
    };
    let mut links: Vec<Link> = Vec::new();
    for link in args.link {
        if links.iter().any(|l| l.port == link.port) {
            bail!("--link: the {:?} port is linked twice", link.port);
        }
        links.push(link);
    }
    let mut o = Opts {
        board: args.board,
        twin: args.twin,
        snapshot: args.snapshot,
        fresh: args.fresh,
        bios: args.bios,
        build: !args.no_build,
        sip_port: args.sip_port,
        qmp: args.qmp,
        print_command: args.print_command,
        no_reboot: args.no_reboot,
        verbose: args.verbose,
        testport: args.testport,
        lab: args.lab,
        twin_misses: args.twin_misses,
        links,
        config: absolute("--config", args.config)?,
        disk: absolute("--disk", args.disk)?,
        media: absolute("--media", args.media)?,
    };
    if o.board != "qemu" {
        bail!(
            "only the qemu board boots in QEMU (the {} image expects its own hardware)",
            o.board
        );
    }
    if o.twin_misses.is_some() && !o.twin {
        bail!("--twin-misses is the twin lab's");
    }
    if o.twin_misses == Some(0) {
        bail!("--twin-misses 0: a node would take over at once");
    }
    if o.twin && o.disk.is_some() {
        bail!("--disk is the single box's; with --twin each node gets its own");
    }
    if o.config.is_some() && (o.twin || o.bios) {
        bail!("--config is the single box's, and needs the kernel command line: leave out --twin and --bios");
    }
    if o.config.is_some() {
        // The file lands on the data partition: kept, the box's own disk would boot with it
        // from then on, without the flag that put it there.
        o.snapshot = true;
    }
    if o.twin && !o.links.is_empty() {
        bail!("--link cables the single box's ports; the twin's ports are on the lab's bridges");
    }
    Ok(o)
}

/// One guest of a run.
#[derive(Debug)]
struct Node {
    name: &'static str,
    dir: PathBuf,
    sip_port: u16,
    mac_suffix: u8,
    twin_link: TwinLink,
    qmp: PathBuf,
}

#[derive(Debug)]
enum TwinLink {
    /// No twin: the cross-connect port has a link to nowhere.
    Alone,
    /// Node `id` of the twin lab: every NIC a tap on the lab's bridges, its files by fw_cfg.
    Lab {
        netns: String,
        id: u8,
        files: Vec<(String, PathBuf)>,
    },
}

pub fn run(args: Args) -> Result<()> {
    let o = parse(args)?;
    let flavour = if o.testport {
        image::Flavour::Testport
    } else {
        image::Flavour::Product
    };
    let built = if o.build {
        let b = image::build(&o.board, true, flavour)?;
        if !b.missing.is_empty() {
            eprintln!(
                "xtask qemu: WARNING: the image lacks {}",
                b.missing.join(", ")
            );
        }
        b
    } else {
        image::existing(&o.board, flavour)?
    };
    let qemu = Qemu::get()?;
    let accel = accel(&qemu, &built)?;
    let base = util::root().join("out/qemu");
    let mut o = o;
    if let Some(media) = o.media.take() {
        o.media = Some(stick(&media, &base)?);
    }
    let mut the_lab = None;
    let mut nodes = Vec::new();
    if o.twin {
        let made = lab::Lab::create(&o.lab)?;
        let key_dir = base.join("twin-lab");
        fs::create_dir_all(&key_dir).with_context(|| format!("creating {}", key_dir.display()))?;
        let key = key_dir.join("twin.key");
        lab::write_key(&key)?;
        for (id, name) in [(1u8, "a"), (2, "b")] {
            let dir = base.join(format!("twin-{name}"));
            let misses = o.twin_misses.unwrap_or(lab::DEFAULT_MISSES);
            let files = lab::node_files(id, &format!("sbc-{name}"), misses, &dir, &key)?;
            nodes.push(Node {
                name,
                sip_port: o.sip_port,
                mac_suffix: 0x0a + id - 1,
                twin_link: TwinLink::Lab {
                    netns: made.netns.clone(),
                    id,
                    files,
                },
                qmp: match (&o.qmp, id) {
                    (Some(q), 1) => q.clone(),
                    _ => dir.join("qmp.sock"),
                },
                dir,
            });
        }
        the_lab = Some(made);
    } else {
        nodes.push(Node {
            name: "a",
            dir: base.join("a"),
            sip_port: o.sip_port,
            mac_suffix: 0x0a,
            twin_link: TwinLink::Alone,
            qmp: o.qmp.clone().unwrap_or_else(|| base.join("a/qmp.sock")),
        });
    }
    let mut commands = Vec::new();
    for (i, node) in nodes.iter().enumerate() {
        let disk = match (&o.disk, &node.twin_link) {
            (Some(disk), _) => disk.clone(),
            // Through GRUB a node cannot be told `sbc.lab`: its settings go onto its disk.
            (None, TwinLink::Lab { files, .. }) if o.bios => {
                site::node_disk(&built.image, &node.dir, files)?
            }
            (None, _) => prepare_disk(&built, node, &o)?,
        };
        let on_terminal = i == 0 || o.print_command;
        commands.push(command(
            &qemu,
            &built,
            node,
            &disk,
            &o,
            &accel,
            on_terminal,
        )?);
    }
    if o.print_command {
        if let Some(made) = the_lab {
            // The caller runs the machines; the namespace is theirs to delete.
            made.keep();
            for (node, cmd) in nodes.iter().zip(&commands) {
                println!("node {}", node.name);
                print_command(cmd);
            }
        } else {
            print_command(&commands[0]);
        }
        return Ok(());
    }
    if let Some(made) = &the_lab {
        eprintln!(
            "xtask qemu: twin lab in network namespace {n}: phones side 192.0.2.1, core side \
             198.51.100.1; service addresses {a}:5060 (udp+tcp) and {c}:5062; node a is node 1 \
             (192.0.2.11), node b node 2 (192.0.2.12). A tool in the lab: ip netns exec {n} ...",
            n = made.netns,
            a = lab::ACCESS_SERVICE,
            c = lab::CORE_SERVICE,
        );
        for node in &nodes {
            eprintln!("xtask qemu: node {}: QMP {}", node.name, node.qmp.display());
        }
        eprintln!(
            "xtask qemu: node b's serial console: socat -,raw,echo=0 UNIX-CONNECT:{}",
            nodes[1].dir.join("serial.sock").display()
        );
    } else {
        for node in &nodes {
            eprintln!(
                "xtask qemu: node {}: SIP on 127.0.0.1:{} (udp+tcp), QMP {}",
                node.name,
                node.sip_port,
                node.qmp.display(),
            );
        }
        for link in &o.links {
            eprintln!(
                "xtask qemu: the {:?} port is cabled to UDP 127.0.0.1:{} <-> 127.0.0.1:{} \
                 (cargo xtask peer --net ADDR/24:{}:{}){}",
                link.port,
                link.local_port,
                link.remote_port,
                link.remote_port,
                link.local_port,
                if link.port == LinkedPort::Access {
                    "; the SIP port above is not forwarded"
                } else {
                    ""
                },
            );
        }
    }
    eprintln!("xtask qemu: serial console of node a follows; Ctrl-A x quits QEMU");
    let mut commands = commands.into_iter();
    let mut a = commands.next().context("no machine to start")?;
    let mut achild = a.spawn().context("starting QEMU for node a")?;
    let mut bchild = match commands.next() {
        Some(mut b) => Some(
            b.stdin(Stdio::null())
                .spawn()
                .context("starting QEMU for node b")?,
        ),
        None => None,
    };
    let status = achild.wait().context("waiting for QEMU (node a)")?;
    if let Some(b) = bchild.as_mut() {
        // Node b has no terminal; it ends with a.
        let _ = b.kill();
        let _ = b.wait();
    }
    // The lab goes with the machines.
    drop(the_lab);
    if !status.success() {
        bail!("QEMU (node a) exited with {status}");
    }
    Ok(())
}

/// `--media`: a disk image as it is; a bundle or a folder put on an ext4 stick image first.
fn stick(media: &Path, base: &Path) -> Result<PathBuf> {
    let is_bundle = media.extension().is_some_and(|e| e == "raucb");
    if !is_bundle && !media.is_dir() {
        return Ok(media.to_path_buf());
    }
    let dir = base.join("stick");
    if dir.exists() {
        fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
    }
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut bytes: u64 = 32 << 20;
    let entries: Vec<PathBuf> = if is_bundle {
        vec![media.to_path_buf()]
    } else {
        fs::read_dir(media)
            .with_context(|| format!("reading {}", media.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_file())
            .collect()
    };
    for file in &entries {
        let name = file.file_name().context("a file without a name")?;
        fs::copy(file, dir.join(name)).with_context(|| format!("copying {}", file.display()))?;
        bytes += fs::metadata(file)?.len() * 11 / 10;
    }
    let image = base.join("stick.img");
    let _ = fs::remove_file(&image);
    fs::File::create(&image)
        .and_then(|f| f.set_len(bytes))
        .with_context(|| format!("creating {}", image.display()))?;
    util::run(
        Command::new("mkfs.ext4")
            .args(["-q", "-F", "-L", "SBC-STICK", "-d"])
            .arg(&dir)
            .arg(&image),
    )?;
    let _ = fs::remove_dir_all(&dir);
    eprintln!(
        "xtask qemu: the stick {} holds {}",
        image.display(),
        entries
            .iter()
            .filter_map(|p| p.file_name())
            .map(|n| n.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(", ")
    );
    Ok(image)
}

/// Gives the node a disk: a qcow2 overlay over the built image, recreated when the image
/// changed or with `--fresh`.
fn prepare_disk(built: &image::Built, node: &Node, o: &Opts) -> Result<PathBuf> {
    fs::create_dir_all(&node.dir).with_context(|| format!("creating {}", node.dir.display()))?;
    let overlay = node.dir.join("disk.qcow2");
    let stamp = node.dir.join("disk.base");
    let current = fs::read_to_string(&stamp)
        .map(|s| s.trim() == built.sha256)
        .unwrap_or(false);
    if o.fresh || !current || !overlay.exists() {
        if !util::have("qemu-img") {
            // Without qemu-img the guest runs on a throw-away snapshot of the image.
            return Ok(built.image.clone());
        }
        let _ = fs::remove_file(&overlay);
        util::run(
            Command::new("qemu-img")
                .args(["create", "-q", "-f", "qcow2", "-F", "raw", "-b"])
                .arg(&built.image)
                .arg(&overlay),
        )?;
        fs::write(&stamp, format!("{}\n", built.sha256))
            .with_context(|| format!("writing {}", stamp.display()))?;
    }
    Ok(overlay)
}

fn command(
    qemu: &Qemu,
    built: &image::Built,
    node: &Node,
    disk: &Path,
    o: &Opts,
    accel: &str,
    on_terminal: bool,
) -> Result<Command> {
    let mut cmd = qemu.command();
    cmd.args(["-name", &format!("sbc-{}", node.name)]);
    let smp = cpus_for_board(&built.board)?.to_string();
    cmd.args(["-machine", "pc", "-accel", accel, "-smp", &smp, "-m", "512"]);
    cmd.args(["-cpu", if accel == "kvm" { "host" } else { "max" }]);
    cmd.args([
        "-nodefaults",
        "-no-user-config",
        "-display",
        "none",
        "-vga",
        "none",
    ]);
    let format = if disk.extension().is_some_and(|e| e == "qcow2") {
        "qcow2"
    } else {
        "raw"
    };
    // The built image itself is never written; a disk given by --disk, or a twin node's copy
    // (`--twin --bios`), is.
    let snapshot = o.snapshot || disk == built.image;
    cmd.arg("-drive").arg(format!(
        "file={},if=none,id=disk,format={format},cache=unsafe{}",
        disk.display(),
        if snapshot { ",snapshot=on" } else { "" }
    ));
    // Through the firmware, the system disk boots before the stick. A kernel booted directly
    // takes bootindex 0 itself (QEMU's linuxboot option ROM): no index then.
    cmd.arg("-device").arg(if o.bios {
        "virtio-blk-pci,drive=disk,addr=0x6,bootindex=0"
    } else {
        "virtio-blk-pci,drive=disk,addr=0x6"
    });
    if let Some(media) = &o.media {
        // The stick: the second virtio disk (vdb), which the box mounts read-only.
        cmd.arg("-drive").arg(format!(
            "file={},if=none,id=media,format=raw,readonly=on",
            media.display()
        ));
        cmd.args(["-device", "virtio-blk-pci,drive=media,addr=0x9"]);
    }
    let mac = |port: u8| format!("52:54:00:5b:{:02x}:{port:02x}", node.mac_suffix);
    if let TwinLink::Lab { id, files, .. } = &node.twin_link {
        // Every port a tap on the lab's bridges (they exist in the namespace QEMU runs in).
        for (i, nic) in lab::NICS.iter().enumerate() {
            cmd.arg("-netdev").arg(format!(
                "tap,id={nic},ifname={},script=no,downscript=no",
                lab::tap(*id, nic)
            ));
            // No option ROMs: iPXE is not in the unpacked tree; the box never boots from the
            // network.
            cmd.arg("-device").arg(format!(
                "virtio-net-pci,netdev={nic},mac={},addr=0x{},romfile=",
                mac(i as u8),
                i + 3
            ));
        }
        // Through GRUB the files are on the node's disk instead (`site.rs`).
        if !o.bios {
            for (name, file) in files {
                cmd.arg("-fw_cfg")
                    .arg(format!("name={name},file={}", file.display()));
            }
        }
    } else {
        user_networking(&mut cmd, node, &o.links, &mac);
        if let Some(config) = &o.config {
            cmd.arg("-fw_cfg")
                .arg(format!("name=opt/sbc/sbc.toml,file={}", config.display()));
        }
    }
    cmd.args(["-device", "i6300esb,addr=0x7", "-action", "watchdog=reset"]);
    cmd.args(["-device", "virtio-rng-pci,addr=0x8"]);
    if o.no_reboot {
        cmd.arg("-no-reboot");
    }
    // ttyS0: the operator's console, on the terminal (node a) or a socket (node b).
    if on_terminal {
        cmd.args([
            "-serial",
            if o.print_command {
                "stdio"
            } else {
                "mon:stdio"
            },
        ]);
    } else {
        cmd.arg("-serial").arg(format!(
            "unix:{},server=on,wait=off",
            node.dir.join("serial.sock").display()
        ));
    }
    let _ = fs::remove_file(&node.qmp);
    cmd.arg("-qmp")
        .arg(format!("unix:{},server=on,wait=off", node.qmp.display()));
    if !o.bios {
        let out = &built.out;
        let vmlinux = out.join("vmlinux");
        let kernel = if vmlinux.exists() {
            vmlinux
        } else {
            built.boot_dir.join("vmlinuz")
        };
        cmd.arg("-kernel").arg(kernel);
        cmd.arg("-initrd").arg(built.boot_dir.join("initrd.img"));
        let verbose = if o.verbose {
            " loglevel=6 systemd.show_status=1"
        } else {
            ""
        };
        // Twins boot one image: the command line names each (sbc-node-name.service).
        // `sbc.lab`: apply the files given by fw_cfg (sbc-lab-config.service).
        let name = if o.twin {
            format!(" sbc.node=sbc-{} sbc.lab", node.name)
        } else if o.config.is_some() {
            " sbc.lab".to_string()
        } else {
            String::new()
        };
        cmd.arg("-append")
            .arg(format!("{}{verbose}{name}", built.cmdline));
    }
    // A lab node runs in the lab's namespace, where its taps are.
    if let TwinLink::Lab { netns, .. } = &node.twin_link {
        let mut wrapped = Command::new("ip");
        wrapped
            .args(["netns", "exec", netns])
            .arg(cmd.get_program());
        wrapped.args(cmd.get_args());
        for (k, v) in cmd.get_envs() {
            if let Some(v) = v {
                wrapped.env(k, v);
            }
        }
        return Ok(wrapped);
    }
    Ok(cmd)
}

/// The single box's ports: QEMU user networking, SIP forwarded from the host's loopback, the
/// cross-connect linked to nowhere; a port named by `--link` on its datagram socket instead.
fn user_networking(cmd: &mut Command, node: &Node, links: &[Link], mac: &dyn Fn(u8) -> String) {
    let linked = |port: LinkedPort| links.iter().find(|l| l.port == port);
    // No option ROMs: iPXE is not in the unpacked tree and the box never boots from the network.
    cmd.arg("-netdev").arg(match linked(LinkedPort::Access) {
        Some(link) => link.netdev("access"),
        None => format!(
            "user,id=access,net=10.0.2.0/24,hostfwd=udp:127.0.0.1:{p}-10.0.2.15:5060,\
             hostfwd=tcp:127.0.0.1:{p}-10.0.2.15:5060",
            p = node.sip_port
        ),
    });
    cmd.arg("-device").arg(format!(
        "virtio-net-pci,netdev=access,mac={},addr=0x3,romfile=",
        mac(0)
    ));
    cmd.arg("-netdev").arg(match linked(LinkedPort::Core) {
        Some(link) => link.netdev("core"),
        None => "user,id=core,net=10.0.3.0/24".into(),
    });
    cmd.arg("-device").arg(format!(
        "virtio-net-pci,netdev=core,mac={},addr=0x4,romfile=",
        mac(1)
    ));
    cmd.args(["-netdev", "user,id=twin,net=10.0.4.0/24,restrict=on"]);
    cmd.arg("-device").arg(format!(
        "virtio-net-pci,netdev=twin,mac={},addr=0x5,romfile=",
        mac(2)
    ));
}

/// vCPUs for the guest: enough for every core the board profile names (`[cores] housekeeping`
/// and `sip`, CPU lists such as "0", "0-1", "1,3"), at least 2.
fn cpus_for_board(board: &str) -> Result<u32> {
    let path = util::root().join("board").join(board).join("board.toml");
    let Ok(text) = fs::read_to_string(&path) else {
        return Ok(2);
    };
    let table: toml::Table =
        toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    let mut highest = 1;
    for role in ["housekeeping", "sip"] {
        let Some(list) = table.get("cores").and_then(|c| c.get(role)) else {
            continue;
        };
        let text = match list {
            toml::Value::String(s) => s.clone(),
            toml::Value::Integer(i) => i.to_string(),
            _ => continue,
        };
        for n in text.split([',', '-', ' ']).filter(|n| !n.is_empty()) {
            let cpu: u32 = n.trim().parse().with_context(|| {
                format!(
                    "{}: cores.{role} = {text:?} is not a CPU list",
                    path.display()
                )
            })?;
            highest = highest.max(cpu);
        }
    }
    Ok(highest + 1)
}

/// `env NAME=VALUE` and `arg VALUE` lines, for a test harness that starts QEMU itself.
pub(crate) fn print_command(cmd: &Command) {
    println!("program {}", cmd.get_program().to_string_lossy());
    for (k, v) in cmd.get_envs() {
        if let Some(v) = v {
            println!("env {}={}", k.to_string_lossy(), v.to_string_lossy());
        }
    }
    for a in cmd.get_args() {
        println!("arg {}", a.to_string_lossy());
    }
}

/// TCG unless KVM is proven to work: `/proc/cpuinfo` must show vmx or svm, and a probe boot of
/// the image's kernel must reach its panic (no init on purpose) in time. Nested paravirtual
/// KVM without those flags hangs Debian kernels.
fn accel(qemu: &Qemu, built: &image::Built) -> Result<String> {
    let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let flags = cpuinfo
        .lines()
        .find(|l| l.starts_with("flags"))
        .unwrap_or("");
    let virt = flags.split_whitespace().any(|f| f == "vmx" || f == "svm");
    if !virt
        || fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/kvm")
            .is_err()
    {
        return Ok("tcg".into());
    }
    let verdict = util::root().join("out/qemu/kvm-probe");
    let key = built.sha256.clone();
    if let Ok(text) = fs::read_to_string(&verdict) {
        if let Some((k, v)) = text.trim().split_once(' ') {
            if k == key {
                return Ok(v.to_string());
            }
        }
    }
    eprintln!("xtask qemu: probing KVM");
    let mut cmd = qemu.command();
    cmd.args([
        "-machine",
        "pc",
        "-accel",
        "kvm",
        "-cpu",
        "host",
        "-m",
        "256",
        "-nodefaults",
    ]);
    cmd.args(["-display", "none", "-no-reboot", "-serial", "stdio"]);
    cmd.arg("-kernel").arg(built.boot_dir.join("vmlinuz"));
    cmd.args([
        "-append",
        "console=ttyS0 panic=-1 rdinit=/no-such-init init=/no-such-init",
    ]);
    cmd.stdout(Stdio::piped())
        .stderr(Stdio::null())
        .stdin(Stdio::null());
    let mut child = cmd.spawn().context("starting the KVM probe")?;
    let started = Instant::now();
    let mut works = false;
    loop {
        if let Some(status) = child.try_wait().context("waiting for the KVM probe")? {
            let mut out = String::new();
            if let Some(mut s) = child.stdout.take() {
                use std::io::Read;
                let _ = s.read_to_string(&mut out);
            }
            works = status.success() && out.contains("Kernel panic");
            break;
        }
        if started.elapsed() > Duration::from_secs(30) {
            let _ = child.kill();
            let _ = child.wait();
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let choice = if works { "kvm" } else { "tcg" };
    fs::create_dir_all(util::root().join("out/qemu")).context("creating out/qemu")?;
    fs::write(&verdict, format!("{key} {choice}\n")).context("writing the KVM probe verdict")?;
    Ok(choice.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(clap::Parser)]
    struct Qemu {
        #[command(flatten)]
        args: Args,
    }

    /// The words after `cargo xtask qemu`, parsed and checked as the task does.
    fn parse_words(words: &[&str]) -> Result<Opts> {
        use clap::Parser;
        let cli = Qemu::try_parse_from(std::iter::once("qemu").chain(words.iter().copied()))?;
        parse(cli.args)
    }

    #[test]
    fn a_link_names_a_sip_port_and_two_udp_ports() {
        let link = Link::parse("core=40001:40002").unwrap_or_else(|e| panic!("{e:#}"));
        assert_eq!(
            link,
            Link {
                port: LinkedPort::Core,
                local_port: 40001,
                remote_port: 40002,
            }
        );
        assert_eq!(
            link.netdev("core"),
            "dgram,id=core,local.type=inet,local.host=127.0.0.1,local.port=40001,\
             remote.type=inet,remote.host=127.0.0.1,remote.port=40002"
        );
        for bad in [
            "twin=1:2",
            "access=1",
            "access=1:x",
            "access:1:2",
            "access=1:2:3",
        ] {
            assert!(Link::parse(bad).is_err(), "{bad} was taken");
        }
        assert!(parse_words(&["--link", "access=1:2", "--link", "access=3:4"]).is_err());
        assert!(parse_words(&["--twin", "--link", "core=1:2"]).is_err());
        assert!(parse_words(&["--link", "access=1"]).is_err());
    }

    #[test]
    fn a_config_is_the_single_box_and_throws_its_writes_away() {
        let file = std::env::temp_dir().join(format!("xtask-config-{}.toml", std::process::id()));
        fs::write(&file, "").unwrap_or_else(|e| panic!("{e}"));
        let path = file.display().to_string();
        let o = parse_words(&["--config", &path]).unwrap_or_else(|e| panic!("{e:#}"));
        assert!(o.snapshot && o.config.is_some());
        assert!(parse_words(&["--twin", "--config", &path]).is_err());
        assert!(parse_words(&["--bios", "--config", &path]).is_err());
        let _ = fs::remove_file(&file);
    }

    #[test]
    fn a_twin_boots_through_grub_with_a_stick_but_not_from_a_given_disk() {
        let file = std::env::temp_dir().join(format!("xtask-disk-{}.img", std::process::id()));
        fs::write(&file, "").unwrap_or_else(|e| panic!("{e}"));
        let path = file.display().to_string();
        let o = parse_words(&["--twin", "--bios", "--media", &path])
            .unwrap_or_else(|e| panic!("{e:#}"));
        assert!(o.twin && o.bios && o.media.is_some());
        assert!(parse_words(&["--twin", "--disk", &path]).is_err());
        let o = parse_words(&["--twin", "--twin-misses", "20"]).unwrap_or_else(|e| panic!("{e:#}"));
        assert_eq!(o.twin_misses, Some(20));
        assert!(parse_words(&["--twin-misses", "20"]).is_err());
        assert!(parse_words(&["--twin", "--twin-misses", "0"]).is_err());
        let _ = fs::remove_file(&file);
    }
}
