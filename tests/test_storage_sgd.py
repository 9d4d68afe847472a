"""jaxhw.storage SGD rules against oracles that share no code with them (explicit Python loops)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxhw import storage as st

FEATURES, CLASSES, PER_PAGE = 12, 3, 4


def _loss(params, x, y):
  logits = x @ params["w"] + params["b"]
  return -jnp.mean(jax.nn.log_softmax(logits)[jnp.arange(y.shape[0]), y])


def _setup(channels, n_examples=96, ways=2):
  ssd = st.SSDConfig(channels=channels, ways=ways, page_bytes=PER_PAGE * 13)
  layout = st.page_layout(n_examples, 13, ssd)
  rng = np.random.default_rng(0)
  x = rng.normal(size=(n_examples, FEATURES)).astype(np.float32)
  y = rng.integers(0, CLASSES, n_examples).astype(np.int32)
  data = st.paged_data(x, y, layout)
  params = {"w": jnp.asarray(rng.normal(size=(FEATURES, CLASSES)).astype(np.float32) * 0.1),
            "b": jnp.zeros(CLASSES, jnp.float32)}
  cost = st.ModelCost(params_bytes=4 * (FEATURES * CLASSES + CLASSES), grad_flops_per_example=4.0 * FEATURES *
                      CLASSES, update_flops=2.0 * FEATURES * CLASSES)
  return ssd, layout, x, y, data, params, cost


_GRAD = jax.jit(jax.grad(_loss))


def _sgd_loop(params, batches, lr):
  grad = _GRAD
  for xb, yb in batches:
    g = grad(params, jnp.asarray(xb), jnp.asarray(yb))
    params = {k: params[k] - lr * g[k] for k in params}
  return params


def _page(x, y, page):
  return x[page * PER_PAGE:(page + 1) * PER_PAGE], y[page * PER_PAGE:(page + 1) * PER_PAGE]


def _run_async(sched, params, workers, lr, alpha, data):
  run = st.make_async_runner(_loss)
  return run(st.init_workers(params, workers), jnp.asarray(sched.kinds), jnp.asarray(sched.workers),
             jnp.asarray(sched.pages, jnp.int32), jnp.float32(lr), jnp.float32(alpha), data)


def _worker(i, tree):
  return {k: v[i] for k, v in tree.items()}


def _close(a, b, **kw):
  for k in a:
    np.testing.assert_allclose(np.asarray(a[k]), np.asarray(b[k]), **{"rtol": 1e-5, "atol": 1e-6, **kw})


@pytest.mark.parametrize("tau", [1, 3])
def test_easgd_zero_elastic_coefficient_is_independent_sgd(tau):
  ssd, layout, x, y, data, params, cost = _setup(channels=3)
  sgd = st.SGDConfig("easgd", lr=0.1, rho=0.0, tau=tau)
  sched = st.simulate_isp(ssd, layout, sgd, cost, 2)
  state = _run_async(sched, params, 3, sgd.lr, sgd.alpha(3), data)
  _close(state.center, params, rtol=0, atol=0)  # the centre never moves
  for i in range(3):
    pages = np.concatenate([layout.channel_pages(i)] * 2)
    ref = _sgd_loop(params, [_page(x, y, p) for p in pages], sgd.lr)
    _close(_worker(i, state.x), ref)


def test_sync_easgd_zero_elastic_coefficient_is_independent_sgd():
  ssd, layout, x, y, data, params, cost = _setup(channels=4)
  sgd = st.SGDConfig("easgd", lr=0.1, rho=0.0, tau=2, easgd_mode="sync")
  sched = st.simulate_isp(ssd, layout, sgd, cost, 1)
  run = st.make_sync_easgd_runner(_loss)
  state = run(st.init_workers(params, 4), jnp.asarray(sched.step_pages, jnp.int32), jnp.asarray(sched.communicate),
              jnp.float32(sgd.lr), jnp.float32(sgd.alpha(4)), data)
  _close(state.center, params, rtol=0, atol=0)
  for i in range(4):
    ref = _sgd_loop(params, [_page(x, y, p) for p in sched.step_pages[:, i]], sgd.lr)
    _close(_worker(i, state.x), ref)


def test_sync_easgd_elastic_step_matches_rule():
  ssd, layout, x, y, data, params, cost = _setup(channels=2, n_examples=16)
  run = st.make_sync_easgd_runner(_loss)
  pages = jnp.array([[0, 1]], jnp.int32)
  shifted = st.init_workers(params, 2)
  shifted = shifted._replace(x=jax.tree.map(lambda a: a + jnp.arange(2.0)[:, None] * 0.1 if a.ndim == 2
                                            else a + 0.2, shifted.x))
  out = run(shifted, pages, jnp.array([True]), jnp.float32(0.1), jnp.float32(0.3), data)
  for i in range(2):
    xi = _worker(i, shifted.x)
    g = _GRAD(xi, *map(jnp.asarray, _page(x, y, i)))
    ref = {k: xi[k] - 0.1 * g[k] - 0.3 * (xi[k] - params[k]) for k in xi}
    _close(_worker(i, out.x), ref)
  ref_c = {k: params[k] + 0.3 * sum(shifted.x[k][i] - params[k] for i in range(2)) for k in params}
  _close(out.center, ref_c)


def test_downpour_one_worker_periods_one_is_plain_sgd():
  ssd, layout, x, y, data, params, cost = _setup(channels=1)
  sgd = st.SGDConfig("downpour", lr=0.1)
  sched = st.simulate_isp(ssd, layout, sgd, cost, 2)
  state = _run_async(sched, params, 1, sgd.lr, 0.0, data)
  ref = _sgd_loop(params, [_page(x, y, p) for p in np.tile(np.arange(layout.num_pages), 2)], sgd.lr)
  _close(state.center, ref)
  _close(jax.tree.map(lambda a: a[0], state.x), ref)


def test_downpour_prefix_follows_master_order():
  """Every prefix of the record list is a consistent state: centre = initial + sum of pushed updates."""
  ssd, layout, x, y, data, params, cost = _setup(channels=3)
  sgd = st.SGDConfig("downpour", lr=0.1, n_push=2, n_fetch=3)
  sched = st.simulate_isp(ssd, layout, sgd, cost, 1)
  state = _run_async(sched, params, 3, sgd.lr, 0.0, data)
  # After the final flush nothing is pending and the centre holds every worker's accumulated updates.
  _close(jax.tree.map(lambda a: jnp.abs(a).max(), state.pending), {"w": 0.0, "b": 0.0}, atol=0)
  _close(jax.tree.map(lambda a: jnp.abs(a).max(), state.v), {"w": 0.0, "b": 0.0}, atol=0)
  assert (sched.kinds == st.PUSH).sum() == (sched.kinds == st.SEND).sum()


def test_sync_sgd_equals_sgd_on_combined_batch():
  ssd, layout, x, y, data, params, cost = _setup(channels=4)
  sched = st.simulate_isp(ssd, layout, st.SGDConfig("sync"), cost, 2)
  pages = jnp.asarray(sched.step_pages, jnp.int32)
  run = st.make_sync_sgd_runner(_loss)
  center = run(params, pages, jnp.float32(0.2), data)
  host = st.make_host_sgd_runner(_loss)(params, pages, jnp.float32(0.2), data)
  # Padding steps (active False) change nothing: the padded run equals the unpadded one exactly.
  padded = jnp.concatenate([pages, pages[:3]])
  masked = run(params, padded, jnp.float32(0.2), data, jnp.arange(len(padded)) < len(pages))
  _close(masked, center, rtol=0, atol=0)
  batches = [(np.concatenate([_page(x, y, p)[0] for p in row]), np.concatenate([_page(x, y, p)[1] for p in row]))
             for row in sched.step_pages]
  ref = _sgd_loop(params, batches, 0.2)
  _close(center, ref)
  _close(host, ref)
