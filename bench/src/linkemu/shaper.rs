//! One direction of the emulated link: random loss, drop-tail queue, rate serialisation with a
//! virtual clock, fixed propagation delay, in order.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, watch, Notify};
use tracing::trace;

use super::params::LinkParams;
use super::stats::{DirectionCounters, DirectionStats};

/// Where a datagram goes when it leaves the link.
#[derive(Debug, Clone)]
pub(crate) enum Dest {
    /// A socket connected to the upstream server (uplink).
    Upstream(Arc<UdpSocket>),
    /// The relay's listening socket, towards a client address (downlink).
    Client(Arc<UdpSocket>, SocketAddr),
}

#[derive(Debug)]
struct Packet {
    data: Vec<u8>,
    dest: Dest,
    arrived: Instant,
}

#[derive(Debug)]
struct Timed {
    deliver_at: Instant,
    packet: Packet,
}

#[derive(Debug)]
struct State {
    params: LinkParams,
    queue: VecDeque<Packet>,
    queue_bytes: usize,
    rng: StdRng,
}

/// One direction of the link, shared by the tasks that feed it and the two tasks that drain it.
#[derive(Debug)]
pub(crate) struct Shaper {
    state: Mutex<State>,
    wake: Notify,
    pub(crate) counters: DirectionCounters,
}

/// Resolves once the relay is shutting down (or its controller is gone).
pub(crate) async fn cancelled(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|stop| *stop).await;
}

impl Shaper {
    pub(crate) fn new(params: LinkParams, seed: u64) -> Self {
        Self {
            state: Mutex::new(State {
                params,
                queue: VecDeque::new(),
                queue_bytes: 0,
                rng: StdRng::seed_from_u64(seed),
            }),
            wake: Notify::new(),
            counters: DirectionCounters::default(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // The state stays consistent even if a holder panicked: every update is a single step.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn params(&self) -> LinkParams {
        self.lock().params
    }

    /// Replaces the parameters; the next datagram to start serialisation uses them.
    pub(crate) fn set_params(&self, params: LinkParams) {
        self.lock().params = params;
        self.wake.notify_one();
    }

    pub(crate) fn stats(&self) -> DirectionStats {
        let queued = self.lock().queue_bytes;
        self.counters.snapshot(queued)
    }

    /// A datagram enters the link: loss, then drop-tail admission into the queue.
    pub(crate) fn enqueue(&self, data: Vec<u8>, dest: Dest) {
        let len = data.len();
        let c = &self.counters;
        DirectionCounters::add(&c.packets_in, 1);
        DirectionCounters::add(&c.bytes_in, len);
        let mut st = self.lock();
        // One draw per datagram whatever the loss value, so the i-th datagram's fate depends only
        // on the seed and i.
        let draw: f64 = st.rng.random();
        if draw < st.params.loss {
            drop(st);
            DirectionCounters::add(&c.packets_dropped_loss, 1);
            DirectionCounters::add(&c.bytes_dropped_loss, len);
            return;
        }
        // Drop-tail; a datagram reaching an empty queue is always admitted, so even a queue smaller
        // than one datagram passes sparse traffic.
        if !st.queue.is_empty() && st.queue_bytes + len > st.params.queue_bytes {
            drop(st);
            DirectionCounters::add(&c.packets_dropped_queue, 1);
            DirectionCounters::add(&c.bytes_dropped_queue, len);
            return;
        }
        st.queue_bytes += len;
        let occupancy = st.queue_bytes as u64;
        st.queue.push_back(Packet {
            data,
            dest,
            arrived: Instant::now(),
        });
        drop(st);
        c.max_queue_bytes
            .fetch_max(occupancy, std::sync::atomic::Ordering::Relaxed);
        self.wake.notify_one();
    }

    fn pop(&self) -> Option<(Packet, LinkParams)> {
        let mut st = self.lock();
        let packet = st.queue.pop_front()?;
        st.queue_bytes -= packet.data.len();
        Some((packet, st.params))
    }

    /// Serialises queued datagrams one after another at the current rate. The departure times are
    /// kept on a virtual clock (`finish = max(previous finish, arrival) + size / rate`), so timer
    /// granularity or a late wake-up delays single datagrams but never lowers the average rate.
    async fn run_serialiser(
        self: Arc<Self>,
        out: mpsc::UnboundedSender<Timed>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let mut clock: Option<Instant> = None;
        let mut last_delivery: Option<Instant> = None;
        let mut without_pause = 0u32;
        loop {
            let (packet, params) = loop {
                if let Some(next) = self.pop() {
                    break next;
                }
                tokio::select! {
                    () = self.wake.notified() => {}
                    () = cancelled(&mut shutdown) => return,
                }
            };
            let start = match clock {
                Some(previous) if previous > packet.arrived => previous,
                _ => packet.arrived,
            };
            let finish = start + params.serialisation_time(packet.data.len());
            clock = Some(finish);
            if finish > Instant::now() {
                without_pause = 0;
                tokio::select! {
                    () = wait_until(finish) => {}
                    () = cancelled(&mut shutdown) => return,
                }
            } else {
                without_pause += 1;
                if without_pause >= 64 {
                    without_pause = 0;
                    tokio::task::yield_now().await;
                }
            }
            // Fixed propagation delay; never earlier than the previous datagram (a lowered delay
            // must not reorder).
            let mut deliver_at = finish + params.delay;
            if let Some(last) = last_delivery {
                deliver_at = deliver_at.max(last);
            }
            last_delivery = Some(deliver_at);
            if out.send(Timed { deliver_at, packet }).is_err() {
                return;
            }
        }
    }

    /// Delivers serialised datagrams when their propagation delay has elapsed (FIFO: delivery
    /// times never decrease).
    async fn run_delay_line(
        self: Arc<Self>,
        mut input: mpsc::UnboundedReceiver<Timed>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        loop {
            let timed = tokio::select! {
                next = input.recv() => match next {
                    Some(t) => t,
                    None => return,
                },
                () = cancelled(&mut shutdown) => return,
            };
            if timed.deliver_at > Instant::now() {
                tokio::select! {
                    () = wait_until(timed.deliver_at) => {}
                    () = cancelled(&mut shutdown) => return,
                }
            }
            let packet = timed.packet;
            let sent = match &packet.dest {
                Dest::Upstream(socket) => socket.send(&packet.data).await,
                Dest::Client(socket, addr) => socket.send_to(&packet.data, *addr).await,
            };
            let c = &self.counters;
            match sent {
                Ok(_) => {
                    DirectionCounters::add(&c.packets_forwarded, 1);
                    DirectionCounters::add(&c.bytes_forwarded, packet.data.len());
                }
                Err(e) => {
                    trace!(error = %e, "datagram not delivered");
                    DirectionCounters::add(&c.send_errors, 1);
                }
            }
        }
    }

    /// Spawns the serialiser and the delay line of this direction into `tasks`.
    pub(crate) fn spawn(
        self: &Arc<Self>,
        tasks: &mut tokio::task::JoinSet<()>,
        shutdown: &watch::Receiver<bool>,
    ) {
        let (tx, rx) = mpsc::unbounded_channel();
        tasks.spawn(self.clone().run_serialiser(tx, shutdown.clone()));
        tasks.spawn(self.clone().run_delay_line(rx, shutdown.clone()));
    }
}

/// Waits until `deadline` to within a few microseconds. tokio's timer fires on its next 1 ms tick
/// at the earliest, which put about 1 ms per direction on every datagram (a 3 kB request through a
/// 100 Mbit/s link took 3.2 ms instead of 0.3 ms); so the timer only takes the wait to within
/// [`SPIN_WINDOW`] of the deadline and the rest is spent yielding in a loop — at most that much CPU
/// per datagram that has to wait.
async fn wait_until(deadline: Instant) {
    let coarse = deadline.checked_sub(SPIN_WINDOW);
    if let Some(coarse) = coarse.filter(|&c| c > Instant::now()) {
        tokio::time::sleep_until(coarse.into()).await;
    }
    while Instant::now() < deadline {
        tokio::task::yield_now().await;
    }
}

/// The part of a wait spent yielding instead of sleeping on tokio's 1 ms timer.
const SPIN_WINDOW: std::time::Duration = std::time::Duration::from_micros(1500);
