//! E2: signed + encrypted ingest through the DIO (BLAKE3 hash chain,
//! AES-256-GCM per event, one ML-DSA-65 signature per commit of 1,000
//! events), side by side with the same DIO path unsigned and in plaintext,
//! and the raw E1 append. Also `verify` throughput over the signed chain.

use ate::crypto::{PrivateSignKey, ReadKey, SignatureScheme};
use ate::prelude::*;
use ate::trust::{ReadAuthority, WriteAuthority};
use ate_bench::{config, payload, scratch_dir};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use std::sync::Arc;
use std::time::{Duration, Instant};

const EVENTS_PER_COMMIT: u64 = 1000;
const COMMITTERS: u64 = 4;

struct Setup {
    _dir: tempfile::TempDir,
    chain: Arc<Chain>,
    session: AteSession,
    folder: PrimaryKey,
}

async fn setup(secure: bool, direct_io: bool) -> Setup {
    let dir = scratch_dir();
    let root = PrivateSignKey::generate(SignatureScheme::MlDsa65);
    let read = ReadKey::generate().unwrap();
    let conf = ate::AteConfig { direct_io, ..config(dir.path(), StorageBackend::IoUring) };
    let mut builder = ChainBuilder::new(&conf).await;
    if secure {
        builder = builder.add_root_public_key(root.public());
    }
    let chain = builder.build().open(&ChainKey::from("e2")).await.unwrap();
    let mut session = AteSession::new("bench");
    session.add_user_write_key(root).add_user_read_key(read.clone());
    let mut dio = chain.dio(&session).await;
    let folder = *dio.store(0u8).unwrap().key();
    if secure {
        dio.set_authority(&folder, WriteAuthority::Inherit, ReadAuthority::Specific(read.id())).unwrap();
    }
    dio.commit().await.unwrap();
    Setup { _dir: dir, chain, session, folder }
}

async fn ingest(setup: &Setup, commits: u64, value: &str) {
    let mut tasks = Vec::new();
    for committer in 0..COMMITTERS {
        let (chain, session, folder, value) =
            (setup.chain.clone(), setup.session.clone(), setup.folder, value.to_string());
        tasks.push(tokio::spawn(async move {
            let mut commit = committer;
            while commit < commits {
                // One Dio per commit, as an application would use one per
                // unit of work (a Dio remembers every version it wrote).
                let mut dio = chain.dio(&session).await;
                for _ in 0..EVENTS_PER_COMMIT {
                    dio.store_child(&folder, value.clone()).unwrap();
                }
                dio.commit().await.unwrap();
                commit += COMMITTERS;
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
}

fn signed_ingest(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    // 1 KiB of incompressible text (a String serializes as one byte run).
    let value: String =
        payload(768, 5).iter().map(|b| char::from(b'!' + b % 90)).collect::<String>() + &"x".repeat(256);
    assert_eq!(value.len(), 1024);
    let mut group = c.benchmark_group("E2_dio_ingest_1KiB_batched");
    group.sample_size(10).measurement_time(Duration::from_secs(10)).warm_up_time(Duration::from_secs(2));
    group.throughput(Throughput::Elements(EVENTS_PER_COMMIT));
    for (name, secure, direct_io) in [
        ("signed_mldsa65_encrypted_aes256gcm", true, false),
        ("signed_mldsa65_encrypted_aes256gcm_direct_appends", true, true),
        ("unsigned_plaintext", false, false),
    ] {
        group.bench_function(name, |bencher| {
            bencher.iter_custom(|commits| {
                runtime.block_on(async {
                    let setup = setup(secure, direct_io).await;
                    let start = Instant::now();
                    ingest(&setup, commits, &value).await;
                    start.elapsed()
                })
            })
        });
    }
    group.finish();

    // verify throughput over a signed, encrypted chain of ~256 MiB.
    let setup = runtime.block_on(async {
        let setup = setup(true, false).await;
        ingest(&setup, 200, &value).await;
        setup
    });
    let bytes = setup.chain.durable_sequence() * 1300;
    let mut group = c.benchmark_group("E4_verify");
    group.sample_size(10).measurement_time(Duration::from_secs(15)).throughput(Throughput::Bytes(bytes));
    group.bench_function("signed_encrypted_200k_events", |bencher| {
        bencher.iter(|| runtime.block_on(async { setup.chain.verify().await.unwrap() }))
    });
    group.finish();
}

criterion_group!(benches, signed_ingest);
criterion_main!(benches);
