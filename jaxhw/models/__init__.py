"""Models as Flax Linen modules, used through their pure ``init(key, x)`` / ``apply(variables, x, ...)``: MLP,
LeNet-5, ResNet-18, VGG, the sequential CNN of ANN-to-SNN conversion, the binary crossbar nets, MemN2N and a
Tiny-YOLO-style detector.

Parameters are plain nested dicts in ``variables["params"]`` (batch-norm statistics in
``variables["batch_stats"]``); a layer's identity is its path there (``"Dense_0"``, ``"ResNet/BasicBlock_0/Conv_1"``).
No model imports a hardware package: effects attach from outside through `jaxhw.effects`.
"""

from jaxhw.models.binary_net import BinaryCNN, BinaryMLP, binary_layer_paths
from jaxhw.models.lenet import LeNet5
from jaxhw.models.memn2n import MemN2N, dot_similarity, identity_activation, position_encoding
from jaxhw.models.mlp import MLP, dense_paths, mlp, mlp_apply, mlp_init
from jaxhw.models.resnet import BasicBlock, ResNet, resnet18
from jaxhw.models.snn_cnn import MNIST_CNN, SequentialCNN, bn_population_stats, vgg16_layers
from jaxhw.models.tiny_yolo import head_reshape, tiny_yolo, tiny_yolo_layers
from jaxhw.models.vgg import VGG, VGG_PLANS, vgg16

__all__ = [
    "MLP", "BasicBlock", "BinaryCNN", "BinaryMLP", "LeNet5", "MNIST_CNN", "ResNet", "SequentialCNN", "VGG", "VGG_PLANS",
    "binary_layer_paths", "bn_population_stats", "dense_paths", "mlp", "mlp_apply", "mlp_init", "resnet18", "vgg16",
    "vgg16_layers", "MemN2N", "dot_similarity", "identity_activation", "position_encoding",
    "head_reshape", "tiny_yolo", "tiny_yolo_layers",
]
