import numpy as np
import pytest

from jaxhw.data import (
  BatchIterator,
  MissingDataError,
  load_babi,
  load_mnist,
  parse_babi,
  synthetic_classification,
  train_val_split,
  vendored_path,
)


def test_mnist_train_subset():
  x, y = load_mnist("train")
  assert x.shape == (5000, 28, 28, 1) and x.dtype == np.float32
  assert y.shape == (5000,) and y.dtype == np.int32
  assert 0.0 <= x.min() and x.max() <= 1.0 and x.max() == 1.0
  np.testing.assert_array_equal(np.bincount(y), [500] * 10)
  # shuffled once with a fixed seed: not sorted by label, and the same on every load
  assert not np.all(np.diff(y) >= 0)
  np.testing.assert_array_equal(load_mnist("train")[1], y)


def test_mnist_test_set():
  x, y = load_mnist("test")
  assert x.shape == (10000, 28, 28, 1)
  np.testing.assert_array_equal(y[:10], [7, 2, 1, 0, 4, 1, 4, 9, 5, 9])
  np.testing.assert_array_equal(np.bincount(y), [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009])


def test_mnist_rejects_unknown_split():
  with pytest.raises(ValueError, match="split"):
    load_mnist("val")


def test_missing_vendored_file_says_where():
  with pytest.raises(MissingDataError, match="expected the vendored data file|Expected the vendored"):
    vendored_path("mnist/nope.gz")


@pytest.mark.parametrize("task", range(1, 21))
def test_babi_tasks_have_1000_questions(task):
  train, test = load_babi(task, "train"), load_babi(task, "test")
  assert len(train) == 1000 and len(test) == 1000
  ex = train[0]
  assert ex.question and ex.answer and ex.supporting
  assert all(0 <= s < len(ex.story) for s in ex.supporting)


def test_babi_parse_keeps_story_until_reset():
  text = "1 Mary went to the kitchen.\n2 Where is Mary?\tkitchen\t1\n1 John moved.\n2 Where is John?\tx\t1\n"
  a, b = parse_babi(text)
  assert a.story == (("mary", "went", "to", "the", "kitchen"),) and a.answer == "kitchen"
  assert b.story == (("john", "moved"),) and b.supporting == (0,)


def test_babi_bad_task():
  with pytest.raises(ValueError, match="task must be in 1..20"):
    load_babi(21)


def test_iterator_is_deterministic_and_covers_each_epoch():
  x = np.arange(10)
  it1, it2 = BatchIterator((x,), 3, seed=7), BatchIterator((x,), 3, seed=7)
  a = [next(it1)[0] for _ in range(6)]
  b = [next(it2)[0] for _ in range(6)]
  for u, v in zip(a, b):
    np.testing.assert_array_equal(u, v)
  epoch0 = np.concatenate(a[:3])
  assert len(set(epoch0.tolist())) == 9  # 3 full batches of distinct examples, remainder dropped
  assert not np.array_equal(np.concatenate(a[:3]), np.concatenate(a[3:]))  # reshuffled next epoch


def test_iterator_state_roundtrip():
  x, y = np.arange(20), np.arange(20) * 2
  it = BatchIterator((x, y), 4, seed=1)
  for _ in range(7):
    next(it)
  state = it.get_state()
  expected = [next(it) for _ in range(5)]
  resumed = BatchIterator((x, y), 4, seed=1)
  resumed.set_state(state)
  for (ex, ey), (rx, ry) in zip(expected, [next(resumed) for _ in range(5)]):
    np.testing.assert_array_equal(ex, rx)
    np.testing.assert_array_equal(ey, ry)
    np.testing.assert_array_equal(rx * 2, ry)
  with pytest.raises(ValueError, match="seed"):
    BatchIterator((x, y), 4, seed=2).set_state(state)


def test_iterator_rejects_bad_batch_size():
  with pytest.raises(ValueError, match="batch_size"):
    BatchIterator((np.arange(3),), 4)


def test_synthetic_and_split_are_seeded():
  x1, y1 = synthetic_classification(3, 50, (4,), 3)
  x2, y2 = synthetic_classification(3, 50, (4,), 3)
  np.testing.assert_array_equal(x1, x2)
  assert x1.dtype == np.float32 and set(np.unique(y1)) <= {0, 1, 2}
  xt, yt, xv, yv = train_val_split(x1, y1, 10, seed=0)
  assert len(xv) == 10 and len(xt) == 40
  assert not np.any(np.all(xt[:, None] == xv[None], axis=-1))


def test_random_shift_moves_content_within_bounds(key):
  import jax.numpy as jnp

  from jaxhw.data import random_shift
  img = jnp.zeros((3, 9, 9, 1)).at[:, 4, 4, 0].set(1.0)
  out = random_shift(key, img, 2)
  assert out.shape == img.shape
  for i in range(3):
    r, c = np.argwhere(np.asarray(out[i, :, :, 0]) == 1.0)[0]
    assert abs(r - 4) <= 2 and abs(c - 4) <= 2
  np.testing.assert_array_equal(random_shift(key, img, 0), img)
  with pytest.raises(ValueError, match="max_shift"):
    random_shift(key, img, -1)
