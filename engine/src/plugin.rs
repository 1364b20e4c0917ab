//! Plugins: validators (run by the chain before a commit is written),
//! linters (run by a DIO before it signs) and transformers (applied to
//! payloads on write, in reverse on read). Installed with
//! `ChainBuilder::add_validator`, `add_linter` and `add_transformer`.
//!
//! The chain's own checks are validators too: [`TimestampValidator`] and
//! [`SizeValidator`] are installed by default; signature, authority and
//! anti-replay checks are stateful and run in the chain's trust state
//! before any plugin.

use crate::chain::NewEvent;
use crate::session::AteSession;
use crate::trust::Signers;
use crate::trust::{EventView, RejectReason, TrustConfig};
use std::fmt::Debug;

/// What a validator may look at besides the event.
#[derive(Debug)]
pub struct ValidationContext<'a> {
    pub chain: &'a str,
    pub config: &'a TrustConfig,
    /// Keys whose signatures over this commit verified.
    pub signers: &'a Signers,
    pub now_us: u64,
    /// Index of the event within its commit.
    pub index: usize,
}

/// Decides whether one event of a commit may be written. Any rejection
/// rejects the whole commit. Runs under the chain's append lock, possibly
/// on another committer's task: keep it fast. A panic rejects the commit
/// (`RejectReason::Custom`, "the validator panicked").
pub trait Validator: Send + Sync + Debug {
    fn name(&self) -> &'static str;
    fn validate(&self, event: &EventView<'_>, context: &ValidationContext<'_>) -> Result<(), RejectReason>;
}

/// Adjusts a commit a DIO is about to sign (add events, set type tags...).
pub trait Linter: Send + Sync + Debug {
    fn name(&self) -> &'static str;
    fn lint(&self, events: &mut Vec<NewEvent>, session: &AteSession) -> crate::Result<()>;
}

/// Transforms data payloads: `encode` on write (before encryption),
/// `decode` on read (after decryption). Compression lives here.
pub trait Transformer: Send + Sync + Debug {
    fn name(&self) -> &'static str;
    fn encode(&self, payload: Vec<u8>) -> crate::Result<Vec<u8>>;
    fn decode(&self, payload: Vec<u8>) -> crate::Result<Vec<u8>>;
}

/// Rejects events whose timestamp is further than the configured skew from
/// this machine's clock (both directions).
#[derive(Debug, Default)]
pub struct TimestampValidator;

impl Validator for TimestampValidator {
    fn name(&self) -> &'static str {
        "timestamp"
    }
    fn validate(&self, event: &EventView<'_>, context: &ValidationContext<'_>) -> Result<(), RejectReason> {
        let timestamp_us = event.content.timestamp_us;
        let skew_us = context.config.timestamp_skew_us;
        if timestamp_us.abs_diff(context.now_us) > skew_us {
            return Err(RejectReason::TimestampOutOfRange { timestamp_us, now_us: context.now_us, skew_us });
        }
        Ok(())
    }
}

/// Rejects payloads larger than the configured limit.
#[derive(Debug, Default)]
pub struct SizeValidator;

impl Validator for SizeValidator {
    fn name(&self) -> &'static str {
        "size"
    }
    fn validate(&self, event: &EventView<'_>, context: &ValidationContext<'_>) -> Result<(), RejectReason> {
        let limit = context.config.max_event_bytes;
        if event.payload.len() > limit {
            return Err(RejectReason::TooLarge { bytes: event.payload.len(), limit });
        }
        Ok(())
    }
}
