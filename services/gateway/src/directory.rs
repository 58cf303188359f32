//! The facility directory the gateway checks every document against, read from the file the
//! operator supplies and read again when the file changes, without a restart. A changed file
//! that does not parse is not used: the gateway keeps the directory it has and says so.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use lienthong_core::directory::FacilityDirectory;
use tokio_util::sync::CancellationToken;

/// The directory file and what was last read from it.
pub struct DirectoryFile {
    path: PathBuf,
    current: RwLock<Arc<FacilityDirectory>>,
    modified: Mutex<Option<SystemTime>>,
}

fn read(path: &std::path::Path) -> Result<(FacilityDirectory, Option<SystemTime>), String> {
    let modified = std::fs::metadata(path).and_then(|m| m.modified()).ok();
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("facility directory {}: {e}", path.display()))?;
    let directory = FacilityDirectory::parse_csv(&text)
        .map_err(|e| format!("facility directory {}: {e}", path.display()))?;
    Ok((directory, modified))
}

impl DirectoryFile {
    /// Reads the file; Err (naming the file and the line) when it cannot be used.
    pub fn load(path: PathBuf) -> Result<Self, String> {
        let (directory, modified) = read(&path)?;
        tracing::info!(path = %path.display(), facilities = directory.len(), "facility directory loaded");
        metrics::gauge!(crate::metrics::DIRECTORY_ENTRIES.name).set(directory.len() as f64);
        Ok(Self {
            path,
            current: RwLock::new(Arc::new(directory)),
            modified: Mutex::new(modified),
        })
    }

    /// The directory in force.
    pub fn current(&self) -> Arc<FacilityDirectory> {
        Arc::clone(&self.current.read().unwrap_or_else(|p| p.into_inner()))
    }

    /// Reads the file again if it changed since the last read.
    pub fn reload_if_changed(&self) {
        let modified = std::fs::metadata(&self.path)
            .and_then(|m| m.modified())
            .ok();
        let mut last = self.modified.lock().unwrap_or_else(|p| p.into_inner());
        if modified == *last {
            return;
        }
        // Remembered either way: a broken file is reported once, not every few seconds.
        *last = modified;
        match read(&self.path) {
            Ok((directory, _)) => {
                tracing::info!(path = %self.path.display(), facilities = directory.len(), "facility directory reloaded");
                metrics::gauge!(crate::metrics::DIRECTORY_ENTRIES.name).set(directory.len() as f64);
                *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(directory);
            }
            Err(e) => {
                metrics::counter!(crate::metrics::DIRECTORY_RELOAD_FAILURES.name).increment(1);
                tracing::error!(error = %e, "the changed facility directory is not used; the previous one stays in force until the file is fixed");
            }
        }
    }

    /// Checks the file every `every` until `shutdown`.
    pub async fn watch(self: Arc<Self>, every: Duration, shutdown: CancellationToken) {
        loop {
            tokio::select! {
                () = tokio::time::sleep(every) => self.reload_if_changed(),
                () = shutdown.cancelled() => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEADER: &str = "code,name,province,level,valid_from,valid_to\n";

    #[test]
    fn a_changed_file_is_used_and_a_broken_one_is_not() {
        let dir = tempfile::tempdir().expect("temporary folder");
        let path = dir.path().join("facilities.csv");
        std::fs::write(&path, format!("{HEADER}79025,A,79,co_ban,2000-01-01,\n")).expect("write");
        let file = DirectoryFile::load(path.clone()).expect("loads");
        assert!(file.current().get("01001").is_none());

        let touch = |text: String| {
            std::fs::write(&path, text).expect("write");
            // Some file systems keep modification times to the second.
            let later = SystemTime::now() + Duration::from_secs(2);
            std::fs::File::options()
                .write(true)
                .open(&path)
                .and_then(|f| f.set_modified(later))
                .expect("mtime");
        };
        touch(format!(
            "{HEADER}79025,A,79,co_ban,2000-01-01,\n01001,B,01,co_ban,2000-01-01,\n"
        ));
        file.reload_if_changed();
        assert!(
            file.current().get("01001").is_some(),
            "the new facility is known"
        );

        touch(format!("{HEADER}not a row\n"));
        file.reload_if_changed();
        assert!(
            file.current().get("01001").is_some(),
            "the broken file is not used"
        );
        assert!(DirectoryFile::load(path).is_err());
    }
}
