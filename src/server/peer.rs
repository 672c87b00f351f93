//! Replica-to-replica messages between nodes: the shard's outgoing links
//! (the wire form is `markab_core::host::peer_wire`).
//!
//! Peer messages are one-way: a `Peer` request frame is never answered. The
//! sender's timers (Prepare resend, prepare timeout, learn retry) deal with
//! losses, so a link drops what it cannot send rather than queueing without
//! bound or blocking the shard.
//!
//! Each shard keeps one link per destination address (the listener of the
//! shard that hosts the partition on the other node). A link is a task that
//! connects, then writes every queued frame, coalescing what is queued into
//! one `write_all`; on a failure it drops the connection and what is queued,
//! and reconnects on the next message.

use std::cell::RefCell;
use std::collections::HashMap;
use std::time::Duration;

use futures::{AsyncWriteExt, FutureExt};
use glommio::channels::local_channel::{self, LocalReceiver, LocalSender};
use glommio::net::TcpStream;
use markab_wire::codec::Encoder;
use markab_wire::{Envelope, Gpid, PeerRequest, Request};

use crate::server::connection::append_queued;

/// Frames queued on one link before new ones are dropped.
const LINK_QUEUE_MAX: usize = 4096;
/// How long one connection attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);
/// After a failed connection attempt, messages to that address are dropped
/// for this long (the resend timers retry).
const RECONNECT_PAUSE: Duration = Duration::from_millis(50);

/// A shard's outgoing peer links, by destination address.
pub struct PeerLinks {
    links: RefCell<HashMap<String, LocalSender<Vec<u8>>>>,
    encoder: RefCell<Encoder>,
}

impl Default for PeerLinks {
    fn default() -> Self {
        PeerLinks::new()
    }
}

impl PeerLinks {
    pub fn new() -> PeerLinks {
        PeerLinks {
            links: RefCell::new(HashMap::new()),
            encoder: RefCell::new(Encoder::new()),
        }
    }

    /// Queues `message` for the shard listening on `address`; drops it when
    /// the link's queue is full or the message cannot be encoded.
    pub fn send(&self, address: &str, gpid: Gpid, message: PeerRequest) {
        let envelope = Envelope {
            gpid,
            ..Envelope::default()
        };
        let mut frame = Vec::new();
        if let Err(error) =
            self.encoder
                .borrow_mut()
                .request_frame(&envelope, &Request::Peer(message), &mut frame)
        {
            tracing::warn!(%address, %error, "cannot encode a peer message");
            return;
        }
        let mut links = self.links.borrow_mut();
        if !links.contains_key(address) {
            links.insert(address.to_owned(), spawn_link(address.to_owned()));
        }
        let sender = links.get(address).expect("inserted above");
        if sender.try_send(frame).is_err() {
            // Full (dropped: the sender's timers resend) or the link task
            // ended; start a fresh link for the next message.
            if sender.is_full() {
                return;
            }
            links.remove(address);
        }
    }
}

/// Starts the task of one link and returns its queue.
fn spawn_link(address: String) -> LocalSender<Vec<u8>> {
    let (sender, receiver) = local_channel::new_bounded(LINK_QUEUE_MAX);
    glommio::spawn_local(run_link(address, receiver)).detach();
    sender
}

async fn run_link(address: String, frames: LocalReceiver<Vec<u8>>) {
    let mut stream: Option<TcpStream> = None;
    let mut batch = Vec::new();
    while let Some(frame) = frames.recv().await {
        batch.extend_from_slice(&frame);
        append_queued(&mut batch, &frames);
        if stream.is_none() {
            match TcpStream::connect_timeout(&address, CONNECT_TIMEOUT).await {
                Ok(connected) => {
                    let _ = connected.set_nodelay(true);
                    stream = Some(connected);
                }
                Err(error) => {
                    tracing::debug!(%address, %error, "cannot reach a peer");
                    batch.clear();
                    glommio::timer::sleep(RECONNECT_PAUSE).await;
                    // Whatever queued meanwhile is stale by the resend timers'
                    // measure; drop it too.
                    while let Some(Some(_)) = frames.recv().now_or_never() {}
                    continue;
                }
            }
        }
        let connection = stream.as_mut().expect("connected above");
        if let Err(error) = connection.write_all(&batch).await {
            tracing::debug!(%address, %error, "peer write failed; reconnecting");
            stream = None;
        }
        batch.clear();
    }
}
