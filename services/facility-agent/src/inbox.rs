//! The watched inbox: the HIS writes XML exports into a folder; a file is taken once its size
//! and modification time stopped changing between two looks (so half-written files wait),
//! converted, its events flushed to the outbox, and only then moved to `done/` (or to
//! `rejected/` when nothing in it could be used), with `<file>.report.txt` beside it when
//! something was wrong or a document was corrected or unchanged. A document exported again is
//! sent as its next version when its content changed and not at all when it did not
//! (`revisions`); so a crash before the move reprocesses the file without sending anything
//! twice.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use lienthong_core::validation::ValidationContext;

use crate::conversions::Conversions;
use crate::outbox::{Outbox, OutboxError};
use crate::revisions::Revision;
use crate::xml::{Conversion, Limits, TreeError, convert};
use tracing::Instrument as _;

/// The inbox watcher: the files seen on the previous look, path → (size, modified).
#[derive(Debug)]
pub struct Inbox {
    seen: HashMap<PathBuf, (u64, Option<SystemTime>)>,
    conversions: Conversions,
}

/// What reading and converting one file gave.
enum Read {
    TooLarge,
    Unreadable(std::io::Error),
    Converted(Result<Conversion, TreeError>),
}

/// What one file gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Taken {
    /// The file.
    pub file: PathBuf,
    /// Events flushed to the outbox.
    pub events: usize,
    /// Problems reported.
    pub problems: usize,
}

/// Moves a taken file into `folder` (done/ or rejected/) beside it, with its report. The
/// folder and what it keeps are private to the agent's user: exports hold personal data,
/// whatever permissions the HIS wrote them with.
fn move_to(file: &Path, folder: &str, report: Option<String>) -> std::io::Result<()> {
    let parent = file.parent().unwrap_or(Path::new("."));
    let target_dir = parent.join(folder);
    lienthong_runtime::private_dir(&target_dir)?;
    let name = file.file_name().unwrap_or_default();
    if let Some(text) = report {
        let mut report_name = name.to_os_string();
        report_name.push(".report.txt");
        let report_path = target_dir.join(report_name);
        std::fs::write(&report_path, text)?;
        lienthong_runtime::private_file(&report_path)?;
    }
    let kept = target_dir.join(name);
    std::fs::rename(file, &kept)?;
    // A link was moved, not followed: its mode is not the target's to change.
    if !std::fs::symlink_metadata(&kept)?.file_type().is_symlink() {
        lienthong_runtime::private_file(&kept)?;
    }
    Ok(())
}

/// Moves a file the agent will not read to `rejected/` with the reason in its report.
fn refuse(file: &Path, why: &str) {
    let name = file.display().to_string();
    tracing::warn!(file = %name, reason = why, "inbox file refused");
    metrics::counter!(crate::metrics::FILES.name, "result" => "rejected").increment(1);
    if let Err(e) = move_to(file, "rejected", Some(format!("{name}: refused: {why}\n"))) {
        tracing::error!(file = %name, error = %e, "cannot move a refused file out of the inbox");
    }
}

/// The file's bytes, read only up to `limit` (its size is checked first, and the read is
/// bounded in case it grows meanwhile); None when it is larger. The listing saw a regular file,
/// but whoever writes the inbox may have put a link or a pipe in its place since: the open
/// follows no link and waits for no writer, and what it opened must be a regular file.
fn read_bounded(file: &Path, limit: usize) -> std::io::Result<Option<Vec<u8>>> {
    use std::io::Read as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let flags = rustix::fs::OFlags::NOFOLLOW | rustix::fs::OFlags::NONBLOCK;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(flags.bits() as i32)
        .open(file)?;
    let meta = f.metadata()?;
    if !meta.is_file() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "it is no longer a regular file",
        ));
    }
    if meta.len() > limit as u64 {
        return Ok(None);
    }
    let mut bytes = Vec::new();
    f.take(limit as u64 + 1).read_to_end(&mut bytes)?;
    Ok((bytes.len() <= limit).then_some(bytes))
}

impl Inbox {
    /// A watcher that converts files in turn with the other intakes.
    pub fn new(conversions: Conversions) -> Self {
        Self {
            seen: HashMap::new(),
            conversions,
        }
    }

    /// Looks at the folder once and takes every complete file.
    pub async fn poll(&mut self, dir: &Path, outbox: &Outbox) -> Result<Vec<Taken>, OutboxError> {
        let mut now = HashMap::new();
        if let Ok(listing) = std::fs::read_dir(dir) {
            for entry in listing.flatten() {
                let path = entry.path();
                let is_xml = path
                    .extension()
                    .is_some_and(|e| e.eq_ignore_ascii_case("xml"));
                let hidden = path
                    .file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with('.'));
                if !is_xml || hidden {
                    continue;
                }
                // The entry itself, not what a link points to: the agent reads only regular
                // files the HIS wrote into the inbox, never a file elsewhere a link names.
                let Ok(meta) = entry.path().symlink_metadata() else {
                    continue;
                };
                if !meta.file_type().is_file() {
                    if !meta.is_dir() {
                        refuse(
                            &path,
                            "it is not a regular file (a symbolic link, a device or a pipe); write the export itself into the inbox",
                        );
                    }
                    continue;
                }
                now.insert(path, (meta.len(), meta.modified().ok()));
            }
        }
        let mut ready: Vec<PathBuf> = now
            .iter()
            .filter(|(p, state)| self.seen.get(*p) == Some(*state))
            .map(|(p, _)| p.clone())
            .collect();
        ready.sort();
        self.seen = now;
        let mut taken = Vec::new();
        for file in ready {
            match self.take(&file, outbox).await {
                Ok(t) => {
                    self.seen.remove(&file);
                    taken.push(t);
                }
                // Full: the file waits in the inbox until the gateway drains the outbox.
                Err(e @ OutboxError::Full { .. }) => {
                    tracing::warn!(file = %file.display(), error = %e, "intake paused");
                    metrics::counter!(crate::metrics::INTAKE_PAUSED.name).increment(1);
                    break;
                }
                Err(e) => return Err(e),
            }
        }
        Ok(taken)
    }

    async fn take(&self, file: &Path, outbox: &Outbox) -> Result<Taken, OutboxError> {
        let name = file.display().to_string();
        let path = file.to_path_buf();
        let read = self
            .conversions
            .queue()
            .await
            .run(move || {
                let limits = Limits::default();
                match read_bounded(&path, limits.max_file_bytes) {
                    Ok(None) => Read::TooLarge,
                    Err(e) => Read::Unreadable(e),
                    Ok(Some(bytes)) => Read::Converted(convert(
                        &path.display().to_string(),
                        &bytes,
                        &limits,
                        &ValidationContext::now(),
                    )),
                }
            })
            .await
            .unwrap_or_else(Read::Unreadable);
        let (events, problems, folder, report) = match read {
            Read::TooLarge => {
                refuse(
                    file,
                    &format!(
                        "it is larger than {} bytes; split the export into several files",
                        Limits::default().max_file_bytes
                    ),
                );
                return Ok(Taken {
                    file: file.to_path_buf(),
                    events: 0,
                    problems: 1,
                });
            }
            Read::Unreadable(e) => {
                tracing::warn!(file = %name, error = %e, "cannot read an inbox file");
                return Ok(Taken {
                    file: file.to_path_buf(),
                    events: 0,
                    problems: 1,
                });
            }
            Read::Converted(Err(e)) => (Vec::new(), 1, "rejected", Some(format!("{name}: {e}\n"))),
            Read::Converted(Ok(c)) => {
                let report = (!c.problems.is_empty()).then(|| {
                    c.problems
                        .iter()
                        .map(|p| format!("{p}\n"))
                        .collect::<String>()
                });
                let folder = if c.episodes == 0 && !c.problems.is_empty() {
                    "rejected"
                } else {
                    "done"
                };
                (c.events, c.problems.len(), folder, report)
            }
        };
        let revisions = if events.is_empty() {
            Vec::new()
        } else {
            let span = tracing::info_span!("intake", via = "inbox", events = events.len());
            outbox
                .enqueue_revised(events, &name)
                .instrument(span)
                .await?
        };
        let mut count = 0;
        let mut notes = String::new();
        for (document, revision) in &revisions {
            match revision {
                Revision::First => count += 1,
                Revision::Corrected { version } => {
                    count += 1;
                    notes.push_str(&format!(
                        "{name}: {document}: changed since it was last taken in; sent as version {version} (UPDATED)\n"
                    ));
                }
                Revision::Unchanged { version } => {
                    metrics::counter!(crate::metrics::UNCHANGED.name).increment(1);
                    notes.push_str(&format!(
                        "{name}: {document}: unchanged since version {version}; nothing sent\n"
                    ));
                }
            }
        }
        let report = match (report, notes.is_empty()) {
            (report, true) => report,
            (Some(problems), false) => Some(problems + &notes),
            (None, false) => Some(notes),
        };
        metrics::counter!(crate::metrics::FILES.name, "result" => folder).increment(1);
        metrics::counter!(crate::metrics::INTAKE_EVENTS.name).increment(count as u64);
        if let Err(e) = move_to(file, folder, report) {
            tracing::error!(file = %name, error = %e, "events are safe in the outbox, but the file could not be moved; it will be taken again (duplicates are harmless)");
        }
        tracing::info!(file = %name, events = count, problems, folder, "inbox file taken");
        Ok(Taken {
            file: file.to_path_buf(),
            events: count,
            problems,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(inbox: &Path, name: &str) -> String {
        std::fs::read_to_string(inbox.join("rejected").join(format!("{name}.report.txt")))
            .unwrap_or_default()
    }

    #[test]
    fn a_link_or_a_pipe_put_in_place_of_a_listed_file_is_not_read() {
        let dir = tempfile::tempdir().expect("temporary folder");
        let elsewhere = dir.path().join("secret.xml");
        std::fs::write(&elsewhere, "<A/>").expect("target");
        let link = dir.path().join("link.xml");
        std::os::unix::fs::symlink(&elsewhere, &link).expect("symlink");
        assert!(read_bounded(&link, 1024).is_err(), "a link is not followed");
        // A pipe with no writer: opening it must neither block nor read.
        let pipe = dir.path().join("pipe.xml");
        rustix::fs::mkfifoat(
            rustix::fs::CWD,
            &pipe,
            rustix::fs::Mode::RUSR | rustix::fs::Mode::WUSR,
        )
        .expect("mkfifo");
        let refused = read_bounded(&pipe, 1024).expect_err("not a regular file");
        assert!(
            refused.to_string().contains("no longer a regular file"),
            "{refused}"
        );
        assert_eq!(
            read_bounded(&elsewhere, 1024).expect("regular file"),
            Some(b"<A/>".to_vec())
        );
    }

    #[tokio::test]
    async fn links_and_oversized_files_are_refused_without_being_read() {
        let dir = tempfile::tempdir().expect("temporary folder");
        let inbox = dir.path().join("inbox");
        std::fs::create_dir_all(&inbox).expect("inbox");
        let outbox = Outbox::open(&dir.path().join("outbox"), 1000).expect("outbox");
        // A link to a file elsewhere (an export the HIS did not put here).
        let elsewhere = dir.path().join("secret.xml");
        std::fs::write(&elsewhere, "<A/>").expect("target");
        std::os::unix::fs::symlink(&elsewhere, inbox.join("link.xml")).expect("symlink");
        // A sparse file above the size limit: refused by its size, never read.
        let huge = std::fs::File::create(inbox.join("huge.xml")).expect("huge");
        huge.set_len(Limits::default().max_file_bytes as u64 + 1)
            .expect("sparse");
        let mut watch = Inbox::new(Conversions::new(1, std::time::Duration::from_secs(1)));
        for _ in 0..2 {
            watch.poll(&inbox, &outbox).await.expect("poll");
        }
        assert!(report(&inbox, "link.xml").contains("not a regular file"));
        assert!(report(&inbox, "huge.xml").contains("larger than"));
        assert!(elsewhere.exists(), "the link's target is left alone");
        assert_eq!(outbox.pending(), 0);
    }
}
