//! `wxpush init`: a commented starter config, the shipped example with every key.

use std::io::Write;
use std::path::Path;

use super::{Exit, Failure};

/// The starter config: `config/wxpush.example.toml`, every key with its default.
pub const STARTER: &str = include_str!("../../config/wxpush.example.toml");

/// Writes the starter config to `path` (over an existing file only with `force`).
pub fn run(path: &Path, force: bool) -> Result<Exit, Failure> {
    let shown = path.display();
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty())
        && !dir.is_dir()
    {
        return Err(Failure::usage(format!(
            "{shown}: the folder {} does not exist; create it first",
            dir.display()
        )));
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true);
    if force {
        options.create(true).truncate(true);
    } else {
        // Never over an operator's file: create_new fails if one is there.
        options.create_new(true);
    }
    let mut file = options.open(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::AlreadyExists => Failure::usage(format!(
            "{shown}: already exists; wxpush init never overwrites a config (use --force to replace it)"
        )),
        _ => Failure::usage(format!("{shown}: cannot write: {e}")),
    })?;
    file.write_all(STARTER.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|e| Failure::cannot_proceed(format!("{shown}: cannot write: {e}")))?;
    println!(
        "wrote {shown}. Next: set [wechat] appid and the AppSecret (secret_file or \
         WXPUSH__WECHAT__SECRET), describe your [[jobs]], then run `wxpush --config {shown} check`"
    );
    Ok(Exit::Ok)
}
