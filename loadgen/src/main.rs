//! Workload generator (arrives with the loadgen issue).
fn main() {
    eprintln!("ate-loadgen: not built yet");
    std::process::exit(2);
}
