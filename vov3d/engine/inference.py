"""A trained model ready for use outside the test loop (the demo, stream_net, the export
tool): built from the config, its weights loaded by the Checkpointer's test rules (strict,
one-line mismatch summary; TEST.CHECKPOINT_FILE_PATH, else the newest checkpoint in
OUTPUT_DIR, else TRAIN.CHECKPOINT_FILE_PATH; random weights only with
TEST.ALLOW_RANDOM_INIT), and the class names to show with its scores.
"""
from dataclasses import dataclass
from typing import List, Optional, Sequence

import torch
from yacs.config import CfgNode

from vov3d.config.errors import ConfigError
from vov3d.engine.checkpointer import Checkpointer, Loaded
from vov3d.engine.preflight import check_registered_names
from vov3d.utils.checkpoint_io import CheckpointError


@dataclass
class InferenceModel:
    model: torch.nn.Module  # in eval mode, on the config's device
    class_names: List[str]  # in label order
    loaded: Loaded  # which file the weights came from (path None: random weights)
    names_origin: str  # where the class names came from, for a log line
    names_warning: Optional[str] = None  # the label file contradicts the checkpoint's names


@dataclass
class ClassNames:
    names: List[str]
    origin: str
    warning: Optional[str] = None  # the label file contradicts the checkpoint's stored names


def resolve_class_names(labels: Optional[Sequence[str]], label_setting: str,
                        stored: Optional[Sequence[str]], checkpoint: Optional[str],
                        num_classes: int) -> ClassNames:
    """The label file's names (`labels`, read from `label_setting`), else the names stored in
    the checkpoint, else "class <id>". A label file that names the classes differently from
    the checkpoint still wins (it may translate them), with a warning naming the first
    difference; stored names of another count are refused."""
    if stored is not None and len(stored) != num_classes:
        raise CheckpointError(f"checkpoint '{checkpoint}' stores {len(stored)} class names; "
                              f"MODEL.NUM_CLASSES is {num_classes}.")
    if labels is not None:
        warning = None
        if stored is not None and list(stored) != list(labels):
            label = next(i for i, (a, b) in enumerate(zip(stored, labels)) if a != b)
            warning = (f"{label_setting} differs from the class names stored in '{checkpoint}' (label "
                       f"{label} is {labels[label]!r} in {label_setting}, {stored[label]!r} in the "
                       f"checkpoint); showing the {label_setting} names.")
        return ClassNames(list(labels), label_setting, warning)
    if stored is not None:
        return ClassNames(list(stored), f"the {num_classes} stored in '{checkpoint}'")
    return ClassNames([f"class {i}" for i in range(num_classes)], "class ids (no label file, none stored)")


def with_checkpoint(cfg: CfgNode, checkpoint: str) -> CfgNode:
    """`cfg` with TEST.CHECKPOINT_FILE_PATH set to `checkpoint` (unchanged when empty)."""
    if not checkpoint:
        return cfg
    cfg = cfg.clone()
    cfg.defrost()
    cfg.TEST.CHECKPOINT_FILE_PATH = checkpoint
    cfg.freeze()
    return cfg


def load_inference_model(cfg: CfgNode, label_file: str = "",
                         label_setting: str = "DEMO.LABEL_FILE_PATH") -> InferenceModel:
    """Build MODEL.MODEL_NAME and load its test weights; `label_file` (PySlowFast's
    {"name": id} JSON or a JSON list in label order, read from `label_setting`) names the
    classes. Bad names, label files and checkpoints raise one-line user errors
    (ConfigError, ListFormatError, CheckpointError), the label file before the checkpoint."""
    from vov3d.datasets.lists import read_class_name_file
    from vov3d.models import build_model

    check_registered_names(cfg, datasets=False)
    labels = None
    if label_file:
        try:
            labels = read_class_name_file(label_file, cfg.MODEL.NUM_CLASSES)
        except OSError as e:
            raise ConfigError(f"{label_setting} '{label_file}' cannot be read ({e.strerror or e}).") from None
    model = build_model(cfg)
    loaded = Checkpointer(cfg, model).resume_or_load("test")
    names = resolve_class_names(labels, label_setting, loaded.class_names, loaded.path,
                                cfg.MODEL.NUM_CLASSES)
    if labels is not None:
        names.origin = f"{label_setting} '{label_file}'"
    return InferenceModel(model.eval(), names.names, loaded, names.origin, names.warning)
