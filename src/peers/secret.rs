//! The secret the processes of a deployment share: the endpoints they use among themselves
//! (heartbeats) answer only callers that present it, so nobody on the public port can forge
//! what a follower reports.

use std::path::Path;
use std::sync::Arc;

use crate::cli::ConfigError;

/// Shorter secrets are refused at start: they could be guessed.
const MIN_LEN: usize = 16;

/// The shared secret, read once at start.
#[derive(Clone)]
pub struct ClusterSecret(Arc<str>);

impl std::fmt::Debug for ClusterSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClusterSecret(..)")
    }
}

impl ClusterSecret {
    /// The secret in `path`, without surrounding whitespace (a trailing newline is usual).
    pub fn read(path: &Path) -> Result<ClusterSecret, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigError(format!(
                "cannot read --cluster-secret-file {}: {e}",
                path.display()
            ))
        })?;
        ClusterSecret::new(text.trim())
            .map_err(|why| ConfigError(format!("--cluster-secret-file {}: {why}", path.display())))
    }

    /// `secret` itself, if long enough and printable.
    pub fn new(secret: &str) -> Result<ClusterSecret, String> {
        if secret.len() < MIN_LEN {
            return Err(format!(
                "the secret has {} bytes; use at least {MIN_LEN} (e.g. `head -c 32 /dev/urandom | base64 > FILE`)",
                secret.len()
            ));
        }
        if !secret.bytes().all(|b| b.is_ascii_graphic()) {
            return Err("the secret must be printable ASCII without spaces (e.g. base64)".into());
        }
        Ok(ClusterSecret(secret.into()))
    }

    /// The `Authorization` header value that carries it.
    pub fn header(&self) -> String {
        format!("Bearer {}", self.0)
    }

    /// Whether `authorization` (the header's value) carries it; compared in constant time.
    pub fn admits(&self, authorization: Option<&str>) -> bool {
        let Some(given) = authorization.and_then(|v| v.strip_prefix("Bearer ")) else {
            return false;
        };
        constant_time_eq::constant_time_eq(given.as_bytes(), self.0.as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_secret_itself_is_admitted() {
        let secret = ClusterSecret::new("0123456789abcdef").unwrap();
        assert!(secret.admits(Some(&secret.header())));
        for other in [
            None,
            Some(""),
            Some("0123456789abcdef"),
            Some("Bearer 0123456789abcdeX"),
            Some("Bearer 0123456789abcdef0"),
            Some("Basic 0123456789abcdef"),
        ] {
            assert!(!secret.admits(other), "{other:?}");
        }
    }

    #[test]
    fn short_or_unprintable_secrets_are_refused() {
        assert!(ClusterSecret::new("short").is_err());
        assert!(ClusterSecret::new("0123456789 abcdef").is_err());
    }

    #[test]
    fn the_file_is_read_without_its_newline() {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        std::io::Write::write_all(&mut file, b"0123456789abcdef\n").unwrap();
        let secret = ClusterSecret::read(file.path()).unwrap();
        assert!(secret.admits(Some("Bearer 0123456789abcdef")));
        let missing = ClusterSecret::read(Path::new("/nonexistent/secret")).unwrap_err();
        assert!(
            missing.0.contains("cannot read --cluster-secret-file"),
            "{missing}"
        );
    }
}
