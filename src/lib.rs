//! wxpush pushes WeChat Mini Program subscribe messages on a schedule.
//!
//! # Layout
//!
//! One push travels config → schedule → run → render/validate → token → send → record
//! (`ARCHITECTURE.md` has the map and the invariants):
//!
//! - [`config`]: the TOML file plus `WXPUSH__SECTION__KEY` overrides, checked on load.
//! - [`domain`]: types valid once built: `OpenId`, `Message`, `Schedule`, `credit_after`.
//! - [`app`]: what every command shares: the store, its `Topology`, each app's deliverer.
//! - [`instance`]: this process among the instances sharing the database.
//! - [`scheduler`]: sleeps until each job's next slot and fires it; catches up a missed one.
//! - [`runner`]: one firing (`Firing`): job lease, resume, enqueue the slot, drain.
//! - [`source`]: a job's audience queried from the operator's own database.
//! - [`delivery`]: drains a run in stages, each delivery committed `sending` before its request.
//! - [`wechat`]: the HTTP client, the shared access_token cache, errcode classification.
//! - [`storage`]: the only SQL; a `Dialect` where SQLite and PostgreSQL differ.
//!
//! Consent comes the other way:
//!
//! - [`intake`]: login codes become openids; subscribe choices and WeChat's pushes, consent.
//! - [`api`]: sends on demand over HTTP (`/v1/sends`), behind a bearer token.
//!
//! Around them, the daemon and the command line:
//!
//! - [`daemon`]: the daemon's composition root (`App::run`).
//! - [`reload`]: SIGHUP or a settled change of the file re-reads the config.
//! - [`shutdown`]: SIGTERM and SIGINT as one cancellation token.
//! - [`clock`]: the wall clock slots are measured on (a manual one in tests).
//! - [`retention`]: prunes old history (`[retention]`).
//! - [`http`]: `/healthz`, `/readyz`, `/metrics` and the intake's routes.
//! - [`health`]: storage faults of scheduled firings, for `/readyz`.
//! - [`stats`]: every Prometheus metric name and label.
//! - [`telemetry`]: logs to stderr, human or JSON.
//! - [`cli`]: the command line, a contract for operators' scripts.
//! - [`commands`]: one module per command.
//! - [`import`]: the recipients CSV that `recipients import` reads.

pub(crate) mod api;
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
pub(crate) mod status;
pub mod storage;
pub(crate) mod telemetry;
pub mod wechat;
