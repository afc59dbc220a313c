import pytest
import torch

from ocnet_edu import scale


def test_scale_switch(monkeypatch):
    monkeypatch.setenv("OCNET_SCALE", "small")
    assert scale.scale() == "small" and scale.pick(1, 2) == 1
    monkeypatch.setenv("OCNET_SCALE", "FULL")
    assert scale.scale() == "full" and scale.pick(1, 2) == 2
    monkeypatch.delenv("OCNET_SCALE")
    assert scale.scale() == ("full" if torch.cuda.is_available() else "small")
    monkeypatch.setenv("OCNET_SCALE", "huge")
    with pytest.raises(ValueError, match="not a scale"):
        scale.scale()
