//! The keys tokens are checked against: an HS256 secret, or a JWK set (RS256, ES256, EdDSA,
//! several keys told apart by `kid`). Each key accepts only its own algorithm, so a token
//! cannot choose how it is checked (no `alg: none`, no HMAC keyed with a public key).

use std::path::{Path, PathBuf};

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, JwkSet, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey};

/// The shortest HS256 secret accepted: the hash's own size (RFC 7518, section 3.2).
pub const MIN_SECRET_BYTES: usize = 32;

/// Where the keys come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyFile {
    /// A shared secret for HS256: the file's bytes, less one trailing newline.
    Hs256Secret(PathBuf),
    /// A JWK set (`{"keys": [...]}`) of public keys.
    Jwks(PathBuf),
}

impl KeyFile {
    /// The file's path.
    pub fn path(&self) -> &Path {
        match self {
            KeyFile::Hs256Secret(p) | KeyFile::Jwks(p) => p,
        }
    }
}

/// One key and the one algorithm it checks.
pub struct Key {
    /// The key's `kid`, if it has one.
    pub kid: Option<String>,
    /// The algorithm its tokens must name.
    pub algorithm: Algorithm,
    /// The key.
    pub key: DecodingKey,
}

/// The keys loaded from a [`KeyFile`].
pub struct Keys {
    keys: Vec<Key>,
}

/// Why no key fits a token.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum NoKey {
    /// The token's `kid` names no key.
    #[error("no key has the token's kid {0:?}")]
    UnknownKid(String),
    /// The set holds several keys and the token says not which.
    #[error("the token has no kid and there are {0} keys to choose from")]
    NoKid(usize),
}

/// A key file that cannot be used: the message says what to fix.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {problem}")]
pub struct KeyError {
    path: String,
    problem: String,
}

impl Keys {
    /// Reads and checks `file`.
    pub fn load(file: &KeyFile) -> Result<Keys, KeyError> {
        let fail = |problem: String| KeyError {
            path: file.path().display().to_string(),
            problem,
        };
        let bytes = std::fs::read(file.path()).map_err(|e| fail(format!("cannot read: {e}")))?;
        match file {
            KeyFile::Hs256Secret(_) => {
                let secret = secret_bytes(&bytes);
                if secret.len() < MIN_SECRET_BYTES {
                    return Err(fail(format!(
                        "an HS256 secret needs at least {MIN_SECRET_BYTES} bytes, this one has {}; make one with `head -c 32 /dev/urandom | base64 > FILE`",
                        secret.len()
                    )));
                }
                let key = DecodingKey::from_secret(secret)
                    .map_err(|e| fail(format!("not a usable secret: {e}")))?;
                Ok(Keys {
                    keys: vec![Key {
                        kid: None,
                        algorithm: Algorithm::HS256,
                        key,
                    }],
                })
            }
            KeyFile::Jwks(_) => {
                let set: JwkSet = serde_json::from_slice(&bytes)
                    .map_err(|e| fail(format!("not a JWK set ({{\"keys\": [...]}}): {e}")))?;
                let mut keys = Vec::new();
                for (i, jwk) in set.keys.iter().enumerate() {
                    let name = match &jwk.common.key_id {
                        Some(kid) => format!("key {kid:?}"),
                        None => format!("keys[{i}]"),
                    };
                    if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)) {
                        continue;
                    }
                    let algorithm = algorithm_of(jwk).map_err(|e| fail(format!("{name}: {e}")))?;
                    let key = DecodingKey::from_jwk(jwk)
                        .map_err(|e| fail(format!("{name}: not a usable key: {e}")))?;
                    keys.push(Key {
                        kid: jwk.common.key_id.clone(),
                        algorithm,
                        key,
                    });
                }
                if keys.is_empty() {
                    return Err(fail("the set holds no signing key".into()));
                }
                let with_kid = keys.iter().filter(|k| k.kid.is_some()).count();
                if keys.len() > 1 && with_kid < keys.len() {
                    return Err(fail(
                        "with several keys every key needs a kid, which tokens name".into(),
                    ));
                }
                Ok(Keys { keys })
            }
        }
    }

    /// The key a token with header `kid` is checked against.
    pub fn for_kid(&self, kid: Option<&str>) -> Result<&Key, NoKey> {
        match kid {
            Some(kid) => self
                .keys
                .iter()
                .find(|k| k.kid.as_deref() == Some(kid))
                // One key without a kid checks every token, whatever kid it names.
                .or_else(|| match self.keys.as_slice() {
                    [only] if only.kid.is_none() => Some(only),
                    _ => None,
                })
                .ok_or_else(|| NoKey::UnknownKid(kid.to_owned())),
            None => match self.keys.as_slice() {
                [only] => Ok(only),
                keys => Err(NoKey::NoKid(keys.len())),
            },
        }
    }

    /// How many keys there are.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether there are none (never, once loaded).
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

/// The signing key of an HS256 secret file, for `emostream token`.
pub fn encoding_secret(path: &Path) -> Result<EncodingKey, KeyError> {
    // Loaded as the server loads it, so a short secret is refused here too.
    Keys::load(&KeyFile::Hs256Secret(path.to_owned()))?;
    let bytes = std::fs::read(path).map_err(|e| KeyError {
        path: path.display().to_string(),
        problem: format!("cannot read: {e}"),
    })?;
    EncodingKey::from_secret(secret_bytes(&bytes)).map_err(|e| KeyError {
        path: path.display().to_string(),
        problem: format!("not a usable secret: {e}"),
    })
}

/// A secret file's bytes: a trailing newline is the editor's, not the secret's.
fn secret_bytes(bytes: &[u8]) -> &[u8] {
    let bytes = bytes.strip_suffix(b"\n").unwrap_or(bytes);
    bytes.strip_suffix(b"\r").unwrap_or(bytes)
}

fn algorithm_of(jwk: &jsonwebtoken::jwk::Jwk) -> Result<Algorithm, String> {
    let by_type = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => Algorithm::RS256,
        AlgorithmParameters::EllipticCurve(ec) => match ec.curve {
            EllipticCurve::P256 => Algorithm::ES256,
            EllipticCurve::P384 => Algorithm::ES384,
            ref other => return Err(format!("curve {other:?} is not supported (P-256, P-384)")),
        },
        AlgorithmParameters::OctetKeyPair(okp) => match okp.curve {
            EllipticCurve::Ed25519 => Algorithm::EdDSA,
            ref other => return Err(format!("curve {other:?} is not supported (Ed25519)")),
        },
        AlgorithmParameters::OctetKey(_) => {
            return Err(
                "a symmetric (oct) key belongs in --auth-hs256-secret-file, not in a JWK set"
                    .into(),
            )
        }
        _ => return Err("unsupported key type (RSA, EC or OKP)".into()),
    };
    let Some(named) = &jwk.common.key_algorithm else {
        return Ok(by_type);
    };
    let named = match named {
        KeyAlgorithm::RS256 => Algorithm::RS256,
        KeyAlgorithm::RS384 => Algorithm::RS384,
        KeyAlgorithm::RS512 => Algorithm::RS512,
        KeyAlgorithm::PS256 => Algorithm::PS256,
        KeyAlgorithm::PS384 => Algorithm::PS384,
        KeyAlgorithm::PS512 => Algorithm::PS512,
        KeyAlgorithm::ES256 => Algorithm::ES256,
        KeyAlgorithm::ES384 => Algorithm::ES384,
        KeyAlgorithm::EdDSA => Algorithm::EdDSA,
        other => return Err(format!("alg {other:?} is not a signing algorithm")),
    };
    if named.family() != by_type.family() {
        return Err(format!("alg {named:?} does not fit the key's type"));
    }
    Ok(named)
}
