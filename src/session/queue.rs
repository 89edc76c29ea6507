//! `--max-active`: how many torrents download at once; the rest wait in
//! the order they were given.
//!
//! Every torrent takes a place in line when it is added
//! ([`ActiveQueue::reserve`]), so the order is the order given, whatever
//! order their data checks end in. A torrent with something to download
//! waits for a slot ([`Ticket::enter`]), keeps it while it downloads, and
//! gives it back when complete (seeding does not count) or when it stops;
//! one complete at start leaves the line without taking a slot. The first
//! in line goes first.

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
    /// Whether the torrent at `position` (waiting) may take a slot now:
    /// the slots held plus one for each torrent ahead of it in line (they
    /// go first, even if they are still checking their data) leave room.
    fn may_start(&self, position: usize) -> bool {
        self.max == 0 || self.active + self.waiting.range(..position).count() < self.max
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

/// A torrent's place in line; leaving (dropping it) lets the next one on.
#[derive(Debug)]
pub struct Ticket {
    queue: Arc<ActiveQueue>,
    position: usize,
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if self.queue.lock().waiting.remove(&self.position) {
            // It may have been first in line.
            self.queue.freed.notify_waiters();
        }
    }
}

impl Ticket {
    /// Waits for a slot. Cancel-safe: dropping the future leaves the line.
    pub async fn enter(self) -> ActiveSlot {
        let queue = self.queue.clone();
        loop {
            let freed = queue.freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            {
                let mut s = queue.lock();
                if s.may_start(self.position) {
                    s.waiting.remove(&self.position);
                    s.active += 1;
                    return ActiveSlot {
                        queue: queue.clone(),
                    };
                }
            }
            freed.await;
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

    /// A place in line for the torrent at `position` (its place among the
    /// sources as given).
    pub fn reserve(self: &Arc<Self>, position: usize) -> Ticket {
        self.lock().waiting.insert(position);
        Ticket {
            queue: self.clone(),
            position,
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
        s.waiting.extend([3, 5, 8]);
        assert!(s.may_start(3));
        assert!(s.may_start(5), "a slot for 3, one for 5");
        assert!(!s.may_start(8), "3 and 5 are ahead of it");
        s.active = 1;
        assert!(s.may_start(3));
        assert!(!s.may_start(5), "the one free slot is 3's");
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
        let mut tickets = (0..3).map(|p| q.reserve(p)).collect::<Vec<_>>().into_iter();
        let first = tickets.next().unwrap().enter().await;
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        // Position 2 asks first; position 1 still goes first.
        let (one, two) = (tickets.next().unwrap(), tickets.next().unwrap());
        for (pos, ticket) in [(2usize, two), (1, one)] {
            let tx = tx.clone();
            tokio::spawn(async move {
                let slot = ticket.enter().await;
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
        let held = q.reserve(0).enter().await;
        let (one, two) = (q.reserve(1), q.reserve(2));
        let gave_up = tokio::time::timeout(Duration::from_secs(1), one.enter()).await;
        assert!(gave_up.is_err());
        assert_eq!(q.waiting(), 1, "only 2 is left in line");
        drop(held);
        let next = tokio::time::timeout(Duration::from_secs(1), two.enter()).await;
        assert!(
            next.is_ok(),
            "position 2 is not blocked by the one that left"
        );
        // One complete at start leaves the line without a slot.
        let (three, four) = (q.reserve(3), q.reserve(4));
        drop(next);
        drop(three);
        let go = tokio::time::timeout(Duration::from_secs(1), four.enter()).await;
        assert!(go.is_ok());
    }
}
