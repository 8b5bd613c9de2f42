#![allow(unreachable_pub)] // one test binary: its modules share helpers freely
mod helpers;

mod apps;
mod blips;
mod china;
mod cli;
mod config;
mod consent;
mod conveniences;
mod database;
mod delivery;
mod gate;
mod init;
mod instances;
mod lifecycle;
mod parsing;
mod query;
mod recovery;
mod rerun;
mod scheduler;
mod secrets;
mod service;
mod test_send;
mod tls;
mod token;
