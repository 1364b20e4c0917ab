//! Running the real `atedb` binary in tests.
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
