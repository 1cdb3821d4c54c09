//! A single "newest value wins" slot between a producer (thread or task) and one async consumer.

use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::Notify;

#[derive(Debug)]
struct State<T> {
    value: Option<T>,
    closed: bool,
}

/// Holds at most one value; a `put` replaces a value not yet taken (the caller counts the drop).
#[derive(Debug)]
pub(crate) struct LatestSlot<T> {
    state: Mutex<State<T>>,
    notify: Notify,
}

impl<T> Default for LatestSlot<T> {
    fn default() -> Self {
        Self {
            state: Mutex::new(State {
                value: None,
                closed: false,
            }),
            notify: Notify::new(),
        }
    }
}

impl<T> LatestSlot<T> {
    /// A new empty slot, shared.
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    fn lock(&self) -> MutexGuard<'_, State<T>> {
        // A panic while holding this lock leaves the state consistent (plain assignments).
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Stores `value`; returns `true` when it replaced a value nobody took (a dropped frame).
    /// Callable from any thread, sync or async.
    pub(crate) fn put(&self, value: T) -> bool {
        let replaced = self.lock().value.replace(value).is_some();
        self.notify.notify_one();
        replaced
    }

    /// Marks the slot closed: once empty, [`LatestSlot::recv`] returns `None`.
    #[cfg(test)]
    pub(crate) fn close(&self) {
        self.lock().closed = true;
        self.notify.notify_one();
    }

    /// Takes the value if there is one.
    #[cfg(test)]
    pub(crate) fn try_take(&self) -> Option<T> {
        self.lock().value.take()
    }

    /// Waits for a value. Cancel-safe: a value is only taken when this returns it.
    pub(crate) async fn recv(&self) -> Option<T> {
        loop {
            {
                let mut st = self.lock();
                if let Some(v) = st.value.take() {
                    return Some(v);
                }
                if st.closed {
                    return None;
                }
            }
            // notify_one stores a permit when nobody waits, so a put between the check and
            // this await is not missed.
            self.notify.notified().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn newest_wins_and_replacements_are_reported() {
        let slot = LatestSlot::new();
        assert!(!slot.put(1));
        assert!(slot.put(2));
        assert_eq!(slot.recv().await, Some(2));
        assert_eq!(slot.try_take(), None);
        let s2 = slot.clone();
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(30));
            s2.put(7)
        });
        let got = tokio::time::timeout(Duration::from_secs(5), slot.recv())
            .await
            .expect("woken");
        assert_eq!(got, Some(7));
        assert!(!t.join().expect("thread"));
        slot.close();
        assert_eq!(slot.recv().await, None);
    }

    #[tokio::test]
    async fn cancelled_recv_loses_nothing() {
        let slot = LatestSlot::<u32>::new();
        let r = tokio::time::timeout(Duration::from_millis(20), slot.recv()).await;
        assert!(r.is_err());
        slot.put(5);
        assert_eq!(slot.recv().await, Some(5));
    }
}
