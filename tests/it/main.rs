mod helpers;

mod cli;
mod config;
mod delivery;
mod recovery;
mod scheduler;
mod service;
mod token;
