"""Review 27: ``_whole`` validation of shard, offset and size arguments
(python/enforcelog/_store.py), added after review 26.

Each test fails if the finding it is named after is real; confirmed ones are
skipped with the reason so the suite stays green."""

import pytest


class Offset:
    """An integer that is not an ``int``: what numpy (``np.int64``) and
    pandas hand out, and what every ``operator.index`` consumer takes."""

    def __init__(self, value):
        self.value = value

    def __index__(self):
        return self.value

    def __repr__(self):
        return f"Offset({self.value})"


def store_with_events(tmp_path, n=5):
    import enforcelog

    store = enforcelog.Store(str(tmp_path / "store"), durability="none")
    for i in range(n):
        store.record("acme", "budget", "KILLED", run_id=f"run-{i:04d}",
                     details={"step": i, "blob": "\x00" * 64, "note": "\u200b",
                              "deep": {"a": {"b": {"c": [0, 0, 0]}}}})
    store.flush()
    return store


def test_an_index_integer_is_taken_as_an_offset(tmp_path):
    """An offset read from a numpy/pandas column (``np.int64``) is a whole
    number: ``_whole`` checks ``isinstance(value, int)`` and refuses it with
    InvalidOptionsError "expected a whole number", where ``query`` and the
    binding itself take it (``__index__``)."""
    store = store_with_events(tmp_path)
    try:
        proof = store.prove_inclusion(Offset(2))
        assert proof["leaf_index"] == 2
        store.prove_consistency(Offset(1))
        store.head(shard=Offset(0))
    finally:
        store.close()


@pytest.mark.parametrize("option", ["from_offset", "limit", "from_shard"])
@pytest.mark.parametrize("value", [-1, 1 << 70])
def test_query_offsets_out_of_range_raise_an_enforcelog_error(tmp_path, option, value):
    """The class of defect review 26 fixed for ``head``/``prove_*`` (an
    out-of-range number left to the binding) is still open in ``query``:
    its offsets, limit and shard are the same kind of argument."""
    import enforcelog

    store = store_with_events(tmp_path)
    try:
        with pytest.raises(enforcelog.Error):
            store.query(**{option: value})
    finally:
        store.close()


@pytest.mark.parametrize("call", [
    lambda s: s.prove_inclusion(True),
    lambda s: s.prove_inclusion(0, tree_size=-1),
    lambda s: s.prove_inclusion(0, tree_size=1 << 64),
    lambda s: s.prove_consistency(-1),
    lambda s: s.prove_consistency(0, new_size=1.0),
    lambda s: s.head(shard=False),
    lambda s: s.prove_inclusion(0, shard=1 << 32),
])
def test_bad_proof_arguments_raise_invalid_options(tmp_path, call):
    """Refutes: ``_whole`` letting a bool, a float or an out-of-range number
    reach the binding in ``head``/``prove_*`` (a bare OverflowError or a
    bool read as 0/1)."""
    import enforcelog

    store = store_with_events(tmp_path)
    try:
        with pytest.raises(enforcelog.InvalidOptionsError):
            call(store)
    finally:
        store.close()
