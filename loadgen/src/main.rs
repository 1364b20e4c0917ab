//! `ate-loadgen run`: drives a workload against the embedded engine or an
//! `atedb` server and reports throughput and latency percentiles.
//!
//! Exit codes: 0 the run completed (errors, if any, are in the report);
//! 2 bad usage; 3 the target could not be opened or a report not written.

use ate::Durability;
use ate_client::registry::ServerTrust;
use ate_loadgen::driver::{self, LoadModel, Progress, RunPlan, Stop};
use ate_loadgen::target::Target;
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
    /// An atedb chain, tcp://host[:port]/chain.
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
    /// Events per commit.
    #[arg(long, default_value_t = 1)]
    batch: usize,
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
}

fn main() -> ExitCode {
    let Command::Run(arguments) = Arguments::parse().command;
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("ate-loadgen: cannot start the runtime: {error}");
            return ExitCode::from(3);
        }
    };
    match runtime.block_on(run(arguments)) {
        Ok(()) => ExitCode::SUCCESS,
        Err((code, message)) => {
            eprintln!("ate-loadgen: {message}");
            ExitCode::from(code)
        }
    }
}

async fn run(arguments: RunArguments) -> Result<(), (u8, String)> {
    let usage = |message: String| (2u8, message);
    let target = match (&arguments.target, &arguments.embedded) {
        (Some(url), None) => {
            let token_file =
                arguments.token_file.as_ref().ok_or_else(|| usage("--target needs --token-file".into()))?;
            let token = std::fs::read_to_string(token_file)
                .map_err(|error| (3, format!("{}: {error}", token_file.display())))?;
            let trust = match (&arguments.fingerprint, &arguments.ca_file) {
                (Some(fingerprint), _) => ServerTrust::Fingerprint(fingerprint.clone()),
                (None, Some(roots)) => ServerTrust::CertificateAuthority(roots.clone()),
                (None, None) => ServerTrust::KnownServers(ate_client::cli::known_servers_path()),
            };
            Target::Remote { url: url.clone(), token, trust }
        }
        (None, Some(dir)) => Target::Embedded { dir: dir.clone(), chain: arguments.chain.clone() },
        _ => return Err(usage("give --target tcp://host:port/chain or --embedded DIR".into())),
    };
    if !(0.0..=1.0).contains(&arguments.read_ratio) {
        return Err(usage("--read-ratio is a fraction between 0 and 1".into()));
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
        read_ratio: arguments.read_ratio,
        durability: Some(durability),
    };
    let workers = arguments.connections.max(1) * arguments.in_flight.max(1);
    let plan = RunPlan {
        workers,
        model: match arguments.rate {
            Some(rate) if rate > 0.0 => LoadModel::Open { rate_per_s: rate },
            Some(_) => return Err(usage("--rate must be positive".into())),
            None => LoadModel::Closed,
        },
        stop: match arguments.count {
            Some(count) => Stop::Count(count),
            None => Stop::After(Duration::from_secs_f64(arguments.duration.max(0.0))),
        },
        warmup: Duration::from_secs_f64(arguments.warmup.max(0.0)),
    };
    let chains = target.open(arguments.connections, durability).await.map_err(|error| (3, error.to_string()))?;
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
    let workload = workload::build(&config, chains, workers, acked).map_err(usage)?;
    let progress = Arc::new(Progress::default());
    let display = std::io::stderr().is_terminal().then(|| spawn_display(Arc::clone(&progress)));
    let report = driver::run(workload, &plan, Arc::clone(&progress)).await;
    if let Some((bar, task)) = display {
        task.abort();
        bar.finish_and_clear();
    }
    if let Some(writer) = writer {
        // All senders are gone with the workload: the writer drains and ends.
        let _ = writer.join();
    }
    let workload_name = format!("{:?}", arguments.workload).to_lowercase();
    print!("{}", report.table(&workload_name, &target.describe()));
    if let Some(path) = &arguments.json {
        let configuration = serde_json::json!({
            "workload": config,
            "durability": format!("{:?}", durability).to_lowercase(),
            "connections": arguments.connections,
            "in_flight": arguments.in_flight,
            "workers": workers,
            "load_model": match plan.model { LoadModel::Closed => serde_json::json!("closed"), LoadModel::Open { rate_per_s } => serde_json::json!({ "open_rate_per_s": rate_per_s }) },
            "duration_s": arguments.duration,
            "count": arguments.count,
            "warmup_s": arguments.warmup,
            "machine": { "cpus": std::thread::available_parallelism().map_or(0, usize::from), "os": std::env::consts::OS },
            "version": env!("CARGO_PKG_VERSION"),
        });
        let json = report.to_json(&workload_name, &target.describe(), configuration);
        std::fs::write(path, serde_json::to_vec_pretty(&json).expect("JSON values serialize"))
            .map_err(|error| (3, format!("{}: {error}", path.display())))?;
    }
    if let Some(path) = &arguments.html {
        let settings = vec![
            format!("workload {workload_name}, target {}", target.describe()),
            format!("message size {:?}, batch {}, durability {:?}", config.message, config.batch, durability),
            format!("{} connections x {} in flight, {:?}", arguments.connections, arguments.in_flight, plan.model),
        ];
        let page = ate_loadgen::html::render(
            &format!("ate-loadgen: {workload_name}"),
            &settings,
            &[(target.describe(), report)],
        );
        std::fs::write(path, page).map_err(|error| (3, format!("{}: {error}", path.display())))?;
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
