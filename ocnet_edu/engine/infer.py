"""Inference on image files without labels: label map, colour overlay and a pixel's relation map.

``python -m ocnet_edu infer IMAGE... (--published SOURCE:ARCH PATH | --config C --checkpoint P)
--out DIR [--relation-at x,y]`` writes, per image, ``<stem>_labels.png`` (train ids),
``<stem>_overlay.png`` (the image blended with the class colours) and, with ``--relation-at``,
``<stem>_relation.png``: the dense relation (Eq. 9 for ISA, Eq. 10 for SA) of the feature cell
under pixel ``(x, y)`` over the whole image, up-sampled to the image.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ocnet_edu.nn.attention import SelfAttention
from ocnet_edu.analysis import ocp_relation
from ocnet_edu.data.datasets import load_rgb
from ocnet_edu.nn.isa import InterlacedSparseSelfAttention

__all__ = ["CITYSCAPES_COLOURS", "palette", "read_image", "relation_ocp", "pixel_relation", "infer_images"]

#: the Cityscapes train-id colours (cityscapesScripts ``labels.py``)
CITYSCAPES_COLOURS = np.array([
    (128, 64, 128), (244, 35, 232), (70, 70, 70), (102, 102, 156), (190, 153, 153), (153, 153, 153),
    (250, 170, 30), (220, 220, 0), (107, 142, 35), (152, 251, 152), (70, 130, 180), (220, 20, 60),
    (255, 0, 0), (0, 0, 142), (0, 0, 70), (0, 60, 100), (0, 80, 100), (0, 0, 230), (119, 11, 32)], dtype=np.uint8)


def palette(num_classes: int) -> np.ndarray:
    """``[K, 3]`` uint8 colours: Cityscapes' for 19 classes, else a fixed seeded palette."""
    if num_classes == len(CITYSCAPES_COLOURS):
        return CITYSCAPES_COLOURS
    return np.random.default_rng(0).integers(0, 256, size=(num_classes, 3), dtype=np.uint8)


def read_image(path: str | Path) -> torch.Tensor:
    """An image file as RGB ``[1, 3, H, W]`` float32 in [0, 1]; read by the datasets' reader, so
    a missing, broken or oversized file is a :class:`~ocnet_edu.data.DatasetError` naming it."""
    array = load_rgb(Path(path)).astype(np.float32) / 255.0
    return torch.from_numpy(array).permute(2, 0, 1).unsqueeze(0)


def relation_ocp(model: torch.nn.Module) -> torch.nn.Module:
    """The SA or ISA OCP whose relation :func:`pixel_relation` reads (``model.context.ocp``, applied
    to ``model.context.reduce``'s output at full resolution).

    Raises:
        ValueError: the model's context module has no such OCP (e.g. ASP-OC, whose OCP works
            on a pooled map of its own branch).
    """
    ocp = getattr(model.context, "ocp", None)
    if not isinstance(ocp, (SelfAttention, InterlacedSparseSelfAttention)):
        raise ValueError(f"relation maps (--relation-at) need a context module whose OCP (context.ocp) is an SA or "
                         f"ISA applied to context.reduce's output; {type(model.context).__name__} has none")
    return ocp


def pixel_relation(model: torch.nn.Module, x: torch.Tensor, at: tuple[int, int]) -> tuple[torch.Tensor, float]:
    """The relation row of the feature cell under image pixel ``at = (x, y)``, over the map.

    Args:
        model: an :class:`~ocnet_edu.model.OCNet` whose context module has ``reduce`` and ``ocp``
            (SA or ISA, any flavour).
        x: the network input ``[1, 3, H, W]`` (already normalised).
        at: pixel ``(x, y)`` of the image, ``0 ≤ x < W``, ``0 ≤ y < H``.

    Raises:
        ValueError: ``at`` is not a pixel of the image (named as ``--relation-at``, its option).

    Returns:
        ``(relation [h, w], padded_mass)``: the weights the cell gives to every real cell (the
        dense ``W`` of Eq. 9 for ISA) and the weight it gives to padded positions (zero for the
        paper's masked padding; openseg/mmseg's padded zeros take part as keys).
    """
    ocp = relation_ocp(model)
    height, width = x.shape[-2:]
    if not (0 <= at[0] < width and 0 <= at[1] < height):
        raise ValueError(f"--relation-at {at[0]},{at[1]} is not a pixel of the image: x must be in 0..{width - 1} "
                         f"and y in 0..{height - 1}")
    with torch.no_grad():
        reduced = model.context.reduce(model.backbone(x).out)
        h, w = reduced.shape[-2:]
        row, col = at[1] * h // height, at[0] * w // width  # the cell whose image area holds the pixel
        relation = ocp_relation(ocp, reduced)[0, row * w + col].reshape(h, w)
        return relation, float(1 - relation.sum()) if isinstance(ocp, InterlacedSparseSelfAttention) else 0.0


def _save_relation(relation: torch.Tensor, size: tuple[int, int], path: Path) -> None:
    heat = F.interpolate(relation[None, None].float(), size=size, mode="nearest")[0, 0]
    heat = (heat / heat.max().clamp_min(1e-12) * 255).round().byte().numpy()
    Image.fromarray(heat).save(path)


def infer_images(model: torch.nn.Module, preprocess, paths: list[str], out: str | Path,
                 relation_at: tuple[int, int] | None = None, device: str = "cpu") -> list[Path]:
    """Write label map, overlay (and relation map) for every image; return the written paths."""
    if relation_at is not None:
        relation_ocp(model)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model = model.to(device).eval()
    dtype = next(model.parameters()).dtype
    written = []
    for path in paths:
        image = read_image(path)
        x = preprocess(image).to(device=device, dtype=dtype)
        with torch.no_grad():
            labels = model(x).argmax(1)[0].cpu().numpy().astype(np.uint8)
        stem = Path(path).stem
        Image.fromarray(labels).save(out / f"{stem}_labels.png")
        rgb = image[0].permute(1, 2, 0).numpy() * 255
        overlay = (0.5 * rgb + 0.5 * palette(model.num_classes)[labels]).round().astype(np.uint8)
        Image.fromarray(overlay).save(out / f"{stem}_overlay.png")
        written += [out / f"{stem}_labels.png", out / f"{stem}_overlay.png"]
        if relation_at is not None:
            relation, _ = pixel_relation(model, x, relation_at)
            _save_relation(relation.cpu(), tuple(image.shape[-2:]), out / f"{stem}_relation.png")
            written.append(out / f"{stem}_relation.png")
    return written
