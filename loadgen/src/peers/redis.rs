//! Redis: streams (`XADD`, `XREADGROUP` + `XACK`, `XREAD`) for ingest,
//! queue and fanout; `GET`/`SET` for the cache. Durability matched to ATE's
//! acknowledged writes: `appendonly yes` with `appendfsync always` for
//! `Sync`/`Batched` (fsync before the reply), `appendfsync no` for `Buffered`
//! (written to the OS before the reply: survives a crash of the server
//! process, not a power loss; ATE's `Buffered` is slightly stronger, as it
//! still syncs at least once per `max_write_bytes`).

use crate::workload::{Backend, BackendFuture};
use redis::aio::MultiplexedConnection;
use redis::streams::{StreamRangeReply, StreamReadOptions, StreamReadReply};
use redis::AsyncCommands;
use std::sync::Arc;

const STREAM: &str = "ate-loadgen";
const QUEUE: &str = "ate-loadgen-queue";
const GROUP: &str = "workers";

fn text(error: redis::RedisError) -> String {
    format!("redis: {error}")
}

pub async fn connect(
    url: &str,
    connections: usize,
    workers: usize,
    durability: ate::Durability,
) -> Result<Arc<dyn Backend>, String> {
    let client = redis::Client::open(url).map_err(text)?;
    let mut pool = Vec::with_capacity(connections.max(1));
    for _ in 0..connections.max(1) {
        pool.push(client.get_multiplexed_async_connection().await.map_err(text)?);
    }
    let mut admin = pool[0].clone();
    let appendfsync = appendfsync(durability);
    for (name, value) in [("appendonly", "yes"), ("appendfsync", appendfsync)] {
        redis::cmd("CONFIG").arg("SET").arg(name).arg(value).query_async::<()>(&mut admin).await.map_err(text)?;
    }
    let created = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(QUEUE)
        .arg(GROUP)
        .arg("$")
        .arg("MKSTREAM")
        .query_async::<()>(&mut admin)
        .await;
    if let Err(error) = created {
        if error.code() != Some("BUSYGROUP") {
            return Err(text(error));
        }
    }
    let readers = (0..workers).map(|_| tokio::sync::Mutex::new(None)).collect();
    Ok(Arc::new(RedisBackend { client, pool, readers, appendfsync }))
}

/// Redis's `appendfsync` for the durability ATE runs with.
fn appendfsync(durability: ate::Durability) -> &'static str {
    match durability {
        ate::Durability::Buffered => "no",
        _ => "always",
    }
}

/// A fanout subscriber: its own connection (a blocking `XREAD` holds up
/// every other command on its connection) and the last id it received.
struct Reader {
    connection: MultiplexedConnection,
    position: String,
}

struct RedisBackend {
    client: redis::Client,
    pool: Vec<MultiplexedConnection>,
    readers: Vec<tokio::sync::Mutex<Option<Reader>>>,
    appendfsync: &'static str,
}

impl RedisBackend {
    fn connection(&self, worker: usize) -> MultiplexedConnection {
        self.pool[worker % self.pool.len()].clone()
    }
}

impl Backend for RedisBackend {
    fn append(&self, worker: usize, records: Vec<(String, Vec<u8>)>) -> BackendFuture<'_, ()> {
        Box::pin(async move {
            // One MULTI/EXEC: all or nothing, like an ATE commit.
            let mut pipe = redis::pipe();
            pipe.atomic();
            let sent = ate::chain::now_us();
            for (name, payload) in &records {
                pipe.cmd("XADD").arg(STREAM).arg("*").arg("n").arg(name).arg("t").arg(sent).arg("d").arg(payload);
            }
            pipe.query_async::<()>(&mut self.connection(worker)).await.map_err(text)
        })
    }

    fn put(&self, worker: usize, key: String, payload: Vec<u8>) -> BackendFuture<'_, ()> {
        Box::pin(async move { self.connection(worker).set::<_, _, ()>(key, payload).await.map_err(text) })
    }

    fn get(&self, worker: usize, key: String) -> BackendFuture<'_, Option<usize>> {
        Box::pin(async move {
            let value: Option<Vec<u8>> = self.connection(worker).get(key).await.map_err(text)?;
            Ok(value.map(|value| value.len()))
        })
    }

    fn push(&self, worker: usize, payloads: Vec<Vec<u8>>) -> BackendFuture<'_, ()> {
        Box::pin(async move {
            // One pipeline: one round trip for the batch, like ATE's one commit.
            let mut pipeline = redis::pipe();
            for payload in payloads {
                pipeline.cmd("XADD").arg(QUEUE).arg("*").arg("d").arg(payload);
            }
            pipeline.query_async::<Vec<String>>(&mut self.connection(worker)).await.map(drop).map_err(text)
        })
    }

    fn take(&self, worker: usize, max: usize) -> BackendFuture<'_, Vec<usize>> {
        Box::pin(async move {
            let mut connection = self.connection(worker);
            let options = StreamReadOptions::default().group(GROUP, format!("c{worker}")).count(max);
            let reply: StreamReadReply = connection.xread_options(&[QUEUE], &[">"], &options).await.map_err(text)?;
            let Some(key) = reply.keys.first() else { return Ok(Vec::new()) };
            if key.ids.is_empty() {
                return Ok(Vec::new());
            }
            let sizes =
                key.ids.iter().map(|entry| entry.get::<Vec<u8>>("d").map_or(0, |payload| payload.len())).collect();
            let ids: Vec<&String> = key.ids.iter().map(|entry| &entry.id).collect();
            connection.xack::<_, _, _, ()>(QUEUE, GROUP, &ids).await.map_err(text)?;
            Ok(sizes)
        })
    }

    fn subscribe(&self, worker: usize) -> BackendFuture<'_, ()> {
        Box::pin(async move {
            let mut connection = self.client.get_multiplexed_async_connection().await.map_err(text)?;
            // Start after the current last entry (`$` would skip entries
            // appended between two reads).
            let latest: StreamRangeReply = connection.xrevrange_count(STREAM, "+", "-", 1).await.map_err(text)?;
            let position = latest.ids.first().map_or_else(|| "0-0".to_string(), |entry| entry.id.clone());
            *self.readers[worker].lock().await = Some(Reader { connection, position });
            Ok(())
        })
    }

    fn receive(&self, worker: usize, max: usize) -> BackendFuture<'_, Vec<(u64, usize)>> {
        Box::pin(async move {
            let mut slot = self.readers[worker].lock().await;
            let reader = slot.as_mut().ok_or("receive before subscribe")?;
            loop {
                let options = StreamReadOptions::default().count(max.max(1)).block(1000);
                let reply: StreamReadReply = reader
                    .connection
                    .xread_options(&[STREAM], &[reader.position.as_str()], &options)
                    .await
                    .map_err(text)?;
                let entries = reply.keys.first().map_or(&[][..], |key| &key.ids[..]);
                if let Some(last) = entries.last() {
                    reader.position = last.id.clone();
                    return Ok(entries
                        .iter()
                        .map(|entry| {
                            let sent = entry.get::<u64>("t").unwrap_or(0);
                            (sent, entry.get::<Vec<u8>>("d").map_or(0, |payload| payload.len()))
                        })
                        .collect());
                }
            }
        })
    }

    fn settings(&self) -> String {
        format!(
            "Redis: appendonly yes, appendfsync {} (set by ate-loadgen); streams, MULTI/EXEC per batch",
            self.appendfsync
        )
    }
}

#[cfg(test)]
mod tests {
    use super::appendfsync;
    use ate::Durability;

    #[test]
    fn redis_fsyncs_whenever_ate_would() {
        assert_eq!(appendfsync(Durability::Sync), "always");
        assert_eq!(appendfsync(Durability::Batched), "always");
        // Buffered: written to the OS before the reply, no fsync, on both sides.
        assert_eq!(appendfsync(Durability::Buffered), "no");
    }
}
