"""The README's quick start runs as written (in a temp folder)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def _python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_quick_start_runs(tmp_path: Path) -> None:
    quick_start = _python_blocks()[0]
    assert "ld.optimize(" in quick_start and "StreamingDataLoader" in quick_start
    script = quick_start.replace(
        "for batch in loader:\n        ...", "n = sum(len(b['index']) for b in loader)\n    print(n)"
    )
    (tmp_path / "quick_start.py").write_text(script)
    proc = subprocess.run(
        [sys.executable, "quick_start.py"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().splitlines()[-1] == "1000"
    assert (tmp_path / "my_optimized_dataset" / "index.json").is_file()
