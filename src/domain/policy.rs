//! Delivery policy: quiet hours, frequency caps and duplicate suppression, as
//! layers (`[policy]`, `[apps.NAME.policy]`, a job's, an API send's) folded into
//! the one policy a delivery is checked against, and the checks themselves,
//! pure: the store runs them inside the claim, with the person's history.

use std::collections::BTreeSet;
use std::time::Duration;

use chrono::{DateTime, Duration as Span, LocalResult, NaiveTime, TimeZone, Utc};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

/// A policy layer as written (TOML or an API send's JSON), checked by `RawPolicy::check`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawPolicy {
    #[serde(default)]
    pub quiet_hours: Option<RawQuietHours>,
    #[serde(default)]
    pub frequency_caps: Option<Vec<RawCap>>,
    #[serde(default)]
    pub on_cap: Option<String>,
    #[serde(default)]
    pub dedupe: Option<String>,
    #[serde(default)]
    pub bypass: Option<Vec<String>>,
    #[serde(default)]
    pub count: Option<bool>,
}

/// `quiet_hours = { start, end, action, spread }` as written.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawQuietHours {
    pub start: String,
    pub end: String,
    #[serde(default)]
    pub action: Option<String>,
    #[serde(default)]
    pub spread: Option<String>,
}

/// One `frequency_caps` entry as written.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawCap {
    pub limit: i64,
    pub per: String,
    #[serde(default)]
    pub scope: Option<String>,
    #[serde(default)]
    pub calendar: Option<bool>,
}

/// A policy key that cannot be used, and why: `key` is relative to the layer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {message}")]
pub struct PolicyError {
    /// The key at fault, such as `quiet_hours.start` or `frequency_caps[1].per`.
    pub key: String,
    /// What is wrong with it.
    pub message: String,
}

fn bad(key: impl Into<String>, message: impl Into<String>) -> PolicyError {
    PolicyError {
        key: key.into(),
        message: message.into(),
    }
}

/// What happens to a delivery a rule holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// It waits (`deferred`) until the rule lets it go, within its deadline.
    Defer,
    /// It ends `suppressed`.
    #[default]
    Drop,
}

impl Action {
    fn parse(key: &str, s: &str) -> Result<Self, PolicyError> {
        match s {
            "defer" => Ok(Self::Defer),
            "drop" => Ok(Self::Drop),
            _ => Err(bad(key, format!("{s:?} is not \"defer\" or \"drop\""))),
        }
    }

    /// Its spelling in config, output and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Defer => "defer",
            Self::Drop => "drop",
        }
    }
}

/// The rule that held a delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Rule {
    /// The recipient's local time was inside `quiet_hours`.
    QuietHours,
    /// A `frequency_caps` entry was full.
    Cap,
    /// The same message went to the person within `dedupe`.
    Dedupe,
}

impl Rule {
    /// Its spelling in output, metrics and the `held` column.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::QuietHours => "quiet_hours",
            Self::Cap => "cap",
            Self::Dedupe => "dedupe",
        }
    }

    /// Reads a stored spelling.
    pub fn parse(s: &str) -> Option<Self> {
        [Self::QuietHours, Self::Cap, Self::Dedupe]
            .into_iter()
            .find(|r| r.as_str() == s)
    }
}

/// `quiet_hours`: no message between `start` and `end` in the recipient's zone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuietHours {
    /// Local time the window opens.
    pub start: NaiveTime,
    /// Local time it closes (the next day's when before `start`).
    pub end: NaiveTime,
    /// Defer (the default) or drop.
    pub action: Action,
    /// Deferred deliveries go out over this long after `end` (5 min by default),
    /// each at its own offset, so that 08:00 is not a storm.
    pub spread: Duration,
}

/// What a cap counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// Every job and API send of the app.
    App,
    /// The same template.
    Template,
    /// The same job (API sends naming the job too).
    Job,
}

impl Scope {
    /// Its spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::App => "app",
            Self::Template => "template",
            Self::Job => "job",
        }
    }
}

/// One `frequency_caps` entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cap {
    /// Messages allowed in the window.
    pub limit: u32,
    /// The window's length (whole days when `calendar`).
    pub per: Duration,
    /// What it counts.
    pub scope: Scope,
    /// Calendar days in the recipient's zone rather than a rolling window.
    pub calendar: bool,
}

/// One policy layer, checked: each key set overrides the layer above.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PolicyLayer {
    /// `quiet_hours`.
    pub quiet_hours: Option<QuietHours>,
    /// `frequency_caps` (an empty list clears the caps above).
    pub caps: Option<Vec<Cap>>,
    /// `on_cap`.
    pub on_cap: Option<Action>,
    /// `dedupe` (`"0s"` turns it off).
    pub dedupe: Option<Duration>,
    /// `bypass`.
    pub bypass: Option<BTreeSet<Rule>>,
    /// `count`.
    pub count: Option<bool>,
}

fn duration(key: &str, s: &str) -> Result<Duration, PolicyError> {
    humantime::parse_duration(s).map_err(|e| bad(key, format!("{s:?} is not a duration: {e}")))
}

fn time_of_day(key: &str, s: &str) -> Result<NaiveTime, PolicyError> {
    NaiveTime::parse_from_str(s, "%H:%M:%S")
        .or_else(|_| NaiveTime::parse_from_str(s, "%H:%M"))
        .map_err(|_| bad(key, format!("{s:?} is not a time of day such as \"22:00\"")))
}

/// The zone of a recipient who has none of their own and no job's (a job's
/// `timezone` default too).
pub const DEFAULT_TZ: Tz = chrono_tz::Asia::Shanghai;

/// A quiet window this long or longer would pause a channel: refused.
pub const MAX_QUIET: Duration = Duration::from_secs(20 * 3600);

impl RawQuietHours {
    fn check(&self) -> Result<QuietHours, PolicyError> {
        let start = time_of_day("quiet_hours.start", &self.start)?;
        let end = time_of_day("quiet_hours.end", &self.end)?;
        let length = (end - start).num_seconds().rem_euclid(86_400);
        if length == 0 {
            return Err(bad("quiet_hours.end", "is the same time as start"));
        }
        if length as u64 >= MAX_QUIET.as_secs() {
            return Err(bad(
                "quiet_hours",
                format!(
                    "{}–{} is {} h long; a window of 20 h or more would pause the channel",
                    self.start,
                    self.end,
                    length / 3600
                ),
            ));
        }
        let action = match &self.action {
            Some(a) => Action::parse("quiet_hours.action", a)?,
            None => Action::Defer,
        };
        let spread = match &self.spread {
            Some(s) => duration("quiet_hours.spread", s)?,
            None => Duration::from_secs(300),
        };
        Ok(QuietHours {
            start,
            end,
            action,
            spread,
        })
    }
}

impl RawCap {
    fn check(&self, key: &str) -> Result<Cap, PolicyError> {
        let limit = u32::try_from(self.limit)
            .ok()
            .filter(|l| *l >= 1)
            .ok_or_else(|| bad(format!("{key}.limit"), "must be 1 or more"))?;
        let per = duration(&format!("{key}.per"), &self.per)?;
        if per.is_zero() {
            return Err(bad(format!("{key}.per"), "must be longer than 0s"));
        }
        let scope = match self.scope.as_deref().unwrap_or("app") {
            "app" => Scope::App,
            "template" => Scope::Template,
            "job" => Scope::Job,
            other => {
                return Err(bad(
                    format!("{key}.scope"),
                    format!("{other:?} is not \"app\", \"template\" or \"job\""),
                ));
            }
        };
        let calendar = self.calendar.unwrap_or(false);
        if calendar && !per.as_secs().is_multiple_of(86_400) {
            return Err(bad(
                format!("{key}.per"),
                "a calendar cap counts whole days: write \"1d\", \"7d\"…",
            ));
        }
        Ok(Cap {
            limit,
            per,
            scope,
            calendar,
        })
    }
}

impl RawPolicy {
    /// Checks every key; the error names the one at fault (relative to the layer).
    pub fn check(&self) -> Result<PolicyLayer, PolicyError> {
        let quiet_hours = self.quiet_hours.as_ref().map(|q| q.check()).transpose()?;
        let caps = self
            .frequency_caps
            .as_ref()
            .map(|caps| {
                caps.iter()
                    .enumerate()
                    .map(|(i, c)| c.check(&format!("frequency_caps[{i}]")))
                    .collect::<Result<Vec<_>, _>>()
            })
            .transpose()?;
        let on_cap = self
            .on_cap
            .as_deref()
            .map(|a| Action::parse("on_cap", a))
            .transpose()?;
        let dedupe = self
            .dedupe
            .as_deref()
            .map(|d| duration("dedupe", d))
            .transpose()?;
        let bypass = self
            .bypass
            .as_ref()
            .map(|rules| {
                rules
                    .iter()
                    .map(|r| match r.as_str() {
                        "quiet_hours" => Ok(Rule::QuietHours),
                        "frequency_caps" => Ok(Rule::Cap),
                        "dedupe" => Ok(Rule::Dedupe),
                        other => Err(bad(
                            "bypass",
                            format!(
                                "{other:?} is not \"quiet_hours\", \"frequency_caps\" or \"dedupe\""
                            ),
                        )),
                    })
                    .collect::<Result<BTreeSet<_>, _>>()
            })
            .transpose()?;
        Ok(PolicyLayer {
            quiet_hours,
            caps,
            on_cap,
            dedupe,
            bypass,
            count: self.count,
        })
    }
}

/// The policy one delivery is checked against: its layers folded.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policy {
    /// `quiet_hours`, unless bypassed.
    pub quiet_hours: Option<QuietHours>,
    /// The caps, unless bypassed.
    pub caps: Vec<Cap>,
    /// What a full cap does (drop by default).
    pub on_cap: Action,
    /// The dedupe window, unless off or bypassed.
    pub dedupe: Option<Duration>,
    /// Whether a message that goes counts towards caps (a bypass with `count = false` does not).
    pub count: bool,
    /// The rules bypassed, as configured (for `check`'s output).
    pub bypass: BTreeSet<Rule>,
    /// Whether what goes is recorded in the person's history: wherever some
    /// policy of the app caps or dedupes (set by the settings, which see them all).
    pub record: bool,
    /// Whether some policy of the app dedupes: only then is each message's
    /// digest worth its cost (set by the settings).
    pub digests: bool,
}

impl Policy {
    /// The layers from the widest (`[policy]`) to the narrowest (an API send's), folded.
    pub fn fold<'a>(layers: impl IntoIterator<Item = &'a PolicyLayer>) -> Self {
        let mut top = PolicyLayer::default();
        for l in layers {
            top.quiet_hours = l.quiet_hours.or(top.quiet_hours);
            top.caps = l.caps.clone().or(top.caps);
            top.on_cap = l.on_cap.or(top.on_cap);
            top.dedupe = l.dedupe.or(top.dedupe);
            top.bypass = l.bypass.clone().or(top.bypass);
            top.count = l.count.or(top.count);
        }
        let bypass = top.bypass.unwrap_or_default();
        Self {
            quiet_hours: top
                .quiet_hours
                .filter(|_| !bypass.contains(&Rule::QuietHours)),
            caps: top
                .caps
                .filter(|_| !bypass.contains(&Rule::Cap))
                .unwrap_or_default(),
            on_cap: top.on_cap.unwrap_or(Action::Drop),
            dedupe: top
                .dedupe
                .filter(|d| !d.is_zero() && !bypass.contains(&Rule::Dedupe)),
            count: top.count.unwrap_or(true),
            bypass,
            record: false,
            digests: false,
        }
    }

    /// Whether it holds nothing and records nothing: the send path skips it whole.
    pub fn is_off(&self) -> bool {
        self.quiet_hours.is_none() && !self.needs_history()
    }

    /// Whether a claim must read and write the person's history (caps, dedupe, counting).
    pub fn needs_history(&self) -> bool {
        !self.caps.is_empty() || self.dedupe.is_some() || self.record
    }

    /// Whether a layer caps or dedupes (bypassed or not): then every message of
    /// its app is recorded, for the caps to count.
    pub fn layer_records(layer: &PolicyLayer) -> bool {
        layer.caps.as_ref().is_some_and(|c| !c.is_empty())
            || layer.dedupe.is_some_and(|d| !d.is_zero())
    }

    /// The fewest records within the lookback that could hold a claim: one
    /// where it dedupes, else the lowest cap's limit; `None` where no record
    /// holds anything (the policy only records, for other policies' caps).
    pub fn fewest_holding(&self) -> Option<u32> {
        if self.dedupe.is_some() {
            return Some(1);
        }
        self.caps.iter().map(|c| c.limit).min()
    }

    /// Which fields of the history a decision compares: (template, job,
    /// digest); the others need not be read.
    pub fn compares(&self) -> (bool, bool, bool) {
        let scoped = |scope| self.caps.iter().any(|c| c.scope == scope);
        let dedupes = self.dedupe.is_some();
        (
            dedupes || scoped(Scope::Template),
            scoped(Scope::Job),
            dedupes,
        )
    }

    /// How far back a claim reads the person's history.
    pub fn lookback(&self) -> Duration {
        let caps = self
            .caps
            .iter()
            // A calendar window starts at most a day before `now - per`.
            .map(|c| {
                c.per
                    + if c.calendar {
                        Duration::from_secs(86_400)
                    } else {
                        Duration::ZERO
                    }
            })
            .max()
            .unwrap_or_default();
        caps.max(self.dedupe.unwrap_or_default())
    }

    /// One line for `check`'s output.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some(q) = &self.quiet_hours {
            parts.push(format!(
                "quiet hours {}–{} ({}, spread {})",
                q.start.format("%H:%M"),
                q.end.format("%H:%M"),
                q.action.as_str(),
                humantime::format_duration(q.spread)
            ));
        }
        for c in &self.caps {
            let per = if c.calendar {
                match c.per.as_secs() / 86_400 {
                    1 => "calendar day".to_owned(),
                    n => format!("{n} calendar days"),
                }
            } else {
                humantime::format_duration(c.per).to_string()
            };
            parts.push(format!(
                "at most {} per {per} ({}, {})",
                c.limit,
                c.scope.as_str(),
                self.on_cap.as_str()
            ));
        }
        if let Some(d) = self.dedupe {
            parts.push(format!("dedupe {}", humantime::format_duration(d)));
        }
        if !self.bypass.is_empty() {
            let b: Vec<&str> = self.bypass.iter().map(|r| r.as_str()).collect();
            parts.push(format!("bypass {}", b.join(", ")));
        }
        if !self.count {
            parts.push("not counted".into());
        }
        if parts.is_empty() {
            "none".into()
        } else {
            parts.join("; ")
        }
    }
}

/// A message that went (or may have) to the person, as the policy history keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sent {
    /// Its template.
    pub template_id: String,
    /// Its job, if it had one.
    pub job: Option<String>,
    /// The digest of its template and rendered data.
    pub digest: String,
    /// Whether it counts towards caps.
    pub counted: bool,
    /// When it was claimed.
    pub at: DateTime<Utc>,
}

/// The delivery being decided.
#[derive(Debug, Clone, Copy)]
pub struct Candidate<'a> {
    /// Who (for the spread's offset).
    pub openid: &'a str,
    /// Its template.
    pub template_id: &'a str,
    /// Its job.
    pub job: Option<&'a str>,
    /// The digest of its template and rendered data.
    pub digest: &'a str,
    /// The recipient's zone.
    pub tz: Tz,
}

/// What the policy says about one delivery now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// It may go.
    Go,
    /// A rule holds it: dropped, or deferred until `until` (`None`: dropped).
    Held {
        /// The rule.
        rule: Rule,
        /// Drop or defer.
        action: Action,
        /// When it may go, when deferred.
        until: Option<DateTime<Utc>>,
    },
}

/// The digest of a message's template and rendered data, for dedupe.
pub fn digest(template_id: &str, data: &str) -> String {
    use sha1::{Digest, Sha1};
    let mut h = Sha1::new();
    h.update(template_id.as_bytes());
    h.update([0]);
    h.update(data.as_bytes());
    hex::encode(h.finalize())
}

/// The first instant at or after local `date`'s `time` in `tz` (a time skipped by
/// a DST change is taken as the first instant after the gap).
fn local_instant(tz: Tz, date: chrono::NaiveDate, time: NaiveTime) -> DateTime<Utc> {
    let mut at = date.and_time(time);
    for _ in 0..4 {
        match tz.from_local_datetime(&at) {
            LocalResult::Single(t) => return t.with_timezone(&Utc),
            LocalResult::Ambiguous(t, _) => return t.with_timezone(&Utc),
            LocalResult::None => at += Span::minutes(30),
        }
    }
    Utc.from_utc_datetime(&at)
}

/// A stable offset in `[0, spread)` for one person.
fn offset(openid: &str, spread: Duration) -> Span {
    let ms = spread.as_millis() as u64;
    if ms == 0 {
        return Span::zero();
    }
    let h = digest("", openid);
    let n = u64::from_str_radix(&h[..12], 16).unwrap_or(0);
    Span::milliseconds((n % ms) as i64)
}

impl QuietHours {
    /// When the window `now` is in ends (with the person's offset), or `None` outside it.
    pub fn until(&self, now: DateTime<Utc>, tz: Tz, openid: &str) -> Option<DateTime<Utc>> {
        let local = now.with_timezone(&tz);
        let t = local.time();
        let inside = if self.start < self.end {
            self.start <= t && t < self.end
        } else {
            t >= self.start || t < self.end
        };
        if !inside {
            return None;
        }
        let date = if t < self.end {
            local.date_naive()
        } else {
            local.date_naive() + Span::days(1)
        };
        Some(local_instant(tz, date, self.end) + offset(openid, self.spread))
    }
}

impl Cap {
    /// Where its window starts for a delivery at `now` in `tz`.
    fn start(&self, now: DateTime<Utc>, tz: Tz) -> DateTime<Utc> {
        let per = Span::from_std(self.per).unwrap_or(Span::MAX);
        if !self.calendar {
            return now - per;
        }
        let days = (self.per.as_secs() / 86_400) as i64;
        let today = now.with_timezone(&tz).date_naive();
        local_instant(tz, today - Span::days(days - 1), NaiveTime::MIN)
    }

    /// When the message sent `at` leaves the window.
    fn leaves(&self, at: DateTime<Utc>, tz: Tz) -> DateTime<Utc> {
        if !self.calendar {
            return at + Span::from_std(self.per).unwrap_or(Span::MAX);
        }
        let days = (self.per.as_secs() / 86_400) as i64;
        local_instant(
            tz,
            at.with_timezone(&tz).date_naive() + Span::days(days),
            NaiveTime::MIN,
        )
    }

    fn counts(&self, c: &Candidate<'_>, s: &Sent) -> bool {
        s.counted
            && match self.scope {
                Scope::App => true,
                Scope::Template => s.template_id == c.template_id,
                Scope::Job => c.job.is_some() && s.job.as_deref() == c.job,
            }
    }
}

impl Policy {
    /// Quiet hours alone (no history needed): checked before any claim.
    pub fn quiet(&self, c: &Candidate<'_>, now: DateTime<Utc>) -> Verdict {
        match self.quiet_hours.as_ref() {
            Some(q) => match q.until(now, c.tz, c.openid) {
                Some(until) => Verdict::Held {
                    rule: Rule::QuietHours,
                    action: q.action,
                    until: (q.action == Action::Defer).then_some(until),
                },
                None => Verdict::Go,
            },
            None => Verdict::Go,
        }
    }

    /// Dedupe and caps against the person's history (`sent`: what went within
    /// `lookback`, this delivery's own record excluded).
    pub fn against(&self, c: &Candidate<'_>, sent: &[Sent], now: DateTime<Utc>) -> Verdict {
        if let Some(window) = self.dedupe {
            let since = now - Span::from_std(window).unwrap_or(Span::MAX);
            if sent
                .iter()
                .any(|s| s.at >= since && s.template_id == c.template_id && s.digest == c.digest)
            {
                return Verdict::Held {
                    rule: Rule::Dedupe,
                    action: Action::Drop,
                    until: None,
                };
            }
        }
        let mut until: Option<DateTime<Utc>> = None;
        // Nothing on record: no cap can be full (each allows one at least).
        let caps = if sent.is_empty() {
            &[][..]
        } else {
            &self.caps[..]
        };
        for cap in caps {
            let (start, tz) = (cap.start(now, c.tz), c.tz);
            let within = |s: &&Sent| s.at >= start && cap.counts(c, s);
            // Counted first: nearly always under the limit, and then nothing is collected.
            if sent.iter().filter(within).count() < cap.limit as usize {
                continue;
            }
            let mut counted: Vec<DateTime<Utc>> =
                sent.iter().filter(within).map(|s| s.at).collect();
            // The slot frees when enough of the oldest leave the window.
            counted.sort();
            let freeing = counted[counted.len() - cap.limit as usize];
            let at = cap.leaves(freeing, tz);
            until = Some(until.map_or(at, |u| u.max(at)));
        }
        match until {
            None => Verdict::Go,
            Some(at) => Verdict::Held {
                rule: Rule::Cap,
                action: self.on_cap,
                until: (self.on_cap == Action::Defer).then_some(at),
            },
        }
    }
}

#[cfg(test)]
#[path = "policy_tests.rs"]
mod tests;
