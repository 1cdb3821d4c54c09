//! Resource bounds against hostile or broken clients: connections (in all, per address and per
//! device identity), the request bytes buffered at once, and how often a bad request may write a
//! log line.
//!
//! Without them one unauthenticated connection that opened 63 streams, each announcing a 16 MiB
//! request and then stalling, took the worker from 196 MB to 1,146 MB; the bound was
//! connections × streams × 16 MiB.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Caps on open connections, in all, per remote IP address and per device identity (the name a
/// client certificate proved), and each address's share of the request-byte budget (so that one
/// address cannot spend all of it).
#[derive(Debug)]
pub(crate) struct ConnectionLimiter {
    max_total: usize,
    max_per_address: usize,
    max_per_device: usize,
    bytes_per_address: usize,
    open: Mutex<OpenConnections>,
}

/// What is open now: connections (and the shared byte budget) per address, connections per device.
#[derive(Debug, Default)]
struct OpenConnections {
    addresses: HashMap<IpAddr, (usize, Arc<ByteBudget>)>,
    devices: HashMap<String, usize>,
}

/// Why a connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ConnectionRefusal {
    /// `max_connections` are open.
    Total,
    /// `max_connections_per_address` are open from this address.
    PerAddress,
    /// `max_connections_per_device` are open with this device's identity.
    PerDevice,
}

/// An admitted connection; frees its place when dropped.
#[derive(Debug)]
pub(crate) struct ConnectionSlot {
    limiter: Arc<ConnectionLimiter>,
    address: IpAddr,
    /// The device identity this connection counts against, once [`ConnectionSlot::admit_device`]
    /// admitted it.
    device: Option<String>,
    /// The request-byte budget shared by the connections from this address.
    pub address_budget: Arc<ByteBudget>,
}

impl ConnectionLimiter {
    /// At most `max_total` connections, `max_per_address` from one IP address, `max_per_device`
    /// with one device identity; the connections of one address buffer at most
    /// `bytes_per_address` request bytes at once.
    pub(crate) fn new(
        max_total: usize,
        max_per_address: usize,
        max_per_device: usize,
        bytes_per_address: usize,
    ) -> Arc<Self> {
        Arc::new(Self {
            max_total,
            max_per_address,
            max_per_device,
            bytes_per_address,
            open: Mutex::new(OpenConnections::default()),
        })
    }

    /// A place for a connection from `address`, or why there is none. The device identity is
    /// known only after the handshake: [`ConnectionSlot::admit_device`] counts it then.
    pub(crate) fn admit(
        self: &Arc<Self>,
        address: IpAddr,
    ) -> Result<ConnectionSlot, ConnectionRefusal> {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let total: usize = open.addresses.values().map(|(n, _)| n).sum();
        if total >= self.max_total {
            return Err(ConnectionRefusal::Total);
        }
        let (mine, budget) = open
            .addresses
            .entry(address)
            .or_insert_with(|| (0, ByteBudget::new(self.bytes_per_address)));
        if *mine >= self.max_per_address {
            return Err(ConnectionRefusal::PerAddress);
        }
        *mine += 1;
        Ok(ConnectionSlot {
            limiter: self.clone(),
            address,
            device: None,
            address_budget: budget.clone(),
        })
    }

    /// Connections open from `address`.
    #[cfg(test)]
    pub(crate) fn open_from(&self, address: IpAddr) -> usize {
        let open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        open.addresses.get(&address).map_or(0, |(n, _)| *n)
    }

    /// Connections open with the identity `device` (admitted by [`ConnectionSlot::admit_device`]).
    #[cfg(test)]
    pub(crate) fn open_as(&self, device: &str) -> usize {
        let open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        open.devices.get(device).copied().unwrap_or(0)
    }
}

impl ConnectionSlot {
    /// Counts this connection against `device`, the identity its client certificate proved;
    /// refused ([`ConnectionRefusal::PerDevice`]) when `max_per_device` connections with that
    /// identity are open already (the caller then closes the connection; dropping the slot frees
    /// its address place). A slot counts against one device: later calls change nothing.
    pub(crate) fn admit_device(&mut self, device: &str) -> Result<(), ConnectionRefusal> {
        if self.device.is_some() {
            return Ok(());
        }
        let mut open = self.limiter.open.lock().unwrap_or_else(|p| p.into_inner());
        let mine = open.devices.entry(device.to_owned()).or_insert(0);
        if *mine >= self.limiter.max_per_device {
            if *mine == 0 {
                open.devices.remove(device);
            }
            return Err(ConnectionRefusal::PerDevice);
        }
        *mine += 1;
        self.device = Some(device.to_owned());
        Ok(())
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        let mut open = self.limiter.open.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((n, _)) = open.addresses.get_mut(&self.address) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                open.addresses.remove(&self.address);
            }
        }
        if let Some(device) = &self.device {
            if let Some(n) = open.devices.get_mut(device) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    open.devices.remove(device);
                }
            }
        }
    }
}

/// Request bytes a stream holds: from its address's share and from the global budget.
#[derive(Debug, Default)]
pub(crate) struct HeldBytes {
    address: Option<OwnedSemaphorePermit>,
    global: Option<OwnedSemaphorePermit>,
}

impl HeldBytes {
    /// Takes `bytes` more from both budgets, or nothing (`false`) when either cannot cover them.
    pub(crate) fn take(&mut self, bytes: usize, address: &ByteBudget, global: &ByteBudget) -> bool {
        let mut from_address = None;
        if !address.take(bytes, &mut from_address) {
            return false;
        }
        let mut from_global = None;
        if !global.take(bytes, &mut from_global) {
            return false; // `from_address` is dropped: its bytes go back.
        }
        for (held, new) in [
            (&mut self.address, from_address),
            (&mut self.global, from_global),
        ] {
            match (held.as_mut(), new) {
                (Some(h), Some(n)) => h.merge(n),
                (None, n) => *held = n,
                (Some(_), None) => {}
            }
        }
        true
    }
}

/// A budget of request bytes buffered at once across every connection and stream. A stream
/// takes bytes from it as they arrive and gives them back when its request has been answered.
#[derive(Debug)]
pub struct ByteBudget {
    capacity: usize,
    semaphore: Arc<Semaphore>,
    peak: AtomicU64,
}

impl ByteBudget {
    /// A budget of `capacity` bytes (at least 1, at most the semaphore's maximum).
    pub fn new(capacity: usize) -> Arc<Self> {
        let capacity = capacity.clamp(1, Semaphore::MAX_PERMITS);
        Arc::new(Self {
            capacity,
            semaphore: Arc::new(Semaphore::new(capacity)),
            peak: AtomicU64::new(0),
        })
    }

    /// Takes `bytes` more for a request that already holds `held` (merged into it); `false`
    /// when the budget cannot cover them now (nothing is taken then).
    pub fn take(&self, bytes: usize, held: &mut Option<OwnedSemaphorePermit>) -> bool {
        if bytes == 0 {
            return true;
        }
        let Ok(n) = u32::try_from(bytes) else {
            return false;
        };
        let Ok(permit) = self.semaphore.clone().try_acquire_many_owned(n) else {
            return false;
        };
        match held {
            Some(h) => h.merge(permit),
            None => *held = Some(permit),
        }
        self.peak.fetch_max(self.in_use() as u64, Ordering::Relaxed);
        true
    }

    /// Bytes held by requests now.
    pub fn in_use(&self) -> usize {
        self.capacity
            .saturating_sub(self.semaphore.available_permits())
    }

    /// The most bytes held at once since start.
    pub fn peak(&self) -> u64 {
        self.peak.load(Ordering::Relaxed)
    }

    /// The budget.
    pub fn capacity(&self) -> usize {
        self.capacity
    }
}

/// Lets through at most `burst` events per `window`; counts the rest.
#[derive(Debug)]
pub(crate) struct LogLimiter {
    window: Duration,
    burst: u32,
    state: Mutex<LogWindow>,
}

#[derive(Debug)]
struct LogWindow {
    started: Option<Instant>,
    logged: u32,
    suppressed: u64,
}

impl LogLimiter {
    /// `burst` events per `window`.
    pub(crate) fn new(window: Duration, burst: u32) -> Self {
        Self {
            window,
            burst,
            state: Mutex::new(LogWindow {
                started: None,
                logged: 0,
                suppressed: 0,
            }),
        }
    }

    /// Whether an event at `now` may be logged; when it may, also how many were suppressed
    /// since the last one that was (to say so in that line).
    pub(crate) fn allow(&self, now: Instant) -> Option<u64> {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let expired = st
            .started
            .is_none_or(|s| now.saturating_duration_since(s) >= self.window);
        if expired {
            st.started = Some(now);
            st.logged = 0;
        }
        if st.logged < self.burst {
            st.logged += 1;
            let suppressed = st.suppressed;
            st.suppressed = 0;
            Some(suppressed)
        } else {
            st.suppressed += 1;
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_are_capped_in_all_and_per_address() {
        let limiter = ConnectionLimiter::new(3, 2, 10, 100);
        let a: IpAddr = [127, 0, 0, 1].into();
        let b: IpAddr = [127, 0, 0, 2].into();
        let a1 = limiter.admit(a).expect("first");
        let _a2 = limiter.admit(a).expect("second");
        assert_eq!(limiter.admit(a).err(), Some(ConnectionRefusal::PerAddress));
        let _b1 = limiter.admit(b).expect("other address");
        assert_eq!(limiter.admit(b).err(), Some(ConnectionRefusal::Total));
        drop(a1);
        assert_eq!(limiter.open_from(a), 1);
        let _b2 = limiter.admit(b).expect("a place was freed");
    }

    #[test]
    fn connections_are_capped_per_device_whatever_their_address() {
        let limiter = ConnectionLimiter::new(100, 100, 2, 100);
        let addresses: Vec<IpAddr> = (1..=4).map(|i| [127, 0, 0, i].into()).collect();
        let mut first = limiter.admit(addresses[0]).expect("address place");
        first.admit_device("pi-01").expect("first pi-01");
        let mut second = limiter.admit(addresses[1]).expect("address place");
        second.admit_device("pi-01").expect("second pi-01");
        let mut third = limiter.admit(addresses[2]).expect("address place");
        assert_eq!(
            third.admit_device("pi-01").err(),
            Some(ConnectionRefusal::PerDevice),
            "the third connection of pi-01 from a third address"
        );
        assert_eq!(limiter.open_as("pi-01"), 2);
        // Another device is not affected, nor is the refused connection's address place.
        third.admit_device("pi-02").expect("pi-02 on the same slot");
        assert_eq!(limiter.open_as("pi-02"), 1);
        drop(third);
        assert_eq!(limiter.open_as("pi-02"), 0);
        assert_eq!(limiter.open_from(addresses[2]), 0);
        // A slot counts once, whatever is asked later.
        first.admit_device("pi-01").expect("already counted");
        first
            .admit_device("pi-03")
            .expect("already counted as pi-01");
        assert_eq!(limiter.open_as("pi-01"), 2);
        assert_eq!(limiter.open_as("pi-03"), 0);
        // Closing one frees a place for the device.
        drop(first);
        assert_eq!(limiter.open_as("pi-01"), 1);
        let mut fourth = limiter.admit(addresses[3]).expect("address place");
        fourth.admit_device("pi-01").expect("a place was freed");
        drop((second, fourth));
        assert_eq!(limiter.open_as("pi-01"), 0);
        assert_eq!(limiter.open_from(addresses[0]), 0);
    }

    #[test]
    fn the_device_cap_does_not_lift_the_address_and_total_caps() {
        let limiter = ConnectionLimiter::new(3, 2, 10, 100);
        let a: IpAddr = [127, 0, 0, 1].into();
        let b: IpAddr = [127, 0, 0, 2].into();
        let mut slots = Vec::new();
        for address in [a, a, b] {
            let mut slot = limiter.admit(address).expect("place");
            slot.admit_device("pi-01").expect("under the device cap");
            slots.push(slot);
        }
        assert_eq!(limiter.admit(b).err(), Some(ConnectionRefusal::Total));
        drop(slots.pop());
        assert_eq!(limiter.admit(a).err(), Some(ConnectionRefusal::PerAddress));
        assert_eq!(limiter.open_as("pi-01"), 2);
    }

    #[test]
    fn the_byte_budget_refuses_what_it_cannot_cover_and_gets_bytes_back() {
        let budget = ByteBudget::new(1000);
        let mut first = None;
        assert!(budget.take(600, &mut first));
        assert!(budget.take(300, &mut first));
        assert_eq!(budget.in_use(), 900);
        let mut second = None;
        assert!(!budget.take(200, &mut second));
        assert!(second.is_none());
        drop(first);
        assert_eq!(budget.in_use(), 0);
        assert!(budget.take(200, &mut second));
        assert_eq!(budget.peak(), 900);
        assert!(!budget.take(usize::MAX, &mut second));
    }

    #[test]
    fn an_address_spends_only_its_share_of_the_budget() {
        let global = ByteBudget::new(1000);
        let limiter = ConnectionLimiter::new(10, 10, 10, 400);
        let a = limiter.admit([127, 0, 0, 1].into()).expect("a");
        let a2 = limiter.admit([127, 0, 0, 1].into()).expect("a again");
        let b = limiter.admit([127, 0, 0, 2].into()).expect("b");
        let mut held_a = HeldBytes::default();
        assert!(held_a.take(300, &a.address_budget, &global));
        let mut held_a2 = HeldBytes::default();
        assert!(
            !held_a2.take(200, &a2.address_budget, &global),
            "a's share is spent"
        );
        assert_eq!(global.in_use(), 300, "a refused take gives everything back");
        let mut held_b = HeldBytes::default();
        assert!(held_b.take(400, &b.address_budget, &global));
        assert_eq!(global.in_use(), 700);
        drop(held_a);
        assert!(held_a2.take(200, &a2.address_budget, &global));
        assert_eq!(global.in_use(), 600);
    }

    #[test]
    fn log_lines_are_limited_per_window_and_the_rest_counted() {
        let limiter = LogLimiter::new(Duration::from_secs(10), 2);
        let t0 = Instant::now();
        assert_eq!(limiter.allow(t0), Some(0));
        assert_eq!(limiter.allow(t0), Some(0));
        for _ in 0..5 {
            assert_eq!(limiter.allow(t0 + Duration::from_secs(1)), None);
        }
        assert_eq!(limiter.allow(t0 + Duration::from_secs(11)), Some(5));
        assert_eq!(limiter.allow(t0 + Duration::from_secs(11)), Some(0));
    }
}
