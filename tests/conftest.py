import os

# The Triton kernels (tests/ops/triton) run in Triton's CPU interpreter: the variable must be set before triton is
# first imported (torch imports it), since triton decides at decoration time, its own library included.
os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest
import torch

from ttt.data import prepare


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield


@pytest.fixture(scope="session")
def bundled_bytes(tmp_path_factory):
    """The bundled corpus, byte tokenizer, prepared once for the session."""
    folder = tmp_path_factory.mktemp("bundled_bytes")
    prepare("bundled", folder, tokenizer="byte")
    return folder


# The Hugging Face-facing tests (generation, cache, save/load, Auto classes, sessions, the clients that call the
# model), selected by `-m hf`. `.ci/run` runs the whole suite against the newest and the oldest allowed releases.
HF_FACING = (
    "tests/hf/",
    "tests/models/test_generation.py",
    "tests/models/test_model.py",
    "tests/models/test_session.py",
    "tests/models/test_compiled_decode.py",
    "tests/eval/test_eval.py",
)


def pytest_collection_modifyitems(config, items):
    root = str(config.rootpath)
    for item in items:
        path = str(item.path)[len(root) + 1 :]
        if path.startswith(HF_FACING):
            item.add_marker(pytest.mark.hf)
