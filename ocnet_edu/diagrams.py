"""Block diagrams generated from the modules themselves (Fig. 5 (a)–(d), Sec. 3.4).

:func:`trace_blocks` runs a module once on a small input and records, for each of its parts
(its ``named_children``, with ``ModuleList``/``ModuleDict`` containers and the names given in
``expand`` replaced by their own children), the shape that goes in, the shape that comes out, the
number of parameters, how often it was called, and which parts its input came from. Nothing about
a head is written down by hand: the shapes come from forward hooks, and the wiring from following
every tensor that the forward pass creates (a :class:`~torch.overrides.TorchFunctionMode` passes
on, from the inputs of each torch function to its outputs, the set of parts the data came from).
A part whose input mixes the outputs of several parts through ``torch.cat`` is marked as fed by a
concatenation; this is how Base-OC, Pyramid-OC and ASP-OC join their branches.

:func:`draw_blocks` lays such a trace out with matplotlib: one column per step (the longest path
from the input), parallel parts stacked in a column, arrows from sources to consumers, and a
"concat" node wherever the trace saw a concatenation.

The trace is of one forward pass: parts that did not run (e.g. OCNet's auxiliary head in
``eval()`` mode) are listed with ``calls == 0`` and no shapes.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

import torch
from torch import nn
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten

__all__ = ["Block", "trace_blocks", "block_description", "draw_blocks"]

#: the name of the traced module's input and output in a trace
INPUT, OUTPUT = "input", "output"


class Block(NamedTuple):
    """One part of a traced module (or its input / output).

    Attributes:
        name: the dotted name of the part (``"reduce"``, ``"ocps.2"``, ``"atrous.pointwise"``), or
            ``"input"`` / ``"output"`` for the module's input and output.
        type: the class name of the part (``"input"`` / ``"output"`` for those two).
        in_shape: the shape of the first input of its first call (``None`` if it never ran).
        out_shape: the shape of its first call's output; for an output that is a named tuple, of
            its first field (the main output by the library's convention); for a list, a tuple
            of the shapes.
        params: its number of parameters.
        sources: the names of the parts (or ``"input"``) whose outputs its input was computed from.
        concat: ``True`` if its input was a ``torch.cat`` of the outputs of several parts.
        calls: how many times it ran in the forward pass.
    """

    name: str
    type: str
    in_shape: tuple | None
    out_shape: Any
    params: int
    sources: tuple[str, ...]
    concat: bool
    calls: int


def _shape(obj: Any) -> Any:
    """The shape of a tensor; of the first field of a named tuple; a tuple of shapes for a list."""
    if isinstance(obj, torch.Tensor):
        return tuple(obj.shape)
    if isinstance(obj, tuple) and hasattr(obj, "_fields"):
        return _shape(obj[0])
    if isinstance(obj, (list, tuple)):
        return tuple(_shape(item) for item in obj)
    return None


def _tensors(obj: Any) -> list[torch.Tensor]:
    return [leaf for leaf in tree_flatten(obj)[0] if isinstance(leaf, torch.Tensor)]


class _Lineage(TorchFunctionMode):
    """Remembers, for every tensor created while active, which parts its data came from."""

    def __init__(self) -> None:
        super().__init__()
        self.sources: dict[int, frozenset[str]] = {}
        self.concat: dict[int, bool] = {}
        self._alive: list[torch.Tensor] = []  # keep tensors alive so that their ids stay unique

    def tag(self, tensors: Iterable[torch.Tensor], sources: frozenset[str], concat: bool = False) -> None:
        for tensor in tensors:
            self._alive.append(tensor)
            self.sources[id(tensor)] = sources
            self.concat[id(tensor)] = concat

    def of(self, tensors: Iterable[torch.Tensor]) -> tuple[frozenset[str], bool]:
        tensors = [t for t in tensors if id(t) in self.sources]
        found = frozenset().union(*(self.sources[id(t)] for t in tensors)) if tensors else frozenset()
        return found, any(self.concat[id(t)] for t in tensors)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        inputs = _tensors((args, kwargs))
        if inputs:
            sources, concat = self.of(inputs)
            if sources:
                merged = func in (torch.cat, torch.concat) and len(sources) > 1
                seen = {id(t) for t in inputs}
                self.tag((t for t in _tensors(out) if id(t) not in seen), sources, concat or merged)
        return out


def _parts(module: nn.Module, expand: Sequence[str], prefix: str = "") -> list[tuple[str, nn.Module]]:
    """The parts to trace: children, with containers and the names in ``expand`` opened up."""
    parts = []
    for name, child in module.named_children():
        full = f"{prefix}{name}"
        if isinstance(child, (nn.ModuleList, nn.ModuleDict)) or full in expand:
            parts += _parts(child, expand, f"{full}.")
        else:
            parts.append((full, child))
    return parts


def trace_blocks(module: nn.Module, x: torch.Tensor, expand: Sequence[str] = ()) -> list[Block]:
    """Run ``module(x)`` once (no gradients) and record its parts: the data for a block diagram.

    Args:
        module: any module taking one tensor. Its mode (``train``/``eval``) is left as it is.
        x: its input, e.g. a small ``[1, C, H, W]`` map (the shapes scale with it), or a ``meta``
            tensor with a ``meta`` module (nothing is computed). Every tensor of the pass is kept
            alive until the trace returns, so keep real inputs small.
        expand: dotted names of children to replace by their own children (e.g. ``"atrous"`` in
            ASP-OC, whose forward returns a list of branches). ``ModuleList`` and ``ModuleDict``
            children are always opened, since they are never called themselves.

    Returns:
        ``[input, *parts in the order they first ran, *parts that did not run, output]`` as
        :class:`Block` s. The parts together hold every parameter of ``module`` exactly once
        (when no parameter is shared between two parts).
    """
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"x must be a tensor, got {type(x).__name__}")
    parts = _parts(module, tuple(expand))
    missing = set(expand) - {name.rsplit(".", 1)[0] for name, _ in parts} - {name for name, _ in parts}
    if missing:
        raise ValueError(f"expand names no child of the module: {sorted(missing)}")
    lineage = _Lineage()
    records: dict[str, dict[str, Any]] = {name: {"calls": 0} for name, _ in parts}
    order: list[str] = []

    def pre_hook(name):
        def hook(mod, args):
            record = records[name]
            if record["calls"] == 0:
                sources, concat = lineage.of(_tensors(args))
                record.update(in_shape=_shape(args[0]), sources=sources, concat=concat)
                order.append(name)
        return hook

    def post_hook(name):
        def hook(mod, args, out):
            record = records[name]
            if record["calls"] == 0:
                record["out_shape"] = _shape(out)
            record["calls"] += 1
            lineage.tag(_tensors(out), frozenset({name}))
        return hook

    handles = []
    for name, part in parts:
        handles.append(part.register_forward_pre_hook(pre_hook(name)))
        handles.append(part.register_forward_hook(post_hook(name)))
    try:
        with torch.no_grad(), lineage:
            lineage.tag([x], frozenset({INPUT}))
            y = module(x)
            out_sources, out_concat = lineage.of(_tensors(y))
    finally:
        for handle in handles:
            handle.remove()

    modules = dict(parts)
    ran = order + [name for name, _ in parts if records[name]["calls"] == 0]
    blocks = [Block(INPUT, INPUT, None, tuple(x.shape), 0, (), False, 1)]
    for name in ran:
        r = records[name]
        params = sum(p.numel() for p in modules[name].parameters())
        sources = tuple(sorted(r.get("sources", ()), key=lambda s: -1 if s == INPUT else ran.index(s)))
        blocks.append(Block(name, type(modules[name]).__name__, r.get("in_shape"), r.get("out_shape"), params,
                            sources, r.get("concat", False), r["calls"]))
    out_sources = tuple(sorted(out_sources, key=lambda s: -1 if s == INPUT else ran.index(s)))
    blocks.append(Block(OUTPUT, OUTPUT, _shape(y), _shape(y), 0, out_sources, out_concat, 1))
    return blocks


def block_description(module: nn.Module) -> str:
    """A short label for a part: ``"3×3 conv"`` (``", dilation d"``) for a conv block, else its class name."""
    convs = [m for m in module.modules() if isinstance(m, nn.Conv2d)]
    if len(convs) == 1:
        conv = convs[0]
        text = f"{conv.kernel_size[0]}×{conv.kernel_size[1]} conv"
        return text + (f", dilation {conv.dilation[0]}" if conv.dilation[0] > 1 else "")
    return type(module).__name__


def _levels(blocks: Sequence[Block]) -> dict[str, int]:
    """Column of each node: the longest path from the input (a concatenation takes a column)."""
    level = {INPUT: 0}
    for block in blocks[1:]:
        if block.calls == 0:
            continue
        start = 1 + max((level[s] for s in block.sources), default=0)
        level[block.name] = start + (1 if block.concat else 0)
    return level


def draw_blocks(blocks: Sequence[Block], ax, labels: dict[str, str] | None = None, title: str | None = None,
                fontsize: float = 7.5, row_gap: float = 1.0) -> dict[str, tuple[float, float]]:
    """Draw a :func:`trace_blocks` trace as boxes and arrows on a matplotlib ``ax``.

    Each box shows the part's name, ``labels.get(name)`` (e.g. from :func:`block_description`),
    its channels in → out and its parameters; "×n" marks a part that ran ``n`` times (e.g. one
    OCP applied to the region batches of Pyramid-OC). Parts that did not run are not drawn.
    Columns are one unit apart and parallel parts ``row_gap`` units (make the figure tall enough
    for the boxes: about ``0.9`` inch per row at the default font size).

    Returns:
        The centre ``(x, y)`` of every drawn node (concatenation nodes are named ``"concat→<part>"``).
    """
    labels = labels or {}
    drawn = [b for b in blocks if b.calls > 0]
    level = _levels(drawn)
    # nodes per column, concat nodes one column before their consumer
    nodes: dict[str, tuple[int, Block | None]] = {}
    for block in drawn:
        if block.concat:
            nodes[f"concat→{block.name}"] = (level[block.name] - 1, None)
        nodes[block.name] = (level[block.name], block)
    columns: dict[int, list[str]] = {}
    for name, (col, _) in nodes.items():
        columns.setdefault(col, []).append(name)
    position: dict[str, tuple[float, float]] = {}
    for col in sorted(columns):
        names = columns[col]
        if len(names) == 1:
            block = nodes[names[0]][1]
            feeders = [f"concat→{names[0]}"] if block is None else list(block.sources)
            ys = [position[s][1] for s in feeders if s in position] if block is not None and not block.concat else []
            position[names[0]] = (col, sum(ys) / len(ys) if ys else 0.0)
        else:
            for k, name in enumerate(names):
                position[name] = (col, row_gap * ((len(names) - 1) / 2 - k))

    def channels(shape):
        if isinstance(shape, tuple) and shape and isinstance(shape[0], tuple):
            return "+".join(str(s[1]) for s in shape)
        return str(shape[1]) if shape is not None and len(shape) > 1 else "?"

    box = dict(boxstyle="round,pad=0.35", facecolor="#eef3fb", edgecolor="#355c9a")
    for name, (col, block) in nodes.items():
        x, y = position[name]
        if block is None:
            consumer = nodes[name.split("→", 1)[1]][1]
            text, style = f"concat\n{channels(consumer.in_shape)} ch", dict(box, facecolor="#fdf1dc", edgecolor="#b07b1e")
        elif block.name in (INPUT, OUTPUT):
            text, style = f"{block.name}\n{list(block.out_shape)}", dict(box, facecolor="white", edgecolor="grey")
        else:
            lines = [block.name + (f"  ×{block.calls}" if block.calls > 1 else "")]
            if block.name in labels:
                lines.append(labels[block.name])
            lines.append(f"{channels(block.in_shape)} → {channels(block.out_shape)} ch")
            lines.append(f"{block.params:,} params")
            text, style = "\n".join(lines), box
        ax.text(x, y, text, ha="center", va="center", fontsize=fontsize, bbox=style, zorder=3)

    def arrow(src, dst):
        (x0, y0), (x1, y1) = position[src], position[dst]
        skip = x1 - x0 > 1 and abs(y1 - y0) < 1e-9
        ax.annotate("", xy=(x1, y1), xytext=(x0, y0), zorder=1,
                    arrowprops=dict(arrowstyle="-|>", color="#444444", lw=1.0, shrinkA=22, shrinkB=22,
                                    connectionstyle="arc3,rad=-0.35" if skip else "arc3"))

    for name, (col, block) in nodes.items():
        if block is None:
            continue
        if block.concat:
            for source in block.sources:
                arrow(source, f"concat→{name}")
            arrow(f"concat→{name}", name)
        else:
            for source in block.sources:
                arrow(source, name)
    xs = [p[0] for p in position.values()]
    ys = [p[1] for p in position.values()]
    ax.set_xlim(min(xs) - 0.6, max(xs) + 0.6)
    ax.set_ylim(min(ys) - 0.8 * row_gap, max(ys) + 0.8 * row_gap)
    ax.axis("off")
    if title:
        ax.set_title(title, fontsize=fontsize + 2)
    return position
