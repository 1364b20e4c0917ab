//! `ate-loadgen`: realistic workloads against the embedded engine or an
//! `atedb` server, with honest percentiles (HdrHistogram, open-loop runs
//! corrected for coordinated omission) and reports scripts can read.
//!
//! - `workload`: the workloads (ingest, cache, queue, fanout, mixed), key and size distributions;
//! - `driver`: workers, closed and open load models, stopping; `pacing`: open-loop sends on time;
//! - `report`: recording, the summary table, the JSON report; `html`: the self-contained HTML report;
//! - `target`: what a run drives (ATE embedded or remote); `peers`: Redis and NATS JetStream.

pub mod driver;
pub mod html;
pub mod pacing;
pub mod peers;
pub mod report;
pub mod target;
pub mod workload;
