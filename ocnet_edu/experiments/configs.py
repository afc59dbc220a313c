"""The configs of ``configs/paper/``: one per experiment of Tables 1-3, 5 and 7-11.

``python scripts/make_configs.py`` (or ``python -m ocnet_edu.experiments.configs``, from the
repository root) writes them; the files are committed, and a test checks that they are what
:func:`render` writes. Each config names a preset of ``ocnet_edu.config.PAPER_DEFAULTS``
(Sec. 4.2 settings of its dataset) and the model; the comment at its top gives the command that
trains it on 8 GPUs and the evaluation used for the paper's number. ImageNet weights: set
``model.pretrained`` to a local file.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

__all__ = ["DEFAULT_OUT", "MS_FLIP", "SINGLE", "experiments", "main", "render", "write_configs"]

DEFAULT_OUT = Path("configs") / "paper"
"""Where the configs go (relative to the working directory: the repository root)."""

SINGLE = "single-scale"
MS_FLIP = "--scales 0.75 1 1.25 1.5 1.75 --flip"

Experiment = tuple[str, str, str, str, dict[str, Any], str, str]


def _ablation_experiments() -> Iterator[Experiment]:
    """Tables 1, 2, 3 and 5 (and the stage-only rows of the text after Table 1)."""
    city, r101 = "cityscapes", "resnet101"
    yield "table1_baseline", city, r101, "none", {}, SINGLE, "Table 1, Dilated ResNet-101"
    for p_h, p_w in [(4, 4), (4, 8), (8, 4), (8, 8), (8, 16), (16, 8), (16, 16)]:
        yield (f"table1_isa_global_local_{p_h}x{p_w}", city, r101, "base_oc_isa", {"groups": [p_h, p_w]}, SINGLE,
               f"Table 1, Base-OC (ISA, Global+Local), P_h={p_h}, P_w={p_w}")
    yield ("table1_isa_local_global_8x8", city, r101, "base_oc_isa", {"groups": [8, 8], "stages": ["local", "global"]},
           SINGLE, "Table 1, Base-OC (ISA, Local+Global), P_h=P_w=8")
    for stage in ("global", "local"):
        yield (f"table1_isa_{stage}_only_8x8", city, r101, "base_oc_isa", {"groups": [8, 8], "stages": [stage]}, SINGLE,
               f"Sec. 4.3 text after Table 1, only the {stage} relation")
    for preset, backbone in ((city, r101), ("ade20k", "resnet50")):
        for context in ("none", "ppm", "aspp", "base_oc_sa", "base_oc_isa"):
            yield f"table2_{preset}_{context}", preset, backbone, context, {}, SINGLE, f"Table 2, {preset}, {context}"
    for context in ("sa_2x", "rcca", "cgnl", "efficient_attention", "base_oc_isa"):
        yield f"table3_{context}", city, r101, context, {}, SINGLE, f"Table 3, {context}"
    for context in ("none", "base_oc_sa", "base_oc_isa", "pyramid_oc_sa", "pyramid_oc_isa", "asp_oc_sa", "asp_oc_isa"):
        yield f"table5_{context}", city, r101, context, {}, SINGLE, f"Table 5, {context}"


def experiments() -> Iterator[Experiment]:
    """(file stem, preset, backbone, context, context options, evaluation, what it reproduces)."""
    yield from _ablation_experiments()
    sota = [("table7", "cityscapes_trainval", "Table 7 (Cityscapes test, OHEM)"), ("table8", "ade20k", "Table 8"),
            ("table9", "pascal_context", "Table 9"), ("table10", "lip", "Table 10"), ("table11", "cocostuff10k", "Table 11")]
    for table, preset, label in sota:
        for backbone in ("resnet101", "hrnetv2_w48"):
            for context in ("base_oc_isa", "asp_oc_isa"):
                yield f"{table}_{backbone}_{context}", preset, backbone, context, {}, MS_FLIP, f"{label}, {backbone}, {context}"


def _evaluate_command(stem: str, preset: str, evaluation: str) -> tuple[str, str]:
    """The command that scores the trained model, and a note for the header (empty or a line)."""
    evaluate = "python -m ocnet_edu evaluate --config runs/paper/{0}/config.yaml --checkpoint runs/paper/{0}/final.pt".format(stem)
    note = ""
    if preset == "cityscapes_trainval":
        # trained on train+val: scoring val would measure training data; the test labels are not public
        evaluate = ("python -m ocnet_edu predict --config runs/paper/{0}/config.yaml --checkpoint runs/paper/{0}/final.pt "
                    "--split test --out runs/paper/{0}/test_labelIds").format(stem)
        note = "# Test labels are not public: predict writes labelId PNGs of the test split for the Cityscapes server.\n"
    if preset.startswith("cityscapes"):
        evaluate += " --sliding"
    if evaluation != SINGLE:
        evaluate += " " + evaluation
    return evaluate, note


def render(stem, preset, backbone, context, options, evaluation, label) -> str:
    """The YAML text of one experiment (one item of :func:`experiments`): header comment, then config."""
    config = {
        "preset": preset,
        "model": {"backbone": backbone, "context": context, "context_options": options, "pretrained": None},
        "runtime": {"out_dir": f"runs/paper/{stem}", "amp": True},
    }
    if preset == "cityscapes_trainval":
        config["loss"] = {"ohem": True, "ohem_thresh": 0.7, "ohem_min_kept": 100000}
    evaluate, note = _evaluate_command(stem, preset, evaluation)
    header = (
        f"# {label}\n"
        f"# Train (8 GPUs): torchrun --nproc_per_node=8 -m ocnet_edu train --config configs/paper/{stem}.yaml "
        "model.pretrained=/path/to/imagenet.pth\n"
        f"# Evaluate:       {evaluate}\n"
        f"{note}"
        "# Generated by scripts/make_configs.py.\n"
    )
    return header + yaml.safe_dump(config, sort_keys=False)


def write_configs(out_dir: Path = DEFAULT_OUT) -> int:
    """Replace the ``*.yaml`` files of ``out_dir`` with those of :func:`experiments`; returns their count."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for old in out_dir.glob("*.yaml"):
        old.unlink()
    count = 0
    for spec in experiments():
        (out_dir / f"{spec[0]}.yaml").write_text(render(*spec))
        count += 1
    return count


def main(out_dir: Path = DEFAULT_OUT) -> None:
    """Write the configs and say how many, and where."""
    count = write_configs(out_dir)
    print(f"wrote {count} configs to {out_dir}")


if __name__ == "__main__":
    main()
