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
