//! Prometheus metrics over plain HTTP on a separate address (text format
//! 0.0.4): connections, subscribers, commits, rejections by reason, commit
//! latency, subscriber lag, and per chain the appended events and bytes and
//! the latency of each group's write + fdatasync.

use crate::server::Server;
use ate::metrics::{HistogramSnapshot, LatencyHistogram};
use ate_client::protocol::ErrorCode;
use std::collections::HashMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// Error codes counted separately (in this order).
const REJECTION_CODES: [(ErrorCode, &str); 6] = [
    (ErrorCode::Conflict, "conflict"),
    (ErrorCode::Rejected, "rejected"),
    (ErrorCode::TooLarge, "too_large"),
    (ErrorCode::Forbidden, "forbidden"),
    (ErrorCode::Unauthenticated, "unauthenticated"),
    (ErrorCode::BadRequest, "bad_request"),
];

#[derive(Debug, Default)]
pub struct ServerMetrics {
    pub connections_total: AtomicU64,
    pub connections_active: AtomicU64,
    pub subscribers_active: AtomicU64,
    pub commits_total: AtomicU64,
    pub commit_latency: LatencyHistogram,
    rejections: [AtomicU64; REJECTION_CODES.len() + 1],
    /// Where each live subscription's stream is, to report lag.
    streams: parking_lot::Mutex<HashMap<u64, Arc<StreamPosition>>>,
    next_stream: AtomicU64,
}

/// The position of one subscription's stream in its chain.
#[derive(Debug)]
pub struct StreamPosition {
    pub chain: Arc<ate::Chain>,
    /// Sequence of the next event the stream will send.
    pub next_sequence: AtomicU64,
}

/// Unregisters a stream when it ends.
#[derive(Debug)]
pub struct StreamGuard<'a> {
    metrics: &'a ServerMetrics,
    id: u64,
    pub position: Arc<StreamPosition>,
}

impl Drop for StreamGuard<'_> {
    fn drop(&mut self) {
        self.metrics.streams.lock().remove(&self.id);
    }
}

impl ServerMetrics {
    /// Registers a subscription's stream of `chain` starting at `from`.
    pub fn track_stream(&self, chain: Arc<ate::Chain>, from: u64) -> StreamGuard<'_> {
        let id = self.next_stream.fetch_add(1, Ordering::Relaxed);
        let position = Arc::new(StreamPosition { chain, next_sequence: AtomicU64::new(from) });
        self.streams.lock().insert(id, Arc::clone(&position));
        StreamGuard { metrics: self, id, position }
    }

    /// Largest lag (durable events not yet sent) among each chain's
    /// subscriptions, by chain directory name.
    pub fn subscriber_lag(&self) -> Vec<(String, u64)> {
        let mut lag: HashMap<String, u64> = HashMap::new();
        for stream in self.streams.lock().values() {
            let behind = stream.chain.durable_sequence().saturating_sub(stream.next_sequence.load(Ordering::Relaxed));
            let entry = lag.entry(stream.chain.key().directory_name()).or_default();
            *entry = (*entry).max(behind);
        }
        let mut lag: Vec<(String, u64)> = lag.into_iter().collect();
        lag.sort();
        lag
    }

    pub fn rejected(&self, code: ErrorCode) {
        let index = REJECTION_CODES.iter().position(|(known, _)| *known == code).unwrap_or(REJECTION_CODES.len());
        self.rejections[index].fetch_add(1, Ordering::Relaxed);
    }
}

fn histogram(out: &mut String, name: &str, labels: &str, snapshot: &HistogramSnapshot) {
    for (bound, count) in &snapshot.buckets {
        let le = if *bound == u64::MAX { "+Inf".to_string() } else { format!("{}", *bound as f64 / 1e6) };
        let separator = if labels.is_empty() { "" } else { "," };
        let _ = writeln!(out, "{name}_bucket{{{labels}{separator}le=\"{le}\"}} {count}");
    }
    let braces = if labels.is_empty() { String::new() } else { format!("{{{labels}}}") };
    let _ = writeln!(out, "{name}_sum{braces} {}", snapshot.sum_us as f64 / 1e6);
    let _ = writeln!(out, "{name}_count{braces} {}", snapshot.count);
}

/// The exposition text.
pub async fn render(server: &Server) -> String {
    let metrics = server.metrics();
    let mut out = String::new();
    let counter = |out: &mut String, name: &str, help: &str, kind: &str, value: u64| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}");
    };
    // The standard process metric: with the events counted below, the
    // server's CPU per event (throughput on a shared machine drifts more).
    let _ = writeln!(
        out,
        "# HELP process_cpu_seconds_total Total user and system CPU time spent in seconds.\n# TYPE process_cpu_seconds_total counter\nprocess_cpu_seconds_total {:.6}",
        ate::metrics::process_cpu_seconds()
    );
    counter(
        &mut out,
        "atedb_connections_total",
        "Connections accepted.",
        "counter",
        metrics.connections_total.load(Ordering::Relaxed),
    );
    counter(
        &mut out,
        "atedb_connections_active",
        "Open connections.",
        "gauge",
        metrics.connections_active.load(Ordering::Relaxed),
    );
    counter(
        &mut out,
        "atedb_subscribers_active",
        "Live subscriptions.",
        "gauge",
        metrics.subscribers_active.load(Ordering::Relaxed),
    );
    counter(
        &mut out,
        "atedb_commits_total",
        "Commits acknowledged.",
        "counter",
        metrics.commits_total.load(Ordering::Relaxed),
    );
    let _ =
        writeln!(out, "# HELP atedb_rejected_total Requests refused, by reason.\n# TYPE atedb_rejected_total counter");
    for (index, (_, reason)) in REJECTION_CODES.iter().enumerate() {
        let _ = writeln!(
            out,
            "atedb_rejected_total{{reason=\"{reason}\"}} {}",
            metrics.rejections[index].load(Ordering::Relaxed)
        );
    }
    let other = metrics.rejections[REJECTION_CODES.len()].load(Ordering::Relaxed);
    let _ = writeln!(out, "atedb_rejected_total{{reason=\"other\"}} {other}");
    let _ = writeln!(out, "# HELP atedb_commit_seconds Commit latency as served (validation to durable).\n# TYPE atedb_commit_seconds histogram");
    histogram(&mut out, "atedb_commit_seconds", "", &metrics.commit_latency.snapshot());
    let _ = writeln!(
        out,
        "# HELP atedb_subscriber_lag_events Durable events not yet sent to the furthest-behind subscriber, by chain.\n# TYPE atedb_subscriber_lag_events gauge"
    );
    for (chain, lag) in metrics.subscriber_lag() {
        let _ = writeln!(out, "atedb_subscriber_lag_events{{chain=\"{chain}\"}} {lag}");
    }
    let chains = server.open_chains().await;
    counter(&mut out, "atedb_chains_open", "Chains open.", "gauge", chains.len() as u64);
    // One counter family per log figure, a line per open chain.
    let per_chain = |out: &mut String, name: &str, help: &str, value: fn(&ate::metrics::LogMetrics) -> u64| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
        for chain in &chains {
            let _ =
                writeln!(out, "{name}{{chain=\"{}\"}} {}", chain.key().directory_name(), value(chain.log_metrics()));
        }
    };
    per_chain(&mut out, "atedb_chain_events_total", "Events appended.", |log| {
        log.events_appended.load(Ordering::Relaxed)
    });
    per_chain(&mut out, "atedb_chain_bytes_total", "Bytes appended.", |log| log.bytes_appended.load(Ordering::Relaxed));
    per_chain(&mut out, "atedb_chain_zeroed_bytes_total", "Zeros written ahead of the appends.", |log| {
        log.zeroed_bytes.load(Ordering::Relaxed)
    });
    // What each chain holds in memory grows with these.
    let gauge = |out: &mut String, name: &str, help: &str, value: fn(&ate::Chain) -> usize| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
        for chain in &chains {
            let _ = writeln!(out, "{name}{{chain=\"{}\"}} {}", chain.key().directory_name(), value(chain));
        }
    };
    gauge(&mut out, "atedb_chain_objects", "Live objects in the view.", |chain| chain.len());
    gauge(
        &mut out,
        "atedb_chain_trust_entries",
        "Entries of the authority tree (links of live children, authority and retention nodes).",
        |chain| chain.trust_tree_entries(),
    );
    gauge(
        &mut out,
        "atedb_chain_leases",
        "Queue items taken and not yet acknowledged (lease table entries).",
        |chain| chain.leases_held(),
    );
    let _ = writeln!(
        out,
        "# HELP atedb_fsync_seconds Write + fdatasync of one group.\n# TYPE atedb_fsync_seconds histogram"
    );
    for chain in &chains {
        let labels = format!("chain=\"{}\"", chain.key().directory_name());
        histogram(&mut out, "atedb_fsync_seconds", &labels, &chain.log_metrics().sync_latency.snapshot());
    }
    out
}

/// Serves `GET /metrics` (any path) on `listener` until the task is dropped.
pub async fn serve_metrics(listener: TcpListener, server: Arc<Server>) {
    loop {
        let Ok((mut stream, _)) = listener.accept().await else { continue };
        let server = Arc::clone(&server);
        tokio::spawn(async move {
            // The request itself is not needed; read (bounded) what the client sent.
            let mut request = [0u8; 2048];
            let _ = tokio::time::timeout(std::time::Duration::from_secs(5), stream.read(&mut request)).await;
            let body = render(&server).await;
            let response = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(response.as_bytes()).await;
        });
    }
}
