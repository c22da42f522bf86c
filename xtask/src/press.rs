//! `cargo xtask press --hold-ms N [--node a|b] [--qmp PATH]`: presses the panel button of a
//! running QEMU appliance.
//!
//! The button of the QEMU board is a key of the emulated PS/2 keyboard (`[panel.button] key` in
//! `board/qemu/board.toml`). QMP's `input-send-event` puts key down and key up into the guest's
//! real input path (i8042, atkbd, evdev) with the hold time kept on the host, so the guest's
//! debouncing and hold detection see a press as a person would make it.

use crate::qemu::qmp::Qmp;
use crate::util;
use anyhow::{bail, Context, Result};
use std::path::PathBuf;
use std::time::Duration;

/// `cargo xtask press`'s options.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// How long the button is held, in milliseconds.
    #[arg(long, value_name = "N")]
    hold_ms: u64,
    /// Which appliance: a (the single box or the twin's first node) or b.
    #[arg(long, default_value = "a")]
    node: String,
    /// The machine's QMP socket (default: the most recently started node of that name).
    #[arg(long, value_name = "PATH")]
    qmp: Option<PathBuf>,
}

pub fn run(args: Args) -> Result<()> {
    let Args {
        hold_ms,
        node,
        qmp: qmp_path,
    } = args;
    if hold_ms > 60_000 {
        bail!("--hold-ms {hold_ms}: a press longer than a minute is surely a mistake");
    }
    if node != "a" && node != "b" {
        bail!("--node {node}: the QEMU appliances are a and b");
    }
    // A single box is out/qemu/a; the twin's nodes are out/qemu/twin-a and twin-b: the most
    // recently started machine of that name.
    let path = qmp_path.unwrap_or_else(|| {
        let base = util::root().join("out/qemu");
        let candidates = [
            base.join(&node).join("qmp.sock"),
            base.join(format!("twin-{node}")).join("qmp.sock"),
        ];
        candidates
            .iter()
            .filter_map(|p| Some((std::fs::metadata(p).ok()?.modified().ok()?, p.clone())))
            .max()
            .map_or_else(|| candidates[0].clone(), |(_, p)| p)
    });
    let qcode = button_qcode()?;
    let mut qmp = Qmp::connect(&path)?;
    qmp.key(&qcode, true)?;
    std::thread::sleep(Duration::from_millis(hold_ms));
    qmp.key(&qcode, false)?;
    eprintln!("xtask press: held {qcode} for {hold_ms} ms on node {node}");
    Ok(())
}

/// The QEMU key code of the board's button: `KEY_F12` in the profile is `f12` for QEMU.
fn button_qcode() -> Result<String> {
    let path = util::root().join("board/qemu/board.toml");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let table: toml::Table =
        toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    let key = table
        .get("panel")
        .and_then(|p| p.get("button"))
        .and_then(|b| b.get("key"))
        .and_then(|k| k.as_str())
        .with_context(|| format!("{} has no panel.button.key", path.display()))?;
    let qcode = key
        .strip_prefix("KEY_")
        .with_context(|| {
            format!(
                "{}: panel.button.key {key:?} is not a KEY_ name",
                path.display()
            )
        })?
        .to_ascii_lowercase();
    Ok(qcode)
}
