//! `[database] url`: which database, and where its file is.
//!
//! A `postgres://` (or `postgresql://`) URL is taken as written; it may carry a
//! password, so no error here ever repeats more of it than its scheme.
//!
//! A relative SQLite path is read against the config file's folder, never the
//! working directory, so that `wxpush runs` from another folder (or from a host
//! shell beside a systemd unit) reads the daemon's database instead of quietly
//! creating an empty one. The same rule holds for `WXPUSH__DATABASE__URL`.

use std::path::Path;

use secrecy::{ExposeSecret, SecretString};

/// Checks `url` and makes a relative SQLite path absolute against `config_dir`.
/// The error names what is wrong with the URL (the caller names the key).
pub(super) fn resolve(url: &str, config_dir: &Path) -> Result<String, String> {
    let url = url.trim();
    if url.is_empty() {
        return Err("is empty; use sqlite://PATH".into());
    }
    if is_shared(url) {
        return check_postgres(url);
    }
    let Some(rest) = url.strip_prefix("sqlite:") else {
        let scheme = url.split_once(':').map_or("(none)", |(s, _)| s);
        return Err(format!(
            "{scheme:?} is not a supported database; use sqlite://PATH (a relative PATH is read from the config file's folder) or postgres://USER@HOST:PORT/DATABASE"
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

/// Whether `url` names a PostgreSQL database, which several instances share.
pub(super) fn is_shared(url: &str) -> bool {
    url.starts_with("postgres://") || url.starts_with("postgresql://")
}

/// A PostgreSQL URL needs a host and a database name (libpq's defaults for
/// either would be a silent guess); the password may come from elsewhere.
fn check_postgres(url: &str) -> Result<String, String> {
    let rest = url.split_once("://").map_or("", |(_, r)| r);
    let rest = rest.split_once('?').map_or(rest, |(r, _)| r);
    let (authority, db) = rest.split_once('/').unwrap_or((rest, ""));
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    if host.is_empty() || db.is_empty() {
        return Err(
            "a PostgreSQL URL needs a host and a database: postgres://USER@HOST:PORT/DATABASE"
                .into(),
        );
    }
    Ok(url.to_owned())
}

/// `url` with the password from `[database] password_file`; a URL that carries
/// a password of its own is refused, since one of the two would be ignored.
pub(super) fn with_password(url: &str, password: Option<SecretString>) -> Result<String, String> {
    let Some(password) = password else {
        return Ok(url.to_owned());
    };
    if !is_shared(url) {
        return Err("database.password_file: is for a PostgreSQL database.url".into());
    }
    let mut parsed =
        url::Url::parse(url).map_err(|_| "database.url: is not a valid URL".to_owned())?;
    if parsed.password().is_some() {
        return Err("database.password_file: database.url carries a password too; keep one".into());
    }
    // `set_password` percent-encodes what a URL cannot carry as is.
    parsed
        .set_password(Some(password.expose_secret()))
        .map_err(|()| {
            "database.url: needs a user name to go with database.password_file".to_owned()
        })?;
    if parsed.username().is_empty() {
        return Err("database.url: needs a user name to go with database.password_file".into());
    }
    Ok(parsed.into())
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
            "postgres://user:pw@host",
            "postgres:///db",
            "mysql://h/db",
            "data/wxpush.db",
            "",
            "sqlite://",
        ] {
            assert!(resolve(bad, Path::new("/etc")).is_err(), "{bad:?}");
        }
        let e = resolve("mysql://root:hunter2@h/db", Path::new("/etc")).unwrap_err();
        assert!(e.contains("\"mysql\"") && e.contains("sqlite://"), "{e}");
        let e = resolve("postgres://u:hunter2@/db", Path::new("/etc")).unwrap_err();
        assert!(!e.contains("hunter2"), "no password in errors: {e}");
    }

    #[test]
    fn postgres_urls_are_taken_as_written() {
        for good in [
            "postgres://wxpush@db:5432/wxpush",
            "postgresql://wxpush:secret@10.0.0.5/wxpush?sslmode=require",
        ] {
            assert_eq!(resolve(good, Path::new("/etc")).unwrap(), good);
        }
    }
}

#[cfg(test)]
mod password_tests {
    use super::*;

    #[test]
    fn a_password_file_goes_into_the_url_encoded() {
        let url = with_password(
            "postgres://wx@db:5432/wxpush?sslmode=require",
            Some("p@ss/w:rd".into()),
        )
        .unwrap();
        assert_eq!(
            url,
            "postgres://wx:p%40ss%2Fw%3Ard@db:5432/wxpush?sslmode=require"
        );
    }

    #[test]
    fn a_password_in_both_places_or_without_a_user_is_refused_without_showing_it() {
        for url in [
            "postgres://wx:hunter2@db/wxpush",
            "postgres://db/wxpush",
            "sqlite:///x.db",
        ] {
            let e = with_password(url, Some("s3cret".into())).unwrap_err();
            assert!(!e.contains("hunter2") && !e.contains("s3cret"), "{e}");
        }
        assert_eq!(
            with_password("postgres://db/w", None).unwrap(),
            "postgres://db/w"
        );
    }
}
