//! Reading secrets (passwords, keys) from files, refusing files that any user may read.

use std::path::{Path, PathBuf};

/// Why a secret file was not used.
#[derive(Debug, thiserror::Error)]
pub enum SecretFileError {
    /// The file could not be read.
    #[error("cannot read {what} file {path}: {cause}")]
    Read {
        /// What the file holds (e.g. "SASL password").
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// I/O error.
        cause: std::io::Error,
    },
    /// Every user on the machine may read the file.
    #[error(
        "{what} file {path} is readable by every user (mode {mode:o}); make it private with `chmod 600 {path}` (or 0440 for a group such as a Kubernetes fsGroup)"
    )]
    WorldReadable {
        /// What the file holds.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
}

/// Checks that `path` grants nothing to other users (group access is allowed: a Kubernetes
/// Secret mounted with an fsGroup is group-readable by design).
pub fn check_private(path: &Path, what: &'static str) -> Result<(), SecretFileError> {
    let meta = std::fs::metadata(path).map_err(|source| SecretFileError::Read {
        what,
        path: path.to_path_buf(),
        cause: source,
    })?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o007 != 0 {
            return Err(SecretFileError::WorldReadable {
                what,
                path: path.to_path_buf(),
                mode,
            });
        }
    }
    #[cfg(not(unix))]
    let _ = meta;
    Ok(())
}

/// Reads a secret from a private file, without its trailing line break.
pub fn read_secret(path: &Path, what: &'static str) -> Result<String, SecretFileError> {
    check_private(path, what)?;
    std::fs::read_to_string(path)
        .map(|s| s.trim_end_matches(['\r', '\n']).to_owned())
        .map_err(|source| SecretFileError::Read {
            what,
            path: path.to_path_buf(),
            cause: source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn file_with_mode(dir: &Path, mode: u32) -> PathBuf {
        let path = dir.join(format!("secret-{mode:o}"));
        std::fs::write(&path, "s3cret\n").expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).expect("chmod");
        path
    }

    #[test]
    fn private_and_group_readable_files_are_read() {
        let dir = tempfile::tempdir().expect("temporary folder");
        for mode in [0o600, 0o400, 0o440, 0o640] {
            let path = file_with_mode(dir.path(), mode);
            assert_eq!(read_secret(&path, "test").expect("readable"), "s3cret");
        }
    }

    #[test]
    fn world_readable_files_are_refused_with_the_fix() {
        let dir = tempfile::tempdir().expect("temporary folder");
        for mode in [0o644, 0o604, 0o666, 0o601] {
            let path = file_with_mode(dir.path(), mode);
            let err = read_secret(&path, "SASL password").expect_err("refused");
            let text = err.to_string();
            assert!(text.contains("readable by every user"), "{text}");
            assert!(text.contains("chmod 600"), "{text}");
        }
    }

    #[test]
    fn a_missing_file_names_what_it_should_hold() {
        let err =
            read_secret(Path::new("/nonexistent/pw"), "registry password").expect_err("missing");
        assert!(
            err.to_string()
                .contains("registry password file /nonexistent/pw")
        );
    }
}
