"""Checks enforcelog's Merkle proofs without enforcelog.

This module is the auditor's side of the tamper-evident log (docs/AUDIT.md):
it verifies inclusion and consistency proofs from their JSON, using only the
Python standard library. It shares no code with the Rust library (it does not
import the rest of this package), so the two implementations check each
other; copy this one file to verify proofs on a machine without enforcelog.

The tree is RFC 9162's: SHA-256, a leaf hashed as ``SHA-256(0x00 || data)``,
an inner node as ``SHA-256(0x01 || left || right)``.

>>> leaf = leaf_hash(b"")
>>> leaf.hex()[:16]
'6e340b9cffb37a98'
>>> verify_inclusion(0, 1, leaf, [], leaf)
True
"""

import hashlib
import json
import re

__all__ = [
    "ProofError",
    "check_head",
    "head_signed_bytes",
    "leaf_hash",
    "node_hash",
    "empty_root",
    "verify_inclusion",
    "verify_consistency",
    "check_inclusion",
    "check_consistency",
    "record_leaf_hash",
    "parse",
]


class ProofError(ValueError):
    """A proof, head or size that does not check."""


def leaf_hash(data):
    """``SHA-256(0x00 || data)``."""
    return hashlib.sha256(b"\x00" + bytes(data)).digest()


def record_leaf_hash(offset, timestamp_us, payload):
    """The leaf of the log record at ``offset``: ``SHA-256(0x00 || offset
    (u64 LE) || timestamp_us (i64 LE) || payload)``. Compare it with an
    inclusion proof's ``leaf_hash`` to bind the proof to the record you
    hold."""
    offset = _size(offset, "the offset")
    if isinstance(timestamp_us, bool) or not isinstance(timestamp_us, int) \
            or not -(1 << 63) <= timestamp_us < 1 << 63:
        raise ProofError("the timestamp is not an i64")
    if not isinstance(payload, (bytes, bytearray)):
        raise ProofError("the payload is not bytes")
    return leaf_hash(offset.to_bytes(8, "little") + timestamp_us.to_bytes(8, "little", signed=True)
                     + bytes(payload))


def node_hash(left, right):
    """``SHA-256(0x01 || left || right)``."""
    return hashlib.sha256(b"\x01" + left + right).digest()


def empty_root():
    """The root of the empty tree, ``SHA-256("")``."""
    return hashlib.sha256(b"").digest()


def _hash(value, what):
    if not isinstance(value, (bytes, bytearray)) or len(value) != 32:
        raise ProofError(f"{what} is not a 32-byte hash")
    return bytes(value)


def _size(value, what):
    # bool is an int in Python: refuse it, and anything past u64.
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 1 << 64:
        raise ProofError(f"{what} is not a size")
    return value


def verify_inclusion(index, size, leaf, path, root):
    """True when ``leaf`` is leaf ``index`` of the tree of ``size`` leaves
    whose root is ``root``, by the audit path ``path`` (leaf side first).
    Raises ProofError otherwise. Every hash of the path is used, and the
    path must have exactly the length the index and size call for."""
    index, size = _size(index, "the leaf index"), _size(size, "the tree size")
    r = _hash(leaf, "the leaf hash")
    root = _hash(root, "the root")
    if index >= size:
        raise ProofError(f"leaf {index} is not in a tree of {size}")
    f, s = index, size - 1
    for i, p in enumerate(path):
        p = _hash(p, f"path hash {i}")
        if s == 0:
            raise ProofError("the path is too long")
        if f & 1 or f == s:
            r = node_hash(p, r)
            while not f & 1 and f != 0:
                f >>= 1
                s >>= 1
        else:
            r = node_hash(r, p)
        f >>= 1
        s >>= 1
    if s != 0:
        raise ProofError("the path is too short")
    if r != root:
        raise ProofError("the path does not lead to the root")
    return True


def verify_consistency(old, new, old_root, new_root, path):
    """True when the tree of ``new`` leaves with root ``new_root`` extends
    the tree of ``old`` leaves with root ``old_root``, by the consistency
    proof ``path``. Raises ProofError otherwise. Each hash enters the new
    root, and the old one too where the old tree reaches: none is skipped."""
    old, new = _size(old, "the old size"), _size(new, "the new size")
    old_root = _hash(old_root, "the old root")
    new_root = _hash(new_root, "the new root")
    path = [_hash(p, f"path hash {i}") for i, p in enumerate(path)]
    if old > new:
        raise ProofError(f"the old size {old} is above the new size {new}")
    if old == new:
        if path:
            raise ProofError("equal sizes need an empty proof")
        if old_root != new_root:
            raise ProofError("equal sizes, different roots")
        return True
    if old == 0:
        if path:
            raise ProofError("an empty old tree needs an empty proof")
        if old_root != empty_root():
            raise ProofError("the old root is not the empty tree's")
        return True
    if old & (old - 1) == 0:
        # A perfect old tree: its root is the proof's first hash.
        path = [old_root] + path
    if not path:
        raise ProofError("the proof is empty")
    f, s = old - 1, new - 1
    while f & 1:
        f >>= 1
        s >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if s == 0:
            raise ProofError("the proof is too long")
        if f & 1 or f == s:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            while not f & 1 and f != 0:
                f >>= 1
                s >>= 1
        else:
            sr = node_hash(sr, c)
        f >>= 1
        s >>= 1
    if s != 0:
        raise ProofError("the proof is too short")
    if fr != old_root:
        raise ProofError("the proof does not lead to the old root")
    if sr != new_root:
        raise ProofError("the proof does not lead to the new root")
    return True


def _no_duplicates(pairs):
    out = {}
    for key, value in pairs:
        if key in out:
            raise ProofError(f"the key {key!r} appears twice")
        out[key] = value
    return out


def _refuse_float(text):
    raise ProofError(f"{text} is not an integer")


def _int(text):
    # "-0" is an integer to Python's json, a float to Rust's: refused by both.
    if text.startswith("-0"):
        raise ProofError(f"{text} is not a size")
    return int(text)


def parse(text):
    """A proof or head document from its JSON text, strictly: a duplicated
    key, a float or ``-0`` is refused (ProofError), as the Rust side does."""
    try:
        return json.loads(text, object_pairs_hook=_no_duplicates, parse_float=_refuse_float,
                          parse_int=_int)
    except ProofError:
        raise
    except (ValueError, TypeError, RecursionError) as e:
        raise ProofError(f"not JSON: {e}") from None


def _object(doc, keys, what):
    """``doc`` (a dict, or its JSON text) holding exactly ``keys``."""
    if isinstance(doc, (str, bytes, bytearray)):
        doc = parse(doc)
    if not isinstance(doc, dict):
        raise ProofError(f"the {what} is not a JSON object")
    unknown = set(doc) - set(keys)
    if unknown:
        raise ProofError(f"the {what} has unknown fields {sorted(map(str, unknown))}")
    return doc


def _hex(doc, key):
    value = doc.get(key)
    if not isinstance(value, str) or len(value) != 64:
        raise ProofError(f"{key!r} is not 64 hex digits")
    try:
        return bytes.fromhex(value)
    except ValueError:
        raise ProofError(f"{key!r} is not 64 hex digits") from None


def _hex_list(doc, key):
    value = doc.get(key)
    if not isinstance(value, list):
        raise ProofError(f"{key!r} is not a list")
    return [_hex({"hash": v}, "hash") for v in value]


def _trusted(head, size_key, root_key, doc):
    """Checks the proof's size and root against a head the caller kept."""
    if head is None:
        return
    head = _object(head, _HEAD_KEYS, "trusted head")
    if _size(head.get("size"), "the trusted head's size") != doc.get(size_key):
        raise ProofError(f"the proof's {size_key} is not the trusted head's size")
    if _hex(head, "root") != _hex(doc, root_key):
        raise ProofError(f"the proof's {root_key} is not the trusted head's root")


def check_inclusion(doc, head=None):
    """Verifies an inclusion proof given as its JSON object (a dict, or its
    text): ``leaf_index``, ``tree_size``, ``leaf_hash``, ``path``, ``root``.
    With ``head`` (a head you kept: its size and root), the proof must be of
    that tree; without it, the proof is checked only against the root it
    names itself, which proves nothing about a log you do not trust."""
    doc = _object(doc, ("leaf_index", "tree_size", "leaf_hash", "path", "root"), "proof")
    _trusted(head, "tree_size", "root", doc)
    return verify_inclusion(
        doc.get("leaf_index"),
        doc.get("tree_size"),
        _hex(doc, "leaf_hash"),
        _hex_list(doc, "path"),
        _hex(doc, "root"),
    )


def check_consistency(doc, head=None):
    """Verifies a consistency proof given as its JSON object (a dict, or its
    text): ``old_size``, ``new_size``, ``old_root``, ``new_root``, ``path``.
    With ``head`` (the earlier head you kept), the proof must start from
    it: that is the audit. Without it, the proof is checked only against
    the old root it names itself."""
    doc = _object(doc, ("old_size", "new_size", "old_root", "new_root", "path"), "proof")
    _trusted(head, "old_size", "old_root", doc)
    return verify_consistency(
        doc.get("old_size"),
        doc.get("new_size"),
        _hex(doc, "old_root"),
        _hex(doc, "new_root"),
        _hex_list(doc, "path"),
    )


SIGNED_PREFIX = b"enforcelog tree head v1\n"
# Heads that name their log (store id and shard).
SIGNED_PREFIX_V2 = b"enforcelog tree head v2\n"

_HEAD_KEYS = ("store_id", "shard", "size", "root", "time", "signature")

# A store id as the store writes it: 32 lowercase hex digits.
_STORE_ID = re.compile(r"\A[0-9a-f]{32}\Z")


def _name(doc):
    """The log a head names, ``(store_id, shard)``, or ``(None, None)`` for a
    head of an earlier release; both fields or neither."""
    store_id, shard = doc.get("store_id"), doc.get("shard")
    if store_id is None and shard is None and "store_id" not in doc and "shard" not in doc:
        return None, None
    if not isinstance(store_id, str) or not _STORE_ID.match(store_id) or store_id.endswith("0" * 8):
        raise ProofError("'store_id' is not a store id (32 lowercase hex digits, not zero)")
    if isinstance(shard, bool) or not isinstance(shard, int) or not 0 <= shard < 1 << 32:
        raise ProofError("'shard' is not a shard number")
    return store_id, shard


# An RFC 3339 instant as the store writes them (a zone required).
_RFC3339 = re.compile(
    r"\A\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?(Z|[+-]\d{2}:\d{2})\Z")

# Public keys no one holds a secret for, which a lax Ed25519 check lets
# "sign" anything: the identity point, and the all-zero encoding.
_NO_ONES_KEYS = {bytes([1]) + bytes(31), bytes(32)}


def head_signed_bytes(size, root, time, store_id=None, shard=None):
    """The bytes a tree head's signature covers: for a head that names its
    log, the v2 prefix, the store id (the 16 bytes its hex spells) and the
    shard (u32 little-endian); for one that does not, the v1 prefix; then
    the size (u64 little-endian), the root (32 bytes), the length of the
    time text (u32 little-endian) and the text (UTF-8)."""
    size = _size(size, "the size")
    root = _hash(root, "the root")
    if not isinstance(time, str) or not _RFC3339.match(time):
        raise ProofError("the time is not an RFC 3339 instant")
    try:
        text = time.encode("utf-8")
    except UnicodeEncodeError:
        raise ProofError("the time is not UTF-8 text") from None
    if store_id is None and shard is None:
        prefix = SIGNED_PREFIX
    else:
        store_id, shard = _name({"store_id": store_id, "shard": shard})
        prefix = SIGNED_PREFIX_V2 + bytes.fromhex(store_id) + shard.to_bytes(4, "little")
    return prefix + size.to_bytes(8, "little") + root + len(text).to_bytes(4, "little") + text


def check_head(doc, public_key=None):
    """Verifies a signed tree head given as its JSON object (a dict): the
    Ed25519 signature over ``head_signed_bytes``, and, when ``public_key``
    (32 bytes or 64 hex digits) is given, that it is that key's. Needs the
    ``cryptography`` package (only this function does). Returns the head as
    ``(size, root bytes, time)``."""
    try:
        from cryptography.exceptions import InvalidSignature
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
    except ImportError:  # pragma: no cover - the tests install it
        raise ProofError("checking a signature needs the cryptography package") from None
    doc = _object(doc, _HEAD_KEYS, "head")
    store_id, shard = _name(doc)
    sig = doc.get("signature")
    if not isinstance(sig, dict) or sig.get("algorithm") != "ed25519":
        raise ProofError("the head has no ed25519 signature")
    _object(sig, ("algorithm", "public_key", "value"), "signature")
    key = _hex(sig, "public_key")
    if key in _NO_ONES_KEYS:
        raise ProofError("the public key is one no one holds a secret for")
    value = sig.get("value")
    if not isinstance(value, str) or len(value) != 128:
        raise ProofError("'value' is not 128 hex digits")
    try:
        signature = bytes.fromhex(value)
    except ValueError:
        raise ProofError("'value' is not 128 hex digits") from None
    if public_key is not None:
        try:
            wanted = bytes.fromhex(public_key) if isinstance(public_key, str) else bytes(public_key)
        except (ValueError, TypeError):
            raise ProofError("the public key given is not 64 hex digits") from None
        if wanted != key:
            raise ProofError("the head is signed by another key")
    root = _hex(doc, "root")
    if doc.get("size") == 0 and root != empty_root():
        raise ProofError("a head of size 0 must have the empty tree's root")
    message = head_signed_bytes(doc.get("size"), root, doc.get("time"), store_id, shard)
    try:
        Ed25519PublicKey.from_public_bytes(key).verify(signature, message)
    except (InvalidSignature, ValueError):
        raise ProofError("the signature does not match the head and key") from None
    return doc["size"], root, doc["time"]
