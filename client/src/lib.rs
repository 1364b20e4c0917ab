//! Network client for remote ATE chains (arrives with the daemon issue).
