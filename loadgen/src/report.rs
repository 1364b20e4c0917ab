//! Recording and reporting: HdrHistogram latencies (1 µs to 1 h, three
//! significant digits), throughput, errors, a per-second timeline, and the
//! JSON whose top-level fields scripts rely on.

use crate::workload::Outcome;
use hdrhistogram::Histogram;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

const HIGHEST_TRACKABLE_US: u64 = 3_600_000_000;
/// Quantiles of the plotted spectrum.
const SPECTRUM_QUANTILES: [f64; 11] = [0.5, 0.75, 0.9, 0.95, 0.99, 0.995, 0.999, 0.9995, 0.9999, 0.99999, 1.0];
/// Distinct error messages kept (the rest are only counted).
const MAX_ERROR_KINDS: usize = 16;

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, HIGHEST_TRACKABLE_US, 3).expect("valid histogram bounds")
}

/// One second of the run.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Second {
    pub requests: u64,
    pub events: u64,
    pub latency_us_p99: u64,
}

/// What one worker (then the whole run) saw.
#[derive(Debug)]
pub struct Recorder {
    started: Instant,
    latency_us: Histogram<u64>,
    per_second: Vec<(u64, u64, Histogram<u64>)>,
    requests: u64,
    events: u64,
    bytes: u64,
    errors: u64,
    error_kinds: BTreeMap<String, u64>,
}

impl Recorder {
    pub fn new(started: Instant) -> Self {
        Self {
            started,
            latency_us: histogram(),
            per_second: Vec::new(),
            requests: 0,
            events: 0,
            bytes: 0,
            errors: 0,
            error_kinds: BTreeMap::new(),
        }
    }

    /// A request intended at `sent` (the schedule, in the open loop) and
    /// answered at `done`.
    pub fn record(&mut self, sent: Instant, done: Instant, outcome: &Outcome) {
        let round_trip_us = [done.saturating_duration_since(sent).as_micros() as u64];
        let measured: &[u64] = if outcome.end_to_end_us.is_empty() { &round_trip_us } else { &outcome.end_to_end_us };
        self.requests += 1;
        self.events += outcome.events;
        self.bytes += outcome.bytes;
        let second = done.saturating_duration_since(self.started).as_secs() as usize;
        while self.per_second.len() <= second {
            self.per_second.push((0, 0, histogram()));
        }
        let slot = &mut self.per_second[second];
        slot.0 += 1;
        slot.1 += outcome.events;
        // Events of one commit arrive together with one latency: each run
        // of equal values is recorded once, with its count (a fan-out run
        // records every event of 16 subscribers).
        for run in measured.chunk_by(|a, b| a == b) {
            let latency_us = run[0].clamp(1, HIGHEST_TRACKABLE_US);
            let count = run.len() as u64;
            self.latency_us.saturating_record_n(latency_us, count);
            slot.2.saturating_record_n(latency_us, count);
        }
    }

    pub fn error(&mut self, message: &str) {
        self.errors += 1;
        if self.error_kinds.len() < MAX_ERROR_KINDS || self.error_kinds.contains_key(message) {
            *self.error_kinds.entry(message.to_string()).or_default() += 1;
        }
    }

    /// Events counted so far.
    pub fn events(&self) -> u64 {
        self.events
    }

    pub fn merge(&mut self, other: Recorder) {
        self.latency_us.add(&other.latency_us).expect("same bounds");
        self.requests += other.requests;
        self.events += other.events;
        self.bytes += other.bytes;
        self.errors += other.errors;
        for (message, count) in other.error_kinds {
            if self.error_kinds.len() < MAX_ERROR_KINDS || self.error_kinds.contains_key(&message) {
                *self.error_kinds.entry(message).or_default() += count;
            }
        }
        for (index, (requests, events, latency)) in other.per_second.into_iter().enumerate() {
            while self.per_second.len() <= index {
                self.per_second.push((0, 0, histogram()));
            }
            let slot = &mut self.per_second[index];
            slot.0 += requests;
            slot.1 += events;
            slot.2.add(&latency).expect("same bounds");
        }
    }

    /// The report, with no CPU time (the driver measures it).
    pub fn finish(self, elapsed: Duration) -> Report {
        let seconds = elapsed.as_secs_f64().max(1e-9);
        let percentile =
            |quantile: f64| if self.requests == 0 { 0 } else { self.latency_us.value_at_quantile(quantile) };
        Report {
            elapsed_s: elapsed.as_secs_f64(),
            requests: self.requests,
            events: self.events,
            bytes: self.bytes,
            errors: self.errors,
            error_kinds: self.error_kinds,
            throughput_events_per_s: self.events as f64 / seconds,
            throughput_mb_per_s: self.bytes as f64 / seconds / 1e6,
            latency_us: Percentiles {
                p50: percentile(0.50),
                p90: percentile(0.90),
                p99: percentile(0.99),
                p999: percentile(0.999),
                max: if self.requests == 0 { 0 } else { self.latency_us.max() },
            },
            spectrum: if self.requests == 0 {
                Vec::new()
            } else {
                SPECTRUM_QUANTILES
                    .iter()
                    .map(|quantile| (*quantile, self.latency_us.value_at_quantile(*quantile)))
                    .collect()
            },
            timeline: self
                .per_second
                .iter()
                .map(|(requests, events, latency)| Second {
                    requests: *requests,
                    events: *events,
                    latency_us_p99: if *requests == 0 { 0 } else { latency.value_at_quantile(0.99) },
                })
                .collect(),
            events_per_worker: Vec::new(),
            fanout: None,
            cpu_s: 0.0,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Percentiles {
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub p999: u64,
    pub max: u64,
}

/// The result of one run.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Report {
    pub elapsed_s: f64,
    pub requests: u64,
    pub events: u64,
    pub bytes: u64,
    pub errors: u64,
    pub error_kinds: BTreeMap<String, u64>,
    pub throughput_events_per_s: f64,
    pub throughput_mb_per_s: f64,
    pub latency_us: Percentiles,
    /// (quantile, latency µs) from the median to the maximum, for plots.
    pub spectrum: Vec<(f64, u64)>,
    pub timeline: Vec<Second>,
    /// Events each worker counted, in worker order.
    pub events_per_worker: Vec<u64>,
    /// Set for fan-out runs: how fast the slowest subscriber kept up.
    pub fanout: Option<Fanout>,
    /// CPU time (user and system) this process spent during the measured
    /// run: the load generator's own cost, and with `--embedded` the
    /// engine's too. Throughput on a shared machine drifts; CPU per event
    /// drifts less.
    pub cpu_s: f64,
}

/// A fan-out run seen per subscriber: "every subscriber ≥ N events/s" is
/// about the slowest one, which a total over all of them hides.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Fanout {
    pub subscribers: usize,
    pub published_events_per_s: f64,
    pub slowest_subscriber_events_per_s: f64,
    pub fastest_subscriber_events_per_s: f64,
}

impl Fanout {
    /// The first `publishers` workers (at least one, as the workload has
    /// it) published; the others subscribed. `None` when no worker
    /// subscribed. Subscribers may still drain events published during the
    /// warm-up, so in a short run the slowest can exceed the published rate.
    pub fn from_workers(events_per_worker: &[u64], publishers: usize, elapsed_s: f64) -> Option<Self> {
        let publishers = publishers.max(1).min(events_per_worker.len());
        let (published, received) = events_per_worker.split_at(publishers);
        let seconds = elapsed_s.max(1e-9);
        Some(Self {
            subscribers: received.len(),
            published_events_per_s: published.iter().sum::<u64>() as f64 / seconds,
            slowest_subscriber_events_per_s: *received.iter().min()? as f64 / seconds,
            fastest_subscriber_events_per_s: *received.iter().max()? as f64 / seconds,
        })
    }
}

impl Report {
    /// The human summary table.
    pub fn table(&self, workload: &str, target: &str) -> String {
        let latency = &self.latency_us;
        let fanout = self.fanout.as_ref().map_or(String::new(), |fanout| {
            format!(
                "fan-out      published {:.0} events/s; {} subscribers, slowest {:.0} events/s, fastest {:.0}\n",
                fanout.published_events_per_s,
                fanout.subscribers,
                fanout.slowest_subscriber_events_per_s,
                fanout.fastest_subscriber_events_per_s
            )
        });
        // Per published event in a fan-out run (what the producer pays for).
        let counted =
            self.fanout.as_ref().map_or(self.events as f64, |fanout| fanout.published_events_per_s * self.elapsed_s);
        let cpu = format!(
            "cpu          {:.2} s in this process ({:.2} µs per event)\n",
            self.cpu_s,
            self.cpu_s * 1e6 / counted.max(1.0)
        );
        format!(
            "workload     {workload}\ntarget       {target}\nelapsed      {:.1} s\nevents       {}  ({} requests, {} errors)\nthroughput   {:.0} events/s  {:.2} MB/s\nlatency µs   p50 {}  p90 {}  p99 {}  p99.9 {}  max {}\n{fanout}{cpu}",
            self.elapsed_s,
            self.events,
            self.requests,
            self.errors,
            self.throughput_events_per_s,
            self.throughput_mb_per_s,
            latency.p50,
            latency.p90,
            latency.p99,
            latency.p999,
            latency.max
        )
    }

    /// The JSON report. Stable top-level fields: `workload`, `target`,
    /// `events`, `errors`, `throughput_events_per_s`, `throughput_mb_per_s`,
    /// `latency_us` {`p50`, `p90`, `p99`, `p999`, `max`}; plus `config`
    /// (every setting of the run), `requests`, `bytes`, `elapsed_s`,
    /// `error_kinds`, `timeline` (per second), `events_per_worker`,
    /// `loadgen_cpu_s` (this process's CPU time during the run), and
    /// `fanout` (null unless the workload is one).
    pub fn to_json(&self, workload: &str, target: &str, config: serde_json::Value) -> serde_json::Value {
        let latency = &self.latency_us;
        let fanout = self.fanout.as_ref().map(|fanout| {
            serde_json::json!({
                "subscribers": fanout.subscribers,
                "published_events_per_s": fanout.published_events_per_s,
                "slowest_subscriber_events_per_s": fanout.slowest_subscriber_events_per_s,
                "fastest_subscriber_events_per_s": fanout.fastest_subscriber_events_per_s,
            })
        });
        serde_json::json!({
            "workload": workload,
            "target": target,
            "events": self.events,
            "errors": self.errors,
            "throughput_events_per_s": self.throughput_events_per_s,
            "throughput_mb_per_s": self.throughput_mb_per_s,
            "latency_us": {
                "p50": latency.p50,
                "p90": latency.p90,
                "p99": latency.p99,
                "p999": latency.p999,
                "max": latency.max,
            },
            "requests": self.requests,
            "bytes": self.bytes,
            "elapsed_s": self.elapsed_s,
            "error_kinds": self.error_kinds,
            "latency_spectrum_us": self.spectrum.iter().map(|(quantile, value)| serde_json::json!({ "quantile": quantile, "latency_us": value })).collect::<Vec<_>>(),
            "timeline": self.timeline.iter().map(|second| serde_json::json!({
                "requests": second.requests,
                "events": second.events,
                "latency_us_p99": second.latency_us_p99,
            })).collect::<Vec<_>>(),
            "events_per_worker": self.events_per_worker,
            "loadgen_cpu_s": self.cpu_s,
            "fanout": fanout,
            "config": config,
        })
    }
}
