"""Review 28: the fixes of review 27 in Python (python/enforcelog/_store.py:
``_whole`` takes any integer type through ``operator.index``; ``query``
validates ``from_offset``, ``limit`` and ``from_shard``).

Each test fails if the finding it is named after is real; confirmed ones are
skipped with the reason so the suite stays green."""

import pytest


class Offset:
    """An integer that is not an ``int`` (what numpy and pandas hand out)."""

    def __init__(self, value):
        self.value = value

    def __index__(self):
        return self.value

    def __repr__(self):
        return f"Offset({self.value})"


class NotAnInteger:
    """``__index__`` refusing, as ``pd.NA`` or a float-like does."""

    def __index__(self):
        raise TypeError("not an integer")


def store_with_events(tmp_path, n=5):
    import enforcelog

    store = enforcelog.Store(str(tmp_path / "store"), durability="none")
    for i in range(n):
        store.record("acme", "budget", "KILLED", run_id=f"run-{i:04d}",
                     details={"step": i, "blob": "\x00" * 64, "note": "\u200b\ufeff",
                              "deep": {"a": {"b": {"c": [0, 0, 0]}}}})
    store.flush()
    return store


def test_query_takes_index_integers_for_its_offsets(tmp_path):
    """Refutes: ``query`` refusing an ``__index__`` integer, or passing the
    object on to the binding instead of the int ``_whole`` made of it."""
    store = store_with_events(tmp_path)
    try:
        page = store.query(from_offset=Offset(2), limit=Offset(2), from_shard=Offset(0))
        assert [e.offset for e in page.events] == [2, 3]
        assert page.next_offset == 4
    finally:
        store.close()


@pytest.mark.parametrize("option", ["from_offset", "limit", "from_shard"])
@pytest.mark.parametrize("value", [True, 1.0, "1", NotAnInteger(), Offset(-1), Offset(1 << 70)])
def test_query_refuses_what_is_not_a_whole_number_with_invalid_options(tmp_path, option, value):
    """Refutes: a bool, a float, a string, an ``__index__`` that refuses or
    returns a number out of range reaching the binding from ``query`` (a
    bare TypeError/OverflowError, or a bool read as 1)."""
    import enforcelog

    store = store_with_events(tmp_path)
    try:
        with pytest.raises(enforcelog.InvalidOptionsError) as info:
            store.query(**{option: value})
        assert info.value.field == option
    finally:
        store.close()


def test_query_limit_zero_is_an_enforcelog_error(tmp_path):
    """Refutes: ``limit=0`` (inside ``_whole``'s range) ending in a panic or
    an empty page forever: the store refuses it as an invalid option."""
    import enforcelog

    store = store_with_events(tmp_path)
    try:
        with pytest.raises(enforcelog.Error):
            store.query(limit=0)
    finally:
        store.close()
