"""jaxhw.detection: mAP (hand-made cases, pycocotools), NMS, decoding/loss, boxes, the shapes generator, and the
Spiking-YOLO conversion pieces (IBT neuron, channel-wise normalization, the grid head read by the simulator)."""

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxhw import detection as det
from jaxhw import snn
from jaxhw.models.tiny_yolo import head_reshape, tiny_yolo, tiny_yolo_layers
from jaxhw.snn.detection_ops import conv_head_as_dense

ANCHORS = ((9.0, 9.0), (14.0, 14.0))


def _box(x, y, w, h):
  return [x, y, x + w, y + h]


# ---------------------------------------------------------------- mAP, hand-made cases


def test_map_perfect_is_one_and_empty_image_is_fine():
  gts = [(np.array([_box(0, 0, 10, 10), _box(20, 20, 5, 5)]), np.array([0, 1])),
         (np.zeros((0, 4)), np.zeros((0,), int))]  # an image with no objects
  dets = [(gts[0][0], np.array([0.9, 0.8]), gts[0][1]), (np.zeros((0, 4)), np.zeros(0), np.zeros(0, int))]
  for use_07 in (False, True):
    r = det.mean_average_precision(dets, gts, 3, use_07_metric=use_07)
    assert r.map == 1.0
    assert np.isnan(r.ap[2]) and list(r.num_gt) == [1, 1, 0]  # class 2 has no ground truth: not averaged


def test_map_hand_computed_all_point_and_11_point():
  # One class; 3 ground truths (A, B in image 0, C in image 1); detections by score: TP(A), FP, TP(C),
  # FP (duplicate of A). Precision 1, 1/2, 2/3, 1/2 at recall 1/3, 1/3, 2/3, 2/3.
  a, b, c = _box(0, 0, 10, 10), _box(30, 30, 10, 10), _box(5, 5, 10, 10)
  gts = [(np.array([a, b]), np.array([0, 0])), (np.array([c]), np.array([0]))]
  dets = [(np.array([a, _box(60, 60, 5, 5), a]), np.array([0.9, 0.8, 0.5]), np.array([0, 0, 0])),
          (np.array([c]), np.array([0.7]), np.array([0]))]
  # all-point: 1/3 * 1 + 1/3 * 2/3 = 5/9; 11-point: 4 points at 1, 3 at 2/3, 4 at 0 -> 6/11.
  assert np.isclose(det.mean_average_precision(dets, gts, 1).map, 5 / 9, atol=1e-12)
  assert np.isclose(det.mean_average_precision(dets, gts, 1, use_07_metric=True).map, 6 / 11, atol=1e-12)
  # A detection on an image without objects is a false positive: appended last (lowest score) it changes nothing
  # above, placed first it halves the first precision.
  gts_e = gts + [(np.zeros((0, 4)), np.zeros(0, int))]
  fp_low = dets + [(np.array([a]), np.array([0.1]), np.array([0]))]
  assert np.isclose(det.mean_average_precision(fp_low, gts_e, 1).map, 5 / 9, atol=1e-12)
  fp_high = dets + [(np.array([a]), np.array([0.95]), np.array([0]))]
  # precision 0, 1/2, 1/3, 1/2, 2/5 at recall 0, 1/3, 1/3, 2/3, 2/3: envelope 1/2 up to 2/3 -> 1/3.
  assert np.isclose(det.mean_average_precision(fp_high, gts_e, 1).map, 1 / 3, atol=1e-12)


def test_map_iou_threshold_difficult_and_matching_rules():
  g = np.array([_box(0, 0, 10, 10)])
  near = np.array([_box(0, 0, 10, 5)])  # IoU 0.5 exactly: a match at 0.5, not at 0.6
  assert det.mean_average_precision([(near, [0.9], [0])], [(g, [0])], 1).map == 1.0
  assert det.mean_average_precision([(near, [0.9], [0])], [(g, [0])], 1, iou_threshold=0.6).map == 0.0
  # a difficult ground truth is neither needed nor penalised.
  gd = (np.array([_box(0, 0, 10, 10), _box(40, 40, 10, 10)]), np.array([0, 0]), np.array([False, True]))
  d = (np.array([_box(0, 0, 10, 10), _box(40, 40, 10, 10)]), np.array([0.9, 0.95]), np.array([0, 0]))
  assert det.mean_average_precision([d], [gd], 1).map == 1.0
  # VOC: a detection whose best ground truth is taken is a false positive; COCO: it takes the next one.
  g2 = np.array([_box(0, 0, 10, 10), _box(0, 4, 10, 10)])
  d2 = np.array([_box(0, 0, 10, 10), _box(0, 2, 10, 10)])  # IoU(d2[1], g1) = 8/12, IoU(d2[1], g2) = 8/12 - eps
  d2[1, 1] = 1.9
  ov = det.iou_np(d2, g2)
  assert ov[1, 0] > ov[1, 1] >= 0.5
  dets = [(d2, [0.9, 0.8], [0, 0])]
  assert np.isclose(det.mean_average_precision(dets, [(g2, [0, 0])], 1, matching="voc").map, 0.5)
  assert det.mean_average_precision(dets, [(g2, [0, 0])], 1, matching="coco").map == 1.0


def test_map_refuses_bad_input():
  g = [(np.array([_box(0, 0, 1, 1)]), np.array([0]))]
  with pytest.raises(ValueError, match="iou_threshold"):
    det.mean_average_precision([(np.zeros((0, 4)), [], [])], g, 1, iou_threshold=0.0)
  with pytest.raises(ValueError, match="labels"):
    det.mean_average_precision([(np.array([_box(0, 0, 1, 1)]), [0.5], [3])], g, 2)
  with pytest.raises(ValueError, match="images"):
    det.mean_average_precision([], g, 1)
  with pytest.raises(ValueError, match="matching"):
    det.mean_average_precision([(np.zeros((0, 4)), [], [])], g, 1, matching="x")


def _random_case(seed, n_images=40, num_classes=3):
  rng = np.random.default_rng(seed)
  gts, dets = [], []
  for _ in range(n_images):
    k = rng.integers(0, 6)
    xy = rng.uniform(0, 80, (k, 2))
    wh = rng.uniform(5, 30, (k, 2))
    gb = np.concatenate([xy, xy + wh], 1)
    gl = rng.integers(0, num_classes, k)
    gts.append((gb, gl))
    keep = rng.random(k) < 0.8
    jit = rng.normal(0, 3, (k, 4))
    db = np.concatenate([gb[keep] + jit[keep], np.concatenate([rng.uniform(0, 80, (3, 2))] * 2, 1)
                         + np.concatenate([np.zeros((3, 2)), rng.uniform(5, 30, (3, 2))], 1)])
    db = np.concatenate([db, gb[keep][:1] + rng.normal(0, 2, (min(1, keep.sum()), 4))])  # a duplicate
    dl = np.concatenate([gl[keep], rng.integers(0, num_classes, 3), gl[keep][:1]])
    ds = rng.random(len(dl))
    dets.append((db, ds, dl))
  return gts, dets


def test_map_agrees_with_pycocotools():
  pytest.importorskip("pycocotools")
  from pycocotools.coco import COCO
  from pycocotools.cocoeval import COCOeval

  gts, dets = _random_case(0)
  images, anns, results = [], [], []
  for i, ((gb, gl), (db, ds, dl)) in enumerate(zip(gts, dets)):
    images.append({"id": i, "width": 120, "height": 120})
    for b, lab in zip(gb, gl):
      anns.append({"id": len(anns) + 1, "image_id": i, "category_id": int(lab), "iscrowd": 0,
                   "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]], "area": (b[2] - b[0]) * (b[3] - b[1])})
    for b, s, lab in zip(db, ds, dl):
      results.append({"image_id": i, "category_id": int(lab), "score": float(s),
                      "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]]})
  coco = COCO()
  coco.dataset = {"images": images, "annotations": anns, "categories": [{"id": c} for c in range(3)]}
  coco.createIndex()
  ev = COCOeval(coco, coco.loadRes(results), "bbox")
  ev.params.iouThrs = np.array([0.5])
  ev.params.recThrs = np.linspace(0.0, 1.0, 100001)  # a fine grid: the all-point area to within 1e-5
  ev.params.maxDets = [1000]
  ev.params.areaRng = [[0, 1e10]]
  ev.params.areaRngLbl = ["all"]
  import contextlib
  import io
  with contextlib.redirect_stdout(io.StringIO()):
    ev.evaluate()
    ev.accumulate()
  prec = ev.eval["precision"][0, :, :, 0, 0]  # [R, K]
  ref = np.array([prec[:, k].mean() if (prec[:, k] > -1).all() else np.nan for k in range(3)])
  ours = det.mean_average_precision(dets, gts, 3, matching="coco")
  assert np.allclose(ours.ap, ref, atol=1e-4, equal_nan=True)
  assert abs(ours.map - np.nanmean(ref)) <= 1e-4


# ---------------------------------------------------------------- NMS, decode, loss, boxes


def test_nms_hand_made():
  boxes = np.array([_box(0, 0, 10, 10), _box(2, 0, 10, 10), _box(50, 50, 10, 10), _box(0, 1, 10, 10)])
  # IoU(0, 1) = 80/120 = 0.67 > 0.45: suppressed; box 2 is disjoint; box 3 is another class.
  scores = np.array([[0.9, 0.0], [0.8, 0.0], [0.7, 0.0], [0.0, 0.6]])
  d = det.nms(boxes, scores, iou_threshold=0.45)
  assert list(d.labels) == [0, 0, 1] and np.allclose(d.scores, [0.9, 0.7, 0.6])
  assert np.allclose(d.boxes, boxes[[0, 2, 3]])
  assert len(det.nms(boxes, scores, iou_threshold=0.7).scores) == 4  # 0.67 <= 0.7: kept
  assert len(det.nms(boxes, scores, score_threshold=0.65).scores) == 2
  assert len(det.nms(boxes, scores, max_detections=1).scores) == 1
  assert det.nms(np.zeros((0, 4)), np.zeros((0, 2))).boxes.shape == (0, 4)
  with pytest.raises(ValueError, match="iou_threshold"):
    det.nms(boxes, scores, iou_threshold=1.5)


class TestDecode(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  def test_decode_inverts_the_loss_targets(self):
    _decode_roundtrip(self.variant)


def _decode_roundtrip(variant):
  boxes = jnp.array([[_box(3, 4, 9, 10), _box(17, 2, 14, 13), [0, 0, 0, 0]]], jnp.float32)
  labels = jnp.array([[1, 2, -1]], jnp.int32)
  t = jax.jit(lambda b, lab: det.yolo_targets(b, lab, 4, ANCHORS, 32))(boxes, labels)
  assert float(t.obj.sum()) == 2.0
  logit = lambda p: jnp.log(p) - jnp.log1p(-p)  # noqa: E731
  raw = jnp.concatenate([logit(jnp.clip(t.txy, 1e-6, 1 - 1e-6)), t.twh,
                         jnp.where(t.obj > 0, 20.0, -20.0)[..., None], 20.0 * jax.nn.one_hot(t.label, 3)],
                        -1).reshape(1, 4, 4, -1)
  b, s = variant(lambda r: det.decode(r, ANCHORS, 3, 32))(raw)
  d = det.nms(np.asarray(b[0]), np.asarray(s[0]), score_threshold=0.5)
  order = np.argsort(d.labels)
  assert list(d.labels[order]) == [1, 2]
  assert np.allclose(d.boxes[order], np.asarray(boxes[0, :2]), atol=1e-3)
  # the loss of that perfect prediction is near its floor and far below a random one's
  loss_fn = jax.jit(lambda r, b, lab: det.yolo_loss(r, b, lab, ANCHORS, 3, 32))
  loss, _ = loss_fn(raw, boxes, labels)
  loss_r, _ = loss_fn(jax.random.normal(jax.random.key(0), raw.shape), boxes, labels)
  assert float(loss) < 1e-3 < float(loss_r)
  # an image with no objects: only the no-object term
  _, parts = loss_fn(raw, boxes, jnp.full_like(labels, -1))
  assert float(parts["coord"]) == float(parts["obj"]) == float(parts["cls"]) == 0.0


def test_check_boxes_clips_or_refuses():
  boxes = np.array([[_box(-2, 3, 10, 10), _box(40, 40, 5, 5), [0, 0, 0, 0]]], np.float32)
  labels = np.array([[0, 1, -1]])
  b, lab = det.check_boxes(boxes, labels, 32, num_classes=3, mode="clip")
  assert np.allclose(b[0, 0], [0, 3, 8, 13]) and list(lab[0]) == [0, -1, -1]  # fully outside: dropped
  with pytest.raises(ValueError, match=r"boxes\[0, 0\].*outside the 32x32 image"):
    det.check_boxes(boxes, labels, 32, num_classes=3, mode="refuse")
  with pytest.raises(ValueError, match="labels"):
    det.check_boxes(boxes, labels + 5, 32, num_classes=3)
  with pytest.raises(ValueError, match="not a box"):
    det.check_boxes(np.array([[[5, 5, 1, 1]]], np.float32), np.array([[0]]), 32, num_classes=1)


def test_shapes_generator_is_deterministic_per_seed():
  cfg = det.ShapesConfig(num_train=12, num_test=6)
  a_tr, a_te = det.shapes_splits(cfg, 3)
  b_tr, _ = det.shapes_splits(cfg, 3)
  c_tr, _ = det.shapes_splits(cfg, 4)
  for x, y in zip(a_tr, b_tr):
    np.testing.assert_array_equal(x, y)
  assert not np.array_equal(a_tr.images, c_tr.images)
  assert not np.array_equal(a_tr.images[:6], a_te.images)  # train and test never share an image
  part = det.generate_shapes(cfg, 3, "train", n=2, start=5)  # any image regenerates alone
  np.testing.assert_array_equal(part.images, a_tr.images[5:7])
  valid = a_tr.labels >= 0
  assert valid.sum(1).min() >= 1 and a_tr.labels.max() < 3
  bx = a_tr.boxes[valid]
  assert bx.min() >= 0 and bx.max() <= 32 and np.all(bx[:, 2] - bx[:, 0] >= 8 - 1e-4)
  assert a_tr.images.dtype == np.float32 and 0 <= a_tr.images.min() and a_tr.images.max() <= 1
  with pytest.raises(ValueError, match="max_size"):
    det.ShapesConfig(min_size=20, max_size=10)


# ---------------------------------------------------------------- conversion pieces


def test_ibt_mean_output_approximates_leaky_relu():
  xs = jnp.linspace(-1.0, 1.0, 41)
  nrn = snn.ibt_neuron(1.0, alpha=0.1)
  T = 1000

  def body(s, t):
    s, o = nrn.step(s, xs, t)
    return s, o

  _, o = jax.lax.scan(body, nrn.init(xs.shape), jnp.arange(T))
  mean = np.asarray(o.sum(0)) / T
  np.testing.assert_array_less(np.abs(mean - np.where(xs > 0, xs, 0.1 * xs)), 1.0 / T + 1e-6)
  # a plain IF neuron drops the negative side
  nif = snn.if_neuron(1.0)
  _, o_if = jax.lax.scan(lambda s, t: nif.step(s, xs, t), nif.init(xs.shape), jnp.arange(T))
  assert float(np.asarray(o_if)[:, xs < 0].sum()) == 0.0


@pytest.fixture(scope="module")
def detector():
  model = tiny_yolo((8, 16), pools=2, num_anchors=2, num_classes=3)
  data = det.generate_shapes(det.ShapesConfig(), 0, "train", n=32)
  v = jax.jit(model.init)(jax.random.key(0), data.images[:2])
  # non-trivial batch-norm statistics
  _, st = jax.jit(lambda v, x: model.apply(v, x, train=True, mutable=["batch_stats"]))(v, data.images)
  return model, {**v, **st}, data.images


@pytest.fixture(scope="module")
def channel_net(detector):
  model, variables, x = detector
  return snn.convert(model, variables, x, norm="channel_p99.9")


def test_channelwise_norm_maps_each_channel_p999_to_threshold(detector, channel_net):
  model, variables, x = detector
  net = channel_net
  _, acts = snn.snn_ann_apply(net, jnp.asarray(x), return_activations=True)
  for a in acts:
    a = np.asarray(a).reshape(-1, a.shape[-1])
    p = np.percentile(a, 99.9, axis=0)
    live = np.percentile(a, 99.9, axis=0) != 0
    np.testing.assert_allclose(p[live], 1.0, rtol=1e-4)
  layer = snn.convert(model, variables, x, norm="layer_p99.9")
  _, acts_l = snn.snn_ann_apply(layer, jnp.asarray(x), return_activations=True)
  p_l = np.percentile(np.asarray(acts_l[0]).reshape(-1, 8), 99.9, axis=0)
  assert p_l.max() <= 1.5 and p_l.min() < 0.9  # one lambda per layer: low-range channels stay low


def test_grid_head_is_read_exactly(detector, channel_net):
  model, variables, x = detector
  net = channel_net
  dense = conv_head_as_dense(net)
  ann = np.asarray(model.apply(variables, jnp.asarray(x[:8])))
  flat = np.asarray(snn.snn_ann_apply(dense, jnp.asarray(x[:8]))) * np.asarray(dense.out_scale)
  np.testing.assert_allclose(flat.reshape(ann.shape), ann, rtol=1e-4, atol=1e-4)
  assert head_reshape(jnp.asarray(ann), 2).shape == (8, 8, 8, 2, 8)
  # fan-out of the head's inputs stays the 1x1 conv's: Cout per neuron
  path = net.ops[-1].path
  assert int(np.unique(np.asarray(dense.fanouts[path[0]]))[0]) == 16
  r = snn.simulate(dense, x[:4], "ibt", 48)
  assert r.output.shape == (48, 4, 8 * 8 * 16)
  err = np.abs(np.asarray(r.logits).reshape(ann[:4].shape) - ann[:4]).mean()
  assert err < 0.5 * np.abs(ann[:4]).mean()


def test_converter_refusals_are_named(detector, channel_net):
  model, variables, x = detector
  net = channel_net
  (name,) = net.ops[-1].path
  w = net.params[name]
  three = {**net.params, name: {"kernel": jnp.zeros((3, 3) + w["kernel"].shape[2:]), "bias": w["bias"]}}
  with pytest.raises(ValueError, match="3x3 kernel"):
    conv_head_as_dense(net._replace(params=three))
  with pytest.raises(ValueError, match="1x1 conv output layer"):
    conv_head_as_dense(net._replace(ops=net.ops[:-1] + (snn.SNNOp("dense", path=(name,)),)))

  class NotSequential(nn.Module):
    @nn.compact
    def __call__(self, x):
      return nn.Conv(4, (1, 1))(x)

  ns = NotSequential()
  with pytest.raises(ValueError, match="LayerSpec"):
    snn.convert(ns, ns.init(jax.random.key(0), x[:1]), x[:4])
  with pytest.raises(ValueError, match="pools"):
    tiny_yolo_layers((8, 16), pools=3)
