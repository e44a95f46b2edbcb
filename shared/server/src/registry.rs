//! The open connections: how many, from which address, which are idle;
//! the caps, and which connection gives way when one is reached.
//!
//! A connection is idle while it has no request in flight (a silent new
//! connection is idle from its accept). When the cap is reached the
//! connections idle the longest are closed first, a hundredth of the cap
//! at a time so that a flood of new connections costs one scan per
//! hundred; a new connection is refused only when none is idle. The same
//! holds per client address, one connection at a time.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

/// Every open connection of one port.
pub(crate) struct Registry {
    inner: Mutex<Inner>,
    max_total: usize,
    max_per_address: usize,
    epoch: Instant,
}

#[derive(Default)]
struct Inner {
    next_id: u64,
    conns: HashMap<u64, Arc<Conn>>,
    /// Connections not yet told to close.
    live: usize,
    /// Live connections per client address.
    per_address: HashMap<IpAddr, usize>,
}

/// Why a new connection was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// The cap is reached and no connection is idle.
    Full,
    /// Its address is at its cap and none of its connections is idle.
    AddressFull,
}

/// One open connection, as the registry and its requests see it.
pub(crate) struct Conn {
    id: u64,
    ip: IpAddr,
    epoch: Instant,
    active: AtomicUsize,
    /// Milliseconds from the registry's epoch to the end of its last
    /// request (or its accept).
    idle_since_ms: AtomicU64,
    shed: AtomicBool,
    close: Notify,
}

impl Conn {
    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Marks a request started; it ends when the guard is dropped.
    pub(crate) fn start_request(self: &Arc<Self>) -> ActiveRequest {
        self.active.fetch_add(1, Ordering::AcqRel);
        ActiveRequest { conn: self.clone() }
    }

    /// How long the connection has had no request in flight; `None` while
    /// one is.
    /// Requests in flight on this connection.
    pub(crate) fn in_flight(&self) -> usize {
        self.active.load(Ordering::Acquire)
    }

    pub(crate) fn idle_for(&self) -> Option<Duration> {
        let since = self.idle_since()?;
        Some(Duration::from_millis(self.now_ms().saturating_sub(since)))
    }

    /// When its last request ended (milliseconds from the registry's
    /// epoch); `None` while one is in flight.
    fn idle_since(&self) -> Option<u64> {
        if self.active.load(Ordering::Acquire) > 0 {
            return None;
        }
        Some(self.idle_since_ms.load(Ordering::Acquire))
    }

    /// Resolves once the registry has chosen this connection to make room.
    pub(crate) async fn shed(&self) {
        loop {
            let notified = self.close.notified();
            if self.shed.load(Ordering::Acquire) {
                return;
            }
            notified.await;
        }
    }
}

/// A request in flight on a connection.
pub(crate) struct ActiveRequest {
    conn: Arc<Conn>,
}

impl Drop for ActiveRequest {
    fn drop(&mut self) {
        let now = self.conn.now_ms();
        if self.conn.active.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.conn.idle_since_ms.store(now, Ordering::Release);
        }
    }
}

/// A connection's place in the registry, given up when dropped.
pub(crate) struct Registered {
    registry: Arc<Registry>,
    conn: Arc<Conn>,
}

impl Registered {
    pub(crate) fn conn(&self) -> &Arc<Conn> {
        &self.conn
    }
}

impl Drop for Registered {
    fn drop(&mut self) {
        let mut inner = self.registry.lock();
        inner.conns.remove(&self.conn.id);
        if !self.conn.shed.load(Ordering::Acquire) {
            inner.count_out(self.conn.ip);
        }
        ::metrics::gauge!("twig_connections_open").set(inner.conns.len() as f64);
    }
}

impl Inner {
    fn count_out(&mut self, ip: IpAddr) {
        self.live -= 1;
        if let Some(n) = self.per_address.get_mut(&ip) {
            *n -= 1;
            if *n == 0 {
                self.per_address.remove(&ip);
            }
        }
    }

    /// Tells up to `count` of the connections idle the longest (of `ip`
    /// only, if given) to close; returns how many.
    fn shed_longest_idle(&mut self, ip: Option<IpAddr>, count: usize) -> usize {
        // (idle since, id): the smallest idle the longest; among equals,
        // the older connection.
        let mut idle: Vec<(u64, u64)> = self
            .conns
            .values()
            .filter(|c| ip.is_none_or(|ip| c.ip == ip) && !c.shed.load(Ordering::Acquire))
            .filter_map(|c| c.idle_since().map(|since| (since, c.id)))
            .collect();
        let count = count.min(idle.len());
        if count == 0 {
            return 0;
        }
        if count < idle.len() {
            idle.select_nth_unstable(count - 1);
        }
        for (_, id) in &idle[..count] {
            let conn = self.conns[id].clone();
            conn.shed.store(true, Ordering::Release);
            conn.close.notify_one();
            self.count_out(conn.ip);
        }
        count
    }
}

impl Registry {
    pub(crate) fn new(max_total: usize, max_per_address: usize) -> Arc<Self> {
        Arc::new(Self {
            inner: Mutex::new(Inner::default()),
            max_total: max_total.max(1),
            max_per_address: max_per_address.max(1),
            epoch: Instant::now(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // The registry's counts stay consistent whatever panicked.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Admits a new connection from `ip`, closing idle ones to make room.
    pub(crate) fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<Registered, Refusal> {
        let mut inner = self.lock();
        if inner.per_address.get(&ip).copied().unwrap_or(0) >= self.max_per_address
            && inner.shed_longest_idle(Some(ip), 1) == 0
        {
            return Err(Refusal::AddressFull);
        }
        if inner.live >= self.max_total {
            let batch = (self.max_total / 100).max(1);
            if inner.shed_longest_idle(None, batch) == 0 {
                return Err(Refusal::Full);
            }
        }
        inner.next_id += 1;
        let conn = Arc::new(Conn {
            id: inner.next_id,
            ip,
            epoch: self.epoch,
            active: AtomicUsize::new(0),
            idle_since_ms: AtomicU64::new(0),
            shed: AtomicBool::new(false),
            close: Notify::new(),
        });
        conn.idle_since_ms.store(conn.now_ms(), Ordering::Release);
        inner.conns.insert(conn.id, conn.clone());
        inner.live += 1;
        *inner.per_address.entry(ip).or_default() += 1;
        ::metrics::gauge!("twig_connections_open").set(inner.conns.len() as f64);
        Ok(Registered {
            registry: self.clone(),
            conn,
        })
    }

    /// Closes the connection idle the longest, to free a descriptor when
    /// the process has none left; returns whether there was one.
    pub(crate) fn shed_one(&self) -> bool {
        self.lock().shed_longest_idle(None, 1) == 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([127, 0, 0, last])
    }

    fn is_shed(registered: &Registered) -> bool {
        registered.conn().shed.load(Ordering::Acquire)
    }

    #[test]
    fn the_longest_idle_connection_gives_way_first() {
        let pause = || std::thread::sleep(Duration::from_millis(5));
        let registry = Registry::new(3, 10);
        let a = registry.admit(ip(1)).unwrap();
        pause();
        let b = registry.admit(ip(1)).unwrap();
        pause();
        let c = registry.admit(ip(2)).unwrap();
        // `a` is busy, so `b`, idle the longest of the rest, gives way.
        let request = a.conn().start_request();
        let d = registry.admit(ip(3)).unwrap();
        assert!(is_shed(&b) && !is_shed(&a) && !is_shed(&c));
        drop(b);
        pause();
        let _e = registry.admit(ip(4)).unwrap();
        assert!(is_shed(&c) && !is_shed(&d));
        drop(c);
        // `a` has just finished its request: `d` has been idle longer.
        drop(request);
        let _f = registry.admit(ip(5)).unwrap();
        assert!(is_shed(&d) && !is_shed(&a));
    }

    #[test]
    fn a_new_connection_is_refused_only_when_none_is_idle() {
        let registry = Registry::new(2, 10);
        let a = registry.admit(ip(1)).unwrap();
        let b = registry.admit(ip(2)).unwrap();
        let _ra = a.conn().start_request();
        let _rb = b.conn().start_request();
        assert_eq!(registry.admit(ip(3)).err(), Some(Refusal::Full));
        drop(a);
        assert!(registry.admit(ip(3)).is_ok());
    }

    #[test]
    fn one_address_gives_way_to_itself_only() {
        let registry = Registry::new(100, 2);
        let a = registry.admit(ip(1)).unwrap();
        let other = registry.admit(ip(2)).unwrap();
        let b = registry.admit(ip(1)).unwrap();
        let _rb = b.conn().start_request();
        let c = registry.admit(ip(1)).unwrap();
        assert!(is_shed(&a) && !is_shed(&other));
        let _rc = c.conn().start_request();
        assert_eq!(registry.admit(ip(1)).err(), Some(Refusal::AddressFull));
        assert!(registry.admit(ip(2)).is_ok());
    }
}
