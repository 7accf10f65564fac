//! Inclusion and consistency proofs as values: what a store hands out,
//! what `enforcelog prove` prints and what an auditor verifies, in Rust or
//! with the standalone Python verifier (`python/enforcelog/verify.py`),
//! which reads the same JSON.
//!
//! JSON (hashes in lowercase hex):
//! - inclusion: `{"leaf_index", "tree_size", "leaf_hash", "path", "root"}`;
//! - consistency: `{"old_size", "new_size", "old_root", "new_root", "path"}`.

use serde_json::{json, Value};

use super::head::{hex, unhex, HeadError};
use super::merkle::{verify_consistency, verify_inclusion, Hash, ProofError};

/// That a record is leaf `leaf_index` of the tree of `tree_size` records
/// whose root is `root`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InclusionProof {
    /// The record's offset.
    pub leaf_index: u64,
    /// The size of the tree.
    pub tree_size: u64,
    /// The record's leaf hash (`merkle::record_leaf_hash`).
    pub leaf_hash: Hash,
    /// The audit path, leaf side first.
    pub path: Vec<Hash>,
    /// The root of the tree of `tree_size` records.
    pub root: Hash,
}

/// That the tree of `new_size` records extends the tree of `old_size`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsistencyProof {
    /// The earlier size.
    pub old_size: u64,
    /// The later size.
    pub new_size: u64,
    /// The root of the first `old_size` records.
    pub old_root: Hash,
    /// The root of the first `new_size` records.
    pub new_root: Hash,
    /// The proof's hashes.
    pub path: Vec<Hash>,
}

impl InclusionProof {
    /// Checks the proof against its own root (compare that root with a
    /// head you trust).
    pub fn verify(&self) -> Result<(), ProofError> {
        verify_inclusion(
            self.leaf_index,
            self.tree_size,
            &self.leaf_hash,
            &self.path,
            &self.root,
        )
    }

    /// The proof as JSON.
    pub fn to_json(&self) -> String {
        json!({
            "leaf_index": self.leaf_index,
            "tree_size": self.tree_size,
            "leaf_hash": hex(&self.leaf_hash),
            "path": self.path.iter().map(|h| hex(h)).collect::<Vec<_>>(),
            "root": hex(&self.root),
        })
        .to_string()
    }

    /// A proof read from JSON (parsed, not verified).
    pub fn from_json(text: &str) -> Result<Self, HeadError> {
        let doc = object(
            text,
            &["leaf_index", "tree_size", "leaf_hash", "path", "root"],
        )?;
        Ok(Self {
            leaf_index: number(&doc, "leaf_index")?,
            tree_size: number(&doc, "tree_size")?,
            leaf_hash: hash(&doc, "leaf_hash")?,
            path: hashes(&doc, "path")?,
            root: hash(&doc, "root")?,
        })
    }
}

impl ConsistencyProof {
    /// Checks the proof against its own roots (compare them with heads you
    /// trust).
    pub fn verify(&self) -> Result<(), ProofError> {
        verify_consistency(
            self.old_size,
            self.new_size,
            &self.old_root,
            &self.new_root,
            &self.path,
        )
    }

    /// The proof as JSON.
    pub fn to_json(&self) -> String {
        json!({
            "old_size": self.old_size,
            "new_size": self.new_size,
            "old_root": hex(&self.old_root),
            "new_root": hex(&self.new_root),
            "path": self.path.iter().map(|h| hex(h)).collect::<Vec<_>>(),
        })
        .to_string()
    }

    /// A proof read from JSON (parsed, not verified).
    pub fn from_json(text: &str) -> Result<Self, HeadError> {
        let doc = object(
            text,
            &["old_size", "new_size", "old_root", "new_root", "path"],
        )?;
        Ok(Self {
            old_size: number(&doc, "old_size")?,
            new_size: number(&doc, "new_size")?,
            old_root: hash(&doc, "old_root")?,
            new_root: hash(&doc, "new_root")?,
            path: hashes(&doc, "path")?,
        })
    }
}

fn malformed(what: String) -> HeadError {
    HeadError::Malformed(what)
}

/// A JSON object with exactly `keys`.
fn object(text: &str, keys: &[&str]) -> Result<serde_json::Map<String, Value>, HeadError> {
    let Value::Object(doc) = serde_json::from_str(text).map_err(|e| malformed(e.to_string()))?
    else {
        return Err(malformed("not a JSON object".into()));
    };
    if let Some(k) = doc.keys().find(|k| !keys.contains(&k.as_str())) {
        return Err(malformed(format!("unknown field {k:?}")));
    }
    Ok(doc)
}

fn number(doc: &serde_json::Map<String, Value>, key: &str) -> Result<u64, HeadError> {
    doc.get(key)
        .and_then(Value::as_u64)
        .ok_or_else(|| malformed(format!("{key:?} is not a size")))
}

fn hash(doc: &serde_json::Map<String, Value>, key: &str) -> Result<Hash, HeadError> {
    let text = doc
        .get(key)
        .and_then(Value::as_str)
        .ok_or_else(|| malformed(format!("{key:?} is not a hash")))?;
    unhex::<32>(text, key)
}

fn hashes(doc: &serde_json::Map<String, Value>, key: &str) -> Result<Vec<Hash>, HeadError> {
    let list = doc
        .get(key)
        .and_then(Value::as_array)
        .ok_or_else(|| malformed(format!("{key:?} is not a list")))?;
    list.iter()
        .map(|v| {
            v.as_str()
                .ok_or_else(|| malformed(format!("{key:?} holds a non-string")))
                .and_then(|t| unhex::<32>(t, key))
        })
        .collect()
}
