//! WORM retention: a chain policy (mode, default retention, designated
//! keys), per-object retain-until dates that only ever grow, and legal
//! holds. Pure rules: [`super::TrustState`] keeps the state and calls these
//! while it validates a commit, so every path that validates (append, the
//! DIO, the daemon, replica ingest, `verify`) enforces the same rules.
//!
//! Time is the event's own timestamp, never the verifier's clock: replaying
//! a chain years later reaches the same verdicts. Live appends stamp events
//! within the timestamp skew of now (`TimestampValidator`).
//!
//! Semantics side by side with S3 Object Lock: docs/worm.md.

use crate::crypto::KeyId;
use crate::key::PrimaryKey;
use crate::trust::Signers;
use serde::{Deserialize, Serialize};

/// The object that holds a chain's retention policy.
pub fn policy_key() -> PrimaryKey {
    PrimaryKey::from_name("ate.retention.policy")
}

/// How strictly retention binds (S3 Object Lock's modes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default, Serialize, Deserialize)]
pub enum RetentionMode {
    /// No retention: deletes follow write authority only.
    #[default]
    None,
    /// Holders of a bypass key may shorten retention or delete early.
    Governance,
    /// Nobody, the chain's root keys included, may shorten retention or
    /// delete before it expires.
    Compliance,
}

/// A chain's retention policy. Set once and only ever tightened: the mode
/// never weakens, the default period never shrinks, designated keys are only
/// ever removed.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct RetentionPolicy {
    pub mode: RetentionMode,
    /// Every new version of an object is retained at least this long past
    /// its timestamp (0: only explicit retain-until dates).
    pub default_retention_us: u64,
    /// Governance mode: signers that may shorten retention or delete early.
    pub bypass_keys: Vec<KeyId>,
    /// Signers that may place and remove legal holds. Empty: whoever may
    /// write the object.
    pub hold_keys: Vec<KeyId>,
}

/// The payload of a `Retention` event. On [`policy_key`] only `Policy`;
/// on any other object only `Object`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum RetentionChange {
    Policy(RetentionPolicy),
    Object {
        /// A new retain-until date (µs since the epoch).
        retain_until_us: Option<u64>,
        /// Place (`true`) or remove (`false`) a legal hold.
        legal_hold: Option<bool>,
    },
}

/// The retention of one object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ObjectRetention {
    /// Deletion is refused while an event's timestamp is before this (µs).
    pub retain_until_us: u64,
    pub legal_hold: bool,
}

impl ObjectRetention {
    /// Whether the object is protected at `timestamp_us`. Exactly at the
    /// retain-until instant it is no longer protected (as in S3).
    pub fn retained_at(&self, timestamp_us: u64) -> bool {
        timestamp_us < self.retain_until_us
    }
}

/// Which retention rule refused a change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetentionRule {
    LegalHold,
    Governance,
    Compliance,
}

impl std::fmt::Display for RetentionRule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            RetentionRule::LegalHold => "a legal hold",
            RetentionRule::Governance => "governance-mode retention",
            RetentionRule::Compliance => "compliance-mode retention",
        })
    }
}

/// Why a retention rule refused an event (carried by `RejectReason::Retention`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RetentionViolation {
    #[error("the object is protected by {rule}{}", until_us.map_or(String::new(), |until| format!(" until {until} µs")))]
    Protected { rule: RetentionRule, until_us: Option<u64> },
    #[error("retention may only be extended: retained until {current_us} µs, asked for {requested_us} µs ({rule})")]
    Shortened { rule: RetentionRule, current_us: u64, requested_us: u64 },
    #[error("a retention policy may only be tightened: {0}")]
    Loosened(&'static str),
    #[error("legal holds are placed and removed by a designated hold key")]
    NotHoldKey,
    #[error("the retention policy lives on its own object, object retention on the object")]
    WrongObject,
}

/// Whether deleting an object with `retention` at `timestamp_us` is allowed.
pub fn check_delete(
    policy: &RetentionPolicy,
    retention: &ObjectRetention,
    timestamp_us: u64,
    signers: &Signers,
) -> Result<(), RetentionViolation> {
    if retention.legal_hold {
        return Err(RetentionViolation::Protected { rule: RetentionRule::LegalHold, until_us: None });
    }
    if !retention.retained_at(timestamp_us) {
        return Ok(());
    }
    let until_us = Some(retention.retain_until_us);
    match policy.mode {
        // Dates set under no policy still bind like governance, without a bypass.
        RetentionMode::None => Err(RetentionViolation::Protected { rule: RetentionRule::Governance, until_us }),
        RetentionMode::Governance if bypassed(policy, signers) => Ok(()),
        RetentionMode::Governance => Err(RetentionViolation::Protected { rule: RetentionRule::Governance, until_us }),
        RetentionMode::Compliance => Err(RetentionViolation::Protected { rule: RetentionRule::Compliance, until_us }),
    }
}

fn bypassed(policy: &RetentionPolicy, signers: &Signers) -> bool {
    policy.bypass_keys.iter().any(|key| signers.contains(key))
}

/// The retention after an object change, or why it is refused.
pub fn apply_object_change(
    policy: &RetentionPolicy,
    current: ObjectRetention,
    retain_until_us: Option<u64>,
    legal_hold: Option<bool>,
    signers: &Signers,
) -> Result<ObjectRetention, RetentionViolation> {
    let mut next = current;
    if let Some(requested_us) = retain_until_us {
        if requested_us < current.retain_until_us {
            let rule = match policy.mode {
                RetentionMode::Compliance => Some(RetentionRule::Compliance),
                RetentionMode::Governance if bypassed(policy, signers) => None,
                RetentionMode::Governance | RetentionMode::None => Some(RetentionRule::Governance),
            };
            if let Some(rule) = rule {
                return Err(RetentionViolation::Shortened { rule, current_us: current.retain_until_us, requested_us });
            }
        }
        next.retain_until_us = requested_us;
    }
    if let Some(hold) = legal_hold {
        let designated = policy.hold_keys.is_empty() || policy.hold_keys.iter().any(|key| signers.contains(key));
        if !designated {
            return Err(RetentionViolation::NotHoldKey);
        }
        next.legal_hold = hold;
    }
    Ok(next)
}

/// The retention a new version written at `timestamp_us` leaves the object with.
pub fn after_new_version(policy: &RetentionPolicy, current: ObjectRetention, timestamp_us: u64) -> ObjectRetention {
    let by_default = match policy.default_retention_us {
        0 => 0,
        period => timestamp_us.saturating_add(period),
    };
    ObjectRetention { retain_until_us: current.retain_until_us.max(by_default), ..current }
}

/// Checks that `next` only tightens `current`.
pub fn check_policy_change(current: &RetentionPolicy, next: &RetentionPolicy) -> Result<(), RetentionViolation> {
    if next.mode < current.mode {
        return Err(RetentionViolation::Loosened("the mode may not go back"));
    }
    if next.default_retention_us < current.default_retention_us {
        return Err(RetentionViolation::Loosened("the default retention may not shrink"));
    }
    if current.mode != RetentionMode::None {
        let subset = |next: &[KeyId], current: &[KeyId]| next.iter().all(|key| current.contains(key));
        if !subset(&next.bypass_keys, &current.bypass_keys) {
            return Err(RetentionViolation::Loosened("bypass keys may only be removed"));
        }
        // Going from "whoever may write" to designated keys tightens; the reverse does not.
        if !current.hold_keys.is_empty() && (next.hold_keys.is_empty() || !subset(&next.hold_keys, &current.hold_keys))
        {
            return Err(RetentionViolation::Loosened("hold keys may only be removed"));
        }
    }
    if next.mode == RetentionMode::Compliance && !next.bypass_keys.is_empty() {
        return Err(RetentionViolation::Loosened("compliance mode has no bypass keys"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(byte: u8) -> KeyId {
        KeyId([byte; 32])
    }

    fn signed_by(keys: &[KeyId]) -> Signers {
        keys.iter().copied().collect()
    }

    fn policy(mode: RetentionMode) -> RetentionPolicy {
        RetentionPolicy { mode, default_retention_us: 0, bypass_keys: vec![key(1)], hold_keys: vec![key(2)] }
    }

    #[test]
    fn deletion_is_refused_until_the_exact_instant_in_each_mode() {
        let retained = ObjectRetention { retain_until_us: 1_000, legal_hold: false };
        for mode in [RetentionMode::None, RetentionMode::Governance, RetentionMode::Compliance] {
            let policy = RetentionPolicy { bypass_keys: vec![], ..policy(mode) };
            assert!(check_delete(&policy, &retained, 999, &signed_by(&[])).is_err(), "{mode:?} one µs before");
            assert_eq!(check_delete(&policy, &retained, 1_000, &signed_by(&[])), Ok(()), "{mode:?} at the instant");
            assert_eq!(check_delete(&policy, &retained, 1_001, &signed_by(&[])), Ok(()));
        }
    }

    #[test]
    fn governance_yields_to_a_bypass_key_and_compliance_to_nobody() {
        let retained = ObjectRetention { retain_until_us: 1_000, legal_hold: false };
        let governance = policy(RetentionMode::Governance);
        assert_eq!(check_delete(&governance, &retained, 10, &signed_by(&[key(1)])), Ok(()));
        assert!(matches!(
            check_delete(&governance, &retained, 10, &signed_by(&[key(9)])),
            Err(RetentionViolation::Protected { rule: RetentionRule::Governance, until_us: Some(1_000) })
        ));
        let compliance = RetentionPolicy { bypass_keys: vec![], ..policy(RetentionMode::Compliance) };
        assert!(matches!(
            check_delete(&compliance, &retained, 10, &signed_by(&[key(1), key(2)])),
            Err(RetentionViolation::Protected { rule: RetentionRule::Compliance, .. })
        ));
    }

    #[test]
    fn a_legal_hold_blocks_deletion_whatever_the_dates_and_only_hold_keys_move_it() {
        let held = ObjectRetention { retain_until_us: 0, legal_hold: true };
        let governance = policy(RetentionMode::Governance);
        assert!(matches!(
            check_delete(&governance, &held, u64::MAX, &signed_by(&[key(1)])),
            Err(RetentionViolation::Protected { rule: RetentionRule::LegalHold, until_us: None })
        ));
        assert_eq!(
            apply_object_change(&governance, held, None, Some(false), &signed_by(&[key(1)])),
            Err(RetentionViolation::NotHoldKey)
        );
        let released = apply_object_change(&governance, held, None, Some(false), &signed_by(&[key(2)])).unwrap();
        assert!(!released.legal_hold);
    }

    #[test]
    fn retention_extends_freely_and_shortens_only_by_governance_bypass() {
        let current = ObjectRetention { retain_until_us: 1_000, legal_hold: false };
        for mode in [RetentionMode::None, RetentionMode::Governance, RetentionMode::Compliance] {
            let extended = apply_object_change(&policy(mode), current, Some(2_000), None, &signed_by(&[])).unwrap();
            assert_eq!(extended.retain_until_us, 2_000);
        }
        let shorten =
            |mode, signers: &[KeyId]| apply_object_change(&policy(mode), current, Some(500), None, &signed_by(signers));
        assert_eq!(shorten(RetentionMode::Governance, &[key(1)]).unwrap().retain_until_us, 500);
        assert!(matches!(
            shorten(RetentionMode::Governance, &[key(3)]),
            Err(RetentionViolation::Shortened {
                rule: RetentionRule::Governance,
                current_us: 1_000,
                requested_us: 500
            })
        ));
        assert!(matches!(
            shorten(RetentionMode::Compliance, &[key(1)]),
            Err(RetentionViolation::Shortened { rule: RetentionRule::Compliance, .. })
        ));
    }

    #[test]
    fn new_versions_get_the_default_period_and_never_lose_a_longer_date() {
        let policy = RetentionPolicy { default_retention_us: 100, ..policy(RetentionMode::Compliance) };
        let first = after_new_version(&policy, ObjectRetention::default(), 1_000);
        assert_eq!(first.retain_until_us, 1_100);
        let explicit = ObjectRetention { retain_until_us: 5_000, ..first };
        assert_eq!(after_new_version(&policy, explicit, 2_000).retain_until_us, 5_000);
    }

    #[test]
    fn policies_only_tighten() {
        let governance = RetentionPolicy { default_retention_us: 100, ..policy(RetentionMode::Governance) };
        let stricter = RetentionPolicy { mode: RetentionMode::Compliance, bypass_keys: vec![], ..governance.clone() };
        assert_eq!(check_policy_change(&RetentionPolicy::default(), &governance), Ok(()));
        assert_eq!(check_policy_change(&governance, &stricter), Ok(()));
        assert!(check_policy_change(&stricter, &governance).is_err(), "back from compliance");
        let shorter = RetentionPolicy { default_retention_us: 50, ..governance.clone() };
        assert!(check_policy_change(&governance, &shorter).is_err());
        let more_bypass = RetentionPolicy { bypass_keys: vec![key(1), key(7)], ..governance.clone() };
        assert!(check_policy_change(&governance, &more_bypass).is_err());
        let fewer_holders = RetentionPolicy { hold_keys: vec![], ..governance.clone() };
        assert!(check_policy_change(&governance, &fewer_holders).is_err(), "empty hold keys means every writer");
        let compliance_with_bypass = RetentionPolicy { mode: RetentionMode::Compliance, ..governance };
        assert!(check_policy_change(&RetentionPolicy::default(), &compliance_with_bypass).is_err());
    }
}
