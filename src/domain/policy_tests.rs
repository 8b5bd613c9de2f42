use super::*;

fn layer(toml_text: &str) -> Result<PolicyLayer, PolicyError> {
    let raw: RawPolicy =
        serde_json::from_value(serde_json::to_value(toml_like(toml_text)).expect("json"))
            .expect("shape");
    raw.check()
}

/// The JSON an API caller would send for the same keys.
fn toml_like(json: &str) -> serde_json::Value {
    serde_json::from_str(json).expect("json")
}

fn at(s: &str) -> DateTime<Utc> {
    s.parse().expect("time")
}

fn candidate(tz: Tz) -> Candidate<'static> {
    Candidate {
        openid: "oPerson",
        template_id: "T",
        job: Some("daily"),
        digest: "d1",
        tz,
    }
}

fn sent(template: &str, job: &str, at_: &str) -> Sent {
    Sent {
        template_id: template.into(),
        job: Some(job.into()),
        digest: "other".into(),
        counted: true,
        at: at(at_),
    }
}

#[test]
fn bad_keys_are_named() {
    let cases = [
        (
            r#"{"quiet_hours":{"start":"25:00","end":"08:00"}}"#,
            "quiet_hours.start",
        ),
        (
            r#"{"quiet_hours":{"start":"08:00","end":"04:00"}}"#,
            "quiet_hours",
        ),
        (
            r#"{"quiet_hours":{"start":"08:00","end":"08:00"}}"#,
            "quiet_hours.end",
        ),
        (
            r#"{"quiet_hours":{"start":"22:00","end":"08:00","action":"wait"}}"#,
            "quiet_hours.action",
        ),
        (
            r#"{"frequency_caps":[{"limit":1,"per":"1d"},{"limit":0,"per":"1d"}]}"#,
            "frequency_caps[1].limit",
        ),
        (
            r#"{"frequency_caps":[{"limit":1,"per":"soon"}]}"#,
            "frequency_caps[0].per",
        ),
        (
            r#"{"frequency_caps":[{"limit":1,"per":"36h","calendar":true}]}"#,
            "frequency_caps[0].per",
        ),
        (
            r#"{"frequency_caps":[{"limit":1,"per":"1d","scope":"user"}]}"#,
            "frequency_caps[0].scope",
        ),
        (r#"{"on_cap":"later"}"#, "on_cap"),
        (r#"{"bypass":["caps"]}"#, "bypass"),
        (r#"{"dedupe":"ten minutes"}"#, "dedupe"),
    ];
    for (json, key) in cases {
        let e = layer(json).expect_err(json);
        assert_eq!(e.key, key, "{json}: {e}");
    }
    // 19 h 59 min is allowed; 20 h is not.
    assert!(layer(r#"{"quiet_hours":{"start":"08:01","end":"04:00"}}"#).is_ok());
    assert!(layer(r#"{"quiet_hours":{"start":"08:00","end":"04:00"}}"#).is_err());
}

#[test]
fn narrower_layers_override_wider_ones_key_by_key() {
    let top = layer(
        r#"{"quiet_hours":{"start":"22:00","end":"08:00"},"frequency_caps":[{"limit":3,"per":"24h"}]}"#,
    )
    .unwrap();
    let job = layer(r#"{"on_cap":"defer","dedupe":"10m"}"#).unwrap();
    let send = layer(r#"{"bypass":["quiet_hours"],"count":false}"#).unwrap();
    let p = Policy::fold([&top, &job]);
    assert!(p.quiet_hours.is_some());
    assert_eq!(p.caps.len(), 1);
    assert_eq!(p.on_cap, Action::Defer);
    assert_eq!(p.dedupe, Some(Duration::from_secs(600)));
    assert!(p.count);
    let p = Policy::fold([&top, &job, &send]);
    assert!(p.quiet_hours.is_none(), "bypassed");
    assert_eq!(p.caps.len(), 1, "caps still apply");
    assert!(!p.count);
    // An empty list clears the caps above; 0s turns dedupe off.
    let clear = layer(r#"{"frequency_caps":[],"dedupe":"0s"}"#).unwrap();
    let p = Policy::fold([&top, &job, &clear]);
    assert!(p.caps.is_empty() && p.dedupe.is_none());
    assert!(Policy::fold([]).is_off());
}

#[test]
fn quiet_hours_are_the_recipients_own() {
    let p =
        Policy::fold([
            &layer(r#"{"quiet_hours":{"start":"22:00","end":"08:00","spread":"0s"}}"#).unwrap(),
        ]);
    // 14:00 UTC is 22:00 in Shanghai (quiet) and 09:00 in New York (not, in EST... 09:00 EST).
    let now = at("2026-12-05T14:00:00Z");
    let sh = p.quiet(&candidate(chrono_tz::Asia::Shanghai), now);
    assert_eq!(
        sh,
        Verdict::Held {
            rule: Rule::QuietHours,
            action: Action::Defer,
            until: Some(at("2026-12-06T00:00:00Z")) // 08:00 in Shanghai
        }
    );
    assert_eq!(
        p.quiet(&candidate(chrono_tz::America::New_York), now),
        Verdict::Go
    );
    // 04:00 UTC: 23:00 in New York, 12:00 in Shanghai.
    let now = at("2026-12-05T04:00:00Z");
    assert_eq!(
        p.quiet(&candidate(chrono_tz::Asia::Shanghai), now),
        Verdict::Go
    );
    assert_eq!(
        p.quiet(&candidate(chrono_tz::America::New_York), now),
        Verdict::Held {
            rule: Rule::QuietHours,
            action: Action::Defer,
            until: Some(at("2026-12-05T13:00:00Z")) // 08:00 EST
        }
    );
}

#[test]
fn quiet_hours_follow_a_dst_change() {
    let p =
        Policy::fold([
            &layer(r#"{"quiet_hours":{"start":"01:00","end":"03:00","spread":"0s"}}"#).unwrap(),
        ]);
    let ny = candidate(chrono_tz::America::New_York);
    // 2027-03-14: 02:00 EST jumps to 03:00 EDT. 06:30 UTC is 01:30 EST: quiet,
    // and the window ends at 03:00 EDT = 07:00 UTC (an hour, not two).
    let v = p.quiet(&ny, at("2027-03-14T06:30:00Z"));
    assert_eq!(
        v,
        Verdict::Held {
            rule: Rule::QuietHours,
            action: Action::Defer,
            until: Some(at("2027-03-14T07:00:00Z"))
        }
    );
    // 2027-11-07: 02:00 EDT falls back to 01:00 EST. 05:30 UTC is 01:30 EST
    // (the second 01:30): still quiet, until 03:00 EST = 08:00 UTC.
    let v = p.quiet(&ny, at("2027-11-07T05:30:00Z"));
    assert!(matches!(v, Verdict::Held { until: Some(u), .. } if u == at("2027-11-07T08:00:00Z")));
    // Summer: 03:30 EDT = 07:30 UTC is outside.
    assert_eq!(p.quiet(&ny, at("2027-07-01T07:30:00Z")), Verdict::Go);
}

#[test]
fn deferred_people_are_spread_over_the_spread() {
    let p = Policy::fold([&layer(r#"{"quiet_hours":{"start":"22:00","end":"08:00"}}"#).unwrap()]);
    let now = at("2026-12-05T15:00:00Z");
    let end = at("2026-12-06T00:00:00Z");
    let times: BTreeSet<_> = (0..50)
        .map(|i| {
            let id = format!("o{i}");
            let c = Candidate {
                openid: &id,
                ..candidate(chrono_tz::Asia::Shanghai)
            };
            match p.quiet(&c, now) {
                Verdict::Held { until: Some(u), .. } => u,
                v => panic!("{v:?}"),
            }
        })
        .collect();
    assert!(times.len() > 40, "offsets differ per person");
    assert!(
        times
            .iter()
            .all(|t| *t >= end && *t < end + Span::minutes(5))
    );
}

#[test]
fn a_rolling_cap_counts_what_went_and_frees_when_the_oldest_leaves() {
    let p =
        Policy::fold([
            &layer(r#"{"frequency_caps":[{"limit":2,"per":"24h"}],"on_cap":"defer"}"#).unwrap(),
        ]);
    let c = candidate(chrono_tz::Asia::Shanghai);
    let now = at("2026-12-05T12:00:00Z");
    let one = [sent("T", "daily", "2026-12-05T01:00:00Z")];
    assert_eq!(p.against(&c, &one, now), Verdict::Go);
    let two = [
        sent("U", "other", "2026-12-04T13:00:00Z"),
        sent("T", "daily", "2026-12-05T01:00:00Z"),
    ];
    assert_eq!(
        p.against(&c, &two, now),
        Verdict::Held {
            rule: Rule::Cap,
            action: Action::Defer,
            until: Some(at("2026-12-05T13:00:00Z"))
        }
    );
    // Uncounted ones (count = false) and old ones do not count.
    let mut free = two.clone();
    free[0].counted = false;
    assert_eq!(p.against(&c, &free, now), Verdict::Go);
    let old = [sent("U", "other", "2026-12-04T11:00:00Z"), two[1].clone()];
    assert_eq!(p.against(&c, &old, now), Verdict::Go);
}

#[test]
fn scopes_count_their_own() {
    let tpl =
        Policy::fold([
            &layer(r#"{"frequency_caps":[{"limit":1,"per":"1d","scope":"template"}]}"#).unwrap(),
        ]);
    let job =
        Policy::fold([
            &layer(r#"{"frequency_caps":[{"limit":1,"per":"1d","scope":"job"}]}"#).unwrap(),
        ]);
    let c = candidate(chrono_tz::UTC);
    let now = at("2026-12-05T12:00:00Z");
    let other_template = [sent("U", "daily", "2026-12-05T10:00:00Z")];
    let other_job = [sent("T", "weekly", "2026-12-05T10:00:00Z")];
    assert_eq!(tpl.against(&c, &other_template, now), Verdict::Go);
    assert!(matches!(
        tpl.against(&c, &other_job, now),
        Verdict::Held {
            rule: Rule::Cap,
            action: Action::Drop,
            until: None
        }
    ));
    assert!(matches!(
        job.against(&c, &other_template, now),
        Verdict::Held { .. }
    ));
    assert_eq!(job.against(&c, &other_job, now), Verdict::Go);
}

#[test]
fn a_calendar_cap_counts_the_recipients_day() {
    let p = Policy::fold([&layer(
        r#"{"frequency_caps":[{"limit":1,"per":"1d","calendar":true}],"on_cap":"defer"}"#,
    )
    .unwrap()]);
    let c = candidate(chrono_tz::Asia::Shanghai);
    // 15:30 UTC on the 4th is 23:30 on the 4th in Shanghai; 16:30 is 00:30 on the 5th.
    let yesterday = [sent("T", "daily", "2026-12-04T15:30:00Z")];
    assert_eq!(
        p.against(&c, &yesterday, at("2026-12-04T16:30:00Z")),
        Verdict::Go
    );
    let today = [sent("T", "daily", "2026-12-04T16:10:00Z")];
    assert_eq!(
        p.against(&c, &today, at("2026-12-05T10:00:00Z")),
        Verdict::Held {
            rule: Rule::Cap,
            action: Action::Defer,
            until: Some(at("2026-12-05T16:00:00Z")) // midnight in Shanghai
        }
    );
}

#[test]
fn dedupe_drops_the_same_message_within_the_window() {
    let p = Policy::fold([&layer(r#"{"dedupe":"10m"}"#).unwrap()]);
    let c = candidate(chrono_tz::UTC);
    let mut same = sent("T", "daily", "2026-12-05T11:55:00Z");
    same.digest = "d1".into();
    same.counted = false;
    let now = at("2026-12-05T12:00:00Z");
    assert!(matches!(
        p.against(&c, std::slice::from_ref(&same), now),
        Verdict::Held {
            rule: Rule::Dedupe,
            ..
        }
    ));
    assert_eq!(
        p.against(&c, &[same.clone()], at("2026-12-05T12:06:00Z")),
        Verdict::Go
    );
    let mut other = same;
    other.digest = "d2".into();
    assert_eq!(p.against(&c, &[other], now), Verdict::Go);
    assert_eq!(digest("T", "{}"), digest("T", "{}"));
    assert_ne!(digest("T", "{}"), digest("U", "{}"));
}

#[test]
fn the_fewest_records_that_could_hold_a_claim_bound_the_screen() {
    let fold = |json: &str| Policy::fold([&layer(json).unwrap()]);
    let caps = fold(
        r#"{"frequency_caps":[{"limit":5,"per":"1d"},{"limit":2,"per":"7d","scope":"template"}]}"#,
    );
    assert_eq!(
        caps.fewest_holding(),
        Some(2),
        "the lowest limit, whatever its scope"
    );
    let dedupe = fold(r#"{"frequency_caps":[{"limit":5,"per":"1d"}],"dedupe":"1h"}"#);
    assert_eq!(dedupe.fewest_holding(), Some(1), "one like record holds");
    let mut records_only = fold(r#"{"quiet_hours":{"start":"22:00","end":"08:00"}}"#);
    records_only.record = true;
    assert_eq!(
        records_only.fewest_holding(),
        None,
        "no record holds anything"
    );
    let bypassed =
        fold(r#"{"frequency_caps":[{"limit":1,"per":"1d"}],"bypass":["frequency_caps"]}"#);
    assert_eq!(bypassed.fewest_holding(), None);
}
