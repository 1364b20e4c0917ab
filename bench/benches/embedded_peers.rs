//! E1 and E3 against embedded peers on the same workload: bulk appends of
//! 1 KiB values in durable batches of 1,000 keys (each batch fsync'd before
//! the next: ATE `Batched`, fjall `persist(SyncData)`, redb's default
//! immediate durability), one writer; then point reads of random keys.

use ate::StorageBackend;
use ate_bench::{config, ingest, key, open, payload, random_index, scratch_dir, RANDOM_SEED};
use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use std::time::{Duration, Instant};

const BATCH: u64 = 1_000;
const BATCHES_PER_ITERATION: u64 = 10;
const READ_KEYS: u64 = 100_000;
const REDB_TABLE: redb::TableDefinition<u64, &[u8]> = redb::TableDefinition::new("bench");

fn fjall_open(dir: &std::path::Path) -> (fjall::Keyspace, fjall::PartitionHandle) {
    let keyspace = fjall::Config::new(dir).open().expect("fjall keyspace");
    let partition = keyspace.open_partition("bench", fjall::PartitionCreateOptions::default()).expect("partition");
    (keyspace, partition)
}

fn fjall_append(keyspace: &fjall::Keyspace, partition: &fjall::PartitionHandle, first: u64, value: &[u8]) {
    let mut batch = keyspace.batch();
    for index in first..first + BATCH {
        batch.insert(partition, index.to_be_bytes(), value);
    }
    batch.commit().expect("fjall batch");
    keyspace.persist(fjall::PersistMode::SyncData).expect("fjall persist");
}

fn redb_append(database: &redb::Database, first: u64, value: &[u8]) {
    let transaction = database.begin_write().expect("redb write");
    {
        let mut table = transaction.open_table(REDB_TABLE).expect("redb table");
        for index in first..first + BATCH {
            table.insert(index, value).expect("redb insert");
        }
    }
    transaction.commit().expect("redb commit");
}

fn bulk_append(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let value = payload(1024, 1);
    let mut group = c.benchmark_group("E1_peers_bulk_append_1KiB_durable_batches_of_1000");
    group.throughput(Throughput::Elements(BATCH * BATCHES_PER_ITERATION)).sample_size(10);
    group.measurement_time(Duration::from_secs(8));
    group.bench_function(BenchmarkId::new("ate", "1 committer"), |bencher| {
        bencher.iter_custom(|iterations| {
            let dir = scratch_dir();
            runtime.block_on(async {
                let chain = open(&config(dir.path(), StorageBackend::IoUring)).await;
                let started = Instant::now();
                ingest(&chain, iterations * BATCHES_PER_ITERATION, BATCH, 1, &value, 0).await;
                started.elapsed()
            })
        })
    });
    group.bench_function(BenchmarkId::new("fjall", "1 writer"), |bencher| {
        bencher.iter_custom(|iterations| {
            let dir = scratch_dir();
            let (keyspace, partition) = fjall_open(dir.path());
            let started = Instant::now();
            for batch in 0..iterations * BATCHES_PER_ITERATION {
                fjall_append(&keyspace, &partition, batch * BATCH, &value);
            }
            started.elapsed()
        })
    });
    group.bench_function(BenchmarkId::new("redb", "1 writer"), |bencher| {
        bencher.iter_custom(|iterations| {
            let dir = scratch_dir();
            let database = redb::Database::create(dir.path().join("bench.redb")).expect("redb");
            let started = Instant::now();
            for batch in 0..iterations * BATCHES_PER_ITERATION {
                redb_append(&database, batch * BATCH, &value);
            }
            started.elapsed()
        })
    });
    group.finish();
}

fn point_reads(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let value = payload(1024, 2);
    let dirs = (scratch_dir(), scratch_dir(), scratch_dir());
    let chain = runtime.block_on(async {
        let chain = open(&config(dirs.0.path(), StorageBackend::IoUring)).await;
        ingest(&chain, READ_KEYS / BATCH, BATCH, 2, &value, 0).await;
        chain
    });
    let (keyspace, partition) = fjall_open(dirs.1.path());
    let database = redb::Database::create(dirs.2.path().join("bench.redb")).expect("redb");
    for batch in 0..READ_KEYS / BATCH {
        fjall_append(&keyspace, &partition, batch * BATCH, &value);
        redb_append(&database, batch * BATCH, &value);
    }
    let next = |state: &mut u64| random_index(state, READ_KEYS);
    let mut group = c.benchmark_group("E3_peers_point_read_100k_keys_1KiB");
    group.throughput(Throughput::Elements(1)).measurement_time(Duration::from_secs(5));
    group.bench_function("ate", |bencher| {
        let mut state = RANDOM_SEED;
        bencher.iter(|| black_box(chain.get(&key(next(&mut state))).expect("present").payload[0]))
    });
    group.bench_function("fjall", |bencher| {
        let mut state = RANDOM_SEED;
        bencher.iter(|| black_box(partition.get(next(&mut state).to_be_bytes()).expect("read").expect("present")[0]))
    });
    group.bench_function("redb", |bencher| {
        let transaction = database.begin_read().expect("redb read");
        let table = transaction.open_table(REDB_TABLE).expect("redb table");
        let mut state = RANDOM_SEED;
        bencher.iter(|| black_box(table.get(next(&mut state)).expect("read").expect("present").value()[0]))
    });
    group.finish();
}

criterion_group!(benches, bulk_append, point_reads);
criterion_main!(benches);
