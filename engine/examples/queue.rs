//! Work queue with exactly-once acknowledgement: two workers compete for
//! jobs; one walks away from a job without acknowledging it, and the job is
//! delivered again when its lease runs out. Nothing is lost or done twice.
//!
//! Run: `cargo run --example queue -p ate`

use ate::messaging::{Queue, QueueConfig};
use ate::prelude::*;
use std::time::Duration;

#[tokio::main]
async fn main() -> Result<(), AteError> {
    let builder = ChainBuilder::new(&AteConfig::default()).await.build();
    let chain = builder.open(&ChainKey::from("work")).await?;
    let session = AteSession::default();
    let queue = Queue::new(
        &chain,
        &session,
        "thumbnails",
        QueueConfig { lease: Duration::from_millis(300), max_deliveries: 3 },
    );
    queue.push_many((1..=6).map(|n| format!("photo-{n}.jpg"))).await?;
    println!("pushed 6 jobs");

    let mut done = Vec::new();
    let mut flaky_worker_dropped_one = false;
    while !queue.is_empty() {
        let Some(job) = queue.take::<String>().await? else {
            // Everything left is leased: wait for leases to expire.
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        if !flaky_worker_dropped_one {
            flaky_worker_dropped_one = true;
            println!("worker A took {} (delivery {}) and crashed", job.value, job.deliveries);
            continue;
        }
        println!("worker B took {} (delivery {}) and acknowledged it", job.value, job.deliveries);
        done.push(job.value.clone());
        queue.ack(job).await?;
    }
    done.sort();
    println!("done: {} jobs, each exactly once: {:?}", done.len(), done);
    Ok(())
}
