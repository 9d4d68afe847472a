"""The README's "Use it on your own model" examples run as written (in order, sharing one namespace)."""

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def _examples() -> list[str]:
  text = README.read_text()
  section = text.split("## Use it on your own model", 1)[1].split("\n## ", 1)[0]
  return re.findall(r"```python\n(.*?)```", section, flags=re.S)


def test_there_are_three_short_examples():
  blocks = _examples()
  assert len(blocks) == 3
  assert all(len(b.strip().splitlines()) <= 20 for b in blocks), [len(b.splitlines()) for b in blocks]


@pytest.mark.slow
def test_examples_run(capsys):
  namespace: dict = {}
  for block in _examples():
    exec(compile(block, str(README), "exec"), namespace)  # noqa: S102 - the README is ours
  out = capsys.readouterr().out
  assert "catastrophic bits of" in out and "read noise 0.20" in out and "burst: SNN accuracy" in out
  # the examples train real models: the clean network is far above chance
  assert float(re.search(r"read noise 0.00 x G_max: accuracy ([0-9.]+)", out).group(1)) > 0.85
