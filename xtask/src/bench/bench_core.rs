//! `cargo xtask bench core [--calls N] [--k1 K1] [--k2 K2] [--step-ms MS] [--warmup N]`: the pure core's cost per call,
//! figures that do not move with a noisy machine.
//!
//! Runs `crates/proxy/benches/core_call.rs` and `crates/node/benches/node_call.rs` (release):
//! one INVITE-180-200-ACK-BYE-200 call with hand-written SIP, repeated with distinct Call-IDs
//! after a warm-up of 1000 calls, through the bare `proxy::Proxy` and through `node::Node`
//! (the proxy, the system state and the shard hub composed: what sbcd's engine runs). Both
//! figures are printed side by side with the difference: what the composition adds per call,
//! so a per-message walk in the node (as `Node::settle` over every server transaction once
//! was) shows here and not only under SIPp.
//!
//! - Allocations, reallocations and bytes per call: the bench's counting allocator, over
//!   `--calls` measured calls (default 10 000).
//! - Instructions per call: the same binary twice under `valgrind --tool=callgrind`, once with
//!   `K1` and once with `K2` measured calls (defaults 200 and 1200), collecting only inside
//!   the bench's `measured_step` (every call into the proxy: handle_input or handle_timeout,
//!   then the transmits, events and commands taken out; `--toggle-collect`), so the bench writing and
//!   reading SIP is not counted. Instructions per call = (Ir(K2) - Ir(K1)) / (K2 - K1): the
//!   warm-up and anything else both runs share cancels.
//! - The top 10 functions by inclusive Ir of the K2 run (`callgrind_annotate --inclusive=yes`)
//!   and the top 10 by self Ir, so the cost can be found; their Ir per call is the run's Ir
//!   divided by all the calls it made (warm-up included).
//!
//! - What any proxy of this box spends on the same call whatever its parser
//!   (`crates/proxy/benches/call_floor.rs`, once under callgrind): the UTF-8 check and the
//!   line ends of the six messages received, the Record-Route token's MAC, writing the seven
//!   sent; beside them, what the `sip` crate's parse and validation of the six cost today.
//!
//! Issue 15's goal: at most 20 000 instructions and 10 allocations per call. A benchmark: it
//! prints (and writes one JSON line to `out/bench/core.json`), it never fails on a number.
//! Callgrind's output files stay in `out/bench/` (`callgrind.core_call.K.out`,
//! `callgrind.node_call.K.out`).

use crate::util;
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Calls before the measured ones by default (the steady state at 100 ms per call: about 320
/// calls' ended transactions).
const WARMUP: u64 = 1000;

/// `cargo xtask bench core`'s options.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Measured calls for the allocation counts.
    #[arg(long, value_name = "N", default_value_t = 10_000,
          value_parser = clap::value_parser!(u64).range(1..))]
    calls: u64,
    /// Measured calls of the first callgrind run.
    #[arg(long, value_name = "K1", default_value_t = 200,
          value_parser = clap::value_parser!(u64).range(1..))]
    k1: u64,
    /// Measured calls of the second callgrind run (above K1).
    #[arg(long, value_name = "K2", default_value_t = 1200,
          value_parser = clap::value_parser!(u64).range(1..))]
    k2: u64,
    /// Simulated time between calls, in milliseconds: 100 is a box at 10 calls/s; 1 a box at
    /// 1000 calls/s, whose tables hold about 32 000 calls' ended transactions (give it a
    /// `--warmup` of 40 000 to reach that).
    #[arg(long, value_name = "MS", default_value_t = 100,
          value_parser = clap::value_parser!(u64).range(1..))]
    step_ms: u64,
    /// Calls before the measured ones.
    #[arg(long, value_name = "N", default_value_t = WARMUP)]
    warmup: u64,
}

/// One core's figures: the allocation run and the two callgrind runs.
struct Figures {
    allocs: f64,
    reallocs: f64,
    bytes: f64,
    failed: f64,
    ir_per_call: f64,
    totals: [u64; 2],
    inclusive: Vec<Row>,
    exclusive: Vec<Row>,
}

/// The two cores measured: the bare proxy, and the node the daemon runs around it.
const CORES: [(&str, &str, &str); 2] = [
    ("proxy", "core_call", "proxy::Proxy"),
    ("node", "node_call", "node::Node"),
];

pub fn run(args: Args) -> Result<()> {
    let Args {
        calls,
        k1,
        k2,
        step_ms,
        warmup,
    } = args;
    if k2 <= k1 {
        bail!("--k2 ({k2}) must be above --k1 ({k1})");
    }
    util::ensure_debs(&["valgrind"])?;
    let out_dir = util::root().join("out/bench");
    std::fs::create_dir_all(&out_dir).with_context(|| format!("create {}", out_dir.display()))?;
    let mut figures = Vec::new();
    for (package, name, _) in CORES {
        let bench = build_bench_in(package, name)?;
        let run = Run {
            calls,
            k1,
            k2,
            step_ms,
            warmup,
        };
        figures.push(measure(&bench, name, &out_dir, &run)?);
    }
    let floor = measure_floor(&out_dir)?;
    let all_calls = (warmup + k2) as f64;

    println!();
    println!(
        "per INVITE-180-200-ACK-BYE-200 call, {warmup} warm-up calls, clock +{step_ms} ms per call (issue 15 goal in brackets)"
    );
    println!(
        "  {:<20}{:>14}{:>14}{:>10}",
        "", CORES[0].2, CORES[1].2, "node adds"
    );
    let (p, n) = (&figures[0], &figures[1]);
    let row = |label: &str, a: f64, b: f64, digits: usize, goal: &str| {
        println!(
            "  {label:<20}{a:>14.digits$}{b:>14.digits$}{:>10.digits$}   {goal}",
            b - a
        );
    };
    row("allocations/call", p.allocs, n.allocs, 1, "(<= 10)");
    row("reallocations/call", p.reallocs, n.reallocs, 1, "");
    row("bytes/call", p.bytes, n.bytes, 0, "");
    row(
        "instructions/call",
        p.ir_per_call,
        n.ir_per_call,
        0,
        "(<= 20 000)",
    );
    for ((_, name, core), f) in CORES.iter().zip(&figures) {
        println!(
            "  {core}: Ir {} with {k1} calls, {} with {k2}; {} failed calls in the allocation run ({name})",
            f.totals[0], f.totals[1], f.failed
        );
    }
    println!();
    println!(
        "what any parser spends on the same call (call_floor: {} messages received, {} bytes; {} sent, {} bytes), instructions per call:",
        floor.received, floor.received_bytes, floor.sent, floor.sent_bytes
    );
    for (label, ir) in &floor.parts {
        println!("  {label:<52}{ir:>8.0}");
    }
    println!("  {:<52}{:>8.0}", "the four together", floor.sum());
    for (label, ir) in &floor.today {
        println!("  {label:<52}{ir:>8.0}");
    }
    for ((_, _, core), f) in CORES.iter().zip(&figures) {
        for (title, rows) in [
            ("top 10 by inclusive Ir", &f.inclusive),
            ("top 10 by self Ir", &f.exclusive),
        ] {
            println!();
            println!(
                "{core}, {title} ({k2}-call run; Ir/call over all {} calls it made):",
                warmup + k2
            );
            println!("  {:>9} {:>6}  function", "Ir/call", "%");
            for row in rows.iter() {
                println!(
                    "  {:>9.0} {:>5.1}%  {}",
                    row.ir as f64 / all_calls,
                    row.percent,
                    row.function
                );
            }
        }
    }

    let rows_json = |rows: &[Row]| {
        rows.iter()
            .map(|r| {
                format!(
                    "{{\"ir_per_call\":{:.0},\"percent\":{:.2},\"function\":\"{}\"}}",
                    r.ir as f64 / all_calls,
                    r.percent,
                    json_escape(&r.function)
                )
            })
            .collect::<Vec<_>>()
            .join(",")
    };
    let core_json = |f: &Figures| {
        format!(
            "{{\"failed_calls\":{},\"allocs_per_call\":{:.3},\"reallocs_per_call\":{:.3},\"bytes_per_call\":{:.1},\"instructions_per_call\":{:.0},\"ir_k1\":{},\"ir_k2\":{},\"top_inclusive\":[{}],\"top_self\":[{}]}}",
            f.failed,
            f.allocs,
            f.reallocs,
            f.bytes,
            f.ir_per_call,
            f.totals[0],
            f.totals[1],
            rows_json(&f.inclusive),
            rows_json(&f.exclusive),
        )
    };
    // The proxy's figures stay at the top level, as before; the node's beside them.
    let proxy_json = core_json(p);
    let floor_json = floor
        .parts
        .iter()
        .chain(&floor.today)
        .map(|(label, ir)| format!("\"{}\":{ir:.0}", json_escape(label)))
        .collect::<Vec<_>>()
        .join(",");
    let json = format!(
        "{{\"bench\":\"core\",\"calls\":{calls},\"warmup\":{warmup},\"step_ms\":{step_ms},\"k1\":{k1},\"k2\":{k2},{},\"node\":{},\"floor\":{{{floor_json}}}}}\n",
        &proxy_json[1..proxy_json.len() - 1],
        core_json(n),
    );
    let path = out_dir.join("core.json");
    std::fs::write(&path, json).with_context(|| format!("write {}", path.display()))?;
    println!("\nwrote {}", path.display());
    Ok(())
}

/// What the call costs whatever the parser (`call_floor`), per call.
struct Floor {
    received: u64,
    received_bytes: u64,
    sent: u64,
    sent_bytes: u64,
    /// The parts no design avoids.
    parts: Vec<(&'static str, f64)>,
    /// What the `sip` crate spends today, for comparison.
    today: Vec<(&'static str, f64)>,
}

impl Floor {
    fn sum(&self) -> f64 {
        self.parts.iter().map(|(_, ir)| ir).sum()
    }
}

/// Runs `call_floor` once under callgrind and reads each part's inclusive Ir.
fn measure_floor(out_dir: &Path) -> Result<Floor> {
    const REPS: u64 = 1000;
    let bench = build_bench_in("proxy", "call_floor")?;
    let file = out_dir.join("callgrind.call_floor.out");
    eprintln!(
        "bench core: call_floor under callgrind -> {}",
        file.display()
    );
    let output = Command::new("valgrind")
        .arg("--tool=callgrind")
        .arg(format!("--callgrind-out-file={}", file.display()))
        .arg(&bench)
        .env("CALL_FLOOR_REPS", REPS.to_string())
        .output()
        .context("run valgrind")?;
    if !output.status.success() {
        bail!(
            "valgrind call_floor failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    let field = |name: &str| result_field::<u64>(&stdout, name);
    let rows = annotate(&file, true)?;
    // A function's Ir is split by the files inlined into it; the largest row is the whole.
    let ir = |function: &str| {
        let wanted = format!("call_floor::{function}");
        rows.iter()
            .filter(|r| r.function == wanted)
            .map(|r| r.ir)
            .max()
            .map(|ir| ir as f64 / REPS as f64)
            .with_context(|| format!("no {wanted} in callgrind's profile"))
    };
    Ok(Floor {
        received: field("received")?,
        received_bytes: field("received_bytes")?,
        sent: field("sent")?,
        sent_bytes: field("sent_bytes")?,
        parts: vec![
            ("UTF-8 check of what is received", ir("part_utf8")?),
            (
                "line ends of what is received (memchr)",
                ir("part_line_ends")?,
            ),
            (
                "Record-Route token MAC (HMAC-SHA256)",
                ir("part_route_mac")?,
            ),
            ("writing what is sent (one copy each)", ir("part_write")?),
        ],
        today: vec![
            ("today: sip parse of what is received", ir("sip_parse")?),
            (
                "today: sip parse and validation of what is received",
                ir("sip_parse_validate")?,
            ),
        ],
    })
}

/// What one bench binary is run with.
struct Run {
    calls: u64,
    k1: u64,
    k2: u64,
    step_ms: u64,
    warmup: u64,
}

/// The allocation run and the two callgrind runs of one bench binary (`name`: its crate name,
/// whose own functions are left out of the top lists).
fn measure(bench: &Path, name: &str, out_dir: &Path, run: &Run) -> Result<Figures> {
    let Run {
        calls,
        k1,
        k2,
        step_ms,
        warmup,
    } = *run;
    eprintln!("bench core: {name}, {calls} measured calls with the counting allocator");
    let output = Command::new(bench)
        .env("CORE_BENCH_CALLS", calls.to_string())
        .env("CORE_BENCH_WARMUP", warmup.to_string())
        .env("CORE_BENCH_STEP_MS", step_ms.to_string())
        .output()
        .with_context(|| format!("run {}", bench.display()))?;
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    print!("{stdout}");
    if !output.status.success() {
        bail!(
            "{} failed: {}",
            bench.display(),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let field = |name: &str| result_field::<f64>(&stdout, name);

    // Instructions: two callgrind runs.
    let mut totals = [0; 2];
    for (i, k) in [k1, k2].into_iter().enumerate() {
        let file = out_dir.join(format!("callgrind.{name}.{k}.out"));
        eprintln!(
            "bench core: callgrind, {warmup} warm-up + {k} calls -> {}",
            file.display()
        );
        let output = Command::new("valgrind")
            .arg("--tool=callgrind")
            .arg(format!("--callgrind-out-file={}", file.display()))
            .arg("--toggle-collect=*measured_step*")
            .arg(bench)
            .env("CORE_BENCH_CALLS", k.to_string())
            .env("CORE_BENCH_WARMUP", warmup.to_string())
            .env("CORE_BENCH_STEP_MS", step_ms.to_string())
            .output()
            .context("run valgrind")?;
        if !output.status.success() {
            bail!(
                "valgrind failed: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        totals[i] = total_ir(&file)?;
    }
    let k2_file = out_dir.join(format!("callgrind.{name}.{k2}.out"));
    let own = format!("{name}::");
    Ok(Figures {
        allocs: field("allocs_per_call")?,
        reallocs: field("reallocs_per_call")?,
        bytes: field("bytes_per_call")?,
        failed: field("failed")?,
        ir_per_call: (totals[1] as f64 - totals[0] as f64) / (k2 - k1) as f64,
        totals,
        inclusive: top_inclusive(annotate(&k2_file, true)?, &own),
        exclusive: top_self(annotate(&k2_file, false)?, &own),
    })
}

/// Field `name` of the `RESULT name=value ...` line a bench binary printed last.
fn result_field<T: std::str::FromStr>(stdout: &str, name: &str) -> Result<T> {
    let result = stdout
        .lines()
        .find_map(|l| l.strip_prefix("RESULT "))
        .context("the bench printed no RESULT line")?;
    result
        .split_whitespace()
        .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
        .and_then(|v| v.parse().ok())
        .with_context(|| format!("no {name} in `{result}`"))
}

/// Builds a bench target of the proxy crate (bench profile) and returns its executable.
pub(super) fn build_bench(name: &str) -> Result<PathBuf> {
    build_bench_in("proxy", name)
}

/// Builds bench `name` of crate `package` (bench profile) and returns its executable.
fn build_bench_in(package: &str, name: &str) -> Result<PathBuf> {
    let output = Command::new(env!("CARGO"))
        .current_dir(util::root())
        .args([
            "bench",
            "-p",
            package,
            "--bench",
            name,
            "--no-run",
            "--message-format=json",
        ])
        .stderr(std::process::Stdio::inherit())
        .output()
        .context("run cargo bench --no-run")?;
    if !output.status.success() {
        bail!("cargo bench -p {package} --bench {name} --no-run failed");
    }
    // One JSON object per line; the bench's compiler-artifact names its executable.
    let stdout = String::from_utf8_lossy(&output.stdout);
    let wanted = format!("\"name\":\"{name}\"");
    stdout
        .lines()
        .filter(|l| l.contains("\"reason\":\"compiler-artifact\"") && l.contains(&wanted))
        .find_map(|l| {
            let rest = &l[l.find("\"executable\":\"")? + "\"executable\":\"".len()..];
            Some(PathBuf::from(&rest[..rest.find('"')?]))
        })
        .with_context(|| format!("cargo named no executable for bench {name}"))
}

/// The total Ir of a callgrind output file (its `summary:` or `totals:` line).
fn total_ir(file: &Path) -> Result<u64> {
    let text = std::fs::read_to_string(file).with_context(|| format!("read {}", file.display()))?;
    text.lines()
        .filter_map(|l| {
            l.strip_prefix("summary:")
                .or_else(|| l.strip_prefix("totals:"))
        })
        .find_map(|v| v.split_whitespace().next()?.parse().ok())
        .with_context(|| format!("no summary/totals line in {}", file.display()))
}

/// One function of callgrind_annotate's list.
#[derive(Debug)]
struct Row {
    ir: u64,
    percent: f64,
    function: String,
}

/// The first 10 functions of `callgrind_annotate` (inclusive or self), as it sorts them.
fn annotate(file: &Path, inclusive: bool) -> Result<Vec<Row>> {
    let output = Command::new("callgrind_annotate")
        .arg(format!(
            "--inclusive={}",
            if inclusive { "yes" } else { "no" }
        ))
        .arg("--threshold=100")
        .arg(file)
        .output()
        .context("run callgrind_annotate")?;
    if !output.status.success() {
        bail!(
            "callgrind_annotate failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let text = String::from_utf8_lossy(&output.stdout);
    // Lines like `1,234,567 (45.67%)  file:function [binary]`; the PROGRAM TOTALS line and
    // the per-file source listings (which start with `-- `) are not rows.
    let mut rows = Vec::new();
    for line in text.lines() {
        if line.contains("PROGRAM TOTALS") {
            continue;
        }
        if line.starts_with("-- Auto-annotated source") || line.starts_with("-- Annotated source") {
            break;
        }
        let trimmed = line.trim_start();
        let Some((count, rest)) = trimmed.split_once(' ') else {
            continue;
        };
        let Ok(ir) = count.replace(',', "").parse::<u64>() else {
            continue;
        };
        let rest = rest.trim_start();
        let (percent, function) = match rest.strip_prefix('(') {
            Some(r) => match r.split_once("%)") {
                Some((p, f)) => (p.trim().parse().unwrap_or(0.0), f.trim()),
                None => (0.0, rest),
            },
            None => (0.0, rest),
        };
        // `file:function [object]`: keep the function.
        let function = function.split(" [").next().unwrap_or(function);
        let function = match function.split_once(':') {
            Some((file, f)) if !file.contains('<') && !f.starts_with(':') => f,
            _ => function,
        };
        rows.push(Row {
            ir,
            percent,
            function: function.to_owned(),
        });
    }
    Ok(rows)
}

/// The first 10 rows below the bench's `measured_step`: only it is collected, so every row at
/// or above its Ir is it or one of its callers (main, the runtime, the bench's loop). The
/// bench's own functions and repeated names (a function's Ir split by the source files inlined
/// into it: the first is its whole) are left out.
fn top_inclusive(rows: Vec<Row>, own: &str) -> Vec<Row> {
    let ceiling = rows
        .iter()
        .filter(|r| r.function.contains("measured_step"))
        .map(|r| r.ir)
        .max()
        .unwrap_or(u64::MAX);
    let mut seen = std::collections::HashSet::new();
    rows.into_iter()
        .filter(|r| r.ir < ceiling && !r.function.starts_with(own))
        .filter(|r| seen.insert(r.function.clone()))
        .take(10)
        .collect()
}

/// The 10 functions with the most self Ir, a function's rows (one per source file inlined
/// into it) summed; the bench's own functions left out.
fn top_self(rows: Vec<Row>, own: &str) -> Vec<Row> {
    let mut sum: Vec<Row> = Vec::new();
    for r in rows {
        if r.function.starts_with(own) {
            continue;
        }
        match sum.iter_mut().find(|s| s.function == r.function) {
            Some(s) => {
                s.ir += r.ir;
                s.percent += r.percent;
            }
            None => sum.push(r),
        }
    }
    sum.sort_by_key(|r| std::cmp::Reverse(r.ir));
    sum.truncate(10);
    sum
}

fn json_escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}
