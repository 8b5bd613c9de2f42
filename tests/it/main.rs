mod helpers;

mod china;
mod cli;
mod config;
mod consent;
mod database;
mod delivery;
mod gate;
mod init;
mod instances;
mod parsing;
mod recovery;
mod rerun;
mod scheduler;
mod secrets;
mod service;
mod token;
