//! Secrets kept in the data directory: created on first start with mode 0600, never logged;
//! the directory itself is created with mode 0700.

use std::io::Write;
use std::path::Path;

/// Reads the 32-byte secret in `path` (64 hex characters), or creates it with fresh random
/// bytes, readable by the owner only. Creation is race-free: of two processes starting at once,
/// one creates the file and both read the same secret.
pub fn load_or_create_secret(path: &Path) -> std::io::Result<[u8; 32]> {
    if let Some(dir) = path.parent() {
        create_private_dir(dir)?;
    }
    match create_new_private(path) {
        Ok(mut file) => {
            let secret: [u8; 32] = rand::random();
            file.write_all(hex::encode(secret).as_bytes())?;
            file.sync_all()?;
            tracing::info!(path = %path.display(), "created a new secret");
            return Ok(secret);
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e),
    }
    // Another process may be writing it right now: retry briefly on a short read.
    for _ in 0..50 {
        let text = std::fs::read_to_string(path)?;
        let text = text.trim();
        if text.len() == 64 {
            let mut out = [0u8; 32];
            hex::decode_to_slice(text, &mut out).map_err(|_| {
                std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("{} does not hold 64 hex characters", path.display()),
                )
            })?;
            warn_if_readable_by_others(path);
            return Ok(out);
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    Err(std::io::Error::new(
        std::io::ErrorKind::InvalidData,
        format!("{} does not hold 64 hex characters", path.display()),
    ))
}

/// Creates `dir` (and its missing parents) readable by the owner only (0700). An existing
/// directory is left as it is, with a warning if other users can read it.
pub fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    if dir.is_dir() {
        warn_if_readable_by_others(dir);
        return Ok(());
    }
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)
}

#[cfg(unix)]
fn create_new_private(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
}

#[cfg(not(unix))]
fn create_new_private(path: &Path) -> std::io::Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
}

#[cfg(unix)]
fn warn_if_readable_by_others(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = std::fs::metadata(path)
        && meta.permissions().mode() & 0o077 != 0
    {
        tracing::warn!(path = %path.display(), "readable by other users: chmod go-rwx it");
    }
}

#[cfg(not(unix))]
fn warn_if_readable_by_others(_path: &Path) {}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(unix)]
    #[test]
    fn the_data_directory_is_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("a/b");
        create_private_dir(&data).unwrap();
        let mode = std::fs::metadata(&data).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
        create_private_dir(&data).unwrap();
    }

    #[test]
    fn creates_once_with_owner_only_mode_then_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/master.key");
        let a = load_or_create_secret(&path).unwrap();
        let b = load_or_create_secret(&path).unwrap();
        assert_eq!(a, b);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(
                std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
                0o600
            );
        }
        std::fs::write(&path, "not hex").unwrap();
        assert!(load_or_create_secret(&path).is_err());
    }
}
