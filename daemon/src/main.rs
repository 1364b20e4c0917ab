//! `atedb solo`: serve chains from one data directory over TLS.

use atedb::config::Config;
use atedb::server::{DataDirectory, Server, ServerOptions};
use clap::{Parser, Subcommand};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, Parser)]
#[command(name = "atedb", version, about = "The ATE daemon: serves chains over TLS 1.3")]
struct Arguments {
    /// Log format on standard error (levels from RUST_LOG, default info).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Human)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Human,
    Json,
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        LogFormat::Human => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve with embedded defaults: one data directory, one listener.
    Solo {
        /// Data directory (default: $STATE_DIRECTORY under systemd, else ./ate-data).
        #[arg(long)]
        data: Option<PathBuf>,
        #[arg(long, default_value = "127.0.0.1:5000")]
        listen: SocketAddr,
        /// Serve Prometheus metrics over HTTP here.
        #[arg(long)]
        metrics: Option<SocketAddr>,
    },
    /// Serve as a TOML configuration file says (see docs/operations.md);
    /// SIGHUP re-reads its trusted issuers and chain-creation policy.
    Run {
        #[arg(long)]
        config: PathBuf,
    },
}

fn default_data(data: Option<PathBuf>) -> PathBuf {
    data.or_else(|| std::env::var_os("STATE_DIRECTORY").map(PathBuf::from)).unwrap_or_else(|| PathBuf::from("ate-data"))
}

fn main() -> ExitCode {
    let arguments = Arguments::parse();
    init_logging(arguments.log_format);
    let (data, listen, metrics, options, config_path) = match arguments.command {
        Command::Solo { data, listen, metrics } => {
            (default_data(data), listen, metrics, ServerOptions::default(), None)
        }
        Command::Run { config } => match load(&config) {
            Ok((loaded, options)) => (default_data(loaded.data), loaded.listen, loaded.metrics, options, Some(config)),
            Err(error) => {
                eprintln!("atedb: {error}");
                return ExitCode::from(2);
            }
        },
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("atedb: {error}");
            return ExitCode::from(3);
        }
    };
    match runtime.block_on(serve(DataDirectory { root: data }, listen, metrics, options, config_path)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("atedb: {error}");
            ExitCode::from(3)
        }
    }
}

fn load(path: &std::path::Path) -> Result<(Config, ServerOptions), atedb::config::ConfigError> {
    let config = Config::load(path)?;
    let options = ServerOptions {
        trusted_issuers: config.issuer_keys()?,
        cluster: config.cluster.clone().map(|cluster| (cluster.members, cluster.this)),
        chain_policy: config.chains.clone(),
        durability: config.durability.into(),
        tls: config.tls.clone().map(|tls| (tls.certificate, tls.key)),
        token_skew: None,
        root_keys: config.root_keys()?,
        segment_size_bytes: config.log.segment_bytes,
        backend: config.log.backend.into(),
        direct_io: config.log.direct_io,
        zero_ahead_bytes: config.log.zero_ahead_bytes,
        drop_behind_bytes: config.log.drop_behind_bytes,
        populate_ahead_bytes: config.log.populate_ahead_bytes,
        maintenance: config
            .log
            .maintenance()
            .map_err(|message| atedb::config::ConfigError::Invalid { path: path.into(), message })?,
    };
    Ok((config, options))
}

/// Writes the start-up lines to standard output. A closed or broken stdout
/// (the starter stopped reading) must not take the server down: `println!`
/// would panic on EPIPE, so write explicitly and only log the failure.
fn print_banner(banner: &str) {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    if let Err(error) = stdout.write_all(banner.as_bytes()).and_then(|()| stdout.flush()) {
        tracing::warn!(%error, "could not write the start-up banner to standard output");
    }
}

async fn serve(
    data: DataDirectory,
    listen: SocketAddr,
    metrics: Option<SocketAddr>,
    options: ServerOptions,
    config_path: Option<PathBuf>,
) -> Result<(), atedb::server::ServerError> {
    let server = Server::open_with(&data, options).await?;
    let metrics = match metrics {
        Some(address) => Some(tokio::net::TcpListener::bind(address).await?),
        None => None,
    };
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let local = listener.local_addr()?;
    tracing::info!(address = %local, fingerprint = server.fingerprint(), data = %data.root.display(), "atedb listening");
    let mut banner = format!(
        "atedb listening on {local}\nfingerprint {}\nadmin token {}\n",
        server.fingerprint(),
        data.admin_token().display()
    );
    if let Some(listener) = metrics {
        banner.push_str(&format!("metrics on http://{}/metrics\n", listener.local_addr()?));
        tokio::spawn(atedb::metrics::serve_metrics(listener, server.clone()));
    }
    print_banner(&banner);
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let serving = {
        let server = server.clone();
        tokio::spawn(async move { server.serve(listener, stopped).await })
    };
    atedb::systemd::notify("READY=1");
    if let Some(interval) = atedb::systemd::watchdog_interval() {
        tokio::spawn(async move {
            loop {
                atedb::systemd::notify("WATCHDOG=1");
                tokio::time::sleep(interval).await;
            }
        });
    }
    // SIGINT or SIGTERM: stop accepting; dropping the chains afterwards lets
    // each writer finish and sync what it has queued.
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = terminate.recv() => break,
            _ = hangup.recv() => {
                let Some(path) = &config_path else { continue };
                atedb::systemd::notify("RELOADING=1");
                match load(path) {
                    Ok((_, options)) => {
                        server.reload(options.trusted_issuers, options.chain_policy);
                        tracing::info!(config = %path.display(), "configuration reloaded");
                    }
                    Err(error) => tracing::error!(%error, "keeping the old configuration"),
                }
                atedb::systemd::notify("READY=1");
            }
        }
    }
    atedb::systemd::notify("STOPPING=1");
    let _ = stop.send(true);
    let served = serving.await.map_err(|error| atedb::server::ServerError::Config(error.to_string()))?;
    // Let in-flight requests finish, then close every chain: each log writer
    // drains its queue and syncs before the process exits.
    server.drain(std::time::Duration::from_secs(10)).await;
    drop(server);
    served
}
