//! `--max-active`: how many torrents download at once; the rest wait in
//! the order they were given.
//!
//! A torrent asks for a slot once it knows it has something to download
//! (after checking its data, or at once for a magnet), keeps it while it
//! downloads, and gives it back when complete (seeding does not count) or
//! when it stops. Waiting torrents are served lowest position first.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use tokio::sync::Notify;

/// The slots and the torrents waiting for one (pure state).
#[derive(Debug, Default)]
struct Slots {
    /// Downloads allowed at once; 0 = no limit.
    max: usize,
    /// Slots held now.
    active: usize,
    /// Positions of the torrents waiting.
    waiting: BTreeSet<usize>,
}

impl Slots {
    /// Whether the torrent at `position` (waiting) may take a slot now.
    fn may_start(&self, position: usize) -> bool {
        self.max == 0
            || (self.active < self.max && self.waiting.first().is_none_or(|&p| p >= position))
    }
}

/// The download queue shared by every torrent of the process.
#[derive(Debug)]
pub struct ActiveQueue {
    slots: Mutex<Slots>,
    freed: Notify,
}

/// A download slot; given back when dropped.
#[derive(Debug)]
pub struct ActiveSlot {
    queue: Arc<ActiveQueue>,
}

impl Drop for ActiveSlot {
    fn drop(&mut self) {
        self.queue.lock().active -= 1;
        self.queue.freed.notify_waiters();
    }
}

/// Removes a waiter whose wait was abandoned (the torrent stopped).
struct WaitGuard<'a> {
    queue: &'a ActiveQueue,
    position: usize,
}

impl Drop for WaitGuard<'_> {
    fn drop(&mut self) {
        if self.queue.lock().waiting.remove(&self.position) {
            // It may have been first in line.
            self.queue.freed.notify_waiters();
        }
    }
}

impl ActiveQueue {
    /// A queue allowing `max` downloads at once (0 = no limit).
    pub fn new(max: usize) -> Arc<ActiveQueue> {
        Arc::new(ActiveQueue {
            slots: Mutex::new(Slots {
                max,
                ..Slots::default()
            }),
            freed: Notify::new(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Slots> {
        self.slots.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits for a slot for the torrent at `position` (its place among the
    /// sources as given). Cancel-safe: dropping the future leaves the line.
    pub async fn enter(self: &Arc<Self>, position: usize) -> ActiveSlot {
        self.lock().waiting.insert(position);
        let _guard = WaitGuard {
            queue: self,
            position,
        };
        loop {
            let freed = self.freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            {
                let mut s = self.lock();
                if s.may_start(position) {
                    s.waiting.remove(&position);
                    s.active += 1;
                    return ActiveSlot {
                        queue: self.clone(),
                    };
                }
            }
            freed.await;
        }
    }

    /// Torrents waiting for a slot now.
    pub fn waiting(&self) -> usize {
        self.lock().waiting.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn the_first_in_line_goes_first_when_a_slot_is_free() {
        let mut s = Slots {
            max: 2,
            ..Slots::default()
        };
        s.waiting.extend([3, 5]);
        assert!(s.may_start(3));
        assert!(!s.may_start(5), "3 is ahead of it");
        s.active = 2;
        assert!(!s.may_start(3), "no slot free");
        let unlimited = Slots {
            max: 0,
            active: 100,
            waiting: [1, 2].into(),
        };
        assert!(unlimited.may_start(2));
    }

    #[tokio::test(start_paused = true)]
    async fn waiting_torrents_start_in_order_as_slots_free() {
        let q = ActiveQueue::new(1);
        let first = q.enter(0).await;
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        for pos in [2usize, 1] {
            let (q, tx) = (q.clone(), tx.clone());
            tokio::spawn(async move {
                let slot = q.enter(pos).await;
                tx.send(pos).unwrap();
                tokio::time::sleep(Duration::from_secs(1)).await;
                drop(slot);
            });
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!(q.waiting(), 2);
        assert!(rx.try_recv().is_err(), "both wait while 0 holds the slot");
        drop(first);
        assert_eq!(rx.recv().await, Some(1), "position 1 before 2");
        assert_eq!(rx.recv().await, Some(2));
    }

    #[tokio::test(start_paused = true)]
    async fn a_torrent_that_stops_waiting_leaves_the_line() {
        let q = ActiveQueue::new(1);
        let held = q.enter(0).await;
        let gave_up = tokio::time::timeout(Duration::from_secs(1), q.enter(1)).await;
        assert!(gave_up.is_err());
        assert_eq!(q.waiting(), 0);
        drop(held);
        let next = tokio::time::timeout(Duration::from_secs(1), q.enter(2)).await;
        assert!(
            next.is_ok(),
            "position 2 is not blocked by the one that left"
        );
    }
}
