"""Parallel SGD rules for workers inside a drive: synchronous SGD, Downpour and elastic-averaging SGD (EASGD).

All worker copies live in one pytree with a leading worker axis (`WorkerState`). Lockstep variants (synchronous
SGD, synchronous EASGD) update every worker with `jax.vmap` inside one `lax.scan` over steps. Asynchronous variants
(Downpour, asynchronous EASGD) run a schedule of records ``(kind, worker, page)`` in the order the timing
simulator's event times fix (`jaxhw.storage.isp`), one `lax.scan` over records, the record's kind selecting the rule.

Rules (p workers, centre x~, worker copies x_i, learning rate eta, g_i the gradient on worker i's next page):
  synchronous:  x~ <- x~ - eta (1/p) sum_i g_i(x~).
  Downpour:     at step t_i: if n_push | t_i: x~ <- x~ + v_i, v_i <- 0; if n_fetch | t_i: x_i <- x~;
                then g = g_i(x_i), x_i <- x_i - eta g, v_i <- v_i - eta g.
  EASGD:        moving rate alpha = eta rho (default beta / p with beta = 0.9). Synchronous, when tau | t:
                x_i <- x_i - eta g_i(x_i) - alpha (x_i - x~) and x~ <- x~ + alpha sum_i (x_i - x~) (old values on the
                right); other steps only the SGD term. Asynchronous, when tau | t_i: e = alpha (x_i - x~),
                x_i <- x_i - e and the master applies x~ <- x~ + e; then x_i <- x_i - eta g_i(x), the gradient at
                the pre-elastic x.

References:
  Zhang, Choromanska, LeCun, "Deep learning with Elastic Averaging SGD", NIPS 2015 (arXiv:1412.6651);
  Dean et al., "Large Scale Distributed Deep Networks", NIPS 2012 (Downpour);
  Choe et al., "Near-Data Processing for Differentiable Machine Learning Models", arXiv:1610.02273, 2016.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax
from jaxtyping import Array, Bool, Float, Int

from jaxhw.storage.layout import PagedData, read_pages

PyTree = Any
LossFn = Callable[[PyTree, Array, Array], Array]  # (params, x [batch, features], y [batch]) -> mean loss

#: Parallel SGD rules `SGDConfig.algorithm` accepts: synchronous SGD, Downpour, elastic-averaging SGD.
ALGORITHMS = ("sync", "downpour", "easgd")
#: EASGD variants: asynchronous (each worker on its own clock) or synchronous (lockstep).
EASGD_MODES = ("async", "sync")

#: Record kinds of an asynchronous schedule, the ints 0 to 7 in this order (`KIND_NAMES` names them).
NOOP, GRAD_DOWNPOUR, SEND, PUSH, FETCH, ELASTIC_READ, GRAD_ANCHOR, GRAD_LOCAL = range(8)
#: The names of the record kinds, indexed by kind (``KIND_NAMES[PUSH] == "push"``).
KIND_NAMES = ("noop", "grad_downpour", "send", "push", "fetch", "elastic_read", "grad_anchor", "grad_local")


@dataclasses.dataclass(frozen=True)
class SGDConfig:
  """One parallel SGD variant.

  Attributes:
    algorithm: ``"sync"``, ``"downpour"`` or ``"easgd"``.
    lr: eta, > 0.
    n_push: Downpour push period (>= 1).
    n_fetch: Downpour fetch period (>= 1).
    beta: EASGD's p alpha when `rho` is None (0.9 in the EASGD paper), in [0, 1].
    rho: EASGD elastic coefficient; when set, alpha = eta rho, which must lie in [0, 1 / p].
    tau: EASGD communication period (>= 1).
    easgd_mode: ``"async"`` (the in-storage default) or ``"sync"``.
  """

  algorithm: str = "sync"
  lr: float = 0.05
  n_push: int = 1
  n_fetch: int = 1
  beta: float = 0.9
  rho: float | None = None
  tau: int = 1
  easgd_mode: str = "async"

  def __post_init__(self):
    if self.algorithm not in ALGORITHMS:
      raise ValueError(f"algorithm must be one of {ALGORITHMS}, got {self.algorithm!r}.")
    if not self.lr > 0:
      raise ValueError(f"lr must be > 0, got {self.lr}.")
    for name in ("n_push", "n_fetch", "tau"):
      value = getattr(self, name)
      if not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}.")
    if not 0 <= self.beta <= 1:
      raise ValueError(f"beta (EASGD's p * alpha) must be in [0, 1], got {self.beta}.")
    if self.rho is not None and not self.rho >= 0:
      raise ValueError(f"rho (EASGD elastic coefficient) must be >= 0, got {self.rho}.")
    if self.easgd_mode not in EASGD_MODES:
      raise ValueError(f"easgd_mode must be one of {EASGD_MODES}, got {self.easgd_mode!r}.")

  def alpha(self, workers: int) -> float:
    """EASGD moving rate for `workers` workers: eta rho if rho is set, else beta / p; must lie in [0, 1 / p]."""
    if workers < 1:
      raise ValueError(f"workers must be >= 1, got {workers}.")
    if self.rho is None:
      return self.beta / workers
    alpha = self.lr * self.rho
    if alpha > 1.0 / workers + 1e-12:
      raise ValueError(f"elastic coefficient rho={self.rho} gives moving rate alpha = lr * rho = {alpha:.4g}, outside "
                       f"[0, 1/p] = [0, {1.0 / workers:.4g}] for p={workers} workers; use rho <= "
                       f"{1.0 / (workers * self.lr):.4g}.")
    return alpha

  @property
  def lockstep(self) -> bool:
    """Whether all workers step together (vmap over workers)."""
    return self.algorithm == "sync" or (self.algorithm == "easgd" and self.easgd_mode == "sync")


class WorkerState(NamedTuple):
  """Centre and worker copies, workers stacked on a leading axis.

  Attributes:
    center: x~, the master's parameters (what is evaluated).
    x: ``[p, ...]`` worker parameters x_i.
    v: ``[p, ...]`` Downpour's accumulated update v_i.
    pending: ``[p, ...]`` an update on its way to the master (Downpour's sent v_i, EASGD's elastic difference).
    anchor: ``[p, ...]`` EASGD: the pre-elastic x_i at which the step's gradient is taken.
  """

  center: PyTree
  x: PyTree
  v: PyTree
  pending: PyTree
  anchor: PyTree


def init_workers(params: PyTree, workers: int) -> WorkerState:
  """Every worker starts at the centre (x_i = x~, v_i = 0)."""
  if workers < 1:
    raise ValueError(f"workers must be >= 1, got {workers}.")
  stack = jax.tree.map(lambda a: jnp.broadcast_to(a, (workers, *a.shape)), params)
  zeros = jax.tree.map(jnp.zeros_like, stack)
  return WorkerState(params, stack, zeros, zeros, stack)


def _axpy(a, x, y):
  return jax.tree.map(lambda xi, yi: yi + jnp.asarray(a, yi.dtype) * xi, x, y)


def _sub(x, y):
  return jax.tree.map(jnp.subtract, x, y)


def _get(tree, i):
  return jax.tree.map(lambda a: a[i], tree)


def _set(tree, i, value):
  return jax.tree.map(lambda a, v: a.at[i].set(v), tree, value)


def _page_batch(data: PagedData, pages):
  x, y = read_pages(data, jnp.atleast_1d(pages))
  return x.reshape(-1, x.shape[-1]), y.reshape(-1)


def make_async_runner(loss_fn: LossFn) -> Callable[..., WorkerState]:
  """A jitted runner of an asynchronous schedule.

  Args:
    loss_fn: ``loss_fn(params, x, y) -> mean loss`` over a batch.

  Returns:
    ``run(state, kinds, workers, pages, lr, alpha, data) -> state``: applies the records ``kinds[k]`` (one of
    `NOOP`, `GRAD_DOWNPOUR` (g at x_i; x_i, v_i -= lr g), `SEND` (pending_i <- v_i, v_i <- 0), `PUSH` (x~ +=
    pending_i), `FETCH` (x_i <- x~), `ELASTIC_READ` (e = alpha (x_i - x~), x_i -= e, pending_i <- e, anchor_i <-
    old x_i), `GRAD_ANCHOR` (x_i -= lr g(anchor_i)), `GRAD_LOCAL` (x_i -= lr g(x_i))) by worker
    ``workers[k]`` on virtual page ``pages[k]`` in order, with one `lax.scan`.
  """
  grad_fn = jax.grad(loss_fn)

  def where(cond, a, b):
    return jax.tree.map(lambda u, w: jnp.where(cond, u, w), a, b)

  @jax.jit
  def run(state: WorkerState, kinds: Int[Array, " n"], workers: Int[Array, " n"], pages: Int[Array, " n"],
          lr: Float[Array, ""], alpha: Float[Array, ""], data: PagedData) -> WorkerState:
    def body(s, rec):
      kind, i, page = rec
      c, xi, vi, pi, ai = s.center, _get(s.x, i), _get(s.v, i), _get(s.pending, i), _get(s.anchor, i)
      # One straight-line step: every rule is computed and the record's kind selects (exact selects, no switch).
      g = grad_fn(where(kind == GRAD_ANCHOR, ai, xi), *_page_batch(data, page))
      stepped = _axpy(-lr, g, xi)
      e = jax.tree.map(lambda a, b: jnp.asarray(alpha, a.dtype) * (a - b), xi, c)
      zeros = jax.tree.map(jnp.zeros_like, vi)
      is_grad = (kind == GRAD_DOWNPOUR) | (kind == GRAD_ANCHOR) | (kind == GRAD_LOCAL)
      new_x = where(is_grad, stepped, where(kind == FETCH, c, where(kind == ELASTIC_READ, _sub(xi, e), xi)))
      new_v = where(kind == GRAD_DOWNPOUR, _axpy(-lr, g, vi), where(kind == SEND, zeros, vi))
      new_p = where(kind == SEND, vi, where(kind == PUSH, zeros, where(kind == ELASTIC_READ, e, pi)))
      new_a = where(kind == ELASTIC_READ, xi, ai)
      new_c = where(kind == PUSH, _axpy(1.0, pi, c), c)
      return WorkerState(new_c, _set(s.x, i, new_x), _set(s.v, i, new_v), _set(s.pending, i, new_p),
                         _set(s.anchor, i, new_a)), None

    return lax.scan(body, state, (kinds, workers, pages))[0]

  return run


def _active(pages, active):
  return jnp.ones(pages.shape[0], bool) if active is None else active


def _keep(flag, new, old):
  return jax.tree.map(lambda a, b: jnp.where(flag, a, b), new, old)


def make_sync_sgd_runner(loss_fn: LossFn) -> Callable[..., PyTree]:
  """A jitted runner of synchronous SGD: ``run(center, pages [K, p], lr, data, active=None) -> center``.

  Step k: every worker i takes the gradient at the centre on page ``pages[k, i]`` (vmapped over workers); the
  master applies ``x~ <- x~ - lr * mean_i g_i``. Steps where the optional ``active [K]`` is False change nothing
  (padding, so that chunks of different lengths share one compiled scan).
  """
  grad_fn = jax.grad(loss_fn)

  @jax.jit
  def run(center: PyTree, pages: Int[Array, "steps workers"], lr: Float[Array, ""], data: PagedData,
          active: Bool[Array, " steps"] | None = None) -> PyTree:
    def body(c, rec):
      step_pages, on = rec
      xs, ys = read_pages(data, step_pages)
      grads = jax.vmap(grad_fn, in_axes=(None, 0, 0))(c, xs, ys)
      return _keep(on, _axpy(-lr, jax.tree.map(lambda g: g.mean(0), grads), c), c), None

    return lax.scan(body, center, (pages, _active(pages, active)))[0]

  return run


def make_sync_easgd_runner(loss_fn: LossFn) -> Callable[..., WorkerState]:
  """A jitted runner of synchronous EASGD: ``run(state, pages [K, p], communicate [K], lr, alpha, data,
  active=None)``.

  Step k: worker i's gradient on ``pages[k, i]`` at x_i (vmapped); where ``communicate[k]`` the elastic terms
  are added with the old x_i and x~ on the right-hand sides. Inactive steps change nothing.
  """
  grad_fn = jax.grad(loss_fn)

  @jax.jit
  def run(state: WorkerState, pages: Int[Array, "steps workers"], communicate: Bool[Array, " steps"],
          lr: Float[Array, ""], alpha: Float[Array, ""], data: PagedData,
          active: Bool[Array, " steps"] | None = None) -> WorkerState:
    def body(s, rec):
      step_pages, comm, on = rec
      xs, ys = read_pages(data, step_pages)
      grads = jax.vmap(grad_fn)(s.x, xs, ys)
      diff = jax.tree.map(lambda x, c: x - c[None], s.x, s.center)
      a = jnp.where(comm, alpha, 0.0)
      new_x = jax.tree.map(lambda x, g, d: x - lr * g - a * d, s.x, grads, diff)
      new_c = jax.tree.map(lambda c, d: c + a * d.sum(0), s.center, diff)
      return _keep(on, s._replace(center=new_c, x=new_x, anchor=new_x), s), None

    return lax.scan(body, state, (pages, communicate, _active(pages, active)))[0]

  return run


def make_host_sgd_runner(loss_fn: LossFn) -> Callable[..., PyTree]:
  """A jitted runner of plain SGD on the host: ``run(params, pages [K, m], lr, data, active=None) -> params``.

  Step k: one gradient of the mean loss over all examples of the m pages ``pages[k]`` (one combined batch).
  Inactive steps change nothing.
  """
  grad_fn = jax.grad(loss_fn)

  @jax.jit
  def run(params: PyTree, pages: Int[Array, "steps m"], lr: Float[Array, ""], data: PagedData,
          active: Bool[Array, " steps"] | None = None) -> PyTree:
    def body(p, rec):
      step_pages, on = rec
      return _keep(on, _axpy(-lr, grad_fn(p, *_page_batch(data, step_pages)), p), p), None

    return lax.scan(body, params, (pages, _active(pages, active)))[0]

  return run
