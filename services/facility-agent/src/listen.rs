//! Where the local intakes listen. They take events without authentication or encryption,
//! trusting whoever can reach them to be the HIS beside the agent, so they listen on loopback
//! only; an address beyond it is refused at start-up unless the operator says the agent runs
//! in a container whose port is published on the host's loopback alone.

use tokio::net::TcpListener;

/// Why an intake cannot listen where it was asked to.
#[derive(Debug, thiserror::Error)]
pub enum ListenError {
    /// The address cannot be bound.
    #[error("cannot listen on {addr} for the {intake} intake: {cause}; pick another {flag}")]
    Bind {
        /// Which intake.
        intake: &'static str,
        /// Its flag.
        flag: &'static str,
        /// The address asked for.
        addr: String,
        /// Why not.
        cause: std::io::Error,
    },
    /// The address is reachable from other hosts.
    #[error(
        "the {intake} intake takes events without authentication or encryption, so it listens on loopback only, and {addr} is {ip}: set {flag} 127.0.0.1:<port>. An HIS on another host publishes to the gateway with credentials of its own (or runs an agent of its own). Inside a container whose port is published on the host's loopback only, set --intake-beyond-loopback"
    )]
    BeyondLoopback {
        /// Which intake.
        intake: &'static str,
        /// Its flag.
        flag: &'static str,
        /// The address asked for.
        addr: String,
        /// The address it bound.
        ip: std::net::IpAddr,
    },
}

/// Binds the `intake` (set by `flag`) on `addr`, refusing an address beyond loopback unless
/// `beyond_loopback`.
pub async fn bind_intake(
    intake: &'static str,
    flag: &'static str,
    addr: &str,
    beyond_loopback: bool,
) -> Result<TcpListener, ListenError> {
    let bind = |source| ListenError::Bind {
        intake,
        flag,
        addr: addr.to_owned(),
        cause: source,
    };
    let listener = TcpListener::bind(addr).await.map_err(bind)?;
    // The bound address, not the text: a host name resolves to whatever it resolves to.
    let ip = listener.local_addr().map_err(bind)?.ip();
    if !ip.is_loopback() && !beyond_loopback {
        return Err(ListenError::BeyondLoopback {
            intake,
            flag,
            addr: addr.to_owned(),
            ip,
        });
    }
    if !ip.is_loopback() {
        tracing::warn!(intake, %ip, "an intake listens beyond loopback (--intake-beyond-loopback): it takes events from whoever reaches it");
    }
    Ok(listener)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn loopback_is_taken_and_every_other_address_is_refused_with_what_to_do() {
        for addr in ["127.0.0.1:0", "localhost:0"] {
            assert!(
                bind_intake("HTTP", "--http-listen", addr, false)
                    .await
                    .is_ok(),
                "{addr}"
            );
        }
        let refused = bind_intake("HTTP", "--http-listen", "0.0.0.0:0", false)
            .await
            .expect_err("all interfaces");
        let message = refused.to_string();
        assert!(
            message.contains("loopback only")
                && message.contains("--http-listen 127.0.0.1:<port>")
                && message.contains("--intake-beyond-loopback"),
            "{message}"
        );
        assert!(
            bind_intake("gRPC", "--grpc-listen", "0.0.0.0:0", true)
                .await
                .is_ok(),
            "allowed when the operator says so"
        );
        let taken = bind_intake("HTTP", "--http-listen", "127.0.0.1:0", false)
            .await
            .expect("bound");
        let busy = taken.local_addr().expect("addr").to_string();
        let err = bind_intake("HTTP", "--http-listen", &busy, false)
            .await
            .expect_err("in use");
        assert!(
            err.to_string().contains("pick another --http-listen"),
            "{err}"
        );
    }
}
