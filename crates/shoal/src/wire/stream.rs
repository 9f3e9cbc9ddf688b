//! A connection's byte stream: plain TCP or TLS over it. One type for both, so that the
//! protocol code is written once; the cost is a branch per read or write. Clients' connections
//! are [`ClientStream`]s (the TLS server side), origin connections [`OriginStream`]s (the TLS
//! client side).

use std::io::IoSlice;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::BytesMut;
use futures_util::FutureExt;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// A TCP connection, in cleartext or under TLS of type `T`.
pub enum Stream<T> {
    /// Cleartext.
    Plain(TcpStream),
    /// TLS (boxed: its state is large, and plain connections should not carry it).
    Tls(Box<T>),
}

/// A client's connection.
pub type ClientStream = Stream<tokio_rustls::server::TlsStream<TcpStream>>;

/// A connection to an origin (or a parent, or a peer).
pub type OriginStream = Stream<tokio_rustls::client::TlsStream<TcpStream>>;

impl<T> Stream<T> {
    /// Whether the connection is encrypted.
    pub fn is_tls(&self) -> bool {
        matches!(self, Stream::Tls(_))
    }
}

impl ClientStream {
    /// Waits until the socket has bytes to read (for TLS, the TCP socket under it: the caller
    /// reads what TLS had buffered with [`ClientStream::try_read_buf`] before waiting).
    pub async fn readable(&self) -> std::io::Result<()> {
        match self {
            ClientStream::Plain(stream) => stream.readable().await,
            ClientStream::Tls(stream) => stream.get_ref().0.readable().await,
        }
    }

    /// Reads what is there without waiting; `WouldBlock` when nothing is.
    ///
    /// Through `poll_read` rather than `TcpStream::try_read_buf`, also in cleartext: a read that
    /// leaves part of the buffer empty has drained the socket, and only `poll_read` remembers
    /// that (tokio clears the edge-triggered readiness on such a short read). The next attempt,
    /// after the response, then knows there is nothing without a `recv` that fails with
    /// `EAGAIN`, one system call saved per request on a keep-alive connection.
    pub fn try_read_buf(&mut self, buf: &mut BytesMut) -> std::io::Result<usize> {
        match self.read_buf(buf).now_or_never() {
            Some(result) => result,
            None => Err(std::io::ErrorKind::WouldBlock.into()),
        }
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> AsyncRead for Stream<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(stream) => Pin::new(stream).poll_read(cx, buf),
            Stream::Tls(stream) => Pin::new(stream).poll_read(cx, buf),
        }
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> AsyncWrite for Stream<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(stream) => Pin::new(stream).poll_write(cx, buf),
            Stream::Tls(stream) => Pin::new(stream).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(stream) => Pin::new(stream).poll_write_vectored(cx, bufs),
            Stream::Tls(stream) => Pin::new(stream).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Stream::Plain(stream) => stream.is_write_vectored(),
            Stream::Tls(stream) => stream.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(stream) => Pin::new(stream).poll_flush(cx),
            Stream::Tls(stream) => Pin::new(stream).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(stream) => Pin::new(stream).poll_shutdown(cx),
            Stream::Tls(stream) => Pin::new(stream).poll_shutdown(cx),
        }
    }
}
