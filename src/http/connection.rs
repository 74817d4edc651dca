//! One client connection's bounds, below actix's HTTP/1 dispatcher: how many connections
//! are open at once, and how much of a connection's answers may wait unsent.
//!
//! actix reads and answers pipelined requests as fast as they arrive, and keeps every
//! answer the client has not read in its write buffer, without a limit: 48 connections
//! each sending 5,000 `GET /v1/health` and reading nothing held a gigabyte. [`Paced`] wraps
//! the socket the dispatcher reads and writes, and stops the reads while more than
//! [`UNSENT_MAX`] bytes of answers are waiting: no new request is read, so no new answer is
//! made, until the client reads. The requests it has not read wait in the kernel's socket
//! buffer, where the client's own sending stops when it is full.
//!
//! [`Connections`] counts the open connections; past `HTTP_MAX_CONNECTIONS` a new one is
//! answered `503` and closed at once, before any request of its is read.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// Bytes of answers a connection may have waiting unsent (beyond the kernel's
/// [`SEND_BUFFER`]) before its requests stop being read.
pub const UNSENT_MAX: usize = 16 * 1024;

/// The kernel's send buffer of a connection (`SO_SNDBUF`; Linux doubles it for its own
/// bookkeeping). Left to the kernel, it grows to `net.ipv4.tcp_wmem`'s maximum (4 MiB here)
/// for a client that does not read, so a connection was answered thousands of pipelined
/// requests before [`UNSENT_MAX`] could apply: 48 connections pipelining `GET /v1/health`
/// unread kept `/v1/live` waiting 26–85 ms in the flood's first second (release binary);
/// with this and [`UNSENT_MAX`] at 16 KiB, 3.6–5.0 ms. Answers to events are tens of
/// bytes; the cost is for large answers over a long link (the documentation page's
/// assets): about 32 KiB per round trip.
pub const SEND_BUFFER: usize = 16 * 1024;

/// Bytes of requests read past an unanswered request head before reading stops until the
/// next answer is written (a body being read by its handler is not limited): a few dozen
/// pipelined probes, rather than the thousands actix would otherwise decode and queue at
/// once, each holding its own request.
const READ_AHEAD: usize = 1024;

/// What a connection's handlers tell its socket: whether one is reading a request body.
#[derive(Debug, Default)]
pub struct Pacing {
    bodies: AtomicUsize,
}

impl Pacing {
    /// Marks a body being read until the guard is dropped: its bytes are read as the
    /// handler takes them, not held back until an answer is written.
    pub fn reading_body(self: &Arc<Self>) -> BodyGuard {
        self.bodies.fetch_add(1, Relaxed);
        BodyGuard(self.clone())
    }
}

/// See [`Pacing::reading_body`].
#[derive(Debug)]
pub struct BodyGuard(Arc<Pacing>);

impl Drop for BodyGuard {
    fn drop(&mut self) {
        self.0.bodies.fetch_sub(1, Relaxed);
    }
}

/// The open connections, against `HTTP_MAX_CONNECTIONS`.
#[derive(Debug)]
pub struct Connections {
    open: AtomicUsize,
    max: usize,
}

impl Connections {
    /// A count with room for `max` connections.
    pub fn new(max: usize) -> Arc<Self> {
        Arc::new(Self {
            open: AtomicUsize::new(0),
            max,
        })
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.open.load(Relaxed)
    }

    /// A place for one more connection, or `None` when all are taken.
    fn enter(self: &Arc<Self>) -> Option<Slot> {
        let taken = self
            .open
            .fetch_update(Relaxed, Relaxed, |n| (n < self.max).then_some(n + 1));
        taken.is_ok().then(|| Slot(self.clone()))
    }
}

/// One connection's place in [`Connections`], given back when the connection ends.
#[derive(Debug)]
struct Slot(Arc<Connections>);

impl Drop for Slot {
    fn drop(&mut self) {
        if self.0.open.fetch_sub(1, Relaxed) == 1 {
            // The last connection has gone: what the burst used can go back.
            crate::memory::release_free_memory();
        }
    }
}

/// The answer to a connection past the limit, written straight to the socket.
const REFUSAL: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\n\
    content-type: application/json\r\nretry-after: 1\r\nconnection: close\r\n\
    content-length: 45\r\n\r\n{\"error\":\"too many connections; retry later\"}";

/// How long a refused connection's request is read and thrown away before the socket is
/// closed, so that the close does not reset the connection before the client has read its
/// `503`.
const REFUSAL_LINGER: std::time::Duration = std::time::Duration::from_millis(500);

/// A connection's place among the open ones, held for as long as the connection is open
/// (see [`Paced::new`]).
#[derive(Debug)]
pub struct Ticket(Slot);

/// Takes a place for `io` in `connections`, or answers it `503` and gives it back as an
/// error (the connection is then closed).
pub async fn admit(
    io: TcpStream,
    connections: &Arc<Connections>,
) -> io::Result<(TcpStream, Ticket)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    match connections.enter() {
        Some(slot) => {
            // Best effort: a socket that refuses keeps the kernel's own size.
            let _ = socket2::SockRef::from(&io).set_send_buffer_size(SEND_BUFFER);
            Ok((io, Ticket(slot)))
        }
        None => {
            let mut io = io;
            let refuse = async {
                io.write_all(REFUSAL).await?;
                io.shutdown().await?;
                let mut sink = [0u8; 1024];
                while io.read(&mut sink).await? > 0 {}
                io::Result::Ok(())
            };
            let _ = tokio::time::timeout(REFUSAL_LINGER, refuse).await;
            Err(io::Error::other("too many connections"))
        }
    }
}

/// What [`Paced`] wraps: a stream that can say when its socket takes writes again.
pub trait Socket: AsyncRead + AsyncWrite + Unpin {
    /// Ready once the socket under it can be written (and registers `cx` until then).
    fn poll_write_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>>;
}

impl Socket for TcpStream {
    fn poll_write_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        TcpStream::poll_write_ready(self, cx)
    }
}

/// HTTPS: paced above TLS, where the requests are plain text.
impl Socket for tokio_rustls::server::TlsStream<TcpStream> {
    fn poll_write_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_ref().0.poll_write_ready(cx)
    }
}

/// A client's socket that is not read while too much of its answers waits unsent, nor
/// far past a request it has not answered yet.
#[derive(Debug)]
pub struct Paced<IO = TcpStream> {
    io: IO,
    /// Bytes the last write left unsent (what the dispatcher still holds for the client).
    unsent: usize,
    /// Bytes read since the last answer was written.
    ahead: usize,
    /// Whether those bytes hold a whole request head (`\r\n\r\n`), i.e. a request the
    /// dispatcher can answer; until then a long head is read on.
    head: bool,
    /// The last three bytes read, to find a head's end across reads.
    tail: [u8; 3],
    /// A read was refused until the next write, which must then wake the dispatcher.
    starved: bool,
    pacing: Arc<Pacing>,
    _slot: Slot,
}

impl<IO> Paced<IO> {
    /// Paces `io`, admitted with `ticket`.
    pub fn new(io: IO, ticket: Ticket) -> Self {
        Self {
            io,
            unsent: 0,
            ahead: 0,
            head: false,
            tail: [0; 3],
            starved: false,
            pacing: Arc::default(),
            _slot: ticket.0,
        }
    }

    /// What the connection's handlers reach through `HttpRequest::conn_data`.
    pub fn pacing(&self) -> Arc<Pacing> {
        self.pacing.clone()
    }

    /// Notes `bytes`, just read, in the read-ahead count.
    fn note_read(&mut self, bytes: &[u8]) {
        self.ahead += bytes.len();
        if bytes.is_empty() {
            return;
        }
        if !self.head {
            // A head's end within `bytes`, or begun in the last bytes of the read before.
            let mut edge = [0u8; 6];
            let first = bytes.len().min(3);
            edge[..3].copy_from_slice(&self.tail);
            edge[3..3 + first].copy_from_slice(&bytes[..first]);
            let end = b"\r\n\r\n";
            self.head = edge[..3 + first].windows(4).any(|w| w == end)
                || bytes.windows(4).any(|w| w == end);
        }
        let keep = bytes.len().min(3);
        self.tail.rotate_left(keep);
        self.tail[3 - keep..].copy_from_slice(&bytes[bytes.len() - keep..]);
    }

    /// Notes a write that left `unsent` bytes behind; wakes the dispatcher if reads were
    /// waiting for it.
    fn note_write(&mut self, cx: &mut Context<'_>, wrote: usize, unsent: usize) {
        self.unsent = unsent;
        if wrote > 0 {
            self.ahead = 0;
            self.head = false;
        }
        if self.starved && wrote > 0 {
            // The reads stopped without asking the socket to wake us for them: ask again.
            self.starved = false;
            cx.waker().wake_by_ref();
        }
    }
}

impl<IO: Socket> AsyncRead for Paced<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.pacing.bodies.load(Relaxed) > 0 {
            // A body its handler takes is read as it arrives (the handler's own pace), and
            // its bytes are no request heads to look for.
            return Pin::new(&mut this.io).poll_read(cx, buf);
        }
        if this.unsent > UNSENT_MAX {
            // Woken when the client has read some: the dispatcher then writes.
            this.starved = true;
            if this.io.poll_write_ready(cx).is_pending() {
                return Poll::Pending;
            }
        }
        if this.head && this.ahead >= READ_AHEAD {
            // Answer what was read first; the next write wakes the dispatcher.
            this.starved = true;
            return Poll::Pending;
        }
        let room = READ_AHEAD.saturating_sub(this.ahead).max(512);
        let mut part = buf.take(room);
        let result = Pin::new(&mut this.io).poll_read(cx, &mut part);
        let n = part.filled().len();
        if let Poll::Ready(Ok(())) = &result {
            // SAFETY: the read filled (so initialised) these `n` bytes of `buf`'s unfilled
            // part, which `part` views.
            unsafe { buf.assume_init(n) };
            buf.advance(n);
            let filled = buf.filled();
            this.note_read(&filled[filled.len() - n..]);
        }
        result
    }
}

impl<IO: Socket> AsyncWrite for Paced<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let result = Pin::new(&mut this.io).poll_write(cx, buf);
        match &result {
            Poll::Ready(Ok(n)) => this.note_write(cx, *n, buf.len() - n),
            Poll::Pending => this.note_write(cx, 0, buf.len()),
            Poll::Ready(Err(_)) => {}
        }
        result
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}
