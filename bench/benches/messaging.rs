//! D4 (fan-out: one producer, 16 subscribers) and D5 (queue: producers and
//! competing consumers with acknowledgements), embedded, `Batched`
//! durability, 1 KiB payloads. Prints its own figures (throughput per
//! subscriber, end-to-end latency percentiles) rather than criterion's,
//! because the figures that matter are per subscriber and per message.

use ate::messaging::{Queue, QueueConfig, StartAt};
use ate::prelude::*;
use ate_bench::{config, payload, scratch_dir};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const SUBSCRIBERS: usize = 16;

fn percentile(sorted: &[u64], fraction: f64) -> u64 {
    sorted[((sorted.len() as f64 - 1.0) * fraction) as usize]
}

async fn fan_out(events: u64) {
    let dir = scratch_dir();
    let chain = ChainBuilder::new(&config(dir.path(), StorageBackend::IoUring))
        .await
        .build()
        .open(&ChainKey::from("d4"))
        .await
        .unwrap();
    let session = AteSession::default();
    let body = payload(1016, 7);
    let started = Instant::now();
    let mut readers = Vec::new();
    for _ in 0..SUBSCRIBERS {
        let mut subscription = chain.subscribe(&session, StartAt::Now).unwrap();
        readers.push(tokio::spawn(async move {
            let mut latencies_us = Vec::with_capacity(events as usize);
            for _ in 0..events {
                let event = subscription.next().await.unwrap();
                let bytes = event.payload.unwrap();
                let sent_us = u64::from_le_bytes(bytes[..8].try_into().unwrap());
                let now_us =
                    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_micros() as u64;
                latencies_us.push(now_us.saturating_sub(sent_us));
            }
            (Instant::now(), latencies_us)
        }));
    }
    let producer = {
        let chain = Arc::clone(&chain);
        tokio::spawn(async move {
            for batch in 0..events / 1000 {
                let now_us =
                    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_micros() as u64;
                let batch_events = (0..1000u64)
                    .map(|i| {
                        let mut value = now_us.to_le_bytes().to_vec();
                        value.extend_from_slice(&body);
                        NewEvent::data(PrimaryKey::from_u128(((batch * 1000 + i) as u128) << 1 | 1), value)
                    })
                    .collect();
                chain.append(batch_events, None).await.unwrap();
            }
        })
    };
    producer.await.unwrap();
    let mut slowest = 0.0f64;
    let mut all = Vec::new();
    for reader in readers {
        let (finished, latencies) = reader.await.unwrap();
        slowest = slowest.max(finished.duration_since(started).as_secs_f64());
        all.extend(latencies);
    }
    all.sort_unstable();
    println!(
        "D4 fan-out: {events} events x {SUBSCRIBERS} subscribers: slowest subscriber {:.0} events/s; end-to-end p50 {} us, p99 {} us, max {} us",
        events as f64 / slowest,
        percentile(&all, 0.5),
        percentile(&all, 0.99),
        all[all.len() - 1]
    );
}

async fn queue(items: u64, consumers: usize) {
    let dir = scratch_dir();
    let chain = ChainBuilder::new(&config(dir.path(), StorageBackend::IoUring))
        .await
        .build()
        .open(&ChainKey::from("d5"))
        .await
        .unwrap();
    let session = AteSession::default();
    let queue = Queue::new(&chain, &session, "d5", QueueConfig { lease: Duration::from_secs(30), max_deliveries: 5 });
    // Stored as bytes, not as serde's sequence of u8 (which postcard would
    // encode and decode one element at a time: 15% of this benchmark's
    // CPU), the way `ate-loadgen` stores queue values.
    let body = serde_bytes::ByteBuf::from(payload(1024, 8));
    let started = Instant::now();
    let producer = {
        let queue = queue.clone();
        tokio::spawn(async move {
            for _ in 0..items / 100 {
                queue.push_many((0..100).map(|_| body.clone())).await.unwrap();
            }
        })
    };
    // The run ends at the last acknowledgement, not when the consumers
    // notice the queue stayed empty (their idle exit adds 200 ms).
    let acked_total = Arc::new(AtomicU64::new(0));
    let mut workers = Vec::new();
    for _ in 0..consumers {
        let queue = queue.clone();
        let acked_total = Arc::clone(&acked_total);
        workers.push(tokio::spawn(async move {
            let mut last_ack = started;
            let mut idle = 0;
            while acked_total.load(Ordering::Relaxed) < items {
                let batch = queue.take_many::<serde_bytes::ByteBuf>(100).await.unwrap();
                if batch.is_empty() {
                    if idle > 200 {
                        break;
                    }
                    idle += 1;
                    tokio::time::sleep(Duration::from_millis(1)).await;
                    continue;
                }
                idle = 0;
                let acked = queue.ack_many(batch).await.unwrap() as u64;
                acked_total.fetch_add(acked, Ordering::Relaxed);
                last_ack = Instant::now();
            }
            last_ack
        }));
    }
    producer.await.unwrap();
    let mut finished = started;
    for worker in workers {
        finished = finished.max(worker.await.unwrap());
    }
    let acked = acked_total.load(Ordering::Relaxed);
    let elapsed = (finished - started).as_secs_f64();
    println!(
        "D5 queue: {items} items, {consumers} competing consumers taking and acknowledging batches of up to 100: {acked} acknowledged ({}), {:.0} msgs/s end to end",
        if acked == items && queue.is_empty() { "none lost, none twice" } else { "MISMATCH" },
        items as f64 / elapsed
    );
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    runtime.block_on(async {
        fan_out(5_000).await; // warm-up
        for _ in 0..3 {
            fan_out(100_000).await;
        }
        queue(2_000, 4).await; // warm-up
        for _ in 0..3 {
            queue(100_000, 4).await;
        }
    });
}
