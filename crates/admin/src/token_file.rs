//! The admin token: from `[admin] token`, or `<data_dir>/admin.token`, created on first start
//! (32 random bytes as hex, mode 0600; an existing file is kept).

use std::io::Write;
use std::path::{Path, PathBuf};

use turnpike_lightning::SecretSource;

/// Why the admin token could not be had.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// `[admin] token` does not resolve.
    #[error("admin.token: {0}")]
    Source(#[from] turnpike_lightning::SecretError),
    /// The token file could not be read or created.
    #[error("cannot read or create {path}: {source}")]
    File {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The token is shorter than 16 characters.
    #[error("the admin token in {0} is shorter than 16 characters")]
    TooShort(String),
}

/// The admin token in force, and the file it is in when it is the default one.
pub fn load(
    source: Option<&SecretSource>,
    data_dir: &Path,
) -> Result<(String, Option<PathBuf>), TokenError> {
    let (token, path, from) = match source {
        Some(source) => (
            source.resolve()?.expose().to_owned(),
            None,
            "admin.token".to_owned(),
        ),
        None => {
            let path = data_dir.join("admin.token");
            let token = load_or_create(&path).map_err(|source| TokenError::File {
                path: path.clone(),
                source,
            })?;
            let from = path.display().to_string();
            (token, Some(path), from)
        }
    };
    if token.len() < 16 {
        return Err(TokenError::TooShort(from));
    }
    Ok((token, path))
}

fn load_or_create(path: &Path) -> std::io::Result<String> {
    use std::os::unix::fs::OpenOptionsExt;
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(mut file) => {
            let token = hex::encode(rand::random::<[u8; 32]>());
            file.write_all(format!("{token}\n").as_bytes())?;
            file.sync_all()?;
            Ok(token)
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            Ok(std::fs::read_to_string(path)?.trim().to_owned())
        }
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn created_once_owner_only_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let (first, path) = load(None, dir.path()).unwrap();
        let path = path.unwrap();
        assert_eq!(first.len(), 64);
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(load(None, dir.path()).unwrap().0, first);
        let inline = SecretSource::Inline("short".into());
        assert!(matches!(
            load(Some(&inline), dir.path()),
            Err(TokenError::TooShort(_))
        ));
    }
}
