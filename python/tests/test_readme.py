"""The README's Python examples run and print what their comments say."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[2] / "README.md"
SECTION = README.read_text().split("## Python\n", 1)[1].split("\n## ", 1)[0]
EXAMPLES = re.findall(r"```python\n(.*?)```", SECTION, re.S)


def test_readme_python_section_has_the_batch_and_the_session_examples():
    assert len(EXAMPLES) == 2
    assert "store.begin()" in EXAMPLES[0] and "AsyncSession" in EXAMPLES[1]


@pytest.mark.parametrize("code", EXAMPLES, ids=["batch_and_detached", "sqlalchemy_session"])
def test_readme_python_example_runs(tmp_path, code):
    # Each example ends by printing a count, and says which in a comment.
    [expected] = re.findall(r"^\s*print\(.*\)\s*#\s*(\S+)\s*$", code, re.M)
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                         text=True, check=True, stdin=subprocess.DEVNULL)
    assert out.stdout.strip() == expected
    assert (tmp_path / "enforcelog-data").is_dir()
