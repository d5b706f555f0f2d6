"""`ttt convert jax` on things that are not checkpoints: the error names the path given and what was expected."""

from __future__ import annotations

import pickle
import re
from pathlib import Path

import msgpack
import pytest

from ttt.cli import main
from ttt.convert import CheckpointFormatError, config_from_flags, from_jax, iter_records

DATA = Path(__file__).parent.parent / "fixtures" / "jax"
GOOD = DATA / "ttt_linear_mamba" / "ckpt_fp32_params"


def checkpoint(tmp_path: Path, params: bytes | None = None, metadata: bytes | None = None) -> Path:
    """A checkpoint folder: the good streaming_params and metadata.pkl unless replaced."""
    folder = tmp_path / "ckpt"
    folder.mkdir()
    for name, data in (("streaming_params", params), ("metadata.pkl", metadata)):
        (folder / name).write_bytes(data if data is not None else (GOOD / name).read_bytes())
    return folder


def test_a_file_instead_of_a_checkpoint_folder(tmp_path: Path) -> None:
    random_file = tmp_path / "random.bin"
    random_file.write_bytes(bytes(range(256)) * 4)
    expected = r"random\.bin is a file with no metadata\.pkl .*expected .* checkpoint folder"
    with pytest.raises(ValueError, match=expected):
        from_jax(random_file, tmp_path / "out")
    with pytest.raises(SystemExit, match=r"ttt convert jax: .*random\.bin is a file .*checkpoint folder"):
        main(["convert", "jax", str(random_file), str(tmp_path / "out")])
    # with a config given, the file is read, and it is the file that is named
    config = config_from_flags("125m", "ttt_linear", vocab_size=97, num_hidden_layers=2)
    with pytest.raises(CheckpointFormatError, match=r"random\.bin"):
        from_jax(random_file, tmp_path / "out", config=config)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "metadata, detail",
    [
        (b"\x80\xa0" + bytes(range(64)), "unsupported pickle protocol: 160"),
        (b"\xd5\x01garbage", "invalid load key"),
        (pickle.dumps({"a": 1})[:-3], "does not unpickle"),  # truncated
        (pickle.dumps([1, 2, 3]), "holds a list, not a dict"),
    ],
)
def test_garbage_metadata_names_the_file(tmp_path: Path, metadata: bytes, detail: str) -> None:
    folder = checkpoint(tmp_path, metadata=metadata)
    meta = re.escape(str(folder / "metadata.pkl"))
    with pytest.raises(ValueError, match=rf"{meta} is not an EasyLM/flax checkpoint metadata file.*{detail}"):
        from_jax(folder, tmp_path / "out")
    with pytest.raises(SystemExit, match=rf"{meta} is not an EasyLM/flax checkpoint metadata file"):
        main(["convert", "jax", str(folder), str(tmp_path / "out")])
    assert not (tmp_path / "out").exists()


def test_metadata_without_a_model_config_names_the_file(tmp_path: Path) -> None:
    folder = checkpoint(tmp_path, metadata=pickle.dumps({"step": 1}))
    with pytest.raises(ValueError, match=rf"{re.escape(str(folder / 'metadata.pkl'))} has no model_config"):
        from_jax(folder, tmp_path / "out")
    (folder / "metadata.pkl").write_bytes(pickle.dumps({"model_config": {"seq_modeling_block": "ttt_linear"}}))
    with pytest.raises(ValueError, match=rf"{re.escape(str(folder / 'metadata.pkl'))}: model_config lacks vocab_size"):
        from_jax(folder, tmp_path / "out")


def test_folder_without_metadata_is_named(tmp_path: Path) -> None:
    folder = checkpoint(tmp_path)
    (folder / "metadata.pkl").unlink()
    with pytest.raises(ValueError, match=rf"{re.escape(str(folder))} has no metadata\.pkl: give the config"):
        from_jax(folder, tmp_path / "out")


def test_missing_or_empty_checkpoint_folder(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"no checkpoint at .*nowhere: expected .* checkpoint folder"):
        from_jax(tmp_path / "nowhere", tmp_path / "out")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=r"empty holds no streaming_params or streaming_train_state file"):
        from_jax(tmp_path / "empty", tmp_path / "out")


def test_truncated_or_garbage_params_name_the_file(tmp_path: Path) -> None:
    good = (GOOD / "streaming_params").read_bytes()
    cases = [
        (good[: len(good) // 3], "truncated"),
        (bytes(range(256)) * 3, "not an EasyLM streaming checkpoint"),
        (msgpack.packb({(1, 2): 3}) + msgpack.packb({"a": {}}), "not"),  # records that are not [key, bytes] pairs
        (msgpack.packb([["model", "x"], msgpack.packb(msgpack.ExtType(1, msgpack.packb(7)))]), "not a flax ndarray"),
    ]
    for i, (data, message) in enumerate(cases):
        sub = tmp_path / str(i)
        sub.mkdir()
        folder = checkpoint(sub, params=data)
        params = re.escape(str(folder / "streaming_params"))
        with pytest.raises(CheckpointFormatError, match=rf"{params}.*{message}"):
            from_jax(folder, tmp_path / "out")
        with pytest.raises(SystemExit, match=rf"ttt convert jax: {params}"):
            main(["convert", "jax", str(folder), str(tmp_path / "out")])
    assert not (tmp_path / "out").exists()


def test_unhashable_map_key_is_a_format_error(tmp_path: Path) -> None:
    path = tmp_path / "params"
    path.write_bytes(b"\x81\x91\x00\x00")  # {[0]: 0}: a list as a map key
    with pytest.raises(CheckpointFormatError, match=rf"{re.escape(str(path))}: not an EasyLM streaming checkpoint"):
        list(iter_records(path))


def test_out_that_is_a_file_is_named(tmp_path: Path) -> None:
    (tmp_path / "out").write_text("keep")
    with pytest.raises(FileExistsError, match=r"out exists as a file"):
        from_jax(GOOD, tmp_path / "out")
    assert (tmp_path / "out").read_text() == "keep"
