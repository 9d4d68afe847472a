"""Object detection: YOLOv2 decoding and loss, non-maximum suppression, VOC-style mAP, a generated shapes set
and a reader for prepared PASCAL VOC 2007.

The detector itself is a Flax module in `jaxhw.models.tiny_yolo`; everything here is a pure function of arrays
(``decode``, ``yolo_loss``) or a host-side metric (``nms``, ``mean_average_precision``).
"""

from jaxhw.detection.boxes import BOX_MODES, Detections, check_boxes, decode, iou, iou_np, nms, postprocess
from jaxhw.detection.evaluate import MATCHINGS, MAPResult, mean_average_precision, voc_ap
from jaxhw.detection.loss import YoloTargets, yolo_loss, yolo_targets
from jaxhw.detection.shapes import SHAPE_CLASSES, DetectionSet, ShapesConfig, generate_shapes, shapes_splits
from jaxhw.detection.voc import VOC_CLASSES, VOC_NAME, VocSet, load_voc

__all__ = [
    "BOX_MODES", "Detections", "check_boxes", "decode", "iou", "iou_np", "nms", "postprocess",
    "MATCHINGS", "MAPResult", "mean_average_precision", "voc_ap",
    "YoloTargets", "yolo_loss", "yolo_targets",
    "SHAPE_CLASSES", "DetectionSet", "ShapesConfig", "generate_shapes", "shapes_splits",
    "VOC_CLASSES", "VOC_NAME", "VocSet", "load_voc",
]
