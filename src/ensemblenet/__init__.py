"""ensemblenet (development placeholder: the full export list lands at integration)."""

from ._version import __version__
from .errors import *  # noqa: F403
from .freeze import register_freeze_policy
from .heads import register_head
from .trainer import TrainConfig, Trainer
from .backbones import load_backbone
from .checkpoint import load_model, save_model
from .model import TransferModel, create_model
from .spec import InputSpec
