//! `[sources.NAME]` and the `source`/`query` pair of a job whose audience is a query.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::Checker;
use crate::config::{Audience, JobQuery, SourceKind, SourceSettings, database, raw};
use crate::domain::AppName;

impl Checker {
    /// `[sources.NAME]` tables: read-only connections to the operator's databases.
    pub(super) fn sources(&mut self, raw: BTreeMap<String, raw::RawSource>) -> Vec<SourceSettings> {
        let mut sources = Vec::new();
        for (name, source) in raw {
            let at = format!("sources.{name}");
            // The job-name rule, lower case: `WXPUSH__SOURCES__NAME__URL` must reach it.
            if let Err(e) = AppName::parse(&name) {
                self.fail(&at, e);
                continue;
            }
            let before = self.problems.len();
            let url = self.secret(
                &format!("{at}.url"),
                source.url.map(secrecy::SecretString::from),
                source.url_file.as_deref(),
            );
            let Some(url) = url else {
                // A bad url_file was reported by `secret`; only absence is left.
                if self.problems.len() == before {
                    self.fail(
                        &format!("{at}.url"),
                        "is missing; give url (or url_file) such as mysql://reader@host:3306/shop",
                    );
                }
                continue;
            };
            let written = secrecy::ExposeSecret::expose_secret(&url).trim().to_owned();
            let Some(kind) = SourceKind::of_url(&written) else {
                // The scheme only: the rest may hold a password.
                let scheme = written.split_once(':').map_or("(none)", |(s, _)| s);
                self.fail(
                    &format!("{at}.url"),
                    format!(
                        "{scheme:?} is not a supported source; use mysql://, mariadb://, postgres://, postgresql:// or sqlite://"
                    ),
                );
                continue;
            };
            let url = if kind == SourceKind::Sqlite {
                // As [database] url: a relative path is read from the config's folder.
                match database::resolve(&written, &self.config_dir()) {
                    Ok(url) => url,
                    Err(e) => {
                        self.fail(&format!("{at}.url"), e);
                        continue;
                    }
                }
            } else {
                written
            };
            if source.timeout.is_zero() {
                self.fail(&format!("{at}.timeout"), "must be more than 0s");
            }
            sources.push(SourceSettings {
                name,
                kind,
                url: url.into(),
                timeout: source.timeout,
            });
        }
        sources
    }

    /// A job's `source` and `query`: both with `audience = "query"`, neither otherwise.
    pub(super) fn job_query(
        &mut self,
        at: &str,
        audience: Audience,
        source: Option<String>,
        query: Option<String>,
        sources: &[SourceSettings],
    ) -> Result<Option<Arc<JobQuery>>, ()> {
        let before = self.problems.len();
        if audience != Audience::Query {
            for (key, given) in [("source", source.is_some()), ("query", query.is_some())] {
                if given {
                    self.fail(
                        &format!("{at}.{key}"),
                        "is only read with audience = \"query\"; set that, or remove it",
                    );
                }
            }
            return if self.problems.len() > before {
                Err(())
            } else {
                Ok(None)
            };
        }
        let sql = query.map(|q| q.trim().to_owned()).filter(|q| !q.is_empty());
        if sql.is_none() {
            self.fail(
                &format!("{at}.query"),
                "is missing; audience = \"query\" needs a SELECT with an openid column",
            );
        }
        let source = match source {
            None => {
                self.fail(
                    &format!("{at}.source"),
                    "is missing; audience = \"query\" needs a [sources.NAME] to run on",
                );
                None
            }
            Some(name) => match sources.iter().find(|s| s.name == name) {
                Some(s) => Some(s.clone()),
                None => {
                    let known: Vec<&str> = sources.iter().map(|s| s.name.as_str()).collect();
                    self.fail(
                        &format!("{at}.source"),
                        format!(
                            "no source is named {name:?} (configured: {}); define it as [sources.{name}]",
                            if known.is_empty() { "none".to_owned() } else { known.join(", ") }
                        ),
                    );
                    None
                }
            },
        };
        match (source, sql) {
            (Some(source), Some(sql)) => Ok(Some(Arc::new(JobQuery { source, sql }))),
            _ => Err(()),
        }
    }
}
