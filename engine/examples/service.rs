//! Typed services (RPC): a handler registered for a declared request type
//! answers typed responses and typed errors; a call with no service running
//! times out.
//!
//! Run: `cargo run --example service -p ate`

use ate::messaging::{invoke, serve, Message, ServiceError};
use ate::prelude::*;
use serde::{Deserialize, Serialize};
use std::time::Duration;

#[derive(Debug, Serialize, Deserialize)]
struct Transfer {
    from: String,
    to: String,
    cents: u64,
}

impl Message for Transfer {
    const TYPE_NAME: &'static str = "bank.Transfer/v1";
}

#[derive(Debug, Serialize, Deserialize)]
struct Receipt {
    reference: String,
}

#[derive(Debug, Serialize, Deserialize)]
enum TransferError {
    InsufficientFunds { missing_cents: u64 },
}

#[tokio::main]
async fn main() -> Result<(), AteError> {
    let builder = ChainBuilder::new(&AteConfig::default()).await.build();
    let chain = builder.open(&ChainKey::from("bank")).await?;
    let session = AteSession::default();

    let service = serve(&chain, &session, |transfer: Transfer| async move {
        if transfer.cents > 10_000 {
            return Err(TransferError::InsufficientFunds { missing_cents: transfer.cents - 10_000 });
        }
        Ok(Receipt { reference: format!("{}->{}:{}", transfer.from, transfer.to, transfer.cents) })
    })?;

    let timeout = Duration::from_secs(5);
    let ok = Transfer { from: "ann".into(), to: "bob".into(), cents: 2_500 };
    let receipt: Receipt = invoke::<_, _, TransferError>(&chain, &session, ok, timeout).await.expect("transfer");
    println!("transfer done, receipt {}", receipt.reference);

    let too_much = Transfer { from: "ann".into(), to: "bob".into(), cents: 50_000 };
    match invoke::<_, Receipt, TransferError>(&chain, &session, too_much, timeout).await {
        Err(ServiceError::Failed(error)) => println!("typed error from the service: {error:?}"),
        other => panic!("expected a typed error, got {other:?}"),
    }

    drop(service);
    let lonely = Transfer { from: "ann".into(), to: "bob".into(), cents: 1 };
    match invoke::<_, Receipt, TransferError>(&chain, &session, lonely, Duration::from_millis(300)).await {
        Err(ServiceError::Engine(AteError::Timeout { timeout_ms })) => {
            println!("no service running: timed out after {timeout_ms} ms")
        }
        other => panic!("expected a timeout, got {other:?}"),
    }
    Ok(())
}
