//! The agent's settings file: `NAME=value` lines naming the same settings as its environment
//! variables (`LIENTHONG_AGENT_INBOX=/var/spool/lienthong-facility-agent/inbox`), the format of
//! systemd's `EnvironmentFile`. A packaged agent reads `/etc/lienthong/facility-agent.conf`.
//! Precedence: the command line, then the environment, then the file, then the defaults.
//!
//! The file is checked whole before anything starts: an unknown name (a typo would otherwise
//! leave a setting at its default without a word), a name given twice, a line that is not
//! `NAME=value` or a value with control characters is an error naming the line.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// Why the settings file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SettingsFileError {
    /// The file could not be read.
    #[error("cannot read the settings file {path}: {cause}")]
    Read {
        /// File.
        path: PathBuf,
        /// I/O error.
        cause: std::io::Error,
    },
    /// A line is wrong.
    #[error("{path} line {line}: {problem}")]
    Line {
        /// File.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong and what to write instead.
        problem: String,
    },
}

/// The settings of `text`, in file order, each checked against the `known` names.
pub fn parse(
    text: &str,
    known: &BTreeSet<String>,
) -> Result<Vec<(String, String)>, (usize, String)> {
    let mut settings: Vec<(String, String)> = Vec::new();
    for (index, raw) in text.lines().enumerate() {
        let line = index + 1;
        let trimmed = raw.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let Some((name, value)) = trimmed.split_once('=') else {
            return Err((line, "expected NAME=value (or a # comment)".to_owned()));
        };
        let name = name.trim();
        if !known.contains(name) {
            let listed: Vec<&str> = known.iter().map(String::as_str).collect();
            return Err((
                line,
                format!(
                    "unknown setting {name:?}; the agent's settings are {}",
                    listed.join(", ")
                ),
            ));
        }
        if settings.iter().any(|(n, _)| n == name) {
            return Err((line, format!("{name} is set twice; keep one line")));
        }
        let value = unquote(value.trim());
        if value.chars().any(char::is_control) {
            return Err((
                line,
                format!("the value of {name} holds control characters"),
            ));
        }
        settings.push((name.to_owned(), value.to_owned()));
    }
    Ok(settings)
}

/// A value without the one pair of matching quotes around it, if it has them.
fn unquote(value: &str) -> &str {
    for quote in ['"', '\''] {
        if value.len() >= 2 && value.starts_with(quote) && value.ends_with(quote) {
            return &value[1..value.len() - 1];
        }
    }
    value
}

/// Reads and checks the settings file at `path`.
pub fn load(
    path: &Path,
    known: &BTreeSet<String>,
) -> Result<Vec<(String, String)>, SettingsFileError> {
    let text = std::fs::read_to_string(path).map_err(|source| SettingsFileError::Read {
        path: path.to_path_buf(),
        cause: source,
    })?;
    parse(&text, known).map_err(|(line, problem)| SettingsFileError::Line {
        path: path.to_path_buf(),
        line,
        problem,
    })
}

/// `command` with the file's settings as the defaults of the arguments they name (in every
/// subcommand), so that the command line and the environment still win.
pub fn apply(mut command: clap::Command, settings: &[(String, String)]) -> clap::Command {
    let ids: Vec<(clap::Id, String)> = command
        .get_arguments()
        .filter_map(|a| {
            let env = a.get_env()?.to_str()?;
            let (_, value) = settings.iter().find(|(n, _)| n == env)?;
            Some((a.get_id().clone(), value.clone()))
        })
        .collect();
    for (id, value) in ids {
        command = command.mut_arg(id, |a| a.default_value(value).required(false));
    }
    let names: Vec<String> = command
        .get_subcommands()
        .map(|s| s.get_name().to_owned())
        .collect();
    for name in names {
        command = command.mut_subcommand(name, |sub| apply(sub, settings));
    }
    command
}

/// Every environment variable `command` (and its subcommands) reads: the names a settings
/// file may use.
pub fn known_names(command: &clap::Command) -> BTreeSet<String> {
    let mut names: BTreeSet<String> = command
        .get_arguments()
        .filter_map(|a| a.get_env()?.to_str().map(str::to_owned))
        .collect();
    for sub in command.get_subcommands() {
        names.extend(known_names(sub));
    }
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    fn known() -> BTreeSet<String> {
        ["LIENTHONG_AGENT_INBOX", "LIENTHONG_GATEWAY_URL", "RUST_LOG"]
            .into_iter()
            .map(str::to_owned)
            .collect()
    }

    #[test]
    fn names_values_comments_and_quotes() {
        let text = "# the agent\n\nLIENTHONG_AGENT_INBOX = /srv/inbox\nLIENTHONG_GATEWAY_URL=\"https://gw:50051\"\nRUST_LOG='info'\n";
        let parsed = parse(text, &known()).expect("valid");
        assert_eq!(
            parsed,
            vec![
                ("LIENTHONG_AGENT_INBOX".into(), "/srv/inbox".into()),
                ("LIENTHONG_GATEWAY_URL".into(), "https://gw:50051".into()),
                ("RUST_LOG".into(), "info".into()),
            ]
        );
    }

    #[test]
    fn hostile_or_mistaken_lines_are_refused_with_their_line_number() {
        let cases = [
            ("LIENTHONG_AGENT_INBOXX=/srv\n", 1, "unknown setting"),
            ("# c\nLIENTHONG_AGENT_INBOX\n", 2, "expected NAME=value"),
            (
                "LIENTHONG_AGENT_INBOX=/a\nLIENTHONG_AGENT_INBOX=/b\n",
                2,
                "set twice",
            ),
            (
                "LIENTHONG_AGENT_INBOX=/a\u{1b}[2J\n",
                1,
                "control characters",
            ),
            ("PATH=/tmp/evil\n", 1, "unknown setting"),
            ("LD_PRELOAD=/tmp/evil.so\n", 1, "unknown setting"),
        ];
        for (text, line, problem) in cases {
            let (at, message) = parse(text, &known()).expect_err(text);
            assert_eq!(at, line, "{text:?}: {message}");
            assert!(message.contains(problem), "{text:?}: {message}");
        }
    }

    #[test]
    fn the_command_line_and_the_environment_win_over_the_file() {
        let command = || {
            clap::Command::new("agent")
                .arg(
                    clap::Arg::new("inbox")
                        .long("inbox")
                        .env("LT_TEST_SETTINGS_INBOX")
                        .required(true),
                )
                .arg(
                    clap::Arg::new("batch")
                        .long("batch")
                        .env("LT_TEST_SETTINGS_BATCH")
                        .default_value("200"),
                )
        };
        let settings = vec![
            ("LT_TEST_SETTINGS_INBOX".to_owned(), "/from/file".to_owned()),
            ("LT_TEST_SETTINGS_BATCH".to_owned(), "50".to_owned()),
        ];
        let m = apply(command(), &settings).get_matches_from(["agent"]);
        assert_eq!(
            m.get_one::<String>("inbox").map(String::as_str),
            Some("/from/file")
        );
        assert_eq!(m.get_one::<String>("batch").map(String::as_str), Some("50"));
        let m = apply(command(), &settings).get_matches_from(["agent", "--batch", "7"]);
        assert_eq!(m.get_one::<String>("batch").map(String::as_str), Some("7"));
        assert!(known_names(&command()).contains("LT_TEST_SETTINGS_BATCH"));
    }

    #[test]
    fn a_missing_file_names_itself() {
        let e = load(Path::new("/nonexistent/facility-agent.conf"), &known()).expect_err("missing");
        assert!(
            e.to_string().contains("/nonexistent/facility-agent.conf"),
            "{e}"
        );
    }
}
