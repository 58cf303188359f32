//! A file a running service re-reads when it changes (a token key set, a certificate
//! revocation list): the operator replaces the file and every request after the next check
//! sees the new content, without a restart. A file that changed but no longer parses is not
//! used: what was read before stays, and the error is logged.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime};

/// How often a service looks whether a watched file changed.
const CHECK_EVERY: Duration = Duration::from_secs(2);

/// How a watched file's bytes become what the service uses.
pub(crate) type Parse<T, E> = Box<dyn Fn(&[u8], &Path) -> Result<T, E> + Send + Sync>;

struct Loaded<T> {
    value: Arc<T>,
    modified: Option<SystemTime>,
    checked: Instant,
}

/// The parsed content of a file, re-read when its modification time changes.
pub(crate) struct WatchedFile<T, E> {
    path: PathBuf,
    what: &'static str,
    parse: Parse<T, E>,
    loaded: RwLock<Loaded<T>>,
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

impl<T, E: std::fmt::Display> WatchedFile<T, E> {
    /// Reads and parses `path` (`what` names it in logs); Err when it cannot be read
    /// (`unreadable`) or parsed.
    pub(crate) fn open(
        path: &Path,
        what: &'static str,
        parse: Parse<T, E>,
        unreadable: impl FnOnce(std::io::Error) -> E,
    ) -> Result<Self, E> {
        let bytes = std::fs::read(path).map_err(unreadable)?;
        Ok(Self {
            path: path.to_owned(),
            what,
            loaded: RwLock::new(Loaded {
                value: Arc::new(parse(&bytes, path)?),
                modified: modified(path),
                checked: Instant::now(),
            }),
            parse,
        })
    }

    /// The current content, re-read first if the file changed since the last check.
    pub(crate) fn current(&self) -> Arc<T> {
        self.reload_if_changed();
        Arc::clone(
            &self
                .loaded
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .value,
        )
    }

    fn reload_if_changed(&self) {
        {
            let loaded = self
                .loaded
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if loaded.checked.elapsed() < CHECK_EVERY {
                return;
            }
        }
        let mut loaded = self
            .loaded
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        loaded.checked = Instant::now();
        let now = modified(&self.path);
        if now == loaded.modified {
            return;
        }
        loaded.modified = now;
        match std::fs::read(&self.path) {
            Ok(bytes) => match (self.parse)(&bytes, &self.path) {
                Ok(value) => {
                    tracing::info!(path = %self.path.display(), what = self.what, "reloaded");
                    loaded.value = Arc::new(value);
                }
                Err(e) => tracing::error!(
                    path = %self.path.display(),
                    what = self.what,
                    error = %e,
                    "the file changed but cannot be used; keeping what was read before"
                ),
            },
            Err(e) => tracing::error!(
                path = %self.path.display(),
                what = self.what,
                error = %e,
                "the file changed but cannot be read; keeping what was read before"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn count_lines(bytes: &[u8], _: &Path) -> Result<usize, String> {
        let text = std::str::from_utf8(bytes).map_err(|e| e.to_string())?;
        if text.contains("bad") {
            return Err("bad".into());
        }
        Ok(text.lines().count())
    }

    fn age(path: &Path, secs: u64) {
        let t = SystemTime::now() - Duration::from_secs(secs);
        let f = std::fs::File::options()
            .write(true)
            .open(path)
            .expect("open");
        f.set_modified(t).expect("mtime");
    }

    #[test]
    fn a_changed_file_is_reloaded_and_a_broken_one_keeps_the_last_content() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("f");
        std::fs::write(&path, "a\n").expect("write");
        let file = WatchedFile::open(&path, "test file", Box::new(count_lines), |e| e.to_string())
            .expect("open");
        assert_eq!(*file.current(), 1);
        std::fs::write(&path, "a\nb\n").expect("write");
        age(&path, 10);
        file.loaded.write().expect("lock").checked -= CHECK_EVERY;
        assert_eq!(*file.current(), 2, "reloaded after the check interval");
        std::fs::write(&path, "bad\n").expect("write");
        age(&path, 5);
        file.loaded.write().expect("lock").checked -= CHECK_EVERY;
        assert_eq!(
            *file.current(),
            2,
            "a broken file keeps the content read before"
        );
        assert!(
            WatchedFile::open(
                &dir.path().join("missing"),
                "x",
                Box::new(count_lines),
                |e| e.to_string()
            )
            .is_err()
        );
    }
}
