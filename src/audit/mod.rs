//! Tamper evidence for the log (issue 18): a Merkle tree over its records,
//! so a rewrite of history is detectable and an auditor holding an earlier
//! tree head can check that today's log extends it.
//!
//! [`merkle`] holds the tree itself (RFC 9162 hashing, proofs and their
//! verification), pure and independent of the storage; [`head`] the tree
//! heads that name a state of the log, their Ed25519 signatures and JSON.

pub mod head;
pub(crate) mod kept;
pub mod merkle;
pub mod proof;
pub mod tree;
