//! RBDVOL_METRICS_ADDR: where the metrics endpoint listens, if anywhere.

use std::net::SocketAddr;
use std::path::PathBuf;

use super::MetricsError;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MetricsAddr {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

impl std::fmt::Display for MetricsAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MetricsAddr::Tcp(a) => write!(f, "{a}"),
            MetricsAddr::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

const EXPECTED: &str = "use IP:PORT (127.0.0.1:9650, [::1]:9650, or :9650 for every address), or unix:/PATH or an absolute path for a unix socket";

impl MetricsAddr {
    /// `None` when empty (the endpoint is off, the default). An IP address
    /// and port, `:PORT` for every address, or a unix socket as `unix:PATH`
    /// or an absolute path. Host names are refused: a name resolved at
    /// start-up could bind an address nobody meant.
    pub fn parse(value: &str) -> Result<Option<MetricsAddr>, MetricsError> {
        let v = value.trim();
        let bad = |reason: &str| MetricsError::InvalidAddr { value: value.to_string(), reason: reason.to_string() };
        if v.is_empty() {
            return Ok(None);
        }
        if let Some(path) = v.strip_prefix("unix:").or_else(|| v.starts_with('/').then_some(v)) {
            if !path.starts_with('/') {
                return Err(bad("a unix socket's path must be absolute"));
            }
            return Ok(Some(MetricsAddr::Unix(PathBuf::from(path))));
        }
        let v = match v.strip_prefix(':') {
            Some(port) => format!("0.0.0.0:{port}"),
            None => v.to_string(),
        };
        v.parse::<SocketAddr>().map(|a| Some(MetricsAddr::Tcp(a))).map_err(|_| bad(EXPECTED))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_means_off() {
        assert_eq!(MetricsAddr::parse("").unwrap(), None);
        assert_eq!(MetricsAddr::parse("  ").unwrap(), None);
    }

    #[test]
    fn tcp_addresses_take_an_ip_and_a_port() {
        assert_eq!(MetricsAddr::parse("127.0.0.1:9650").unwrap(), Some(MetricsAddr::Tcp("127.0.0.1:9650".parse().unwrap())));
        assert_eq!(MetricsAddr::parse("[::1]:9650").unwrap(), Some(MetricsAddr::Tcp("[::1]:9650".parse().unwrap())));
        assert_eq!(MetricsAddr::parse(":9650").unwrap(), Some(MetricsAddr::Tcp("0.0.0.0:9650".parse().unwrap())));
    }

    #[test]
    fn unix_sockets_are_unix_prefixed_or_absolute_paths() {
        assert_eq!(MetricsAddr::parse("unix:/run/rbdvol/metrics.sock").unwrap(), Some(MetricsAddr::Unix("/run/rbdvol/metrics.sock".into())));
        assert_eq!(MetricsAddr::parse("/run/m.sock").unwrap(), Some(MetricsAddr::Unix("/run/m.sock".into())));
        assert_eq!(MetricsAddr::parse("unix:/run/m.sock").unwrap().unwrap().to_string(), "unix:/run/m.sock");
    }

    #[test]
    fn bad_addresses_say_what_is_expected() {
        for v in ["localhost:9650", "127.0.0.1", "9650", "127.0.0.1:http", "1.2.3.4:70000", "unix:", "unix:relative.sock"] {
            let e = MetricsAddr::parse(v).unwrap_err().to_string();
            assert!(e.starts_with(&format!("invalid RBDVOL_METRICS_ADDR '{v}': ")), "{e}");
        }
        assert_eq!(
            MetricsAddr::parse("localhost:9650").unwrap_err().to_string(),
            format!("invalid RBDVOL_METRICS_ADDR 'localhost:9650': {EXPECTED}")
        );
    }
}
