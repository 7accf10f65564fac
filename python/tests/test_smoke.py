import enforcelog


def test_record_returns_offsets_and_counts(store):
    assert store.record("t1", "r1", "BLOCKED") == 0
    assert store.record("t1", "r1", enforcelog.Action.STOPPED, run_id="x") == 1
    assert store.stats("t1", "r1").trigger_count == 2
