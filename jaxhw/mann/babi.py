"""bAbI stories as padded arrays for memory networks: a checked parser, vocabulary, memories, splits.

The reader follows the bAbI v1.2 format: ``ID text`` lines whose ID restarts at 1 for each story; a question line
is ``ID question<TAB>answer<TAB>supporting IDs`` (with or without a space before the first tab). Supporting IDs
count every line of the story, questions included, and are mapped here to indices of the statements before the
question. Questions never enter the memory.

Arrays follow End-To-End Memory Networks (Sukhbaatar et al., NeurIPS 2015, arXiv:1503.08895): the
``memory_size`` (50) most recent statements before the question, each padded to ``sentence_len`` (11) word ids;
memory slot 0 holds the newest statement, so a slot's index is its temporal-encoding index. Word id 0 is ``nil``
(padding, a zero embedding) and 1 is ``unk``; answers are one class per answer string (``apple,milk`` included)
and live in the same vocabulary, as in the reference codes.
"""

from __future__ import annotations

import dataclasses
import functools
import tarfile
from collections.abc import Iterable, Sequence
from typing import Literal, NamedTuple

import numpy as np

from jaxhw.data import BabiExample, tokenize, vendored_path

#: Number of bAbI tasks (1 to 20).
NUM_TASKS = 20
#: Reserved word ids: ``NIL`` (0) pads stories and questions, ``UNK`` (1) stands for an out-of-vocabulary word.
NIL, UNK = 0, 1
ARCHIVE = "babi/babi-1k-en.tar.gz"


class BabiFormatError(ValueError):
  """A malformed bAbI line; the message names the file and the 1-based line number."""


def _fail(source: str, lineno: int, why: str, line: str) -> BabiFormatError:
  return BabiFormatError(f"{source}:{lineno}: {why}: {line!r}")


def parse_task_text(text: str, source: str = "<string>") -> list[BabiExample]:
  """Parses the text of one bAbI task file into questions with their stories.

  Args:
    text: the file's contents.
    source: the file's name, used in error messages.

  Returns:
    One `jaxhw.data.BabiExample` per question, in file order; ``supporting`` holds indices into the example's ``story``.

  Raises:
    BabiFormatError: a line without an integer ID, a question without an answer, a supporting ID that is not an
      earlier statement of the same story, or an ID that does not follow the previous one.
  """
  out: list[BabiExample] = []
  story: list[tuple[str, ...]] = []
  line_to_stmt: dict[int, int] = {}
  last_id = 0
  for lineno, line in enumerate(text.splitlines(), start=1):
    if not line.strip():
      continue
    head, _, body = line.strip("\r").partition(" ")
    try:
      idx = int(head)
    except ValueError:
      raise _fail(source, lineno, "expected 'ID text' with an integer ID", line) from None
    if idx == 1:
      story, line_to_stmt = [], {}
    elif idx != last_id + 1:
      raise _fail(source, lineno, f"line ID {idx} does not follow {last_id} (IDs restart at 1 per story)", line)
    last_id = idx
    if "\t" in body:
      parts = body.split("\t")
      if len(parts) < 2 or not parts[1].strip():
        raise _fail(source, lineno, "a question needs 'question<TAB>answer<TAB>supporting IDs'", line)
      question, answer = tokenize(parts[0]), parts[1].strip()
      if not question:
        raise _fail(source, lineno, "empty question", line)
      sup_text = parts[2].split() if len(parts) > 2 else []
      try:
        supporting = tuple(line_to_stmt[int(s)] for s in sup_text)
      except (ValueError, KeyError):
        raise _fail(source, lineno, f"supporting IDs {sup_text} must name earlier statements", line) from None
      out.append(BabiExample(tuple(story), question, answer, supporting))
    else:
      sentence = tokenize(body)
      if not sentence:
        raise _fail(source, lineno, "empty statement", line)
      line_to_stmt[idx] = len(story)
      story.append(sentence)
  return out


def format_task_text(examples: Sequence[BabiExample]) -> str:
  """Writes examples back in the bAbI format (one story per example; the inverse of `parse_task_text`)."""
  lines = []
  for ex in examples:
    for i, sentence in enumerate(ex.story, start=1):
      lines.append(f"{i} {' '.join(sentence)}.")
    sup = " ".join(str(s + 1) for s in ex.supporting)
    lines.append(f"{len(ex.story) + 1} {' '.join(ex.question)}?\t{ex.answer}\t{sup}")
  return "\n".join(lines) + "\n"


@functools.lru_cache(maxsize=1)
def _archive() -> dict[str, str]:
  texts = {}
  with tarfile.open(vendored_path(ARCHIVE), "r:gz") as tar:
    for member in tar.getmembers():
      if member.isfile() and member.name.endswith(".txt"):
        texts[member.name.split("/")[-1]] = tar.extractfile(member).read().decode("utf-8")
  return texts


def task_file(task: int, split: Literal["train", "test"]) -> str:
  """The file name of a task's split in the vendored archive, e.g. ``qa1_single-supporting-fact_train.txt``."""
  if not 1 <= task <= NUM_TASKS:
    raise ValueError(f"task must be in 1..{NUM_TASKS}, got {task}.")
  if split not in ("train", "test"):
    raise ValueError(f"split must be 'train' or 'test', got {split!r}.")
  name = next((n for n in _archive() if n.startswith(f"qa{task}_") and n.endswith(f"_{split}.txt")), None)
  if name is None:
    raise FileNotFoundError(f"bAbI task {task} ({split}) is missing from {vendored_path(ARCHIVE)}.")
  return name


@functools.lru_cache(maxsize=2 * NUM_TASKS)
def load_task(task: int, split: Literal["train", "test"] = "train") -> tuple[BabiExample, ...]:
  """The questions of one task's split (1,000 each in the 1k set), parsed with file/line error messages."""
  name = task_file(task, split)
  return tuple(parse_task_text(_archive()[name], source=name))


@dataclasses.dataclass(frozen=True)
class Vocab:
  """Word ids: 0 is ``nil`` (padding), 1 is ``unk``, then the training words and whole answers, sorted."""

  words: tuple[str, ...]

  @functools.cached_property
  def index(self) -> dict[str, int]:
    return {w: i for i, w in enumerate(self.words)}

  def __len__(self) -> int:
    return len(self.words)

  def encode(self, tokens: Iterable[str]) -> tuple[list[int], int]:
    """Word ids of `tokens` and how many were out of vocabulary (mapped to ``unk``)."""
    ids = [self.index.get(t, UNK) for t in tokens]
    return ids, sum(i == UNK for i in ids)


def build_vocab(examples: Iterable[BabiExample]) -> Vocab:
  """The vocabulary of story, question and answer tokens of `examples` (use training examples only)."""
  words: set[str] = set()
  for ex in examples:
    for sentence in ex.story:
      words.update(sentence)
    words.update(ex.question)
    words.add(ex.answer)
  words -= {"nil", "unk"}
  return Vocab(("nil", "unk", *sorted(words)))


class BabiArrays(NamedTuple):
  """Padded questions.

  Attributes:
    stories: ``[n, memory_size, sentence_len]`` int32 word ids; slot 0 is the newest statement, empty slots 0.
    queries: ``[n, sentence_len]`` int32.
    answers: ``[n]`` int32 answer classes (word ids).
    tasks: ``[n]`` int32 task numbers (1..20).
    story_len: ``[n]`` int32 statements in memory (at most ``memory_size``).
  """

  stories: np.ndarray
  queries: np.ndarray
  answers: np.ndarray
  tasks: np.ndarray
  story_len: np.ndarray

  def take(self, idx: np.ndarray) -> BabiArrays:
    return BabiArrays(*(a[idx] for a in self))

  @staticmethod
  def concat(parts: Sequence[BabiArrays]) -> BabiArrays:
    return BabiArrays(*(np.concatenate(a) for a in zip(*parts)))


@dataclasses.dataclass(frozen=True)
class VectorizeStats:
  """Counts of what vectorising had to adapt: unknown tokens, truncated sentences, capped stories."""

  oov_tokens: int = 0
  oov_answers: int = 0
  truncated_sentences: int = 0
  capped_stories: int = 0
  empty_stories: int = 0

  def __add__(self, other: VectorizeStats) -> VectorizeStats:
    return VectorizeStats(*(a + b for a, b in zip(dataclasses.astuple(self), dataclasses.astuple(other))))


def vectorize(examples: Sequence[BabiExample], vocab: Vocab, task: int = 0, *, memory_size: int = 50,
              sentence_len: int = 11) -> tuple[BabiArrays, VectorizeStats]:
  """Pads questions into arrays: the `memory_size` most recent statements, sentences of `sentence_len` ids.

  Args:
    examples: parsed questions.
    vocab: the vocabulary (words outside it become ``unk`` and are counted).
    task: the task number stored with each question.
    memory_size: memory slots M.
    sentence_len: words per sentence J (longer sentences are truncated and counted).

  Returns:
    ``(arrays, stats)``. An empty story gives an all-``nil`` memory with ``story_len`` 0.
  """
  if memory_size < 1 or sentence_len < 1:
    raise ValueError(f"memory_size and sentence_len must be >= 1, got {memory_size}, {sentence_len}.")
  n = len(examples)
  stories = np.zeros((n, memory_size, sentence_len), np.int32)
  queries = np.zeros((n, sentence_len), np.int32)
  answers = np.zeros((n,), np.int32)
  story_len = np.zeros((n,), np.int32)
  oov = oov_ans = trunc = capped = empty = 0

  def put(row: np.ndarray, tokens: Sequence[str]) -> None:
    nonlocal oov, trunc
    ids, unknown = vocab.encode(tokens)
    oov += unknown
    if len(ids) > sentence_len:
      trunc += 1
      ids = ids[:sentence_len]
    row[: len(ids)] = ids

  for i, ex in enumerate(examples):
    recent = ex.story[-memory_size:]
    capped += len(ex.story) > memory_size
    empty += not ex.story
    story_len[i] = len(recent)
    for slot, sentence in enumerate(reversed(recent)):
      put(stories[i, slot], sentence)
    put(queries[i], ex.question)
    answers[i] = vocab.index.get(ex.answer, UNK)
    oov_ans += answers[i] == UNK
  arrays = BabiArrays(stories, queries, answers, np.full((n,), task, np.int32), story_len)
  return arrays, VectorizeStats(oov, int(oov_ans), trunc, capped, empty)


@dataclasses.dataclass(frozen=True)
class BabiSplits:
  """Train / validation / test arrays with their vocabulary.

  Attributes:
    train, val, test: `BabiArrays`; validation is carved from the training files, never from test.
    vocab: built from the training files of `tasks`.
    tasks: the task numbers included.
    candidates: per task, the answer classes seen in its training answers (sorted).
    stats: what vectorising adapted, per split.
  """

  train: BabiArrays
  val: BabiArrays
  test: BabiArrays
  vocab: Vocab
  tasks: tuple[int, ...]
  candidates: dict[int, tuple[int, ...]]
  stats: dict[str, VectorizeStats]


def load_splits(tasks: Sequence[int] = tuple(range(1, NUM_TASKS + 1)), *, val_fraction: float = 0.1,
                val_split: Literal["last", "random"] = "last", seed: int = 0, memory_size: int = 50,
                sentence_len: int = 11, train_limit: int | None = None) -> BabiSplits:
  """Loads and vectorises `tasks` with one shared vocabulary (joint training when several tasks are given).

  Args:
    tasks: task numbers, 1..20.
    val_fraction: share of each task's training questions held out for validation, in [0, 1).
    val_split: ``"last"`` takes the last questions of each task's training file (the per-task protocol);
      ``"random"`` draws them with `seed` (the joint protocol).
    seed: seed of the random validation draw.
    memory_size: memory slots M.
    sentence_len: words per sentence J.
    train_limit: keep only the first this many training questions per task (tests and smoke runs).

  Returns:
    A `BabiSplits`.
  """
  tasks = tuple(int(t) for t in tasks)
  if not tasks or any(not 1 <= t <= NUM_TASKS for t in tasks):
    raise ValueError(f"tasks must be a non-empty list of task numbers in 1..{NUM_TASKS}, got {tasks}.")
  if not 0.0 <= val_fraction < 1.0:
    raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}.")
  if val_split not in ("last", "random"):
    raise ValueError(f"val_split must be 'last' or 'random', got {val_split!r}.")
  train_ex = {t: load_task(t, "train")[:train_limit] for t in tasks}
  vocab = build_vocab(ex for t in tasks for ex in train_ex[t])
  rng = np.random.default_rng(seed)
  parts: dict[str, list[BabiArrays]] = {"train": [], "val": [], "test": []}
  stats = {"train": VectorizeStats(), "test": VectorizeStats()}  # "train" covers the validation questions too
  candidates = {}
  for t in tasks:
    arr, st = vectorize(train_ex[t], vocab, t, memory_size=memory_size, sentence_len=sentence_len)
    n = len(arr.answers)
    n_val = int(round(val_fraction * n))
    order = np.arange(n) if val_split == "last" else rng.permutation(n)
    val_idx, train_idx = np.sort(order[n - n_val:]), np.sort(order[: n - n_val])
    parts["train"].append(arr.take(train_idx))
    parts["val"].append(arr.take(val_idx))
    stats["train"] += st
    candidates[t] = tuple(sorted({int(a) for a in arr.answers[train_idx]}))
    test, st = vectorize(load_task(t, "test"), vocab, t, memory_size=memory_size, sentence_len=sentence_len)
    parts["test"].append(test)
    stats["test"] += st
  joined = {k: BabiArrays.concat(v) for k, v in parts.items()}
  return BabiSplits(joined["train"], joined["val"], joined["test"], vocab, tasks, candidates, stats)
