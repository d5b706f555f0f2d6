"""Stream an EasyLM "streaming" checkpoint (the format ttt-lm-jax writes).

The file is msgpack records back to back, no header or index. Each record is [key, value]: key a list of str (a
flax tree path; names may contain "/"), value the bytes of one flax-serialised array: msgpack ExtType code 1 whose
payload is [shape, dtype name, raw little-endian C-order bytes]. Records are decoded one at a time, and only those
the caller asks for, so a multi-GB train state is never held in memory whole.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import msgpack
import torch

DTYPES = {
    "float32": torch.float32,
    "float64": torch.float64,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
    "int32": torch.int32,
    "int64": torch.int64,
    "int8": torch.int8,
    "uint8": torch.uint8,
    "bool": torch.bool,
}
FLAX_NDARRAY_EXT = 1
FLAX_SCALAR_EXT = 3


class CheckpointFormatError(ValueError):
    """The file is not (or not all of) an EasyLM streaming checkpoint."""


def decode_array(blob: bytes, where: str) -> torch.Tensor:
    """flax.serialization bytes of one array -> a torch tensor (bf16 kept as bf16: converting it is exact)."""
    try:
        ext = msgpack.unpackb(blob, ext_hook=lambda code, data: msgpack.ExtType(code, data), raw=False)
    except Exception as err:
        raise CheckpointFormatError(f"{where}: value is not a flax-serialised array ({err})") from err
    if isinstance(ext, dict) and ext.get("__msgpack_chunked_array__"):
        raise CheckpointFormatError(f"{where}: chunked arrays (> 1 GiB per leaf) are not supported")
    if not isinstance(ext, msgpack.ExtType) or ext.code not in (FLAX_NDARRAY_EXT, FLAX_SCALAR_EXT):
        raise CheckpointFormatError(f"{where}: value is not a flax ndarray record")
    try:
        shape, dtype_name, data = msgpack.unpackb(ext.data, raw=False)
    except Exception as err:
        raise CheckpointFormatError(f"{where}: value is not a flax ndarray record ({err})") from err
    if not (
        isinstance(shape, (list, tuple))
        and all(isinstance(n, int) and n >= 0 for n in shape)
        and isinstance(dtype_name, str)
        and isinstance(data, bytes)
    ):
        raise CheckpointFormatError(f"{where}: value is not a flax ndarray record (not [shape, dtype, bytes])")
    if dtype_name not in DTYPES:
        raise CheckpointFormatError(f"{where}: unsupported dtype {dtype_name!r}")
    dtype = DTYPES[dtype_name]
    expected = math.prod(shape) * torch.empty((), dtype=dtype).element_size()  # Python ints: no overflow
    if len(data) != expected:
        raise CheckpointFormatError(f"{where}: {len(data)} bytes for shape {shape} {dtype_name}, expected {expected}")
    if not data:
        return torch.empty(shape, dtype=dtype)
    return torch.frombuffer(bytearray(data), dtype=dtype).reshape(shape)


def iter_records(
    path: str | os.PathLike, want: Callable[[tuple[str, ...]], bool] = lambda key: True
) -> Iterator[tuple[tuple[str, ...], torch.Tensor]]:
    """Yield (key, tensor) for each record whose key `want` accepts, in file order, decoding one at a time.

    Raises CheckpointFormatError naming `path` on a file that is not such a checkpoint or that ends inside a
    record, FileNotFoundError when there is no such file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no EasyLM streaming checkpoint file at {path}")
    size = path.stat().st_size
    if size == 0:
        raise CheckpointFormatError(f"{path}: empty file")
    with open(path, "rb") as f:
        unpacker = msgpack.Unpacker(f, raw=False, max_buffer_size=0, strict_map_key=False)
        count = 0
        try:
            for record in unpacker:
                if not (
                    isinstance(record, (list, tuple))
                    and len(record) == 2
                    and isinstance(record[0], (list, tuple))
                    and all(isinstance(k, str) for k in record[0])
                    and isinstance(record[1], bytes)
                ):
                    raise CheckpointFormatError(
                        f"{path}: record {count} is not a [key path, array bytes] pair: not an EasyLM streaming "
                        "checkpoint"
                    )
                key = tuple(record[0])
                count += 1
                if want(key):
                    yield key, decode_array(record[1], f"{path} record {'/'.join(key)}")
        except (msgpack.ExtraData, msgpack.FormatError, msgpack.StackError, ValueError, TypeError) as err:
            if isinstance(err, CheckpointFormatError):
                raise
            raise CheckpointFormatError(f"{path}: not an EasyLM streaming checkpoint ({err})") from err
        if unpacker.tell() != size:
            raise CheckpointFormatError(
                f"{path}: truncated: the last record ends at byte {unpacker.tell()} of {size} (incomplete copy?)"
            )
    if count == 0:
        raise CheckpointFormatError(f"{path}: no records")
