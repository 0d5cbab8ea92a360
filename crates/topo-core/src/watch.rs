//! [`WatchStream`]: the stream half of a watch, with the contract enforced in one place.

use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll};

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
/// Backends build it with [`WatchStream::new`] from any stream; the wrapper adds cancellation
/// and guarantees the final error, so every backend behaves the same at the edges.
pub struct WatchStream<T> {
    inner: Option<BoxStream<'static, Result<T>>>,
    cancel: CancellationToken,
    cancelled: Pin<Box<WaitForCancellationFutureOwned>>,
    path: String,
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
        }
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
}
