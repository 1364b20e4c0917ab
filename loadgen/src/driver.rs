//! Runs a workload: `workers` concurrent loops for a duration or a count,
//! closed loop (each worker sends as soon as its previous request is
//! answered) or open loop at a fixed total rate. In the open loop latency is
//! measured from the *intended* send time, so a stall is charged to every
//! request it delayed (coordinated-omission correction), not hidden.

use crate::report::{Recorder, Report};
use crate::workload::Workload;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How requests are paced.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum LoadModel {
    /// Maximum throughput: each worker sends when its last request returned.
    Closed,
    /// This many requests per second in total, spread evenly over workers.
    Open { rate_per_s: f64 },
}

/// When a run stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    After(Duration),
    Count(u64),
}

#[derive(Debug, Clone)]
pub struct RunPlan {
    pub workers: usize,
    pub model: LoadModel,
    pub stop: Stop,
    /// Run this long first without recording.
    pub warmup: Duration,
}

/// Live figures for a progress display.
#[derive(Debug)]
pub struct Progress {
    pub requests: AtomicU64,
    pub errors: AtomicU64,
    /// A sample (one request in `SAMPLE_EVERY`) of recent latencies; the
    /// display takes and resets it.
    pub window_us: parking_lot::Mutex<hdrhistogram::Histogram<u64>>,
}

/// Requests per latency sample in the live window (keeps the shared lock cold).
const SAMPLE_EVERY: u64 = 16;

impl Default for Progress {
    fn default() -> Self {
        Self {
            requests: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            window_us: parking_lot::Mutex::new(
                hdrhistogram::Histogram::new_with_bounds(1, 3_600_000_000, 2).expect("valid bounds"),
            ),
        }
    }
}

/// Runs `plan` against `workload`; `progress` is updated as requests finish.
pub async fn run(workload: Arc<dyn Workload>, plan: &RunPlan, progress: Arc<Progress>) -> Report {
    if !plan.warmup.is_zero() {
        let warm = RunPlan { stop: Stop::After(plan.warmup), warmup: Duration::ZERO, ..plan.clone() };
        let _ = run_measured(Arc::clone(&workload), &warm, Arc::new(Progress::default())).await;
    }
    run_measured(workload, plan, progress).await
}

async fn run_measured(workload: Arc<dyn Workload>, plan: &RunPlan, progress: Arc<Progress>) -> Report {
    let workers = plan.workers.max(1);
    let started = Instant::now();
    let cpu_started_s = ate::metrics::process_cpu_seconds();
    // Stopping cancels requests still waiting (a subscriber with nothing to
    // receive, a consumer with nothing to take): they are not counted.
    let (stop_sender, stop) = tokio::sync::watch::channel(false);
    let stop_sender = Arc::new(stop_sender);
    if let Stop::After(limit) = plan.stop {
        let sender = Arc::clone(&stop_sender);
        tokio::spawn(async move {
            tokio::time::sleep(limit).await;
            sender.send_replace(true);
        });
    }
    let issued = Arc::new(AtomicU64::new(0));
    let completed = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::with_capacity(workers);
    for worker in 0..workers {
        let (workload, issued, completed, progress, stop_sender) = (
            Arc::clone(&workload),
            Arc::clone(&issued),
            Arc::clone(&completed),
            Arc::clone(&progress),
            Arc::clone(&stop_sender),
        );
        let mut stop = stop.clone();
        let (model, limit) = (plan.model, plan.stop);
        tasks.push(tokio::spawn(async move {
            let mut recorder = Recorder::new(started);
            let mut random = fastrand::Rng::with_seed(0x5eed ^ worker as u64);
            // Open loop: this worker's share of the rate, phase-shifted so
            // workers do not fire together.
            let interval = match model {
                LoadModel::Open { rate_per_s } => Some(Duration::from_secs_f64(workers as f64 / rate_per_s.max(1e-9))),
                LoadModel::Closed => None,
            };
            let mut intended =
                started + interval.map_or(Duration::ZERO, |every| every.mul_f64(worker as f64 / workers as f64));
            let mut pacer = None;
            loop {
                if *stop.borrow() {
                    break;
                }
                if let Stop::Count(count) = limit {
                    if issued.fetch_add(1, Ordering::Relaxed) >= count {
                        break;
                    }
                }
                let send_time = match interval {
                    Some(every) => {
                        let pacer = pacer.get_or_insert_with(crate::pacing::Pacer::new);
                        tokio::select! {
                            _ = pacer.sleep_until(intended) => {}
                            _ = stop.changed() => break,
                        }
                        let at = intended;
                        intended += every;
                        at
                    }
                    None => Instant::now(),
                };
                let outcome = tokio::select! {
                    outcome = workload.step(worker, &mut random) => outcome,
                    _ = stop.changed() => break,
                };
                if let Stop::Count(count) = limit {
                    // The last answer ends the run (and releases workers
                    // still waiting to receive something).
                    if completed.fetch_add(1, Ordering::Relaxed) + 1 >= count {
                        stop_sender.send_replace(true);
                    }
                }
                match outcome {
                    Ok(outcome) => {
                        let done = Instant::now();
                        recorder.record(send_time, done, &outcome);
                        if progress.requests.fetch_add(1, Ordering::Relaxed) % SAMPLE_EVERY == 0 {
                            let latency_us = match outcome.end_to_end_us.last() {
                                Some(latency_us) => *latency_us,
                                None => done.saturating_duration_since(send_time).as_micros() as u64,
                            };
                            progress.window_us.lock().saturating_record(latency_us.max(1));
                        }
                    }
                    Err(error) => {
                        recorder.error(&error);
                        progress.errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            recorder
        }));
    }
    let mut merged = Recorder::new(started);
    let mut events_per_worker = Vec::with_capacity(workers);
    for (worker, task) in tasks.into_iter().enumerate() {
        match task.await {
            Ok(recorder) => {
                events_per_worker.push(recorder.events());
                merged.merge(recorder);
            }
            // Its events are lost with it: an error says why a worker shows none.
            Err(error) => {
                events_per_worker.push(0);
                merged.error(&format!("worker {worker} ended abnormally: {error}"));
            }
        }
    }
    stop_sender.send_replace(true);
    let cpu_s = ate::metrics::process_cpu_seconds() - cpu_started_s;
    Report { events_per_worker, cpu_s, ..merged.finish(started.elapsed()) }
}
