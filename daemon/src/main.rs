//! `atedb solo`: serve chains from one data directory over TLS.

use atedb::server::{DataDirectory, Server};
use clap::{Parser, Subcommand};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, Parser)]
#[command(name = "atedb", version, about = "The ATE daemon: serves chains over TLS 1.3")]
struct Arguments {
    #[command(subcommand)]
    command: Command,
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
    },
}

fn main() -> ExitCode {
    let Command::Solo { data, listen } = Arguments::parse().command;
    let data = data
        .or_else(|| std::env::var_os("STATE_DIRECTORY").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("ate-data"));
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("atedb: {error}");
            return ExitCode::from(3);
        }
    };
    match runtime.block_on(solo(DataDirectory { root: data }, listen)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("atedb: {error}");
            ExitCode::from(3)
        }
    }
}

async fn solo(data: DataDirectory, listen: SocketAddr) -> Result<(), atedb::server::ServerError> {
    let server = Server::open(&data).await?;
    let listener = tokio::net::TcpListener::bind(listen).await?;
    println!("atedb listening on {}", listener.local_addr()?);
    println!("fingerprint {}", server.fingerprint());
    println!("admin token {}", data.admin_token().display());
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
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
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
