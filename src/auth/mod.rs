//! Tokens: who may react and who may watch. Off unless a key file is given; then every
//! reaction needs a JWT (`Authorization: Bearer`, or the `emostream_token` cookie for
//! browsers, never the query string), and with `--auth-subscribers` so do registrations,
//! event streams, and the listings of viewers.

pub mod args;
pub mod claims;
pub mod keys;
pub mod mint;
pub mod verify;

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use warp::http::StatusCode;
use warp::Filter;

pub use claims::Identity;
use keys::KeyFile;
use verify::{Refused, Rules, Verifier};

use crate::http_error::ApiError;
use crate::peers::ClusterSecret;
use crate::stats::Stats;

/// The cookie a browser keeps its token in (EventSource cannot set headers).
pub const COOKIE: &str = "emostream_token";

/// Why a request's token was refused, as counted in `emostream_auth_refused_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(usize)]
pub enum Reason {
    /// No token.
    Missing,
    /// Not a JWT, or an algorithm not known.
    Malformed,
    /// No key for the token's `kid`.
    UnknownKey,
    /// Signed with another key or another algorithm than its key's.
    BadSignature,
    /// Past `exp`.
    Expired,
    /// Before `nbf` or `iat`.
    NotYetValid,
    /// Claims missing or not as required (`exp`, `sub`, `aud`, `iss`).
    Claims,
    /// A reaction of another user than the token's.
    UserMismatch,
    /// A stream the token does not cover.
    StreamForbidden,
}

impl Reason {
    /// Every reason, in discriminant order.
    pub const ALL: [Reason; 9] = [
        Reason::Missing,
        Reason::Malformed,
        Reason::UnknownKey,
        Reason::BadSignature,
        Reason::Expired,
        Reason::NotYetValid,
        Reason::Claims,
        Reason::UserMismatch,
        Reason::StreamForbidden,
    ];

    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            Reason::Missing => "missing",
            Reason::Malformed => "malformed",
            Reason::UnknownKey => "unknown_key",
            Reason::BadSignature => "bad_signature",
            Reason::Expired => "expired",
            Reason::NotYetValid => "not_yet_valid",
            Reason::Claims => "claims",
            Reason::UserMismatch => "user_mismatch",
            Reason::StreamForbidden => "stream_forbidden",
        }
    }
}

/// The token settings of `emostream run`.
#[derive(Debug, Clone)]
pub struct AuthConfig {
    /// The keys.
    pub keys: KeyFile,
    /// How tokens are checked.
    pub rules: Rules,
    /// Whether watching needs a token too.
    pub subscribers: bool,
}

/// What a request presented: its `Authorization` header and its token cookie.
#[derive(Debug, Clone, Default)]
pub struct Presented {
    /// The `Authorization` header.
    pub authorization: Option<String>,
    /// The `emostream_token` cookie.
    pub cookie: Option<String>,
}

impl Presented {
    /// From the raw header values (`Cookie` whole).
    pub fn from_headers(authorization: Option<&str>, cookie_header: Option<&str>) -> Presented {
        Presented {
            authorization: authorization.map(str::to_owned),
            cookie: cookie_header.and_then(token_cookie).map(str::to_owned),
        }
    }

    /// The token: a `Bearer` header's, else the cookie's. Another scheme (a proxy's Basic
    /// credentials, say) is not a token, so the cookie still counts beside it.
    fn token(&self) -> Result<&str, (Reason, &'static str)> {
        let bearer = self
            .authorization
            .as_deref()
            .map(|value| match value.split_once(' ') {
                Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => {
                    Some(token.trim())
                }
                _ => None,
            });
        match (bearer, self.cookie.as_deref()) {
            (Some(Some(token)), _) => Ok(token),
            (_, Some(cookie)) => Ok(cookie),
            (Some(None), None) => Err((
                Reason::Malformed,
                "the Authorization header must be `Bearer <token>`",
            )),
            (None, None) => Err((
                Reason::Missing,
                "a token is required: send Authorization: Bearer <token> or the emostream_token cookie",
            )),
        }
    }
}

/// The value of the `emostream_token` cookie in a `Cookie` header.
fn token_cookie(header: &str) -> Option<&str> {
    header.split(';').find_map(|pair| {
        let (name, value) = pair.trim().split_once('=')?;
        (name == COOKIE).then(|| value.trim_matches('"'))
    })
}

/// A header as text; one that is not (a browser's raw UTF-8 cookie of another app on the same
/// host) is taken as absent, so it cannot break a request that needs no token.
fn lenient(
    name: &'static str,
) -> impl Filter<Extract = (Option<String>,), Error = std::convert::Infallible> + Clone {
    warp::header::optional::<String>(name)
        .or(warp::any().map(|| None))
        .unify()
}

/// The `Authorization` header and the token cookie of a request.
pub fn presented() -> impl Filter<Extract = (Presented,), Error = std::convert::Infallible> + Clone
{
    lenient("authorization").and(lenient("cookie")).map(
        |authorization: Option<String>, cookie: Option<String>| {
            Presented::from_headers(authorization.as_deref(), cookie.as_deref())
        },
    )
}

/// Checks tokens, counts refusals.
pub struct Auth {
    verifier: Verifier,
    subscribers: bool,
    cluster_secret: Option<ClusterSecret>,
    stats: Arc<Stats>,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth")
            .field("verifier", &self.verifier)
            .field("subscribers", &self.subscribers)
            .finish()
    }
}

impl Auth {
    /// Loads the keys: a key file that cannot be used stops the start, with what to fix.
    pub fn new(
        config: &AuthConfig,
        cluster_secret: Option<ClusterSecret>,
        stats: Arc<Stats>,
    ) -> Result<Auth, keys::KeyError> {
        Ok(Auth {
            verifier: Verifier::new(config.keys.clone(), config.rules.clone())?,
            subscribers: config.subscribers,
            cluster_secret,
            stats,
        })
    }

    /// Whether watching needs a token.
    pub fn guards_subscribers(&self) -> bool {
        self.subscribers
    }

    /// The verifier (to reload its keys).
    pub fn verifier(&self) -> &Verifier {
        &self.verifier
    }

    /// When a stream opened with `identity` ends: when its token stops being accepted (its
    /// expiry and the leeway), so a reconnect with the same token is refused rather than given
    /// a stream that ends at once.
    pub fn deadline(&self, identity: &Identity) -> Instant {
        let left = identity
            .expires_at
            .saturating_add(self.verifier.leeway_secs())
            .saturating_sub(now_secs());
        // A second more, so a client never sees its stream end before its token has.
        Instant::now() + Duration::from_secs(left.saturating_add(1).min(LONGEST_STREAM_SECS))
    }

    /// The identity the request's token proves.
    pub fn identify(&self, presented: &Presented) -> Result<Arc<Identity>, ApiError> {
        let token = presented
            .token()
            .map_err(|(reason, message)| self.unauthorized(reason, message.to_owned()))?;
        self.verifier
            .verify(token, now_secs())
            .map_err(|Refused { reason, message }| self.unauthorized(reason, message))
    }

    /// A 401, counted.
    pub fn unauthorized(&self, reason: Reason, message: String) -> ApiError {
        self.count(reason);
        let mut error = ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message);
        error.www_authenticate = true;
        error
    }

    /// A 403, counted.
    pub fn forbidden(&self, reason: Reason, message: String) -> ApiError {
        self.count(reason);
        ApiError::new(StatusCode::FORBIDDEN, reason.label(), message)
    }

    fn count(&self, reason: Reason) {
        self.stats.auth_refused[reason as usize].inc();
    }

    /// Whether a watcher may go on: `Ok(None)` when no token is needed (subscribers are
    /// open, or the request comes from another process of the cluster, which checked it),
    /// the identity when `stream` is one its token may watch (any stream when `None`).
    pub fn watcher(
        &self,
        presented: &Presented,
        stream: Option<&str>,
    ) -> Result<Option<Arc<Identity>>, ApiError> {
        self.check_watcher(presented, stream)
            .map_err(|refusal| match refusal {
                WatcherRefused::Token(Refused { reason, message }) => {
                    self.unauthorized(reason, message)
                }
                WatcherRefused::Stream(message) => self.forbidden(Reason::StreamForbidden, message),
            })
    }

    /// [`Auth::watcher`], uncounted: for a first look whose refusals are answered (and
    /// counted) by the routes.
    pub fn check_watcher(
        &self,
        presented: &Presented,
        stream: Option<&str>,
    ) -> Result<Option<Arc<Identity>>, WatcherRefused> {
        if !self.subscribers {
            return Ok(None);
        }
        if self
            .cluster_secret
            .as_ref()
            .is_some_and(|s| s.admits(presented.authorization.as_deref()))
        {
            return Ok(None);
        }
        let token = presented.token().map_err(|(reason, message)| {
            WatcherRefused::Token(Refused {
                reason,
                message: message.to_owned(),
            })
        })?;
        let identity = self
            .verifier
            .verify(token, now_secs())
            .map_err(WatcherRefused::Token)?;
        if let Some(stream) = stream {
            if !identity.may_subscribe(stream) {
                return Err(WatcherRefused::Stream(format!(
                    "the token of {:?} does not let it watch stream {stream:?} (emostream.subscribe)",
                    identity.user
                )));
            }
        }
        Ok(Some(identity))
    }
}

/// Why a watcher may not go on.
#[derive(Debug)]
pub enum WatcherRefused {
    /// No valid token (401).
    Token(Refused),
    /// A stream the token does not cover (403).
    Stream(String),
}

/// Seconds since the Unix epoch.
pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The longest an event stream may be open on one token: a bound, so an `exp` far in the
/// future cannot overflow the clock.
const LONGEST_STREAM_SECS: u64 = 10 * 365 * 24 * 3600;

/// Reloads the key file on every SIGHUP, for key rotation without a restart.
pub fn reload_on_hangup(auth: Arc<Auth>) -> std::io::Result<tokio::task::JoinHandle<()>> {
    let mut hangups = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
    Ok(tokio::spawn(async move {
        while hangups.recv().await.is_some() {
            let file = auth.verifier.file().path().display().to_string();
            match auth.verifier.reload() {
                Ok(n) => tracing::info!(file, keys = n, "SIGHUP: token keys reloaded"),
                Err(e) => {
                    tracing::error!("SIGHUP: token keys not reloaded, the old ones stay: {e}")
                }
            }
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_comes_from_the_header_else_the_cookie() {
        let p = Presented::from_headers(Some("Bearer abc"), Some("a=1; emostream_token=def"));
        assert_eq!(p.token(), Ok("abc"));
        let p = Presented::from_headers(None, Some("a=1; emostream_token=def; b=2"));
        assert_eq!(p.token(), Ok("def"));
        let p = Presented::from_headers(Some("bearer  xyz"), None);
        assert_eq!(p.token(), Ok("xyz"));
        let p = Presented::from_headers(Some("Basic dTpw"), Some("emostream_token=def"));
        assert_eq!(
            p.token(),
            Ok("def"),
            "a proxy's Basic credentials are not a token"
        );
        let p = Presented::from_headers(Some("Basic dTpw"), None);
        assert_eq!(p.token().map_err(|e| e.0), Err(Reason::Malformed));
        let p = Presented::from_headers(None, Some("other=1"));
        assert_eq!(p.token().map_err(|e| e.0), Err(Reason::Missing));
    }
}
