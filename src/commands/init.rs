//! `wxpush init`: a commented starter config, the shipped example with every key.

use std::io::Write;
use std::path::Path;

use super::{Console, Exit, Failure, outln};

/// The starter config: `config/wxpush.example.toml`, every key with its default.
pub(super) const STARTER: &str = include_str!("../../config/wxpush.example.toml");

/// The starter's database: the packaged host's state folder, which the
/// systemd unit and the image provide.
const STATE_URL: &str = "url = \"sqlite:///var/lib/wxpush/wxpush.db\"";

/// The starter for `path`: as shipped under `/etc` (a packaged host, whose
/// service has `/var/lib/wxpush`), else with the database beside the file
/// (`data/wxpush.db`), which anyone who can write the file can create: a
/// trial as oneself works without root.
pub(super) fn starter_for(path: &Path) -> String {
    // As typed from /etc/wxpush, `wxpush.toml` is under /etc too.
    let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    if absolute.starts_with("/etc") {
        STARTER.to_owned()
    } else {
        STARTER.replacen(STATE_URL, "url = \"sqlite://data/wxpush.db\"", 1)
    }
}

/// Writes the starter config to `path` (over an existing file only with
/// `force`), creating its folder if missing.
pub(super) fn run(path: &Path, force: bool, out: &mut Console) -> Result<Exit, Failure> {
    let shown = path.display();
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty())
        && !dir.is_dir()
    {
        std::fs::create_dir_all(dir).map_err(|e| {
            Failure::usage(format!(
                "{shown}: cannot create the folder {}: {e}",
                dir.display()
            ))
        })?;
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
    let starter = starter_for(path);
    file.write_all(starter.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|e| Failure::cannot_proceed(format!("{shown}: cannot write: {e}")))?;
    let database = if starter.contains(STATE_URL) {
        "/var/lib/wxpush/wxpush.db".to_owned()
    } else {
        let dir = path.parent().unwrap_or(Path::new(""));
        dir.join("data/wxpush.db").display().to_string()
    };
    outln!(
        out,
        "wrote {shown} (its database: {database}). Next: set [wechat] appid and the AppSecret \
         (secret_file or WXPUSH__WECHAT__SECRET), describe your [[jobs]], then run \
         `wxpush --config {shown} check`"
    );
    Ok(Exit::Ok)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_starter_keeps_the_state_folder_under_etc_and_a_folder_of_its_own_elsewhere() {
        assert!(starter_for(Path::new("/etc/wxpush/wxpush.toml")).contains(STATE_URL));
        let trial = starter_for(Path::new("config/wxpush.toml"));
        assert!(!trial.contains(STATE_URL));
        assert!(trial.contains("url = \"sqlite://data/wxpush.db\""));
    }
}
