"""Reading a converted network whose output layer is a 1x1 convolution (a detector's grid head).

`simulate` integrates one output vector per image. `conv_head_as_dense` rewrites a converted network ending in a
1x1 conv over an ``[S, S, Cin]`` map as the same linear map on the flattened input: a dense layer whose kernel is
block-diagonal (``kron(I_{S*S}, W)``), bias and output scale tiled per cell. The simulated output is the head's
map flattened in NHWC order (reshape to ``[.., S, S, Cout]``). Fan-outs stay those of the 1x1 conv (``Cout`` per
input neuron), so synaptic-operation counts are the conv's; use the original network for ANN MACs and energy.

References:
  Kim et al., "Spiking-YOLO: Spiking Neural Network for Energy-Efficient Object Detection", AAAI 2020,
  arXiv:1903.06530.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from jaxhw.snn.network import SNNet, SNNOp, at_path

__all__ = ["conv_head_as_dense"]


def _set(tree: dict, path, value) -> dict:
  tree = dict(tree)
  if len(path) == 1:
    tree[path[0]] = value
  else:
    tree[path[0]] = _set(tree.get(path[0], {}), path[1:], value)
  return tree


def conv_head_as_dense(net: SNNet) -> SNNet:
  """`net` with its 1x1-conv output layer replaced by the equivalent dense layer on the flattened map.

  Raises:
    ValueError: the output layer is not a conv, or its kernel is not 1x1 (the kernel size is named).
  """
  last = net.ops[-1]
  if last.kind != "conv":
    raise ValueError(f"the output layer is a {last.kind!r} op; conv_head_as_dense needs a 1x1 conv output layer")
  w = at_path(net.params, last.path)
  kernel = np.asarray(w["kernel"])
  if kernel.shape[:2] != (1, 1):
    raise ValueError(f"the output conv has a {kernel.shape[0]}x{kernel.shape[1]} kernel; only 1x1 is supported")
  in_shape = net.shapes[-2] if len(net.ops) > 1 else net.input_shape
  h, wd, cin = in_shape
  cells = h * wd
  cout = kernel.shape[-1]
  dense_w = jnp.asarray(np.kron(np.eye(cells, dtype=np.float32), kernel[0, 0]))
  dense_b = jnp.tile(jnp.asarray(w["bias"]), cells)
  fan = jnp.reshape(at_path(net.fanouts, last.path), (-1,))
  ops = net.ops[:-1] + (SNNOp("flatten"), SNNOp("dense", path=last.path))
  shapes = tuple(net.shapes[:-1]) + ((cells * cin,), (cells * cout,))
  return net._replace(ops=ops, shapes=shapes,
                      params=_set(net.params, last.path, {"kernel": dense_w, "bias": dense_b}),
                      fanouts=_set(net.fanouts, last.path, fan),
                      out_scale=jnp.tile(jnp.asarray(net.out_scale), cells))
