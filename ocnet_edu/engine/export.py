"""Exporting a segmentation model to ONNX, with dynamic batch size, height and width.

``python -m ocnet_edu export --config RUN/config.yaml --checkpoint RUN/final.pt --onnx model.onnx``
or ``python -m ocnet_edu export --published SOURCE:ARCH PATH --onnx model.onnx``.

The ONNX graph is the network in ``eval()`` mode: input ``image [B, 3, H, W]`` (float32, already
normalised: see :func:`preprocessing_metadata`), output ``logits [B, K, H, W]``. Any ``H, W``
within the exported range works; the range is written into the file's metadata
(``metadata_props``) next to the normalisation.

Which exporter, and why. ``torch.onnx.export(dynamo=True)`` with ``dynamic_shapes``: it traces
with ``torch.export``, which carries sizes as symbols, so the padding ISA computes from ``H`` and
``W`` (``Q·P − H`` rows) and the region bounds of Pyramid-OC stay arithmetic in the graph. The
TorchScript exporter (``dynamo=False`` with ``dynamic_axes``) runs the Python code once: the
``if`` that decides whether ISA pads, and Pyramid-OC's choice of bands (from ``H mod k``), are
Python control flow on sizes that a trace cannot record, so the graph would hold the example's
case. The modules take a branch-free path while exporting (:mod:`ocnet_edu.nn.tracing`), and the
sizes are declared ``Dim.DYNAMIC``: export then fails, instead of silently fixing a size, if
anything still specialises on the example.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

__all__ = ["EXTRA", "ExportError", "require_exporter", "check_output_path", "dynamic_ranges", "preprocessing_metadata",
           "export_onnx", "onnxruntime_logits"]

#: the optional-dependency group that holds the exporter's packages (``pip install 'ocnet_edu[export]'``)
EXTRA = "export"

#: example batch for tracing: 2, because ``torch.export`` fixes a dimension whose example is 0 or 1
_EXAMPLE_BATCH = 2

#: how much larger (rows, columns) the second size is on which the traced graph is checked
_CHECK_OFFSET = (9, 17)


class ExportError(ValueError):
    """The exported graph does not hold for sizes other than the example's (see :func:`export_onnx`)."""


def require_exporter() -> None:
    """Import ``onnx`` and ``onnxscript`` (which ``torch.onnx.export(dynamo=True)`` needs).

    Raises:
        ImportError: naming the missing package and the ``export`` extra that installs it.
    """
    for package in ("onnx", "onnxscript"):
        try:
            __import__(package)
        except ImportError as error:
            raise ImportError(f"exporting to ONNX needs the package {package!r}, which is not installed; install "
                              f"the '{EXTRA}' extra: pip install 'ocnet_edu[{EXTRA}]'") from error


def check_output_path(path: str | Path) -> Path:
    """``path`` as a :class:`~pathlib.Path` whose folder exists (the file itself is replaced).

    Raises:
        FileNotFoundError: naming the missing output directory.
        IsADirectoryError: ``path`` is a directory.
    """
    path = Path(path)
    if not path.parent.is_dir():
        raise FileNotFoundError(f"the output directory {path.parent} of {path} does not exist; create it first")
    if path.is_dir():
        raise IsADirectoryError(f"the ONNX output {path} is a directory; give a file name such as {path / 'model.onnx'}")
    return path


def dynamic_ranges(program: torch.export.ExportedProgram) -> dict[str, tuple[int, int | None]]:
    """The sizes the exported graph holds for: ``{"batch"|"height"|"width": (min, max or None)}``.

    Read from the program's range constraints on its one user input ``[B, 3, H, W]``; a dimension
    that is not symbolic (fixed by the example) appears as ``(n, n)``.
    """
    (name,) = program.graph_signature.user_inputs
    (node,) = [n for n in program.graph.nodes if n.op == "placeholder" and n.name == name]
    shape = node.meta["val"].shape
    ranges = {}
    for label, size in zip(("batch", "height", "width"), (shape[0], shape[2], shape[3])):
        if isinstance(size, torch.SymInt):
            bounds = program.range_constraints[size.node.expr]
            # sympy's oo is not an integer; torch's int_oo (its symbolic sizes' infinity) is one
            unbounded = bounds.upper.is_integer is False or str(bounds.upper) == "int_oo"
            ranges[label] = (int(bounds.lower), None if unbounded else int(bounds.upper))
        else:
            ranges[label] = (int(size), int(size))
    return ranges


def preprocessing_metadata(model: nn.Module) -> dict[str, object]:
    """How an RGB image in [0, 1] becomes the network input: channel order, mean and std (0–255).

    A published model carries its source's :class:`~ocnet_edu.zoo.published.Preprocess`; our models
    are trained on RGB normalised by the ImageNet mean and std (:mod:`ocnet_edu.data.transforms`).
    """
    from ocnet_edu.data.transforms import IMAGENET_MEAN, IMAGENET_STD

    preprocess = getattr(model, "preprocess", None)
    if preprocess is not None:
        return {"channels": "BGR" if preprocess.bgr else "RGB", "mean": list(preprocess.mean),
                "std": list(preprocess.std)}
    return {"channels": "RGB", "mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD)}


def export_onnx(model: nn.Module, path: str | Path, example_size: Sequence[int] = (512, 512),
                opset: int | None = None) -> dict[str, object]:
    """Write ``model`` (in ``eval()`` mode, on the CPU, float32) as an ONNX file at ``path``.

    Args:
        model: an :class:`~ocnet_edu.model.OCNet` (or any module ``[B, 3, H, W] → [B, K, H, W]``
            with ``in_channels`` and ``num_classes`` attributes).
        path: the ``.onnx`` file to write (its folder must exist; an existing file is replaced).
        example_size: ``(H, W)`` of the example the exporter traces; the graph is not fixed to it.
        opset: the ONNX opset (default: the exporter's).

    Returns:
        The metadata also stored in the file: ``input``, ``output``, ``num_classes``, the
        normalisation (:func:`preprocessing_metadata`) and ``dynamic_ranges`` (min, max of B, H, W).

    Raises:
        ImportError: ``onnx`` or ``onnxscript`` missing (names the ``export`` extra).
        FileNotFoundError: the output directory does not exist.
        ExportError: the traced graph is fixed to the example's size class (checked on a larger
            size before anything is written); a larger ``example_size`` helps.
    """
    require_exporter()
    path = check_output_path(path)
    height, width = (int(s) for s in example_size)
    model = model.to(device="cpu", dtype=torch.float32).eval()
    in_channels = getattr(model, "in_channels", 3)
    example = torch.randn(_EXAMPLE_BATCH, in_channels, height, width)
    dynamic = torch.export.Dim.DYNAMIC
    program = torch.onnx.export(model, (example,), dynamo=True, dynamic_shapes=({0: dynamic, 2: dynamic, 3: dynamic},),
                                input_names=["image"], output_names=["logits"], opset_version=opset,
                                verbose=False)
    _check_other_size(program.exported_program, model, example)
    metadata = {"input": "image [B, 3, H, W] float32, normalised", "output": "logits [B, K, H, W]",
                "num_classes": getattr(model, "num_classes", None), "preprocessing": preprocessing_metadata(model),
                "dynamic_ranges": dynamic_ranges(program.exported_program)}
    program.model.metadata_props.update({"ocnet_edu": json.dumps(metadata)})
    program.save(path)
    return metadata


def _check_other_size(program: torch.export.ExportedProgram, model: nn.Module, example: torch.Tensor) -> None:
    """Run the traced program on a larger size than the example's and compare it with ``model``.

    ``Dim.DYNAMIC`` catches a fixed input size, but not a fixed *derived* size: a size 1 inside
    the network (e.g. an ISA group count ``Q = ⌈h / P⌉ = 1`` in a small Pyramid-OC region) is
    specialised by the tracer, and the guard it records is not part of the ONNX graph. The
    program still checks its guards, so running it on another size exposes that.

    Raises:
        ExportError: the program rejects the size or disagrees with the model (max abs > 1e-4).
    """
    other = torch.randn(example.shape[0], example.shape[1], example.shape[2] + _CHECK_OFFSET[0],
                        example.shape[3] + _CHECK_OFFSET[1])
    advice = ("the example size is too small for this model (some size inside the network is 1 there); "
              "export with a larger example (--size H W)")
    with torch.no_grad():
        try:
            traced = program.module()(other)
        except (AssertionError, RuntimeError) as error:
            raise ExportError(f"the traced graph only holds for sizes like the example "
                              f"{tuple(example.shape[2:])}: {advice} ({str(error).splitlines()[0]})") from error
        difference = (traced - model(other)).abs().max().item()
    if not difference <= 1e-4:
        raise ExportError(f"the traced graph differs from the model on {tuple(other.shape[2:])} by {difference:.3g}: "
                          f"{advice}")


def onnxruntime_logits(path: str | Path, images: torch.Tensor) -> torch.Tensor:
    """Run the ONNX file at ``path`` in ONNX Runtime (CPU) on ``images [B, 3, H, W]``; logits.

    Raises:
        ImportError: ``onnxruntime`` missing (names the ``export`` extra).
    """
    try:
        import onnxruntime
    except ImportError as error:
        raise ImportError(f"running an ONNX model needs the package 'onnxruntime', which is not installed; "
                          f"install the '{EXTRA}' extra: pip install 'ocnet_edu[{EXTRA}]'") from error
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (output,) = session.run(["logits"], {"image": images.detach().cpu().float().numpy()})
    return torch.from_numpy(output)
