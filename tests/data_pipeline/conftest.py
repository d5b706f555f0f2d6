from pathlib import Path

import pytest

from ttt import data

TEXTS = {
    "a.txt": "To be, or not to be, that is the question.\n" * 40,
    "b.txt": "Ærø, naïve café — 日本語のテキスト, emoji 🙂, and <|eos|> spelled out.\n" * 30,
    "c.txt": "Of Mans First Disobedience, and the Fruit\nOf that Forbidden Tree\n" * 35,
    "sub/d.txt": "Now is the winter of our discontent\nMade glorious summer by this sun of York.\n" * 25,
    "sub/e.txt": "The quality of mercy is not strain'd,\nIt droppeth as the gentle rain from heaven\n" * 30,
}


def write_folder(root: Path, texts: dict[str, str] = TEXTS) -> Path:
    for name, text in texts.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return root


@pytest.fixture
def text_folder(tmp_path: Path) -> Path:
    return write_folder(tmp_path / "texts")


@pytest.fixture(scope="session")
def bundled_byte(tmp_path_factory: pytest.TempPathFactory) -> data.PreparedData:
    """The bundled corpus prepared once with the byte tokenizer (read-only for tests)."""
    return data.prepare("bundled", tmp_path_factory.mktemp("bundled") / "byte", tokenizer="byte")
