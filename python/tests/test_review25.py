"""Review 25: the standalone verifier (enforcelog/verify.py) against the Rust
one, on the differential corpus tests/fixtures/review25/differential.json
(genuine proofs and signed heads and ~1,000 mutations of them, each with the
Rust verdict; kept equal to the Rust code by tests/review_findings25.rs).

Each test fails if the finding it is named after is real; confirmed ones are
skipped with the reason so the suite stays green."""

import importlib.util
import json
import pathlib

import pytest

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parent.parent
spec = importlib.util.spec_from_file_location("verify", HERE.parent / "enforcelog" / "verify.py")
verify = importlib.util.module_from_spec(spec)
spec.loader.exec_module(verify)

CORPUS = json.loads((ROOT / "tests" / "fixtures" / "review25" / "differential.json").read_text())["cases"]

CHECKS = {
    "inclusion": verify.check_inclusion,
    "consistency": verify.check_consistency,
    "head": verify.check_head,
}


def python_verdict(case):
    """Accepted (True) or refused (False); anything but ProofError raised
    for a bad document is a finding of its own (see below)."""
    try:
        # The text itself: a duplicated key or a -0 is in the text only.
        CHECKS[case["kind"]](case["text"])
        return True
    except verify.ProofError:
        return False


def needs_cryptography(case):
    if case["kind"] == "head":
        pytest.importorskip("cryptography")


def disagreements():
    out = []
    for case in CORPUS:
        needs_cryptography(case)
        try:
            py = python_verdict(case)
        except Exception as e:  # noqa: BLE001 - reported, not hidden
            py = f"raised {type(e).__name__}"
        if py != case["rust"]:
            out.append((case["kind"], case["what"], case["rust"], py))
    return out


# What each confirmed finding is (a mutation class of the corpus), and why.
CONFIRMED = {
    "plus sign": "Rust unhex takes '+d' pairs (u8::from_str_radix); Python refuses",
    "-0": "Python json reads -0 as int 0; serde_json as float -0.0, refused",
    "extra field": "Python check_inclusion/check_consistency ignore unknown fields; Rust refuses",
    "duplicated, genuine last": "head: serde derive refuses a duplicate key; Python json keeps the last",
    "signature extra field": "head: Python ignores unknown fields in 'signature'; Rust refuses",
    "identity key, universal signature": "OpenSSL Ed25519 accepts the identity key with (identity, 0) for every message; Rust verify_strict refuses",
    "time not RFC 3339, signed": "Python does not parse the time; Rust refuses a non-RFC 3339 time",
    "not an object": "check_inclusion/check_consistency raise AttributeError, not ProofError, on a non-dict",
}


def confirmed_class(what):
    # Longest match first: "signature extra field" before "extra field".
    for key in sorted(CONFIRMED, key=len, reverse=True):
        if what.endswith(key):
            return key
    return None


def test_python_and_rust_agree_on_every_case():
    assert disagreements() == []


def test_every_confirmed_class_is_still_in_the_corpus():
    """The corpus still holds a case of each class the review confirmed (now
    fixed), so the agreement test above keeps checking them."""
    seen = {confirmed_class(c["what"]) for c in CORPUS}
    assert set(CONFIRMED) <= seen


def cases(suffix):
    found = [c for c in CORPUS if c["what"].endswith(suffix)]
    assert found, suffix
    return found


def test_plus_sign_hex_verdicts_agree():
    for c in cases("plus sign"):
        assert python_verdict(c) == c["rust"], c["what"]


def test_negative_zero_sizes_verdicts_agree():
    for c in cases("-0"):
        needs_cryptography(c)
        assert python_verdict(c) == c["rust"], c["what"]


def test_unknown_fields_in_a_proof_are_refused():
    for c in cases(": extra field"):
        if c["kind"] != "head":
            assert python_verdict(c) is False, c["what"]


def test_unknown_fields_in_the_signature_are_refused():
    pytest.importorskip("cryptography")
    for c in cases("signature extra field"):
        assert python_verdict(c) is False, c["what"]


def test_a_signed_head_with_a_time_that_is_not_rfc3339_is_refused():
    pytest.importorskip("cryptography")
    for c in cases("time not RFC 3339, signed"):
        assert python_verdict(c) is False, c["what"]


def test_the_identity_key_cannot_sign_every_head():
    pytest.importorskip("cryptography")
    ident = "01" + "00" * 31
    forged = {
        "size": 123456789,
        "root": "ab" * 32,
        "time": "2026-12-05T09:00:00Z",
        "signature": {"algorithm": "ed25519", "public_key": ident, "value": "01" + "00" * 63},
    }
    with pytest.raises(verify.ProofError):
        verify.check_head(forged)


def test_a_pinned_key_stops_the_identity_forgery():
    """Refutes the worse case: with the auditor's key given, the forged head
    is refused (the key comparison comes before the signature)."""
    pytest.importorskip("cryptography")
    forged = {
        "size": 1,
        "root": "ab" * 32,
        "time": "2026-12-05T09:00:00Z",
        "signature": {"algorithm": "ed25519", "public_key": "01" + "00" * 31, "value": "01" + "00" * 63},
    }
    with pytest.raises(verify.ProofError):
        verify.check_head(forged, public_key="11" * 32)


def test_a_head_with_a_duplicated_key_is_refused():
    pytest.importorskip("cryptography")
    for c in cases("duplicated, genuine last"):
        if c["kind"] == "head":
            assert python_verdict(c) is False, c["what"]


def test_bad_objects_raise_proof_error_only():
    """Refutes "a malformed proof or head object crashes the verifier with
    something other than ProofError": every corpus case that is a JSON
    object either verifies or raises ProofError."""
    for c in CORPUS:
        needs_cryptography(c)
        if isinstance(json.loads(c["text"]), dict):
            python_verdict(c)


def test_a_proof_that_is_not_an_object_raises_proof_error():
    for bad in ([1, 2], "text", None, 3):
        for check in (verify.check_inclusion, verify.check_consistency):
            with pytest.raises(verify.ProofError):
                check(bad)


def test_sizes_at_the_edges_are_refused_or_checked():
    """Bools, floats, negatives, 2^64 and non-ints as sizes; a huge index
    with a long path: refused, never an exception but ProofError."""
    leaf = verify.leaf_hash(b"x")
    for bad in (True, False, 1.0, -1, 1 << 64, "1", None):
        with pytest.raises(verify.ProofError):
            verify.verify_inclusion(bad, 2, leaf, [leaf], leaf)
        with pytest.raises(verify.ProofError):
            verify.verify_consistency(1, bad, leaf, leaf, [leaf])
    m = (1 << 64) - 1
    for index, size in ((m - 1, m), (0, m), (m, m), (0, 1 << 63)):
        for n in (0, 1, 63, 64, 65):
            with pytest.raises(verify.ProofError):
                verify.verify_inclusion(index, size, leaf, [leaf] * n, leaf)
            with pytest.raises(verify.ProofError):
                verify.verify_consistency(index, size, leaf, verify.empty_root(), [leaf] * n)


def test_an_inclusion_proof_can_be_bound_to_the_record_it_proves():
    """An inclusion proof matters only if the auditor can compute the leaf
    hash from the record it holds. The standalone verifier must offer that
    (the leaf encoding of docs/AUDIT.md), or the proof must carry the record."""
    record_leaf_hash = getattr(verify, "record_leaf_hash", None)
    assert record_leaf_hash is not None, "no way to hash a record into its leaf"
    # The leaf of docs/AUDIT.md: SHA-256(0x00 || offset u64 LE || timestamp_us i64 LE || payload).
    payload = b"\x00" * 64 + "tenant\u200b".encode()
    want = verify.leaf_hash((5).to_bytes(8, "little") + (-1).to_bytes(8, "little", signed=True) + payload)
    assert record_leaf_hash(5, -1, payload) == want


def test_check_head_raises_only_proof_error():
    pytest.importorskip("cryptography")
    doc = {
        "size": 1,
        "root": "ab" * 32,
        "time": "2026-12-05T09:00:00Z\ud800",
        "signature": {"algorithm": "ed25519", "public_key": "11" * 32, "value": "22" * 64},
    }
    with pytest.raises(verify.ProofError):
        verify.check_head(json.loads(json.dumps(doc)))
    doc["time"] = "2026-12-05T09:00:00Z"
    with pytest.raises(verify.ProofError):
        verify.check_head(doc, public_key="zz" * 32)


def test_proofs_are_checked_against_a_head_the_auditor_kept():
    """The first call a newcomer writes must be the safe one: a consistency
    proof from a log rewritten after the auditor's head verifies on its own
    (it names the rewritten old root); checked against the kept head it
    must be refused."""
    fixture = json.loads((ROOT / "tests" / "fixtures" / "audit" / "proofs.json").read_text())
    doc = next(d for d in fixture["consistency"] if 1 < d["old_size"] < d["new_size"])
    assert verify.check_consistency(doc)  # the proof is sound in itself
    kept = {"size": doc["old_size"], "root": "ab" * 32, "time": "2026-12-05T09:00:00Z"}
    with pytest.raises(verify.ProofError):
        verify.check_consistency(doc, kept)
    inc = next(d for d in fixture["inclusion"] if d["tree_size"] > 2)
    kept = {"size": inc["tree_size"], "root": "cd" * 32, "time": "2026-12-05T09:00:00Z"}
    with pytest.raises(verify.ProofError):
        verify.check_inclusion(inc, kept)
