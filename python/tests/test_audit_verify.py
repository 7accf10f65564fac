"""The standalone Python verifier (enforcelog/verify.py) against the Rust
implementation: every proof the Rust code makes in the shared fixture
(tests/fixtures/audit/proofs.json, kept equal to the code's output by
tests/audit_fixture.rs) verifies here, and every single-bit change to a
proof hash, a root or a leaf, a hash too many or too few, or a moved size
is refused. The module is loaded from its file, so this runs without the
compiled extension, as an auditor would."""

import importlib.util
import json
import pathlib

import pytest

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parent.parent
spec = importlib.util.spec_from_file_location("verify", HERE.parent / "enforcelog" / "verify.py")
verify = importlib.util.module_from_spec(spec)
spec.loader.exec_module(verify)

FIXTURE = json.loads((ROOT / "tests" / "fixtures" / "audit" / "proofs.json").read_text())


def flips(hex_hash):
    """Every single-bit change of a hash, as hex (a sample of 32 of them:
    one bit per byte, rotating through the bit positions)."""
    raw = bytes.fromhex(hex_hash)
    for i in range(32):
        changed = bytearray(raw)
        changed[i] ^= 1 << (i % 8)
        yield changed.hex()


def refused(check, doc):
    with pytest.raises(verify.ProofError):
        check(doc)


def test_the_published_vectors():
    assert verify.empty_root().hex() == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    assert verify.leaf_hash(b"").hex() == "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"
    a, b = verify.leaf_hash(b""), verify.leaf_hash(b"\x00")
    assert verify.node_hash(a, b).hex() == "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"


@pytest.mark.parametrize("doc", FIXTURE["inclusion"], ids=lambda d: f"{d['leaf_index']}of{d['tree_size']}")
def test_inclusion_proofs_of_the_rust_code_verify_and_changes_are_refused(doc):
    assert verify.check_inclusion(doc)
    for i, h in enumerate(doc["path"]):
        for bad in flips(h):
            refused(verify.check_inclusion, {**doc, "path": doc["path"][:i] + [bad] + doc["path"][i + 1:]})
    for key in ("root", "leaf_hash"):
        for bad in flips(doc[key]):
            refused(verify.check_inclusion, {**doc, key: bad})
    refused(verify.check_inclusion, {**doc, "path": doc["path"] + [doc["root"]]})
    if doc["path"]:
        refused(verify.check_inclusion, {**doc, "path": doc["path"][:-1]})
        moved = (doc["leaf_index"] + 1) % doc["tree_size"]
        refused(verify.check_inclusion, {**doc, "leaf_index": moved})
    refused(verify.check_inclusion, {**doc, "leaf_index": doc["tree_size"]})
    if doc["tree_size"] > 1:
        # A leaf is its own root with an empty path, but only in a tree of
        # one: the path's length is bound to the size.
        refused(verify.check_inclusion, {**doc, "path": [], "root": doc["leaf_hash"]})
    refused(verify.check_inclusion, {**doc, "tree_size": True})


@pytest.mark.parametrize("doc", FIXTURE["consistency"], ids=lambda d: f"{d['old_size']}to{d['new_size']}")
def test_consistency_proofs_of_the_rust_code_verify_and_changes_are_refused(doc):
    assert verify.check_consistency(doc)
    old, new = doc["old_size"], doc["new_size"]
    for i, h in enumerate(doc["path"]):
        for bad in flips(h):
            refused(verify.check_consistency, {**doc, "path": doc["path"][:i] + [bad] + doc["path"][i + 1:]})
    if 0 < old < new:
        # Nothing binds the roots when old is 0 (every tree extends the
        # empty one) or equal to new (then they must be equal: checked).
        for key in ("old_root", "new_root"):
            for bad in flips(doc[key]):
                refused(verify.check_consistency, {**doc, key: bad})
        refused(verify.check_consistency, {**doc, "path": doc["path"] + [doc["new_root"]]})
        if doc["path"]:
            refused(verify.check_consistency, {**doc, "path": doc["path"][:-1]})
    if old < new:
        refused(verify.check_consistency, {**doc, "old_size": new, "new_size": old})
    refused(verify.check_consistency, {**doc, "old_root": "zz" * 32})


def test_malformed_documents_are_refused_not_crashed():
    doc = FIXTURE["inclusion"][5]
    for bad in ({}, {**doc, "path": "ab"}, {**doc, "path": [1]}, {**doc, "root": doc["root"][:-2]},
                {**doc, "tree_size": -1}, {**doc, "tree_size": 1 << 64}, {**doc, "leaf_index": "0"}):
        refused(verify.check_inclusion, bad)


def test_the_module_examples_run():
    import doctest

    assert doctest.testmod(verify).failed == 0


# ---------------------------------------------------------------------------
# Through the package: a store's heads and proofs, checked by the
# standalone verifier; signed heads from the CLI, checked with
# `cryptography`.
# ---------------------------------------------------------------------------


def test_a_stores_heads_and_proofs_check_with_the_standalone_verifier(tmp_path):
    import enforcelog

    store = enforcelog.Store(str(tmp_path / "store"), durability="none")
    try:
        for i in range(300):
            store.record("acme", f"rule-{i % 7}", "KILLED", run_id=f"run-{i}",
                         details={"step": i, "zeros": [0, 0, 0]})
        store.flush()
        head = store.head()
        assert head["size"] == 300
        for offset in (0, 1, 150, 255, 256, 299):
            proof = store.prove_inclusion(offset)
            assert proof["root"] == head["root"]
            assert verify.check_inclusion(proof)
        old = store.prove_inclusion(10, 100)
        assert verify.check_inclusion(old)
        for i in range(300, 340):
            store.record("acme", "rule-x", "BLOCKED", details={"step": i})
        store.flush()
        proof = store.prove_consistency(300)
        assert proof["old_root"] == head["root"]
        assert verify.check_consistency(proof)
        # One full pass, the head's: every proof since came from the tree it
        # kept, extended by the records written after it.
        assert store.metrics()["tree_passes"] == 1
        with pytest.raises(enforcelog.Error):
            store.prove_inclusion(500)
    finally:
        store.close()


def test_a_directory_two_processes_share_has_a_head_per_shard(tmp_path):
    import enforcelog

    path = str(tmp_path / "store")
    first = enforcelog.Store(path, durability="none")
    second = enforcelog.Store(path, durability="none")
    try:
        for i in range(30):
            first.record("acme", "budget", "KILLED", details={"step": i})
        for i in range(12):
            second.record("globex", "budget", "BLOCKED", details={"step": i})
        first.flush()
        second.flush()
        with pytest.raises(enforcelog.Error):
            first.head()  # one head would not speak for both shards
        heads = first.heads()
        assert [h["shard"] for h in heads] == [0, 1]
        assert [h["size"] for h in heads] == [30, 12]
        assert heads[0]["store_id"] != heads[1]["store_id"]
        for head in heads:
            assert second.head(shard=head["shard"])["root"] == head["root"]
            proof = second.prove_inclusion(head["size"] - 1, shard=head["shard"])
            assert proof["root"] == head["root"]
            assert verify.check_inclusion(proof, head)
            proof = first.prove_consistency(1, shard=head["shard"])
            assert proof["new_root"] == head["root"]
            assert verify.check_consistency(proof)
        with pytest.raises(enforcelog.Error):
            first.head(shard=5)
    finally:
        second.close()
        first.close()


def test_signed_heads_from_the_cli_check_and_every_change_is_refused(tmp_path):
    import os
    import subprocess

    binary = os.environ["ENFORCELOG_BIN"]
    data = str(tmp_path / "store")

    def run(*args):
        return subprocess.run([binary, "--data-dir", data, *args], check=True,
                              capture_output=True, text=True, stdin=subprocess.DEVNULL).stdout

    run("record", "--tenant", "acme", "--rule", "budget", "--action", "killed")
    run("record", "--tenant", "acme", "--rule", "budget", "--action", "blocked")
    key = str(tmp_path / "key")
    run("keygen", "--out", key)
    head = json.loads(run("head", "--sign", key))
    # A key file is two lines: its kind, then the key in hex.
    kind, public = open(key + ".pub").read().strip().splitlines()
    assert kind == "enforcelog ed25519 public key"
    size, root, _ = verify.check_head(head, public)
    assert size == 2 and root.hex() == head["root"]
    refused(lambda d: verify.check_head(d, "00" * 32), head)
    for field in ("root",):
        for bad in flips(head[field]):
            refused(verify.check_head, {**head, field: bad})
    refused(verify.check_head, {**head, "size": 3})
    refused(verify.check_head, {**head, "time": head["time"].replace("Z", "+00:00")})
    # The head names its log, under the signature: another store or shard,
    # or no name at all, is refused.
    assert head["shard"] == 0 and len(head["store_id"]) == 32
    store_id = bytes.fromhex(head["store_id"])
    for i in range(len(store_id)):
        changed = bytearray(store_id)
        changed[i] ^= 1 << (i % 8)
        if changed[-4:] != bytes(4):
            refused(verify.check_head, {**head, "store_id": changed.hex()})
    refused(verify.check_head, {**head, "shard": 1})
    refused(verify.check_head, {**head, "shard": True})
    refused(verify.check_head, {k: v for k, v in head.items() if k not in ("store_id", "shard")})
    refused(verify.check_head, {k: v for k, v in head.items() if k != "shard"})
    sig = head["signature"]
    for i in range(0, 128, 2):
        changed = bytearray(bytes.fromhex(sig["value"]))
        changed[i // 2] ^= 1 << (i % 8)
        refused(verify.check_head, {**head, "signature": {**sig, "value": changed.hex()}})
    refused(verify.check_head, {k: v for k, v in head.items() if k != "signature"})
