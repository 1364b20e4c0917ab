//! One authenticated connection shared by concurrent requests and
//! subscriptions. A writer task sends queued messages; a reader task routes
//! each reply to its request by id and each event batch to its
//! subscription. Every queue is bounded: a subscriber that does not keep up
//! stops the reader, which stops the server's sender (TCP back-pressure)
//! instead of buffering without limit.

use crate::protocol::{ClientMessage, FrameKind, ServerMessage};
use crate::remote::{RemoteConnection, RemoteError};
use crate::transport::{write_queued, TransportError};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};

/// Messages queued for the writer task before senders wait.
const OUTBOX_MESSAGES: usize = 256;
/// Event batches (each at most one frame) queued per subscription.
const SUBSCRIPTION_BATCHES: usize = 8;

type Reply = Result<ServerMessage, RemoteError>;

enum Waiter {
    Reply(oneshot::Sender<Reply>),
    /// A subscribe request: its event channel is registered the moment the
    /// server confirms, before any of its batches can be routed.
    Subscribe(oneshot::Sender<Reply>, mpsc::Sender<Vec<u8>>),
}

#[derive(Default)]
struct Routes {
    /// Why the link closed, once it has.
    closed: Option<String>,
    waiters: HashMap<u64, Waiter>,
    subscriptions: HashMap<u64, mpsc::Sender<Vec<u8>>>,
}

/// A multiplexed connection to one server.
#[derive(Debug)]
pub struct Link {
    outbox: mpsc::Sender<ClientMessage>,
    routes: Arc<parking_lot::Mutex<Routes>>,
    next_request: AtomicU64,
    reader: tokio::task::JoinHandle<()>,
    writer: tokio::task::JoinHandle<()>,
    pub subject: String,
}

impl std::fmt::Debug for Routes {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Routes")
            .field("closed", &self.closed)
            .field("waiters", &self.waiters.len())
            .field("subscriptions", &self.subscriptions.len())
            .finish()
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        self.reader.abort();
        self.writer.abort();
    }
}

/// Events of one subscription: stored records, as the server sends them.
#[derive(Debug)]
pub struct LinkSubscription {
    batches: mpsc::Receiver<Vec<u8>>,
    routes: Arc<parking_lot::Mutex<Routes>>,
}

impl LinkSubscription {
    /// The next batch; an error once the connection is gone.
    pub async fn next(&mut self) -> Result<Vec<u8>, RemoteError> {
        match self.batches.recv().await {
            Some(batch) => Ok(batch),
            None => Err(closed_error(&self.routes.lock())),
        }
    }
}

fn closed_error(routes: &Routes) -> RemoteError {
    let reason = routes.closed.clone().unwrap_or_else(|| "connection closed".into());
    RemoteError::Transport(TransportError::Io(std::io::Error::new(std::io::ErrorKind::ConnectionAborted, reason)))
}

impl Link {
    /// Takes over an authenticated connection.
    pub fn new(connection: RemoteConnection) -> Self {
        let (mut reader, mut write_half, subject) = connection.into_parts();
        let routes = Arc::new(parking_lot::Mutex::new(Routes::default()));
        let (outbox, mut outgoing) = mpsc::channel::<ClientMessage>(OUTBOX_MESSAGES);
        let writer_routes = Arc::clone(&routes);
        let writer = tokio::spawn(async move {
            // The message being written has its own waiter: others mean
            // requests in flight, whose replies release more requests.
            let more_coming = || writer_routes.lock().waiters.len() > 1;
            let encode = ClientMessage::encode_into;
            if let Err(error) =
                write_queued(&mut write_half, FrameKind::Client, &mut outgoing, encode, more_coming).await
            {
                close(&writer_routes, format!("sending failed: {error}"));
            }
        });
        let reader_routes = Arc::clone(&routes);
        let unsubscribe = outbox.clone();
        let reader = tokio::spawn(async move {
            let reason = loop {
                let body = match reader.next().await {
                    Ok(body) => body,
                    Err(error) => break error.to_string(),
                };
                let message = match ServerMessage::decode(&body) {
                    Ok(message) => message,
                    Err(error) => break format!("undecodable message from server: {error}"),
                };
                if let Err(reason) = route(&reader_routes, &unsubscribe, message).await {
                    break reason;
                }
            };
            close(&reader_routes, reason);
        });
        Self { outbox, routes, next_request: AtomicU64::new(1), reader, writer, subject }
    }

    /// Whether the connection is gone (requests fail; reconnect).
    pub fn is_closed(&self) -> bool {
        self.routes.lock().closed.is_some()
    }

    fn register(&self, waiter: Waiter) -> Result<u64, RemoteError> {
        let request = self.next_request.fetch_add(1, Ordering::Relaxed);
        let mut routes = self.routes.lock();
        if routes.closed.is_some() {
            return Err(closed_error(&routes));
        }
        routes.waiters.insert(request, waiter);
        Ok(request)
    }

    /// Room in the outbox, taken before a request registers its waiter: a
    /// caller that gives up while the outbox is full (a deadline) then
    /// leaves no waiter behind, which would otherwise stay for the link's
    /// life and make its writer expect more requests than are coming.
    async fn reserve(&self) -> Result<mpsc::Permit<'_, ClientMessage>, RemoteError> {
        match self.outbox.reserve().await {
            Ok(slot) => Ok(slot),
            Err(_) => Err(closed_error(&self.routes.lock())),
        }
    }

    /// Queues a request built around a fresh request id and returns the
    /// receiver of its reply once the request is on its way.
    pub async fn send(
        &self,
        build: impl FnOnce(u64) -> ClientMessage,
    ) -> Result<oneshot::Receiver<Reply>, RemoteError> {
        let (reply, receiver) = oneshot::channel();
        let slot = self.reserve().await?;
        let request = self.register(Waiter::Reply(reply))?;
        slot.send(build(request));
        Ok(receiver)
    }

    /// Sends a request and waits for its reply (server refusals become
    /// `RemoteError::Server`, redirects `RemoteError::Redirect`).
    pub async fn request(&self, build: impl FnOnce(u64) -> ClientMessage) -> Result<ServerMessage, RemoteError> {
        let receiver = self.send(build).await?;
        receive(receiver, &self.routes).await
    }

    /// Subscribes to `chain` from sequence `from`.
    pub async fn subscribe(&self, chain: &str, from: u64) -> Result<LinkSubscription, RemoteError> {
        let (reply, receiver) = oneshot::channel();
        let (events, batches) = mpsc::channel(SUBSCRIPTION_BATCHES);
        let slot = self.reserve().await?;
        let request = self.register(Waiter::Subscribe(reply, events))?;
        slot.send(ClientMessage::Subscribe { request, chain: chain.into(), from, collection: None });
        match receive(receiver, &self.routes).await? {
            ServerMessage::Subscribed { .. } => Ok(LinkSubscription { batches, routes: Arc::clone(&self.routes) }),
            other => Err(RemoteError::Unexpected(format!("{other:?}"))),
        }
    }
}

/// Waits for a reply sent with [`Link::send`].
async fn receive(
    receiver: oneshot::Receiver<Reply>,
    routes: &parking_lot::Mutex<Routes>,
) -> Result<ServerMessage, RemoteError> {
    match receiver.await {
        Ok(reply) => reply,
        Err(_) => Err(closed_error(&routes.lock())),
    }
}

impl Link {
    /// [`receive`] for this link.
    pub async fn receive(&self, receiver: oneshot::Receiver<Reply>) -> Result<ServerMessage, RemoteError> {
        receive(receiver, &self.routes).await
    }
}

/// Delivers one message; `Err` ends the connection.
async fn route(
    routes: &parking_lot::Mutex<Routes>,
    unsubscribe: &mpsc::Sender<ClientMessage>,
    message: ServerMessage,
) -> Result<(), String> {
    if let ServerMessage::Events { subscription, records } = message {
        let sender = routes.lock().subscriptions.get(&subscription).cloned();
        let Some(sender) = sender else { return Ok(()) };
        // Waits while the subscriber is behind: back-pressure, not buffering.
        if sender.send(records).await.is_err() {
            routes.lock().subscriptions.remove(&subscription);
            let _ = unsubscribe.try_send(ClientMessage::Unsubscribe { subscription });
        }
        return Ok(());
    }
    let Some(request) = message.request() else {
        return match message {
            ServerMessage::Error { code, message, .. } => {
                Err(format!("server ended the connection ({code:?}): {message}"))
            }
            other => Err(format!("unexpected message from server: {other:?}")),
        };
    };
    let mut routes = routes.lock();
    let Some(waiter) = routes.waiters.remove(&request) else {
        return Err(format!("reply to unknown request {request}"));
    };
    let reply = match message {
        ServerMessage::Error { code, message, key, .. } => Err(RemoteError::Server { code, message, key }),
        ServerMessage::Redirect { address, .. } => Err(RemoteError::Redirect { address }),
        other => Ok(other),
    };
    match waiter {
        Waiter::Reply(sender) => {
            let _ = sender.send(reply);
        }
        Waiter::Subscribe(sender, events) => {
            if let Ok(ServerMessage::Subscribed { subscription, .. }) = &reply {
                routes.subscriptions.insert(*subscription, events);
            }
            let _ = sender.send(reply);
        }
    }
    Ok(())
}

/// Marks the link closed and fails everything waiting on it.
fn close(routes: &parking_lot::Mutex<Routes>, reason: String) {
    let mut routes = routes.lock();
    if routes.closed.is_none() {
        tracing::debug!(%reason, "connection to the server closed");
        routes.closed = Some(reason);
    }
    let waiters: Vec<Waiter> = routes.waiters.drain().map(|(_, waiter)| waiter).collect();
    for waiter in waiters {
        let (Waiter::Reply(sender) | Waiter::Subscribe(sender, _)) = waiter;
        let _ = sender.send(Err(closed_error(&routes)));
    }
    routes.subscriptions.clear();
}
