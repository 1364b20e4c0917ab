//! `ate-loadgen run`: drives a workload against the embedded engine, an
//! `atedb` server or a peer and reports throughput and latency percentiles;
//! `ate-loadgen compare`: the same workload against ATE and each peer,
//! alternating, with the ratios.
//!
//! Exit codes: 0 the run completed (errors, if any, are in the report);
//! 2 bad usage; 3 the target could not be opened or a report not written.

use ate::Durability;
use ate_loadgen::driver::{self, LoadModel, Progress, RunPlan, Stop};
use ate_loadgen::html;
use ate_loadgen::report::{Fanout, Report};
use ate_loadgen::target::{AckSink, Target};
use ate_loadgen::workload::{self, KeyDistribution, MessageSize, WorkloadConfig, WorkloadKind};
use clap::{Parser, Subcommand, ValueEnum};
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, Parser)]
#[command(name = "ate-loadgen", version, about = "Load generator and benchmark for ATE")]
struct Arguments {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run one workload against one target.
    Run(RunArguments),
    /// Run the same workload against ATE and each peer, alternating, and print the ratios.
    Compare(CompareArguments),
}

#[derive(Debug, clap::Args)]
struct CompareArguments {
    #[command(flatten)]
    run: RunArguments,
    /// A peer to compare with: redis://host:port or nats://host:port (repeatable).
    /// Peers that cannot be reached are skipped, and the report says so.
    #[arg(long = "peer")]
    peers: Vec<String>,
    /// Rounds; each runs every system once, the order alternating between rounds.
    #[arg(long, default_value_t = 2)]
    rounds: usize,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum DurabilityArgument {
    Sync,
    Batched,
    Buffered,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum DistributionArgument {
    Uniform,
    Zipf,
}

#[derive(Debug, clap::Args)]
struct RunArguments {
    #[arg(long, value_enum, default_value = "ingest")]
    workload: WorkloadKind,
    /// tcp://host[:port]/chain (atedb), redis://host:port or nats://host:port.
    #[arg(long, conflicts_with = "embedded")]
    target: Option<String>,
    /// Run the engine in this process, with chains in DIR.
    #[arg(long)]
    embedded: Option<PathBuf>,
    /// Chain name for --embedded.
    #[arg(long, default_value = "loadgen")]
    chain: String,
    /// Token for network targets (or ATE_TOKEN_FILE).
    #[arg(long, env = "ATE_TOKEN_FILE")]
    token_file: Option<PathBuf>,
    /// Pin the server's fingerprint (or ATE_FINGERPRINT); else the known-servers file.
    #[arg(long, env = "ATE_FINGERPRINT")]
    fingerprint: Option<String>,
    /// Verify the server against these CA certificates instead of pinning.
    #[arg(long, env = "ATE_CA_FILE", conflicts_with = "fingerprint")]
    ca_file: Option<PathBuf>,
    /// Message size in bytes, fixed ("256") or uniform in a range ("64-4096").
    #[arg(long, default_value = "256", value_parser = MessageSize::parse)]
    message_size: MessageSize,
    /// Size of the key space (cache, mixed).
    #[arg(long, default_value_t = 100_000)]
    keys: u64,
    #[arg(long, value_enum, default_value = "uniform")]
    distribution: DistributionArgument,
    /// Zipf exponent with --distribution zipf.
    #[arg(long, default_value_t = 0.99)]
    zipf_exponent: f64,
    /// Fraction of cache requests that are gets.
    #[arg(long, default_value_t = 0.9)]
    read_ratio: f64,
    /// Events per commit (queue: items per push and most per take; fanout:
    /// also the most a subscriber takes at once).
    #[arg(long, default_value_t = 1)]
    batch: usize,
    /// Queue: producers wait while this many pushed items are not yet
    /// taken, so that the run measures the rate the queue sustains (0: no
    /// limit; the backlog then grows as fast as producers outrun consumers).
    #[arg(long, default_value_t = 10_000)]
    max_backlog: u64,
    /// Fanout: how many of the workers publish (one producer with that
    /// many commits in flight); the rest subscribe.
    #[arg(long, default_value_t = 1)]
    publishers: usize,
    /// Connections to the server (each with its own replica).
    #[arg(long, default_value_t = 1)]
    connections: usize,
    /// Requests in flight per connection.
    #[arg(long, default_value_t = 8)]
    in_flight: usize,
    #[arg(long, value_enum, default_value = "batched")]
    durability: DurabilityArgument,
    /// Seconds to run (ignored with --count).
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Stop after this many requests instead.
    #[arg(long)]
    count: Option<u64>,
    /// Seconds to run before measuring.
    #[arg(long, default_value_t = 0.0)]
    warmup: f64,
    /// Open loop at this many requests per second (latency from the intended
    /// send time); closed loop (maximum throughput) when absent.
    #[arg(long)]
    rate: Option<f64>,
    /// Write every figure and the configuration as JSON.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Write a self-contained HTML report with plots.
    #[arg(long)]
    html: Option<PathBuf>,
    /// Append `chain<TAB>key<TAB>sequence` for every acknowledged write.
    #[arg(long)]
    acked_log: Option<PathBuf>,
    /// Queue workload over atedb: consumers keep a replica of the chain
    /// (the engine's queue) instead of taking items from the server.
    #[arg(long)]
    queue_replica: bool,
}

fn main() -> ExitCode {
    let command = Arguments::parse().command;
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("ate-loadgen: cannot start the runtime: {error}");
            return ExitCode::from(3);
        }
    };
    let outcome = match command {
        Command::Run(arguments) => runtime.block_on(run(arguments)),
        Command::Compare(arguments) => runtime.block_on(compare(arguments)),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err((code, message)) => {
            eprintln!("ate-loadgen: {message}");
            ExitCode::from(code)
        }
    }
}

type Failure = (u8, String);

fn usage(message: impl Into<String>) -> Failure {
    (2, message.into())
}

/// The target named by `--target` or `--embedded`.
fn parse_target(arguments: &RunArguments, text: Option<&str>) -> Result<Target, Failure> {
    match (text, &arguments.embedded) {
        (Some(url), _) if url.starts_with("redis://") => Ok(Target::Redis { url: url.to_string() }),
        (Some(url), _) if url.starts_with("nats://") => Ok(Target::Nats { url: url.to_string() }),
        (Some(url), _) if url.starts_with("tcp://") => {
            let options = ate_client::cli::ConnectOptions {
                token_file: arguments.token_file.as_deref(),
                fingerprint: arguments.fingerprint.as_deref(),
                ca_file: arguments.ca_file.as_deref(),
                ..Default::default()
            };
            let config = options.registry_config().map_err(|error| (error.exit_code(), error.to_string()))?;
            Ok(Target::Remote { url: url.to_string(), config, queue_replica: arguments.queue_replica })
        }
        (Some(other), _) => Err(usage(format!("unknown target '{other}': tcp://, redis:// or nats://"))),
        (None, Some(dir)) => Ok(Target::Embedded { dir: dir.clone(), chain: arguments.chain.clone() }),
        (None, None) => Err(usage("give --target tcp://host:port/chain (or a peer) or --embedded DIR")),
    }
}

/// Everything but the target, checked.
struct Settings {
    config: WorkloadConfig,
    durability: Durability,
    workers: usize,
    plan: RunPlan,
}

impl Settings {
    fn from(arguments: &RunArguments) -> Result<Self, Failure> {
        if !(0.0..=1.0).contains(&arguments.read_ratio) {
            return Err(usage("--read-ratio is a fraction between 0 and 1"));
        }
        let durability = match arguments.durability {
            DurabilityArgument::Sync => Durability::Sync,
            DurabilityArgument::Batched => Durability::Batched,
            DurabilityArgument::Buffered => Durability::Buffered,
        };
        let config = WorkloadConfig {
            kind: arguments.workload,
            message: arguments.message_size,
            keys: arguments.keys,
            distribution: match arguments.distribution {
                DistributionArgument::Uniform => KeyDistribution::Uniform,
                DistributionArgument::Zipf => KeyDistribution::Zipf(arguments.zipf_exponent),
            },
            batch: arguments.batch.max(1),
            publishers: arguments.publishers.max(1),
            read_ratio: arguments.read_ratio,
            max_backlog: arguments.max_backlog,
            durability: Some(durability),
        };
        let workers = arguments.connections.max(1) * arguments.in_flight.max(1);
        let plan = RunPlan {
            workers,
            model: match arguments.rate {
                Some(rate) if rate > 0.0 => LoadModel::Open { rate_per_s: rate },
                Some(_) => return Err(usage("--rate must be positive")),
                None => LoadModel::Closed,
            },
            stop: match arguments.count {
                Some(count) => Stop::Count(count),
                None => Stop::After(Duration::from_secs_f64(arguments.duration.max(0.0))),
            },
            warmup: Duration::from_secs_f64(arguments.warmup.max(0.0)),
        };
        Ok(Self { config, durability, workers, plan })
    }

    fn workload_name(&self) -> String {
        format!("{:?}", self.config.kind).to_lowercase()
    }

    fn describe(&self, arguments: &RunArguments) -> Vec<String> {
        let mut lines = vec![
            format!(
                "workload {}, message size {:?}, batch {}",
                self.workload_name(),
                self.config.message,
                self.config.batch
            ),
            format!("{} connections x {} in flight, {:?}", arguments.connections, arguments.in_flight, self.plan.model),
            format!(
                "keys {} ({:?}), read ratio {}",
                self.config.keys, self.config.distribution, self.config.read_ratio
            ),
        ];
        if self.config.kind == WorkloadKind::Queue {
            lines.push(match self.config.max_backlog {
                0 => "producers never wait for consumers (no backlog limit)".to_string(),
                limit => format!("producers wait while {limit} items wait to be taken"),
            });
        }
        lines
    }

    fn to_json(&self, arguments: &RunArguments, settings: &str) -> serde_json::Value {
        serde_json::json!({
            "workload": self.config,
            "durability": format!("{:?}", self.durability).to_lowercase(),
            "system_settings": settings,
            "connections": arguments.connections,
            "in_flight": arguments.in_flight,
            "workers": self.workers,
            "load_model": match self.plan.model {
                LoadModel::Closed => serde_json::json!("closed"),
                LoadModel::Open { rate_per_s } => serde_json::json!({ "open_rate_per_s": rate_per_s }),
            },
            "duration_s": arguments.duration,
            "count": arguments.count,
            "warmup_s": arguments.warmup,
            "machine": { "cpus": std::thread::available_parallelism().map_or(0, usize::from), "os": std::env::consts::OS },
            "version": env!("CARGO_PKG_VERSION"),
        })
    }
}

/// One run of `settings` against `target`: (report, the system's settings).
async fn run_once(
    target: &Target,
    arguments: &RunArguments,
    settings: &Settings,
    acked: AckSink,
) -> Result<(Report, String), Failure> {
    let backend = target
        .connect(settings.config.kind, arguments.connections, settings.durability, settings.workers, acked)
        .await
        .map_err(|error| (3, format!("{}: {error}", target.describe())))?;
    let system_settings = backend.settings();
    let workload = workload::build(&settings.config, backend, settings.workers).await.map_err(usage)?;
    let progress = Arc::new(Progress::default());
    let display = std::io::stderr().is_terminal().then(|| spawn_display(Arc::clone(&progress)));
    let mut report = driver::run(workload, &settings.plan, Arc::clone(&progress)).await;
    if settings.config.kind == WorkloadKind::Fanout {
        report.fanout = Fanout::from_workers(&report.events_per_worker, settings.config.publishers, report.elapsed_s);
    }
    if let Some((bar, task)) = display {
        task.abort();
        bar.finish_and_clear();
    }
    Ok((report, system_settings))
}

async fn run(arguments: RunArguments) -> Result<(), Failure> {
    let target = parse_target(&arguments, arguments.target.as_deref())?;
    let settings = Settings::from(&arguments)?;
    let (acked, writer) = match &arguments.acked_log {
        Some(path) => {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|error| (3, format!("{}: {error}", path.display())))?;
            // Bounded: a slow disk for the log slows the run rather than growing memory.
            let (sender, receiver) = std::sync::mpsc::sync_channel::<String>(65_536);
            let writer = std::thread::spawn(move || {
                let mut out = std::io::BufWriter::new(file);
                for line in receiver {
                    if writeln!(out, "{line}").is_err() {
                        break;
                    }
                }
                let _ = out.flush();
            });
            (Some(sender), Some(writer))
        }
        None => (None, None),
    };
    let (report, system_settings) = run_once(&target, &arguments, &settings, acked).await?;
    if let Some(writer) = writer {
        // Every sender went with the backend: the writer drains and ends.
        let _ = writer.join();
    }
    let name = settings.workload_name();
    print!("{}", report.table(&name, &target.describe()));
    println!("settings     {system_settings}");
    if let Some(path) = &arguments.json {
        let json = report.to_json(&name, &target.describe(), settings.to_json(&arguments, &system_settings));
        write_file(path, &serde_json::to_vec_pretty(&json).expect("JSON values serialize"))?;
    }
    if let Some(path) = &arguments.html {
        let mut lines = settings.describe(&arguments);
        lines.push(system_settings);
        let page = html::render(&format!("ate-loadgen: {name}"), &lines, &[(target.describe(), report)]);
        write_file(path, page.as_bytes())?;
    }
    Ok(())
}

/// Each system's name in reports; a name that occurs twice (two NATS
/// servers with different settings) gets its target's port.
fn labels(systems: &[Target]) -> Vec<String> {
    systems
        .iter()
        .map(|system| {
            let shared = systems.iter().filter(|other| other.system() == system.system()).count() > 1;
            let port = system.describe().rsplit_once(':').map(|(_, port)| port.to_string());
            match port {
                Some(port) if shared => format!("{}:{port}", system.system()),
                _ => system.system().to_string(),
            }
        })
        .collect()
}

fn write_file(path: &std::path::Path, bytes: &[u8]) -> Result<(), Failure> {
    std::fs::write(path, bytes).map_err(|error| (3, format!("{}: {error}", path.display())))
}

async fn compare(arguments: CompareArguments) -> Result<(), Failure> {
    let settings = Settings::from(&arguments.run)?;
    let ate = parse_target(&arguments.run, arguments.run.target.as_deref())?;
    if matches!(ate, Target::Redis { .. } | Target::Nats { .. }) {
        return Err(usage("compare: --target or --embedded names ATE; peers go in --peer"));
    }
    let mut systems = vec![ate];
    for peer in &arguments.peers {
        systems.push(parse_target(&arguments.run, Some(peer))?);
    }
    let labels = labels(&systems);
    // Every round runs each system once; odd rounds in reverse, so neither
    // side always gets the warm (or the cold) machine.
    let mut results: Vec<Vec<Report>> = vec![Vec::new(); systems.len()];
    let mut system_settings = vec![String::new(); systems.len()];
    let mut skipped: Vec<Option<String>> = vec![None; systems.len()];
    for round in 0..arguments.rounds.max(1) {
        let mut order: Vec<usize> = (0..systems.len()).collect();
        if round % 2 == 1 {
            order.reverse();
        }
        for index in order {
            if skipped[index].is_some() {
                continue;
            }
            match run_once(&systems[index], &arguments.run, &settings, None).await {
                Ok((report, described)) => {
                    results[index].push(report);
                    system_settings[index] = described;
                }
                // A peer that is not running is skipped; ATE must run.
                Err((_, message)) if index > 0 => {
                    eprintln!("ate-loadgen: skipping {}: {message}", labels[index]);
                    skipped[index] = Some(message);
                }
                Err(failure) => return Err(failure),
            }
        }
    }
    // Per system, the round with the median throughput.
    let chosen: Vec<Option<Report>> = results
        .into_iter()
        .map(|mut reports| {
            reports.sort_by(|a, b| a.throughput_events_per_s.total_cmp(&b.throughput_events_per_s));
            reports.get(reports.len() / 2).cloned()
        })
        .collect();
    let name = settings.workload_name();
    let base = chosen[0].clone().expect("ATE ran");
    println!(
        "{:<20} {:>12} {:>9} {:>10} {:>10} {:>10}  ratio events/s, p99",
        "system", "events/s", "MB/s", "p50 µs", "p99 µs", "p99.9 µs"
    );
    let mut rows = Vec::new();
    let mut runs = Vec::new();
    for (index, system) in systems.iter().enumerate() {
        match &chosen[index] {
            Some(report) => {
                let ratio_throughput = base.throughput_events_per_s / report.throughput_events_per_s.max(1e-9);
                let ratio_p99 = report.latency_us.p99 as f64 / base.latency_us.p99.max(1) as f64;
                println!(
                    "{:<20} {:>12.0} {:>9.2} {:>10} {:>10} {:>10}  ATE {:.2}x, {:.2}x",
                    labels[index],
                    report.throughput_events_per_s,
                    report.throughput_mb_per_s,
                    report.latency_us.p50,
                    report.latency_us.p99,
                    report.latency_us.p999,
                    ratio_throughput,
                    ratio_p99
                );
                rows.push(serde_json::json!({
                    "system": labels[index],
                    "target": system.describe(),
                    "settings": system_settings[index],
                    "report": report.to_json(&name, &system.describe(), serde_json::Value::Null),
                    "ate_throughput_ratio": ratio_throughput,
                    "p99_ratio_to_ate": ratio_p99,
                }));
                runs.push((labels[index].clone(), report.clone()));
            }
            None => {
                let why = skipped[index].clone().unwrap_or_default();
                println!("{:<20} skipped: {why}", labels[index]);
                rows.push(serde_json::json!({ "system": labels[index], "skipped": why }));
            }
        }
    }
    for (label, report) in &runs {
        if let Some(fanout) = &report.fanout {
            println!(
                "{label:<20} fan-out: published {:.0} events/s; slowest of {} subscribers {:.0} events/s",
                fanout.published_events_per_s, fanout.subscribers, fanout.slowest_subscriber_events_per_s
            );
        }
    }
    if let Some(path) = &arguments.run.json {
        let json = serde_json::json!({
            "workload": name,
            "rounds": arguments.rounds,
            "config": settings.to_json(&arguments.run, ""),
            "systems": rows,
        });
        write_file(path, &serde_json::to_vec_pretty(&json).expect("JSON values serialize"))?;
    }
    if let Some(path) = &arguments.run.html {
        let mut lines = settings.describe(&arguments.run);
        lines.extend(system_settings.iter().filter(|line| !line.is_empty()).cloned());
        let page = html::render(&format!("ate-loadgen compare: {name}"), &lines, &runs);
        write_file(path, page.as_bytes())?;
    }
    Ok(())
}

/// A live line: requests/s, errors and the p99 of the last half second.
fn spawn_display(progress: Arc<Progress>) -> (indicatif::ProgressBar, tokio::task::JoinHandle<()>) {
    let bar = indicatif::ProgressBar::new_spinner();
    let shown = bar.clone();
    let task = tokio::spawn(async move {
        let mut last = 0u64;
        loop {
            tokio::time::sleep(Duration::from_millis(500)).await;
            let requests = progress.requests.load(Ordering::Relaxed);
            let p99 = {
                let mut window = progress.window_us.lock();
                let p99 = if window.is_empty() { 0 } else { window.value_at_quantile(0.99) };
                window.reset();
                p99
            };
            shown.set_message(format!(
                "{} requests/s  p99 {} µs  errors {}",
                (requests - last) * 2,
                p99,
                progress.errors.load(Ordering::Relaxed)
            ));
            shown.tick();
            last = requests;
        }
    });
    (bar, task)
}
