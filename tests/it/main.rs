mod helpers;

mod cli;
mod config;
mod consent;
mod delivery;
mod recovery;
mod scheduler;
mod service;
mod token;
