"""Keys of PySlowFast / VoV3D configs that vov3d accepts but does not keep in its tree.

Reference configs, and the config dumps inside checkpoints of older vov3d versions, set
keys for features vov3d does not have. They are accepted wherever a config is merged from
(yaml files with their `_BASE_` chain, command-line overrides) and never reach the tree.
Each entry says what becomes of a value:

* ignored: nothing reads it; a value other than the references' default is named in a
  warning, so nobody believes it changed anything;
* refused: it switches on a feature vov3d does not have; the load stops with the reason;
* moved: the key was renamed; its value is merged into the new key.

A whole load (file, its bases, overrides) is settled at once, so a base file may switch
something on that its child switches off again.
"""
import logging
from dataclasses import dataclass
from typing import Any, Callable, Dict, Optional, Tuple

from vov3d.config.errors import ConfigError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Legacy:
    default: Any  # what the references default to
    action: str  # "ignore", "refuse" or "move"
    detail: str = ""  # refuse: the accepted value and why; move: the new key
    switched_on: Optional[Callable[[Any], bool]] = None  # refuse: default "value != default"


def _ignored(default: Any) -> Legacy:
    return Legacy(default, "ignore")


def _refused(off: Any, expected: str, switched_on: Callable[[Any], bool] = None) -> Legacy:
    return Legacy(off, "refuse", expected, switched_on)


def _moved(new_key: str) -> Legacy:
    return Legacy("", "move", new_key)


def _names_a_block(location: Any) -> bool:
    """NONLOCAL.LOCATION lists block indices per stage (and pathway); any index is a block."""
    if isinstance(location, (list, tuple)):
        return any(_names_a_block(item) for item in location)
    return True


_STAGES = 4
LEGACY_KEYS: Dict[str, Legacy] = {
    # MODEL.ARCH is checked against a constant of the validation instead.
    "MODEL.SINGLE_PATHWAY_ARCH": _ignored(["c2d", "i3d", "slow", "x3d", "vov3d"]),
    "MODEL.MULTI_PATHWAY_ARCH": _ignored(["slowfast"]),
    # ResNet geometry: no vov3d model is a ResNet.
    "RESNET.WIDTH_PER_GROUP": _ignored(64),
    "RESNET.NUM_BLOCK_TEMP_KERNEL": _ignored([[3], [4], [6], [3]]),
    "RESNET.SPATIAL_STRIDES": _ignored([[1], [2], [2], [2]]),
    "RESNET.DEPTH": _ignored(50),
    # The VoV3D head reads X3D.DIM_C5 and X3D.BN_LIN5, as in the reference.
    "VOV3D.DIM_C5": _ignored(2048),
    "VOV3D.BN_LIN5": _ignored(False),
    "SOLVER.GAMMA": _ignored(0.1),
    "SOLVER.STEP_SIZE": _ignored(1),
    "SOLVER.WARMUP_FACTOR": _ignored(0.1),
    "NONLOCAL.LOCATION": _refused([[[]]] * _STAGES, "empty lists (vov3d models have no non-local blocks)",
                                  _names_a_block),
    "NONLOCAL.GROUP": _ignored([[1]] * _STAGES),
    "NONLOCAL.INSTANTIATION": _ignored("dot_product"),
    "NONLOCAL.POOL": _ignored([[[1, 2, 2], [1, 2, 2]]] * _STAGES),
    "SLOWFAST.BETA_INV": _ignored(8),
    "SLOWFAST.ALPHA": _ignored(8),
    "SLOWFAST.FUSION_CONV_CHANNEL_RATIO": _ignored(2),
    "SLOWFAST.FUSION_KERNEL_SZ": _ignored(5),
    "BN.NUM_SPLITS": _refused(1, "1 (sub-batch BN is set by multigrid training, MULTIGRID.BN_BASE_SIZE)"),
    "DATA.MULTI_LABEL": _refused(False, "False (multi-label datasets are not supported)"),
    "DATA.ENSEMBLE_METHOD": _moved("TEST.ENSEMBLE_METHOD"),
    # PySlowFast's VISUALIZATION_TOOLS.md writes TOP_K; its defaults (and vov3d) read TOPK.
    "TENSORBOARD.HISTOGRAM.TOP_K": _moved("TENSORBOARD.HISTOGRAM.TOPK"),
    # tools/benchmark_data.py takes its sizes from its own flags.
    "BENCHMARK.NUM_EPOCHS": _ignored(5),
    "BENCHMARK.LOG_PERIOD": _ignored(100),
    "BENCHMARK.SHUFFLE": _ignored(True),
    "DETECTION.ENABLE": _refused(False, "False (classification only)"),
    "DETECTION.ALIGNED": _ignored(True),
    "DETECTION.SPATIAL_SCALE_FACTOR": _ignored(16),
    "DETECTION.ROI_XFORM_RESOLUTION": _ignored(7),
    # PySlowFast's demo keys for detection (AVA) and its threshold display; the vov3d demo
    # classifies whole frames and draws the top-k classes.
    "DEMO.PREDS_BOXES": _refused("", "'' (demos with precomputed boxes need detection)"),
    "DEMO.GT_BOXES": _refused("", "'' (demos with ground-truth boxes need detection)"),
    "DEMO.DETECTRON2_CFG": _ignored("COCO-Detection/faster_rcnn_R_50_FPN_3x.yaml"),
    "DEMO.DETECTRON2_WEIGHTS": _ignored("detectron2://COCO-Detection/faster_rcnn_R_50_FPN_3x/137849458/"
                                        "model_final_280758.pkl"),
    "DEMO.DETECTRON2_THRESH": _ignored(0.9),
    "DEMO.STARTING_SECOND": _ignored(900),
    "DEMO.FPS": _ignored(30),
    "DEMO.INPUT_FORMAT": _ignored("BGR"),
    "DEMO.NUM_VIS_INSTANCES": _ignored(2),
    "DEMO.VIS_MODE": _refused("thres", "'top-k' (the demo draws the TENSORBOARD.MODEL_VIS.TOPK_PREDS highest "
                              "classes; score thresholds are not implemented)", lambda mode: mode != "top-k"),
    "DEMO.COMMON_CLASS_THRES": _ignored(0.7),
    "DEMO.UNCOMMON_CLASS_THRES": _ignored(0.3),
    "DEMO.COMMON_CLASS_NAMES": _ignored(["watch (a person)", "talk to (e.g., self, a person, a group)",
                                         "listen to (a person)", "touch (an object)", "carry/hold (an object)",
                                         "walk", "sit", "lie/sleep", "bend/bow (at the waist)"]),
    "DEMO.SLOWMO": _refused(1, "1 (slow motion is not implemented)"),
}

_GROUPS = {key.rsplit(".", 1)[0] for key in LEGACY_KEYS}


def legacy_entry(key: str) -> Optional[Legacy]:
    return LEGACY_KEYS.get(key)


def is_legacy_group(key: str) -> bool:
    """True for a group that only legacy keys live in (e.g. SLOWFAST, NONLOCAL)."""
    return key in _GROUPS


def _plain(value: Any) -> Any:
    """Tuples (Python-literal overrides) compare equal to the lists of yaml and defaults."""
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


class LegacyValues:
    """The legacy keys met while merging one config, in merge order (a later value wins)."""

    def __init__(self) -> None:
        self._found: Dict[str, Tuple[Any, str]] = {}

    def record(self, key: str, value: Any, source: str) -> None:
        self._found[key] = (_plain(value), source)

    def settle(self) -> None:
        """Refuse switched-on features, then warn about ignored and moved keys."""
        for key, (value, source) in self._found.items():
            entry = LEGACY_KEYS[key]
            if entry.action != "refuse":
                continue
            on = entry.switched_on(value) if entry.switched_on else value != _plain(entry.default)
            if on:
                raise ConfigError(f"{source}: invalid value for '{key}': {value!r}; expected {entry.detail}.")
        changed = [key for key, (value, _) in self._found.items()
                   if LEGACY_KEYS[key].action == "ignore" and value != _plain(LEGACY_KEYS[key].default)]
        if changed:
            logger.warning("These keys are accepted for compatibility with PySlowFast/VoV3D configs but "
                           "have no effect in vov3d: %s.", ", ".join(changed))
        for key, (value, source) in self._found.items():
            entry = LEGACY_KEYS[key]
            if entry.action == "move" and value != entry.default:
                logger.warning("%s is the legacy name of %s; %s sets it to %r.", key, entry.detail,
                               source, value)
