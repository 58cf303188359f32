//! Files that hold personal data are readable by the service's own user only, whatever the
//! umask of the shell or container that started it.

use std::path::Path;

/// Makes every file and folder this process creates from now on private to its user (umask
/// 077): sled's files, reports, kept exports.
pub fn private_files() {
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o077));
}

/// Creates `dir` (and its parents) if needed and makes it private to this user (0700), so
/// nothing inside is reachable by others even if a file in it was created more open.
pub fn private_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    }
    Ok(())
}

/// Prepares a folder another local user drops files into (the HIS's export folder): created
/// private (0700) when missing; an existing one keeps what its owner and group may do (an
/// operator may let the HIS's group write it, 2770) and loses every right of others.
pub fn drop_dir(dir: &Path) -> std::io::Result<()> {
    if !dir.exists() {
        return private_dir(dir);
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir)?.permissions().mode() & 0o7777;
        if mode & 0o007 != 0 {
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode & !0o007))?;
        }
    }
    Ok(())
}

/// Makes an existing file private to this user (0600): an export the HIS wrote more open is
/// kept as such.
pub fn private_file(file: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(file, std::fs::Permissions::from_mode(0o600))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn folders_and_files_are_made_private() {
        let dir = tempfile::tempdir().expect("temporary folder");
        let inner = dir.path().join("a/b");
        private_dir(&inner).expect("private dir");
        let mode = std::fs::metadata(&inner)
            .expect("meta")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o700);
        let file = inner.join("f");
        std::fs::write(&file, "x").expect("write");
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        private_file(&file).expect("private file");
        let mode = std::fs::metadata(&file).expect("meta").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn a_drop_folder_keeps_its_group_and_loses_others() {
        let dir = tempfile::tempdir().expect("temporary folder");
        let fresh = dir.path().join("fresh");
        drop_dir(&fresh).expect("created");
        let mode = |p: &Path| std::fs::metadata(p).expect("meta").permissions().mode() & 0o7777;
        assert_eq!(mode(&fresh), 0o700);
        let shared = dir.path().join("shared");
        std::fs::create_dir(&shared).expect("mkdir");
        std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o2777)).expect("chmod");
        drop_dir(&shared).expect("tightened");
        assert_eq!(mode(&shared), 0o2770);
    }
}
