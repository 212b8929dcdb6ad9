//! Request bodies with a deadline, and why reading one failed: too long, too slow, or
//! cut short (the client went away or broke the framing), each a different answer.

use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use axum::http::StatusCode;
use bytes::Bytes;
use http_body_util::LengthLimitError;
use hyper::body::{Body, Frame, SizeHint};

use crate::time::{Instant, Sleep};

/// A request body that fails with [`BodyTimedOut`] unless it has arrived in full by a
/// deadline set when its request's headers arrived. The deadline bounds the whole body,
/// so a client trickling a byte at a time is cut off as surely as a silent one.
pub(crate) struct TimedBody<B> {
    inner: B,
    deadline: Instant,
    limit: Duration,
    /// Armed at the first read that has to wait, so bodyless requests set no timer.
    timer: Option<Pin<Box<Sleep>>>,
    timed_out: bool,
}

impl<B> TimedBody<B> {
    /// `inner`, which must arrive within `limit` from now.
    pub(crate) fn new(inner: B, limit: Duration) -> Self {
        TimedBody {
            inner,
            deadline: crate::time::now() + limit,
            limit,
            timer: None,
            timed_out: false,
        }
    }
}

/// The body did not arrive within the body timeout.
#[derive(Debug, thiserror::Error)]
#[error("request body not received within {0:?}")]
pub(crate) struct BodyTimedOut(Duration);

impl<B> Body for TimedBody<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<axum::BoxError>,
{
    type Data = Bytes;
    type Error = axum::BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        if this.timed_out {
            return Poll::Ready(None);
        }
        if let Poll::Ready(frame) = Pin::new(&mut this.inner).poll_frame(cx) {
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        let deadline = this.deadline;
        let timer = this
            .timer
            .get_or_insert_with(|| Box::pin(crate::time::sleep_until(deadline)));
        ready!(timer.as_mut().poll(cx));
        this.timed_out = true;
        Poll::Ready(Some(Err(BodyTimedOut(this.limit).into())))
    }

    fn is_end_stream(&self) -> bool {
        self.timed_out || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The status and message for a body that could not be read whole within `max` bytes:
/// 413 when it grew past `max`, 408 when it came too slowly, and 400 when it was cut
/// short, which a client that disconnects mid-body causes.
pub(crate) fn read_failure(e: &axum::Error, max: usize) -> (StatusCode, String) {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(c) = cause {
        if c.is::<LengthLimitError>() {
            return (
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("{c}; values are limited to {max} bytes"),
            );
        }
        if c.is::<BodyTimedOut>() {
            return (StatusCode::REQUEST_TIMEOUT, c.to_string());
        }
        cause = c.source();
    }
    (
        StatusCode::BAD_REQUEST,
        format!("request body read failed: {e}"),
    )
}
