//! API key material. A key reads `bk_<id>_<secret>`: the id (8 random bytes, hex) is
//! public, names the key in lists and logs and finds it in the store; the secret (32 random
//! bytes, hex) is shown once, when the key is made, and stored only as a SHA-256 hash,
//! compared in constant time.

use rand::RngCore;
use sha2::{Digest, Sha256};

const PREFIX: &str = "bk_";
const ID_BYTES: usize = 8;
const SECRET_BYTES: usize = 32;

/// A key just made: `key` is what the caller is given, once; `hash` is what is stored.
pub struct IssuedKey {
    pub id: String,
    pub key: String,
    pub hash: String,
}

impl std::fmt::Debug for IssuedKey {
    /// Never the key itself.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuedKey")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

/// Bytes as lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `n` bytes of the operating system's randomness (through the thread's CSPRNG), as hex:
/// the body of every secret Baton makes besides API keys (trigger tokens, callback
/// secrets, form tokens).
pub fn random_hex(n: usize) -> String {
    let mut bytes = vec![0u8; n];
    rand::rng().fill_bytes(&mut bytes);
    hex(&bytes)
}

/// The HMAC-SHA256 of `parts` (one after the other) under `key`, as hex.
pub fn hmac_hex(key: &[u8], parts: &[&[u8]]) -> String {
    use hmac::Mac;
    let mut mac = hmac::Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key");
    for p in parts {
        mac.update(p);
    }
    hex(&mac.finalize().into_bytes())
}

/// A new key from the operating system's randomness (through the thread's CSPRNG).
pub fn issue() -> IssuedKey {
    let mut rng = rand::rng();
    let mut id = [0u8; ID_BYTES];
    let mut secret = [0u8; SECRET_BYTES];
    rng.fill_bytes(&mut id);
    rng.fill_bytes(&mut secret);
    let (id, secret) = (hex(&id), hex(&secret));
    IssuedKey {
        key: format!("{PREFIX}{id}_{secret}"),
        hash: hash(&secret),
        id,
    }
}

/// `(id, secret)` of a presented key, if it has the shape of one.
pub fn parse(presented: &str) -> Option<(&str, &str)> {
    let (id, secret) = presented.strip_prefix(PREFIX)?.split_once('_')?;
    let is_hex = |s: &str, bytes: usize| {
        s.len() == bytes * 2
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    (is_hex(id, ID_BYTES) && is_hex(secret, SECRET_BYTES)).then_some((id, secret))
}

/// What is stored of a secret.
pub fn hash(secret: &str) -> String {
    let mut h = Sha256::new();
    h.update(b"baton-api-key-v1\0");
    h.update(secret.as_bytes());
    hex(&h.finalize())
}

/// Whether `secret` is the one `stored` was made from; the comparison takes the same time
/// wherever the two first differ.
pub fn verify(secret: &str, stored: &str) -> bool {
    let (a, b) = (hash(secret), stored);
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_issued_key_parses_and_verifies_and_nothing_else_does() {
        let k = issue();
        let (id, secret) = parse(&k.key).unwrap();
        assert_eq!(id, k.id);
        assert_eq!(secret.len(), 64, "32 random bytes");
        assert!(verify(secret, &k.hash));
        assert!(!k.hash.contains(secret) && !format!("{k:?}").contains(secret));
        let other = issue();
        assert_ne!(other.key, k.key);
        let (_, other_secret) = parse(&other.key).unwrap();
        assert!(!verify(other_secret, &k.hash));
        for bad in [
            "",
            "bk_",
            "bk_abc_def",
            "sk-ant-123",
            &k.key[..k.key.len() - 1],
            &k.key.to_uppercase(),
        ] {
            assert!(parse(bad).is_none(), "{bad}");
        }
    }
}
