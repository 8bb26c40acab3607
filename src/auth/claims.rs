//! What a verified token says: who the user is, until when, and which streams it may publish
//! to and watch (`"emostream": {"publish": [...], "subscribe": [...]}`, globs with `*`).

use serde::{Deserialize, Serialize};
use wildmatch::WildMatch;

/// The claims emostream reads; others are ignored.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    /// The user.
    pub sub: String,
    /// Expiry, seconds since the Unix epoch (required).
    pub exp: u64,
    /// Not before, seconds since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
    /// Issued at, seconds since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<u64>,
    /// Audience, when the token names one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aud: Option<serde_json::Value>,
    /// Issuer, when the token names one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    /// Which streams the token covers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub emostream: Option<Grants>,
}

/// The `emostream` claim.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Grants {
    /// Streams the user may react on; absent means every stream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub publish: Option<Vec<String>>,
    /// Streams the user may watch; absent means none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subscribe: Option<Vec<String>>,
}

/// A verified token, its patterns compiled once.
#[derive(Debug)]
pub struct Identity {
    /// The user (`sub`).
    pub user: String,
    /// Expiry, seconds since the Unix epoch.
    pub expires_at: u64,
    publish: Option<Vec<WildMatch>>,
    subscribe: Vec<WildMatch>,
}

impl Identity {
    /// The identity of verified claims.
    pub fn new(claims: Claims) -> Identity {
        let compile = |patterns: Vec<String>| -> Vec<WildMatch> {
            patterns.iter().map(|p| WildMatch::new(p)).collect()
        };
        let grants = claims.emostream.unwrap_or_default();
        Identity {
            user: claims.sub,
            expires_at: claims.exp,
            publish: grants.publish.map(compile),
            subscribe: grants.subscribe.map(compile).unwrap_or_default(),
        }
    }

    /// Whether the token lets its user react on `stream`: a token without `publish`
    /// patterns may react on any stream.
    pub fn may_publish(&self, stream: &str) -> bool {
        match &self.publish {
            None => true,
            Some(patterns) => patterns.iter().any(|p| p.matches(stream)),
        }
    }

    /// Whether the token lets its holder watch `stream`: only a matching `subscribe` pattern
    /// does, so a token minted for reacting does not open paid streams.
    pub fn may_subscribe(&self, stream: &str) -> bool {
        self.subscribe.iter().any(|p| p.matches(stream))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity(grants: serde_json::Value) -> Identity {
        let claims: Claims =
            serde_json::from_value(serde_json::json!({"sub": "u", "exp": 1, "emostream": grants}))
                .expect("claims");
        Identity::new(claims)
    }

    #[test]
    fn globs_limit_streams() {
        let id = identity(
            serde_json::json!({"publish": ["match-*"], "subscribe": ["match-4?", "concert"]}),
        );
        assert!(id.may_publish("match-42"));
        assert!(!id.may_publish("concert"));
        assert!(id.may_subscribe("match-42"));
        assert!(!id.may_subscribe("match-420"));
        assert!(id.may_subscribe("concert"));
        assert!(!id.may_subscribe("concert-2"));
    }

    #[test]
    fn absent_publish_is_every_stream_absent_subscribe_is_none() {
        let id = identity(serde_json::json!({}));
        assert!(id.may_publish("anything"));
        assert!(!id.may_subscribe("default"));
        let id = identity(serde_json::json!({"publish": []}));
        assert!(!id.may_publish("default"));
    }
}
