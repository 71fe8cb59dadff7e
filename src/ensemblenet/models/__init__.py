"""Pretrained backbones with a new head: sources, weights, heads, freeze policies, model files.

``load_backbone("source:name", weights=...)`` builds a feature extractor from a registered source
(``torchvision:``, ``timm:``, ``hub:``); ``weights`` is None, a weights name served from the
offline catalog or downloaded, or a local file fitted by name or, failing that, by position
("same tensors, other names"). :func:`create_model` puts a registered head on it as a
:class:`TransferModel`, which normalizes its own input; a freeze policy says what trains;
:func:`save_model` / :func:`load_model` write and rebuild the exact model offline, from a file
that holds no code (safetensors + checked JSON settings, one sha256 over both).

A newcomer adds a backbone source with :func:`register_source`, a head with
:func:`register_head` and a freeze policy with :func:`register_freeze_policy`. A backbone can also
be an ``nn.Module`` object (a timm model, or any module with a stated feature width):
:func:`create_model` uses it as it is (:func:`backbone_from_module`).
"""

from ._backbones import SOURCES, SourceLoader, code_origin, load_backbone, register_source
from ._checkpoint import (
    FORMAT,
    FORMAT_VERSION,
    LEGACY_FORMAT_VERSION,
    check_header,
    config_from_file,
    file_header,
    load_checkpoint,
    load_model,
    model_from_state,
    save_model,
    tensors_sha256,
)
from ._file_format import (
    FileContents,
    atomic_write,
    file_sha256,
    peek_format,
    read_document,
    write_document,
)
from ._file_kinds import describe_foreign
from ._freeze import (
    FREEZE_POLICIES,
    BatchNormOnly,
    FreezePolicy,
    FreezeStages,
    FreezeUnfreeze,
    HeadOnly,
    NoFreeze,
    ParamGroup,
    batchnorm_modules,
    freeze_label,
    parse_freeze,
    policy_config,
    register_freeze_policy,
    resolve_freeze,
    set_trainable,
)
from ._heads import HEADS, Head, LinearHead, MLPHead, head_config, register_head, resolve_head
from ._offline_catalog import (
    OFFLINE_WEIGHTS,
    OfflineWeights,
    list_offline_weights,
    offline_weights_entry,
    offline_weights_path,
    register_offline_weights,
)
from ._schema import MAX_INPUT_SIDE, Fields
from ._source_common import Backbone, WeightsArg, strip_classifier
from ._source_module import MODULE_SOURCE, backbone_from_module
from ._stages import backbone_stages, split_backbone
from ._transfer import ModelConfig, TransferModel, create_model, rebuild_model
from ._weight_files import load_into, read_state_dict, remap_by_position

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "FREEZE_POLICIES",
    "HEADS",
    "LEGACY_FORMAT_VERSION",
    "MAX_INPUT_SIDE",
    "MODULE_SOURCE",
    "OFFLINE_WEIGHTS",
    "SOURCES",
    "Backbone",
    "BatchNormOnly",
    "Fields",
    "FileContents",
    "FreezePolicy",
    "FreezeStages",
    "FreezeUnfreeze",
    "Head",
    "HeadOnly",
    "LinearHead",
    "MLPHead",
    "ModelConfig",
    "NoFreeze",
    "OfflineWeights",
    "ParamGroup",
    "SourceLoader",
    "TransferModel",
    "WeightsArg",
    "atomic_write",
    "backbone_from_module",
    "backbone_stages",
    "batchnorm_modules",
    "check_header",
    "code_origin",
    "config_from_file",
    "create_model",
    "describe_foreign",
    "file_header",
    "file_sha256",
    "freeze_label",
    "head_config",
    "list_offline_weights",
    "load_backbone",
    "load_checkpoint",
    "load_into",
    "load_model",
    "model_from_state",
    "offline_weights_entry",
    "offline_weights_path",
    "parse_freeze",
    "peek_format",
    "policy_config",
    "read_document",
    "read_state_dict",
    "rebuild_model",
    "register_freeze_policy",
    "register_head",
    "register_offline_weights",
    "register_source",
    "remap_by_position",
    "resolve_freeze",
    "resolve_head",
    "save_model",
    "set_trainable",
    "split_backbone",
    "strip_classifier",
    "tensors_sha256",
    "write_document",
]
