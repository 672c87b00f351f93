//! One TCP listener per shard, built with socket2 and handed to glommio.

use std::net::SocketAddr;
use std::os::fd::IntoRawFd;

use socket2::{Domain, Protocol, Socket, Type};

use crate::error::ShardsError;

/// Pending connections the kernel queues per listener before refusing new ones.
pub const LISTEN_BACKLOG_MAX: i32 = 1024;

/// Creates a listening socket on `addr` (IPv4 or IPv6; port 0 asks the OS for a free port) with
/// SO_REUSEADDR and TCP_NODELAY set, and wraps it in a glommio listener.
///
/// Unlike `glommio::net::TcpListener::bind`, it does not set SO_REUSEPORT: each shard owns its
/// port, so a second process (or shard) binding the same port fails here instead of silently
/// sharing connections. The socket is left in blocking mode, as glommio's own `bind` leaves it:
/// glommio's accept sets O_NONBLOCK itself around a first `accept(2)` attempt and then submits an
/// io_uring accept, and some older kernels answer an io_uring accept on an O_NONBLOCK file with
/// EAGAIN instead of waiting (on Linux 6.18 both modes work; the tests exercise the io_uring path).
///
/// Must be called on the executor that will accept on the listener: the listener is bound to
/// the calling executor's reactor. Errors name the address.
pub fn bind_listener(addr: SocketAddr) -> Result<glommio::net::TcpListener, ShardsError> {
    let bind_error = |source: std::io::Error| ShardsError::Bind { addr, source };
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))
        .map_err(bind_error)?;
    socket.set_reuse_address(true).map_err(bind_error)?;
    socket.set_tcp_nodelay(true).map_err(bind_error)?;
    socket.bind(&addr.into()).map_err(bind_error)?;
    socket.listen(LISTEN_BACKLOG_MAX).map_err(bind_error)?;
    // SAFETY: the descriptor comes from a socket that is bound and listening, and ownership moves
    // to the glommio listener (into_raw_fd gives it up here).
    Ok(unsafe { std::os::fd::FromRawFd::from_raw_fd(socket.into_raw_fd()) })
}

/// Prepares an accepted stream for request/response traffic: turns Nagle's algorithm off
/// (TCP_NODELAY), which otherwise adds up to 40 ms to small replies. Errors are returned so the
/// caller can drop the connection.
pub fn configure_stream(stream: &glommio::net::TcpStream) -> std::io::Result<()> {
    stream.set_nodelay(true).map_err(std::io::Error::from)
}
