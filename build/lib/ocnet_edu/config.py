"""Typed training configuration: dataclasses, YAML loading with ``key.sub=value`` overrides.

A config is a tree of dataclasses (:class:`Config` at the root). :func:`load_config` starts from
the defaults, applies the paper's per-dataset settings if the YAML names a ``preset`` (a key of
:data:`PAPER_DEFAULTS`), then the YAML file, then the command-line overrides. Every key is
checked: an unknown key raises ``ValueError`` naming it, the valid keys and the closest match;
a value of the wrong type raises ``ValueError`` naming the key, the expected type and the value.

Override values are parsed with YAML typing (``optim.lr=0.02`` is a float, ``runtime.amp=true``
a bool, ``data.crop_size=[520,520]`` a list). Because YAML 1.1 reads ``1e-4`` (no dot) as a
string, a string that Python's ``float()`` accepts is accepted for a float field.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

import yaml

from ocnet_edu.data.registry import NUM_CLASSES

__all__ = [
    "Config",
    "DataConfig",
    "LossConfig",
    "ModelConfig",
    "OptimConfig",
    "PAPER_DEFAULTS",
    "RuntimeConfig",
    "ScheduleConfig",
    "config_to_dict",
    "load_config",
    "paper_config",
    "save_config",
]


@dataclass
class ModelConfig:
    """The network: backbone (and its keyword options), object-context module (and its keyword
    options), classes, pretrained weights (a local file), dropout before the classifiers.

    ``backbone_options`` are passed to the backbone's constructor; only ``small`` takes any
    (``width``, ``blocks``: :class:`~ocnet_edu.backbones.SmallBackbone`)."""

    backbone: str = "resnet101"
    backbone_options: dict[str, Any] = field(default_factory=dict)
    context: str = "base_oc_isa"
    context_options: dict[str, Any] = field(default_factory=dict)
    num_classes: int = 19
    pretrained: str | None = None
    dropout: float = 0.1


@dataclass
class DataConfig:
    """Dataset and augmentation (Sec. 4.2: flip, scale in [0.5, 2], brightness in [-10, 10], crop).

    ``synthetic_length`` and ``synthetic_size`` size the generated datasets used at CPU scale
    (``dataset`` = ``"synthetic"`` or ``"digits"``; ``digit_scale`` is the digits' card size).
    ``dataset`` is a key of :data:`ocnet_edu.data.DATASETS`."""

    dataset: str = "cityscapes"
    root: str = "data/cityscapes"
    split: str = "train"
    val_split: str = "val"
    crop_size: tuple[int, int] = (512, 1024)
    base_size: int | None = None
    scale_range: tuple[float, float] = (0.5, 2.0)
    brightness: float = 10.0
    hflip: bool = True
    digit_scale: int = 4
    synthetic_length: int = 64
    synthetic_size: tuple[int, int] = (64, 64)


@dataclass
class OptimConfig:
    """SGD with the poly policy ``lr · (1 - iter / max_iters)^power`` (Sec. 4.2, power 0.9)."""

    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 5e-4
    poly_power: float = 0.9


@dataclass
class ScheduleConfig:
    """Iterations, batch size (total over all GPUs), checkpoint interval."""

    max_iters: int = 60_000
    batch_size: int = 8
    checkpoint_every: int = 5_000


@dataclass
class LossConfig:
    """Cross-entropy on the final output + ``aux_weight`` × the auxiliary loss (Sec. 4.2: 0.4),
    optionally with online hard example mining (OHEM)."""

    aux_weight: float = 0.4
    ohem: bool = False
    ohem_thresh: float = 0.7
    ohem_min_kept: int = 100_000
    class_weights: list[float] | None = None


@dataclass
class RuntimeConfig:
    """Where and how to run; ``device="auto"`` picks CUDA when present; ``amp_dtype`` is the
    autocast dtype when ``amp`` is on; ``freeze_bn`` keeps every BatchNorm on its running
    statistics during training (its affine parameters still learn)."""

    device: str = "auto"
    amp: bool = False
    amp_dtype: str = "bfloat16"
    channels_last: bool = False
    freeze_bn: bool = False
    compile: bool = False
    seed: int = 0
    workers: int = 4
    out_dir: str = "runs/default"


@dataclass
class Config:
    """The whole training configuration. ``preset`` names an entry of :data:`PAPER_DEFAULTS`."""

    preset: str | None = None
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)


# Sec. 4.2, quoted per dataset:
# Cityscapes: "we set the initial learning rate as 0.01, weight decay as 0.0005, crop size as
#   512×1024 and batch size as 8. For the experiments evaluated on val/test, we set training
#   iterations as 60K/100K on train/train+val respectively."
# ADE20K: "initial learning rate as 0.02, weight decay as 0.0001, crop size as 520×520, batch
#   size as 16 and training iterations as 150K"
# LIP: "initial learning rate as 0.007, weight decay as 0.0005, crop size as 473×473, batch size
#   as 32 and training iterations as 100K"
# PASCAL-Context: "initial learning rate as 0.001, weight decay as 0.0001, crop size as 520×520,
#   batch size as 16 and training iterations as 30K"
# COCO-Stuff: "initial learning rate as 0.001, weight decay as 0.0001, crop size as 520×520,
#   batch size as 16 and training iterations as 60K"
# num_classes: Sec. 4.1, read from the dataset's class (ocnet_edu.data.NUM_CLASSES; PASCAL-Context:
#   "59 semantic classes and 1 background class" -> 60).
def _preset(dataset: str, lr: float, wd: float, crop: tuple[int, int], batch: int, iters: int,
            split: str = "train") -> dict[str, Any]:
    """The overrides of one row of :data:`PAPER_DEFAULTS`."""
    return {
        "model": {"num_classes": NUM_CLASSES[dataset]},
        "data": {"dataset": dataset, "root": f"data/{dataset}", "split": split, "crop_size": crop},
        "optim": {"lr": lr, "weight_decay": wd},
        "schedule": {"batch_size": batch, "max_iters": iters},
    }


PAPER_DEFAULTS: dict[str, dict[str, Any]] = {
    "cityscapes": _preset("cityscapes", 0.01, 5e-4, (512, 1024), 8, 60_000),
    "cityscapes_trainval": _preset("cityscapes", 0.01, 5e-4, (512, 1024), 8, 100_000, "train+val"),
    "ade20k": _preset("ade20k", 0.02, 1e-4, (520, 520), 16, 150_000),
    "lip": _preset("lip", 0.007, 5e-4, (473, 473), 32, 100_000),
    "pascal_context": _preset("pascal_context", 0.001, 1e-4, (520, 520), 16, 30_000),
    "coco_stuff": _preset("coco_stuff", 0.001, 1e-4, (520, 520), 16, 60_000),
}
"""Per-dataset settings of Sec. 4.2 as nested overrides of :class:`Config`."""


# --------------------------------------------------------------------------------------------
# type checking and conversion
# --------------------------------------------------------------------------------------------
def _type_name(tp: Any) -> str:
    """``int``, ``tuple[int, int]``, ``str | None``: a field type as the error messages print it."""
    if isinstance(tp, type):
        return tp.__name__
    return str(tp).replace("typing.", "")


def _fail(value: Any, tp: Any, key: str) -> typing.NoReturn:
    """Raise the ``ValueError`` of a value that is not of the field's type, naming the key."""
    raise ValueError(f"config key {key!r}: expected {_type_name(tp)}, got {value!r} ({type(value).__name__})")


def _convert(value: Any, tp: Any, key: str) -> Any:
    """Return ``value`` as type ``tp`` or raise ``ValueError`` naming ``key``."""
    if tp is Any:
        return value
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        return _convert_union(value, tp, key)
    if tp in (bool, int, float, str):
        return _convert_scalar(value, tp, key)
    if origin in (tuple, list, dict):
        return _convert_container(value, tp, key)
    raise TypeError(f"config key {key!r}: unsupported field type {tp!r}")  # a bug in this module


def _convert_union(value: Any, tp: Any, key: str) -> Any:
    """``None`` if the union allows it, else the first option that ``value`` converts to."""
    options = typing.get_args(tp)
    if value is None:
        if type(None) in options:
            return None
        _fail(value, tp, key)
    for option in options:
        if option is type(None):
            continue
        try:
            return _convert(value, option, key)
        except ValueError:
            continue
    _fail(value, tp, key)


def _convert_scalar(value: Any, tp: type, key: str) -> Any:
    """``bool``, ``int``, ``float`` or ``str``: no implicit conversion (a bool is not an int),
    except that an int, or a string ``float()`` reads (YAML's ``1e-4``), is accepted as a float."""
    is_number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if tp is bool and isinstance(value, bool):
        return value
    if tp is int and is_number and isinstance(value, int):
        return value
    if tp is str and isinstance(value, str):
        return value
    if tp is float and (is_number or isinstance(value, str)):
        try:
            return float(value)
        except ValueError:
            pass
    _fail(value, tp, key)


def _convert_container(value: Any, tp: Any, key: str) -> Any:
    """``tuple[...]`` (fixed length), ``list[T]`` or ``dict[K, V]``, converting every element."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is dict:
        if not isinstance(value, dict):
            _fail(value, tp, key)
        key_type, value_type = args
        return {_convert(k, key_type, f"{key} (a key)"): _convert(v, value_type, f"{key}.{k}") for k, v in value.items()}
    if not isinstance(value, (list, tuple)) or (origin is tuple and len(value) != len(args)):
        _fail(value, tp, key)
    if origin is tuple:
        return tuple(_convert(v, a, f"{key}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
    return [_convert(v, args[0], f"{key}[{i}]") for i, v in enumerate(value)]


def _unknown_key(key: str, prefix: str, valid: list[str]) -> ValueError:
    """The error for an unknown key: the valid keys of its section and the closest one."""
    close = difflib.get_close_matches(key, valid, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return ValueError(f"unknown config key {prefix + key!r}; valid keys here: {', '.join(valid)}{hint}")


def _merge(obj: Any, updates: dict[str, Any], prefix: str = "") -> None:
    """Apply a nested ``updates`` dict to the dataclass ``obj`` in place, checking keys and types."""
    if not isinstance(updates, dict):
        raise ValueError(f"config section {prefix.rstrip('.') or '<root>'!r} must be a mapping, got {updates!r}")
    hints = typing.get_type_hints(type(obj))
    valid = [f.name for f in dataclasses.fields(obj)]
    for key, value in updates.items():
        if key not in valid:
            raise _unknown_key(str(key), prefix, valid)
        current = getattr(obj, key)
        if dataclasses.is_dataclass(current):
            _merge(current, value, f"{prefix}{key}.")
        else:
            setattr(obj, key, _convert(value, hints[key], prefix + key))


def _split_override(text: str) -> tuple[list[str], Any]:
    """``"optim.lr=0.02"`` -> ``(["optim", "lr"], 0.02)`` (value parsed as YAML)."""
    if "=" not in text:
        raise ValueError(f"override {text!r} must look like key.sub=value")
    dotted, raw = text.split("=", 1)
    keys = dotted.strip().split(".")
    if not all(keys):
        raise ValueError(f"override {text!r} has an empty key")
    return keys, (yaml.safe_load(raw) if raw.strip() else None)


def _set_path(data: dict[str, Any], keys: list[str], value: Any) -> None:
    """Set ``data[k1][k2]...[kn] = value``, creating sections on the way.

    The value at the end of the path *replaces* what was there, also when it is a mapping:
    ``model.context_options={channels: 64}`` gives exactly those options, while
    ``model.context_options.groups=[4,4]`` changes one of them and keeps the rest.
    """
    node = data
    for key in keys[:-1]:
        child = node.get(key)
        if not isinstance(child, dict):
            child = node[key] = {}
        node = child
    node[keys[-1]] = value


def paper_config(preset: str) -> Config:
    """The default config with the paper's settings for ``preset`` (a key of :data:`PAPER_DEFAULTS`)."""
    if preset not in PAPER_DEFAULTS:
        close = difflib.get_close_matches(preset, list(PAPER_DEFAULTS), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"unknown preset {preset!r}; valid presets: {', '.join(PAPER_DEFAULTS)}{hint}")
    cfg = Config(preset=preset)
    _merge(cfg, PAPER_DEFAULTS[preset])
    return cfg


def load_config(path: str | Path | None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Read a YAML config and apply ``key.sub=value`` overrides.

    Order: defaults -> ``PAPER_DEFAULTS[preset]`` (if ``preset`` is set in the file or by an
    override) -> the file -> the overrides.

    Args:
        path: YAML file, or ``None`` to start from the defaults.
        overrides: strings such as ``"optim.lr=0.02"``, ``"data.crop_size=[520,520]"``.

    Raises:
        ValueError: unknown key (with the valid keys and the closest one) or wrong type.
    """
    data: dict[str, Any] = {}
    if path is not None:
        loaded = yaml.safe_load(Path(path).read_text())
        if loaded is not None and not isinstance(loaded, dict):
            raise ValueError(f"{path}: a config file must hold a mapping, got {type(loaded).__name__}")
        data = loaded or {}
    for text in overrides:
        _set_path(data, *_split_override(text))
    preset = data.get("preset")
    cfg = paper_config(preset) if isinstance(preset, str) else Config()
    _merge(cfg, data)
    return cfg


def _plain(value: Any) -> Any:
    """``value`` with every tuple turned into a list, recursively (YAML and JSON have lists only)."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def config_to_dict(cfg: Config) -> dict[str, Any]:
    """Plain nested dict of builtins (tuples become lists), ready for YAML or JSON."""
    return _plain(dataclasses.asdict(cfg))


def save_config(cfg: Config, path: str | Path) -> None:
    """Write ``cfg`` as YAML; ``load_config(path)`` gives back an equal config."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(yaml.safe_dump(config_to_dict(cfg), sort_keys=False))
