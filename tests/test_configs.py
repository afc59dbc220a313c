"""Every shipped config parses, is what scripts/make_configs.py (ocnet_edu.experiments.configs) writes,
and builds its model."""

from pathlib import Path

import pytest
import torch

from ocnet_edu.config import PAPER_DEFAULTS, load_config
from ocnet_edu.engine.builders import build_model
from ocnet_edu.experiments import configs as make_configs

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted((ROOT / "configs").rglob("*.yaml"))


def test_configs_are_generated_by_the_script():
    expected = {f"{s[0]}.yaml": make_configs.render(*s) for s in make_configs.experiments()}
    shipped = {p.name: p.read_text() for p in (ROOT / "configs" / "paper").glob("*.yaml")}
    assert shipped == expected
    tables = {name.split("_")[0] for name in shipped}
    assert tables == {"table1", "table2", "table3", "table5", "table7", "table8", "table9", "table10", "table11"}


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_config_builds_its_model_on_meta(path):
    cfg = load_config(path)
    if cfg.preset is not None:
        assert cfg.optim.lr == PAPER_DEFAULTS[cfg.preset]["optim"]["lr"]
    with torch.device("meta"):
        model = build_model(cfg)
    assert model.classifier.out_channels == cfg.model.num_classes
    stages = cfg.model.context_options.get("stages")
    if stages is not None:
        assert model.context.ocp.stages == tuple(stages)
    # a forward pass on meta tensors checks every shape without computing anything
    side = 64 if cfg.model.backbone == "small" else 128
    out = model.eval()(torch.empty(1, 3, side, side, device="meta"))
    assert out.shape == (1, cfg.model.num_classes, side, side)
