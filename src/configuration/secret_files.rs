//! The `…_FILE` form of every secret setting: `APP_AUTH__JWT_SECRET_FILE=/run/secrets/jwt_secret`
//! reads the secret from a file (compose or Kubernetes secrets), so the secret is in neither an
//! image nor the environment that `docker inspect` shows.

use anyhow::{bail, Context};

/// The settings whose values are secrets, by environment name (a URL carries its password).
pub const SECRET_SETTINGS: &[&str] = &[
    "APP_AUTH__JWT_SECRET",
    "APP_AUTH__REHEARSAL_SECRET",
    "APP_DATABASE__URL",
    "APP_REDIS__URL",
    "APP_KAFKA__PROPERTIES__SASL_PASSWORD",
    "APP_KAFKA__PROPERTIES__SASL_JAAS_CONFIG",
    "APP_KAFKA__PROPERTIES__SASL_OAUTHBEARER_CLIENT_SECRET",
    "APP_KAFKA__PROPERTIES__SSL_KEY_PASSWORD",
    "APP_KAFKA__PROPERTIES__SSL_KEY_PEM",
    "APP_KAFKA__PROPERTIES__SSL_KEYSTORE_PASSWORD",
];

/// The `APP_…` variables, with each secret's `…_FILE` form replaced by the file's content (less
/// one trailing line break, which editors and `echo` add). Both forms at once are refused:
/// which one wins would be a guess.
pub fn resolve(
    vars: impl IntoIterator<Item = (String, String)>,
) -> anyhow::Result<config::Map<String, String>> {
    let mut vars: config::Map<String, String> = vars
        .into_iter()
        .filter(|(name, _)| name.starts_with("APP_"))
        .collect();
    for &name in SECRET_SETTINGS {
        let file_name = format!("{name}_FILE");
        let Some(path) = vars.remove(&file_name) else {
            continue;
        };
        if vars.contains_key(name) {
            bail!("{name} and {file_name} are both set: set one of them");
        }
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("{file_name}: reading the secret from {path}"))?;
        let value = text
            .strip_suffix('\n')
            .map_or(text.as_str(), |t| t.strip_suffix('\r').unwrap_or(t));
        if value.is_empty() {
            bail!("{file_name}: {path} is empty");
        }
        vars.insert(name.to_owned(), value.to_owned());
    }
    Ok(vars)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn a_secret_is_read_from_its_file_form_less_one_line_break() {
        let dir = std::env::temp_dir().join(format!("fcfs-secret-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("jwt_secret");
        std::fs::write(&file, "s3cret with spaces \n").unwrap();
        let path = file.to_str().unwrap();

        let resolved = resolve(vars(&[
            ("APP_AUTH__JWT_SECRET_FILE", path),
            ("APP_HTTP__ADDR", "127.0.0.1:1"),
            ("HOME", "/root"),
        ]))
        .unwrap();

        assert_eq!(resolved["APP_AUTH__JWT_SECRET"], "s3cret with spaces ");
        assert_eq!(resolved["APP_HTTP__ADDR"], "127.0.0.1:1");
        assert!(!resolved.contains_key("APP_AUTH__JWT_SECRET_FILE"));
        assert!(!resolved.contains_key("HOME"));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn both_forms_a_missing_file_or_an_empty_one_are_refused_naming_the_variable() {
        let dir = std::env::temp_dir().join(format!("fcfs-secret-empty-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let empty = dir.join("empty");
        std::fs::write(&empty, "\n").unwrap();
        let empty = empty.to_str().unwrap();

        let both = resolve(vars(&[
            ("APP_REDIS__URL", "redis://a"),
            ("APP_REDIS__URL_FILE", empty),
        ]));
        let missing = resolve(vars(&[("APP_DATABASE__URL_FILE", "/nonexistent/url")]));
        let blank = resolve(vars(&[("APP_AUTH__JWT_SECRET_FILE", empty)]));

        assert!(format!("{:#}", both.unwrap_err()).contains("both set"));
        assert!(format!("{:#}", missing.unwrap_err()).contains("APP_DATABASE__URL_FILE"));
        assert!(format!("{:#}", blank.unwrap_err()).contains("is empty"));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_file_setting_that_is_not_a_secret_form_is_left_as_it_is() {
        let resolved = resolve(vars(&[("APP_FAIRNESS__SIGNING_KEY_FILE", "/keys/log")])).unwrap();
        assert_eq!(resolved["APP_FAIRNESS__SIGNING_KEY_FILE"], "/keys/log");
    }
}
