//! Cache with time-to-live: entries expire, compaction removes them, and
//! every change is announced on the bus as an invalidation.
//!
//! Run: `cargo run --example cache -p ate`

use ate::messaging::{BusEventKind, Cache};
use ate::prelude::*;
use std::time::Duration;

#[tokio::main]
async fn main() -> Result<(), AteError> {
    let builder = ChainBuilder::new(&AteConfig::default()).await.build();
    let chain = builder.open(&ChainKey::from("cache")).await?;
    let session = AteSession::default();
    let prices = Cache::<u32>::new(&chain, &session, "prices");
    let mut changes = prices.changes()?;

    prices.put("apple", 120, Duration::from_millis(200)).await?;
    let pear = prices.get_or_insert_with("pear", Duration::from_secs(60), || async { Ok(95) }).await?;
    println!("apple = {:?}, pear = {pear} (computed once)", prices.get("apple").await?);
    tokio::time::sleep(Duration::from_millis(250)).await;
    println!("after its TTL, apple = {:?}", prices.get("apple").await?);
    println!("compaction removed {} expired entr(y/ies)", prices.compact().await?);
    prices.invalidate("pear").await?;

    while let Some(event) = changes.try_next()? {
        let what = match event.kind {
            BusEventKind::Data => "stored",
            BusEventKind::Deleted => "invalidated",
        };
        println!("bus: entry {} {what} at #{}", event.key, event.sequence);
    }
    Ok(())
}
