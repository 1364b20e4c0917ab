//! Workloads, written once against `ate::Chain`: the embedded engine and a
//! remote chain (a `Registry` replica) are driven by the same code.

use ate::messaging::{Queue, QueueConfig, StartAt, Subscription};
use ate::prelude::*;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// What one request did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Outcome {
    pub events: u64,
    pub bytes: u64,
    /// Latency measured by the workload itself (end to end, publish to
    /// delivery), replacing the request's own round trip.
    pub latency_us: Option<u64>,
}

pub type StepFuture<'a> = Pin<Box<dyn Future<Output = Result<Outcome, String>> + Send + 'a>>;

/// One kind of load.
pub trait Workload: Send + Sync {
    /// Performs one request for `worker`.
    fn step<'a>(&'a self, worker: usize, random: &'a mut fastrand::Rng) -> StepFuture<'a>;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum WorkloadKind {
    /// Append-only (WORM archive): batches of new named records.
    Ingest,
    /// Get/put mix over a key space (gets read the local view or replica).
    Cache,
    /// Producers push, competing consumers take and acknowledge.
    Queue,
    /// One producer, every other worker a subscriber; latency end to end.
    Fanout,
    /// Ingest, gets and puts in equal parts.
    Mixed,
}

/// Sizes of messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum MessageSize {
    Fixed(usize),
    /// Uniform between the bounds (inclusive).
    Uniform(usize, usize),
}

impl MessageSize {
    /// `"256"` or `"64-4096"`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let number = |part: &str| part.trim().parse::<usize>().map_err(|_| format!("bad message size '{text}'"));
        match text.split_once('-') {
            Some((low, high)) => {
                let (low, high) = (number(low)?, number(high)?);
                if low > high {
                    return Err(format!("message size range '{text}' is backwards"));
                }
                Ok(MessageSize::Uniform(low, high))
            }
            None => Ok(MessageSize::Fixed(number(text)?)),
        }
    }

    fn sample(&self, random: &mut fastrand::Rng) -> usize {
        match *self {
            MessageSize::Fixed(bytes) => bytes,
            MessageSize::Uniform(low, high) => random.usize(low..=high),
        }
    }
}

/// How keys are chosen from the key space.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub enum KeyDistribution {
    Uniform,
    /// Zipfian with this exponent (about 1: a few keys take most requests).
    Zipf(f64),
}

/// Draws keys in `0..keys`.
#[derive(Debug, Clone)]
pub struct KeyChooser {
    keys: u64,
    distribution: KeyDistribution,
    /// Zipf: cumulative weights (bounded: at most `ZIPF_TABLE` entries).
    cumulative: Vec<f64>,
}

/// Largest key space with an exact Zipf table; larger ones map the table
/// onto the space in strides.
const ZIPF_TABLE: u64 = 1 << 20;

impl KeyChooser {
    pub fn new(keys: u64, distribution: KeyDistribution) -> Self {
        let keys = keys.max(1);
        let cumulative = match distribution {
            KeyDistribution::Uniform => Vec::new(),
            KeyDistribution::Zipf(exponent) => {
                let mut total = 0.0;
                (1..=keys.min(ZIPF_TABLE))
                    .map(|rank| {
                        total += 1.0 / (rank as f64).powf(exponent);
                        total
                    })
                    .collect()
            }
        };
        Self { keys, distribution, cumulative }
    }

    pub fn sample(&self, random: &mut fastrand::Rng) -> u64 {
        match self.distribution {
            KeyDistribution::Uniform => random.u64(0..self.keys),
            KeyDistribution::Zipf(_) => {
                let total = *self.cumulative.last().expect("at least one key");
                let target = random.f64() * total;
                let rank = self.cumulative.partition_point(|weight| *weight < target) as u64;
                let stride = self.keys.div_ceil(ZIPF_TABLE).max(1);
                (rank * stride + random.u64(0..stride)).min(self.keys - 1)
            }
        }
    }
}

/// Settings every workload reads.
#[derive(Debug, Clone, serde::Serialize)]
pub struct WorkloadConfig {
    pub kind: WorkloadKind,
    pub message: MessageSize,
    pub keys: u64,
    pub distribution: KeyDistribution,
    /// Events per commit (ingest, mixed).
    pub batch: usize,
    /// Fraction of cache requests that are gets.
    pub read_ratio: f64,
    #[serde(skip)]
    pub durability: Option<Durability>,
}

/// Where acknowledged writes are reported (`--acked-log`).
pub type AckSink = Option<std::sync::mpsc::SyncSender<String>>;

/// Builds the workload over `chains` (worker `i` uses `chains[i % len]`).
pub fn build(
    config: &WorkloadConfig,
    chains: Vec<Arc<Chain>>,
    workers: usize,
    acked: AckSink,
) -> Result<Arc<dyn Workload>, String> {
    assert!(!chains.is_empty(), "at least one chain");
    let common = Common {
        chains,
        config: config.clone(),
        keys: KeyChooser::new(config.keys, config.distribution),
        counter: AtomicU64::new(0),
        acked,
    };
    Ok(match config.kind {
        WorkloadKind::Ingest => Arc::new(Ingest(common)),
        WorkloadKind::Cache => Arc::new(Cache(common)),
        WorkloadKind::Mixed => Arc::new(Mixed(common)),
        WorkloadKind::Queue => {
            let queues = common
                .chains
                .iter()
                .map(|chain| Queue::new(chain, &AteSession::default(), "loadgen", QueueConfig::default()))
                .collect();
            Arc::new(QueueLoad { common, queues })
        }
        WorkloadKind::Fanout => {
            if workers < 2 {
                return Err("fanout needs at least two workers: one producer and subscribers".into());
            }
            let mut subscriptions = Vec::with_capacity(workers);
            for worker in 1..workers {
                let chain = &common.chains[worker % common.chains.len()];
                let subscription = chain.subscribe(&AteSession::default(), StartAt::Now).map_err(|e| e.to_string())?;
                subscriptions.push(tokio::sync::Mutex::new(subscription));
            }
            Arc::new(Fanout { common, subscriptions })
        }
    })
}

struct Common {
    chains: Vec<Arc<Chain>>,
    config: WorkloadConfig,
    keys: KeyChooser,
    counter: AtomicU64,
    acked: AckSink,
}

impl Common {
    fn chain(&self, worker: usize) -> &Arc<Chain> {
        &self.chains[worker % self.chains.len()]
    }

    fn payload(&self, random: &mut fastrand::Rng) -> Vec<u8> {
        let mut payload = vec![0u8; self.config.message.sample(random)];
        random.fill(&mut payload);
        payload
    }

    /// Commits `names` with fresh payloads as one commit, in the `ate`
    /// CLI's value format, so `ate get` reads what the acked log names.
    async fn put(&self, worker: usize, names: Vec<String>, random: &mut fastrand::Rng) -> Result<Outcome, String> {
        let chain = self.chain(worker);
        let mut bytes = 0u64;
        let mut events = Vec::with_capacity(names.len());
        for name in &names {
            let payload = self.payload(random);
            bytes += payload.len() as u64;
            events.push(ate_client::cli::named_event(name, payload).map_err(|e| e.to_string())?);
        }
        let receipt = chain.append(events, self.config.durability).await.map_err(|e| e.to_string())?;
        if let Some(sink) = &self.acked {
            for (index, name) in names.iter().enumerate() {
                let line = format!("{}\t{name}\t{}", chain.key().name(), receipt.first_sequence + index as u64);
                let _ = sink.send(line);
            }
        }
        Ok(Outcome { events: names.len() as u64, bytes, latency_us: None })
    }

    fn fresh_names(&self, worker: usize, count: usize) -> Vec<String> {
        let first = self.counter.fetch_add(count as u64, Ordering::Relaxed);
        (first..first + count as u64).map(|index| format!("lg-{worker}-{index}")).collect()
    }

    fn get(&self, worker: usize, random: &mut fastrand::Rng) -> Outcome {
        let name = format!("key-{}", self.keys.sample(random));
        let found = self.chain(worker).get(&PrimaryKey::from_name(&name)).map_or(0, |event| event.payload.len());
        Outcome { events: 1, bytes: found as u64, latency_us: None }
    }
}

struct Ingest(Common);

impl Workload for Ingest {
    fn step<'a>(&'a self, worker: usize, random: &'a mut fastrand::Rng) -> StepFuture<'a> {
        Box::pin(async move {
            let names = self.0.fresh_names(worker, self.0.config.batch.max(1));
            self.0.put(worker, names, random).await
        })
    }
}

struct Cache(Common);

impl Workload for Cache {
    fn step<'a>(&'a self, worker: usize, random: &'a mut fastrand::Rng) -> StepFuture<'a> {
        Box::pin(async move {
            if random.f64() < self.0.config.read_ratio {
                Ok(self.0.get(worker, random))
            } else {
                let name = format!("key-{}", self.0.keys.sample(random));
                self.0.put(worker, vec![name], random).await
            }
        })
    }
}

struct Mixed(Common);

impl Workload for Mixed {
    fn step<'a>(&'a self, worker: usize, random: &'a mut fastrand::Rng) -> StepFuture<'a> {
        Box::pin(async move {
            match random.u8(0..3) {
                0 => {
                    let names = self.0.fresh_names(worker, self.0.config.batch.max(1));
                    self.0.put(worker, names, random).await
                }
                1 => Ok(self.0.get(worker, random)),
                _ => {
                    let name = format!("key-{}", self.0.keys.sample(random));
                    self.0.put(worker, vec![name], random).await
                }
            }
        })
    }
}

/// Even workers produce, odd workers consume (take, then acknowledge).
struct QueueLoad {
    common: Common,
    queues: Vec<Queue>,
}

impl Workload for QueueLoad {
    fn step<'a>(&'a self, worker: usize, random: &'a mut fastrand::Rng) -> StepFuture<'a> {
        Box::pin(async move {
            let queue = &self.queues[worker % self.queues.len()];
            if worker % 2 == 0 {
                let payload = self.common.payload(random);
                let bytes = payload.len() as u64;
                queue.push(payload).await.map_err(|e| e.to_string())?;
                return Ok(Outcome { events: 1, bytes, latency_us: None });
            }
            loop {
                match queue.take::<Vec<u8>>().await.map_err(|e| e.to_string())? {
                    Some(delivery) => {
                        let bytes = delivery.value.len() as u64;
                        queue.ack(delivery).await.map_err(|e| e.to_string())?;
                        return Ok(Outcome { events: 1, bytes, latency_us: None });
                    }
                    // Empty, or everything leased: wait for producers.
                    None => tokio::time::sleep(std::time::Duration::from_millis(1)).await,
                }
            }
        })
    }
}

/// Worker 0 publishes; every other worker receives on its own subscription
/// and records publish-to-delivery latency.
struct Fanout {
    common: Common,
    subscriptions: Vec<tokio::sync::Mutex<Subscription>>,
}

impl Workload for Fanout {
    fn step<'a>(&'a self, worker: usize, random: &'a mut fastrand::Rng) -> StepFuture<'a> {
        Box::pin(async move {
            if worker == 0 {
                let names = self.common.fresh_names(worker, self.common.config.batch.max(1));
                return self.common.put(worker, names, random).await;
            }
            let mut subscription = self.subscriptions[worker - 1].lock().await;
            let event = subscription.next().await.map_err(|e| e.to_string())?;
            let latency_us = ate::chain::now_us().saturating_sub(event.timestamp_us);
            Ok(Outcome { events: 1, bytes: event.payload.map_or(0, |p| p.len() as u64), latency_us: Some(latency_us) })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zipf_keys_favour_low_ranks_and_stay_in_range() {
        let chooser = KeyChooser::new(1000, KeyDistribution::Zipf(1.0));
        let mut random = fastrand::Rng::with_seed(1);
        let mut counts = vec![0u32; 1000];
        for _ in 0..100_000 {
            counts[chooser.sample(&mut random) as usize] += 1;
        }
        // Rank 1 gets about 1/H(1000) ≈ 13 % of draws; rank 1000 almost none.
        assert!((11_000..16_000).contains(&counts[0]), "{}", counts[0]);
        assert!(counts[0] > 5 * counts[9]);
        let uniform = KeyChooser::new(10, KeyDistribution::Uniform);
        assert!((0..1000).all(|_| uniform.sample(&mut random) < 10));
        let huge = KeyChooser::new(u64::MAX / 2, KeyDistribution::Zipf(0.99));
        assert!((0..1000).all(|_| huge.sample(&mut random) < u64::MAX / 2));
    }

    #[test]
    fn message_sizes_parse() {
        assert_eq!(MessageSize::parse("256").unwrap(), MessageSize::Fixed(256));
        assert_eq!(MessageSize::parse("64-4096").unwrap(), MessageSize::Uniform(64, 4096));
        assert!(MessageSize::parse("4096-64").is_err());
        assert!(MessageSize::parse("big").is_err());
    }
}
