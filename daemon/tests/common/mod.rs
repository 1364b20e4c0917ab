//! Starting `atedb` in tests: the real binary, or the server in-process.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

/// A running `atedb`, killed when dropped.
pub struct Daemon {
    pub child: Child,
    pub address: String,
    pub fingerprint: String,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `atedb ARGUMENTS` with extra environment variables and reads the
/// address and fingerprint it prints first.
pub fn spawn(arguments: &[&str], environment: &[(&str, &std::ffi::OsStr)]) -> Daemon {
    let mut command = Command::new(env!("CARGO_BIN_EXE_atedb"));
    command.args(arguments).stdout(Stdio::piped()).stderr(Stdio::null());
    for (name, value) in environment {
        command.env(name, value);
    }
    let mut child = command.spawn().expect("atedb starts");
    let mut lines = BufReader::new(child.stdout.take().expect("piped stdout")).lines();
    let mut next = || lines.next().expect("atedb prints its address and fingerprint").expect("readable stdout");
    let address = next().strip_prefix("atedb listening on ").expect("listen line").to_string();
    let fingerprint = next().strip_prefix("fingerprint ").expect("fingerprint line").to_string();
    // Keep reading so the daemon never writes into a closed pipe.
    std::thread::spawn(move || lines.for_each(drop));
    Daemon { child, address, fingerprint }
}

/// A server running in this process on a loopback port, with a fresh data
/// directory; stops when dropped.
pub struct Running {
    _dir: tempfile::TempDir,
    pub data: atedb::server::DataDirectory,
    pub server: std::sync::Arc<atedb::server::Server>,
    pub address: String,
    pub fingerprint: String,
    _stop: tokio::sync::watch::Sender<bool>,
}

impl Running {
    pub fn admin_token(&self) -> String {
        std::fs::read_to_string(self.data.admin_token()).expect("atedb wrote an admin token")
    }

    /// A token for every chain with only `roles`, valid for `lifetime`,
    /// signed by this server's issuer key.
    pub fn token(&self, roles: &[&str], lifetime: std::time::Duration) -> String {
        let bytes = std::fs::read(self.data.issuer_key()).expect("atedb wrote an issuer key");
        let issuer = ate::crypto::PrivateSignKey::decode(&bytes).expect("a valid issuer key");
        let now = ate::chain::now_us();
        let claims = ate_client::token::Claims {
            subject: "test".into(),
            roles: roles.iter().map(|role| role.to_string()).collect(),
            chains: vec!["*".into()],
            issued_at_us: now,
            expires_at_us: now + lifetime.as_micros() as u64,
        };
        ate_client::token::issue(&claims, &issuer)
    }
}

/// Starts a server in-process.
pub async fn start() -> Running {
    start_with(atedb::server::ServerOptions::default()).await
}

/// Starts a server in-process with `options`.
pub async fn start_with(options: atedb::server::ServerOptions) -> Running {
    let dir = tempfile::tempdir().unwrap();
    let data = atedb::server::DataDirectory { root: dir.path().join("data") };
    let server = atedb::server::Server::open_with(&data, options).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let fingerprint = server.fingerprint().to_string();
    let serving = std::sync::Arc::clone(&server);
    tokio::spawn(async move { serving.serve(listener, stopped).await });
    Running { _dir: dir, data, server, address, fingerprint, _stop: stop }
}
