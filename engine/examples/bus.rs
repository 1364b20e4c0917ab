//! Event bus: two subscribers follow a chat room, one from the beginning,
//! one from "now"; a named consumer resumes where it left off.
//!
//! Run: `cargo run --example bus -p ate`

use ate::messaging::StartAt;
use ate::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize)]
struct ChatMessage {
    from: String,
    text: String,
}

#[tokio::main]
async fn main() -> Result<(), AteError> {
    let builder = ChainBuilder::new(&AteConfig::default()).await.build();
    let chain = builder.open(&ChainKey::from("chat")).await?;
    let session = AteSession::default();

    let mut dio = chain.dio(&session).await;
    let room = *dio.store("general".to_string())?.key();
    dio.store_child(&room, ChatMessage { from: "ann".into(), text: "first!".into() })?;
    dio.commit().await?;

    let mut history = chain.subscribe_collection(&session, &room, CollectionId::default(), StartAt::Beginning)?;
    let mut live = chain.subscribe_collection(&session, &room, CollectionId::default(), StartAt::Now)?;
    for (from, text) in [("bob", "hi ann"), ("ann", "hi bob")] {
        dio.store_child(&room, ChatMessage { from: from.into(), text: text.into() })?;
        dio.commit().await?;
    }
    for _ in 0..3 {
        let event = history.next().await?;
        let message: ChatMessage = event.decode()?;
        println!("history  #{:<3} {}: {}", event.sequence, message.from, message.text);
    }
    for _ in 0..2 {
        let event = live.next().await?;
        let message: ChatMessage = event.decode()?;
        println!("live     #{:<3} {}: {}", event.sequence, message.from, message.text);
    }

    // A consumer commits its position into the chain and resumes after it.
    let mut consumer = chain.consumer(&session, "archiver").await?;
    let handled = consumer.process(|event| async move {
        println!("archiver handled #{}", event.sequence);
        Ok(())
    });
    handled.await?;
    drop(consumer);
    let mut consumer = chain.consumer(&session, "archiver").await?;
    println!("archiver resumes after #{} (committed position {})", consumer.committed() - 1, consumer.committed());
    let next = consumer.next().await?;
    println!("archiver's next event is #{}", next.sequence);
    Ok(())
}
