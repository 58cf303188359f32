//! Who may call the HTTP intake: the HIS's own programs on this host, never a web page. The
//! intake trusts whoever reaches its loopback port, and a browser on the hospital's server
//! reaches it too: a page from anywhere could POST a forged export to `127.0.0.1:8470` (the
//! browser sends it without asking), or be served under a name that resolves to 127.0.0.1
//! (DNS rebinding) and read the status. So a request must be addressed to a loopback name (or a
//! name the operator lists, for a container), and a request a browser sends for a page (see
//! `lienthong_telemetry::browser`) is refused; an address typed into the server's own browser may
//! read the status.

use std::net::IpAddr;

use axum::http::header::{HOST, ORIGIN};
use axum::http::{HeaderMap, HeaderValue};
use lienthong_telemetry::browser::sent_for_a_page;

/// Why a request to the intake was refused before it was read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// Addressed to a name that is not this host's loopback (nor one the operator listed).
    #[error(
        "the intake answers requests addressed to 127.0.0.1, ::1 or localhost, and this one was addressed to {0:?}; a program that reaches the agent under another name (another container) is allowed with --intake-host-names"
    )]
    Host(String),
    /// Sent by a browser on behalf of a web page.
    #[error(
        "the intake takes requests from the HIS's programs, not from web pages ({0}): a page in a browser may not publish or read clinical documents; call it from the HIS's server-side code"
    )]
    WebPage(String),
}

impl Refusal {
    /// The reason label of `lienthong_agent_intake_refused_total`.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Host(_) => "host",
            Self::WebPage(_) => "web_page",
        }
    }
}

/// The host names a request may be addressed to besides loopback.
#[derive(Debug, Clone, Default)]
pub struct LocalCallers {
    names: Vec<String>,
}

impl LocalCallers {
    /// Loopback, and `names` (case-insensitive; a port given with a name is ignored).
    pub fn new(names: &[String]) -> Self {
        Self {
            names: names
                .iter()
                .map(|n| without_port(&n.trim().to_ascii_lowercase()).to_owned())
                .filter(|n| !n.is_empty())
                .collect(),
        }
    }

    /// Ok when a request with `headers` comes from a program on this host.
    pub fn check(&self, headers: &HeaderMap) -> Result<(), Refusal> {
        let header = |name| headers.get(name).map(|v: &HeaderValue| v.as_bytes());
        if let Some(why) = sent_for_a_page(header(ORIGIN.as_str()), header("sec-fetch-site")) {
            return Err(Refusal::WebPage(why));
        }
        // HTTP/1.0 may omit Host; browsers never do.
        let Some(host) = headers.get(HOST) else {
            return Ok(());
        };
        let host = String::from_utf8_lossy(host.as_bytes()).to_ascii_lowercase();
        if self.is_local(without_port(&host)) {
            Ok(())
        } else {
            Err(Refusal::Host(host))
        }
    }

    fn is_local(&self, name: &str) -> bool {
        let literal = name.trim_start_matches('[').trim_end_matches(']');
        if let Ok(ip) = literal.parse::<IpAddr>() {
            return ip.is_loopback();
        }
        name == "localhost" || self.names.iter().any(|n| n == name)
    }
}

/// The host of a `Host` header value: `[::1]:8470` → `[::1]`, `localhost:8470` → `localhost`.
fn without_port(host: &str) -> &str {
    if host.starts_with('[') {
        return host.find(']').map_or(host, |end| &host[..=end]);
    }
    host.rsplit_once(':').map_or(host, |(name, _)| name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().expect("header value"));
        }
        h
    }

    #[test]
    fn programs_on_this_host_are_let_in() {
        let callers = LocalCallers::default();
        for host in [
            "127.0.0.1:8470",
            "127.0.0.1",
            "127.8.9.10:8470",
            "localhost:8470",
            "LOCALHOST",
            "[::1]:8470",
            "[::1]",
        ] {
            assert_eq!(callers.check(&headers(&[("host", host)])), Ok(()), "{host}");
        }
        assert_eq!(callers.check(&HeaderMap::new()), Ok(()));
        // The server's own browser, the address typed in: the status may be read.
        assert_eq!(
            callers.check(&headers(&[
                ("host", "127.0.0.1:8470"),
                ("sec-fetch-site", "none")
            ])),
            Ok(())
        );
    }

    #[test]
    fn another_name_is_refused_unless_listed() {
        let refused = LocalCallers::default()
            .check(&headers(&[("host", "rebound.example:8470")]))
            .expect_err("DNS rebinding");
        assert_eq!(refused.reason(), "host");
        assert!(refused.to_string().contains("rebound.example:8470"));
        for host in [
            "10.0.0.5:8470",
            "0.0.0.0:8470",
            "[::]:8470",
            "127.0.0.1.evil.example",
        ] {
            assert!(
                LocalCallers::default()
                    .check(&headers(&[("host", host)]))
                    .is_err(),
                "{host}"
            );
        }
        let listed = LocalCallers::new(&["Agent".into(), " ".into(), "his-bridge:8470".into()]);
        assert_eq!(listed.check(&headers(&[("host", "his-bridge")])), Ok(()));
        assert_eq!(listed.check(&headers(&[("host", "agent:8470")])), Ok(()));
        assert!(listed.check(&headers(&[("host", "other:8470")])).is_err());
    }

    #[test]
    fn what_a_browser_sends_for_a_page_is_refused() {
        let callers = LocalCallers::default();
        for pairs in [
            vec![
                ("host", "127.0.0.1:8470"),
                ("origin", "https://evil.example"),
            ],
            vec![("host", "127.0.0.1:8470"), ("origin", "null")],
            vec![("host", "127.0.0.1:8470"), ("sec-fetch-site", "cross-site")],
            vec![("host", "localhost:8470"), ("sec-fetch-site", "same-site")],
        ] {
            let refused = callers.check(&headers(&pairs)).expect_err("a page");
            assert_eq!(refused.reason(), "web_page", "{pairs:?}");
        }
    }
}
