//! `CoalescedWrites`: holds the server's outgoing bytes until the connection next waits for
//! the client, as PostgreSQL does, and then writes them at once. pgwire flushes after
//! several single messages (BindComplete, CommandComplete, ReadyForQuery); over a socket with
//! TCP_NODELAY each flush would be a system call and a packet of its own, so one prepared
//! statement cost four `sendto`s instead of one.
//!
//! Bytes go out before every read (the client only waits for an answer once it has sent what
//! it wanted answered), whenever more than [`WRITE_THROUGH_BYTES`] are held (long results
//! stream), and on shutdown.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Held bytes past which writes go out without waiting for the next read.
const WRITE_THROUGH_BYTES: usize = 64 * 1024;

pub struct CoalescedWrites<S> {
    inner: S,
    held: Vec<u8>,
    /// How much of `held` the socket has taken.
    written: usize,
}

impl<S> CoalescedWrites<S> {
    pub fn new(inner: S) -> Self {
        CoalescedWrites {
            inner,
            held: Vec::new(),
            written: 0,
        }
    }
}

impl<S: AsyncWrite + Unpin> CoalescedWrites<S> {
    /// Writes out everything held, then flushes the socket.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.written < self.held.len() {
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &self.held[self.written..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.written += n;
        }
        self.held.clear();
        self.written = 0;
        Pin::new(&mut self.inner).poll_flush(cx)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for CoalescedWrites<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        ready!(self.poll_drain(cx))?;
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for CoalescedWrites<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.held.len() >= WRITE_THROUGH_BYTES {
            ready!(self.poll_drain(cx))?;
        }
        self.held.extend_from_slice(buf);
        Poll::Ready(Ok(buf.len()))
    }

    /// Held bytes wait for the next read (or shutdown): see the module header.
    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_drain(cx))?;
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    #[tokio::test]
    async fn writes_wait_for_the_next_read_or_shutdown() {
        let (server, mut client) = tokio::io::duplex(1 << 20);
        let mut server = CoalescedWrites::new(server);
        server.write_all(b"one").await.unwrap();
        server.flush().await.unwrap();
        server.write_all(b"two").await.unwrap();
        server.flush().await.unwrap();
        // Nothing has reached the client yet.
        let mut probe = [0u8; 16];
        let early = tokio::time::timeout(
            std::time::Duration::from_millis(50),
            client.read(&mut probe),
        )
        .await;
        assert!(early.is_err(), "bytes left before the server read");
        // The server reads: what it held goes out first, in one piece.
        client.write_all(b"?").await.unwrap();
        let mut question = [0u8; 1];
        server.read_exact(&mut question).await.unwrap();
        let n = client.read(&mut probe).await.unwrap();
        assert_eq!(&probe[..n], b"onetwo");
        // Large output streams without waiting for a read; shutdown sends the rest.
        let big = vec![7u8; 3 * WRITE_THROUGH_BYTES];
        server.write_all(&big).await.unwrap();
        server.write_all(b"tail").await.unwrap();
        server.shutdown().await.unwrap();
        let mut all = Vec::new();
        client.read_to_end(&mut all).await.unwrap();
        assert_eq!(all.len(), big.len() + 4);
        assert!(all.ends_with(b"tail"));
    }
}
