//! `[database] url`: which database, and where its file is.
//!
//! A relative SQLite path is read against the config file's folder, never the
//! working directory, so that `wxpush runs` from another folder (or from a host
//! shell beside a systemd unit) reads the daemon's database instead of quietly
//! creating an empty one. The same rule holds for `WXPUSH__DATABASE__URL`.

use std::path::Path;

/// Checks `url` and makes a relative SQLite path absolute against `config_dir`.
/// The error names what is wrong with the URL (the caller names the key).
pub(super) fn resolve(url: &str, config_dir: &Path) -> Result<String, String> {
    let url = url.trim();
    if url.is_empty() {
        return Err("is empty; use sqlite://PATH".into());
    }
    let Some(rest) = url.strip_prefix("sqlite:") else {
        let scheme = url.split_once(':').map_or(url, |(s, _)| s);
        return Err(format!(
            "{scheme:?} is not a supported database; use sqlite://PATH (a relative PATH is read from the config file's folder)"
        ));
    };
    let rest = rest.strip_prefix("//").unwrap_or(rest);
    let (file, params) = match rest.split_once('?') {
        Some((f, p)) => (f, Some(p)),
        None => (rest, None),
    };
    if file == ":memory:" || params.is_some_and(|p| p.split('&').any(|kv| kv == "mode=memory")) {
        return Ok(url.to_owned());
    }
    if file.is_empty() {
        return Err(format!("{url:?} names no file; use sqlite://PATH"));
    }
    let path = Path::new(file);
    let absolute = if path.is_absolute() {
        path.to_path_buf()
    } else {
        let dir = if config_dir.is_absolute() {
            config_dir.to_path_buf()
        } else {
            std::env::current_dir()
                .map_err(|e| format!("cannot read the working directory: {e}"))?
                .join(config_dir)
        };
        dir.join(path)
    };
    let mut resolved = format!("sqlite://{}", absolute.display());
    if let Some(p) = params {
        resolved.push('?');
        resolved.push_str(p);
    }
    Ok(resolved)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_relative_path_is_read_from_the_config_files_folder() {
        let dir = Path::new("/etc/wxpush");
        assert_eq!(
            resolve("sqlite://data/wxpush.db", dir).unwrap(),
            "sqlite:///etc/wxpush/data/wxpush.db"
        );
        assert_eq!(
            resolve("sqlite:wxpush.db?mode=rwc", dir).unwrap(),
            "sqlite:///etc/wxpush/wxpush.db?mode=rwc"
        );
        assert_eq!(
            resolve("sqlite:///var/lib/wxpush/wxpush.db", dir).unwrap(),
            "sqlite:///var/lib/wxpush/wxpush.db"
        );
        assert_eq!(resolve("sqlite::memory:", dir).unwrap(), "sqlite::memory:");
    }

    #[test]
    fn a_relative_config_folder_is_made_absolute() {
        let url = resolve("sqlite://w.db", Path::new("config")).unwrap();
        let cwd = std::env::current_dir().unwrap();
        assert_eq!(
            url,
            format!("sqlite://{}", cwd.join("config/w.db").display())
        );
    }

    #[test]
    fn other_schemes_and_empty_urls_are_refused() {
        for bad in [
            "postgres://x/y",
            "mysql://h/db",
            "data/wxpush.db",
            "",
            "sqlite://",
        ] {
            assert!(resolve(bad, Path::new("/etc")).is_err(), "{bad:?}");
        }
        let e = resolve("postgres://x/y", Path::new("/etc")).unwrap_err();
        assert!(e.contains("\"postgres\"") && e.contains("sqlite://"), "{e}");
    }
}
