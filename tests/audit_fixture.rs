//! The proofs the Python verifier (`python/enforcelog/verify.py`) is tested
//! on: `tests/fixtures/audit/proofs.json`, inclusion and consistency proofs
//! of trees of every size up to 33 and a few larger ones, as the Rust code
//! makes them now. The test fails when the file differs from what the code
//! makes (so the Python side always checks today's proofs);
//! `ENFORCELOG_BLESS=1` writes it.

use enforcelog::audit::merkle::{consistency_proof, inclusion_proof, leaf_hash, root, Hash};
use serde_json::{json, Value};

fn hex(h: &Hash) -> String {
    h.iter().map(|b| format!("{b:02x}")).collect()
}

fn leaves(n: u64) -> Vec<Hash> {
    (0..n)
        .map(|i| {
            // Record-like leaves; every third one all zeros.
            let mut data = vec![0u8; 40 + (i % 5) as usize * 40];
            if i % 3 != 0 {
                data[8..16].copy_from_slice(&(i * 0x9e37_79b9).to_le_bytes());
            }
            leaf_hash(&data)
        })
        .collect()
}

fn proofs() -> Value {
    let mut inclusion = Vec::new();
    let mut consistency = Vec::new();
    let sizes: Vec<u64> = (1..=33).chain([63, 64, 65, 127, 128, 129, 1000]).collect();
    let all = leaves(1000);
    for &n in &sizes {
        let tree = &all[..n as usize];
        let r = root(tree);
        let picks: Vec<u64> = if n <= 9 {
            (0..n).collect()
        } else {
            vec![0, n / 3, n - 1]
        };
        for index in picks {
            let path = inclusion_proof(tree, index, n).expect("in memory");
            inclusion.push(json!({
                "leaf_index": index,
                "tree_size": n,
                "leaf_hash": hex(&tree[index as usize]),
                "path": path.iter().map(hex).collect::<Vec<_>>(),
                "root": hex(&r),
            }));
        }
        let olds: Vec<u64> = if n <= 9 {
            (0..=n).collect()
        } else {
            vec![1, n / 2, n - 1]
        };
        for old in olds {
            let path = consistency_proof(tree, old, n).expect("in memory");
            consistency.push(json!({
                "old_size": old,
                "new_size": n,
                "old_root": hex(&root(&tree[..old as usize])),
                "new_root": hex(&r),
                "path": path.iter().map(hex).collect::<Vec<_>>(),
            }));
        }
    }
    json!({ "inclusion": inclusion, "consistency": consistency })
}

/// One proof per line.
fn render(proofs: &Value) -> String {
    let list = |key: &str| {
        proofs[key]
            .as_array()
            .expect("a list")
            .iter()
            .map(|p| format!("  {p}"))
            .collect::<Vec<_>>()
            .join(",\n")
    };
    format!(
        "{{\"inclusion\": [\n{}\n],\n\"consistency\": [\n{}\n]}}\n",
        list("inclusion"),
        list("consistency")
    )
}

#[test]
fn the_python_verifiers_fixture_is_what_the_code_makes() {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/audit/proofs.json");
    let want = render(&proofs());
    if std::env::var_os("ENFORCELOG_BLESS").is_some() {
        std::fs::write(&path, &want).expect("write the fixture");
    }
    let have =
        std::fs::read_to_string(&path).expect("read the fixture (ENFORCELOG_BLESS=1 writes it)");
    assert!(
        have == want,
        "{} is stale: ENFORCELOG_BLESS=1 cargo test --test audit_fixture",
        path.display()
    );
}
