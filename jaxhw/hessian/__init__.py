"""Hessian tooling on pytrees: Hessian-vector products and quadratic forms, Hutchinson traces (total and per
leaf), top eigenvalues (power iteration, Lanczos), a dense Hessian for tiny models, and the HAT regularizer."""

from jaxhw.hessian.eigen import EigenResult, lanczos, top_eigenvalues
from jaxhw.hessian.exact import exact_hessian
from jaxhw.hessian.hat import (
                               HATPenalty,
                               HATRegularizer,
                               ggn_quad_form,
                               hat_loss,
                               hat_penalty,
                               hat_regularizer,
)
from jaxhw.hessian.hvp import hvp, quad_form, rademacher_like, tree_vdot
from jaxhw.hessian.trace import TraceEstimate, hutchinson_trace

__all__ = [
    "hvp", "quad_form", "tree_vdot", "rademacher_like", "TraceEstimate", "hutchinson_trace", "EigenResult",
    "top_eigenvalues", "lanczos", "exact_hessian", "HATPenalty", "HATRegularizer", "hat_penalty",
    "ggn_quad_form", "hat_regularizer", "hat_loss",
]
