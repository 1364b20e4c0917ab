//! Typed services (RPC) on a chain: requests and replies are ordinary
//! objects, so they are validated, signed and encrypted like everything
//! else and inherit the chain's authority rules. Dispatch is by a declared
//! type name ([`Message::TYPE_NAME`]), never by `std::any::type_name`.
//!
//! A request is a child of the service's queue; a handler takes it under a
//! lease, and one commit both stores the reply (a child of the request) and
//! tombstones the request. The caller subscribes to the reply collection
//! before it commits the request, so no reply can be missed.

use super::{type_tag, BusEventKind, Queue, QueueConfig, StartAt};
use crate::chain::{Chain, Expect};
use crate::key::{CollectionId, PrimaryKey};
use crate::session::AteSession;
use crate::{AteError, Result};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

/// A request or reply type with a stable, declared name.
pub trait Message: Serialize + DeserializeOwned + Send + 'static {
    /// Unique and stable across versions and crates, e.g. `"billing.Charge/v1"`.
    const TYPE_NAME: &'static str;
}

/// How replies travel: the handler's result, or its typed error.
#[derive(Debug, Serialize, Deserialize)]
enum Reply<Response, Failure> {
    Ok(Response),
    Err(Failure),
}

/// Why an invocation did not produce a response.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServiceError<Failure: std::fmt::Debug> {
    /// The handler ran and returned its typed error.
    #[error("the service returned an error: {0:?}")]
    Failed(Failure),
    /// No reply within the timeout, or the chain refused or could not carry the call.
    #[error(transparent)]
    Engine(#[from] AteError),
}

const REPLY_COLLECTION: CollectionId = CollectionId(1);

fn service_queue(chain: &Arc<Chain>, session: &AteSession, request_type: &str) -> Queue {
    Queue::new(chain, session, &format!("ate.service/{request_type}"), QueueConfig::default())
}

fn reply_tag(request_type: &str) -> u64 {
    type_tag(&format!("{request_type}#reply"))
}

/// A running service; dropping it stops the handler.
#[derive(Debug)]
pub struct ServiceHandle {
    task: tokio::task::JoinHandle<()>,
}

impl Drop for ServiceHandle {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Serves requests of type `Request` on `chain` with `handler`.
pub fn serve<Request, Response, Failure, Handler, Fut>(
    chain: &Arc<Chain>,
    session: &AteSession,
    handler: Handler,
) -> Result<ServiceHandle>
where
    Request: Message,
    Response: Serialize + Send + 'static,
    Failure: Serialize + Send + 'static,
    Handler: Fn(Request) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = std::result::Result<Response, Failure>> + Send,
{
    let queue = service_queue(chain, session, Request::TYPE_NAME);
    let mut wakeups = chain.subscribe_collection(session, &queue.items_key(), CollectionId::default(), StartAt::Now)?;
    let (chain, session) = (Arc::clone(chain), session.clone());
    let task = tokio::spawn(async move {
        loop {
            // Drain what is there, then sleep until a request is committed.
            loop {
                let delivery = match queue.take::<Request>().await {
                    Ok(Some(delivery)) => delivery,
                    Ok(None) => break,
                    Err(error) => {
                        tracing::warn!(%error, service = Request::TYPE_NAME, "taking a request failed");
                        break;
                    }
                };
                let (request_key, value, version, token) = delivery.into_parts();
                let reply = match handler(value).await {
                    Ok(response) => Reply::<Response, Failure>::Ok(response),
                    Err(failure) => Reply::Err(failure),
                };
                let mut dio = chain.dio(&session).await;
                let stored = dio.store_tagged(
                    PrimaryKey::generate(),
                    Some((request_key, REPLY_COLLECTION)),
                    Expect::Absent,
                    reply_tag(Request::TYPE_NAME),
                    reply,
                );
                if stored.is_err() {
                    continue;
                }
                // The reply and the consumption of the request are one commit.
                dio.delete_expecting(
                    request_key,
                    Expect::Version(version),
                    Some((queue.items_key(), CollectionId::default())),
                );
                if let Err(error) = dio.commit().await {
                    tracing::warn!(%error, service = Request::TYPE_NAME, "replying failed");
                }
                if let Err(error) = queue.finished(request_key, token).await {
                    tracing::warn!(%error, service = Request::TYPE_NAME, "dropping the request's lease failed");
                }
            }
            if wakeups.next().await.is_err() {
                return;
            }
        }
    });
    Ok(ServiceHandle { task })
}

/// Calls the service for `Request` and waits up to `timeout` for its reply.
pub async fn invoke<Request, Response, Failure>(
    chain: &Arc<Chain>,
    session: &AteSession,
    request: Request,
    timeout: Duration,
) -> std::result::Result<Response, ServiceError<Failure>>
where
    Request: Message,
    Response: DeserializeOwned,
    Failure: DeserializeOwned + std::fmt::Debug,
{
    let queue = service_queue(chain, session, Request::TYPE_NAME);
    let request_key = PrimaryKey::generate();
    // Listen first: a reply committed right after the request is still seen.
    let mut replies = chain.subscribe_collection(session, &request_key, REPLY_COLLECTION, StartAt::Now)?;
    let mut dio = chain.dio(session).await;
    dio.store_tagged(
        request_key,
        Some((queue.items_key(), CollectionId::default())),
        Expect::Absent,
        type_tag(Request::TYPE_NAME),
        request,
    )?;
    dio.commit().await?;
    let tag = reply_tag(Request::TYPE_NAME);
    let waited = tokio::time::timeout(timeout, async {
        loop {
            let event = replies.next().await?;
            if event.kind == BusEventKind::Data && event.type_tag == tag {
                return Ok::<_, AteError>(event);
            }
        }
    })
    .await;
    let event = match waited {
        Ok(event) => event?,
        Err(_) => return Err(ServiceError::Engine(AteError::Timeout { timeout_ms: timeout.as_millis() as u64 })),
    };
    let reply: Reply<Response, Failure> = event.decode()?;
    // The reply is consumed too, so the log does not keep growing with them.
    let mut cleanup = chain.dio(session).await;
    if cleanup.delete(&event.key).is_ok() {
        let _ = cleanup.commit().await;
    }
    match reply {
        Reply::Ok(response) => Ok(response),
        Reply::Err(failure) => Err(ServiceError::Failed(failure)),
    }
}
