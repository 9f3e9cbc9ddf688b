//! Ranges of a file written to a cleartext TCP socket with `sendfile(2)`: the bytes go from
//! the page cache to the socket without passing through user space.
//!
//! `sendfile` reads the file as it sends, and a read of a page not in memory waits for the
//! disk, so each call runs on the blocking pool, never on a network thread. It is given a
//! duplicate of the socket's descriptor: if the connection's task is dropped while a call is
//! under way, the call still holds a descriptor of the same socket, never a number the process
//! may meanwhile have given to another file. The socket stays non-blocking (a call sends what
//! the socket buffer takes), and room in it is waited for through the runtime.

use std::fs::File;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;
use std::time::Duration;

use nix::poll::{PollFd, PollFlags, PollTimeout};
use tokio::io::Interest;
use tokio::net::TcpStream;

/// The most one call is asked to send (a call sends at most what the socket buffer takes).
const MOST_PER_CALL: u64 = 16 << 20;

/// Writes bytes `[start, end)` of `file` to `socket`, waiting at most `timeout` for the client
/// to make room each time it has none.
pub async fn send_file(
    socket: &TcpStream,
    file: &Arc<File>,
    start: u64,
    end: u64,
    timeout: Duration,
) -> std::io::Result<()> {
    let duplicate = Arc::new(socket.as_fd().try_clone_to_owned()?);
    let mut offset = start;
    while offset < end {
        wait_for_room(socket, &duplicate, timeout).await?;
        let (out, file) = (Arc::clone(&duplicate), Arc::clone(file));
        let count = (end - offset).min(MOST_PER_CALL) as usize;
        let from = offset;
        let sent = tokio::task::spawn_blocking(move || send_once(&out, &file, from, count))
            .await
            .map_err(std::io::Error::other)?;
        match sent {
            Ok(0) => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "the file became shorter while it was sent",
                ))
            }
            Ok(sent) => offset += sent as u64,
            Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => {
                // The runtime did not make the call, so it still thinks there is room: tell it
                // there is none. Room made before that was cleared would never be announced
                // again, so look once more, without waiting, after clearing.
                let _ = socket.try_io(Interest::WRITABLE, || {
                    Err::<(), _>(std::io::ErrorKind::WouldBlock.into())
                });
                if has_room(&duplicate) {
                    continue;
                }
            }
            Err(error) if error.kind() == std::io::ErrorKind::Interrupted => {}
            Err(error) => return Err(error),
        }
    }
    Ok(())
}

/// Waits until the socket has room, for at most `timeout`. The runtime's announcement of room is
/// not the only signal looked at: after a few milliseconds without one the socket is asked
/// directly. Without that, about one 64 MiB response in twenty stalled until the timeout (an
/// announcement lost between a `sendfile` on the blocking pool and the runtime learning of it;
/// not yet explained), where with it such a stall costs `RECHECK`.
async fn wait_for_room(
    socket: &TcpStream,
    duplicate: &OwnedFd,
    timeout: Duration,
) -> std::io::Result<()> {
    const RECHECK: Duration = Duration::from_millis(10);
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        match tokio::time::timeout(RECHECK, socket.writable()).await {
            Ok(ready) => return ready,
            Err(_) if has_room(duplicate) => return Ok(()),
            Err(_) if tokio::time::Instant::now() >= deadline => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "client did not accept data in time",
                ))
            }
            Err(_) => {}
        }
    }
}

fn send_once(socket: &OwnedFd, file: &File, from: u64, count: usize) -> std::io::Result<usize> {
    let mut offset = i64::try_from(from).map_err(std::io::Error::other)?;
    nix::sys::sendfile::sendfile64(socket, file, Some(&mut offset), count)
        .map_err(std::io::Error::from)
}

/// Whether the socket's buffer has room now.
fn has_room(socket: &OwnedFd) -> bool {
    let mut polled = [PollFd::new(socket.as_fd(), PollFlags::POLLOUT)];
    nix::poll::poll(&mut polled, PollTimeout::ZERO).is_ok_and(|ready| ready > 0)
}
