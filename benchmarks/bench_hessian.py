"""Hessian benchmark: hvp cost relative to a gradient, and one Hutchinson probe, on LeNet-5 with an MNIST batch.

Run: ``python -m benchmarks.bench_hessian [--quick]``. Prints one JSON line:
  hvp_over_grad  = jitted hvp time / jitted gradient time, same model and batch (goal <= 2.5; HAT spec section 6)
  trace_probe_ms = ms per Rademacher probe of `hutchinson_trace` (probes one after the other, chunk=1: on CPU,
                   vmapping the conv hvp over probes is slower than running them in sequence)
  mlp_hvp_over_grad = the same ratio on the quick MLP 784-32-10
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp

from benchmarks._common import emit, time_call
from jaxhw import hessian as H
from jaxhw.data import load_mnist
from jaxhw.metrics import cross_entropy
from jaxhw.models import LeNet5, mlp_apply, mlp_init


def _ratio(apply_fn, params, x, y, repeats):
  loss = lambda p: cross_entropy(apply_fn(p, x), y)  # noqa: E731
  grad = jax.jit(jax.grad(loss))
  v = H.rademacher_like(jax.random.key(1), params)
  hvp = jax.jit(lambda p, vv: H.hvp(loss, p, vv))
  t_g = time_call(lambda: grad(params), repeats=repeats)
  t_h = time_call(lambda: hvp(params, v), repeats=repeats)
  return t_g, t_h, loss


def main(argv=None) -> None:
  ap = argparse.ArgumentParser(description=__doc__)
  ap.add_argument("--quick", action="store_true", default=True)
  ap.add_argument("--batch", type=int, default=128)
  args = ap.parse_args(argv)
  repeats = 20
  x, y = load_mnist("test")
  x, y = jnp.asarray(x[: args.batch]), jnp.asarray(y[: args.batch])
  lenet = LeNet5()
  params = lenet.init(jax.random.key(0), x[:1])["params"]
  t_g, t_h, loss = _ratio(lambda p, xx: lenet.apply({"params": p}, xx), params, x, y, repeats)
  probes = 8
  tr = jax.jit(lambda p, k: H.hutchinson_trace(k, loss, p, probes, chunk=1).mean)
  t_tr = time_call(lambda: tr(params, jax.random.key(2)), repeats=max(5, repeats // 4))
  mp = mlp_init(jax.random.key(0), (784, 32, 10))
  m_g, m_h, _ = _ratio(mlp_apply, mp, x, y, repeats)
  emit("hessian", model="lenet", batch=args.batch, hvp_over_grad=t_h / t_g, grad_ms=1e3 * t_g, hvp_ms=1e3 * t_h,
       trace_probe_ms=1e3 * t_tr / probes, mlp_hvp_over_grad=m_h / m_g)


if __name__ == "__main__":
  main()
