//! A request body with a size limit. Frames pass through as they arrive (the guest reads the
//! body as a stream, so a 100 MB upload never sits in memory); the first frame past the limit
//! ends the stream with `HttpRequestBodySize` and raises a flag the request handler turns into
//! 413, whatever the guest answered.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use hyper::body::{Body, Bytes, Frame, Incoming, SizeHint};
use wasmtime_wasi_http::Error as HttpError;

pub(crate) struct LimitedBody {
    inner: Incoming,
    seen: u64,
    limit: u64,
    exceeded: Arc<AtomicBool>,
}

impl LimitedBody {
    pub(crate) fn new(inner: Incoming, limit: u64, exceeded: Arc<AtomicBool>) -> LimitedBody {
        LimitedBody {
            inner,
            seen: 0,
            limit,
            exceeded,
        }
    }
}

impl Body for LimitedBody {
    type Data = Bytes;
    type Error = HttpError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, HttpError>>> {
        if self.exceeded.load(Ordering::Relaxed) {
            return Poll::Ready(None);
        }
        let frame = match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(f))) => f,
            Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e.into()))),
            Poll::Ready(None) => return Poll::Ready(None),
            Poll::Pending => return Poll::Pending,
        };
        if let Some(data) = frame.data_ref() {
            self.seen += data.len() as u64;
            if self.seen > self.limit {
                self.exceeded.store(true, Ordering::Relaxed);
                let seen = self.seen;
                return Poll::Ready(Some(Err(HttpError::HttpRequestBodySize(Some(seen)))));
            }
        }
        Poll::Ready(Some(Ok(frame)))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
