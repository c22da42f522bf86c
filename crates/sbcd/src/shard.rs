//! The SIP shards other than the engine's own (SPEC §6: one SIP worker per SIP core, each
//! owning a shard of the transactions and dialogs).
//!
//! The engine thread reads the sockets (UDP itself, TCP from the transport workers) and hands
//! each message to the shard its Call-ID hashes to (`proxy::Shards::of_message`): its own
//! proxy is shard 0, and every other shard runs here, on its own thread, as a
//! `node::shards::Shard`. A shard sends what it produces itself (the transports are shared), and
//! talks to the node on the engine thread only through two channels: commands in (the system
//! state, the guard, the twin's role, the other shards' records), reports out (its counts and
//! its records). Both are unbounded: neither may lose anything, and both carry little (a
//! state change, a few records per call). The messages from the reader are bounded: a shard
//! that cannot keep up loses what an overloaded UDP socket would, counted.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use node::shards::{Shard, ShardCommand, ShardReport};
use tokio::sync::mpsc;

use crate::sip_core::log_event;
use crate::transport::{Inbound, Shared};

/// Messages queued for one shard; beyond it they are dropped and counted.
pub const QUEUE: usize = 4096;

/// How many queued messages a shard handles before it looks at commands and timers again.
const BATCH: usize = 64;

/// The engine's side of one shard.
#[derive(Debug)]
pub struct Link {
    messages: mpsc::Sender<Inbound>,
    commands: mpsc::UnboundedSender<ShardCommand>,
    /// The shard's counters as of the end of its last turn, for `show stats` and `show
    /// upstreams`.
    published: Arc<Mutex<Published>>,
}

/// What a shard publishes at the end of each turn of its loop.
#[derive(Debug, Default)]
pub struct Published {
    pub stats: proxy::Stats,
    /// Failures per upstream, in configuration order.
    pub upstream_failures: Vec<u64>,
}

impl Published {
    fn of(shard: &Shard) -> Published {
        let mut p = Published::default();
        p.update(shard);
        p
    }

    /// Written in place: no allocation once the vector has its length.
    fn update(&mut self, shard: &Shard) {
        self.stats = shard.proxy().stats();
        self.upstream_failures.clear();
        self.upstream_failures
            .extend(shard.proxy().upstream_failures());
    }
}

impl Link {
    /// Hands a message to the shard; a full queue drops it (counted).
    pub fn send(&self, shared: &Shared, message: Inbound) {
        if self.messages.try_send(message).is_err() {
            shared
                .counters
                .shard_queue_full
                .fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The shard's counters as of the end of its last turn.
    pub fn stats(&self) -> proxy::Stats {
        self.published
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .stats
    }

    /// The shard's failures per upstream as of the end of its last turn.
    pub fn upstream_failures(&self) -> Vec<u64> {
        self.published
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .upstream_failures
            .clone()
    }

    pub fn command(&self, command: ShardCommand) {
        if self.commands.send(command).is_err() {
            tracing::error!("a SIP shard has stopped");
        }
    }
}

/// One shard's thread state, consumed by [`Worker::run`].
#[derive(Debug)]
pub struct Worker {
    pub index: usize,
    pub shard: Shard,
    messages: mpsc::Receiver<Inbound>,
    commands: mpsc::UnboundedReceiver<ShardCommand>,
    reports: mpsc::UnboundedSender<(usize, ShardReport)>,
    transports: Arc<Shared>,
    published: Arc<Mutex<Published>>,
}

/// A shard and the engine's link to it; `reports` is the engine's one receiver of every
/// shard's reports.
pub fn pair(
    index: usize,
    shard: Shard,
    reports: mpsc::UnboundedSender<(usize, ShardReport)>,
    transports: Arc<Shared>,
) -> (Link, Worker) {
    let (messages_tx, messages) = mpsc::channel(QUEUE);
    let (commands_tx, commands) = mpsc::unbounded_channel();
    let published = Arc::new(Mutex::new(Published::of(&shard)));
    (
        Link {
            messages: messages_tx,
            commands: commands_tx,
            published: Arc::clone(&published),
        },
        Worker {
            index,
            shard,
            messages,
            commands,
            reports,
            transports,
            published,
        },
    )
}

impl Worker {
    /// Runs until the engine drops its link.
    pub async fn run(mut self) {
        let sleep = tokio::time::sleep(Duration::from_secs(3600));
        tokio::pin!(sleep);
        let mut armed = None;
        loop {
            // Published once a turn: `show stats` reads it from the engine's thread.
            self.published
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .update(&self.shard);
            let deadline = self.shard.poll_timeout();
            if deadline != armed {
                if let Some(at) = deadline {
                    sleep.as_mut().reset(at.into());
                }
                armed = deadline;
            }
            tokio::select! {
                biased;
                // Commands first: a state change must reach the proxy before queued messages
                // are judged, as on the engine's own shard.
                command = self.commands.recv() => match command {
                    Some(command) => {
                        self.shard.handle_command(Instant::now(), command);
                        while let Ok(command) = self.commands.try_recv() {
                            self.shard.handle_command(Instant::now(), command);
                        }
                        self.flush(None);
                    }
                    None => return,
                },
                message = self.messages.recv() => match message {
                    Some(message) => {
                        let now = Instant::now();
                        self.handle(now, &message);
                        for _ in 1..BATCH {
                            match self.messages.try_recv() {
                                Ok(message) => self.handle(now, &message),
                                Err(_) => break,
                            }
                        }
                        if deadline.is_some_and(|at| at <= now) {
                            self.shard.handle_timeout(now);
                            self.flush(None);
                        }
                    }
                    None => return,
                },
                () = &mut sleep, if deadline.is_some() => {
                    self.shard.handle_timeout(Instant::now());
                    self.flush(None);
                }
            }
        }
    }

    fn handle(&mut self, now: Instant, message: &Inbound) {
        self.shard.handle_input(
            now,
            proxy::Input {
                listener: message.listener,
                flow: message.flow,
                source: message.source,
                bytes: &message.bytes,
            },
        );
        self.flush(Some(message.source));
    }

    /// Transmits out, reports to the node, events to the journal.
    fn flush(&mut self, source: Option<std::net::SocketAddr>) {
        while let Some(t) = self.shard.poll_transmit() {
            if let Some(bytes) = self.transports.send(t) {
                self.shard.recycle(bytes);
            }
        }
        while let Some(c) = self.shard.poll_close() {
            self.transports.close(&c);
        }
        while let Some(report) = self.shard.poll_report() {
            if self.reports.send((self.index, report)).is_err() {
                tracing::error!(shard = self.index, "the SIP engine has stopped");
            }
        }
        while let Some(event) = self.shard.poll_event() {
            log_event(event, source);
        }
    }
}
