//! Checking a token: the key its `kid` names, that key's algorithm only, `exp` required,
//! `nbf` and `iat` with a small leeway, audience and issuer when configured. A token that
//! passed is remembered until it expires, so a client sending the same token with every
//! reaction pays for one signature check, not one per request.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::Validation;

use super::claims::{Claims, Identity};
use super::keys::{KeyError, KeyFile, Keys};
use super::Reason;

/// Tokens remembered at most; past this the expired ones go, then all.
pub const MAX_REMEMBERED: usize = 65_536;

/// The longest token checked: a JWT of a user and a few stream patterns is a few hundred bytes.
pub const MAX_TOKEN_BYTES: usize = 8192;

/// How tokens are checked.
#[derive(Debug, Clone)]
pub struct Rules {
    /// Seconds of clock difference allowed on `exp`, `nbf` and `iat`.
    pub leeway_secs: u64,
    /// The `aud` a token must name, if any.
    pub audience: Option<String>,
    /// The `iss` a token must carry, if any.
    pub issuer: Option<String>,
}

/// Why a token was refused: the reason counted, and a message for the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    /// What is counted.
    pub reason: Reason,
    /// What to fix.
    pub message: String,
}

impl Refused {
    fn new(reason: Reason, message: impl Into<String>) -> Refused {
        Refused {
            reason,
            message: message.into(),
        }
    }
}

/// Checks tokens against keys that can be reloaded while it runs.
pub struct Verifier {
    file: KeyFile,
    rules: Rules,
    keys: RwLock<Arc<KeySet>>,
}

/// The keys of one load, and the tokens verified with them: a reload replaces both at once,
/// so a check that began before it cannot remember its token in the new set.
struct KeySet {
    keys: Keys,
    remembered: Mutex<HashMap<Box<str>, Arc<Identity>>>,
}

impl KeySet {
    fn new(keys: Keys) -> Arc<KeySet> {
        Arc::new(KeySet {
            keys,
            remembered: Mutex::new(HashMap::new()),
        })
    }

    fn remembered(&self) -> std::sync::MutexGuard<'_, HashMap<Box<str>, Arc<Identity>>> {
        self.remembered.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("file", &self.file)
            .finish()
    }
}

impl Verifier {
    /// Loads the keys of `file`.
    pub fn new(file: KeyFile, rules: Rules) -> Result<Verifier, KeyError> {
        let keys = Keys::load(&file)?;
        Ok(Verifier {
            file,
            rules,
            keys: RwLock::new(KeySet::new(keys)),
        })
    }

    /// Reads the key file again: on success its keys replace the old ones and tokens checked
    /// with those are forgotten; on failure the old keys stay. Says how many keys there are.
    pub fn reload(&self) -> Result<usize, KeyError> {
        let keys = Keys::load(&self.file)?;
        let n = keys.len();
        *self.keys.write().unwrap_or_else(|e| e.into_inner()) = KeySet::new(keys);
        Ok(n)
    }

    /// The key file.
    pub fn file(&self) -> &KeyFile {
        &self.file
    }

    /// The identity `token` proves, at `now` (seconds since the Unix epoch).
    pub fn verify(&self, token: &str, now: u64) -> Result<Arc<Identity>, Refused> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(Refused::new(
                Reason::Malformed,
                format!("the token is longer than {MAX_TOKEN_BYTES} bytes"),
            ));
        }
        let set = Arc::clone(&self.keys.read().unwrap_or_else(|e| e.into_inner()));
        let hit = set.remembered().get(token).cloned();
        if let Some(identity) = hit {
            if identity.expires_at.saturating_add(self.rules.leeway_secs) < now {
                return Err(Refused::new(Reason::Expired, "the token has expired"));
            }
            return Ok(identity);
        }
        let identity = Arc::new(self.check(&set.keys, token, now)?);
        let mut remembered = set.remembered();
        if remembered.len() >= MAX_REMEMBERED {
            let leeway = self.rules.leeway_secs;
            remembered.retain(|_, id| id.expires_at.saturating_add(leeway) >= now);
            if remembered.len() >= MAX_REMEMBERED {
                remembered.clear();
            }
        }
        remembered.insert(token.into(), Arc::clone(&identity));
        Ok(identity)
    }

    /// Seconds of clock difference allowed.
    pub fn leeway_secs(&self) -> u64 {
        self.rules.leeway_secs
    }

    fn check(&self, keys: &Keys, token: &str, now: u64) -> Result<Identity, Refused> {
        let header = jsonwebtoken::decode_header(token).map_err(|e| {
            Refused::new(
                Reason::Malformed,
                format!("the token is not a signed JWT: {}", describe(e.kind())),
            )
        })?;
        let key = keys
            .for_kid(header.kid.as_deref())
            .map_err(|e| Refused::new(Reason::UnknownKey, e.to_string()))?;
        if header.alg != key.algorithm {
            return Err(Refused::new(
                Reason::BadSignature,
                format!(
                    "the token is signed with {:?}, its key takes {:?} only",
                    header.alg, key.algorithm
                ),
            ));
        }
        let mut validation = Validation::new(key.algorithm);
        validation.leeway = self.rules.leeway_secs;
        validation.validate_nbf = true;
        // jsonwebtoken checks `aud` and `iss` only when present: required when configured, a
        // token without them would pass.
        let mut required = vec!["exp", "sub"];
        if self.rules.audience.is_some() {
            required.push("aud");
        }
        if self.rules.issuer.is_some() {
            required.push("iss");
        }
        validation.set_required_spec_claims(&required);
        match &self.rules.audience {
            Some(aud) => validation.set_audience(&[aud]),
            None => validation.validate_aud = false,
        }
        if let Some(iss) = &self.rules.issuer {
            validation.set_issuer(&[iss]);
        }
        let claims = jsonwebtoken::decode::<Claims>(token, &key.key, &validation)
            .map_err(|e| refusal(e.kind()))?
            .claims;
        if claims
            .iat
            .is_some_and(|iat| iat > now.saturating_add(self.rules.leeway_secs))
        {
            return Err(Refused::new(
                Reason::NotYetValid,
                "the token was issued in the future (iat); check the issuer's clock",
            ));
        }
        if let Err(e) = dataflows::check_user_id(&claims.sub) {
            return Err(Refused::new(
                Reason::Claims,
                format!("the token's sub {}: it is the user id", e.message),
            ));
        }
        Ok(Identity::new(claims))
    }
}

fn refusal(kind: &ErrorKind) -> Refused {
    let reason = match kind {
        ErrorKind::ExpiredSignature => Reason::Expired,
        ErrorKind::ImmatureSignature => Reason::NotYetValid,
        ErrorKind::InvalidSignature
        | ErrorKind::InvalidAlgorithm
        | ErrorKind::InvalidEcdsaKey
        | ErrorKind::InvalidEddsaKey
        | ErrorKind::InvalidRsaKey(_) => Reason::BadSignature,
        ErrorKind::MissingRequiredClaim(_)
        | ErrorKind::InvalidClaimFormat(_)
        | ErrorKind::InvalidAudience
        | ErrorKind::InvalidIssuer
        | ErrorKind::InvalidSubject
        | ErrorKind::Json(_) => Reason::Claims,
        _ => Reason::Malformed,
    };
    Refused::new(reason, describe(kind))
}

fn describe(kind: &ErrorKind) -> String {
    match kind {
        ErrorKind::ExpiredSignature => "the token has expired".into(),
        ErrorKind::ImmatureSignature => "the token is not valid yet (nbf)".into(),
        ErrorKind::InvalidSignature => "the token's signature does not match its key".into(),
        ErrorKind::InvalidAlgorithm => "the token's alg is not its key's".into(),
        ErrorKind::MissingRequiredClaim(c) => format!("the token lacks the {c} claim"),
        ErrorKind::InvalidClaimFormat(c) => format!("the token's {c} claim is malformed"),
        ErrorKind::InvalidAudience => "the token is not for this audience (aud)".into(),
        ErrorKind::InvalidIssuer => "the token is not from the expected issuer (iss)".into(),
        ErrorKind::Json(e) => format!("the token's claims are not as expected: {e}"),
        ErrorKind::InvalidAlgorithmName => "the token's alg is not a known algorithm".into(),
        other => format!("{other:?}"),
    }
}
