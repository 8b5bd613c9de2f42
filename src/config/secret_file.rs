//! Secrets from files: beside every secret key `K` a key `K_file` names a file
//! holding it (a Docker secret under /run/secrets, a systemd credential under
//! `$CREDENTIALS_DIRECTORY`), so that the secret never sits in the environment,
//! where `docker inspect` and `/proc/PID/environ` show it.

use std::path::Path;

use secrecy::SecretString;

/// The secret `key` from its value or from the file its `key_file` names (a
/// relative path is read from `config_dir`); setting both is an error, since
/// one of them would be silently ignored. Errors never quote the secret.
pub(super) fn pick(
    key: &str,
    value: Option<SecretString>,
    file: Option<&str>,
    config_dir: &Path,
) -> Result<Option<SecretString>, String> {
    let value = value.filter(|v| !secrecy::ExposeSecret::expose_secret(v).is_empty());
    let file = file.map(str::trim).filter(|f| !f.is_empty());
    match (value, file) {
        (Some(_), Some(_)) => Err(format!(
            "{key}: both {key} and {key}_file are set; keep one"
        )),
        (value, None) => Ok(value),
        (None, Some(file)) => read(config_dir.join(file).as_path())
            .map(Some)
            .map_err(|e| format!("{key}_file: {e}")),
    }
}

/// The secret in `path`, without the line break an editor or `echo` leaves.
fn read(path: &Path) -> Result<SecretString, String> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        let why = match e.kind() {
            std::io::ErrorKind::InvalidData => "it is not UTF-8 text".to_owned(),
            _ => e.to_string(),
        };
        format!("cannot read {}: {why}", path.display())
    })?;
    let secret = text.trim_end_matches(['\n', '\r']);
    if secret.trim().is_empty() {
        return Err(format!("{} is empty", path.display()));
    }
    if secret.contains('\n') {
        return Err(format!(
            "{} holds more than one line; it must hold only the secret",
            path.display()
        ));
    }
    Ok(SecretString::from(secret.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;

    fn secret(dir: &Path, name: &str, content: &str) -> String {
        std::fs::write(dir.join(name), content).unwrap();
        name.to_owned()
    }

    #[test]
    fn a_file_gives_the_secret_without_its_line_break() {
        let dir = tempfile::tempdir().unwrap();
        let f = secret(dir.path(), "s", "hunter2hunter2\r\n");
        let got = pick("wechat.secret", None, Some(&f), dir.path()).unwrap();
        assert_eq!(got.unwrap().expose_secret(), "hunter2hunter2");
    }

    #[test]
    fn a_value_and_a_file_together_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let f = secret(dir.path(), "s", "x");
        let e = pick(
            "wechat.secret",
            Some("hunter2".into()),
            Some(&f),
            dir.path(),
        )
        .unwrap_err();
        assert!(
            e.contains("wechat.secret_file") && !e.contains("hunter2"),
            "{e}"
        );
    }

    #[test]
    fn a_missing_empty_or_many_line_file_is_named_and_its_content_never_shown() {
        let dir = tempfile::tempdir().unwrap();
        let e = pick("intake.callback_token", None, Some("nope"), dir.path()).unwrap_err();
        assert!(
            e.starts_with("intake.callback_token_file: cannot read "),
            "{e}"
        );
        assert!(e.contains("nope"), "{e}");
        let f = secret(dir.path(), "empty", "\n");
        let e = pick("k", None, Some(&f), dir.path()).unwrap_err();
        assert!(e.ends_with("is empty"), "{e}");
        let f = secret(dir.path(), "two", "hunter2\nhunter3\n");
        let e = pick("k", None, Some(&f), dir.path()).unwrap_err();
        assert!(
            e.contains("more than one line") && !e.contains("hunter"),
            "{e}"
        );
    }

    #[test]
    fn neither_is_none_and_a_value_is_kept() {
        let dir = Path::new("/nonexistent");
        assert!(pick("k", None, None, dir).unwrap().is_none());
        assert!(
            pick("k", Some("".into()), Some(" "), dir)
                .unwrap()
                .is_none()
        );
        let v = pick("k", Some("v".into()), None, dir).unwrap().unwrap();
        assert_eq!(v.expose_secret(), "v");
    }
}
