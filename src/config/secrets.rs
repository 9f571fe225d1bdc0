//! Client secrets as read from the file, the environment or secret files: where each came
//! from, its label, its expiry, and the shape checks that catch a Secret ID pasted for the Value.

use secrecy::SecretString;
use time::{
    Date, OffsetDateTime, format_description::well_known::Rfc3339, macros::format_description,
};

use crate::entra;

use super::*;

/// Where a connection's client secret came from, for `entrance check`'s messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    /// None or several of the three keys are set.
    Unknown,
    Inline,
    Env(String),
    File(String),
    /// The setup page's *Client secret Value* field (issue 17).
    SetupForm,
}

/// The mock IdP's fake, public client secret that the embedded demo config writes inline
/// (`mock_idp::DEFAULT_CLIENT_SECRET`; `config::tests` holds the two equal). Never a real
/// credential.
pub(crate) const DEMO_CLIENT_SECRET: &str = "bP88Q~rcBcYjzzOhg1Hnn76Wm3jGgakZiZ.8vMgR";

impl std::fmt::Display for SecretSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SecretSource::Unknown => f.write_str("no single source"),
            SecretSource::Inline => f.write_str("client_secret in the config file"),
            SecretSource::Env(var) => write!(f, "the environment variable {var}"),
            SecretSource::File(path) => write!(f, "the file {path}"),
            SecretSource::SetupForm => f.write_str("the Client secret Value field"),
        }
    }
}

/// A client secret exactly as read (untrimmed), or why it could not be read.
#[derive(Debug)]
pub struct SecretAsRead {
    pub source: SecretSource,
    /// The key and variable or file it came from, for logs (never the value).
    pub label: String,
    pub value: Result<SecretString, ConfigError>,
}

/// Judges a secret as read; returns it trimmed.
pub(super) fn check_secret(
    secret: &str,
    is_entra: bool,
    id: &str,
    label: &str,
    key: &dyn Fn(&str) -> String,
) -> Result<String, ConfigError> {
    if secret != secret.trim() {
        tracing::warn!(
            connection = %id,
            secret = label,
            "the client secret starts or ends with whitespace; it was trimmed"
        );
    }
    let secret = secret.trim().to_owned();
    if secret.is_empty() {
        return Err(invalid(
            key("client_secret_env"),
            "the client secret is empty",
            "set it to the secret's Value from Certificates & secrets",
        ));
    }
    if entra::is_guid(&secret) {
        if is_entra {
            return Err(invalid(
                key("client_secret"),
                SECRET_ID_PROBLEM,
                SECRET_ID_FIX,
            ));
        }
        tracing::warn!(
            connection = %id,
            secret = label,
            "the client secret looks like a GUID; if this IdP shows a secret ID beside the secret, make sure the value was pasted"
        );
    }
    Ok(secret)
}

/// Shared with `entrance check`, which says the same about a Secret ID.
pub(crate) const SECRET_ID_PROBLEM: &str =
    "the client secret is a GUID: that is the Secret ID, not the secret's Value";
pub(crate) const SECRET_ID_FIX: &str = "in Certificates & secrets, copy the Value column (shown only right after creation; create a new secret if it is hidden)";

/// `2027-05-01` (00:00 UTC that day) or an RFC 3339 date-time such as Graph's
/// `endDateTime`, `2027-05-01T09:30:00Z`.
pub(super) fn parse_expiry(value: &str) -> Option<OffsetDateTime> {
    let value = value.trim();
    if let Ok(t) = OffsetDateTime::parse(value, &Rfc3339) {
        return Some(t);
    }
    Date::parse(value, format_description!("[year]-[month]-[day]"))
        .ok()
        .map(|d| d.midnight().assume_utc())
}

/// The secret comes from exactly one of: an environment variable (recommended), a file (e.g. a
/// mounted Kubernetes secret), or the config itself (allowed, warned: config files get shared).
/// During a rotation, `client_secrets_env` and/or `client_secret_files` list several instead,
/// newest first (variables before files). Each read comes with the key of its list item, if any.
pub(super) fn read_secrets(
    rc: &RawConnection,
    key: &dyn Fn(&str) -> String,
    env: &dyn Fn(&str) -> Option<String>,
) -> Vec<(SecretAsRead, Option<String>)> {
    let given = [
        rc.client_secret.is_some(),
        rc.client_secret_env.is_some(),
        rc.client_secret_file.is_some(),
    ]
    .iter()
    .filter(|g| **g)
    .count();
    let listed = rc.client_secrets_env.is_some() || rc.client_secret_files.is_some();
    let unknown = |err| {
        vec![(
            SecretAsRead {
                source: SecretSource::Unknown,
                label: "client_secret".to_owned(),
                value: Err(err),
            },
            None,
        )]
    };
    if given > 1 {
        return unknown(invalid(
            key("client_secret_env"),
            "more than one of client_secret, client_secret_env and client_secret_file is set",
            "keep one; client_secret_env is recommended",
        ));
    }
    if given == 1 && listed {
        return unknown(invalid(
            key("client_secrets_env"),
            "both a single secret (client_secret, client_secret_env or client_secret_file) and a list (client_secrets_env, client_secret_files) are set",
            "move the single secret into the list, newest first, e.g. client_secrets_env = [\"NEW\", \"OLD\"]",
        ));
    }
    if listed {
        let mut reads = Vec::new();
        for (j, var) in rc.client_secrets_env.iter().flatten().enumerate() {
            let item = key(&format!("client_secrets_env[{j}]"));
            let read = read_env_secret(var, &item, format!("client_secrets_env {var}"), env);
            reads.push((read, Some(item)));
        }
        for (j, path) in rc.client_secret_files.iter().flatten().enumerate() {
            let item = key(&format!("client_secret_files[{j}]"));
            let read = read_file_secret(path, &item, format!("client_secret_files {path}"));
            reads.push((read, Some(item)));
        }
        if reads.is_empty() {
            return unknown(invalid(
                key("client_secrets_env"),
                "the secret lists are empty",
                "list at least one variable (client_secrets_env) or file (client_secret_files), newest first",
            ));
        }
        return reads;
    }
    let read = if let Some(var) = &rc.client_secret_env {
        read_env_secret(
            var,
            &key("client_secret_env"),
            format!("client_secret_env {var}"),
            env,
        )
    } else if let Some(path) = &rc.client_secret_file {
        read_file_secret(
            path,
            &key("client_secret_file"),
            format!("client_secret_file {path}"),
        )
    } else if let Some(secret) = &rc.client_secret {
        // The warning is for real secrets in files that get shared. The demo's fake secret
        // is public already (written inline in config/entrance.toml), so `entrance demo` does
        // not warn about itself.
        if secret.0 != DEMO_CLIENT_SECRET {
            tracing::warn!(
                connection = %rc.id,
                "the client secret is written in the config file; prefer client_secret_env or client_secret_file"
            );
        }
        SecretAsRead {
            source: SecretSource::Inline,
            label: "client_secret".to_owned(),
            value: Ok(SecretString::from(secret.0.clone())),
        }
    } else {
        return unknown(invalid(
            key("client_secret_env"),
            "no client secret is configured",
            "set client_secret_env to the name of a variable holding the secret's Value (Certificates & secrets → Value), or use a certificate: client_certificate_file and client_private_key_file",
        ));
    };
    vec![(read, None)]
}

pub(super) fn read_env_secret(
    var: &str,
    key: &str,
    label: String,
    env: &dyn Fn(&str) -> Option<String>,
) -> SecretAsRead {
    let value = env(var).map(SecretString::from).ok_or_else(|| {
        invalid(
            key,
            format!("the environment variable {var} is not set"),
            format!("export {var}=<the secret's Value from Certificates & secrets>"),
        )
    });
    SecretAsRead {
        source: SecretSource::Env(var.to_owned()),
        label,
        value,
    }
}

pub(super) fn read_file_secret(path: &str, key: &str, label: String) -> SecretAsRead {
    let value = std::fs::read_to_string(path)
        .map(|mut s| {
            // A text file's final newline is a file convention, not part of the secret:
            // dropping it here keeps the whitespace warning for real padding only.
            if s.ends_with('\n') {
                s.pop();
                if s.ends_with('\r') {
                    s.pop();
                }
            }
            SecretString::from(s)
        })
        .map_err(|e| {
            invalid(
                key,
                format!("cannot read {path}: {e}"),
                "point it at a readable file holding only the secret's Value",
            )
        });
    SecretAsRead {
        source: SecretSource::File(path.to_owned()),
        label,
        value,
    }
}

/// `ENTRANCE_DATA_KEY`: the key that seals the client secrets of connections created through
/// setup links (issue 17) in the session store — 32 bytes, base64. Never printed.
#[derive(Clone)]
pub struct DataKey(pub(crate) [u8; 32]);

impl std::fmt::Debug for DataKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DataKey(<redacted>)")
    }
}

/// The variable [`DataKey`] is read from.
pub(crate) const DATA_KEY_ENV: &str = "ENTRANCE_DATA_KEY";

/// How to make a key, in every message about one.
pub(crate) const DATA_KEY_FIX: &str = "set ENTRANCE_DATA_KEY to 32 random bytes in base64, e.g. the output of `openssl rand -base64 32`, the same on every replica, and keep it as safe as the client secrets";

impl DataKey {
    /// From its base64 text (standard or URL-safe alphabet, padded or not).
    pub fn from_base64(text: &str) -> Result<DataKey, ConfigError> {
        use base64::Engine;
        let text = text.trim();
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(text)
            .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(text))
            .or_else(|_| base64::engine::general_purpose::URL_SAFE.decode(text))
            .or_else(|_| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(text))
            .map_err(|_| invalid(DATA_KEY_ENV, "is not base64", DATA_KEY_FIX))?;
        let key: [u8; 32] = bytes.try_into().map_err(|b: Vec<u8>| {
            invalid(
                DATA_KEY_ENV,
                format!("is {} bytes; AES-256 needs 32", b.len()),
                DATA_KEY_FIX,
            )
        })?;
        Ok(DataKey(key))
    }
}
