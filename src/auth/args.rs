//! The token flags of `emostream run`.

use std::path::PathBuf;

use clap::Args;

use super::keys::KeyFile;
use super::verify::Rules;
use super::AuthConfig;
use crate::cli::ConfigError;

/// Tokens (JWT): off unless a key file is given.
#[derive(Debug, Clone, Args)]
pub struct AuthArgs {
    /// Require a JWT signed with HS256 by the secret in FILE (at least 32 bytes; one trailing
    /// newline is ignored) for every reaction. Reloaded on SIGHUP.
    #[arg(
        long,
        value_name = "FILE",
        env = "EMOSTREAM_AUTH_HS256_SECRET_FILE",
        conflicts_with = "auth_jwks_file"
    )]
    pub auth_hs256_secret_file: Option<PathBuf>,
    /// Require a JWT signed by one of the keys of the JWK set in FILE (RS256, ES256, EdDSA;
    /// several keys are told apart by `kid`) for every reaction. Reloaded on SIGHUP.
    #[arg(long, value_name = "FILE", env = "EMOSTREAM_AUTH_JWKS_FILE")]
    pub auth_jwks_file: Option<PathBuf>,
    /// The `aud` a token must name.
    #[arg(long, env = "EMOSTREAM_AUTH_AUDIENCE")]
    pub auth_audience: Option<String>,
    /// The `iss` a token must carry.
    #[arg(long, env = "EMOSTREAM_AUTH_ISSUER")]
    pub auth_issuer: Option<String>,
    /// Seconds of clock difference allowed on `exp`, `nbf` and `iat`.
    #[arg(long, default_value_t = 10, env = "EMOSTREAM_AUTH_LEEWAY_SECS",
          value_parser = clap::value_parser!(u64).range(0..=300))]
    pub auth_leeway_secs: u64,
    /// Also require a token whose `emostream.subscribe` matches the stream for registrations
    /// and event streams, and any valid token for `GET /clusters` and `GET /streams`.
    #[arg(long, env = "EMOSTREAM_AUTH_SUBSCRIBERS")]
    pub auth_subscribers: bool,
}

impl AuthArgs {
    /// The token settings, if tokens are on.
    pub fn config(&self) -> Result<Option<AuthConfig>, ConfigError> {
        let keys = match (&self.auth_hs256_secret_file, &self.auth_jwks_file) {
            (Some(path), _) => KeyFile::Hs256Secret(path.clone()),
            (None, Some(path)) => KeyFile::Jwks(path.clone()),
            (None, None) => {
                if self.auth_subscribers
                    || self.auth_audience.is_some()
                    || self.auth_issuer.is_some()
                {
                    return Err(ConfigError(
                        "--auth-subscribers, --auth-audience and --auth-issuer need the keys: give --auth-hs256-secret-file or --auth-jwks-file".into(),
                    ));
                }
                return Ok(None);
            }
        };
        // Checked now, so a bad key file stops the start before anything else does.
        let flag = match keys {
            KeyFile::Hs256Secret(_) => "--auth-hs256-secret-file",
            KeyFile::Jwks(_) => "--auth-jwks-file",
        };
        super::keys::Keys::load(&keys).map_err(|e| ConfigError(format!("{flag} {e}")))?;
        Ok(Some(AuthConfig {
            keys,
            rules: Rules {
                leeway_secs: self.auth_leeway_secs,
                audience: self.auth_audience.clone(),
                issuer: self.auth_issuer.clone(),
            },
            subscribers: self.auth_subscribers,
        }))
    }
}
