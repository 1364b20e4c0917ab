//! Placeholder until the daemon issue lands: the engine is usable embedded today.
fn main() {
    eprintln!("atedb: the network daemon is not built yet; use the embedded engine (see README)");
    std::process::exit(2);
}
