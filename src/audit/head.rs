//! Tree heads and their Ed25519 signatures.
//!
//! A [`TreeHead`] names a state of the log: how many records (`size`), the
//! root of their Merkle tree (`root`) and when it was taken (`time`, RFC
//! 3339 text as the store prints it). A [`SignedHead`] adds an Ed25519
//! signature by the holder of a key and that key's public half.
//!
//! What a signature covers ([`TreeHead::signed_bytes`]): a fixed, versioned
//! text prefix, the size (u64 little-endian), the root (32 bytes), the
//! length of the time text (u32 little-endian) and the text itself. The time
//! is signed as text, so a verifier needs no date parser to rebuild these
//! bytes; a second implementation (`python/enforcelog/verify.py`) rebuilds
//! them and checks the signature without this code.
//!
//! Invariants: parsing never panics; a head whose fields do not parse, or a
//! signature that does not check over exactly these bytes, is refused; keys
//! and signatures are compared only through `ed25519-dalek`'s strict
//! verification (which refuses non-canonical and small-order encodings).

pub use ed25519_dalek::SigningKey;
use ed25519_dalek::{Signature, Signer, VerifyingKey};
use serde::{Deserialize, Serialize};

use super::merkle::Hash;
use crate::StoreId;

/// The first bytes of what the signature of a head that names no log
/// covers: the format and its version, so a signature over anything else
/// cannot pass for one.
pub const SIGNED_PREFIX: &[u8] = b"enforcelog tree head v1\n";

/// The first bytes of what the signature of a head that names its log
/// ([`TreeHead::log`]) covers.
pub const SIGNED_PREFIX_V2: &[u8] = b"enforcelog tree head v2\n";

/// A state of the log: its size, the root of its tree, when it was taken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TreeHead {
    /// The log the head is of: its store id and shard. Every head a store
    /// gives names its log (a log written before store ids existed has
    /// none); a head read from JSON without one is a head of an earlier
    /// release, whose signature covers no name.
    pub log: Option<LogName>,
    /// Records in the tree (the log's next offset).
    pub size: u64,
    /// The root of their Merkle tree.
    pub root: Hash,
    /// When the head was taken, RFC 3339 (as `timestamp::format_us`).
    pub time: String,
}

/// Which log a head is of: a directory of several shards has one log, and
/// one tree, per shard, each with a store id of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogName {
    /// The log's store id (its `STORE_ID`).
    pub store_id: StoreId,
    /// The shard the log is (0 for a directory of one log).
    pub shard: u32,
}

/// A head with its signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedHead {
    /// The head.
    pub head: TreeHead,
    /// The public key that signed it.
    pub public_key: [u8; 32],
    /// The Ed25519 signature of [`TreeHead::signed_bytes`].
    pub signature: [u8; 64],
}

/// Why a head or a key was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeadError {
    /// A field is missing or does not parse.
    #[error("bad tree head: {0}")]
    Malformed(String),
    /// The signature does not check with the given key.
    #[error("the signature does not match the head and key")]
    BadSignature,
}

impl TreeHead {
    /// The bytes a signature of this head covers: with a log name,
    /// [`SIGNED_PREFIX_V2`], the store id (16 bytes big-endian: the bytes its
    /// hex digits spell) and the shard (u32 LE); without one, [`SIGNED_PREFIX`];
    /// then the size (u64 LE), the root, the length of the time text (u32
    /// LE) and the text.
    pub fn signed_bytes(&self) -> Vec<u8> {
        let time = self.time.as_bytes();
        let mut out = Vec::with_capacity(SIGNED_PREFIX_V2.len() + 20 + 8 + 32 + 4 + time.len());
        match &self.log {
            None => out.extend_from_slice(SIGNED_PREFIX),
            Some(log) => {
                out.extend_from_slice(SIGNED_PREFIX_V2);
                out.extend_from_slice(&log.store_id.as_u128().to_be_bytes());
                out.extend_from_slice(&log.shard.to_le_bytes());
            }
        }
        out.extend_from_slice(&self.size.to_le_bytes());
        out.extend_from_slice(&self.root);
        let len = u32::try_from(time.len()).unwrap_or(u32::MAX);
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(time);
        out
    }

    /// Signs the head with `key`.
    pub fn sign(self, key: &SigningKey) -> SignedHead {
        let signature = key.sign(&self.signed_bytes()).to_bytes();
        SignedHead {
            public_key: key.verifying_key().to_bytes(),
            signature,
            head: self,
        }
    }
}

impl SignedHead {
    /// Checks the signature with the head's own public key. (Whether that
    /// key is one to trust is the caller's question: compare it with the
    /// key you hold.)
    pub fn verify(&self) -> Result<(), HeadError> {
        let key = VerifyingKey::from_bytes(&self.public_key)
            .map_err(|e| HeadError::Malformed(format!("public key: {e}")))?;
        let signature = Signature::from_bytes(&self.signature);
        key.verify_strict(&self.head.signed_bytes(), &signature)
            .map_err(|_| HeadError::BadSignature)
    }
}

/// A new signing key from the operating system's random source.
pub fn generate_key() -> std::io::Result<SigningKey> {
    let mut seed = [0u8; 32];
    getrandom::getrandom(&mut seed).map_err(|e| std::io::Error::other(e.to_string()))?;
    Ok(SigningKey::from_bytes(&seed))
}

// ------------------------------------------------------------------ JSON

/// The JSON shape of a head (hashes, keys and signatures in lowercase hex).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct HeadJson {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    store_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    shard: Option<u32>,
    size: u64,
    root: String,
    time: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    signature: Option<SignatureJson>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SignatureJson {
    algorithm: String,
    public_key: String,
    value: String,
}

/// Lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Exactly `N` bytes from `2N` hex digits (either case).
pub fn unhex<const N: usize>(text: &str, what: &str) -> Result<[u8; N], HeadError> {
    let bad = || HeadError::Malformed(format!("{what} is not {} hex digits", 2 * N));
    // Hex digits only: `from_str_radix` alone would also take a sign.
    if text.len() != 2 * N || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(bad());
    }
    let mut out = [0u8; N];
    for (i, pair) in text.as_bytes().chunks_exact(2).enumerate() {
        let digits = std::str::from_utf8(pair).map_err(|_| bad())?;
        out[i] = u8::from_str_radix(digits, 16).map_err(|_| bad())?;
    }
    Ok(out)
}

/// A head as JSON, with its signature when it has one.
pub fn to_json(head: &TreeHead, signed: Option<&SignedHead>) -> String {
    serde_json::to_string_pretty(&head_json(head, signed)).expect("a head serialises")
}

/// [`to_json`] on one line: what a message header can hold.
pub fn to_json_line(head: &TreeHead, signed: Option<&SignedHead>) -> String {
    serde_json::to_string(&head_json(head, signed)).expect("a head serialises")
}

fn head_json(head: &TreeHead, signed: Option<&SignedHead>) -> HeadJson {
    HeadJson {
        store_id: head.log.map(|l| l.store_id.to_string()),
        shard: head.log.map(|l| l.shard),
        size: head.size,
        root: hex(&head.root),
        time: head.time.clone(),
        signature: signed.map(|s| SignatureJson {
            algorithm: "ed25519".into(),
            public_key: hex(&s.public_key),
            value: hex(&s.signature),
        }),
    }
}

/// A head read from JSON, with its signature when the document has one.
/// The signature is parsed, not checked: call [`SignedHead::verify`].
pub fn from_json(text: &str) -> Result<(TreeHead, Option<SignedHead>), HeadError> {
    let json: HeadJson =
        serde_json::from_str(text).map_err(|e| HeadError::Malformed(e.to_string()))?;
    // A name given as null is not the absence of one (serde reads both as
    // `None`): refused, as the Python verifier refuses it.
    if json.store_id.is_none() || json.shard.is_none() {
        let raw: serde_json::Value =
            serde_json::from_str(text).map_err(|e| HeadError::Malformed(e.to_string()))?;
        for key in ["store_id", "shard"] {
            if raw.get(key).is_some_and(serde_json::Value::is_null) {
                return Err(HeadError::Malformed(format!("{key} is null")));
            }
        }
    }
    if crate::timestamp::parse_us(&json.time).is_err() {
        return Err(HeadError::Malformed(format!(
            "time {:?} is not an RFC 3339 instant",
            json.time
        )));
    }
    let log = match (json.store_id, json.shard) {
        (None, None) => None,
        (Some(id), Some(shard)) => Some(LogName {
            store_id: id
                .parse()
                .map_err(|e| HeadError::Malformed(format!("store_id: {e}")))?,
            shard,
        }),
        _ => {
            return Err(HeadError::Malformed(
                "store_id and shard come together, or neither".into(),
            ))
        }
    };
    let head = TreeHead {
        log,
        size: json.size,
        root: unhex::<32>(&json.root, "root")?,
        time: json.time,
    };
    // The empty tree has one root: any other is not a head of it.
    if head.size == 0 && head.root != super::merkle::empty_root() {
        return Err(HeadError::Malformed(
            "a head of size 0 must have the empty tree's root".into(),
        ));
    }
    let signed = match json.signature {
        None => None,
        Some(s) => {
            if s.algorithm != "ed25519" {
                return Err(HeadError::Malformed(format!(
                    "signature algorithm {:?} is not ed25519",
                    s.algorithm
                )));
            }
            Some(SignedHead {
                head: head.clone(),
                public_key: unhex::<32>(&s.public_key, "public_key")?,
                signature: unhex::<64>(&s.value, "signature")?,
            })
        }
    };
    Ok((head, signed))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head() -> TreeHead {
        TreeHead {
            log: Some(LogName {
                store_id: "0123456789abcdef0123456789abcdef".parse().unwrap(),
                shard: 2,
            }),
            size: 1_000_003,
            root: super::super::merkle::leaf_hash(b"root"),
            time: "2026-12-05T09:00:00.000001Z".into(),
        }
    }

    #[test]
    fn a_signed_head_round_trips_through_json_and_verifies() {
        let key = SigningKey::from_bytes(&[7u8; 32]);
        let signed = head().sign(&key);
        assert_eq!(signed.verify(), Ok(()));
        let text = to_json(&signed.head, Some(&signed));
        let (back, back_signed) = from_json(&text).unwrap();
        assert_eq!(back, head());
        assert_eq!(back_signed.as_ref(), Some(&signed));
        assert_eq!(back_signed.unwrap().verify(), Ok(()));
        let (plain, none) = from_json(&to_json(&head(), None)).unwrap();
        assert_eq!((plain, none), (head(), None));
    }

    #[test]
    fn every_changed_field_or_byte_of_the_signature_is_refused() {
        let key = SigningKey::from_bytes(&[9u8; 32]);
        let signed = head().sign(&key);
        let mut changes: Vec<SignedHead> = Vec::new();
        for i in 0..64 {
            let mut s = signed.clone();
            s.signature[i] ^= 1 << (i % 8);
            changes.push(s);
        }
        for i in 0..32 {
            let mut s = signed.clone();
            s.head.root[i] ^= 0x80;
            changes.push(s);
            let mut s = signed.clone();
            s.public_key[i] ^= 1;
            changes.push(s);
        }
        for size in [signed.head.size + 1, signed.head.size - 1, 0, u64::MAX] {
            let mut s = signed.clone();
            s.head.size = size;
            changes.push(s);
        }
        let mut s = signed.clone();
        s.head.time = "2026-12-05T09:00:00.000002Z".into();
        changes.push(s);
        // The name: another store, another shard, or none at all (a head of
        // one log cannot pass for a head of another, or of no log).
        let mut s = signed.clone();
        s.head.log = Some(LogName {
            store_id: "0123456789abcdef0123456789abcdee".parse().unwrap(),
            shard: 2,
        });
        changes.push(s);
        for shard in [0, 3, u32::MAX] {
            let mut s = signed.clone();
            s.head.log.as_mut().unwrap().shard = shard;
            changes.push(s);
        }
        let mut s = signed.clone();
        s.head.log = None;
        changes.push(s);
        for changed in changes {
            assert!(changed.verify().is_err(), "{changed:?}");
        }
    }

    #[test]
    fn bad_documents_are_refused_with_a_reason() {
        for bad in [
            "",
            "{}",
            r#"{"size": 1, "root": "00", "time": "2026-12-05T09:00:00Z"}"#,
            r#"{"size": -1, "root": "", "time": ""}"#,
            r#"{"size": 1, "root": "zz00000000000000000000000000000000000000000000000000000000000000", "time": "2026-12-05T09:00:00Z"}"#,
            r#"{"size": 1, "root": "0000000000000000000000000000000000000000000000000000000000000000", "time": "yesterday"}"#,
            r#"{"size": 1, "root": "0000000000000000000000000000000000000000000000000000000000000000", "time": "2026-12-05T09:00:00Z", "extra": 1}"#,
            r#"{"size": 1, "root": "0000000000000000000000000000000000000000000000000000000000000000", "time": "2026-12-05T09:00:00Z", "signature": {"algorithm": "rsa", "public_key": "", "value": ""}}"#,
            // A name is a store id and a shard, both or neither.
            r#"{"store_id": "0123456789abcdef0123456789abcdef", "size": 1, "root": "0000000000000000000000000000000000000000000000000000000000000000", "time": "2026-12-05T09:00:00Z"}"#,
            r#"{"shard": 0, "size": 1, "root": "0000000000000000000000000000000000000000000000000000000000000000", "time": "2026-12-05T09:00:00Z"}"#,
            r#"{"store_id": "0123456789ABCDEF0123456789abcdef", "shard": 0, "size": 1, "root": "0000000000000000000000000000000000000000000000000000000000000000", "time": "2026-12-05T09:00:00Z"}"#,
            r#"{"store_id": "00000000000000000000000000000000", "shard": 0, "size": 1, "root": "0000000000000000000000000000000000000000000000000000000000000000", "time": "2026-12-05T09:00:00Z"}"#,
            r#"{"store_id": "0123456789abcdef0123456789abcdef", "shard": -1, "size": 1, "root": "0000000000000000000000000000000000000000000000000000000000000000", "time": "2026-12-05T09:00:00Z"}"#,
            r#"{"store_id": null, "shard": null, "size": 1, "root": "0000000000000000000000000000000000000000000000000000000000000000", "time": "2026-12-05T09:00:00Z"}"#,
        ] {
            assert!(
                matches!(from_json(bad), Err(HeadError::Malformed(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn signed_bytes_start_with_the_versioned_prefix_and_bind_the_time_length() {
        let a = TreeHead {
            time: "ab".into(),
            ..head()
        };
        let b = TreeHead {
            time: "a".into(),
            ..head()
        };
        assert!(a.signed_bytes().starts_with(SIGNED_PREFIX_V2));
        assert_ne!(a.signed_bytes(), b.signed_bytes());
        assert_eq!(
            a.signed_bytes().len(),
            SIGNED_PREFIX_V2.len() + 16 + 4 + 8 + 32 + 4 + 2
        );
        assert_eq!(
            &a.signed_bytes()[SIGNED_PREFIX_V2.len()..][..20],
            &[
                0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef, 0x01, 0x23, 0x45, 0x67, 0x89, 0xab,
                0xcd, 0xef, 2, 0, 0, 0
            ]
        );
        let unnamed = TreeHead { log: None, ..a };
        assert!(unnamed.signed_bytes().starts_with(SIGNED_PREFIX));
        assert_eq!(
            unnamed.signed_bytes().len(),
            SIGNED_PREFIX.len() + 8 + 32 + 4 + 2
        );
        let earlier = TreeHead {
            log: None,
            ..head()
        };
        let (back, _) = from_json(&to_json(&earlier, None)).unwrap();
        assert_eq!(
            back, earlier,
            "a head of an earlier release reads back unnamed"
        );
    }
}
