//! What a run drives. `--embedded DIR` (the engine in this process),
//! `--target tcp://host:port/chain` (an `atedb` server, authenticated like
//! the `ate` CLI), or a peer: `--target redis://host:port`,
//! `--target nats://host:port`. Each becomes a [`Backend`].

use crate::workload::{Backend, BackendFuture, WorkloadKind};
use ate::messaging::{Delivery, Queue, QueueConfig, StartAt, Subscription};
use ate::prelude::*;
use ate_client::queue::RemoteQueue;
use ate_client::registry::{Producer, Registry, RegistryConfig};

/// The queue every queue workload uses.
const QUEUE_NAME: &str = "loadgen";
use std::path::PathBuf;
use std::sync::Arc;

#[derive(Debug, Clone)]
pub enum Target {
    Embedded {
        dir: PathBuf,
        chain: String,
    },
    /// `config`'s Debug leaves the token out.
    Remote {
        url: String,
        config: RegistryConfig,
        /// Queue consumers on replicas (the engine's `Queue` on
        /// `Registry::open`) instead of the owner's takes (`Registry::queue`).
        queue_replica: bool,
    },
    Redis {
        url: String,
    },
    Nats {
        url: String,
    },
}

/// Where acknowledged writes are reported (`--acked-log`).
pub type AckSink = Option<std::sync::mpsc::SyncSender<String>>;

impl Target {
    /// A short description for reports.
    pub fn describe(&self) -> String {
        match self {
            Target::Embedded { dir, chain } => format!("ate embedded {}/{chain}", dir.display()),
            Target::Remote { url, .. } => format!("atedb {url}"),
            Target::Redis { url } => format!("redis {url}"),
            Target::Nats { url } => format!("nats {url}"),
        }
    }

    /// The system's name in comparisons.
    pub fn system(&self) -> &'static str {
        match self {
            Target::Embedded { .. } => "ate (embedded)",
            Target::Remote { .. } => "ate",
            Target::Redis { .. } => "redis",
            Target::Nats { .. } => "nats-jetstream",
        }
    }

    /// Connects with `connections` connections for a `kind` workload (one
    /// embedded chain is shared by every worker; each remote connection is
    /// a replica, or only a producer when the workload never reads).
    pub async fn connect(
        &self,
        kind: WorkloadKind,
        connections: usize,
        durability: Durability,
        workers: usize,
        acked: AckSink,
    ) -> Result<Arc<dyn Backend>, String> {
        let mut producers = Vec::new();
        let mut remote_queues = Vec::new();
        let chains = match self {
            Target::Embedded { dir, chain } => {
                let config = AteConfig { log_path: Some(dir.clone()), durability, ..AteConfig::default() };
                let builder = ChainBuilder::new(&config).await.build();
                vec![builder.open(&ChainKey::from(chain.as_str())).await.map_err(|e| e.to_string())?]
            }
            // An ingesting client, like a Kafka producer, never reads its own
            // events back: a replica would ingest and verify every one of them.
            Target::Remote { url, config, .. } if kind == WorkloadKind::Ingest => {
                for _ in 0..connections.max(1) {
                    let registry = Registry::new(config.clone()).await;
                    producers.push(registry.producer(url).await.map_err(|e| e.to_string())?);
                }
                Vec::new()
            }
            // A queue consumer, like a Kafka consumer, receives the items it
            // takes and nothing else (no replica of the whole chain).
            Target::Remote { url, config, queue_replica: false } if kind == WorkloadKind::Queue => {
                for _ in 0..connections.max(1) {
                    let registry = Registry::new(config.clone()).await;
                    let queue = registry.queue(url, QUEUE_NAME, QueueConfig::default()).await;
                    remote_queues.push(queue.map_err(|e| e.to_string())?.with_durability(durability));
                }
                Vec::new()
            }
            Target::Remote { url, config, .. } => {
                let mut chains = Vec::with_capacity(connections.max(1));
                for _ in 0..connections.max(1) {
                    let registry = Registry::new(config.clone()).await;
                    chains.push(registry.open(url).await.map_err(|e| e.to_string())?);
                }
                chains
            }
            Target::Redis { url } => return crate::peers::redis::connect(url, connections, workers, durability).await,
            Target::Nats { url } => return crate::peers::nats::connect(url, connections, workers).await,
        };
        let queues = chains
            .iter()
            .map(|chain| Queue::new(chain, &AteSession::default(), QUEUE_NAME, QueueConfig::default()))
            .collect();
        let subscriptions = (0..workers).map(|_| tokio::sync::Mutex::new(None)).collect();
        let queue_note = match (kind, self) {
            (WorkloadKind::Queue, Target::Remote { queue_replica: true, .. }) => "; queue consumers keep a replica",
            (WorkloadKind::Queue, Target::Remote { .. }) => "; queue consumers take from the server, no replica",
            _ => "",
        };
        let backend =
            AteBackend { chains, producers, queues, remote_queues, subscriptions, durability, acked, queue_note };
        Ok(Arc::new(backend))
    }
}

/// ATE as a backend: appends are commits of named values in the `ate`
/// CLI's format (so `ate get` reads what the acked log names), gets read
/// the view (the replica, remotely), queues and subscriptions are ATE's.
struct AteBackend {
    /// Empty when the workload only writes to a remote chain (`producers`).
    chains: Vec<Arc<Chain>>,
    producers: Vec<Producer>,
    queues: Vec<Queue>,
    /// Queues consumed without a replica (`queues` is then empty).
    remote_queues: Vec<RemoteQueue>,
    /// How queue consumers work, for the report's settings.
    queue_note: &'static str,
    subscriptions: Vec<tokio::sync::Mutex<Option<Subscription>>>,
    durability: Durability,
    acked: AckSink,
}

impl AteBackend {
    fn chain(&self, worker: usize) -> Result<&Arc<Chain>, String> {
        match self.chains.len() {
            0 => Err("this workload opened no replica to read from".into()),
            count => Ok(&self.chains[worker % count]),
        }
    }

    fn remote_queue(&self, worker: usize) -> Option<&RemoteQueue> {
        match self.remote_queues.len() {
            0 => None,
            count => Some(&self.remote_queues[worker % count]),
        }
    }

    fn queue(&self, worker: usize) -> Result<&Queue, String> {
        match self.queues.len() {
            0 => Err("this workload opened no replica to queue on".into()),
            count => Ok(&self.queues[worker % count]),
        }
    }
}

impl Backend for AteBackend {
    fn append(&self, worker: usize, records: Vec<(String, Vec<u8>)>) -> BackendFuture<'_, ()> {
        Box::pin(async move {
            let mut events = Vec::with_capacity(records.len());
            for (name, payload) in &records {
                events.push(ate_client::cli::named_event(name, payload).map_err(|e| e.to_string())?);
            }
            let (receipt, chain_name) = if self.producers.is_empty() {
                let chain = self.chain(worker)?;
                (chain.append(events, Some(self.durability)).await, chain.key().name())
            } else {
                let producer = &self.producers[worker % self.producers.len()];
                (producer.append(events, Some(self.durability)).await, producer.chain())
            };
            let receipt = receipt.map_err(|e| e.to_string())?;
            if let Some(sink) = &self.acked {
                for (index, (name, _)) in records.iter().enumerate() {
                    let line = format!("{chain_name}\t{name}\t{}", receipt.first_sequence + index as u64);
                    let _ = sink.send(line);
                }
            }
            Ok(())
        })
    }

    fn put(&self, worker: usize, key: String, payload: Vec<u8>) -> BackendFuture<'_, ()> {
        self.append(worker, vec![(key, payload)])
    }

    fn settings(&self) -> String {
        format!(
            "ATE: every acknowledged commit fdatasync'd first (durability {:?}){}",
            self.durability, self.queue_note
        )
    }

    fn get(&self, worker: usize, key: String) -> BackendFuture<'_, Option<usize>> {
        Box::pin(
            async move { Ok(self.chain(worker)?.get(&PrimaryKey::from_name(&key)).map(|event| event.payload.len())) },
        )
    }

    fn push(&self, worker: usize, payloads: Vec<Vec<u8>>) -> BackendFuture<'_, ()> {
        // As bytes (`serde_bytes`), not as a sequence of numbers one by one.
        let payloads = payloads.into_iter().map(serde_bytes::ByteBuf::from);
        Box::pin(async move {
            let pushed = match self.remote_queue(worker) {
                Some(queue) => queue.push_many(payloads).await.map(drop),
                None => self.queue(worker)?.push_many(payloads).await.map(drop),
            };
            pushed.map_err(|e| e.to_string())
        })
    }

    fn take(&self, worker: usize, max: usize) -> BackendFuture<'_, Vec<usize>> {
        Box::pin(async move {
            let failed = |error: AteError| error.to_string();
            let sizes = |deliveries: &[Delivery<serde_bytes::ByteBuf>]| -> Vec<usize> {
                deliveries.iter().map(|delivery| delivery.value.len()).collect()
            };
            // Both kinds of consumer: take a batch, then acknowledge it in one commit.
            let (sizes, acknowledged) = match self.remote_queue(worker) {
                Some(queue) => {
                    let deliveries = queue.take_many(max).await.map_err(failed)?;
                    (sizes(&deliveries), queue.ack_many(deliveries).await.map_err(failed)?)
                }
                None => {
                    let queue = self.queue(worker)?;
                    let deliveries = queue.take_many(max).await.map_err(failed)?;
                    let sizes = sizes(&deliveries);
                    let acknowledged =
                        if sizes.is_empty() { 0 } else { queue.ack_many(deliveries).await.map_err(failed)? };
                    (sizes, acknowledged)
                }
            };
            if acknowledged != sizes.len() {
                let lost = sizes.len() - acknowledged;
                return Err(format!("{lost} of {} deliveries were lost before their ack", sizes.len()));
            }
            Ok(sizes)
        })
    }

    fn subscribe(&self, worker: usize) -> BackendFuture<'_, ()> {
        Box::pin(async move {
            let subscription =
                self.chain(worker)?.subscribe(&AteSession::default(), StartAt::Now).map_err(|e| e.to_string())?;
            *self.subscriptions[worker].lock().await = Some(subscription);
            Ok(())
        })
    }

    fn receive(&self, worker: usize, max: usize) -> BackendFuture<'_, Vec<(u64, usize)>> {
        Box::pin(async move {
            let mut slot = self.subscriptions[worker].lock().await;
            let subscription = slot.as_mut().ok_or("receive before subscribe")?;
            // Borrowed: a subscriber that only looks at an event copies nothing.
            let look = |event: ate::messaging::BusEventRef<'_>| {
                (event.timestamp_us, event.payload.map_or(0, |payload| payload.len()))
            };
            let mut received = Vec::with_capacity(max.min(1024));
            received.push(subscription.next_with(look).await.map_err(|e| e.to_string())?);
            while received.len() < max {
                match subscription.try_next_with(look).map_err(|e| e.to_string())? {
                    Some(event) => received.push(event),
                    None => break,
                }
            }
            Ok(received)
        })
    }
}
