//! Sends on demand: one message to one person at a time the caller chose, made
//! once per idempotency key. What a caller's keys may be, and where a send stands.

use serde::Serialize;

use super::{CreditEffect, Invalid, Status, credit_after};

/// A caller's `Idempotency-Key`: 1 to 255 printable ASCII characters. A
/// retried request with the same key finds the send the first one made.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    /// Checks `s` as a key.
    pub fn parse(s: &str) -> Result<Self, Invalid> {
        if s.is_empty() || s.len() > 255 {
            return Err(Invalid(format!(
                "an idempotency key is 1 to 255 characters, not {}",
                s.len()
            )));
        }
        if let Some(c) = s.chars().find(|c| !(' '..='~').contains(c)) {
            return Err(Invalid(format!(
                "an idempotency key is printable ASCII; {c:?} is not"
            )));
        }
        Ok(Self(s.to_owned()))
    }
}

impl AsRef<str> for IdempotencyKey {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// A caller's name for a group of sends, cancelled together (`cancel_key`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CancelKey(String);

impl CancelKey {
    /// Checks `s` as a cancel key: 1 to 255 characters, none of them a control.
    pub fn parse(s: &str) -> Result<Self, Invalid> {
        let n = s.chars().count();
        if n == 0 || n > 255 {
            return Err(Invalid(format!(
                "a cancel key is 1 to 255 characters, not {n}"
            )));
        }
        if s.chars().any(char::is_control) {
            return Err(Invalid("a cancel key has no control characters".into()));
        }
        Ok(Self(s.to_owned()))
    }
}

impl AsRef<str> for CancelKey {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// Where a send stands, as stored. `Pending` is shown to callers as
/// `scheduled` before its time and `queued` from then on (see `shown`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SendStatus {
    /// Accepted, not taken by a sender yet; the only state a cancel wins in.
    Pending,
    /// Committed just before its request; left over only by a crash.
    Sending,
    /// WeChat accepted it.
    Sent,
    /// Failed for good.
    Failed,
    /// 43101: the person has no subscription for the template.
    Refused,
    /// The message broke a keyword rule, or WeChat said so (47003).
    Invalid,
    /// Requested, and no answer came back.
    Unknown,
    /// Not sent: no credit for a one-time template (no request was made).
    Skipped,
    /// Cancelled by the caller before a sender took it.
    Cancelled,
    /// Never sent: still pending at its `expires_at` (or a policy held it past it).
    Expired,
    /// A policy dropped it (quiet hours, a cap, a duplicate): never sent.
    Suppressed,
}

impl SendStatus {
    /// Every status, in the order they are declared.
    pub const ALL: [Self; 11] = [
        Self::Pending,
        Self::Sending,
        Self::Sent,
        Self::Failed,
        Self::Refused,
        Self::Invalid,
        Self::Unknown,
        Self::Skipped,
        Self::Cancelled,
        Self::Expired,
        Self::Suppressed,
    ];

    /// The stored spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Sending => "sending",
            Self::Sent => "sent",
            Self::Failed => "failed",
            Self::Refused => "refused",
            Self::Invalid => "invalid",
            Self::Unknown => "unknown",
            Self::Skipped => "skipped",
            Self::Cancelled => "cancelled",
            Self::Expired => "expired",
            Self::Suppressed => "suppressed",
        }
    }

    /// Reads the stored spelling; anything else is an error, never a default.
    pub fn parse(s: &str) -> Result<Self, Invalid> {
        Self::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| Invalid(format!("{s:?} is not a send status")))
    }

    /// What callers see: a pending send is `scheduled` until `due`, then `queued`.
    pub fn shown(self, due: bool) -> &'static str {
        match self {
            Self::Pending if due => "queued",
            Self::Pending => "scheduled",
            other => other.as_str(),
        }
    }

    /// Whether the send has ended (nothing will change it any more).
    pub fn is_final(self) -> bool {
        !matches!(self, Self::Pending | Self::Sending)
    }

    /// What ending in this status does to a one-time credit the send held:
    /// the run deliveries' rule (`credit_after`), a cancel or expiry releasing it.
    pub fn credit_after(self) -> CreditEffect {
        match self {
            Self::Pending => credit_after(Status::Pending),
            Self::Sending => credit_after(Status::Sending),
            Self::Sent => credit_after(Status::Sent),
            Self::Failed => credit_after(Status::Failed),
            Self::Refused => credit_after(Status::Refused),
            Self::Invalid => credit_after(Status::Invalid),
            Self::Unknown => credit_after(Status::Unknown),
            Self::Skipped => credit_after(Status::Skipped),
            Self::Cancelled | Self::Expired | Self::Suppressed => CreditEffect::Release,
        }
    }
}

impl From<Status> for SendStatus {
    /// A delivery outcome, as a send's (the send path classifies WeChat's
    /// answers as runs do).
    fn from(s: Status) -> Self {
        match s {
            Status::Pending | Status::Claimed => Self::Pending,
            Status::Sending => Self::Sending,
            Status::Sent => Self::Sent,
            Status::Failed => Self::Failed,
            Status::Refused => Self::Refused,
            Status::Invalid => Self::Invalid,
            Status::Unknown => Self::Unknown,
            Status::Skipped => Self::Skipped,
            Status::Expired => Self::Expired,
            Status::Deferred => Self::Pending,
            Status::Suppressed => Self::Suppressed,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_printable_ascii_of_1_to_255() {
        assert!(IdempotencyKey::parse("order-shipped:1234").is_ok());
        assert!(IdempotencyKey::parse("with space ~").is_ok());
        assert!(IdempotencyKey::parse(&"k".repeat(255)).is_ok());
        assert!(IdempotencyKey::parse("").is_err());
        assert!(IdempotencyKey::parse(&"k".repeat(256)).is_err());
        assert!(IdempotencyKey::parse("订单").is_err());
        assert!(IdempotencyKey::parse("tab\there").is_err());
        assert!(CancelKey::parse("订单-42").is_ok());
        assert!(CancelKey::parse("").is_err());
        assert!(CancelKey::parse("a\nb").is_err());
    }

    #[test]
    fn statuses_round_trip_and_pending_is_shown_by_its_time() {
        for s in SendStatus::ALL {
            assert_eq!(SendStatus::parse(s.as_str()).unwrap(), s);
        }
        assert!(SendStatus::parse("queued").is_err());
        assert_eq!(SendStatus::Pending.shown(false), "scheduled");
        assert_eq!(SendStatus::Pending.shown(true), "queued");
        assert_eq!(SendStatus::Sent.shown(true), "sent");
        assert!(!SendStatus::Pending.is_final() && !SendStatus::Sending.is_final());
        assert!(SendStatus::Cancelled.is_final() && SendStatus::Unknown.is_final());
    }

    #[test]
    fn a_credit_is_spent_as_a_runs_would_be_and_released_by_cancel_or_expiry() {
        let table = [
            (SendStatus::Sent, CreditEffect::Spend),
            (SendStatus::Unknown, CreditEffect::Spend),
            (SendStatus::Refused, CreditEffect::Forfeit),
            (SendStatus::Failed, CreditEffect::Release),
            (SendStatus::Invalid, CreditEffect::Release),
            (SendStatus::Cancelled, CreditEffect::Release),
            (SendStatus::Expired, CreditEffect::Release),
        ];
        for (status, effect) in table {
            assert_eq!(status.credit_after(), effect, "{status:?}");
        }
    }
}
