"""Backbones: a registry of the kit's own networks beside every timm model, and weights loading.

A new backbone is a function decorated with `@register_model("name")` in a module of this package
(see `cnn.py`); any timm name works without registering.
"""

from kit.models import cnn  # noqa: F401  (registers chestmnist_cnn)
from kit.models.cnn import CNN_NAME, ChestMNISTCNN, cnn_depth
from kit.models.registry import BACKBONES, classifier_of, create_model, list_models, register_model
from kit.models.weights import load_weights, read_state_dict

__all__ = [
    "BACKBONES", "CNN_NAME", "ChestMNISTCNN", "classifier_of", "cnn_depth", "create_model", "list_models", "load_weights",
    "read_state_dict", "register_model",
]
