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
