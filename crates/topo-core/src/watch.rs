//! [`WatchStream`]: the stream half of a watch, with the contract enforced in one place.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::hash::Hash;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use futures::stream::BoxStream;
use futures::{FutureExt, Stream, StreamExt};
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

use crate::error::{Result, TopoError};

/// The changes of a watch, as a [`Stream`] of `Result<T>`.
///
/// The contract (Vitess's, kept word for word where it matters):
/// - values may be coalesced (an intermediate value skipped) or repeated; only convergence to
///   the latest value is promised;
/// - an `Err` item is always the last item: after it the stream ends;
/// - the stream never ends without an `Err` item first. A deleted file ends a file watch with
///   `NoNode`; [`WatchStream::cancel`] ends it with `Interrupted`; a backend that loses the
///   watch ends it with its error;
/// - dropping the stream cancels the watch and frees its resources in the backend.
///
/// Backends build it with [`WatchStream::new`] from any stream, or with
/// [`WatchStream::coalescing`], whose channel keeps only the latest value per key so a reader
/// that falls behind costs bounded memory. The wrapper adds cancellation and guarantees the
/// final error, so every backend behaves the same at the edges.
pub struct WatchStream<T> {
    inner: Option<BoxStream<'static, Result<T>>>,
    cancel: CancellationToken,
    cancelled: Pin<Box<WaitForCancellationFutureOwned>>,
    path: String,
    backlog: Option<Arc<dyn Fn() -> usize + Send + Sync>>,
}

impl<T> WatchStream<T> {
    /// Wraps a backend's change stream for the watch on `path` (relative path, used in the
    /// final error's message).
    pub fn new(
        path: impl Into<String>,
        inner: impl Stream<Item = Result<T>> + Send + 'static,
    ) -> Self {
        let cancel = CancellationToken::new();
        WatchStream {
            inner: Some(inner.boxed()),
            cancelled: Box::pin(cancel.clone().cancelled_owned()),
            cancel,
            path: path.into(),
            backlog: None,
        }
    }

    /// A watch fed through a coalescing channel: the sender keeps, per key, only the latest
    /// item not yet read (file watches use one key, recursive watches the path), so the
    /// backlog is bounded by the number of keys, however many changes happen while nobody
    /// reads. Items come in the order of their sends, a replaced item taking the place of
    /// its replacement (never an earlier one's, which would let it overtake changes of other
    /// keys made before it). An error sent with [`WatchSender::fail`] comes after every
    /// queued item.
    pub fn coalescing<K>(path: impl Into<String>) -> (WatchSender<K, T>, Self)
    where
        K: Hash + Eq + Clone + Send + 'static,
        T: Send + 'static,
    {
        let chan = Arc::new(Chan {
            state: Mutex::new(ChanState {
                order: VecDeque::new(),
                latest: HashMap::new(),
                sent: 0,
                error: None,
                sender_gone: false,
                receiver_gone: false,
                waker: None,
            }),
            gone: tokio::sync::Notify::new(),
        });
        let backlog = {
            let chan = chan.clone();
            Arc::new(move || chan.lock().latest.len()) as Arc<dyn Fn() -> usize + Send + Sync>
        };
        let mut stream = WatchStream::new(path, Receiver { chan: chan.clone() });
        stream.backlog = Some(backlog);
        (WatchSender { chan }, stream)
    }

    /// Makes `parent` end this watch too (a closed connection ends all its watches with
    /// `Interrupted`). Call it before handing out [`WatchStream::canceller`].
    pub fn cancelled_with(mut self, parent: &CancellationToken) -> Self {
        self.cancel = parent.child_token();
        self.cancelled = Box::pin(self.cancel.clone().cancelled_owned());
        self
    }

    /// How many items wait unread in the stream's channel, for watches built with
    /// [`WatchStream::coalescing`] (`None` for others).
    pub fn queued(&self) -> Option<usize> {
        self.backlog.as_ref().map(|len| len())
    }

    /// Stops the watch: the stream then yields `Err(Interrupted)` and ends. Cancelling
    /// again is harmless.
    pub fn cancel(&self) {
        self.cancel.cancel();
    }

    /// A token that cancels this watch from elsewhere (another task) when cancelled.
    pub fn canceller(&self) -> CancellationToken {
        self.cancel.clone()
    }

    /// The watched path.
    pub fn path(&self) -> &str {
        &self.path
    }
}

impl<T> Stream for WatchStream<T> {
    type Item = Result<T>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        let Some(inner) = this.inner.as_mut() else {
            return Poll::Ready(None);
        };
        if this.cancelled.poll_unpin(cx).is_ready() {
            this.inner = None;
            return Poll::Ready(Some(Err(TopoError::Interrupted(this.path.clone()))));
        }
        match inner.poll_next_unpin(cx) {
            Poll::Ready(Some(Ok(item))) => Poll::Ready(Some(Ok(item))),
            Poll::Ready(Some(Err(err))) => {
                this.inner = None;
                Poll::Ready(Some(Err(err)))
            }
            Poll::Ready(None) => {
                // A backend stream that ends on its own still owes the caller a final error.
                this.inner = None;
                Poll::Ready(Some(Err(TopoError::Interrupted(this.path.clone()))))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

struct ChanState<K, T> {
    /// Unread sends, oldest first, by number and key; a send whose key has a later one
    /// since is stale and skipped.
    order: VecDeque<(u64, K)>,
    /// The latest unread item of each key, with its send's number.
    latest: HashMap<K, (u64, T)>,
    /// Sends so far (the next send's number).
    sent: u64,
    error: Option<TopoError>,
    sender_gone: bool,
    receiver_gone: bool,
    waker: Option<Waker>,
}

struct Chan<K, T> {
    state: Mutex<ChanState<K, T>>,
    /// Woken when the stream is dropped.
    gone: tokio::sync::Notify,
}

impl<K, T> Chan<K, T> {
    fn lock(&self) -> MutexGuard<'_, ChanState<K, T>> {
        // Every update of the state is a few field writes that cannot panic halfway.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The sending half of a [`WatchStream::coalescing`] channel.
pub struct WatchSender<K, T> {
    chan: Arc<Chan<K, T>>,
}

impl<K: Hash + Eq + Clone, T> WatchSender<K, T> {
    /// Queues `item` as the latest of `key`, replacing an unread one. False when the
    /// stream was dropped or the watch already failed (the watcher can be forgotten).
    pub fn send(&self, key: K, item: T) -> bool {
        let mut st = self.chan.lock();
        if st.receiver_gone || st.error.is_some() {
            return false;
        }
        let n = st.sent;
        st.sent += 1;
        st.latest.insert(key.clone(), (n, item));
        st.order.push_back((n, key));
        // Stale sends are dropped once they are as many as the live ones, so the backlog
        // stays bounded by the number of keys.
        if st.order.len() > 2 * st.latest.len() + 16 {
            let ChanState { order, latest, .. } = &mut *st;
            order.retain(|(n, k)| latest.get(k).is_some_and(|(m, _)| m == n));
        }
        if let Some(w) = st.waker.take() {
            w.wake();
        }
        true
    }

    /// Ends the watch with `error`, delivered after the queued items; later sends are
    /// refused.
    pub fn fail(&self, error: TopoError) {
        let mut st = self.chan.lock();
        if st.error.is_none() {
            st.error = Some(error);
        }
        if let Some(w) = st.waker.take() {
            w.wake();
        }
    }

    /// True once the stream was dropped.
    pub fn is_closed(&self) -> bool {
        self.chan.lock().receiver_gone
    }

    /// Returns once the stream was dropped (for producers that should then stop).
    pub async fn closed(&self) {
        loop {
            let notified = self.chan.gone.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.is_closed() {
                return;
            }
            notified.await;
        }
    }
}

impl<K, T> Drop for WatchSender<K, T> {
    fn drop(&mut self) {
        let mut st = self.chan.lock();
        st.sender_gone = true;
        if let Some(w) = st.waker.take() {
            w.wake();
        }
    }
}

impl<K, T> fmt::Debug for WatchSender<K, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WatchSender").finish_non_exhaustive()
    }
}

/// The receiving half of a coalescing channel, as a stream.
struct Receiver<K, T> {
    chan: Arc<Chan<K, T>>,
}

impl<K: Hash + Eq, T> Stream for Receiver<K, T> {
    type Item = Result<T>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let mut st = self.chan.lock();
        while let Some((n, key)) = st.order.pop_front() {
            if let Entry::Occupied(latest) = st.latest.entry(key) {
                if latest.get().0 == n {
                    return Poll::Ready(Some(Ok(latest.remove().1)));
                }
            }
        }
        if let Some(e) = st.error.take() {
            st.sender_gone = true;
            return Poll::Ready(Some(Err(e)));
        }
        if st.sender_gone {
            return Poll::Ready(None);
        }
        st.waker = Some(cx.waker().clone());
        Poll::Pending
    }
}

impl<K, T> Drop for Receiver<K, T> {
    fn drop(&mut self) {
        let mut st = self.chan.lock();
        st.receiver_gone = true;
        st.order.clear();
        st.latest.clear();
        drop(st);
        self.chan.gone.notify_waiters();
    }
}

impl<T> fmt::Debug for WatchStream<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WatchStream")
            .field("path", &self.path)
            .field("ended", &self.inner.is_none())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn error_is_last_and_cancel_interrupts() {
        let items = futures::stream::iter(vec![Ok(1), Err(TopoError::NoNode("/f".into())), Ok(2)]);
        let s = WatchStream::new("/f", items);
        let got: Vec<_> = s.collect().await;
        assert_eq!(got, vec![Ok(1), Err(TopoError::NoNode("/f".into()))]);

        let s = WatchStream::new("/g", futures::stream::pending::<Result<i32>>());
        s.cancel();
        s.cancel();
        let got: Vec<_> = s.collect().await;
        assert_eq!(got, vec![Err(TopoError::Interrupted("/g".into()))]);

        let s = WatchStream::new("/h", futures::stream::iter(vec![Ok(7)]));
        let got: Vec<_> = s.collect().await;
        assert_eq!(got, vec![Ok(7), Err(TopoError::Interrupted("/h".into()))]);
    }

    /// A reader that never reads while 100,000 changes of 10 keys happen holds at most one
    /// item per key, then reads each key's latest value and the final error last.
    #[tokio::test]
    async fn coalescing_channel_is_bounded_and_error_is_last() {
        let (tx, mut s) = WatchStream::<(u32, u32)>::coalescing::<u32>("/p");
        for i in 0..100_000u32 {
            assert!(tx.send(i % 10, (i % 10, i)));
        }
        assert_eq!(s.queued(), Some(10));
        tx.fail(TopoError::NoNode("/p".into()));
        assert!(!tx.send(0, (0, 0)), "no send after the failure");
        let mut got = Vec::new();
        while let Some(item) = s.next().await {
            got.push(item);
        }
        let want: Vec<Result<(u32, u32)>> = (0..10)
            .map(|k| Ok((k, 99_990 + k)))
            .chain([Err(TopoError::NoNode("/p".into()))])
            .collect();
        assert_eq!(got, want);

        // A dropped stream refuses sends; a dropped sender ends the stream (Interrupted).
        let (tx, s) = WatchStream::<u8>::coalescing::<()>("/q");
        drop(s);
        assert!(!tx.send((), 1) && tx.is_closed());
        let (tx, s) = WatchStream::<u8>::coalescing::<()>("/r");
        tx.send((), 1);
        drop(tx);
        let got: Vec<_> = s.collect().await;
        assert_eq!(got, vec![Ok(1), Err(TopoError::Interrupted("/r".into()))]);
    }

    /// A replaced item is delivered in its replacement's place: it never overtakes a change
    /// of another key sent before it (a recursive watcher that sees a file's latest value
    /// has seen every change sent before it, a deletion included), and stale sends do not
    /// pile up while nobody reads.
    #[tokio::test]
    async fn coalescing_keeps_the_order_of_latest_sends() {
        let (tx, mut s) = WatchStream::<(&str, u32)>::coalescing::<&str>("/o");
        tx.send("a", ("a", 1));
        tx.send("b", ("b", 1));
        assert_eq!(s.next().await.unwrap().unwrap(), ("a", 1));
        tx.send("a", ("a", 2));
        tx.send("b", ("b", 2));
        assert_eq!(s.next().await.unwrap().unwrap(), ("a", 2));
        assert_eq!(s.next().await.unwrap().unwrap(), ("b", 2));

        for i in 0..100_000u32 {
            tx.send(["a", "b"][i as usize % 2], ("x", i));
        }
        assert!(tx.chan.lock().order.len() <= 2 * 2 + 17);
        assert_eq!(s.next().await.unwrap().unwrap(), ("x", 99_998));
        assert_eq!(s.next().await.unwrap().unwrap(), ("x", 99_999));
    }

    /// A parent token ends the watch with `Interrupted`.
    #[tokio::test]
    async fn parent_token_interrupts() {
        let parent = CancellationToken::new();
        let s = WatchStream::new("/c", futures::stream::pending::<Result<i32>>())
            .cancelled_with(&parent);
        parent.cancel();
        let got: Vec<_> = s.collect().await;
        assert_eq!(got, vec![Err(TopoError::Interrupted("/c".into()))]);
    }
}
