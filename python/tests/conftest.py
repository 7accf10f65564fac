import pytest

import enforcelog


@pytest.fixture
def store_dir(tmp_path):
    return tmp_path / "store"


@pytest.fixture
def store(store_dir):
    s = enforcelog.Store(store_dir)
    yield s
    s.close()
