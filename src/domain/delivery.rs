//! Where a delivery stands, what recording it takes, and which consent a run's
//! claims need.

use serde::Serialize;

use super::{AppId, Invalid, TemplateId};

/// Where one delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Not sent yet.
    Pending,
    /// Taken by a sender, which will request it shortly; a crash puts it back to
    /// pending, since no request was made for it yet.
    Claimed,
    /// Committed just before the request; left over only by a crash.
    Sending,
    /// WeChat accepted it (errcode 0) and returned a msgid.
    Sent,
    /// Failed for good.
    Failed,
    /// 43101: the user has no subscription for this template.
    Refused,
    /// The message broke a keyword rule, or WeChat said so (47003).
    Invalid,
    /// Sent, but no answer came back: it may or may not have arrived.
    Unknown,
    /// Not sent: no recorded consent for the template (no API call was made).
    Skipped,
    /// Never sent: still pending when the run's send window closed (or a
    /// policy held it past it).
    Expired,
    /// A policy deferred it: a send (with its id in `sends.delivery_id`) goes at its time.
    Deferred,
    /// A policy dropped it (quiet hours, a cap, a duplicate): never sent.
    Suppressed,
}

impl Status {
    /// Every status, in the order they are declared.
    pub const ALL: [Self; 12] = [
        Self::Pending,
        Self::Claimed,
        Self::Sending,
        Self::Sent,
        Self::Failed,
        Self::Refused,
        Self::Invalid,
        Self::Unknown,
        Self::Skipped,
        Self::Expired,
        Self::Deferred,
        Self::Suppressed,
    ];

    /// The stored spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Claimed => "claimed",
            Self::Sending => "sending",
            Self::Sent => "sent",
            Self::Failed => "failed",
            Self::Refused => "refused",
            Self::Invalid => "invalid",
            Self::Unknown => "unknown",
            Self::Skipped => "skipped",
            Self::Expired => "expired",
            Self::Deferred => "deferred",
            Self::Suppressed => "suppressed",
        }
    }

    /// Reads the stored spelling; anything else is an error, never a default.
    pub fn parse(s: &str) -> Result<Self, Invalid> {
        Ok(match s {
            "claimed" => Self::Claimed,
            "sending" => Self::Sending,
            "sent" => Self::Sent,
            "failed" => Self::Failed,
            "refused" => Self::Refused,
            "invalid" => Self::Invalid,
            "unknown" => Self::Unknown,
            "skipped" => Self::Skipped,
            "expired" => Self::Expired,
            "pending" => Self::Pending,
            "deferred" => Self::Deferred,
            "suppressed" => Self::Suppressed,
            other => return Err(Invalid(format!("{other:?} is not a delivery status"))),
        })
    }
}

/// The final (or put-back) state of one delivery, to be recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// The delivery.
    pub id: i64,
    /// Its new status.
    pub status: Status,
    /// WeChat's errcode, if one came back.
    pub errcode: Option<i64>,
    /// WeChat's errmsg or the local reason.
    pub errmsg: Option<String>,
    /// The msgid of an accepted message.
    pub msgid: Option<u64>,
    /// Requests made for it in this attempt to send.
    pub attempts: u32,
}

impl Outcome {
    /// An outcome decided without a request (invalid message, put back to pending).
    pub fn local(id: i64, status: Status, errmsg: Option<String>) -> Self {
        Self {
            id,
            status,
            errcode: None,
            errmsg,
            msgid: None,
            attempts: 0,
        }
    }
}

/// What a delivery that ends (or is put back) in a status does to the one-time
/// credit it held: the single rule behind every settlement, on outcomes, in
/// crash recovery and in a dead instance's rescue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CreditEffect {
    /// The message may have gone out: the credit is used up (WeChat delivers
    /// one message per tap, and an unknown one is counted on the safe side).
    Spend,
    /// 43101: WeChat says the person has no acceptance left, so none is kept.
    Forfeit,
    /// Nothing was delivered: the credit is the person's again.
    Release,
}

/// The settlement rule: what ending in `status` does to a held credit.
pub fn credit_after(status: Status) -> CreditEffect {
    match status {
        Status::Sent | Status::Unknown => CreditEffect::Spend,
        Status::Refused => CreditEffect::Forfeit,
        Status::Pending
        | Status::Claimed
        | Status::Sending
        | Status::Failed
        | Status::Invalid
        | Status::Skipped
        | Status::Expired
        | Status::Deferred
        | Status::Suppressed => CreditEffect::Release,
    }
}

/// Why a delivery was skipped: its person has no consent on record for it.
pub const NO_CONSENT: &str = "no consent";

/// Which consent a run's deliveries must have to be sent: a credit, held in
/// the transaction that claims each delivery; no rejection, read with each page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConsentGate {
    /// Send whatever the consent records say (`consent = "unchecked"`).
    Unchecked,
    /// Skip people who rejected the template or were banned from it (long-term
    /// templates, and templates whose kind is not known).
    NotRefused(AppTemplate),
    /// One-time template: each send holds one of the person's credits; people
    /// with none left are skipped.
    Credit(AppTemplate),
}

impl ConsentGate {
    /// Whether writing an outcome of `status` touches consent under this gate:
    /// a one-time template's outcomes settle the credit each delivery held,
    /// and a refusal of a long-term one records the rejection. Every other
    /// outcome is written the same under any gate.
    pub fn touched_by(&self, status: Status) -> bool {
        match self {
            Self::Unchecked => false,
            Self::NotRefused(_) => status == Status::Refused,
            Self::Credit(_) => true,
        }
    }
}

/// A template of one mini program: consent is kept per AppID, since an openid
/// and a template id only mean something within one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppTemplate {
    /// The mini program's AppID.
    pub appid: AppId,
    /// The template, one of that account's.
    pub template_id: TemplateId,
}

impl AppTemplate {
    /// `template_id` of the mini program `appid`.
    pub fn new(appid: &AppId, template_id: &TemplateId) -> Self {
        Self {
            appid: appid.clone(),
            template_id: template_id.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::test_ids;

    #[test]
    fn every_status_reads_back_and_anything_else_is_an_error() {
        use Status::*;
        for s in [
            Pending, Claimed, Sending, Sent, Failed, Refused, Invalid, Unknown, Skipped, Expired,
            Deferred, Suppressed,
        ] {
            assert_eq!(Status::parse(s.as_str()), Ok(s));
        }
        assert!(Status::parse("Sent").is_err());
        assert!(Status::parse("").is_err());
    }

    #[test]
    fn a_held_credit_is_spent_by_what_may_have_arrived_forfeited_on_43101_else_released() {
        use CreditEffect::*;
        use Status::*;
        let table = [
            (Pending, Release),
            (Claimed, Release),
            (Sending, Release),
            (Sent, Spend),
            (Failed, Release),
            (Refused, Forfeit),
            (Invalid, Release),
            (Unknown, Spend),
            (Skipped, Release),
            (Expired, Release),
            (Deferred, Release),
            (Suppressed, Release),
        ];
        assert_eq!(table.len(), Status::ALL.len());
        for (status, effect) in table {
            assert_eq!(credit_after(status), effect, "{status:?}");
        }
    }

    #[test]
    fn only_a_one_time_template_and_a_long_term_refusal_touch_consent() {
        let t = AppTemplate::new(&test_ids::app("1"), &test_ids::tmpl("t"));
        for status in Status::ALL {
            assert!(!ConsentGate::Unchecked.touched_by(status));
            assert!(ConsentGate::Credit(t.clone()).touched_by(status));
            assert_eq!(
                ConsentGate::NotRefused(t.clone()).touched_by(status),
                status == Status::Refused
            );
        }
    }
}
