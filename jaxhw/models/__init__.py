"""Models as pure ``init(key, ...) -> params`` / ``apply(params, x) -> logits`` pairs on plain-dict pytrees."""

from jaxhw.models.lenet import conv2d, lenet_apply, lenet_init, max_pool
from jaxhw.models.mlp import dense_init, mlp_apply, mlp_init

__all__ = ["conv2d", "dense_init", "lenet_apply", "lenet_init", "max_pool", "mlp_apply", "mlp_init"]
