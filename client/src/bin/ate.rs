//! `ate`: the command-line tool for ATE chains.
//!
//! Targets are `DIR/CHAIN` (a local data directory, the engine embedded)
//! or `tcp://host[:port]/CHAIN` (an `atedb` server; every command works on
//! a verified replica of the chain, so `verify` and `proof` check what the
//! server sent instead of trusting it).
//!
//! Exit codes: 0 success; 1 the thing asked for is absent or fails
//! verification; 2 bad usage; 3 any other error (I/O, locked chain, ...).

use ate::crypto::{PrivateSignKey, SignatureScheme};
use ate::messaging::StartAt;
use ate::prelude::*;
use ate::trust::retention::RetentionMode;
use ate_client::cli::{self, CliError, Target};
use clap::{Parser, Subcommand};
use std::io::{IsTerminal, Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, Parser)]
#[command(name = "ate", version, about = "Work with ATE chains: put, get, tail, verify, prove")]
struct Arguments {
    /// Print machine-readable JSON instead of text.
    #[arg(long, global = true)]
    json: bool,
    /// Token for network targets (or ATE_TOKEN_FILE).
    #[arg(long, global = true, env = "ATE_TOKEN_FILE")]
    token_file: Option<PathBuf>,
    /// Pin the server's certificate fingerprint (or ATE_FINGERPRINT); without
    /// it, the known-servers file is used, trusting a new server on first use.
    #[arg(long, global = true, env = "ATE_FINGERPRINT")]
    fingerprint: Option<String>,
    /// Verify the server's certificate against these CA certificates (PEM
    /// bundle or DER) and the target's host name, instead of pinning.
    #[arg(long, global = true, env = "ATE_CA_FILE", conflicts_with = "fingerprint")]
    ca_file: Option<PathBuf>,
    /// A root key the chain must be governed by (`ate keygen` writes
    /// FILE.pub); repeat for several. History is verified against them.
    #[arg(long = "root-key", global = true)]
    root_keys: Vec<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Store a value under a named key; prints the committed sequence number.
    Put {
        target: String,
        key: String,
        /// The value; read from standard input when omitted.
        value: Option<String>,
        /// Retain it (no deletion, no shortening) until this date:
        /// 2030-01-01 or 2030-01-01T12:00:00Z.
        #[arg(long)]
        retain_until: Option<String>,
    },
    /// Print the value of a named key (exit 1 when absent).
    Get { target: String, key: String },
    /// Delete a named key (exit 1 when absent).
    Del { target: String, key: String },
    /// List the named keys of a chain.
    Ls { target: String },
    /// Show a chain's state: sequences, objects, segments, Merkle root.
    Stat { target: String },
    /// Print events from a sequence number; with --follow, keep waiting for more.
    Tail {
        target: String,
        #[arg(long, default_value_t = 0)]
        from: u64,
        #[arg(long)]
        follow: bool,
    },
    /// Verify the whole chain; exit 1 naming the first bad sequence number.
    Verify { target: String },
    /// Print the tree head and the inclusion proof of one event.
    Proof { target: String, sequence: u64 },
    /// Legal holds: a held key cannot be deleted, whatever its dates.
    Hold {
        #[command(subcommand)]
        command: HoldCommand,
    },
    /// WORM retention: show, extend, or tighten the chain's policy.
    Retention {
        #[command(subcommand)]
        command: RetentionCommand,
    },
    /// Export the whole commits holding events FROM..=TO, with an inclusion
    /// proof per event in a tree head signed by --sign-key, into one file.
    Export {
        target: String,
        #[arg(long, default_value_t = 0)]
        from: u64,
        /// Last event (default: the latest).
        #[arg(long)]
        to: Option<u64>,
        /// The exporter's signing key (`ate keygen`).
        #[arg(long)]
        sign_key: PathBuf,
        #[arg(long)]
        out: PathBuf,
    },
    /// Remove the payloads of superseded versions from sealed segments
    /// (cache and queue chains); retained objects, the latest versions,
    /// deletions and the chain's proofs are untouched. With
    /// `--drop-older-than`, then drop whole sealed segments older than that
    /// (time-based log retention; refused, exit 4, if one holds a protected
    /// version).
    Compact {
        target: String,
        /// Drop sealed segments whose events are all older than this: 90s, 12h, 30d, 7y.
        #[arg(long)]
        drop_older_than: Option<String>,
        /// Keep segments holding a deletion younger than this, so replicas
        /// away for less than it resume and learn of it.
        #[arg(long, default_value = "7d")]
        tombstone_horizon: String,
    },
    /// Check an exported bundle offline; exit 1 naming the item that fails.
    VerifyBundle {
        file: PathBuf,
        /// Require the tree head to be signed by this key id (`ate keygen` prints it).
        #[arg(long)]
        trusted_key: Option<String>,
    },
    /// Generate an ML-DSA-65 signing key into FILE (public key: FILE.pub); prints its key id.
    Keygen { file: PathBuf },
    /// Tokens for atedb.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
}

#[derive(Debug, Subcommand)]
enum HoldCommand {
    /// Place a legal hold on a named key.
    Set { target: String, key: String },
    /// Lift the legal hold of a named key.
    Clear { target: String, key: String },
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum ModeArgument {
    None,
    Governance,
    Compliance,
}

#[derive(Debug, Subcommand)]
enum RetentionCommand {
    /// The chain's policy, and a named key's retain-until date and hold.
    Show { target: String, key: Option<String> },
    /// Retain a named key until a later date (never earlier).
    Extend {
        target: String,
        key: String,
        /// 2030-01-01 or 2030-01-01T12:00:00Z.
        #[arg(long)]
        until: String,
    },
    /// Set or tighten the chain's policy (it can never be loosened).
    Policy {
        target: String,
        #[arg(long, value_enum)]
        mode: ModeArgument,
        /// Retain every new version this long: 90s, 12h, 30d, 7y.
        #[arg(long)]
        default_retention: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
enum TokenCommand {
    /// Issue a token signed with an issuer key (see `ate keygen`).
    Create {
        #[arg(long)]
        issuer_key: PathBuf,
        #[arg(long)]
        subject: String,
        /// Chains the token may open: names, or prefixes ending in `*`.
        #[arg(long = "chain", default_value = "*")]
        chains: Vec<String>,
        /// Roles: `read` (subscribe, load), `write` (commit, leases), `admin` (both).
        #[arg(long = "role", default_values = ["read", "write"])]
        roles: Vec<String>,
        /// Lifetime in seconds.
        #[arg(long, default_value_t = 86_400)]
        ttl: u64,
    },
}

fn main() -> ExitCode {
    let arguments = Arguments::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("ate: cannot start the runtime: {error}");
            return ExitCode::from(3);
        }
    };
    match runtime.block_on(run(arguments)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("ate: {error}");
            ExitCode::from(error.exit_code())
        }
    }
}

async fn retention(command: RetentionCommand, options: &cli::ConnectOptions<'_>, json: bool) -> Result<(), CliError> {
    match command {
        RetentionCommand::Show { target, key } => {
            let chain = Target::parse(&target)?.open(options).await?;
            let policy = cli::describe_policy(&chain.retention_policy());
            let object = key.map(|key| {
                let retention = chain.retention(&PrimaryKey::from_name(&key));
                let until = (retention.retain_until_us > 0).then(|| cli::format_instant(retention.retain_until_us));
                (key, until, retention.legal_hold)
            });
            if json {
                let object = object.map_or(String::new(), |(key, until, hold)| {
                    let until = until.map_or("null".into(), |until| cli::json_string(&until));
                    format!(",\"key\":{},\"retain_until\":{until},\"legal_hold\":{hold}", cli::json_string(&key))
                });
                print_json(&format!("{{\"policy\":{}{object}}}", cli::json_string(&policy)));
            } else {
                println!("policy        {policy}");
                if let Some((key, until, hold)) = object {
                    println!("key           {key}");
                    println!("retain until  {}", until.as_deref().unwrap_or("-"));
                    println!("legal hold    {}", if hold { "yes" } else { "no" });
                }
            }
        }
        RetentionCommand::Extend { target, key, until } => {
            let until_us = cli::parse_instant(&until)?;
            let chain = Target::parse(&target)?.open(options).await?;
            let sequence = cli::change_retention(&chain, &key, Some(until_us), None).await?.last_sequence;
            println!("{sequence}");
        }
        RetentionCommand::Policy { target, mode, default_retention } => {
            let chain = Target::parse(&target)?.open(options).await?;
            let mut policy = chain.retention_policy();
            policy.mode = match mode {
                ModeArgument::None => RetentionMode::None,
                ModeArgument::Governance => RetentionMode::Governance,
                ModeArgument::Compliance => RetentionMode::Compliance,
            };
            if let Some(period) = default_retention {
                policy.default_retention_us = cli::parse_period(&period)?;
            }
            let sequence = cli::set_policy(&chain, policy).await?.last_sequence;
            println!("{sequence}");
        }
    }
    Ok(())
}

/// A private signing key file as `ate keygen` writes it.
fn read_sign_key(path: &std::path::Path) -> Result<PrivateSignKey, CliError> {
    let bytes = std::fs::read(path).map_err(|e| CliError::Io(format!("{}: {e}", path.display())))?;
    PrivateSignKey::decode(&bytes).map_err(|e| CliError::Usage(format!("{}: {e}", path.display())))
}

fn print_json(value: &str) {
    println!("{value}");
}

async fn run(arguments: Arguments) -> Result<(), CliError> {
    let json = arguments.json;
    let options = cli::ConnectOptions {
        token_file: arguments.token_file.as_deref(),
        fingerprint: arguments.fingerprint.as_deref(),
        ca_file: arguments.ca_file.as_deref(),
        root_keys: &arguments.root_keys,
    };
    match arguments.command {
        Command::Put { target, key, value, retain_until } => {
            let retain_until_us = retain_until.as_deref().map(cli::parse_instant).transpose()?;
            let value = match value {
                Some(value) => value.into_bytes(),
                None => {
                    let mut bytes = Vec::new();
                    std::io::stdin().read_to_end(&mut bytes).map_err(|e| CliError::Io(e.to_string()))?;
                    bytes
                }
            };
            let chain = Target::parse(&target)?.open(&options).await?;
            let sequence = cli::put_retained(&chain, &key, value, retain_until_us).await?.last_sequence;
            if json {
                print_json(&format!("{{\"key\":{},\"sequence\":{sequence}}}", cli::json_string(&key)));
            } else {
                println!("{sequence}");
            }
        }
        Command::Get { target, key } => {
            let value = cli::get(&*Target::parse(&target)?.open(&options).await?, &key)?;
            if json {
                print_json(&format!(
                    "{{\"key\":{},\"value\":{}}}",
                    cli::json_string(&key),
                    cli::json_string(&String::from_utf8_lossy(&value.value))
                ));
            } else {
                std::io::stdout().write_all(&value.value).map_err(|e| CliError::Io(e.to_string()))?;
                if std::io::stdout().is_terminal() && !value.value.ends_with(b"\n") {
                    println!();
                }
            }
        }
        Command::Del { target, key } => {
            let chain = Target::parse(&target)?.open(&options).await?;
            let sequence = cli::delete(&chain, &key).await?.last_sequence;
            if json {
                print_json(&format!("{{\"key\":{},\"sequence\":{sequence}}}", cli::json_string(&key)));
            } else {
                println!("{sequence}");
            }
        }
        Command::Ls { target } => {
            let chain = Target::parse(&target)?.open(&options).await?;
            let names = cli::list(&chain);
            if json {
                let items: Vec<String> = names.iter().map(|name| cli::json_string(name)).collect();
                print_json(&format!("[{}]", items.join(",")));
            } else {
                for name in names {
                    println!("{name}");
                }
            }
        }
        Command::Stat { target } => {
            let chain = Target::parse(&target)?.open(&options).await?;
            let head = chain.tree_head()?;
            let root = cli::to_hex(&head.root);
            if json {
                print_json(&format!(
                    "{{\"chain\":{},\"events\":{},\"first_sequence\":{},\"objects\":{},\"segments\":{},\"merkle_root\":\"{root}\",\"path\":{},\"retention\":{}}}",
                    cli::json_string(chain.key().name()),
                    chain.durable_sequence(),
                    chain.first_sequence(),
                    chain.len(),
                    chain.segment_count(),
                    cli::json_string(&chain.path().display().to_string()),
                    cli::json_string(&cli::describe_policy(&chain.retention_policy()))
                ));
            } else {
                println!("chain        {}", chain.key());
                println!("path         {}", chain.path().display());
                println!("events       {}", chain.durable_sequence());
                if chain.first_sequence() > 0 {
                    println!("log starts   {} (older segments dropped)", chain.first_sequence());
                }
                println!("objects      {}", chain.len());
                println!("segments     {}", chain.segment_count());
                println!("merkle root  {root} (tree size {})", head.tree_size);
                println!("retention    {}", cli::describe_policy(&chain.retention_policy()));
            }
        }
        Command::Hold { command } => {
            let (target, key, hold) = match command {
                HoldCommand::Set { target, key } => (target, key, true),
                HoldCommand::Clear { target, key } => (target, key, false),
            };
            let chain = Target::parse(&target)?.open(&options).await?;
            let sequence = cli::change_retention(&chain, &key, None, Some(hold)).await?.last_sequence;
            if json {
                print_json(&format!(
                    "{{\"key\":{},\"legal_hold\":{hold},\"sequence\":{sequence}}}",
                    cli::json_string(&key)
                ));
            } else {
                println!("{sequence}");
            }
        }
        Command::Retention { command } => retention(command, &options, json).await?,
        Command::Tail { target, from, follow } => {
            let chain = Target::parse(&target)?.open(&options).await?;
            let mut subscription = chain.subscribe(&AteSession::default(), StartAt::Sequence(from))?;
            loop {
                let event = if follow { Some(subscription.next().await?) } else { subscription.try_next()? };
                let Some(event) = event else { break };
                let line = cli::describe(&event);
                if json {
                    print_json(&line.to_json());
                } else {
                    println!("{}", line.to_text());
                }
            }
        }
        Command::Verify { target } => {
            let chain = Target::parse(&target)?.open(&options).await?;
            let total = chain.durable_sequence();
            let bar = std::io::stderr().is_terminal().then(|| indicatif::ProgressBar::new(total));
            let report = chain.verify().await;
            if let Some(bar) = bar {
                bar.finish_and_clear();
            }
            match report {
                Ok(report) => {
                    if json {
                        print_json(&format!(
                            "{{\"ok\":true,\"events\":{},\"commits\":{},\"first_sequence\":{}}}",
                            report.events, report.commits, report.first_sequence
                        ));
                    } else if report.first_sequence > 0 {
                        println!(
                            "ok: {} events in {} commits verified, from sequence {} (older segments were dropped; \
                             the checkpoint vouches for them)",
                            report.events, report.commits, report.first_sequence
                        );
                    } else {
                        println!("ok: {} events in {} commits verified", report.events, report.commits);
                    }
                }
                Err(error) => {
                    if json {
                        print_json(&format!(
                            "{{\"ok\":false,\"sequence\":{},\"reason\":{}}}",
                            error.sequence.map_or("null".to_string(), |s| s.to_string()),
                            cli::json_string(&error.reason)
                        ));
                    }
                    return Err(CliError::VerifyFailed(error.to_string()));
                }
            }
        }
        Command::Proof { target, sequence } => {
            let chain = Target::parse(&target)?.open(&options).await?;
            let head = chain.tree_head()?;
            let (event_hash, proof) = chain
                .inclusion_proof(sequence, head.tree_size)
                .map_err(|_| CliError::NotFound(format!("event {sequence}")))?;
            let hex = cli::to_hex;
            if json {
                print_json(&format!(
                    "{{\"sequence\":{sequence},\"tree_size\":{},\"root\":\"{}\",\"event_hash\":\"{}\",\"proof\":\"{}\"}}",
                    head.tree_size,
                    hex(&head.root),
                    hex(&event_hash),
                    hex(&proof.encode())
                ));
            } else {
                println!("tree size   {}", head.tree_size);
                println!("root        {}", hex(&head.root));
                println!("event hash  {}", hex(&event_hash));
                println!("proof       {}", hex(&proof.encode()));
            }
        }
        Command::Export { target, from, to, sign_key, out } => {
            let signer = read_sign_key(&sign_key)?;
            let chain = Target::parse(&target)?.open(&options).await?;
            let to = match to {
                Some(to) => to,
                None => chain.durable_sequence().checked_sub(1).ok_or_else(|| CliError::NotFound("events".into()))?,
            };
            let bundle = ate::audit::export(&chain, from, to, &signer)?;
            let encoded = bundle.encode();
            std::fs::write(&out, &encoded).map_err(|e| CliError::Io(format!("{}: {e}", out.display())))?;
            let events = bundle.proofs.len();
            if json {
                print_json(&format!(
                    "{{\"events\":{events},\"bytes\":{},\"signed_by\":\"{}\"}}",
                    encoded.len(),
                    signer.id()
                ));
            } else {
                println!("{events} events, {} bytes, tree head signed by {}", encoded.len(), signer.id());
            }
        }
        Command::Compact { target, drop_older_than, tombstone_horizon } => {
            let target = Target::parse(&target)?;
            if matches!(target, Target::Remote { .. }) {
                return Err(CliError::Usage(
                    "compaction runs where the chain is stored (DIR/CHAIN, not tcp://)".into(),
                ));
            }
            let rule = match &drop_older_than {
                Some(period) => Some(ate::chain::DropRule {
                    older_than_us: cli::now_us().saturating_sub(cli::parse_period(period)?),
                    tombstone_horizon_us: cli::parse_period(&tombstone_horizon)?,
                }),
                None => None,
            };
            let chain = target.open(&options).await?;
            let report = chain.compact(cli::now_us()).await?;
            let dropped = match rule {
                Some(rule) => Some(chain.drop_segments(rule, cli::now_us()).await?),
                None => None,
            };
            if json {
                let dropped = dropped.as_ref().map_or(String::new(), |dropped| {
                    format!(
                        ",\"segments_dropped\":{},\"events_dropped\":{},\"bytes_freed\":{},\"first_sequence\":{}",
                        dropped.segments_dropped, dropped.events_dropped, dropped.bytes_freed, dropped.first_sequence
                    )
                });
                print_json(&format!(
                    "{{\"segments_rewritten\":{},\"events_compacted\":{},\"events_retained\":{},\"bytes_before\":{},\"bytes_after\":{}{dropped}}}",
                    report.segments_rewritten, report.events_compacted, report.events_retained, report.bytes_before, report.bytes_after
                ));
            } else {
                println!(
                    "{} of {} sealed segments rewritten, {} superseded versions compacted ({} kept under retention), {} -> {} bytes",
                    report.segments_rewritten,
                    report.segments_scanned,
                    report.events_compacted,
                    report.events_retained,
                    report.bytes_before,
                    report.bytes_after
                );
                if let Some(dropped) = dropped {
                    println!(
                        "{} old segments dropped ({} events, {} bytes); the log now starts at sequence {}",
                        dropped.segments_dropped, dropped.events_dropped, dropped.bytes_freed, dropped.first_sequence
                    );
                }
            }
        }
        Command::VerifyBundle { file, trusted_key } => {
            let trusted = trusted_key.as_deref().map(cli::parse_key_id).transpose()?;
            let bytes = std::fs::read(&file).map_err(|e| CliError::Io(format!("{}: {e}", file.display())))?;
            let report = ate::audit::verify_bundle(&bytes, trusted.as_ref())
                .map_err(|error| CliError::VerifyFailed(error.to_string()))?;
            if json {
                print_json(&format!(
                    "{{\"chain\":{},\"first\":{},\"last\":{},\"events\":{},\"commits\":{},\"tree_size\":{},\"root\":\"{}\",\"head_key\":\"{}\"}}",
                    cli::json_string(&report.chain),
                    report.first_sequence,
                    report.last_sequence,
                    report.events,
                    report.commits,
                    report.tree_size,
                    cli::to_hex(&report.root),
                    report.head_key
                ));
            } else {
                println!(
                    "ok: chain {}, events {}..={} ({} commits)",
                    report.chain, report.first_sequence, report.last_sequence, report.commits
                );
                println!(
                    "every event is in tree head {} (size {}), signed by {}",
                    cli::to_hex(&report.root),
                    report.tree_size,
                    report.head_key
                );
            }
        }
        Command::Keygen { file } => {
            let key = PrivateSignKey::generate(SignatureScheme::MlDsa65);
            cli::write_secret_file(&file, &key.encode())?;
            // The public half, for `--root-key`, `[chains] root_keys` and `trusted_issuers`.
            let public = PathBuf::from(format!("{}.pub", file.display()));
            std::fs::write(&public, key.public().encode())
                .map_err(|e| CliError::Io(format!("{}: {e}", public.display())))?;
            println!("{}", key.id());
        }
        Command::Token { command: TokenCommand::Create { issuer_key, subject, chains, roles, ttl } } => {
            let issuer = read_sign_key(&issuer_key)?;
            let now = cli::now_us();
            let claims = ate_client::token::Claims {
                subject,
                roles,
                chains,
                issued_at_us: now,
                expires_at_us: now + ttl * 1_000_000,
            };
            println!("{}", ate_client::token::issue(&claims, &issuer));
        }
    }
    Ok(())
}
