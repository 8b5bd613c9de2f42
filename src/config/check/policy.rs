//! `[policy]`, `[apps.NAME.policy]` and `[jobs.policy]`: each layer checked,
//! its problems named by the full key.

use super::Checker;
use crate::domain::policy::{PolicyLayer, RawPolicy};

impl Checker {
    /// The layer at `at` (`policy`, `apps.NAME.policy`, `jobs[i] (NAME).policy`);
    /// an empty one when it has a problem (recorded).
    pub(super) fn policy(&mut self, at: &str, raw: &RawPolicy) -> PolicyLayer {
        raw.check()
            .map_err(|e| self.fail(&format!("{at}.{}", e.key), &e.message))
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::super::Checker;
    use crate::config::raw::RawSettings;

    fn problems(settings: serde_json::Value) -> Vec<String> {
        let raw: RawSettings = serde_json::from_value(settings).unwrap();
        Checker::new("w.toml".into(), PathBuf::from("w.toml"))
            .check(raw)
            .err()
            .map(|e| e.problems)
            .unwrap_or_default()
    }

    #[test]
    fn each_layer_names_its_own_key() {
        let found = problems(serde_json::json!({
            "wechat": {"appid": "wx0123456789abcdef", "secret": "s"},
            "policy": {"quiet_hours": {"start": "20:00", "end": "18:00"}},
            "apps": {"shop": {"appid": "wx1123456789abcdef", "secret": "s",
                              "policy": {"frequency_caps": [{"limit": 0, "per": "1d"}]}}},
            "jobs": [{"name": "daily", "cron": "0 9 * * *", "template_id": "T_abcdefghij",
                      "data": {"thing1": "x"}, "policy": {"on_cap": "later"}}],
        }));
        assert_eq!(found.len(), 3, "{found:?}");
        assert!(
            found
                .iter()
                .any(|p| p.starts_with("w.toml: policy.quiet_hours: 20:00–18:00 is 22 h long")),
            "{found:?}"
        );
        assert!(
            found.iter().any(|p| p.starts_with(
                "w.toml: apps.shop.policy.frequency_caps[0].limit: must be 1 or more"
            )),
            "{found:?}"
        );
        assert!(
            found
                .iter()
                .any(|p| p.starts_with("w.toml: jobs[0] (daily).policy.on_cap: \"later\" is not")),
            "{found:?}"
        );
    }
}
