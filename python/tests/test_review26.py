"""Review 26: heads that name their log, from Python (``Store.head(shard=)``,
``heads()``, ``prove_*(shard=)``) and the standalone verifier's v2 bytes.

Each test fails if the finding it is named after is real; confirmed ones are
skipped with the reason so the suite stays green."""

import importlib.util
import pathlib

import pytest

HERE = pathlib.Path(__file__).resolve().parent
spec = importlib.util.spec_from_file_location("verify", HERE.parent / "enforcelog" / "verify.py")
verify = importlib.util.module_from_spec(spec)
spec.loader.exec_module(verify)


def two_shards(tmp_path):
    import enforcelog

    path = str(tmp_path / "store")
    first = enforcelog.Store(path, durability="none")
    second = enforcelog.Store(path, durability="none")
    for i in range(7):
        first.record("acme", "budget", "KILLED", run_id=f"run-{i:04d}",
                     details={"step": i, "blob": "\x00" * 64})
    for i in range(3):
        second.record("globex", "budget", "BLOCKED", run_id=f"run-{i:04d}",
                      details={"step": i})
    first.flush()
    second.flush()
    return first, second


@pytest.mark.parametrize("shard", [-1, 1 << 32, 1 << 70])
def test_an_out_of_range_shard_raises_an_enforcelog_error(tmp_path, shard):
    """A shard number no directory can have is the caller's mistake: it
    must come back as enforcelog.Error (InvalidOptionsError), as every other
    bad option does, not as a bare OverflowError from the binding."""
    import enforcelog

    first, second = two_shards(tmp_path)
    try:
        for call in (lambda: first.head(shard=shard),
                     lambda: first.prove_inclusion(0, 1, shard=shard),
                     lambda: first.prove_consistency(0, 1, shard=shard),
                     # The same class: offsets and sizes out of range.
                     lambda: first.prove_inclusion(shard, 1, shard=0),
                     lambda: first.prove_inclusion(0, shard, shard=0),
                     lambda: first.prove_consistency(shard, 1, shard=0),
                     lambda: first.prove_consistency(0, shard, shard=0)):
            with pytest.raises(enforcelog.Error):
                call()
    finally:
        second.close()
        first.close()


def test_a_bool_shard_is_refused_not_read_as_shard_one(tmp_path):
    """``head(shard=True)`` is a type mistake (a flag passed where a number
    goes): the options of Store() refuse bools; shard= must too rather than
    silently give shard 1's head."""
    import enforcelog

    first, second = two_shards(tmp_path)
    try:
        with pytest.raises(enforcelog.Error):
            first.head(shard=True)
    finally:
        second.close()
        first.close()


def test_every_head_of_a_sharded_directory_names_its_own_log(tmp_path):
    """Refutes: heads() naming the same store id twice, or a shard's head
    whose root is another shard's. Each named head's signed bytes start with
    the v2 prefix and carry that head's store id and shard."""
    first, second = two_shards(tmp_path)
    try:
        heads = first.heads()
        assert [(h["shard"], h["size"]) for h in heads] == [(0, 7), (1, 3)]
        assert heads[0]["store_id"] != heads[1]["store_id"]
        for h in heads:
            assert h == {**second.head(shard=h["shard"]), "time": h["time"]}
            raw = verify.head_signed_bytes(h["size"], bytes.fromhex(h["root"]), h["time"],
                                           h["store_id"], h["shard"])
            prefix = verify.SIGNED_PREFIX_V2
            assert raw.startswith(prefix)
            assert raw[len(prefix):len(prefix) + 16] == bytes.fromhex(h["store_id"])
            assert raw[len(prefix) + 16:len(prefix) + 20] == h["shard"].to_bytes(4, "little")
    finally:
        second.close()
        first.close()
