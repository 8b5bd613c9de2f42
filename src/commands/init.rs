//! `wxpush init`: a commented starter config.

use std::path::Path;

use super::{Exit, Failure};

/// Writes the starter config to `path` (only over an existing file with `force`).
pub fn run(path: &Path, force: bool) -> Result<Exit, Failure> {
    let _ = (path, force);
    Err(Failure::usage("wxpush init: being built"))
}
