"""The README's Python example runs and prints what it says."""

import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parents[2] / "README.md"


def test_readme_python_example_runs(tmp_path):
    section = README.read_text().split("## Python\n", 1)[1].split("\n## ", 1)[0]
    [code] = re.findall(r"```python\n(.*?)```", section, re.S)
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                         text=True, check=True, stdin=subprocess.DEVNULL)
    assert out.stdout.strip() == "2"
    assert (tmp_path / "enforcelog-data").is_dir()
