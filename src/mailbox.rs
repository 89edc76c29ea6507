//! A small bounded queue from any number of senders to one receiver, for
//! what every torrent of a seedbox keeps open but rarely uses: the peers
//! its trackers, DHT lookups and LSD find.
//!
//! Why not `tokio::sync::mpsc`: a bounded tokio channel allocates its
//! first block of 32 slots and a cache-padded header when it is made,
//! about 1.3 KiB before it carries anything, and tens of thousands of idle
//! torrents each kept one per source. A mailbox is one allocation of about
//! 150 bytes (a mutex-guarded `VecDeque` that holds only what is queued and
//! a `Notify`). Same contract as a bounded `mpsc` channel: `send` waits
//! for room, `try_send` does not, `recv` returns `None` once every sender
//! is gone and the queue is empty, and a send fails once the receiver is
//! gone.

use std::collections::VecDeque;
use std::future::poll_fn;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use tokio::sync::Notify;

struct Inner<T> {
    state: Mutex<State<T>>,
    cap: usize,
    senders: AtomicUsize,
    receiver_alive: AtomicBool,
    /// Room was made, or the receiver left.
    room: Notify,
}

struct State<T> {
    queue: VecDeque<T>,
    /// The receiver waiting for a value (woken by a send and by the last
    /// sender leaving). A waker, not a `Notify`, so that waiting costs the
    /// receiver's future nothing: a torrent's loop waits on several
    /// mailboxes at once, all the time.
    waiting: Option<Waker>,
}

impl<T> Inner<T> {
    fn lock(&self) -> std::sync::MutexGuard<'_, State<T>> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Wakes the receiver if it waits.
    fn wake_receiver(&self) {
        let waker = self.lock().waiting.take();
        if let Some(w) = waker {
            w.wake();
        }
    }
}

/// Why a send did not queue its value (given back).
#[derive(Debug, PartialEq, Eq)]
pub enum TrySendError<T> {
    /// The queue holds `cap` values.
    Full(T),
    /// The receiver is gone.
    Closed(T),
}

/// The sending side; clone it for more senders.
pub struct Sender<T>(Arc<Inner<T>>);

/// The receiving side.
pub struct Receiver<T>(Arc<Inner<T>>);

/// A mailbox holding at most `cap` values (at least 1).
pub fn channel<T>(cap: usize) -> (Sender<T>, Receiver<T>) {
    let inner = Arc::new(Inner {
        state: Mutex::new(State {
            queue: VecDeque::new(),
            waiting: None,
        }),
        cap: cap.max(1),
        senders: AtomicUsize::new(1),
        receiver_alive: AtomicBool::new(true),
        room: Notify::new(),
    });
    (Sender(inner.clone()), Receiver(inner))
}

impl<T> Sender<T> {
    /// Queues `value` unless the queue is full or the receiver gone.
    pub fn try_send(&self, value: T) -> Result<(), TrySendError<T>> {
        if !self.0.receiver_alive.load(Ordering::Acquire) {
            return Err(TrySendError::Closed(value));
        }
        let waker = {
            let mut st = self.0.lock();
            if st.queue.len() >= self.0.cap {
                return Err(TrySendError::Full(value));
            }
            st.queue.push_back(value);
            st.waiting.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
        Ok(())
    }

    /// Queues `value`, waiting for room; gives it back once the receiver
    /// is gone.
    pub async fn send(&self, mut value: T) -> Result<(), T> {
        loop {
            // Registered before the attempt, so room made in between is
            // not missed.
            let room = self.0.room.notified();
            tokio::pin!(room);
            room.as_mut().enable();
            match self.try_send(value) {
                Ok(()) => return Ok(()),
                Err(TrySendError::Closed(v)) => return Err(v),
                Err(TrySendError::Full(v)) => value = v,
            }
            room.await;
        }
    }
}

impl<T> Clone for Sender<T> {
    fn clone(&self) -> Self {
        self.0.senders.fetch_add(1, Ordering::AcqRel);
        Sender(self.0.clone())
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        if self.0.senders.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.wake_receiver();
        }
    }
}

impl<T> Receiver<T> {
    /// The next value; `None` once the queue is empty and every sender
    /// is gone.
    pub async fn recv(&mut self) -> Option<T> {
        poll_fn(|cx| self.poll_recv(cx)).await
    }

    /// The next value, or `Pending` (and `cx` woken at the next send or
    /// when the last sender leaves); `Ready(None)` once the queue is
    /// empty and every sender is gone.
    pub fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<T>> {
        let inner = &*self.0;
        let v = {
            let mut st = inner.lock();
            match st.queue.pop_front() {
                Some(v) => Some(v),
                // Read under the lock: the last sender's wake takes it
                // too, so it cannot fall between this test and the waker.
                None if inner.senders.load(Ordering::Acquire) == 0 => return Poll::Ready(None),
                None => {
                    match &mut st.waiting {
                        Some(w) if w.will_wake(cx.waker()) => {}
                        w => *w = Some(cx.waker().clone()),
                    }
                    return Poll::Pending;
                }
            }
        };
        inner.room.notify_one();
        Poll::Ready(v)
    }

    /// The next value if one is queued.
    pub fn try_recv(&mut self) -> Option<T> {
        let v = self.0.lock().queue.pop_front();
        if v.is_some() {
            self.0.room.notify_one();
        }
        v
    }
}

impl<T> Drop for Receiver<T> {
    fn drop(&mut self) {
        self.0.receiver_alive.store(false, Ordering::Release);
        self.0.lock().queue.clear();
        self.0.room.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn values_arrive_in_order_and_recv_ends_when_every_sender_is_gone() {
        let (tx, mut rx) = channel(4);
        let tx2 = tx.clone();
        tx.send(1).await.unwrap();
        tx2.try_send(2).unwrap();
        drop(tx);
        assert_eq!(rx.recv().await, Some(1));
        assert_eq!(rx.recv().await, Some(2));
        tx2.send(3).await.unwrap();
        drop(tx2);
        // Queued before the last sender left: still delivered.
        assert_eq!(rx.recv().await, Some(3));
        assert_eq!(rx.recv().await, None);
    }

    #[tokio::test]
    async fn a_full_mailbox_refuses_try_send_and_send_waits_for_room() {
        let (tx, mut rx) = channel(2);
        tx.try_send(1).unwrap();
        tx.try_send(2).unwrap();
        assert_eq!(tx.try_send(9), Err(TrySendError::Full(9)));
        let waiting = tokio::spawn(async move { tx.send(3).await.map(|()| tx) });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(
            !waiting.is_finished(),
            "send must wait while the queue is full"
        );
        assert_eq!(rx.recv().await, Some(1));
        let tx = tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("room was made")
            .unwrap()
            .unwrap();
        assert_eq!(rx.recv().await, Some(2));
        assert_eq!(rx.recv().await, Some(3));
        drop(tx);
        assert_eq!(rx.recv().await, None);
    }

    #[tokio::test]
    async fn a_send_fails_once_the_receiver_is_gone_also_while_waiting() {
        let (tx, rx) = channel(1);
        tx.try_send(1).unwrap();
        let tx2 = tx.clone();
        let waiting = tokio::spawn(async move { tx2.send(2).await });
        tokio::time::sleep(Duration::from_millis(20)).await;
        drop(rx);
        let r = tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("the waiting send ends")
            .unwrap();
        assert_eq!(r, Err(2));
        assert_eq!(tx.try_send(3), Err(TrySendError::Closed(3)));
    }

    #[tokio::test]
    async fn a_receiver_waiting_wakes_for_a_value_and_for_the_last_sender_leaving() {
        let (tx, mut rx) = channel::<u32>(8);
        let t = tokio::spawn(async move {
            let first = rx.recv().await;
            let second = rx.recv().await;
            (first, second)
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        tx.try_send(7).unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
        drop(tx);
        let got = tokio::time::timeout(Duration::from_secs(5), t)
            .await
            .expect("woken")
            .unwrap();
        assert_eq!(got, (Some(7), None));
    }

    #[test]
    fn a_mailbox_is_far_smaller_than_a_bounded_tokio_channel() {
        // What each idle torrent pays per source: the shared allocation.
        let size = std::mem::size_of::<Inner<Vec<std::net::SocketAddr>>>();
        assert!(size <= 192, "{size} bytes");
    }
}
