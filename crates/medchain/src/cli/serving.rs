//! The HTTP API's deployment flags, shared by `serve` and `node` (where they override
//! node.toml's `[http]` table; lists add to it).

use std::net::IpAddr;
use std::time::Duration;

use clap::Args;
use medchain::http::Settings;
use node::HttpConfig;

#[derive(Args, Debug, Clone, Default)]
pub struct ServingArgs {
    /// The API is served over HTTPS (by a TLS proxy in front of it): the session cookie gets
    /// the Secure flag, and every answer Strict-Transport-Security. [node.toml: http.secure_cookie]
    #[arg(long)]
    secure_cookie: bool,
    /// A Host name served, as NAME (any port) or NAME:PORT; repeat for more. The API's own
    /// address, localhost, 127.0.0.1 and [::1] with its port are always served; a request
    /// naming any other Host is refused (421), against DNS rebinding.
    /// [node.toml: http.allowed_hosts]
    #[arg(long, value_name = "NAME")]
    allowed_host: Vec<String>,
    /// A proxy whose X-Forwarded-For names the client (the rightmost address that is not a
    /// trusted proxy), for the login throttle; repeat for more. From other peers the header is
    /// ignored. [node.toml: http.trusted_proxies]
    #[arg(long, value_name = "ADDR")]
    trusted_proxy: Vec<IpAddr>,
    /// Longest a client may take to send a request's headers, or its first request on a new
    /// connection [default: 10s] [node.toml: http.header_timeout]
    #[arg(long, value_name = "DURATION", value_parser = node::parse_duration)]
    header_timeout: Option<Duration>,
    /// Longest a client may take to send a request's body (408 beyond) [default: 30s]
    /// [node.toml: http.body_timeout]
    #[arg(long, value_name = "DURATION", value_parser = node::parse_duration)]
    body_timeout: Option<Duration>,
    /// Longest a kept-alive connection may wait idle for its next request [default: 60s]
    /// [node.toml: http.idle_timeout]
    #[arg(long, value_name = "DURATION", value_parser = node::parse_duration)]
    idle_timeout: Option<Duration>,
    /// Connections served at once: at the cap, the one idle longest is closed for a
    /// newcomer; with none idle, more wait to be accepted [default: 1024]
    /// [node.toml: http.max_connections]
    #[arg(long, value_name = "N")]
    max_connections: Option<usize>,
    /// Connections served at once to one client address (an IPv6 client by its /64): past
    /// it, the client's idle connection is closed for its new one, or if none is idle the
    /// new one is refused (429). A trusted proxy is not held to it
    /// [default: an eighth of --max-connections] [node.toml: http.max_connections_per_client]
    #[arg(long, value_name = "N")]
    max_connections_per_client: Option<usize>,
}

impl ServingArgs {
    /// The HTTP settings: `file`'s (node.toml's `[http]`, or the defaults), with these flags
    /// over them.
    pub fn settings(&self, file: &HttpConfig) -> anyhow::Result<Settings> {
        let mut limits = file.limits()?;
        for (flag, value, field) in [
            (
                "--header-timeout",
                self.header_timeout,
                &mut limits.header_timeout,
            ),
            (
                "--body-timeout",
                self.body_timeout,
                &mut limits.body_timeout,
            ),
            (
                "--idle-timeout",
                self.idle_timeout,
                &mut limits.idle_timeout,
            ),
        ] {
            if let Some(value) = value {
                anyhow::ensure!(!value.is_zero(), "{flag} must be above zero");
                *field = value;
            }
        }
        if let Some(max) = self.max_connections {
            limits.max_connections = max;
        }
        if let Some(max) = self.max_connections_per_client {
            limits.max_connections_per_client = Some(max);
        }
        let limits = limits.checked()?;
        let mut allowed_hosts = file.allowed_hosts.clone();
        allowed_hosts.extend(self.allowed_host.iter().cloned());
        for host in &allowed_hosts {
            anyhow::ensure!(
                !host.is_empty() && !host.contains(|c: char| c.is_whitespace() || c == '/'),
                "'{host}' is not a host name (NAME or NAME:PORT)"
            );
        }
        let mut trusted_proxies = file.trusted_proxies.clone();
        trusted_proxies.extend(self.trusted_proxy.iter().copied());
        Ok(Settings {
            secure_cookie: self.secure_cookie || file.secure_cookie,
            allowed_hosts,
            trusted_proxies,
            limits,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        serving: ServingArgs,
    }

    fn parse(args: &[&str]) -> ServingArgs {
        Cli::try_parse_from(std::iter::once("medchain").chain(args.iter().copied()))
            .unwrap()
            .serving
    }

    #[test]
    fn flags_override_the_file_and_lists_add_to_it() {
        let file = HttpConfig {
            allowed_hosts: vec!["a.example".into()],
            trusted_proxies: vec!["10.0.0.1".parse().unwrap()],
            idle_timeout: "2m".into(),
            ..HttpConfig::default()
        };
        let settings = parse(&[
            "--secure-cookie",
            "--allowed-host",
            "b.example:8443",
            "--trusted-proxy",
            "::1",
            "--header-timeout",
            "3s",
            "--max-connections",
            "8",
        ])
        .settings(&file)
        .unwrap();
        assert!(settings.secure_cookie);
        assert_eq!(settings.allowed_hosts, ["a.example", "b.example:8443"]);
        assert_eq!(settings.trusted_proxies.len(), 2);
        assert_eq!(settings.limits.header_timeout, Duration::from_secs(3));
        assert_eq!(settings.limits.idle_timeout, Duration::from_secs(120));
        assert_eq!(settings.limits.max_connections, 8);
        assert_eq!(settings.limits.per_client(), 1, "an eighth of 8");
        let settings = parse(&["--max-connections-per-client", "3"])
            .settings(&file)
            .unwrap();
        assert_eq!(settings.limits.per_client(), 3);
        let defaults = parse(&[]).settings(&HttpConfig::default()).unwrap();
        assert!(!defaults.secure_cookie);
        assert_eq!(defaults.limits, node::ConnectionLimits::default());
        for bad in [
            &["--max-connections", "0"][..],
            &["--max-connections-per-client", "0"],
            &[
                "--max-connections",
                "8",
                "--max-connections-per-client",
                "9",
            ],
            &["--body-timeout", "0s"],
            &["--allowed-host", "evil example"],
        ] {
            assert!(
                parse(bad).settings(&HttpConfig::default()).is_err(),
                "{bad:?}"
            );
        }
    }
}
