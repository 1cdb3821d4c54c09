//! The `[metrics]` section of the edge configuration.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// Unix socket paths must fit `sockaddr_un.sun_path` (108 bytes on Linux, with the final NUL).
const MAX_SOCKET_PATH_BYTES: usize = 107;

/// File name of the default socket inside `$RUNTIME_DIRECTORY`.
pub const DEFAULT_SOCKET_NAME: &str = "metrics.sock";

/// `[metrics]` section of the edge config.
///
/// ```toml
/// [metrics]
/// enabled = true                      # default
/// socket = "/run/jmdc-edge/metrics.sock"  # default: $RUNTIME_DIRECTORY/metrics.sock; "" = none
/// tcp = "127.0.0.1:9464"              # optional, loopback only
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsSection {
    /// Serve metrics at all (default true).
    pub enabled: bool,
    /// Unix socket to serve on. Absent: `$RUNTIME_DIRECTORY/metrics.sock` when `RUNTIME_DIRECTORY`
    /// is set (systemd `RuntimeDirectory=`), else no socket. An empty path means no socket even
    /// under systemd. Relative paths are taken relative to the configuration file.
    pub socket: Option<PathBuf>,
    /// Optional TCP address to serve on as well; must be a loopback address (port 0 = any free
    /// port).
    pub tcp: Option<SocketAddr>,
}

impl Default for MetricsSection {
    fn default() -> Self {
        Self {
            enabled: true,
            socket: None,
            tcp: None,
        }
    }
}

impl MetricsSection {
    /// Checks values that parse but cannot be served; the message names the key.
    pub fn validate(&self) -> Result<(), String> {
        if let Some(addr) = self.tcp {
            if !addr.ip().to_canonical().is_loopback() {
                return Err(format!(
                    "metrics.tcp: {addr} is not a loopback address; metrics are served on \
                     127.0.0.0/8 or ::1 only (e.g. \"127.0.0.1:9464\")"
                ));
            }
        }
        if let Some(p) = self.socket.as_deref().filter(|p| !p.as_os_str().is_empty()) {
            let len = p.as_os_str().len();
            if len > MAX_SOCKET_PATH_BYTES {
                return Err(format!(
                    "metrics.socket: {} is {len} bytes long; a Unix socket path must be at most \
                     {MAX_SOCKET_PATH_BYTES} bytes",
                    p.display()
                ));
            }
        }
        Ok(())
    }

    /// Makes a relative `socket` path relative to `base` (the configuration file's folder).
    pub fn resolve_relative(&mut self, base: &Path) {
        if let Some(p) = self.socket.as_mut() {
            if !p.as_os_str().is_empty() {
                jmdc_service::settings::resolve_relative(p, base);
            }
        }
    }

    /// The socket to serve on, with the `RUNTIME_DIRECTORY` default applied (`None`: no socket).
    pub fn socket_path(&self) -> Option<PathBuf> {
        let runtime_dir = std::env::var_os("RUNTIME_DIRECTORY");
        self.socket_path_in(runtime_dir.as_deref().map(Path::new))
    }

    /// [`socket_path`](Self::socket_path) for a given `RUNTIME_DIRECTORY` value (systemd lists
    /// several directories separated by `:`; the first is used).
    pub fn socket_path_in(&self, runtime_directory: Option<&Path>) -> Option<PathBuf> {
        match &self.socket {
            Some(p) if p.as_os_str().is_empty() => None,
            Some(p) => Some(p.clone()),
            None => runtime_directory
                .and_then(|dirs| std::env::split_paths(dirs).find(|d| !d.as_os_str().is_empty()))
                .map(|dir| dir.join(DEFAULT_SOCKET_NAME)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_tcp(addr: &str) -> MetricsSection {
        MetricsSection {
            tcp: Some(addr.parse().expect("address")),
            ..MetricsSection::default()
        }
    }

    #[test]
    fn only_loopback_tcp_is_accepted() {
        for ok in [
            "127.0.0.1:9464",
            "127.0.0.2:0",
            "[::1]:9464",
            "[::ffff:127.0.0.1]:1",
        ] {
            assert_eq!(with_tcp(ok).validate(), Ok(()), "{ok}");
        }
        for bad in [
            "0.0.0.0:9464",
            "192.168.1.20:9464",
            "[::]:9464",
            "[fe80::1]:9464",
        ] {
            let err = with_tcp(bad).validate().expect_err(bad);
            assert!(err.starts_with("metrics.tcp:"), "{err}");
            assert!(err.contains("not a loopback"), "{err}");
        }
    }

    #[test]
    fn overlong_socket_path_is_rejected() {
        let s = MetricsSection {
            socket: Some(PathBuf::from(format!("/run/{}/m.sock", "x".repeat(120)))),
            ..MetricsSection::default()
        };
        let err = s.validate().expect_err("too long");
        assert!(err.starts_with("metrics.socket:"), "{err}");
    }

    #[test]
    fn socket_defaults_to_the_runtime_directory() {
        let none = MetricsSection::default();
        assert_eq!(none.socket_path_in(None), None);
        assert_eq!(
            none.socket_path_in(Some(Path::new("/run/jmdc-edge"))),
            Some(PathBuf::from("/run/jmdc-edge/metrics.sock"))
        );
        assert_eq!(
            none.socket_path_in(Some(Path::new("/run/a:/run/b"))),
            Some(PathBuf::from("/run/a/metrics.sock"))
        );
        let explicit = MetricsSection {
            socket: Some(PathBuf::from("/tmp/m.sock")),
            ..MetricsSection::default()
        };
        assert_eq!(
            explicit.socket_path_in(Some(Path::new("/run/x"))),
            Some(PathBuf::from("/tmp/m.sock"))
        );
        let off = MetricsSection {
            socket: Some(PathBuf::new()),
            ..MetricsSection::default()
        };
        assert_eq!(off.socket_path_in(Some(Path::new("/run/x"))), None);
    }

    #[test]
    fn relative_socket_is_resolved_against_the_config_folder() {
        let mut s = MetricsSection {
            socket: Some(PathBuf::from("run/m.sock")),
            ..MetricsSection::default()
        };
        s.resolve_relative(Path::new("/etc/jmdc"));
        assert_eq!(s.socket, Some(PathBuf::from("/etc/jmdc/run/m.sock")));
        let mut off = MetricsSection {
            socket: Some(PathBuf::new()),
            ..MetricsSection::default()
        };
        off.resolve_relative(Path::new("/etc/jmdc"));
        assert_eq!(off.socket, Some(PathBuf::new()));
    }

    #[test]
    fn toml_section_parses_and_rejects_unknown_keys() {
        let s: MetricsSection =
            toml::from_str("tcp = \"127.0.0.1:9464\"\n").expect("valid section");
        assert!(s.enabled);
        assert_eq!(s.tcp, Some("127.0.0.1:9464".parse().expect("addr")));
        let err = toml::from_str::<MetricsSection>("port = 1\n").expect_err("unknown key");
        assert!(err.to_string().contains("port"), "{err}");
    }
}
