"""Fixtures of the bad-input suite."""

import importlib.util

import pytest


@pytest.fixture
def absent(monkeypatch):
    """``absent("deepspeed", …)``: those packages look uninstalled to this process (find_spec returns None)."""
    real = importlib.util.find_spec

    def hide(*names):
        monkeypatch.setattr(importlib.util, "find_spec",
                            lambda name, *a, **k: None if name.split(".")[0] in names else real(name, *a, **k))
    return hide
