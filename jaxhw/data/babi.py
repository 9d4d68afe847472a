"""bAbI 1k English QA tasks (v1.2) from the vendored archive."""

from __future__ import annotations

import functools
import tarfile
from typing import Literal, NamedTuple

from jaxhw.data._files import vendored_path

NUM_TASKS = 20


class BabiExample(NamedTuple):
  """One bAbI question with the story sentences that precede it.

  Attributes:
    story: the story sentences before the question, in order, as lower-cased token lists.
    question: the question tokens.
    answer: the answer string (comma-separated words for list answers, as in the files).
    supporting: indices into ``story`` of the supporting facts.
  """

  story: tuple[tuple[str, ...], ...]
  question: tuple[str, ...]
  answer: str
  supporting: tuple[int, ...]


def tokenize(text: str) -> tuple[str, ...]:
  """Lower-cases and splits a bAbI sentence, dropping the final punctuation."""
  return tuple(text.lower().replace("?", " ").replace(".", " ").split())


@functools.lru_cache(maxsize=1)
def _archive_texts() -> dict[str, str]:
  texts = {}
  with tarfile.open(vendored_path("babi/babi-1k-en.tar.gz"), "r:gz") as tar:
    for member in tar.getmembers():
      if member.isfile():
        texts[member.name.split("/")[-1]] = tar.extractfile(member).read().decode("utf-8")
  return texts


def parse_babi(text: str) -> list[BabiExample]:
  """Parses the text of one bAbI task file."""
  out: list[BabiExample] = []
  story: list[tuple[str, ...]] = []
  line_to_index: dict[int, int] = {}
  for line in text.splitlines():
    if not line.strip():
      continue
    idx_str, body = line.split(" ", 1)
    idx = int(idx_str)
    if idx == 1:
      story, line_to_index = [], {}
    if "\t" in body:
      q, ans, sup = body.split("\t")
      out.append(BabiExample(tuple(story), tokenize(q), ans.strip(),
                             tuple(line_to_index[int(s)] for s in sup.split())))
    else:
      line_to_index[idx] = len(story)
      story.append(tokenize(body))
  return out


def load_babi(task: int, split: Literal["train", "test"] = "train") -> list[BabiExample]:
  """Loads one bAbI task.

  Args:
    task: task number, 1..20.
    split: ``"train"`` or ``"test"`` (1,000 questions each).

  Returns:
    The task's questions in file order.

  References:
    Weston et al., *Towards AI-Complete Question Answering: A Set of Prerequisite Toy Tasks*, 2015.
  """
  if not 1 <= task <= NUM_TASKS:
    raise ValueError(f"task must be in 1..{NUM_TASKS}, got {task}.")
  if split not in ("train", "test"):
    raise ValueError(f"split must be 'train' or 'test', got {split!r}.")
  texts = _archive_texts()
  name = next((n for n in texts if n.startswith(f"qa{task}_") and n.endswith(f"_{split}.txt")), None)
  if name is None:
    raise FileNotFoundError(f"bAbI task {task} ({split}) is missing from {vendored_path('babi/babi-1k-en.tar.gz')}.")
  return parse_babi(texts[name])
