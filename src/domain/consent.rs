//! What a user said to a template, and what kind of template it is (wechat-api.md §4).

use serde::{Deserialize, Serialize};

use super::Invalid;

/// How many messages one acceptance allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TemplateKind {
    /// Type 2: each acceptance allows exactly one message.
    OneTime,
    /// Type 3: one acceptance allows messages until the user cancels.
    LongTerm,
}

impl TemplateKind {
    /// The kind for gettemplate's `type` (2 or 3); other numbers are unknown kinds.
    pub fn from_wechat_type(t: i64) -> Option<Self> {
        match t {
            2 => Some(Self::OneTime),
            3 => Some(Self::LongTerm),
            _ => None,
        }
    }

    /// The stored spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::OneTime => "one_time",
            Self::LongTerm => "long_term",
        }
    }

    /// Reads the stored spelling.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "one_time" => Some(Self::OneTime),
            "long_term" => Some(Self::LongTerm),
            _ => None,
        }
    }
}

/// One template's result from `wx.requestSubscribeMessage` or an event push.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ConsentResult {
    /// The user agreed: one more message (one-time), or messages until cancelled.
    Accept,
    /// The user declined, or cancelled later.
    Reject,
    /// WeChat's backend banned this template for the user.
    Ban,
    /// Dropped because another template in the popup had the same title.
    Filter,
}

impl ConsentResult {
    /// Parses `accept`, `reject`, `ban` or `filter`, and the long-term variants
    /// `acceptWithAudio` and `acceptWithAlert`, which are acceptances too.
    pub fn parse(s: &str) -> Result<Self, Invalid> {
        match s {
            "accept" | "acceptWithAudio" | "acceptWithAlert" => Ok(Self::Accept),
            "reject" => Ok(Self::Reject),
            "ban" => Ok(Self::Ban),
            "filter" => Ok(Self::Filter),
            other => Err(Invalid(format!(
                "{other:?} is not a subscribe result (accept, reject, ban or filter)"
            ))),
        }
    }

    /// The stored spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Accept => "accept",
            Self::Reject => "reject",
            Self::Ban => "ban",
            Self::Filter => "filter",
        }
    }
}

/// Where a report of consent came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConsentSource {
    /// The mini program, through `POST /v1/subscriptions`.
    Intake,
    /// WeChat's event push.
    Event,
}

impl ConsentSource {
    /// The stored spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Intake => "intake",
            Self::Event => "event",
        }
    }
}

/// How long one side's acceptance waits for the other side's copy of it.
pub const PAIRING: chrono::TimeDelta = chrono::TimeDelta::minutes(10);

/// The counters one result changes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tally {
    /// One-time credits left.
    pub credits: i64,
    /// Recent acceptances reported by the mini program only, waiting for their pair.
    pub unpaired_intake: i64,
    /// Recent acceptances pushed by WeChat only, waiting for their pair.
    pub unpaired_event: i64,
}

/// Applies one result. One tap on "accept" is reported by the mini program and
/// pushed by WeChat alike: an acceptance that the other side has already
/// reported (recently, and not yet paired) is that same tap, not a second credit.
pub fn tally_after(
    mut t: Tally,
    lapsed: bool,
    result: ConsentResult,
    from: ConsentSource,
) -> Tally {
    if lapsed {
        t.unpaired_intake = 0;
        t.unpaired_event = 0;
    }
    match result {
        ConsentResult::Accept => {
            let (mine, theirs) = match from {
                ConsentSource::Intake => (&mut t.unpaired_intake, &mut t.unpaired_event),
                ConsentSource::Event => (&mut t.unpaired_event, &mut t.unpaired_intake),
            };
            if *theirs > 0 {
                *theirs -= 1;
            } else {
                *mine += 1;
                t.credits += 1;
            }
        }
        ConsentResult::Reject | ConsentResult::Ban => t = Tally::default(),
        ConsentResult::Filter => {}
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;
    use ConsentResult::*;
    use ConsentSource::*;

    #[test]
    fn wechat_types_and_results_parse_as_documented() {
        assert_eq!(
            TemplateKind::from_wechat_type(2),
            Some(TemplateKind::OneTime)
        );
        assert_eq!(
            TemplateKind::from_wechat_type(3),
            Some(TemplateKind::LongTerm)
        );
        assert_eq!(TemplateKind::from_wechat_type(1), None);
        assert_eq!(
            ConsentResult::parse("acceptWithAlert"),
            Ok(ConsentResult::Accept)
        );
        assert_eq!(ConsentResult::parse("ban"), Ok(ConsentResult::Ban));
        assert!(ConsentResult::parse("Accept").is_err());
        for k in [TemplateKind::OneTime, TemplateKind::LongTerm] {
            assert_eq!(TemplateKind::parse(k.as_str()), Some(k));
        }
    }

    fn run(steps: &[(ConsentResult, ConsentSource)]) -> i64 {
        steps
            .iter()
            .fold(Tally::default(), |t, (r, s)| tally_after(t, false, *r, *s))
            .credits
    }

    #[test]
    fn one_tap_reported_by_both_sides_is_one_credit_in_either_order() {
        assert_eq!(run(&[(Accept, Intake), (Accept, Event)]), 1);
        assert_eq!(run(&[(Accept, Event), (Accept, Intake)]), 1);
        // Two taps, interleaved or not.
        assert_eq!(
            run(&[
                (Accept, Intake),
                (Accept, Event),
                (Accept, Intake),
                (Accept, Event)
            ]),
            2
        );
        assert_eq!(
            run(&[
                (Accept, Intake),
                (Accept, Intake),
                (Accept, Event),
                (Accept, Event)
            ]),
            2
        );
        // One side only: every report is a tap.
        assert_eq!(
            run(&[(Accept, Intake), (Accept, Intake), (Accept, Intake)]),
            3
        );
        assert_eq!(run(&[(Accept, Event), (Accept, Event)]), 2);
        // A rejection clears credits and anything waiting to pair.
        assert_eq!(
            run(&[(Accept, Intake), (Reject, Event), (Accept, Event)]),
            1
        );
        assert_eq!(run(&[(Accept, Intake), (Filter, Intake)]), 1);
    }

    #[test]
    fn an_unpaired_report_lapses_so_later_taps_count() {
        let t = tally_after(Tally::default(), true, Accept, Intake);
        let later = tally_after(t, true, Accept, Event);
        assert_eq!(later.credits, 2);
    }
}
