"""bAbI parsing and vectorising against the 1k files' published facts, plus malformed input."""

import numpy as np
import pytest

from jaxhw.data import BabiExample
from jaxhw.mann import babi
from jaxhw.mann.batches import BucketedBatches

# Per task (1..20): stories train/test, statements train/test, V (train words + whole answers), answer classes.
STORIES = [(200, 200)] * 3 + [(1000, 1000)] + [(200, 200)] * 10 + [(250, 250), (1000, 1000), (125, 125), (198, 199),
                                                                    (1000, 1000), (94, 93)]
STATEMENTS = [(2000, 2000), (4338, 4398), (14796, 14710), (2000, 2000), (5038, 5290), (2066, 2050), (2638, 2470),
              (2634, 2710), (2000, 2000), (2000, 2000), (2000, 2000), (2000, 2000), (2000, 2000), (2372, 2352),
              (2000, 2000), (9000, 9000), (250, 250), (1230, 1210), (5000, 5000), (1000, 1000)]
VOCAB = [19, 33, 34, 14, 43, 35, 43, 44, 23, 24, 26, 20, 26, 25, 17, 17, 18, 18, 31, 35]
ANSWERS = [6, 6, 6, 6, 7, 2, 4, 13, 2, 3, 6, 6, 6, 6, 4, 4, 2, 2, 12, 7]


def _raw_counts(task, split):
  text = babi._archive()[babi.task_file(task, split)]
  ids = [int(line.split(" ", 1)[0]) for line in text.splitlines() if line.strip()]
  questions = sum("\t" in line for line in text.splitlines())
  return sum(i == 1 for i in ids), len(ids) - questions


@pytest.mark.parametrize("task", range(1, 21))
def test_parser_counts_per_task(task):
  train, test = babi.load_task(task, "train"), babi.load_task(task, "test")
  assert len(train) == 1000 and len(test) == 1000
  assert [_raw_counts(task, s) for s in ("train", "test")] == [(STORIES[task - 1][i], STATEMENTS[task - 1][i])
                                                              for i in range(2)]
  vocab = babi.build_vocab(train)
  assert len(vocab) - 2 == VOCAB[task - 1]
  assert len({ex.answer for ex in train}) == ANSWERS[task - 1]
  for ex in train[:200]:
    assert all(0 <= s < len(ex.story) for s in ex.supporting)


def test_task3_memory_holds_the_last_50_statements():
  vocab = babi.build_vocab(babi.load_task(3, "train"))
  for split, capped in (("train", 377), ("test", 387)):
    examples = babi.load_task(3, split)
    arrays, stats = babi.vectorize(examples, vocab, 3)
    assert stats.capped_stories == capped
    i = next(k for k, ex in enumerate(examples) if len(ex.story) > 50)
    ex = examples[i]
    assert arrays.story_len[i] == 50
    newest, oldest = vocab.encode(ex.story[-1])[0], vocab.encode(ex.story[-50])[0]
    assert list(arrays.stories[i, 0, : len(newest)]) == newest
    assert list(arrays.stories[i, 49, : len(oldest)]) == oldest


def test_roundtrip_and_both_tab_variants():
  with_space = "1 Mary went to the kitchen.\n2 John moved to the garden.\n3 Where is Mary? \tkitchen\t1\n"
  without = with_space.replace("? \t", "?\t")
  a, b = babi.parse_task_text(with_space), babi.parse_task_text(without)
  assert a == b == [BabiExample((("mary", "went", "to", "the", "kitchen"), ("john", "moved", "to", "the", "garden")),
                                ("where", "is", "mary"), "kitchen", (0,))]
  examples = list(babi.load_task(2, "train")[:30])
  assert babi.parse_task_text(babi.format_task_text(examples)) == examples


def test_supporting_ids_skip_question_lines():
  text = "1 a b.\n2 q1?\tx\t1\n3 c d.\n4 q2?\ty\t3 1\n"
  ex = babi.parse_task_text(text)[1]
  assert ex.story == (("a", "b"), ("c", "d")) and ex.supporting == (1, 0)


@pytest.mark.parametrize("text, line", [
    ("1 Mary went home.\nfoo bar\n", 2),
    ("1 Mary went home.\n2 Where is Mary?\t\t1\n", 2),
    ("1 Mary went home.\n2 Where is Mary?\thome\t7\n", 2),
    ("1 Mary went home.\n3 John went home.\n", 2),
])
def test_malformed_line_names_file_and_line(text, line):
  with pytest.raises(babi.BabiFormatError, match=rf"qa99_test\.txt:{line}:"):
    babi.parse_task_text(text, source="qa99_test.txt")


def test_oov_and_empty_story():
  vocab = babi.build_vocab(babi.parse_task_text("1 mary went home.\n2 where is mary?\thome\t1\n"))
  examples = babi.parse_task_text("1 where is zorro?\tcave\t\n")
  assert examples[0].story == ()
  arrays, stats = babi.vectorize(examples, vocab)
  assert stats.empty_stories == 1 and stats.oov_tokens == 1 and stats.oov_answers == 1
  assert arrays.story_len[0] == 0 and not arrays.stories.any()
  assert arrays.queries[0, 2] == babi.UNK and arrays.answers[0] == babi.UNK


def test_splits_carve_validation_from_train():
  sp = babi.load_splits((1, 20), train_limit=100)
  assert len(sp.train.answers) == 180 and len(sp.val.answers) == 20 and len(sp.test.answers) == 2000
  assert set(np.unique(sp.test.tasks)) == {1, 20}
  assert sp.vocab.words[:2] == ("nil", "unk")
  assert len(sp.candidates[1]) == 6
  with pytest.raises(ValueError, match="tasks"):
    babi.load_splits((0,))


def test_bucketed_batches_cover_an_epoch_and_resume():
  sp = babi.load_splits((1, 3), train_limit=100)
  stream = BucketedBatches(sp.train, 16, seed=3, buckets=(10, 25, 50))
  n = len(sp.train.answers)
  seen = []
  for _ in range(n // 16):
    stories, queries, answers, story_len = next(stream)
    assert stories.shape[1] in (10, 25, 50) and story_len.max() <= stories.shape[1]
    seen.append(len(answers))
  assert sum(seen) == (n // 16) * 16
  state = stream.get_state()
  a = next(stream)
  other = BucketedBatches(sp.train, 16, seed=3, buckets=(10, 25, 50))
  other.set_state(state)
  assert all(np.array_equal(x, y) for x, y in zip(a, next(other)))
