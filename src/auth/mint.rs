//! `emostream token`: mints an HS256 token from the server's secret file, for demos, tests
//! and scripts. Production tokens come from the platform's identity service.

use std::path::PathBuf;

use clap::Args;
use jsonwebtoken::{Algorithm, Header};

use super::claims::{Claims, Grants};
use super::keys::{encoding_secret, KeyError};

/// Flags of `emostream token`.
#[derive(Debug, Clone, Args)]
pub struct TokenArgs {
    /// The HS256 secret file the server checks tokens with.
    #[arg(long, value_name = "FILE", env = "EMOSTREAM_AUTH_HS256_SECRET_FILE")]
    pub secret_file: PathBuf,
    /// The user (`sub`).
    #[arg(long)]
    pub sub: String,
    /// Streams the user may react on (globs with `*`; repeat or separate with commas).
    /// Without it, every stream.
    #[arg(long, value_delimiter = ',')]
    pub publish: Option<Vec<String>>,
    /// Streams the user may watch (globs with `*`). Without it, none.
    #[arg(long, value_delimiter = ',')]
    pub subscribe: Option<Vec<String>>,
    /// Seconds until it expires.
    #[arg(long, default_value_t = 3600,
          value_parser = clap::value_parser!(u64).range(1..=31_536_000))]
    pub ttl_secs: u64,
    /// The `aud` claim.
    #[arg(long)]
    pub audience: Option<String>,
    /// The `iss` claim.
    #[arg(long)]
    pub issuer: Option<String>,
}

/// Why no token was minted.
#[derive(Debug, thiserror::Error)]
pub enum MintError {
    /// The secret file.
    #[error("--secret-file {0}")]
    Key(#[from] KeyError),
    /// A flag.
    #[error("{0}")]
    Flag(String),
    /// The encoder.
    #[error("cannot sign the token: {0}")]
    Sign(#[from] jsonwebtoken::errors::Error),
}

/// The token.
pub fn mint(args: &TokenArgs) -> Result<String, MintError> {
    if args.sub.is_empty() {
        return Err(MintError::Flag("--sub must name a user".into()));
    }
    let key = encoding_secret(&args.secret_file)?;
    let now = super::now_secs();
    let grants = (args.publish.is_some() || args.subscribe.is_some()).then(|| Grants {
        publish: args.publish.clone(),
        subscribe: args.subscribe.clone(),
    });
    let claims = Claims {
        sub: args.sub.clone(),
        exp: now + args.ttl_secs,
        nbf: None,
        iat: Some(now),
        aud: args.audience.clone().map(serde_json::Value::String),
        iss: args.issuer.clone(),
        emostream: grants,
    };
    Ok(jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &key,
    )?)
}
