//! The SIP shards other than the engine's own (SPEC §6: one SIP worker per SIP core, each
//! owning a shard of the transactions and dialogs).
//!
//! The engine thread reads the sockets (UDP itself, TCP from the transport workers) and hands
//! each message to the shard its Call-ID hashes to (`proxy::Shards::of_message`): its own
//! proxy is shard 0, and every other shard is a `node::shards::Shard` that its SIP worker
//! thread owns. A shard sends what it produces itself (the transports are shared), and talks to
//! the node on the engine thread only through its reports (its counts and its records).
//!
//! **Who runs a shard.** Handing a message to another thread costs a queue push and, when that
//! thread sleeps, waking it (a system call on one side, a context switch on the other): on a
//! VM, more than the message's own work. So the engine runs a shard's work itself while the
//! shard's worker has nothing queued and is not running (the shard's lock is free), and hands
//! it to the worker when the engine has a backlog of its own (its last batch of datagrams
//! stopped at the batch's limit with more waiting), or the worker is already busy. A shard's work is then done by one thread at a time, in the
//! order the engine read it: whatever was queued is handled before the engine may run the
//! shard itself again (the queue's count falls only after its messages are handled, under the
//! lock). So a lightly loaded box wakes one thread per message, and a busy one spreads its
//! messages over every SIP core. The node's commands (system state, guard, records of the other
//! shards) go the same way, in the same order as messages; the shard's timers are the engine's
//! to run, or the worker's at the end of a batch while it holds the shard.
//!
//! The queue is bounded for messages (a shard that cannot keep up loses what an overloaded UDP
//! socket would, counted), never for commands, which may not be lost.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, TryLockError};
use std::time::Instant;

use node::shards::{Shard, ShardCommand, ShardReport};
use tokio::sync::mpsc;

use crate::sip_core::log_event;
use crate::transport::{Inbound, Shared};

/// Messages queued for one shard; beyond it they are dropped and counted.
pub const QUEUE: usize = 4096;

/// How many queued items a worker handles before it lets go of its shard.
const BATCH: usize = 64;

/// No deadline, in [`Cell::deadline`].
const NONE: u64 = u64::MAX;

/// What a shard tells the engine, on the one channel of every shard's.
#[derive(Debug)]
pub enum FromShard {
    /// Counts and records for the node.
    Report(ShardReport),
    /// The worker let go of the shard with a deadline the engine must arm its timer for: the
    /// engine left the shard's timers to the worker while it had work. A note on the channel
    /// the engine already waits on, rather than a wake-up source of its own that every turn
    /// of the engine's loop would poll.
    Deadline,
}

/// The sending side of [`FromShard`]s, with the shard's index.
pub type ReportSender = mpsc::UnboundedSender<(usize, FromShard)>;

/// Work for a shard's worker, in the order the engine produced it.
#[derive(Debug)]
enum Work {
    Message(Inbound),
    Command(ShardCommand),
}

/// A shard and what it shares with the engine.
#[derive(Debug)]
struct Cell {
    shard: Mutex<Running>,
    /// Items queued for the worker and not yet handled: the engine runs the shard itself only
    /// at 0, so nothing it reads later overtakes what it queued.
    pending: AtomicUsize,
    /// The shard's next deadline as of the last time anyone ran it, in nanoseconds after
    /// `epoch` ([`NONE`]: none), for the engine's timer.
    deadline: AtomicU64,
    epoch: Instant,
}

/// The shard, with where its outputs go.
#[derive(Debug)]
struct Running {
    index: usize,
    shard: Shard,
    reports: ReportSender,
    transports: Arc<Shared>,
}

/// The engine's side of one shard.
#[derive(Debug)]
pub struct Link {
    cell: Arc<Cell>,
    work: mpsc::UnboundedSender<Work>,
}

/// One shard's worker thread state, consumed by [`Worker::run`].
#[derive(Debug)]
pub struct Worker {
    pub index: usize,
    cell: Arc<Cell>,
    work: mpsc::UnboundedReceiver<Work>,
    /// Tells the engine a deadline it did not know of ([`FromShard::Deadline`]), after a
    /// batch.
    reports: ReportSender,
}

/// A shard and the engine's link to it; `reports` goes to the engine's one receiver of every
/// shard's reports (and of the workers' deadline notes).
pub fn pair(
    index: usize,
    shard: Shard,
    reports: ReportSender,
    transports: Arc<Shared>,
) -> (Link, Worker) {
    let epoch = Instant::now();
    let cell = Arc::new(Cell {
        deadline: AtomicU64::new(NONE),
        shard: Mutex::new(Running {
            index,
            shard,
            reports: reports.clone(),
            transports,
        }),
        pending: AtomicUsize::new(0),
        epoch,
    });
    {
        let running = cell.lock();
        cell.publish(&running);
    }
    let (work_tx, work) = mpsc::unbounded_channel();
    (
        Link {
            cell: Arc::clone(&cell),
            work: work_tx,
        },
        Worker {
            index,
            cell,
            work,
            reports,
        },
    )
}

impl Cell {
    fn lock(&self) -> MutexGuard<'_, Running> {
        self.shard
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The shard, if nothing is queued for it and nobody runs it.
    fn try_idle(&self) -> Option<MutexGuard<'_, Running>> {
        if self.pending.load(Ordering::Acquire) != 0 {
            return None;
        }
        match self.shard.try_lock() {
            Ok(guard) => Some(guard),
            Err(TryLockError::Poisoned(p)) => Some(p.into_inner()),
            Err(TryLockError::WouldBlock) => None,
        }
    }

    /// Records the shard's next deadline (call with the shard held).
    fn publish(&self, running: &Running) {
        let at = running.shard.poll_timeout().map_or(NONE, |at| {
            u64::try_from(at.saturating_duration_since(self.epoch).as_nanos()).unwrap_or(NONE - 1)
        });
        self.deadline.store(at, Ordering::Release);
    }

    fn deadline(&self) -> Option<Instant> {
        match self.deadline.load(Ordering::Acquire) {
            NONE => None,
            nanos => Some(self.epoch + std::time::Duration::from_nanos(nanos)),
        }
    }
}

impl Running {
    fn handle(&mut self, now: Instant, input: proxy::Input<'_>) {
        let source = input.source;
        self.shard.handle_input(now, input);
        self.flush(Some(source));
    }

    fn command(&mut self, now: Instant, command: ShardCommand) {
        self.shard.handle_command(now, command);
        self.flush(None);
    }

    /// Runs what is due at `now`, if anything.
    fn timers(&mut self, now: Instant) {
        if self.shard.poll_timeout().is_some_and(|at| at <= now) {
            self.shard.handle_timeout(now);
            self.flush(None);
        }
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
            if self
                .reports
                .send((self.index, FromShard::Report(report)))
                .is_err()
            {
                tracing::error!(shard = self.index, "the SIP engine has stopped");
            }
        }
        while let Some(event) = self.shard.poll_event() {
            log_event(event, source);
        }
    }
}

impl Link {
    /// A datagram for the shard: run here if `inline` and the shard is idle, else queued for
    /// its worker (a full queue drops it, counted).
    pub fn datagram(&self, shared: &Shared, now: Instant, inline: bool, input: proxy::Input<'_>) {
        if let Some(mut running) = inline.then(|| self.cell.try_idle()).flatten() {
            running.handle(now, input);
            self.cell.publish(&running);
            return;
        }
        self.queue_message(
            shared,
            Inbound {
                listener: input.listener,
                flow: input.flow,
                source: input.source,
                bytes: input.bytes.to_vec(),
            },
        );
    }

    /// A stream message for the shard, as [`datagram`](Self::datagram).
    pub fn message(&self, shared: &Shared, now: Instant, inline: bool, message: Inbound) {
        if let Some(mut running) = inline.then(|| self.cell.try_idle()).flatten() {
            running.handle(now, message.input());
            self.cell.publish(&running);
            return;
        }
        self.queue_message(shared, message);
    }

    fn queue_message(&self, shared: &Shared, message: Inbound) {
        if self.cell.pending.load(Ordering::Acquire) >= QUEUE {
            shared
                .counters
                .shard_queue_full
                .fetch_add(1, Ordering::Relaxed);
            return;
        }
        self.queue(Work::Message(message));
    }

    /// A command of the node: run here when the shard is idle, else queued behind what is.
    pub fn command(&self, now: Instant, command: ShardCommand) {
        if let Some(mut running) = self.cell.try_idle() {
            running.command(now, command);
            self.cell.publish(&running);
            return;
        }
        self.queue(Work::Command(command));
    }

    fn queue(&self, work: Work) {
        // Counted before it is sent: the worker counts it off only after handling it.
        self.cell.pending.fetch_add(1, Ordering::AcqRel);
        if self.work.send(work).is_err() {
            self.cell.pending.fetch_sub(1, Ordering::AcqRel);
            tracing::error!("a SIP shard has stopped");
        }
    }

    /// The shard's next deadline, unless its worker has work queued (it runs the timers due
    /// when it is done).
    pub fn deadline(&self) -> Option<Instant> {
        if self.cell.pending.load(Ordering::Acquire) != 0 {
            return None;
        }
        self.cell.deadline()
    }

    /// Runs the shard's timers due at `now` when it is idle; a busy worker runs them at the
    /// end of its batch.
    pub fn timers(&self, now: Instant) {
        if self.cell.deadline().is_none_or(|at| at > now) {
            return;
        }
        if let Some(mut running) = self.cell.try_idle() {
            running.timers(now);
            self.cell.publish(&running);
        }
    }

    /// The shard's counters, now.
    pub fn stats(&self) -> proxy::Stats {
        self.cell.lock().shard.proxy().stats()
    }

    /// The shard's failures per upstream, in configuration order.
    pub fn upstream_failures(&self) -> Vec<u64> {
        self.cell.lock().shard.proxy().upstream_failures().collect()
    }
}

impl Worker {
    /// Runs until the engine drops its link.
    pub async fn run(mut self) {
        let mut batch = Vec::with_capacity(BATCH);
        loop {
            if self.work.recv_many(&mut batch, BATCH).await == 0 {
                return;
            }
            let handled = batch.len();
            {
                let mut running = self.cell.lock();
                let now = Instant::now();
                for work in batch.drain(..) {
                    match work {
                        Work::Message(message) => running.handle(now, message.input()),
                        Work::Command(command) => running.command(now, command),
                    }
                }
                running.timers(now);
                self.cell.publish(&running);
                // Under the lock: the engine may run the shard itself from here on.
                self.cell.pending.fetch_sub(handled, Ordering::AcqRel);
            }
            // The engine left this shard's timers to the worker while it had work: it must
            // look at them again.
            if self.cell.pending.load(Ordering::Acquire) == 0
                && self.cell.deadline().is_some()
                && self
                    .reports
                    .send((self.index, FromShard::Deadline))
                    .is_err()
            {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::{self, Limits};
    use std::time::Duration;

    fn link() -> (Link, Worker, mpsc::UnboundedReceiver<(usize, FromShard)>) {
        let (inbound, _) = mpsc::channel(1);
        let (_, serving) = tokio::sync::watch::channel(true);
        let limits = Limits::no_streams();
        let (shared, _) = transport::bind_all(Vec::new(), limits, 1, inbound, serving).unwrap();
        let now = Instant::now();
        let shard = Shard::new(
            proxy::Config::default(),
            1,
            proxy::Shards::new(2, [1, 2, 3, 4]),
            proxy::SystemState::Online,
            now,
        );
        let (reports_tx, reports) = mpsc::unbounded_channel();
        let (link, worker) = pair(1, shard, reports_tx, shared);
        (link, worker, reports)
    }

    fn received(link: &Link) -> u64 {
        link.stats().received
    }

    const SOURCE: &str = "127.0.0.1:5099";

    #[tokio::test]
    async fn an_idle_shard_runs_on_the_engine_and_a_queued_one_keeps_the_engine_order() {
        let (link, worker, _reports) = link();
        let shared = Arc::clone(&link.cell.lock().transports);
        let now = Instant::now();
        let source = SOURCE.parse().unwrap();
        let datagram = |inline| {
            let input = proxy::Input {
                listener: proxy::ListenerId(0),
                flow: None,
                source,
                bytes: b"junk",
            };
            link.datagram(&shared, now, inline, input);
        };
        // Idle: the engine runs it at once, no worker involved.
        datagram(true);
        assert_eq!(received(&link), 1);
        // A backlog: queued for the worker, which is not running yet.
        datagram(false);
        assert_eq!(received(&link), 1);
        // Something is queued: even a message the engine could run waits behind it, and so
        // does a command, and the engine leaves the shard's timers to the worker.
        datagram(true);
        link.command(now, ShardCommand::Standby(false));
        assert_eq!(received(&link), 1);
        assert_eq!(link.cell.pending.load(Ordering::Acquire), 3);
        assert_eq!(link.deadline(), None);
        // The worker handles the queue in order and hands the shard back.
        let worker = tokio::spawn(worker.run());
        let deadline = Instant::now() + Duration::from_secs(10);
        while link.cell.pending.load(Ordering::Acquire) != 0 {
            assert!(
                Instant::now() < deadline,
                "the worker never emptied its queue"
            );
            tokio::task::yield_now().await;
        }
        assert_eq!(received(&link), 3);
        assert_eq!(link.deadline(), link.cell.deadline());
        datagram(true);
        assert_eq!(received(&link), 4, "idle again: run by the engine");
        drop(link);
        worker.await.unwrap();
    }
}
