"""Benchmarks of the spiking detector and the mAP evaluator on CPU.

``snn_step_over_ann``: one simulated time step of the converted quick-preset detector (IBT neurons, channel-wise
normalization, the grid head read as a dense map) over one ANN forward pass of the same batch (goal <= 1.5).
``map_eval_over_pycocotools``: `jaxhw.detection.mean_average_precision` over pycocotools' COCOeval (IoU 0.5,
one area range) on the same generated detections of 1,000 images (goal <= 1.0; null without pycocotools).

Run: ``python -m benchmarks.bench_detection``; the last stdout line is one JSON object.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import time

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks._common import emit, time_call
from jaxhw import detection as det
from jaxhw import snn
from jaxhw.models.tiny_yolo import tiny_yolo
from jaxhw.snn.detection_ops import conv_head_as_dense


def bench_snn_step(batch: int = 64, steps: int = 32, repeats: int = 5) -> dict:
  data = det.generate_shapes(det.ShapesConfig(), 0, "train", n=max(batch, 128))
  model = tiny_yolo((16, 32, 64, 64), pools=3)
  variables = model.init(jax.random.key(0), data.images[:1])
  _, st = model.apply(variables, data.images, train=True, mutable=["batch_stats"])
  variables = {**variables, **st}
  net = conv_head_as_dense(snn.convert(model, variables, data.images, norm="channel_p99.9"))
  x = jnp.asarray(data.images[:batch])
  ann = jax.jit(lambda xb: model.apply(variables, xb))
  sim = jax.jit(lambda xb: snn.simulate(net, xb, "ibt", steps, record=()).logits)
  ann_s = time_call(lambda: ann(x), repeats=repeats * 4)
  sim_s = time_call(lambda: sim(x), repeats=repeats, warmup=1)
  return {"ann_ms": 1e3 * ann_s, "snn_step_ms": 1e3 * sim_s / steps, "snn_step_over_ann": sim_s / steps / ann_s}


def _generated_detections(n_images: int, seed: int = 0):
  rng = np.random.default_rng(seed)
  gts, dets = [], []
  for _ in range(n_images):
    k = rng.integers(1, 6)
    xy = rng.uniform(0, 200, (k, 2))
    gb = np.concatenate([xy, xy + rng.uniform(10, 60, (k, 2))], 1)
    gl = rng.integers(0, 5, k)
    db = np.concatenate([gb + rng.normal(0, 4, gb.shape), gb[:2] + rng.normal(0, 15, gb[:2].shape)])
    dl = np.concatenate([gl, rng.integers(0, 5, len(gb[:2]))])
    gts.append((gb, gl))
    dets.append((db, rng.random(len(dl)), dl))
  return gts, dets


def bench_map(n_images: int = 1000, repeats: int = 3) -> dict:
  gts, dets = _generated_detections(n_images)
  ours = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    det.mean_average_precision(dets, gts, 5, matching="coco")
    ours.append(time.perf_counter() - t0)
  out = {"map_eval_ms": 1e3 * float(np.median(ours)), "images": n_images}
  if importlib.util.find_spec("pycocotools") is None:
    return {**out, "pycocotools_ms": None, "map_eval_over_pycocotools": None}
  from pycocotools.coco import COCO
  from pycocotools.cocoeval import COCOeval

  images, anns, results = [], [], []
  for i, ((gb, gl), (db, ds, dl)) in enumerate(zip(gts, dets)):
    images.append({"id": i})
    for b, lab in zip(gb, gl):
      anns.append({"id": len(anns) + 1, "image_id": i, "category_id": int(lab), "iscrowd": 0,
                   "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]], "area": (b[2] - b[0]) * (b[3] - b[1])})
    for b, s, lab in zip(db, ds, dl):
      results.append({"image_id": i, "category_id": int(lab), "score": float(s),
                      "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]]})
  ref = []
  for _ in range(repeats):
    with contextlib.redirect_stdout(io.StringIO()):
      t0 = time.perf_counter()
      coco = COCO()
      coco.dataset = {"images": images, "annotations": anns, "categories": [{"id": c} for c in range(5)]}
      coco.createIndex()
      ev = COCOeval(coco, coco.loadRes(results), "bbox")
      ev.params.iouThrs = np.array([0.5])
      ev.params.areaRng = [[0, 1e10]]
      ev.params.areaRngLbl = ["all"]
      ev.params.maxDets = [100]
      ev.evaluate()
      ev.accumulate()
      ref.append(time.perf_counter() - t0)
  coco_ms = 1e3 * float(np.median(ref))
  return {**out, "pycocotools_ms": coco_ms, "map_eval_over_pycocotools": out["map_eval_ms"] / coco_ms}


def main() -> None:
  emit("detection", **bench_snn_step(), **bench_map())


if __name__ == "__main__":
  main()
