//! The twin lab of `cargo xtask qemu --twin`: a network namespace (default `sbc-lab`) holding
//! three Linux bridges and one tap per guest NIC, and the per-node files each guest applies at
//! boot (docs/twin.md, "The twin in QEMU").
//!
//! ```text
//!   namespace sbc-lab
//!   br-access 192.0.2.1/24     sbc1-access (node a eth0)   sbc2-access (node b eth0)
//!   br-core   198.51.100.1/24  sbc1-core   (node a eth1)   sbc2-core   (node b eth1)
//!   br-twin   (no address)     sbc1-twin   (node a eth2)   sbc2-twin   (node b eth2)
//! ```
//!
//! The host's test side lives in the namespace: phones at 192.0.2.1, the core (the upstream,
//! `sip:198.51.100.1:25070`) at 198.51.100.1; `ip netns exec sbc-lab ...` runs a tool there.
//! The namespace is deleted when the run ends ([`Lab`]'s `Drop`), and any stale one of the same
//! name is deleted before a run makes it again.
//!
//! Each node gets its configuration through QEMU's fw_cfg (`-fw_cfg name=opt/sbc/...`), read in
//! the guest by `sbc-lab-config.service` when the kernel command line has `sbc.lab`: no disk
//! is written from the host, and the built image stays the same for both nodes.

use crate::util;
use anyhow::{bail, Context, Result};
use std::fs;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The lab's addresses (SPEC §9's example).
pub const ACCESS_SERVICE: &str = "192.0.2.10";
pub const CORE_SERVICE: &str = "198.51.100.10";

/// Keep-alive intervals of silence before a node takes over: SPEC §7's default, unless
/// `--twin-misses` says otherwise.
pub const DEFAULT_MISSES: u32 = 3;

/// The guest NICs, in the order QEMU gets them: (netdev id, bridge suffix).
pub const NICS: [&str; 3] = ["access", "core", "twin"];

/// The network namespace; deleted on drop unless [`Lab::keep`] was called.
#[derive(Debug)]
pub struct Lab {
    pub netns: String,
    keep: bool,
}

fn ip(args: &[&str]) -> Result<()> {
    util::run(Command::new("ip").args(args))
}

impl Lab {
    pub fn create(netns: &str) -> Result<Lab> {
        if netns.is_empty() || netns.len() > 64 || netns.contains('/') {
            bail!("--lab {netns:?} is not a namespace name");
        }
        let uid = Command::new("id").arg("-u").output().context("id -u")?;
        if String::from_utf8_lossy(&uid.stdout).trim() != "0" {
            bail!("cargo xtask qemu --twin must run as root: it makes a network namespace with bridges and taps");
        }
        if !util::have("ip") {
            bail!("cargo xtask qemu --twin needs `ip` (iproute2)");
        }
        // A lab left by a run that was killed: start clean.
        let _ = Command::new("ip")
            .args(["netns", "del", netns])
            .stderr(std::process::Stdio::null())
            .status();
        ip(&["netns", "add", netns])?;
        let lab = Lab {
            netns: netns.to_string(),
            keep: false,
        };
        let n = netns;
        ip(&["-n", n, "link", "set", "lo", "up"])?;
        for nic in NICS {
            let br = format!("br-{nic}");
            ip(&["-n", n, "link", "add", &br, "type", "bridge"])?;
            ip(&["-n", n, "link", "set", &br, "up"])?;
            for id in [1, 2] {
                let tap = format!("sbc{id}-{nic}");
                ip(&["-n", n, "tuntap", "add", "dev", &tap, "mode", "tap"])?;
                ip(&["-n", n, "link", "set", &tap, "master", &br, "up"])?;
            }
        }
        ip(&["-n", n, "addr", "add", "192.0.2.1/24", "dev", "br-access"])?;
        ip(&["-n", n, "addr", "add", "198.51.100.1/24", "dev", "br-core"])?;
        Ok(lab)
    }

    /// Leaves the namespace in place (for a caller that runs the printed commands, and deletes
    /// it with `ip netns del`).
    pub fn keep(mut self) {
        self.keep = true;
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if !self.keep {
            let _ = Command::new("ip")
                .args(["netns", "del", &self.netns])
                .status();
        }
    }
}

/// The tap of node `id` for the NIC `nic`.
pub fn tap(id: u8, nic: &str) -> String {
    format!("sbc{id}-{nic}")
}

/// 32 random bytes, mode 0600: the twin key both nodes get.
pub fn write_key(path: &Path) -> Result<()> {
    let mut key = [0u8; 32];
    fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut key))
        .context("reading /dev/urandom")?;
    let _ = fs::remove_file(path);
    fs::write(path, key).with_context(|| format!("writing {}", path.display()))?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o600))
        .with_context(|| format!("setting mode of {}", path.display()))
}

/// Writes node `id`'s files into `dir`, its twin taking over after `misses` silent keep-alive
/// intervals; returns the fw_cfg entries (name, file).
pub fn node_files(
    id: u8,
    name: &str,
    misses: u32,
    dir: &Path,
    key: &Path,
) -> Result<Vec<(String, PathBuf)>> {
    let lab = dir.join("lab");
    fs::create_dir_all(lab.join("network"))
        .with_context(|| format!("creating {}", lab.display()))?;
    let mut entries = Vec::new();
    let mut put = |fw_name: &str, rel: &str, text: &str| -> Result<()> {
        let path = lab.join(rel);
        fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
        entries.push((format!("opt/sbc/{fw_name}"), path));
        Ok(())
    };
    put("sbc.toml", "sbc.toml", &config(id, name, misses)?)?;
    let network = |dev: &str, what: &str, addr: &str, required: bool| {
        format!(
            "# cargo xtask qemu --twin, node {id}: {what}.\n[Match]\nName={dev}\n\n{}\
             [Network]\nAddress={addr}\nLinkLocalAddressing=no\nIPv6AcceptRA=no\n",
            if required {
                ""
            } else {
                "[Link]\nRequiredForOnline=no\n\n"
            }
        )
    };
    for (file, text) in [
        (
            "10-eth0-access.network",
            network("eth0", "access port", &format!("192.0.2.1{id}/24"), true),
        ),
        (
            "11-eth1-core.network",
            network("eth1", "core port", &format!("198.51.100.1{id}/24"), true),
        ),
        (
            "12-eth2-twin.network",
            network(
                "eth2",
                "cross-connect (not required for online: a box without its twin serves)",
                &format!("169.254.77.{id}/30"),
                false,
            ),
        ),
    ] {
        put(
            &format!("network/{file}"),
            &format!("network/{file}"),
            &text,
        )?;
    }
    entries.push(("opt/sbc/twin.key".into(), key.to_path_buf()));
    Ok(entries)
}

/// The qemu board's factory configuration moved onto the lab's addresses, with `[twin]`.
fn config(id: u8, name: &str, misses: u32) -> Result<String> {
    let factory_path = util::root().join("image/board/qemu/sbc.toml");
    let mut text = fs::read_to_string(&factory_path)
        .with_context(|| format!("reading {}", factory_path.display()))?;
    for (from, to) in [
        ("name = \"sbc-a\"", format!("name = \"{name}\"")),
        ("\"10.0.2.15:5060\"", format!("\"{ACCESS_SERVICE}:5060\"")),
        ("\"10.0.3.15:5062\"", format!("\"{CORE_SERVICE}:5062\"")),
        ("sip:10.0.3.2:25070", "sip:198.51.100.1:25070".to_string()),
    ] {
        if !text.contains(from) {
            bail!(
                "{} no longer has {from}: update xtask/src/qemu/lab.rs",
                factory_path.display()
            );
        }
        text = text.replace(from, &to);
    }
    // The factory file's opening comment is about QEMU's user networking: not this lab's.
    let text: String = text
        .lines()
        .skip_while(|l| l.starts_with('#') || l.trim().is_empty())
        .map(|l| format!("{l}\n"))
        .collect();
    let peer = 3 - id;
    Ok(format!(
        "# Written by cargo xtask qemu --twin for node {id} ({name}): the qemu board's factory\n\
         # configuration on the lab's addresses (xtask/src/qemu/lab.rs), applied at every boot.\n\
         \n{text}\n\
         [twin]\n\
         node_id = {id}\n\
         mode = \"hot\"\n\
         interval_ms = 100\n\
         misses = {misses}\n\
         preempt = false\n\
         key_file = \"/etc/sbc/twin.key\"\n\
         link = {{ local = \"169.254.77.{id}:7700\", peer = \"169.254.77.{peer}:7700\" }}\n\
         second_path = {{ local = \"192.0.2.1{id}:7700\", peer = \"192.0.2.1{peer}:7700\" }}\n\
         \n\
         [[twin.service_address]]\n\
         addr = \"{ACCESS_SERVICE}/24\"\n\
         dev = \"eth0\"\n\
         \n\
         [[twin.service_address]]\n\
         addr = \"{CORE_SERVICE}/24\"\n\
         dev = \"eth1\"\n"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_node_gets_its_own_addresses_and_the_other_as_peer() {
        let one = config(1, "sbc-a", DEFAULT_MISSES).unwrap_or_default();
        let two = config(2, "sbc-b", 20).unwrap_or_default();
        assert!(one.contains("misses = 3\n") && two.contains("misses = 20\n"));
        assert!(one.contains("node_id = 1") && one.contains("name = \"sbc-a\""));
        assert!(
            one.contains(r#"link = { local = "169.254.77.1:7700", peer = "169.254.77.2:7700" }"#)
        );
        assert!(two
            .contains(r#"second_path = { local = "192.0.2.12:7700", peer = "192.0.2.11:7700" }"#));
        assert!(two.contains("addr = \"192.0.2.10:5060\"") && !two.contains("10.0.2.15"));
        assert!(two.contains("sip:198.51.100.1:25070"));
    }
}
