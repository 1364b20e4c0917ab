//! The measurement itself: known latencies come out as known percentiles,
//! the open loop holds its rate and charges stalls to every request they
//! delayed (coordinated omission), and the JSON report keeps its fields.

use ate_loadgen::driver::{run, LoadModel, Progress, RunPlan, Stop};
use ate_loadgen::workload::{Outcome, StepFuture, Workload};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Answers after a fixed delay; call number `stall_at` takes `stall` instead.
struct Synthetic {
    delay: Duration,
    stall_at: Option<u64>,
    stall: Duration,
    calls: AtomicU64,
}

impl Workload for Synthetic {
    fn step<'a>(&'a self, _worker: usize, _random: &'a mut fastrand::Rng) -> StepFuture<'a> {
        Box::pin(async move {
            let call = self.calls.fetch_add(1, Ordering::Relaxed);
            let wait = if Some(call) == self.stall_at { self.stall } else { self.delay };
            if !wait.is_zero() {
                tokio::time::sleep(wait).await;
            }
            Ok(Outcome { events: 1, bytes: 100, end_to_end_us: Vec::new() })
        })
    }
}

fn synthetic(delay: Duration, stall_at: Option<u64>, stall: Duration) -> Arc<Synthetic> {
    Arc::new(Synthetic { delay, stall_at, stall, calls: AtomicU64::new(0) })
}

/// `workers` sending as fast as they are answered, until `stop`, no warm-up.
fn closed_loop(workers: usize, stop: Stop) -> RunPlan {
    RunPlan { workers, model: LoadModel::Closed, stop, warmup: Duration::ZERO }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_known_latency_comes_out_as_the_percentiles() {
    let plan = closed_loop(4, Stop::Count(200));
    let report = run(synthetic(Duration::from_millis(5), None, Duration::ZERO), &plan, Default::default()).await;
    assert_eq!(report.events, 200);
    assert_eq!(report.bytes, 200 * 100);
    assert_eq!(report.errors, 0);
    // Timer granularity adds a little; never less than the delay.
    let latency = &report.latency_us;
    assert!(latency.p50 >= 5_000 && latency.p50 < 15_000, "{latency:?}");
    assert!(latency.p50 <= latency.p90 && latency.p90 <= latency.p99 && latency.p99 <= latency.max);
}

/// Delivers four events per request, each with its own end-to-end latency
/// (as a fan-out subscriber taking what has arrived does).
struct Batched;

impl Workload for Batched {
    fn step<'a>(&'a self, _worker: usize, _random: &'a mut fastrand::Rng) -> StepFuture<'a> {
        Box::pin(async move { Ok(Outcome { events: 4, bytes: 400, end_to_end_us: vec![100, 200, 300, 90_000] }) })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_event_of_a_batch_counts_with_its_own_latency() {
    let plan = closed_loop(2, Stop::Count(100));
    let report = run(Arc::new(Batched), &plan, Default::default()).await;
    assert_eq!((report.requests, report.events, report.bytes), (100, 400, 40_000));
    // A quarter of the events took 90 ms: the p75 is 300 µs, the p90 and
    // max 90 ms (within the histogram's three significant digits); the
    // request's own round trip (microseconds) appears nowhere.
    let latency = &report.latency_us;
    assert_eq!(latency.p50, 200, "{latency:?}");
    assert!((89_900..=90_100).contains(&latency.p90), "{latency:?}");
    assert!((89_900..=90_100).contains(&latency.max), "{latency:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_open_loop_holds_its_rate_and_charges_a_stall_to_every_delayed_request() {
    let stall = Duration::from_millis(300);
    let open = RunPlan {
        workers: 1,
        model: LoadModel::Open { rate_per_s: 200.0 },
        stop: Stop::After(Duration::from_millis(1500)),
        warmup: Duration::ZERO,
    };
    let report = run(synthetic(Duration::ZERO, Some(20), stall), &open, Arc::new(Progress::default())).await;
    // 1.5 s at 200/s: about 300 requests (the stall is caught up afterwards).
    assert!((250..=310).contains(&report.requests), "{}", report.requests);
    // About 60 requests were due during the stall: each is charged its wait,
    // so the stall shows at the 90th percentile, not only in the maximum.
    assert!(report.latency_us.max >= 290_000, "{:?}", report.latency_us);
    assert!(report.latency_us.p90 >= 50_000, "{:?}", report.latency_us);

    // The closed loop cannot see it: one slow request among many.
    let closed = closed_loop(1, Stop::Count(300));
    let report = run(synthetic(Duration::ZERO, Some(20), stall), &closed, Default::default()).await;
    assert!(report.latency_us.max >= 290_000);
    assert!(report.latency_us.p90 < 50_000, "{:?}", report.latency_us);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_json_report_keeps_its_stable_fields() {
    let plan = closed_loop(2, Stop::Count(50));
    let report = run(synthetic(Duration::from_millis(1), None, Duration::ZERO), &plan, Default::default()).await;
    let json = report.to_json("ingest", "synthetic", serde_json::json!({ "workers": 2 }));
    assert_eq!(json["workload"], "ingest");
    assert_eq!(json["target"], "synthetic");
    assert_eq!(json["events"], 50);
    assert_eq!(json["errors"], 0);
    assert!(json["throughput_events_per_s"].as_f64().unwrap() > 0.0);
    assert!(json["throughput_mb_per_s"].as_f64().unwrap() > 0.0);
    for field in ["p50", "p90", "p99", "p999", "max"] {
        assert!(json["latency_us"][field].as_u64().unwrap() >= 1_000, "{field}");
    }
    assert_eq!(json["config"]["workers"], 2);
    assert!(json["timeline"].as_array().is_some_and(|seconds| !seconds.is_empty()));
    assert!(json["loadgen_cpu_s"].as_f64().is_some_and(|cpu_s| cpu_s >= 0.0));
}

/// Each request spins the CPU for 2 ms.
struct Spinning;

impl Workload for Spinning {
    fn step<'a>(&'a self, _worker: usize, _random: &'a mut fastrand::Rng) -> StepFuture<'a> {
        Box::pin(async move {
            // Spins for 2 ms of this process's CPU time, not of wall time: a
            // thread preempted by other tests would otherwise spin for less.
            let until = ate::metrics::process_cpu_seconds() + 0.002;
            while ate::metrics::process_cpu_seconds() < until {
                std::hint::spin_loop();
            }
            Ok(Outcome { events: 1, bytes: 1, end_to_end_us: Vec::new() })
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_report_counts_the_cpu_time_of_the_measured_run() {
    // 100 requests of 2 ms of CPU each: at least 0.2 s of CPU, whatever the
    // machine's speed or load. (Other tests in this process may add to it, so
    // there is no upper bound here.)
    let report = run(Arc::new(Spinning), &closed_loop(1, Stop::Count(100)), Default::default()).await;
    assert!(report.cpu_s >= 0.19, "{} s of CPU", report.cpu_s);
    assert!(report.table("ingest", "spinning").contains("µs per event"));
}

/// Worker 0 publishes 64 events a request; worker `n` of the others
/// receives `n` events a request, so the subscribers run at known, uneven rates.
struct UnevenFanout;

impl Workload for UnevenFanout {
    fn step<'a>(&'a self, worker: usize, _random: &'a mut fastrand::Rng) -> StepFuture<'a> {
        Box::pin(async move {
            tokio::time::sleep(Duration::from_millis(2)).await;
            let events = if worker == 0 { 64 } else { worker as u64 };
            Ok(Outcome { events, bytes: events, end_to_end_us: vec![100; events as usize] })
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fanout_report_names_its_slowest_subscriber_not_an_average() {
    let plan = closed_loop(4, Stop::After(Duration::from_millis(400)));
    let mut report = run(Arc::new(UnevenFanout), &plan, Default::default()).await;
    let per_worker = report.events_per_worker.clone();
    assert_eq!(per_worker.len(), 4);
    assert_eq!(per_worker.iter().sum::<u64>(), report.events, "every event belongs to one worker");
    // Each worker made about the same number of requests (2 ms apart).
    let requests: Vec<u64> = per_worker.iter().zip([64, 1, 2, 3]).map(|(events, each)| events / each).collect();
    assert!(requests.iter().all(|count| *count > 20), "{per_worker:?}");

    let fanout = ate_loadgen::report::Fanout::from_workers(&per_worker, 1, report.elapsed_s).unwrap();
    assert_eq!(fanout.subscribers, 3);
    let rate = |events: u64| events as f64 / report.elapsed_s;
    assert_eq!(fanout.published_events_per_s, rate(per_worker[0]));
    assert_eq!(fanout.slowest_subscriber_events_per_s, rate(per_worker[1]));
    assert_eq!(fanout.fastest_subscriber_events_per_s, rate(per_worker[3]));
    assert!(fanout.slowest_subscriber_events_per_s < report.throughput_events_per_s / 4.0, "below the average");
    assert_eq!(ate_loadgen::report::Fanout::from_workers(&per_worker, 4, report.elapsed_s), None, "no subscriber");

    report.fanout = Some(fanout);
    let json = report.to_json("fanout", "synthetic", serde_json::Value::Null);
    assert_eq!(json["events_per_worker"].as_array().map(Vec::len), Some(4));
    assert_eq!(json["fanout"]["subscribers"], 3);
    assert!(json["fanout"]["slowest_subscriber_events_per_s"].as_f64().unwrap() > 0.0);
    assert!(report.table("fanout", "synthetic").contains("3 subscribers, slowest"));
}

/// Worker 1 panics on its third request; the others answer.
struct PanickingWorker {
    calls: AtomicU64,
}

impl Workload for PanickingWorker {
    fn step<'a>(&'a self, worker: usize, _random: &'a mut fastrand::Rng) -> StepFuture<'a> {
        Box::pin(async move {
            tokio::time::sleep(Duration::from_millis(1)).await;
            if worker == 1 && self.calls.fetch_add(1, Ordering::Relaxed) == 2 {
                panic!("a worker's own bug");
            }
            Ok(Outcome { events: 1, bytes: 1, end_to_end_us: Vec::new() })
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_that_panics_is_an_error_and_keeps_its_place() {
    // A count, not a time: on a busy machine a 200 ms window once left the
    // others two steps each. 600 requests are issued in all; worker 1's
    // third (its panic) is one of them, its two answered ones go with it.
    let plan = closed_loop(3, Stop::Count(600));
    let report = run(Arc::new(PanickingWorker { calls: AtomicU64::new(0) }), &plan, Default::default()).await;
    let per_worker = &report.events_per_worker;
    assert_eq!(per_worker.len(), 3);
    assert_eq!(per_worker[1], 0, "its events went with it: {per_worker:?}");
    assert!(per_worker[0] > 0 && per_worker[2] > 0, "{per_worker:?}");
    assert_eq!(per_worker[0] + per_worker[2], 600 - 3, "the others answered everything else: {per_worker:?}");
    assert_eq!(report.errors, 1);
    assert!(
        report.error_kinds.keys().any(|kind| kind.starts_with("worker 1 ended abnormally")),
        "{:?}",
        report.error_kinds
    );
}

/// A queue that only counts: what was pushed and what was taken, each
/// request taking `delays` (push, take).
struct CountingQueue {
    pushed: AtomicU64,
    taken: AtomicU64,
    delays: (Duration, Duration),
}

impl Default for CountingQueue {
    fn default() -> Self {
        Self::with_delays(Duration::from_micros(200), Duration::from_micros(300))
    }
}

impl CountingQueue {
    fn with_delays(push: Duration, take: Duration) -> Self {
        Self { pushed: AtomicU64::new(0), taken: AtomicU64::new(0), delays: (push, take) }
    }
}

impl ate_loadgen::workload::Backend for CountingQueue {
    fn append(&self, _: usize, _: Vec<(String, Vec<u8>)>) -> ate_loadgen::workload::BackendFuture<'_, ()> {
        Box::pin(async { Err("not a queue call".to_string()) })
    }
    fn put(&self, _: usize, _: String, _: Vec<u8>) -> ate_loadgen::workload::BackendFuture<'_, ()> {
        Box::pin(async { Err("not a queue call".to_string()) })
    }
    fn get(&self, _: usize, _: String) -> ate_loadgen::workload::BackendFuture<'_, Option<usize>> {
        Box::pin(async { Err("not a queue call".to_string()) })
    }
    fn push(&self, _: usize, payloads: Vec<Vec<u8>>) -> ate_loadgen::workload::BackendFuture<'_, ()> {
        self.pushed.fetch_add(payloads.len() as u64, Ordering::SeqCst);
        Box::pin(async {
            tokio::time::sleep(self.delays.0).await;
            Ok(())
        })
    }
    fn take(&self, _: usize, max: usize) -> ate_loadgen::workload::BackendFuture<'_, Vec<usize>> {
        Box::pin(async move {
            tokio::time::sleep(self.delays.1).await;
            let waiting = self.pushed.load(Ordering::SeqCst) - self.taken.load(Ordering::SeqCst);
            let count = waiting.min(max as u64);
            self.taken.fetch_add(count, Ordering::SeqCst);
            Ok(vec![100; count as usize])
        })
    }
    fn subscribe(&self, _: usize) -> ate_loadgen::workload::BackendFuture<'_, ()> {
        Box::pin(async { Err("not a queue call".to_string()) })
    }
    fn receive(&self, _: usize, _: usize) -> ate_loadgen::workload::BackendFuture<'_, Vec<(u64, usize)>> {
        Box::pin(async { Err("not a queue call".to_string()) })
    }
    fn settings(&self) -> String {
        "counting queue".to_string()
    }
}

/// A queue workload of 100-byte items in batches of 8.
fn queue_config(max_backlog: u64) -> ate_loadgen::workload::WorkloadConfig {
    use ate_loadgen::workload::{KeyDistribution, MessageSize, WorkloadConfig, WorkloadKind};
    WorkloadConfig {
        kind: WorkloadKind::Queue,
        message: MessageSize::Fixed(100),
        keys: 10,
        distribution: KeyDistribution::Uniform,
        batch: 8,
        publishers: 1,
        read_ratio: 0.5,
        max_backlog,
        durability: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queue_counts_each_message_once_when_it_is_taken() {
    use ate_loadgen::workload::build;
    let queue = Arc::new(CountingQueue::default());
    let load = build(&queue_config(0), Arc::clone(&queue) as Arc<dyn ate_loadgen::workload::Backend>, 4).await.unwrap();
    let plan = closed_loop(4, Stop::After(Duration::from_millis(300)));
    let report = run(load, &plan, Default::default()).await;
    let (pushed, taken) = (queue.pushed.load(Ordering::SeqCst), queue.taken.load(Ordering::SeqCst));
    assert!(taken > 0 && pushed >= taken, "pushed {pushed}, taken {taken}");
    // Pushes are requests, not events: every message counts once, when taken.
    assert_eq!(report.events, taken, "pushed {pushed}, taken {taken}");
    assert_eq!(report.bytes, taken * 100);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_producers_wait_while_the_backlog_is_full() {
    use ate_loadgen::workload::build;
    // Producers twice as fast as consumers: without a limit the backlog grows.
    let backlog_after = |max_backlog: u64| async move {
        let queue = Arc::new(CountingQueue::with_delays(Duration::from_millis(1), Duration::from_millis(2)));
        let load = build(&queue_config(max_backlog), Arc::clone(&queue) as Arc<dyn ate_loadgen::workload::Backend>, 4)
            .await
            .unwrap();
        let report = run(load, &closed_loop(4, Stop::After(Duration::from_millis(400))), Default::default()).await;
        let (pushed, taken) = (queue.pushed.load(Ordering::SeqCst), queue.taken.load(Ordering::SeqCst));
        assert!(taken > 0 && report.errors == 0, "pushed {pushed}, taken {taken}");
        pushed - taken
    };
    // Two producers may each have one batch of 8 on its way past the limit.
    let limited = backlog_after(40).await;
    assert!(limited <= 40 + 2 * 8, "backlog {limited} with a limit of 40");
    let unlimited = backlog_after(0).await;
    assert!(unlimited > 2 * (40 + 2 * 8), "backlog {unlimited} without a limit");
}
