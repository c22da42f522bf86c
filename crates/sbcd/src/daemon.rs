//! Start-up and wiring: which thread runs what, and the channels between them.
//!
//! - the main thread runs the control plane (a current-thread tokio runtime): the control
//!   socket, health and log answers, the watchdog, signals;
//! - `sip-engine` owns the node's core, proxy and system state composed ([`crate::engine`]);
//! - `sip-worker-N` threads (one per SIP core) run the sockets ([`crate::transport`]);
//! - `panel` runs the board's panel driver ([`crate::panel`]).
//!
//! Everything is bound before `sbcd: listening` is logged and READY=1 is sent, so a test or
//! systemd that waits for it finds every socket in place.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use control::{HealthInfo, Reply, Request, Response, ThreadPinning};
use tokio::sync::{broadcast, mpsc, watch};

use crate::config::Config;
use crate::control_server::{self, Ask, Router};
use crate::engine::{self, Engine, StateView};
use crate::health::{self, Heartbeats};
use crate::logging::Recent;
use crate::panel;
use crate::sip_core::{self, SipCore};
use crate::transport::{self, Limits};
use crate::twin_link;

/// Depth of the queue from the workers to the engine; beyond it workers wait and the kernel's
/// socket buffers absorb (and eventually drop) the excess, as for any overloaded UDP server.
const INBOUND_QUEUE: usize = 8192;

/// Set once a stop was asked for: threads that end from then on are not failures.
static STOPPING: AtomicBool = AtomicBool::new(false);

/// What the command line adds to the configuration.
#[derive(Debug, Clone)]
pub struct Options {
    pub config_path: PathBuf,
    /// Where board profiles live (`<dir>/<name>/board.toml`).
    pub board_dir: Option<PathBuf>,
}

/// Why the daemon could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot start the {what} runtime: {source}")]
    Runtime {
        what: &'static str,
        source: std::io::Error,
    },
    #[error("cannot create state directory {path}: {source}")]
    StateDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Keys(#[from] crate::keys::KeyError),
    #[error(transparent)]
    Control(#[from] control_server::BindError),
    #[error("cannot listen for metrics scrapers on {addr} ([control] metrics_http): {source}")]
    Metrics {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Transport(#[from] transport::BindError),
    #[error(transparent)]
    Panel(#[from] panel::PanelError),
    #[error(transparent)]
    Twin(#[from] twin_link::TwinStartError),
    #[error("cannot start thread {name}: {source}")]
    Thread {
        name: String,
        source: std::io::Error,
    },
}

/// Runs the daemon until SIGTERM or SIGINT.
pub fn run(config: Config, options: Options, recent: Arc<Recent>) -> Result<(), StartError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .thread_name("sbcd-control")
        .build()
        .map_err(|source| StartError::Runtime {
            what: "control plane",
            source,
        })?;
    runtime.block_on(async {
        // The control socket first: it refuses to start a second sbcd on the same
        // configuration before that one could touch the state directory or take SIP ports
        // shared with SO_REUSEPORT.
        let control_listener = control_server::bind(&config.control.socket)?;
        let socket = config.control.socket.clone();
        let state_dir = config.state.dir.clone();
        let result = serve(config, options, recent, control_listener).await;
        // Ours to remove, whether the daemon stopped or failed to start; neither is a crash
        // for the next start to count.
        let _ = std::fs::remove_file(&socket);
        health::clear_running_marker(&state_dir);
        result
    })
}

async fn serve(
    config: Config,
    options: Options,
    recent: Arc<Recent>,
    control_listener: tokio::net::UnixListener,
) -> Result<(), StartError> {
    let started = Instant::now();
    let node = config.node.name.0.clone();

    // The operator's last intent decides the start state; a first start is online.
    std::fs::create_dir_all(&config.state.dir).map_err(|source| StartError::StateDir {
        path: config.state.dir.clone(),
        source,
    })?;
    let recoveries = health::count_recoveries(&config.state.dir, &health::BootFacts::read());
    let restored = system_state::persist::restore(&config.state.dir);
    if let Some(problem) = &restored.problem {
        tracing::error!(error = %problem, "saved system state unusable; starting offline");
    }
    let initial = restored.state;
    tracing::info!(
        state = %initial,
        saved = restored.record.is_some(),
        "system state restored"
    );

    let (inbound_tx, inbound_rx) = mpsc::channel(INBOUND_QUEUE);
    let (serving_tx, serving_rx) = watch::channel(initial != system_state::SystemState::Offline);
    let (events_tx, _) = broadcast::channel(256);
    let since_unix_ms = engine::unix_ms();
    let (view_tx, view_rx) = watch::channel(StateView {
        state: initial,
        since_unix_ms,
        // A twin starts standby (SPEC §7); a box without one is solo.
        role: if config.twin.is_some() {
            ::panel::TwinRole::Standby
        } else {
            ::panel::TwinRole::Solo
        },
    });

    // The board says how many SIP workers (one per SIP core) and where they run.
    let profile = panel::load_profile(&config, options.board_dir.as_deref())?;
    if let Some(p) = &profile {
        tracing::info!(board = %p.name, description = %p.description, "board profile loaded");
    }
    if let Some(housekeeping) = panel::housekeeping_cores(profile.as_ref()) {
        // Threads started from here on inherit this; the SIP threads move to their own cores.
        if let Err(e) = board::cpus::pin_current_thread(&housekeeping) {
            tracing::warn!(error = %e, "cannot keep the control plane on the housekeeping cores");
        }
    }
    let sip_cores: Vec<usize> = panel::sip_cores(profile.as_ref())
        .map(|l| l.iter().collect())
        .unwrap_or_default();
    if !sip_cores.is_empty() {
        // A box with dedicated SIP cores: keep the wire path out of swap (SPEC §6).
        if let Err(e) = board::cpus::lock_memory() {
            tracing::warn!(error = %e, "cannot lock memory");
        }
    }
    let workers = config.sip.workers.map_or_else(
        || {
            if sip_cores.is_empty() {
                std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
            } else {
                sip_cores.len()
            }
        },
        |w| w.0,
    );
    let specs = transport::listener_specs(&config)?;
    // The twin (SPEC §7): its key, epoch and sockets now, so a bad [twin] stops the start with
    // the reason; it owns no service address until its machine says so.
    let twin = match &config.twin {
        Some(t) => {
            let setup = twin_link::prepare(t, &config.state.dir)?;
            twin_link::release_all(&setup.devices).await;
            tracing::info!(
                node_id = t.node_id.0,
                epoch = setup.boot_epoch,
                "twin: starting standby"
            );
            Some(setup)
        }
        None => None,
    };
    let limits = Limits {
        max_message_bytes: config.sip.max_message_bytes.0,
        tcp_idle_timeout: Duration::from_secs(config.sip.tcp_idle_timeout_secs.0),
        tcp_message_timeout: Duration::from_secs(config.sip.tcp_message_timeout_secs.0),
        tcp_max_connections: config.sip.tcp_max_connections.0,
        max_connections: config.limits.max_connections.0,
        per_source_connections: config.limits.per_source_connections.0,
        max_queued_bytes: config.limits.max_queued_bytes.0,
    };
    // The network, as network-online.target would have had it (docs/image.md, "A fast boot").
    let addresses: Vec<std::net::IpAddr> = specs
        .iter()
        .filter(|s| !s.freebind)
        .map(|s| s.addr.ip())
        .collect();
    let upstreams: Vec<std::net::SocketAddr> = config.upstreams().map(|u| u.uri.addr).collect();
    match crate::network_wait::wait(&addresses, &upstreams, crate::network_wait::WAIT).await {
        (waited, None) if waited.is_zero() => {}
        (waited, None) => {
            tracing::info!(waited_ms = waited.as_millis() as u64, "network ready");
        }
        (waited, Some(missing)) => tracing::warn!(
            waited_ms = waited.as_millis() as u64,
            still = %missing,
            "network not ready; starting anyway"
        ),
    }
    let (shared, per_worker) =
        transport::bind_all(specs.clone(), limits, workers, inbound_tx, serving_rx)?;

    let (ask_tx, ask_rx) = mpsc::channel(64);
    let (command_tx, command_rx) = mpsc::channel(16);
    let mut keys = crate::keys::load_or_create(&config.state.dir)?;
    let mut branch_scope = None;
    // A box with a hot twin runs one SIP shard: with several, a shard answers a REGISTER
    // before its record has crossed to the node and into the replication stream, and a kill
    // in that window loses the binding on the survivor (docs/decisions.md, "Shards").
    let hot_twin = twin.as_ref().is_some_and(|t| t.mode == replica::Mode::Hot);
    let (twin_machine, twin_link) = match twin {
        Some(setup) => {
            let (actions, found) = twin_link::spawn_actions(setup.devices.clone());
            // A hot pair signs and verifies its Record-Route entries with one key (SPEC §7: the
            // survivor passes what its twin signed) and starts its branches alike (each
            // recognises the other's Via on a response that arrives after a handover). A cold
            // pair shares neither: its calls in progress are lost at a takeover, as SPEC §7
            // says, and each node keeps the route key of its own data partition.
            if setup.mode == replica::Mode::Hot {
                keys.route = replica::derive(&setup.key, "route key");
                branch_scope = Some(format!(
                    "twin-{:02x}{:02x}{:02x}",
                    keys.route[0], keys.route[1], keys.route[2]
                ));
            }
            let node_id = setup.config.node_id.0;
            let replication = sip_core::Replication {
                mode: setup.mode,
                node_id,
                key: setup.key,
                boot_epoch: setup.boot_epoch,
            };
            let stream = (setup.mode == replica::Mode::Hot)
                .then(|| crate::replica_link::spawn(node_id, setup.link));
            (
                Some((
                    twin::Twin::new(setup.config, setup.boot_epoch, Instant::now()),
                    replication,
                )),
                Some(engine::TwinLink {
                    sockets: setup.sockets,
                    actions,
                    found,
                    stream,
                }),
            )
        }
        None => (None, None),
    };
    let proxy_config = proxy::Config {
        keys,
        branch_scope,
        ..sip_core::proxy_config(&config, &specs)
    };
    let shard_count = if hot_twin { 1 } else { workers };
    let mut engine = Engine {
        node: node.clone(),
        twin: twin_link,
        twin_out: None,
        listings: std::collections::VecDeque::new(),
        shards: engine::Shards::default(),
        core: SipCore::new(
            per_shard(&proxy_config, shard_count),
            Instant::now(),
            initial,
            Duration::from_secs(config.drain.guard_secs.0),
            twin_machine,
        ),
        transports: Arc::clone(&shared),
        inbound: inbound_rx,
        asks: ask_rx,
        commands: command_rx,
        serving: serving_tx,
        view: view_tx,
        events: events_tx.clone(),
        state_dir: config.state.dir.clone(),
        since_unix_ms,
        transitions: std::collections::BTreeMap::new(),
    };
    let engine_cpus: Option<board::cpus::CpuList> =
        (!sip_cores.is_empty()).then(|| sip_cores.iter().copied().collect());
    let beats = Heartbeats::new(
        std::iter::once("sip-engine".to_string())
            .chain((0..per_worker.len()).map(|i| format!("sip-worker-{i}"))),
    );
    let beats = if shard_count > 1 {
        let beats = Heartbeats::new(
            std::iter::once("sip-engine".to_string())
                .chain((0..per_worker.len()).map(|i| format!("sip-worker-{i}")))
                .chain((1..shard_count).map(|k| format!("sip-shard-{k}"))),
        );
        engine.shards = start_shards(
            &mut engine,
            &per_shard(&proxy_config, shard_count),
            shard_count,
            initial,
            &sip_cores,
            &shared,
            &beats,
            per_worker.len() + 1,
        )?;
        beats
    } else {
        beats
    };
    tracing::info!(shards = shard_count, hot_twin, "SIP shards");
    spawn_engine(engine, engine_cpus, Arc::clone(&shared), Arc::clone(&beats))?;
    for (i, sockets) in per_worker.into_iter().enumerate() {
        // Round-robin over the SIP cores when there are more workers than cores.
        let core = (!sip_cores.is_empty()).then(|| sip_cores[i % sip_cores.len()]);
        spawn_worker(i, core, Arc::clone(&shared), sockets, Arc::clone(&beats))?;
    }
    let watchdog = health::start_watchdog(beats, config.state.dir.clone());
    // The box's own watchdog is systemd's (RuntimeWatchdogSec=); what it and the last boot
    // say goes into the same line of `show health`.
    let watchdog = Some(format!(
        "{}; {}",
        watchdog.as_deref().unwrap_or("no systemd watchdog"),
        recoveries.describe()
    ));
    #[cfg(feature = "testport")]
    crate::testport::start(crate::testport::Role::Daemon);

    // A panel that cannot be opened (a missing LED device, a busy GPIO line) must not keep the
    // box from serving calls: report it and run without one.
    let panel_tx = match panel::start(&config, profile.as_ref(), view_rx, command_tx) {
        Ok(tx) => tx,
        Err(e) => {
            tracing::error!(error = %e, "front panel unavailable; running without it");
            None
        }
    };

    let (local_tx, local_rx) = mpsc::channel(16);
    tokio::spawn(answer_locally(
        local_rx, recent, started, watchdog, recoveries,
    ));

    let router = Router {
        engine: Some(ask_tx),
        panel: panel_tx,
        local: Some(local_tx),
        events: events_tx,
    };
    if let Some(addr) = config.control.metrics_http.as_ref().map(|a| *a.get_ref()) {
        let listener = crate::metrics_http::bind(addr)
            .map_err(|source| StartError::Metrics { addr, source })?;
        tracing::info!(%addr, "metrics endpoint listening (GET /metrics)");
        tokio::spawn(crate::metrics_http::serve(listener, router.clone()));
    }
    tokio::spawn(control_server::serve(control_listener, router));

    for spec in &specs {
        tracing::info!(
            listener = spec.id.0,
            transport = spec.transport.uri_param(),
            addr = %spec.addr,
            "SIP listener bound"
        );
    }
    tracing::info!(
        node = %node,
        workers,
        control = %config.control.socket.display(),
        state = %initial,
        "sbcd started"
    );
    tracing::info!("sbcd: listening");
    tokio::spawn(async move { crate::network_wait::announce(&addresses).await });
    // Outside systemd NOTIFY_SOCKET is unset and this does nothing.
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);

    wait_for_stop().await;
    STOPPING.store(true, Ordering::SeqCst);
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
    tracing::info!("sbcd: stopping");
    Ok(())
}

fn spawn_engine(
    engine: Engine,
    cpus: Option<board::cpus::CpuList>,
    shared: Arc<transport::Shared>,
    beats: Arc<Heartbeats>,
) -> Result<(), StartError> {
    std::thread::Builder::new()
        .name("sip-engine".into())
        .spawn(move || {
            // The engine is on the wire path: it belongs on the SIP cores, not with housekeeping.
            if let Some(cpus) = cpus {
                if let Err(e) = board::cpus::pin_current_thread(&cpus) {
                    tracing::warn!(error = %e, "cannot pin the SIP engine");
                }
                real_time("sip-engine");
            }
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    tracing::error!(error = %e, "cannot start the engine runtime");
                    std::process::exit(1);
                }
            };
            shared.set_connect_runtime(runtime.handle().clone());
            runtime.block_on(async move {
                beats.spawn_beat(0);
                engine.run().await;
            });
            // The engine only returns when its inputs are gone: at a stop, or by a bug; in the
            // latter case let systemd restart the daemon rather than run without an engine.
            if !STOPPING.load(Ordering::SeqCst) {
                tracing::error!("SIP engine stopped; exiting");
                std::process::exit(1);
            }
        })
        .map(|_| ())
        .map_err(|source| StartError::Thread {
            name: "sip-engine".into(),
            source,
        })
}

/// The proxy configuration of one of `shards` shards: the caps on what each shard holds alone
/// (transactions, sessions) and the per-source rate are shared out, so the box as a whole keeps
/// the configured bounds; the bindings are held by every shard, so their cap stays whole.
fn per_shard(config: &proxy::Config, shards: usize) -> proxy::Config {
    let part = |n: usize| if n == 0 { 0 } else { n.div_ceil(shards).max(1) };
    let mut config = config.clone();
    config.limits.max_transactions = part(config.limits.max_transactions);
    config.limits.max_dialogs = part(config.limits.max_dialogs);
    config.limits.per_source_rps =
        u32::try_from(part(config.limits.per_source_rps as usize)).unwrap_or(u32::MAX);
    config
}

/// Starts shards 1 and up on their own threads (the engine's core is shard 0), pinned over
/// the SIP cores after the engine; `first_beat` is the heartbeat index of shard 1.
#[allow(clippy::too_many_arguments)]
fn start_shards(
    engine: &mut Engine,
    config: &proxy::Config,
    count: usize,
    initial: system_state::SystemState,
    sip_cores: &[usize],
    shared: &Arc<transport::Shared>,
    beats: &Arc<Heartbeats>,
    first_beat: usize,
) -> Result<engine::Shards, StartError> {
    // The hash is keyed per process, alike for every shard, so no sender can aim at one.
    let mut seed = [0u8; 32];
    getrandom::getrandom(&mut seed).map_err(|e| StartError::Thread {
        name: "sip-shard".into(),
        source: std::io::Error::other(e.to_string()),
    })?;
    let word = |i: usize| {
        let mut w = [0u8; 8];
        w.copy_from_slice(&seed[i * 8..i * 8 + 8]);
        u64::from_le_bytes(w)
    };
    let map = proxy::Shards::new(count, [word(0), word(1), word(2), word(3)]);
    let now = Instant::now();
    engine.core.add_shards(now, map.clone());
    let (reports_tx, reports_rx) = mpsc::unbounded_channel();
    let mut links = Vec::new();
    for k in 1..count {
        let shard = node::shards::Shard::new(config.clone(), k, map.clone(), initial, now);
        let (link, worker) = crate::shard::pair(k, shard, reports_tx.clone(), Arc::clone(shared));
        links.push(link);
        let core = (!sip_cores.is_empty()).then(|| sip_cores[k % sip_cores.len()]);
        spawn_shard(worker, core, Arc::clone(beats), first_beat + k - 1)?;
    }
    Ok(engine::Shards {
        links,
        map,
        reports: Some(reports_rx),
    })
}

fn spawn_shard(
    worker: crate::shard::Worker,
    core: Option<usize>,
    beats: Arc<Heartbeats>,
    beat: usize,
) -> Result<(), StartError> {
    spawn_sip_thread(format!("sip-shard-{}", worker.index), core, async move {
        beats.spawn_beat(beat);
        worker.run().await;
    })
}

fn spawn_worker(
    index: usize,
    core: Option<usize>,
    shared: Arc<transport::Shared>,
    sockets: transport::WorkerSockets,
    beats: Arc<Heartbeats>,
) -> Result<(), StartError> {
    spawn_sip_thread(format!("sip-worker-{index}"), core, async move {
        beats.spawn_beat(index + 1);
        #[cfg(feature = "testport")]
        tokio::spawn(crate::testport::wedge_point(index));
        transport::run_worker(shared, sockets).await;
    })
}

/// A SIP thread named `name`: pinned to `core` with real-time priority (a box with SIP cores),
/// running `body` on a current-thread runtime of its own. A thread whose body ends while the
/// daemon is not stopping takes the daemon down, for systemd to restart it whole.
fn spawn_sip_thread(
    name: String,
    core: Option<usize>,
    body: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), StartError> {
    let thread = name.clone();
    std::thread::Builder::new()
        .name(name.clone())
        .spawn(move || {
            if let Some(cpu) = core {
                let cpus: board::cpus::CpuList = std::iter::once(cpu).collect();
                match board::cpus::pin_current_thread(&cpus) {
                    Ok(()) => tracing::info!(thread, cpu, "SIP thread pinned"),
                    Err(e) => tracing::warn!(thread, cpu, error = %e, "cannot pin SIP thread"),
                }
                real_time(&thread);
            }
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    tracing::error!(thread, error = %e, "cannot start a SIP thread's runtime");
                    std::process::exit(1);
                }
            };
            runtime.block_on(body);
            if !STOPPING.load(Ordering::SeqCst) {
                tracing::error!(thread, "SIP thread stopped; exiting");
                std::process::exit(1);
            }
        })
        .map(|_| ())
        .map_err(|source| StartError::Thread { name, source })
}

/// Real-time priority for a SIP thread on an isolated core. Every SIP thread blocks in epoll
/// when idle, so it never starves its core; below the kernel's own real-time threads (50).
const SIP_FIFO_PRIORITY: i32 = 10;

fn real_time(thread: &str) {
    if let Err(e) = board::cpus::set_fifo_priority(SIP_FIFO_PRIORITY) {
        tracing::warn!(thread, error = %e, "cannot give the SIP thread SCHED_FIFO");
    }
}

/// `show health` and `show log`: answered from the control plane's own knowledge.
async fn answer_locally(
    mut asks: mpsc::Receiver<Ask>,
    recent: Arc<Recent>,
    started: Instant,
    watchdog: Option<String>,
    recoveries: health::Recoveries,
) {
    while let Some(ask) = asks.recv().await {
        let response = match ask.request {
            Request::ShowHealth => Response::Ok {
                reply: Reply::Health(HealthInfo {
                    uptime_secs: started.elapsed().as_secs(),
                    threads: threads(),
                    watchdog: watchdog.clone(),
                    recoveries: recoveries.total,
                    last_recovery: recoveries.last_cause.clone(),
                }),
            },
            Request::ShowVersion => Response::Ok {
                reply: Reply::Version(version()),
            },
            Request::ShowLog { lines } => {
                let n = lines.map_or(20, |n| n as usize);
                Response::Ok {
                    reply: Reply::Log(recent.last(n)),
                }
            }
            other => Response::Error {
                message: format!("the control plane does not answer {other:?}"),
            },
        };
        let _ = ask.reply.send(response);
    }
}

/// Where the image says what it is (written by `cargo xtask image`).
const IMAGE_VERSION: &str = "/usr/lib/sbc/version";

/// `show version`, read when asked: an update changes the image under a running daemon only
/// through a reboot, but reading two small files costs nothing.
fn version() -> control::VersionInfo {
    let first_line = |path: &str| {
        std::fs::read_to_string(path)
            .ok()
            .and_then(|s| s.lines().next().map(|l| l.trim().to_owned()))
            .filter(|l| !l.is_empty())
    };
    control::VersionInfo {
        image: first_line(IMAGE_VERSION),
        sbcd: env!("CARGO_PKG_VERSION").to_owned(),
        kernel: first_line("/proc/sys/kernel/osrelease"),
    }
}

/// Every thread of this process and the CPUs the kernel allows it.
fn threads() -> Vec<ThreadPinning> {
    match board::cpus::process_threads() {
        Ok(threads) => threads
            .into_iter()
            .map(|t| ThreadPinning {
                name: t.name,
                tid: u32::try_from(t.tid).unwrap_or(0),
                cpus_allowed: t.cpus.to_string(),
            })
            .collect(),
        Err(e) => {
            tracing::warn!(error = %e, "cannot list threads");
            Vec::new()
        }
    }
}

async fn wait_for_stop() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch SIGTERM");
            std::future::pending::<()>().await;
            return;
        }
    };
    let mut int = match signal(SignalKind::interrupt()) {
        Ok(s) => s,
        Err(_) => {
            term.recv().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}
