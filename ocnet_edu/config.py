"""Typed training configuration: dataclasses, YAML loading with ``key.sub=value`` overrides.

A config is a tree of dataclasses (:class:`Config` at the root). :func:`load_config` starts from
the defaults, applies the paper's per-dataset settings if the YAML names a ``preset`` (a key of
:data:`PAPER_DEFAULTS`), then the YAML file, then the command-line overrides. Every key is
checked: an unknown key raises :class:`ConfigError` (a ``ValueError``) naming it, the valid keys
and the closest match; a value of the wrong type raises it naming the key, the expected type and
the value.

Override values are parsed with YAML typing (``optim.lr=0.02`` is a float, ``runtime.amp=true``
a bool, ``data.crop_size=[520,520]`` a list). Because YAML 1.1 reads ``1e-4`` (no dot) as a
string, a string that Python's ``float()`` accepts is accepted for a float field.

After the types, :func:`validate_config` checks every value against one table of rules
(:data:`RULES`: ranges, list lengths against ``model.num_classes``, the dataset's class count
and splits, known backbone and context names, finite numbers), so that a bad run fails when its
config is loaded, with a :class:`ConfigError` naming the key (and the file). A YAML file that does
not parse, is a folder, or repeats a key is refused with its name.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Union

import yaml

from ocnet_edu.data.registry import NUM_CLASSES

__all__ = [
    "Config",
    "ConfigError",
    "DataConfig",
    "LossConfig",
    "ModelConfig",
    "OptimConfig",
    "PAPER_DEFAULTS",
    "RULES",
    "RuntimeConfig",
    "ScheduleConfig",
    "config_to_dict",
    "load_config",
    "paper_config",
    "save_config",
    "validate_config",
]


class ConfigError(ValueError):
    """A config that cannot be used: bad YAML, an unknown key, a wrong type or a value out of
    range. The message names the key (and the file when there is one)."""


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
    ``dataset`` is a key of :data:`ocnet_edu.data.DATASETS`. ``ignore_index`` is the mask value
    meaning "not labelled" in your own data (``dataset: folder``, :mod:`ocnet_edu.data.custom`)."""

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
    ignore_index: int = 255


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
    autocast dtype when ``amp`` is on (``auto``: bfloat16, or float16 on a GPU without native
    bfloat16); ``freeze_bn`` keeps every BatchNorm on its running statistics during training (its
    affine parameters still learn); ``deterministic`` asks for deterministic algorithms (slower;
    see :func:`ocnet_edu.engine.train.backend_flags`); ``log_every`` is how often (in steps) the
    loss is read back from the device and a row written to ``metrics.csv``; ``dist_timeout``
    (minutes) is how long a process waits for the others (set-up, collectives, barriers) before it
    stops with an error naming the ranks, instead of hanging when one of them froze."""

    device: str = "auto"
    amp: bool = False
    amp_dtype: str = "auto"
    channels_last: bool = False
    freeze_bn: bool = False
    compile: bool = False
    deterministic: bool = False
    log_every: int = 1
    seed: int = 0
    workers: int = 4
    out_dir: str = "runs/default"
    dist_timeout: float = 30.0


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
    # the paper's COCO-Stuff (Sec. 4.1, Table 11): the 10k release, 9k train / 1k test
    "cocostuff10k": _preset("cocostuff10k", 0.001, 1e-4, (520, 520), 16, 60_000),
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
    raise ConfigError(f"config key {key!r}: expected {_type_name(tp)}, got {value!r} ({type(value).__name__})")


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
    return ConfigError(f"unknown config key {prefix + key!r}; valid keys here: {', '.join(valid)}{hint}")


def _merge(obj: Any, updates: dict[str, Any], prefix: str = "") -> None:
    """Apply a nested ``updates`` dict to the dataclass ``obj`` in place, checking keys and types."""
    if not isinstance(updates, dict):
        raise ConfigError(f"config section {prefix.rstrip('.') or '<root>'!r} must be a mapping, got {updates!r}")
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
        raise ConfigError(f"override {text!r} must look like key.sub=value")
    dotted, raw = text.split("=", 1)
    keys = dotted.strip().split(".")
    if not all(keys):
        raise ConfigError(f"override {text!r} has an empty key")
    if not raw.strip():
        return keys, None
    try:
        return keys, yaml.load(raw, Loader=_UniqueKeyLoader)
    except yaml.YAMLError as error:
        raise ConfigError(f"override {text!r}: its value is not valid YAML ({_yaml_problem(error)})") from None


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
        raise ConfigError(f"unknown preset {preset!r}; valid presets: {', '.join(PAPER_DEFAULTS)}{hint}")
    cfg = Config(preset=preset)
    _merge(cfg, PAPER_DEFAULTS[preset])
    return cfg


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, except that a mapping repeating a key is an error (plain YAML keeps
    the last value, silently)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        """The mapping of ``node``; ``ConstructorError`` naming a repeated key and its line."""
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r} (lines {seen[key]} and {line})", key_node.start_mark)
            seen[key] = line
        return super().construct_mapping(node, deep=deep)


def _yaml_problem(error: yaml.YAMLError) -> str:
    """A YAML error as ``"<problem> at line L, column C"`` (the lines of the text, 1-based)."""
    problem = getattr(error, "problem", None) or str(error)
    mark = getattr(error, "problem_mark", None)
    return f"{problem} at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else problem


def read_yaml(path: str | Path) -> dict[str, Any]:
    """The mapping in the YAML file ``path`` (empty file: ``{}``).

    Raises:
        FileNotFoundError: no such file.
        ConfigError: ``path`` is a folder, not UTF-8 text, not valid YAML, repeats a key, or
            holds something other than a mapping; the message names the file.
    """
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"config path {path} is a folder, not a YAML file")
    if not path.is_file():
        raise FileNotFoundError(f"config file not found: {path}")
    try:
        loaded = yaml.load(path.read_text(encoding="utf-8"), Loader=_UniqueKeyLoader)
    except UnicodeDecodeError as error:
        raise ConfigError(f"config file {path} is not UTF-8 text ({error.reason})") from None
    except yaml.YAMLError as error:
        raise ConfigError(f"config file {path} is not valid YAML: {_yaml_problem(error)}") from None
    if loaded is not None and not isinstance(loaded, dict):
        raise ConfigError(f"config file {path} must hold a mapping, got {type(loaded).__name__}")
    return loaded or {}


def load_config(path: str | Path | None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Read a YAML config, apply ``key.sub=value`` overrides and validate the result.

    Order: defaults -> ``PAPER_DEFAULTS[preset]`` (if ``preset`` is set in the file or by an
    override) -> the file -> the overrides -> :func:`validate_config`.

    Args:
        path: YAML file, or ``None`` to start from the defaults.
        overrides: strings such as ``"optim.lr=0.02"``, ``"data.crop_size=[520,520]"``.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ConfigError: the file does not parse or repeats a key; an unknown key (with the valid
            keys and the closest one); a wrong type; a value that breaks a rule of :data:`RULES`.
    """
    data = read_yaml(path) if path is not None else {}
    for text in overrides:
        _set_path(data, *_split_override(text))
    preset = data.get("preset")
    cfg = paper_config(preset) if isinstance(preset, str) else Config()
    where = f"{path}" + (" with its overrides" if overrides else "") if path is not None else ""
    try:
        _merge(cfg, data)
    except ConfigError as error:
        raise ConfigError(f"{where}: {error}" if where else str(error)) from None
    validate_config(cfg, where)
    return cfg


# --------------------------------------------------------------------------------------------
# validation: one table of rules
# --------------------------------------------------------------------------------------------
def _positive(value: Any) -> bool:
    """At least 1 (a count or a size)."""
    return value >= 1


def _positive_sizes(value: Any) -> bool:
    """Every size of a ``(height, width)`` pair at least 1."""
    return all(v >= 1 for v in value)


def _text(value: Any) -> bool:
    """A string that is not blank."""
    return bool(value.strip())


RULES: tuple[tuple[str, Callable[[Any], bool], str], ...] = (
    ("model.num_classes", lambda v: v >= 2, "at least 2 (background and one class)"),
    ("model.dropout", lambda v: 0 <= v < 1, "in [0, 1)"),
    ("data.root", _text, "a non-empty path"),
    ("data.split", _text, "a non-empty split name"),
    ("data.val_split", _text, "a non-empty split name"),
    ("data.crop_size", _positive_sizes, "two positive sizes (height, width)"),
    ("data.base_size", lambda v: v is None or v >= 1, "null or a positive size"),
    ("data.scale_range", lambda v: 0 < v[0] <= v[1], "(low, high) with 0 < low <= high"),
    ("data.brightness", lambda v: v >= 0, ">= 0"),
    ("data.digit_scale", _positive, "a positive integer"),
    ("data.synthetic_length", _positive, "at least 1"),
    ("data.synthetic_size", _positive_sizes, "two positive sizes (height, width)"),
    ("data.ignore_index", lambda v: 0 <= v <= 255, "a mask value in 0..255"),
    ("optim.lr", lambda v: v > 0, "> 0"),
    ("optim.momentum", lambda v: 0 <= v < 1, "in [0, 1)"),
    ("optim.weight_decay", lambda v: v >= 0, ">= 0"),
    ("optim.poly_power", lambda v: v >= 0, ">= 0 (a negative power would raise the learning rate)"),
    ("schedule.max_iters", _positive, "at least 1"),
    ("schedule.batch_size", _positive, "at least 1"),
    ("schedule.checkpoint_every", _positive, "at least 1 (iterations between checkpoints)"),
    ("loss.aux_weight", lambda v: v >= 0, ">= 0"),
    ("loss.ohem_thresh", lambda v: 0 < v <= 1, "a probability in (0, 1]"),
    ("loss.ohem_min_kept", lambda v: v >= 0, ">= 0"),
    ("loss.class_weights", lambda v: v is None or (min(v, default=0) >= 0 and sum(v) > 0),
     "null or non-negative weights, not all zero"),
    ("runtime.device", lambda v: v in ("auto", "cpu", "cuda"), "'auto', 'cpu' or 'cuda'"),
    ("runtime.amp_dtype", lambda v: v in ("auto", "bfloat16", "float16"), "'auto', 'bfloat16' or 'float16'"),
    ("runtime.seed", lambda v: 0 <= v < 2**32, "in [0, 2**32)"),
    ("runtime.workers", lambda v: v >= 0, ">= 0"),
    ("runtime.out_dir", _text, "a non-empty path"),
    ("runtime.dist_timeout", lambda v: v > 0, "> 0 (minutes)"),
)
"""``(key, rule, what it must be)``: every single-value rule of :func:`validate_config`."""


def _get(cfg: Config, key: str) -> Any:
    """The value of the dotted ``key`` of ``cfg``."""
    value: Any = cfg
    for part in key.split("."):
        value = getattr(value, part)
    return value


def _non_finite(value: Any, key: str) -> list[str]:
    """The keys under ``key`` whose value is a NaN or infinite float (any nesting)."""
    if isinstance(value, float):
        return [] if math.isfinite(value) else [key]
    if dataclasses.is_dataclass(value):
        value = {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return [k for name, v in value.items() for k in _non_finite(v, f"{key}.{name}" if key else str(name))]
    if isinstance(value, (list, tuple)):
        return [k for i, v in enumerate(value) for k in _non_finite(v, f"{key}[{i}]")]
    return []


def _cross_checks(cfg: Config) -> list[str]:
    """The rules that relate several keys: class weights vs classes, the dataset's class count
    and splits, known backbone and context names."""
    from ocnet_edu.backbones import BACKBONES
    from ocnet_edu.data.registry import DATASETS
    from ocnet_edu.heads import CONTEXT_MODULE_NAMES

    problems = []
    classes, weights = cfg.model.num_classes, cfg.loss.class_weights
    if weights is not None and len(weights) != classes:
        problems.append(f"config key 'loss.class_weights' has {len(weights)} weights but model.num_classes is {classes}")
    if cfg.model.backbone not in BACKBONES:
        problems.append(f"config key 'model.backbone': unknown backbone {cfg.model.backbone!r}; "
                        f"choose one of {', '.join(BACKBONES)}")
    if cfg.model.context not in CONTEXT_MODULE_NAMES:
        problems.append(f"config key 'model.context': unknown context module {cfg.model.context!r}; "
                        f"choose one of {', '.join(CONTEXT_MODULE_NAMES)}")
    cls = DATASETS.get(cfg.data.dataset)
    if cls is None:
        return problems + [f"config key 'data.dataset': unknown dataset {cfg.data.dataset!r}; "
                           f"choose one of {', '.join(sorted(DATASETS))}"]
    expected = getattr(cls, "num_classes", None)
    if isinstance(expected, int) and expected != classes:
        problems.append(f"config key 'model.num_classes' is {classes} but the {cfg.data.dataset} dataset has "
                        f"{expected} classes")
    splits = getattr(cls, "splits", None)
    for key in ("data.split", "data.val_split"):
        bad = [part for part in _get(cfg, key).split("+") if splits is not None and part not in splits]
        if bad:
            problems.append(f"config key {key!r}: the {cfg.data.dataset} dataset has no split {bad[0]!r}; "
                            f"its splits: {', '.join(splits)}")
    return problems


def config_problems(cfg: Config) -> list[str]:
    """Everything wrong with ``cfg``'s values (empty if it is valid), one message per key."""
    problems = [f"config key {key!r} is {_get_nested(cfg, key)}; it must be a finite number"
                for key in _non_finite(cfg, "")]
    if problems:  # the range rules below assume finite numbers
        return problems
    for key, rule, requirement in RULES:
        value = _get(cfg, key)
        if not rule(value):
            problems.append(f"config key {key!r} must be {requirement}, got {_plain(value)!r}")
    return problems + _cross_checks(cfg)


def _get_nested(cfg: Config, key: str) -> Any:
    """The value at a key of :func:`_non_finite` (``a.b[2].c``), for the message."""
    value: Any = cfg
    for part in key.replace("[", ".[").split("."):
        if part.startswith("["):
            value = value[int(part[1:-1])]
        elif isinstance(value, dict):
            value = value[part]
        else:
            value = getattr(value, part)
    return value


def validate_config(cfg: Config, where: str = "") -> Config:
    """Check every value of ``cfg`` (:data:`RULES`, finite floats, the cross-key rules) and
    return it; ``where`` (the file) starts the message.

    Raises:
        ConfigError: listing every problem, each naming its key.
    """
    problems = config_problems(cfg)
    if problems:
        head = f"invalid config {where}" if where else "invalid config"
        raise ConfigError(head + ":\n  " + "\n  ".join(problems))
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
    """Write ``cfg`` as YAML, atomically; ``load_config(path)`` gives back an equal config."""
    from ocnet_edu.engine.run_dir import atomic_write

    with atomic_write(path, what="config") as f:
        f.write(yaml.safe_dump(config_to_dict(cfg), sort_keys=False))
