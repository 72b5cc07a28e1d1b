//! Secrets in configuration (API keys, macaroons, runes, NWC URIs): given inline, from an
//! environment variable or from a file; never printed.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Why a secret could not be resolved.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    /// The environment variable is not set (or not Unicode).
    #[error("environment variable {0} is not set")]
    MissingEnv(String),
    /// The file could not be read.
    #[error("cannot read secret file {path}: {reason}")]
    File {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
    /// The secret is empty.
    #[error("the secret is empty")]
    Empty,
}

/// Where a secret comes from, as written in TOML:
/// `key = "literal"`, `key = { env = "VAR" }` or `key = { file = "/path" }`.
///
/// `Serialize` writes the same forms, an inline secret included (for storing a configuration):
/// redact it before showing a serialized source to anyone.
#[derive(Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(untagged)]
pub enum SecretSource {
    /// The secret itself.
    Inline(String),
    /// The name of an environment variable holding it.
    Env {
        /// Variable name.
        env: String,
    },
    /// A file holding it (surrounding whitespace trimmed).
    File {
        /// File path.
        file: String,
    },
}

impl fmt::Debug for SecretSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SecretSource::Inline(_) => f.write_str("SecretSource::Inline(<redacted>)"),
            SecretSource::Env { env } => write!(f, "SecretSource::Env({env})"),
            SecretSource::File { file } => write!(f, "SecretSource::File({file})"),
        }
    }
}

impl SecretSource {
    /// Reads the secret now.
    pub fn resolve(&self) -> Result<Secret, SecretError> {
        let value = match self {
            SecretSource::Inline(v) => v.clone(),
            SecretSource::Env { env } => {
                std::env::var(env).map_err(|_| SecretError::MissingEnv(env.clone()))?
            }
            SecretSource::File { file } => std::fs::read_to_string(file)
                .map_err(|e| SecretError::File {
                    path: file.clone(),
                    reason: e.to_string(),
                })?
                .trim()
                .to_owned(),
        };
        if value.is_empty() {
            return Err(SecretError::Empty);
        }
        Ok(Secret(value))
    }
}

/// A resolved secret. `Debug` and `Display` print `<redacted>`; read it with [`Secret::expose`].
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a value.
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// The secret value, for the one place that must send it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize)]
    struct C {
        key: SecretSource,
    }

    #[test]
    fn sources_resolve_and_never_print() {
        let c: C = toml_like(r#"{"key": "s3cret"}"#);
        let s = c.key.resolve().unwrap();
        assert_eq!(s.expose(), "s3cret");
        assert!(!format!("{s:?} {s} {:?}", c.key).contains("s3cret"));

        let dir = std::env::temp_dir().join(format!("turnpike-secret-{}", std::process::id()));
        std::fs::write(&dir, " from-file \n").unwrap();
        let c: C = toml_like(&format!(r#"{{"key": {{"file": "{}"}}}}"#, dir.display()));
        assert_eq!(c.key.resolve().unwrap().expose(), "from-file");
        std::fs::remove_file(&dir).unwrap();

        let c: C = toml_like(r#"{"key": {"env": "TURNPIKE_SURELY_UNSET_VAR"}}"#);
        assert_eq!(
            c.key.resolve(),
            Err(SecretError::MissingEnv("TURNPIKE_SURELY_UNSET_VAR".into()))
        );
        let c: C = toml_like(r#"{"key": ""}"#);
        assert_eq!(c.key.resolve(), Err(SecretError::Empty));
    }

    fn toml_like(json: &str) -> C {
        serde_json::from_str(json).unwrap()
    }
}
