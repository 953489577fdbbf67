//! `FrameGuard`: checks the length of every frontend message before pgwire's decoder sees it.
//! A length under 4 or over the configured limit is answered with a FATAL 08P01 ErrorResponse
//! and the connection is closed, so that a hostile frame can neither crash the decoder nor make
//! the server buffer a gigabyte.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Startup packets are small; PostgreSQL caps them at 10000 bytes.
const MAX_STARTUP_LEN: usize = 10_000;

/// An ErrorResponse frame, for refusing a client outside pgwire's message handling.
pub(crate) fn error_frame(severity: &str, code: &str, message: &str) -> Vec<u8> {
    let mut fields = Vec::new();
    for (tag, value) in [
        (b'S', severity),
        (b'V', severity),
        (b'C', code),
        (b'M', message),
    ] {
        fields.push(tag);
        fields.extend_from_slice(value.as_bytes());
        fields.push(0);
    }
    fields.push(0);
    let mut frame = vec![b'E'];
    frame.extend_from_slice(&((fields.len() + 4) as i32).to_be_bytes());
    frame.extend_from_slice(&fields);
    frame
}

enum Phase {
    /// Reading a message header; `have` bytes of it so far.
    Header { have: usize },
    /// Skipping the body of an accepted message.
    Body { remaining: usize },
}

pub struct FrameGuard<S> {
    inner: S,
    /// Startup-phase messages have no type byte.
    untyped: bool,
    header: [u8; 5],
    phase: Phase,
    max_len: usize,
    /// A rejection waiting to be written; after it, reads end the connection.
    rejection: Option<(Vec<u8>, usize)>,
}

impl<S> FrameGuard<S> {
    pub fn new(inner: S, max_len: usize) -> Self {
        FrameGuard {
            inner,
            untyped: true,
            header: [0; 5],
            phase: Phase::Header { have: 0 },
            max_len,
            rejection: None,
        }
    }

    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    fn header_len(&self) -> usize {
        if self.untyped {
            4
        } else {
            5
        }
    }

    /// Feeds newly read bytes; returns how many are acceptable (all, unless a bad header
    /// starts inside them).
    fn scan(&mut self, bytes: &[u8]) -> usize {
        let mut at = 0;
        while at < bytes.len() {
            let need = self.header_len();
            match &mut self.phase {
                Phase::Body { remaining } => {
                    let take = (*remaining).min(bytes.len() - at);
                    *remaining -= take;
                    at += take;
                    if *remaining == 0 {
                        self.phase = Phase::Header { have: 0 };
                    }
                }
                Phase::Header { have } => {
                    let take = (need - *have).min(bytes.len() - at);
                    self.header[*have..*have + take].copy_from_slice(&bytes[at..at + take]);
                    *have += take;
                    if *have < need {
                        return bytes.len();
                    }
                    let start = need - 4;
                    let len = i32::from_be_bytes([
                        self.header[start],
                        self.header[start + 1],
                        self.header[start + 2],
                        self.header[start + 3],
                    ]);
                    let limit = if self.untyped {
                        MAX_STARTUP_LEN
                    } else {
                        self.max_len
                    };
                    let header_start = (at + take).saturating_sub(need);
                    if len < 4 {
                        self.reject(format!("invalid message length {len}"));
                        return header_start;
                    }
                    if len as usize > limit {
                        self.reject(format!(
                            "message of {len} bytes exceeds the limit of {limit} bytes"
                        ));
                        return header_start;
                    }
                    at += take;
                    let body = len as usize - 4;
                    if self.untyped {
                        // SSLRequest, GSSENCRequest and CancelRequest are also untyped, and
                        // only the StartupMessage (protocol 3.x) switches to typed messages.
                        let code = if body >= 4 && at + 4 <= bytes.len() {
                            Some(u32::from_be_bytes([
                                bytes[at],
                                bytes[at + 1],
                                bytes[at + 2],
                                bytes[at + 3],
                            ]))
                        } else {
                            None
                        };
                        if code.map(|c| c >> 16 == 3).unwrap_or(true) {
                            self.untyped = false;
                        }
                    }
                    self.phase = if body == 0 {
                        Phase::Header { have: 0 }
                    } else {
                        Phase::Body { remaining: body }
                    };
                }
            }
        }
        bytes.len()
    }

    fn reject(&mut self, message: String) {
        tracing::warn!(%message, "closing connection on a malformed frame");
        self.rejection = Some((error_frame("FATAL", "08P01", &message), 0));
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for FrameGuard<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if let Some((frame, written)) = &mut this.rejection {
            while *written < frame.len() {
                match Pin::new(&mut this.inner).poll_write(cx, &frame[*written..]) {
                    Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => return Poll::Ready(Ok(())),
                    Poll::Ready(Ok(n)) => *written += n,
                    Poll::Pending => return Poll::Pending,
                }
            }
            let _ = Pin::new(&mut this.inner).poll_flush(cx);
            // End of stream: pgwire drops the connection.
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                let new = buf.filled()[before..].to_vec();
                let ok = this.scan(&new);
                if ok < new.len() {
                    buf.set_filled(before + ok);
                    if ok == 0 {
                        // Nothing valid to hand over: write the rejection now.
                        return Pin::new(this).poll_read(cx, buf);
                    }
                }
                Poll::Ready(Ok(()))
            }
            other => other,
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for FrameGuard<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn typed(len: i32) -> Vec<u8> {
        let mut v = vec![b'Q'];
        v.extend_from_slice(&len.to_be_bytes());
        v
    }

    #[test]
    fn accepts_well_formed_and_rejects_short_or_huge_lengths() {
        let mut g = FrameGuard::new((), 1024);
        let mut startup = 8i32.to_be_bytes().to_vec();
        startup.extend_from_slice(&(3u32 << 16).to_be_bytes());
        assert_eq!(g.scan(&startup), 8);
        let mut q = typed(6);
        q.extend_from_slice(b"x\0");
        assert_eq!(g.scan(&q), q.len());
        assert!(g.rejection.is_none());
        assert_eq!(g.scan(&typed(3)), 0);
        assert!(g.rejection.is_some());

        let mut g = FrameGuard::new((), 1024);
        g.untyped = false;
        assert_eq!(g.scan(&typed(1 << 30)), 0);
        assert!(g.rejection.is_some());
    }

    #[test]
    fn headers_split_across_reads() {
        let mut g = FrameGuard::new((), 1024);
        g.untyped = false;
        let mut q = typed(9);
        q.extend_from_slice(b"abcd\0");
        for chunk in q.chunks(2) {
            assert_eq!(g.scan(chunk), chunk.len());
        }
        assert!(matches!(g.phase, Phase::Header { have: 0 }));
    }
}
