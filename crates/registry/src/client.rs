//! A small client of the Confluent schema-registry REST API (what Apicurio serves at
//! `/apis/ccompat/v7`), for registration, compatibility and listing. The wire format uses
//! `schema_registry_converter` (see `wire`).

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::error::{Error, Result};
use crate::settings::RegistryArgs;

/// A schema reference: an imported file registered under its own subject.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reference {
    /// Import path as written in the importing file.
    pub name: String,
    /// Subject the imported file is registered under.
    pub subject: String,
    /// Version of that subject.
    pub version: u32,
}

/// Outcome of a compatibility check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Compatibility {
    /// True when the registry would accept the schema.
    pub compatible: bool,
    /// The registry's reasons when not.
    pub messages: Vec<String>,
}

/// The registry client.
#[derive(Debug, Clone)]
pub struct RegistryClient {
    http: reqwest::Client,
    base: String,
    credentials: Option<(String, String)>,
}

const CONTENT_TYPE: &str = "application/vnd.schemaregistry.v1+json";

/// Why one attempt at a call got no usable answer.
#[derive(Debug, thiserror::Error)]
enum Unanswered {
    /// Nothing (or no whole answer) came back.
    #[error("{0}")]
    Transport(reqwest::Error),
    /// The registry answered that it failed (5xx), as when a storage lock timed out.
    #[error("HTTP {0}: {1}")]
    ServerError(u16, String),
}

impl Unanswered {
    fn is_transient(&self) -> bool {
        match self {
            Self::Transport(e) => e.is_timeout() || e.is_connect() || e.is_request() || e.is_body(),
            Self::ServerError(..) => true,
        }
    }
}

fn subject_path(subject: &str) -> String {
    subject.replace('%', "%25").replace('/', "%2F")
}

/// The registry's message, with what to do when the refusal is about who is asking.
fn with_remedy(status: u16, message: String) -> String {
    match status {
        401 => format!(
            "{message}; the registry asks who is calling: give a registry user with \
             --registry-username and --registry-password-file (LIENTHONG_REGISTRY_USERNAME, \
             LIENTHONG_REGISTRY_PASSWORD_FILE), and check the password"
        ),
        403 => format!(
            "{message}; this registry user may not do it: registering schemas needs a user \
             with the developer role, global rules the administrator; a service that \
             reads only starts once `lienthong schemas register` has registered the contract \
             as such a user (the chart's setup job does)"
        ),
        _ => message,
    }
}

impl RegistryClient {
    /// A client for the configured registry.
    pub fn new(args: &RegistryArgs) -> Result<Self> {
        let http = args
            .http_client_builder()?
            .build()
            .map_err(|e| Error::Config(format!("cannot build HTTP client: {e}")))?;
        Ok(Self {
            http,
            base: args.base()?,
            credentials: args.credentials()?,
        })
    }

    /// Base URL of the Confluent API.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// Makes one request (built afresh for each attempt) and reads its answer: status and
    /// body. A failure in transport or of the registry itself (5xx) is tried again (see
    /// `retry`); after the last attempt a 5xx answer is returned for the caller to report.
    async fn exchange(
        &self,
        url: &str,
        build: impl Fn() -> reqwest::RequestBuilder,
    ) -> Result<(u16, String)> {
        let answered = crate::retry::transient_failures(
            url,
            || async {
                let mut req = build();
                if let Some((user, password)) = &self.credentials {
                    req = req.basic_auth(user, Some(password));
                }
                let resp = req.send().await.map_err(Unanswered::Transport)?;
                let status = resp.status().as_u16();
                let text = resp.text().await.map_err(Unanswered::Transport)?;
                if status >= 500 {
                    return Err(Unanswered::ServerError(status, text));
                }
                Ok((status, text))
            },
            Unanswered::is_transient,
        )
        .await;
        match answered {
            Ok(answer) => Ok(answer),
            Err(Unanswered::ServerError(status, text)) => Ok((status, text)),
            Err(Unanswered::Transport(source)) => Err(Error::Unreachable {
                url: url.to_owned(),
                source,
            }),
        }
    }

    async fn call(
        &self,
        method: reqwest::Method,
        url: String,
        body: Option<Value>,
        what: &str,
    ) -> Result<(u16, Value)> {
        let body = body.map(|b| b.to_string());
        let (status, text) = self
            .exchange(&url, || {
                let req = self
                    .http
                    .request(method.clone(), &url)
                    .header("Accept", CONTENT_TYPE);
                match &body {
                    Some(body) => req.header("Content-Type", CONTENT_TYPE).body(body.clone()),
                    None => req,
                }
            })
            .await?;
        let value: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        if (200..300).contains(&status) {
            Ok((status, value))
        } else {
            Err(Error::Refused {
                what: what.to_owned(),
                status,
                message: with_remedy(status, registry_message(&value)),
            })
        }
    }

    /// As `call`, with "not found" (404) answered as `None`.
    async fn call_if_found(
        &self,
        method: reqwest::Method,
        url: String,
        body: Option<Value>,
        what: &str,
    ) -> Result<Option<Value>> {
        match self.call(method, url, body, what).await {
            Ok((_, v)) => Ok(Some(v)),
            Err(Error::Refused { status: 404, .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Sets the subject's compatibility level (e.g. `BACKWARD`).
    pub async fn set_compatibility(&self, subject: &str, level: &str) -> Result<()> {
        let url = format!("{}/config/{}", self.base, subject_path(subject));
        let what = format!("setting compatibility of {subject}");
        let put = || {
            self.call(
                reqwest::Method::PUT,
                url.clone(),
                Some(json!({ "compatibility": level })),
                &what,
            )
        };
        match put().await {
            // Apicurio creates the subject's rule on the first PUT; two services starting
            // together can both try, and the loser hears "already exists" (409). The rule
            // exists now, so a second PUT updates it.
            Err(Error::Refused { status: 409, .. }) => put().await.map(|_| ()),
            other => other.map(|_| ()),
        }
    }

    /// The subject's compatibility level, if one is set.
    pub async fn compatibility(&self, subject: &str) -> Result<Option<String>> {
        let url = format!("{}/config/{}", self.base, subject_path(subject));
        let found = self
            .call_if_found(
                reqwest::Method::GET,
                url,
                None,
                &format!("reading compatibility of {subject}"),
            )
            .await?;
        Ok(found.and_then(|v| {
            v.get("compatibilityLevel")
                .or_else(|| v.get("compatibility"))
                .and_then(Value::as_str)
                .map(str::to_owned)
        }))
    }

    /// Registers a protobuf schema (no-op if identical to an existing version); returns its id.
    pub async fn register(
        &self,
        subject: &str,
        schema: &str,
        references: &[Reference],
    ) -> Result<u32> {
        let url = format!("{}/subjects/{}/versions", self.base, subject_path(subject));
        let body = json!({ "schemaType": "PROTOBUF", "schema": schema, "references": references });
        let (_, v) = self
            .call(
                reqwest::Method::POST,
                url,
                Some(body),
                &format!("registering {subject}"),
            )
            .await?;
        id_of(&v, subject)
    }

    /// Finds the version of `subject` holding exactly this schema: (id, version).
    pub async fn lookup(
        &self,
        subject: &str,
        schema: &str,
        references: &[Reference],
    ) -> Result<Option<(u32, u32)>> {
        let url = format!("{}/subjects/{}", self.base, subject_path(subject));
        let body = json!({ "schemaType": "PROTOBUF", "schema": schema, "references": references });
        let found = self
            .call_if_found(
                reqwest::Method::POST,
                url,
                Some(body),
                &format!("looking up {subject}"),
            )
            .await?;
        found
            .map(|v| {
                let version = v.get("version").and_then(Value::as_u64).unwrap_or(0) as u32;
                Ok((id_of(&v, subject)?, version))
            })
            .transpose()
    }

    /// Checks that the registry answers and accepts these credentials, so that a service
    /// that only reads schemas stops at start-up with the reason rather than failing on its
    /// first message.
    pub async fn probe(&self) -> Result<()> {
        self.subjects().await.map(|_| ())
    }

    /// All subjects.
    pub async fn subjects(&self) -> Result<Vec<String>> {
        let (_, v) = self
            .call(
                reqwest::Method::GET,
                format!("{}/subjects", self.base),
                None,
                "listing subjects",
            )
            .await?;
        Ok(serde_json::from_value(v).unwrap_or_default())
    }

    /// Versions of a subject (empty if it does not exist).
    pub async fn versions(&self, subject: &str) -> Result<Vec<u32>> {
        let url = format!("{}/subjects/{}/versions", self.base, subject_path(subject));
        let found = self
            .call_if_found(
                reqwest::Method::GET,
                url,
                None,
                &format!("listing versions of {subject}"),
            )
            .await?;
        Ok(found
            .and_then(|v| serde_json::from_value(v).ok())
            .unwrap_or_default())
    }

    /// The schema id of a subject's version.
    pub async fn version_id(&self, subject: &str, version: u32) -> Result<u32> {
        let url = format!(
            "{}/subjects/{}/versions/{version}",
            self.base,
            subject_path(subject)
        );
        let (_, v) = self
            .call(
                reqwest::Method::GET,
                url,
                None,
                &format!("reading {subject} version {version}"),
            )
            .await?;
        id_of(&v, subject)
    }

    /// Would the registry accept this schema as the next version of `subject`?
    ///
    /// Uses the Confluent compatibility endpoint. Apicurio 3's ccompat endpoint cannot resolve
    /// schema references in compatibility checks (it answers 422 "Syntax violation"), so for an
    /// Apicurio URL the check falls back to Apicurio's own API with `dryRun=true`, which runs
    /// the same compatibility rule that registration would, without creating anything.
    pub async fn check(
        &self,
        subject: &str,
        schema: &str,
        references: &[Reference],
    ) -> Result<Compatibility> {
        if self.versions(subject).await?.is_empty() {
            return Ok(Compatibility {
                compatible: true,
                messages: vec![format!(
                    "{subject} does not exist yet; the first version is always accepted"
                )],
            });
        }
        let url = format!(
            "{}/compatibility/subjects/{}/versions/latest?verbose=true",
            self.base,
            subject_path(subject)
        );
        let body = json!({ "schemaType": "PROTOBUF", "schema": schema, "references": references });
        match self
            .call(
                reqwest::Method::POST,
                url,
                Some(body),
                &format!("checking {subject}"),
            )
            .await
        {
            Ok((_, v)) => Ok(Compatibility {
                compatible: v
                    .get("is_compatible")
                    .and_then(Value::as_bool)
                    .unwrap_or(false),
                messages: v
                    .get("messages")
                    .and_then(|m| serde_json::from_value(m.clone()).ok())
                    .unwrap_or_default(),
            }),
            Err(Error::Refused { status: 422, .. }) if self.base.ends_with("/apis/ccompat/v7") => {
                self.apicurio_dry_run(subject, schema, references).await
            }
            Err(e) => Err(e),
        }
    }

    async fn apicurio_dry_run(
        &self,
        subject: &str,
        schema: &str,
        references: &[Reference],
    ) -> Result<Compatibility> {
        let root = self.base.trim_end_matches("/ccompat/v7");
        let url = format!(
            "{root}/registry/v3/groups/default/artifacts/{}/versions?dryRun=true",
            subject_path(subject)
        );
        let refs: Vec<Value> = references
            .iter()
            .map(|r| json!({ "groupId": "default", "artifactId": r.subject, "version": r.version.to_string(), "name": r.name }))
            .collect();
        let body = json!({ "content": { "content": schema, "contentType": "application/x-protobuf", "references": refs } })
            .to_string();
        let (status, text) = self
            .exchange(&url, || {
                self.http
                    .post(&url)
                    .header("Content-Type", "application/json")
                    .body(body.clone())
            })
            .await?;
        let value: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        match status {
            200..=299 => Ok(Compatibility {
                compatible: true,
                messages: Vec::new(),
            }),
            400 | 409 => {
                let causes: Vec<String> = value
                    .get("causes")
                    .and_then(Value::as_array)
                    .map(|c| {
                        c.iter()
                            .map(|c| {
                                format!(
                                    "{} at {}",
                                    c.get("description").and_then(Value::as_str).unwrap_or("?"),
                                    c.get("context").and_then(Value::as_str).unwrap_or("?")
                                )
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                let messages = if causes.is_empty() {
                    vec![registry_message(&value)]
                } else {
                    causes
                };
                Ok(Compatibility {
                    compatible: false,
                    messages,
                })
            }
            _ => Err(Error::Refused {
                what: format!("dry-run registration of {subject}"),
                status,
                message: registry_message(&value),
            }),
        }
    }
}

fn id_of(v: &Value, subject: &str) -> Result<u32> {
    v.get("id")
        .and_then(Value::as_u64)
        .map(|id| id as u32)
        .ok_or_else(|| Error::Refused {
            what: format!("answer for {subject}"),
            status: 200,
            message: format!("no schema id in {v}"),
        })
}

fn registry_message(v: &Value) -> String {
    v.get("message")
        .or_else(|| v.get("detail"))
        .or_else(|| v.get("title"))
        .and_then(Value::as_str)
        .map(str::to_owned)
        .unwrap_or_else(|| v.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// What a scripted registry does with one connection.
    #[derive(Clone, Copy)]
    enum Turn {
        /// Holds it open and never answers (as a registry stalled under load does).
        Stall,
        /// Answers with this status and JSON body.
        Answer(u16, &'static str),
    }

    /// A registry that plays `turns`, one per connection, then answers `last` to every later
    /// connection.
    async fn scripted_registry(
        turns: Vec<Turn>,
        last: Turn,
    ) -> (String, tokio::task::JoinHandle<()>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let server = tokio::spawn(async move {
            let mut held = Vec::new();
            for turn in turns.into_iter().chain(std::iter::repeat(last)) {
                let (mut conn, _) = listener.accept().await.unwrap();
                match turn {
                    Turn::Stall => held.push(conn),
                    Turn::Answer(status, body) => {
                        let mut buf = [0u8; 4096];
                        let _ = conn.read(&mut buf).await;
                        let answer = format!(
                            "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                            body.len()
                        );
                        conn.write_all(answer.as_bytes()).await.unwrap();
                    }
                }
            }
        });
        (url, server)
    }

    fn client_of(url: String) -> RegistryClient {
        let mut args = RegistryArgs::local(url);
        args.registry_timeout_secs = 1;
        RegistryClient::new(&args).unwrap()
    }

    const SUBJECTS: &str = r#"["lienthong.referral.v1-value"]"#;

    #[tokio::test]
    async fn a_call_the_registry_left_unanswered_is_made_again() {
        let (url, server) = scripted_registry(vec![Turn::Stall], Turn::Answer(200, SUBJECTS)).await;
        assert_eq!(
            client_of(url).subjects().await.unwrap(),
            vec!["lienthong.referral.v1-value".to_owned()]
        );
        server.abort();
    }

    #[tokio::test]
    async fn a_call_the_registry_failed_itself_is_made_again() {
        let lock = Turn::Answer(500, r#"{"message":"Timeout trying to lock table"}"#);
        let (url, server) = scripted_registry(vec![lock, lock], Turn::Answer(200, SUBJECTS)).await;
        assert_eq!(client_of(url).subjects().await.unwrap().len(), 1);
        server.abort();
    }

    #[tokio::test]
    async fn a_registry_failing_every_attempt_is_reported_with_its_message() {
        let lock = Turn::Answer(503, r#"{"message":"storage unavailable"}"#);
        let (url, server) = scripted_registry(vec![], lock).await;
        let err = client_of(url).subjects().await.unwrap_err();
        assert!(
            matches!(&err, Error::Refused { status: 503, message, .. } if message == "storage unavailable"),
            "{err:?}"
        );
        server.abort();
    }

    #[tokio::test]
    async fn a_refused_request_is_not_made_again() {
        let refused = Turn::Answer(422, r#"{"message":"Syntax violation"}"#);
        // A second connection would be answered 200: the refusal must be what the caller sees.
        let (url, server) = scripted_registry(vec![refused], Turn::Answer(200, SUBJECTS)).await;
        let err = client_of(url).subjects().await.unwrap_err();
        assert!(
            matches!(&err, Error::Refused { status: 422, .. }),
            "{err:?}"
        );
        server.abort();
    }

    #[tokio::test]
    async fn a_refusal_of_who_is_asking_says_which_setting_to_fix() {
        for (status, names) in [(401, "--registry-password-file"), (403, "developer role")] {
            let refused = Turn::Answer(status, r#"{"message":"not authorized"}"#);
            let (url, server) = scripted_registry(vec![], refused).await;
            let err = client_of(url).subjects().await.unwrap_err();
            let text = err.to_string();
            assert!(
                text.contains("not authorized") && text.contains(names),
                "{text}"
            );
            server.abort();
        }
    }

    #[tokio::test]
    async fn a_registry_that_never_answers_is_reported_unreachable_with_its_url() {
        let (url, server) = scripted_registry(vec![], Turn::Stall).await;
        let err = client_of(url.clone()).subjects().await.unwrap_err();
        assert!(
            matches!(&err, Error::Unreachable { url: u, .. } if u.starts_with(&url)),
            "{err:?}"
        );
        assert!(err.to_string().contains("is it running?"), "{err}");
        server.abort();
    }
}
