//! Inclusion and consistency proofs as values: what a store hands out,
//! what `enforcelog prove` prints and what an auditor verifies, in Rust or
//! with the standalone Python verifier (`python/enforcelog/verify.py`),
//! which reads the same JSON.
//!
//! JSON (hashes in lowercase hex):
//! - inclusion: `{"leaf_index", "tree_size", "leaf_hash", "path", "root"}`;
//! - consistency: `{"old_size", "new_size", "old_root", "new_root", "path"}`.

use serde::Deserialize;
use serde_json::json;

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
        let doc: InclusionJson = parse(text)?;
        Ok(Self {
            leaf_index: doc.leaf_index,
            tree_size: doc.tree_size,
            leaf_hash: unhex::<32>(&doc.leaf_hash, "leaf_hash")?,
            path: hashes(&doc.path, "path")?,
            root: unhex::<32>(&doc.root, "root")?,
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
        let doc: ConsistencyJson = parse(text)?;
        Ok(Self {
            old_size: doc.old_size,
            new_size: doc.new_size,
            old_root: unhex::<32>(&doc.old_root, "old_root")?,
            new_root: unhex::<32>(&doc.new_root, "new_root")?,
            path: hashes(&doc.path, "path")?,
        })
    }
}

fn malformed(what: String) -> HeadError {
    HeadError::Malformed(what)
}

/// The JSON of an inclusion proof, strictly: no unknown field, no field
/// twice (serde's derive refuses both), sizes as unsigned integers.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct InclusionJson {
    leaf_index: u64,
    tree_size: u64,
    leaf_hash: String,
    path: Vec<String>,
    root: String,
}

/// The JSON of a consistency proof, as strictly.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ConsistencyJson {
    old_size: u64,
    new_size: u64,
    old_root: String,
    new_root: String,
    path: Vec<String>,
}

fn parse<T: for<'de> Deserialize<'de>>(text: &str) -> Result<T, HeadError> {
    serde_json::from_str(text).map_err(|e| malformed(e.to_string()))
}

fn hashes(list: &[String], key: &str) -> Result<Vec<Hash>, HeadError> {
    list.iter().map(|t| unhex::<32>(t, key)).collect()
}
