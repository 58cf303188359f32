//! A small disk for tests that fill one: a tmpfs mounted for the test, so they need root.

use std::path::Path;
use std::process::Command;

/// A tmpfs of a few megabytes, unmounted when dropped.
pub struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    /// Mounts one of `size` (for example "3m") on a fresh temporary folder.
    pub fn mount(size: &str) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size},mode=0700")])
            .arg("lienthong-small-disk")
            .arg(dir.path())
            .output()?;
        anyhow::ensure!(
            out.status.success(),
            "this test fills a disk, a tmpfs it mounts, which needs root: mount said {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
        Ok(Self { dir })
    }

    /// Where it is mounted.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Makes it `size` large, keeping what it holds.
    pub fn grow(&self, size: &str) -> anyhow::Result<()> {
        let status = Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(self.path())
            .status()?;
        anyhow::ensure!(status.success(), "remount of the small disk failed");
        Ok(())
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(self.path()).status();
    }
}

/// Bytes free on the file system holding `path`.
pub fn free_bytes(path: &Path) -> u64 {
    rustix::fs::statvfs(path)
        .map(|s| s.f_bavail * s.f_frsize)
        .unwrap_or(0)
}
