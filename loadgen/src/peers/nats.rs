//! NATS JetStream: publishes with acks on a file-backed stream (ingest,
//! fanout), a work-queue stream with a durable pull consumer (queue), and a
//! file-backed key-value bucket (cache). JetStream acknowledges once the
//! server stored a message; whether that means fsync'd depends on the
//! server's `sync_interval` (`ci/peers.sh` runs it with `always`).

use crate::workload::{Backend, BackendFuture};
use async_nats::jetstream::{self, consumer, kv, stream};
use futures::{FutureExt, StreamExt};
use std::sync::Arc;

const STREAM: &str = "ATE_LOADGEN";
const SUBJECT: &str = "loadgen.ingest";
const QUEUE_STREAM: &str = "ATE_LOADGEN_QUEUE";
const QUEUE_SUBJECT: &str = "loadgen.queue";
const BUCKET: &str = "ate_loadgen";
const SENT_HEADER: &str = "Ate-Sent-Us";

fn text(error: impl std::fmt::Display) -> String {
    format!("nats: {error}")
}

pub async fn connect(url: &str, connections: usize, workers: usize) -> Result<Arc<dyn Backend>, String> {
    let address = url.strip_prefix("nats://").unwrap_or(url);
    let mut clients = Vec::with_capacity(connections.max(1));
    for _ in 0..connections.max(1) {
        clients.push(async_nats::connect(address).await.map_err(text)?);
    }
    let context = jetstream::new(clients[0].clone());
    context
        .get_or_create_stream(stream::Config {
            name: STREAM.into(),
            subjects: vec![SUBJECT.into()],
            storage: stream::StorageType::File,
            ..Default::default()
        })
        .await
        .map_err(|error| text(format!("creating stream {STREAM}: {error}")))?;
    let queue = context
        .get_or_create_stream(stream::Config {
            name: QUEUE_STREAM.into(),
            subjects: vec![QUEUE_SUBJECT.into()],
            storage: stream::StorageType::File,
            retention: stream::RetentionPolicy::WorkQueue,
            ..Default::default()
        })
        .await
        .map_err(|error| text(format!("creating stream {QUEUE_STREAM}: {error}")))?;
    let workers_consumer: consumer::PullConsumer = queue
        .get_or_create_consumer(
            "workers",
            consumer::pull::Config {
                durable_name: Some("workers".into()),
                ack_policy: consumer::AckPolicy::Explicit,
                ..Default::default()
            },
        )
        .await
        .map_err(|error| text(format!("creating consumer: {error}")))?;
    // The bucket's stream is created by hand with the settings a KV bucket
    // has (one value per key): `create_key_value` sends fields that NATS
    // 2.9 (Debian 12's) does not parse.
    context
        .get_or_create_stream(stream::Config {
            name: format!("KV_{BUCKET}"),
            subjects: vec![format!("$KV.{BUCKET}.>")],
            max_messages_per_subject: 1,
            storage: stream::StorageType::File,
            allow_rollup: true,
            deny_delete: true,
            discard: stream::DiscardPolicy::New,
            allow_direct: true,
            ..Default::default()
        })
        .await
        .map_err(|error| text(format!("creating bucket {BUCKET}: {error}")))?;
    let bucket =
        context.get_key_value(BUCKET).await.map_err(|error| text(format!("opening bucket {BUCKET}: {error}")))?;
    let contexts = clients.iter().map(|client| jetstream::new(client.clone())).collect();
    let subscriptions = (0..workers).map(|_| tokio::sync::Mutex::new(None)).collect();
    Ok(Arc::new(NatsBackend { clients, contexts, queue: workers_consumer, bucket, subscriptions }))
}

struct NatsBackend {
    clients: Vec<async_nats::Client>,
    contexts: Vec<jetstream::Context>,
    queue: consumer::PullConsumer,
    bucket: kv::Store,
    subscriptions: Vec<tokio::sync::Mutex<Option<async_nats::Subscriber>>>,
}

impl NatsBackend {
    fn context(&self, worker: usize) -> &jetstream::Context {
        &self.contexts[worker % self.contexts.len()]
    }
}

impl Backend for NatsBackend {
    fn append(&self, worker: usize, records: Vec<(String, Vec<u8>)>) -> BackendFuture<'_, ()> {
        Box::pin(async move {
            let context = self.context(worker);
            let sent = ate::chain::now_us().to_string();
            let mut acks = Vec::with_capacity(records.len());
            for (_, payload) in records {
                let mut headers = async_nats::HeaderMap::new();
                headers.insert(SENT_HEADER, sent.as_str());
                acks.push(context.publish_with_headers(SUBJECT, headers, payload.into()).await.map_err(text)?);
            }
            for ack in acks {
                ack.await.map_err(text)?;
            }
            Ok(())
        })
    }

    fn put(&self, _worker: usize, key: String, payload: Vec<u8>) -> BackendFuture<'_, ()> {
        Box::pin(async move { self.bucket.put(key, payload.into()).await.map(drop).map_err(text) })
    }

    fn get(&self, _worker: usize, key: String) -> BackendFuture<'_, Option<usize>> {
        Box::pin(async move { Ok(self.bucket.get(key).await.map_err(text)?.map(|value| value.len())) })
    }

    fn push(&self, worker: usize, payloads: Vec<Vec<u8>>) -> BackendFuture<'_, ()> {
        Box::pin(async move {
            // Publish the batch, then await every acknowledgement.
            let mut acks = Vec::with_capacity(payloads.len());
            for payload in payloads {
                acks.push(self.context(worker).publish(QUEUE_SUBJECT, payload.into()).await.map_err(text)?);
            }
            for ack in acks {
                ack.await.map_err(text)?;
            }
            Ok(())
        })
    }

    fn take(&self, _worker: usize, max: usize) -> BackendFuture<'_, Vec<usize>> {
        Box::pin(async move {
            let mut batch = self.queue.fetch().max_messages(max).messages().await.map_err(text)?;
            let mut messages = Vec::new();
            while let Some(message) = batch.next().await {
                messages.push(message.map_err(text)?);
            }
            // Acknowledged together, each confirmed by the server (as ATE
            // acknowledges a batch in one durable commit).
            futures::future::try_join_all(messages.iter().map(|message| message.double_ack())).await.map_err(text)?;
            Ok(messages.iter().map(|message| message.payload.len()).collect())
        })
    }

    fn subscribe(&self, worker: usize) -> BackendFuture<'_, ()> {
        Box::pin(async move {
            let client = &self.clients[worker % self.clients.len()];
            let subscriber = client.subscribe(SUBJECT).await.map_err(text)?;
            // The server knows the subscription before anything is published.
            client.flush().await.map_err(text)?;
            *self.subscriptions[worker].lock().await = Some(subscriber);
            Ok(())
        })
    }

    fn receive(&self, worker: usize, max: usize) -> BackendFuture<'_, Vec<(u64, usize)>> {
        Box::pin(async move {
            let mut slot = self.subscriptions[worker].lock().await;
            let subscriber = slot.as_mut().ok_or("receive before subscribe")?;
            let look = |message: async_nats::Message| {
                let sent = message
                    .headers
                    .as_ref()
                    .and_then(|headers| headers.get(SENT_HEADER))
                    .and_then(|value| value.as_str().parse::<u64>().ok())
                    .unwrap_or(0);
                (sent, message.payload.len())
            };
            let mut received = Vec::with_capacity(max.min(1024));
            received.push(look(subscriber.next().await.ok_or("nats: subscription closed")?));
            // Then what has already arrived, without waiting.
            while received.len() < max {
                match subscriber.next().now_or_never() {
                    Some(Some(message)) => received.push(look(message)),
                    // Closed: the next call says so.
                    Some(None) | None => break,
                }
            }
            Ok(received)
        })
    }

    fn settings(&self) -> String {
        let version = self.clients.first().map(|client| client.server_info().version).unwrap_or_default();
        format!(
            "NATS JetStream (nats-server {version}): file storage, publish acks awaited, work-queue pull consumer \
             with double ack, KV history 1; fsync per the server's sync_interval (default: every 2 minutes, \
             acknowledged before any fsync)"
        )
    }
}
