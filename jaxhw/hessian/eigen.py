"""Top Hessian eigenvalues: power iteration with deflation, and Lanczos with full re-orthogonalization.

References:
  PyHessian (Yao et al. 2020), power iteration (<= 100 iterations, relative tolerance 1e-3).
  Hutchinson, "A stochastic estimator of the trace of the influence matrix", 1990; Yao et al., "PyHessian",
    IEEE BigData 2020, arXiv:1912.07145.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

from jaxhw.hessian.hvp import hvp

__all__ = ["EigenResult", "top_eigenvalues", "lanczos"]


class EigenResult(NamedTuple):
  """eigenvalues [k] (largest |λ| first for power iteration), eigenvectors [k, n] (ravelled), iterations [k]."""

  eigenvalues: jax.Array
  eigenvectors: jax.Array
  iterations: jax.Array


def _flat_hvp(loss_fn, params):
  flat, unravel = ravel_pytree(params)

  def mv(u):
    return ravel_pytree(hvp(loss_fn, params, unravel(u.astype(flat.dtype))))[0]

  return flat, mv


def top_eigenvalues(key: jax.Array, loss_fn: Callable, params, k: int = 1, *, max_iters: int = 100,
                    tol: float = 1e-3) -> EigenResult:
  """The k largest-magnitude Hessian eigenvalues by power iteration with deflation against earlier ones.

  Args:
    key: PRNG key for the start vectors.
    loss_fn: scalar loss of the parameter pytree.
    params: the point.
    k: number of eigenpairs (static).
    max_iters: iteration cap per eigenvalue.
    tol: stop when |λ_t − λ_{t−1}| <= tol·|λ_{t−1}|.

  Returns:
    EigenResult. Jit-able.

  References:
    Hutchinson, "A stochastic estimator of the trace of the influence matrix", 1990; Yao et al., "PyHessian",
      IEEE BigData 2020, arXiv:1912.07145.
  """
  if not isinstance(k, int) or k < 1:
    raise ValueError(f"k={k!r}; allowed: an int >= 1")
  flat, mv = _flat_hvp(loss_fn, params)
  n = flat.shape[0]
  vals, vecs, its = [], jnp.zeros((k, n), flat.dtype), []
  keys = jax.random.split(key, k)
  for i in range(k):
    prev = vecs[:i]

    def deflate(u, prev=prev, first=(i == 0)):
      return u if first else u - prev.T @ (prev @ u)

    def apply(u, deflate=deflate):
      return deflate(mv(deflate(u)))

    v0 = deflate(jax.random.normal(keys[i], (n,), flat.dtype))
    v0 = v0 / jnp.linalg.norm(v0)

    def cond(s):
      t, _, lam, lam_prev = s
      return (t < max_iters) & ((t < 2) | (jnp.abs(lam - lam_prev) > tol * jnp.abs(lam_prev)))

    def body(s, apply=apply, deflate=deflate):
      t, v, lam, _ = s
      hv = deflate(apply(v))
      lam_new = jnp.vdot(v, hv)
      v_new = hv / jnp.maximum(jnp.linalg.norm(hv), jnp.finfo(flat.dtype).tiny)
      return t + 1, v_new, lam_new, lam

    zero = jnp.zeros((), flat.dtype)
    t, v, lam, _ = jax.lax.while_loop(cond, body, (jnp.asarray(0), v0, zero, zero))
    lam = jnp.vdot(v, deflate(apply(v)))
    vals.append(lam)
    vecs = vecs.at[i].set(v)
    its.append(t)
  return EigenResult(jnp.stack(vals), vecs, jnp.stack(its))


def lanczos(key: jax.Array, loss_fn: Callable, params, num_steps: int) -> jax.Array:
  """Ritz values of the Hessian from `num_steps` Lanczos steps with full re-orthogonalization.

  Args:
    key: PRNG key for the start vector.
    loss_fn: scalar loss of the parameter pytree.
    params: the point.
    num_steps: Krylov dimension m (static, <= number of parameters); m = n recovers the whole spectrum.

  Returns:
    Ritz values [m], descending. Jit-able.

  References:
    Hutchinson, "A stochastic estimator of the trace of the influence matrix", 1990; Yao et al., "PyHessian",
      IEEE BigData 2020, arXiv:1912.07145.
  """
  flat, mv = _flat_hvp(loss_fn, params)
  n = flat.shape[0]
  if not isinstance(num_steps, int) or not 1 <= num_steps <= n:
    raise ValueError(f"num_steps={num_steps!r}; allowed: an int in [1, {n}]")
  m = num_steps
  v0 = jax.random.normal(key, (n,), flat.dtype)
  v0 = v0 / jnp.linalg.norm(v0)
  V = jnp.zeros((m, n), flat.dtype).at[0].set(v0)
  alpha = jnp.zeros((m,), flat.dtype)
  beta = jnp.zeros((m,), flat.dtype)  # beta[j] couples v_j and v_{j+1}

  def body(j, s):
    V, alpha, beta = s
    w = mv(V[j])
    a = jnp.vdot(V[j], w)
    mask = (jnp.arange(m) <= j)[:, None]
    Vm = jnp.where(mask, V, 0)
    w = w - Vm.T @ (Vm @ w)  # full re-orthogonalization (twice is enough)
    w = w - Vm.T @ (Vm @ w)
    b = jnp.linalg.norm(w)
    nxt = jnp.where(b > 1e-10 * jnp.maximum(jnp.abs(a), 1.0), w / jnp.maximum(b, jnp.finfo(flat.dtype).tiny), 0)
    V = jnp.where(j + 1 < m, V.at[jnp.minimum(j + 1, m - 1)].set(nxt), V)
    return V, alpha.at[j].set(a), beta.at[j].set(b)

  V, alpha, beta = jax.lax.fori_loop(0, m, body, (V, alpha, beta))
  T = jnp.diag(alpha) + jnp.diag(beta[:-1], 1) + jnp.diag(beta[:-1], -1)
  return jnp.sort(jnp.linalg.eigvalsh(T))[::-1]
