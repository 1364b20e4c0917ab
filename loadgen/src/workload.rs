//! Workloads, written once against `ate::Chain`: the embedded engine and a
//! remote chain (a `Registry` replica) are driven by the same code.

use ate::Durability;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// What one request did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Outcome {
    pub events: u64,
    pub bytes: u64,
    /// Latencies measured by the workload itself, one per event (end to
    /// end, publish to delivery), replacing the request's own round trip.
    /// Empty: the round trip is the latency.
    pub end_to_end_us: Vec<u64>,
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
    /// Producers push, competing consumers take and acknowledge; events are
    /// the items taken and acknowledged (a message counts once).
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
    /// Events per commit (ingest, mixed, fanout), and the most a fanout
    /// subscriber takes at once.
    pub batch: usize,
    /// Fanout: the first this many workers publish (the producer's commits
    /// in flight); the others subscribe.
    pub publishers: usize,
    /// Fraction of cache requests that are gets.
    pub read_ratio: f64,
    /// Queue: producers wait while this many pushed items are not yet
    /// taken (0: never). A queue's throughput is the rate it sustains; a
    /// producer that outruns the consumers only grows the backlog, and on
    /// a shared machine takes CPU from the consumers it outruns.
    pub max_backlog: u64,
    #[serde(skip)]
    pub durability: Option<Durability>,
}

pub type BackendFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, String>> + Send + 'a>>;

/// What a system under test must do for the workloads. ATE implements it
/// over chains (`crate::target`), the peers over their own clients
/// (`crate::peers`), so every system runs exactly the same workload code.
pub trait Backend: Send + Sync {
    /// Stores `records` (name, payload) together; returns once the system
    /// acknowledged them with its configured durability.
    fn append(&self, worker: usize, records: Vec<(String, Vec<u8>)>) -> BackendFuture<'_, ()>;
    /// Sets `key` to `payload` (cache writes).
    fn put(&self, worker: usize, key: String, payload: Vec<u8>) -> BackendFuture<'_, ()>;
    /// The size of the value under `key`, if any.
    fn get(&self, worker: usize, key: String) -> BackendFuture<'_, Option<usize>>;
    /// Adds work items together (one round trip where the system allows).
    fn push(&self, worker: usize, payloads: Vec<Vec<u8>>) -> BackendFuture<'_, ()>;
    /// Takes up to `max` work items and acknowledges them; returns their
    /// sizes (empty when none is free now).
    fn take(&self, worker: usize, max: usize) -> BackendFuture<'_, Vec<usize>>;
    /// Prepares worker `worker` to receive what is appended from now on.
    fn subscribe(&self, worker: usize) -> BackendFuture<'_, ()>;
    /// The next appended records on `worker`'s subscription, at least one
    /// and at most `max` (those already there after the first): for each,
    /// (microseconds since the epoch when it was appended, size).
    fn receive(&self, worker: usize, max: usize) -> BackendFuture<'_, Vec<(u64, usize)>>;
    /// The settings that matter for comparing (durability above all).
    fn settings(&self) -> String;
}

/// Builds the workload over `backend` for `workers` workers.
pub async fn build(
    config: &WorkloadConfig,
    backend: Arc<dyn Backend>,
    workers: usize,
) -> Result<Arc<dyn Workload>, String> {
    if config.kind == WorkloadKind::Fanout {
        let publishers = config.publishers.max(1);
        if workers <= publishers {
            return Err(format!("fanout needs subscribers: {workers} workers, {publishers} of them publishing"));
        }
        for worker in publishers..workers {
            backend.subscribe(worker).await?;
        }
    }
    let run_id = fastrand::u32(..);
    Ok(Arc::new(Driven {
        backend,
        config: config.clone(),
        keys: KeyChooser::new(config.keys, config.distribution),
        counter: AtomicU64::new(0),
        name_prefixes: (0..workers).map(|worker| format!("lg-{run_id:08x}-{worker}-")).collect(),
        pushed: AtomicU64::new(0),
        taken: AtomicU64::new(0),
    }))
}

struct Driven {
    backend: Arc<dyn Backend>,
    config: WorkloadConfig,
    keys: KeyChooser,
    counter: AtomicU64,
    /// Each worker's `lg-RUN-WORKER-`: names written by this run start with
    /// its random id, so that runs against one chain (say, before and after
    /// a crash) never overwrite each other.
    name_prefixes: Vec<String>,
    /// Queue items acknowledged as pushed, and as taken (and acknowledged).
    pushed: AtomicU64,
    taken: AtomicU64,
}

impl Driven {
    fn payload(&self, random: &mut fastrand::Rng) -> Vec<u8> {
        let mut payload = vec![0u8; self.config.message.sample(random)];
        random.fill(&mut payload);
        payload
    }

    fn ingest_name(&self, worker: usize, index: u64) -> String {
        use std::fmt::Write;
        let prefix = &self.name_prefixes[worker];
        let mut name = String::with_capacity(prefix.len() + 20);
        name.push_str(prefix);
        let _ = write!(name, "{index}");
        name
    }

    /// A batch of new, unique names (`lg-RUN-WORKER-N`) with payloads.
    async fn ingest(&self, worker: usize, random: &mut fastrand::Rng) -> Result<Outcome, String> {
        let count = self.config.batch.max(1) as u64;
        let first = self.counter.fetch_add(count, Ordering::Relaxed);
        let records: Vec<(String, Vec<u8>)> =
            (first..first + count).map(|index| (self.ingest_name(worker, index), self.payload(random))).collect();
        let bytes = records.iter().map(|(_, payload)| payload.len() as u64).sum();
        self.backend.append(worker, records).await?;
        Ok(Outcome { events: count, bytes, end_to_end_us: Vec::new() })
    }

    /// Queue producers: waits while `max_backlog` items wait to be taken;
    /// whether it waited.
    async fn wait_for_room(&self) -> bool {
        let limit = self.config.max_backlog;
        let mut waited = false;
        while limit > 0
            && self.pushed.load(Ordering::Relaxed).saturating_sub(self.taken.load(Ordering::Relaxed)) >= limit
        {
            waited = true;
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
        waited
    }

    fn key(&self, random: &mut fastrand::Rng) -> String {
        format!("key-{}", self.keys.sample(random))
    }

    async fn get(&self, worker: usize, random: &mut fastrand::Rng) -> Result<Outcome, String> {
        let found = self.backend.get(worker, self.key(random)).await?;
        Ok(Outcome { events: 1, bytes: found.unwrap_or(0) as u64, end_to_end_us: Vec::new() })
    }

    async fn put(&self, worker: usize, random: &mut fastrand::Rng) -> Result<Outcome, String> {
        let payload = self.payload(random);
        let bytes = payload.len() as u64;
        self.backend.put(worker, self.key(random), payload).await?;
        Ok(Outcome { events: 1, bytes, end_to_end_us: Vec::new() })
    }
}

impl Workload for Driven {
    fn step<'a>(&'a self, worker: usize, random: &'a mut fastrand::Rng) -> StepFuture<'a> {
        Box::pin(async move {
            match self.config.kind {
                WorkloadKind::Ingest => self.ingest(worker, random).await,
                WorkloadKind::Cache if random.f64() < self.config.read_ratio => self.get(worker, random).await,
                WorkloadKind::Cache => self.put(worker, random).await,
                WorkloadKind::Mixed => match random.u8(0..3) {
                    0 => self.ingest(worker, random).await,
                    1 => self.get(worker, random).await,
                    _ => self.put(worker, random).await,
                },
                // Even workers produce, odd workers take and acknowledge,
                // `batch` items at a time. Only taken (and acknowledged) items
                // count as events, so the throughput is messages through the
                // queue; a push is a request with a latency but no events.
                WorkloadKind::Queue if worker % 2 == 0 => {
                    // Waiting for room is not part of the push: its latency
                    // is then timed from the request on.
                    let waited = self.wait_for_room().await;
                    let started = std::time::Instant::now();
                    let payloads: Vec<Vec<u8>> = (0..self.config.batch.max(1)).map(|_| self.payload(random)).collect();
                    let count = payloads.len() as u64;
                    self.backend.push(worker, payloads).await?;
                    self.pushed.fetch_add(count, Ordering::Relaxed);
                    let end_to_end_us = if waited { vec![started.elapsed().as_micros() as u64] } else { Vec::new() };
                    Ok(Outcome { events: 0, bytes: 0, end_to_end_us })
                }
                WorkloadKind::Queue => loop {
                    let taken = self.backend.take(worker, self.config.batch.max(1)).await?;
                    self.taken.fetch_add(taken.len() as u64, Ordering::Relaxed);
                    if !taken.is_empty() {
                        let bytes = taken.iter().map(|bytes| *bytes as u64).sum();
                        return Ok(Outcome { events: taken.len() as u64, bytes, end_to_end_us: Vec::new() });
                    }
                    // Empty, or everything leased: wait for producers.
                    tokio::time::sleep(std::time::Duration::from_millis(1)).await;
                },
                // The first workers publish; the others receive, timed end to end.
                WorkloadKind::Fanout if worker < self.config.publishers.max(1) => self.ingest(worker, random).await,
                // Subscribers take what has arrived, up to `batch` events, and
                // time each from its append to now (one clock read, taken
                // after the last of them arrived, so never early).
                WorkloadKind::Fanout => {
                    let received = self.backend.receive(worker, self.config.batch.max(1)).await?;
                    let now_us = ate::chain::now_us();
                    Ok(Outcome {
                        events: received.len() as u64,
                        bytes: received.iter().map(|(_, bytes)| *bytes as u64).sum(),
                        end_to_end_us: received.iter().map(|(sent_us, _)| now_us.saturating_sub(*sent_us)).collect(),
                    })
                }
            }
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
