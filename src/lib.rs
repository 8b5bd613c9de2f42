//! wxpush pushes WeChat Mini Program subscribe messages on a schedule.
//!
//! # Layout
//!
//! One push travels config → schedule → run → render/validate → token → send → record:
//!
//! - [`config`]: the TOML file plus `WXPUSH__SECTION__KEY` overrides, checked into
//!   domain types on load.
//! - [`domain`]: `OpenId`, `TemplateId`, keyword kinds and their limits, `Message`
//!   (valid once built), `Schedule` (cron in a time zone).
//! - [`scheduler`]: sleeps until each job's next slot and fires it; catches up a
//!   missed slot on start.
//! - [`runner`]: one firing: take the job's lock, resume unfinished runs, enqueue the
//!   slot (idempotent), drain it.
//! - [`delivery`]: drains a run in pages with bounded concurrency, a rate limit,
//!   one request per openid at a time, retries with backoff, and group-committed
//!   records (each delivery is committed as `sending` before its request).
//! - [`wechat`]: the HTTP client, the shared access_token cache and the errcode
//!   classification.
//! - [`intake`]: the mini program's side: login codes become openids, and the
//!   user's subscribe choices (reported by the mini program or pushed by WeChat)
//!   become consent, which gates sends (one credit per one-time message).
//! - [`storage`]: the only module with SQL: runs, deliveries, recipients, consent,
//!   tokens.
//! - [`cli`], [`commands`]: the command line and its output; `import`: the
//!   recipients CSV (UTF-8 or GB18030) that `recipients import` reads.
//! - [`http`], [`stats`]: health probes and Prometheus metrics for the daemon.
//! - [`retention`]: the daemon's pruning of old history (`[retention]`).
//! - [`app`]: what every command shares; [`daemon`]: the daemon's composition
//!   root; [`clock`]: the wall clock it reads and sleeps on (a manual one in tests).

pub mod app;
pub mod cli;
pub mod clock;
pub mod commands;
pub mod config;
pub mod daemon;
pub mod delivery;
pub mod domain;
pub(crate) mod health;
pub(crate) mod http;
pub(crate) mod import;
pub(crate) mod instance;
pub mod intake;
pub(crate) mod reload;
pub(crate) mod retention;
pub mod runner;
pub(crate) mod scheduler;
pub(crate) mod shutdown;
pub mod source;
pub(crate) mod stats;
pub mod storage;
pub(crate) mod telemetry;
pub mod wechat;
