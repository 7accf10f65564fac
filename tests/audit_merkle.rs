//! The Merkle tree of `src/audit/merkle.rs` on random trees: for random
//! sizes (dense near powers of two, where the recursion changes shape), a
//! random leaf and a random pair of sizes, the proofs verify, every single
//! bit flipped in a proof or a root is refused, and a proof with a hash too
//! many or too few is refused. The running root ([`Frontier`]) equals the
//! root by definition at every size.
//!
//! `ENFORCELOG_SEED=<seed>` replays a failure.

mod common;

use enforcelog::audit::merkle::{
    consistency_proof, inclusion_proof, leaf_hash, root, verify_consistency, verify_inclusion,
    Frontier, Hash,
};
use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed, TestRunner};

fn size() -> impl Strategy<Value = u64> {
    prop_oneof![
        3 => 1u64..600,
        2 => (1u32..10, -2i64..=2).prop_map(|(p, d)| ((1i64 << p) + d).max(1) as u64),
    ]
}

fn leaves(n: u64, salt: u64) -> Vec<Hash> {
    // Real-looking leaves: payload-sized records, some all zeros.
    (0..n)
        .map(|i| {
            let mut record = vec![0u8; 24 + (i % 7) as usize * 30];
            if i % 5 != 0 {
                record[..8].copy_from_slice(&(i ^ salt).to_le_bytes());
            }
            leaf_hash(&record)
        })
        .collect()
}

#[test]
fn proofs_of_random_trees_verify_and_any_flip_is_refused() {
    let mut runner = TestRunner::new(Config {
        cases: 300,
        rng_seed: RngSeed::Fixed(common::run_seed()),
        failure_persistence: None,
        ..Config::default()
    });
    let case = (
        size(),
        any::<u64>(),
        any::<u64>(),
        any::<u64>(),
        any::<u64>(),
    );
    runner
        .run(&case, |(n, salt, pick, a, b)| {
            let tree = leaves(n, salt);
            let r = root(&tree);
            let index = pick % n;
            let proof = inclusion_proof(&tree[..], index, n).unwrap();
            prop_assert!(proof.len() <= 64 - (n - 1).leading_zeros() as usize);
            let leaf = tree[index as usize];
            prop_assert_eq!(verify_inclusion(index, n, &leaf, &proof, &r), Ok(()));
            for i in 0..proof.len() {
                let mut bad = proof.clone();
                bad[i][(a % 32) as usize] ^= 1 << (b % 8);
                prop_assert!(verify_inclusion(index, n, &leaf, &bad, &r).is_err());
            }
            let mut bad_root = r;
            bad_root[(a % 32) as usize] ^= 1 << (b % 8);
            prop_assert!(verify_inclusion(index, n, &leaf, &proof, &bad_root).is_err());
            let mut longer = proof.clone();
            longer.push(leaf);
            prop_assert!(verify_inclusion(index, n, &leaf, &longer, &r).is_err());

            let (old, new) = {
                let (x, y) = (a % (n + 1), b % (n + 1));
                (x.min(y), x.max(y))
            };
            let old_root = root(&tree[..old as usize]);
            let new_root = root(&tree[..new as usize]);
            let proof = consistency_proof(&tree[..], old, new).unwrap();
            prop_assert_eq!(
                verify_consistency(old, new, &old_root, &new_root, &proof),
                Ok(()),
                "{} to {}",
                old,
                new
            );
            for i in 0..proof.len() {
                let mut bad = proof.clone();
                bad[i][(b % 32) as usize] ^= 1 << (a % 8);
                prop_assert!(verify_consistency(old, new, &old_root, &new_root, &bad).is_err());
            }
            if old < new {
                let mut bad_old = old_root;
                bad_old[(b % 32) as usize] ^= 1;
                prop_assert!(verify_consistency(old, new, &bad_old, &new_root, &proof).is_err());
                // Every tree extends the empty one: nothing binds the new
                // root then (the signed head does).
                if old > 0 {
                    let mut bad_new = new_root;
                    bad_new[(a % 32) as usize] ^= 1;
                    prop_assert!(
                        verify_consistency(old, new, &old_root, &bad_new, &proof).is_err()
                    );
                }
                let mut longer = proof.clone();
                longer.push(new_root);
                prop_assert!(
                    verify_consistency(old, new, &old_root, &new_root, &longer).is_err()
                );
                if !proof.is_empty() {
                    let shorter = &proof[..proof.len() - 1];
                    prop_assert!(
                        verify_consistency(old, new, &old_root, &new_root, shorter).is_err()
                    );
                }
            }
            // A log whose first `old` leaves changed is not an extension.
            if old > 0 && old < new {
                let mut rewritten = tree.clone();
                let at = (pick % old) as usize;
                rewritten[at][0] ^= 1;
                let forged_new = root(&rewritten[..new as usize]);
                let forged = consistency_proof(&rewritten[..], old, new).unwrap();
                prop_assert!(
                    verify_consistency(old, new, &old_root, &forged_new, &forged).is_err()
                );
            }
            Ok(())
        })
        .unwrap();
}

#[test]
fn the_running_root_equals_the_root_at_every_size() {
    let tree = leaves(1100, 7);
    let mut frontier = Frontier::new();
    assert_eq!(frontier.root(), root(&[]));
    for (n, leaf) in tree.iter().enumerate() {
        frontier.push(*leaf);
        assert_eq!(frontier.root(), root(&tree[..=n]), "size {}", n + 1);
    }
}
