//! The TCP side of the proxy (tokio): accepts connections, parses pipelined
//! commands, runs them in order and writes their replies in order, batched.

use std::future::Future;
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

use crate::client::Table;

use super::commands::{execute, Action};
use super::resp::{Parser, Reply};

/// Most client connections served at once (Redis's default `maxclients`);
/// further connections get `-ERR max number of clients reached` and are
/// closed.
pub const CONNECTIONS_MAX: usize = 10_000;
/// Bytes read from a socket at a time.
pub const READ_CHUNK_BYTES: usize = 16 * 1024;
/// Replies are written once every complete command in the read buffer has
/// run, or as soon as this many reply bytes are pending.
pub const REPLY_FLUSH_BYTES: usize = 64 * 1024;

/// Serves `listener` until `shutdown` completes. Each connection runs its
/// commands one after another (Redis's per-client ordering); connections
/// run concurrently.
pub async fn serve(listener: TcpListener, table: Table, shutdown: impl Future<Output = ()>) {
    let slots = Arc::new(Semaphore::new(CONNECTIONS_MAX));
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            () = &mut shutdown => return,
            accepted = listener.accept() => accepted,
        };
        let (mut stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                // Out of file descriptors and the like: keep serving the
                // connections we have and try again shortly.
                tracing::warn!(%error, "redis-proxy: accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tokio::spawn(async move {
                let _ = stream
                    .write_all(b"-ERR max number of clients reached\r\n")
                    .await;
            });
            continue;
        };
        let table = table.clone();
        tokio::spawn(async move {
            if let Err(error) = serve_connection(stream, &table).await {
                tracing::debug!(%peer, %error, "redis-proxy: connection ended");
            }
            drop(slot);
        });
    }
}

/// Reads, parses and runs one client's commands until it closes, sends
/// QUIT, or breaks the protocol.
pub async fn serve_connection(mut stream: TcpStream, table: &Table) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    let mut parser = Parser::new();
    let mut buffer: Vec<u8> = Vec::with_capacity(READ_CHUNK_BYTES);
    let mut out: Vec<u8> = Vec::with_capacity(READ_CHUNK_BYTES);
    loop {
        let mut start = 0;
        loop {
            let parsed = match parser.parse(&buffer[start..]) {
                Ok(parsed) => parsed,
                Err(error) => {
                    Reply::error(format!("ERR Protocol error: {error}")).encode(&mut out);
                    stream.write_all(&out).await?;
                    return Ok(());
                }
            };
            start += parsed.consumed;
            let Some(args) = parsed.command else { break };
            match execute(table, &args).await {
                Action::Reply(reply) => reply.encode(&mut out),
                Action::ReplyAndClose(reply) => {
                    reply.encode(&mut out);
                    stream.write_all(&out).await?;
                    return Ok(());
                }
            }
            if out.len() >= REPLY_FLUSH_BYTES {
                stream.write_all(&out).await?;
                out.clear();
            }
        }
        buffer.drain(..start);
        if !out.is_empty() {
            stream.write_all(&out).await?;
            out.clear();
        }
        buffer.reserve(READ_CHUNK_BYTES);
        if stream.read_buf(&mut buffer).await? == 0 {
            return Ok(());
        }
    }
}
