"""Data pipeline: documents -> tokenizer -> memory-mapped token files -> resumable, rank-sharded windows.

    from ttt import data
    prepared = data.prepare("bundled", "runs/data", tokenizer="bpe:4096")   # or a folder, .jsonl, "hf:NAME"
    prepared = data.load_prepared("runs/data")                               # later: verifies checksums
    loader = prepared.loader("train", seq_len=256, batch_size=8, rank=0, world_size=1)
    for batch in loader:                  # int64 [8, 257]: inputs batch[:, :-1], targets batch[:, 1:]
        ...
    state = loader.state_dict()           # store in the checkpoint; loader.load_state_dict(state) resumes

See docs/data.md for the token layout, the split rule and the bundled corpus's provenance.
"""

from .bpe import BPETokenizer, train_bpe
from .byte import ByteTokenizer
from .corpus import bundled_documents, bundled_index
from .documents import BUNDLED, Document, read_documents
from .errors import DataError
from .hf_export import to_hf_tokenizer
from .hf_tokenizer import HFTokenizer
from .prepare import prepare
from .prepared import PreparedData, load_prepared
from .registry import get_tokenizer, load_tokenizer
from .split import split_documents
from .tokenizer import Tokenizer
from .windows import WindowDataset, WindowLoader

__all__ = [
    "BPETokenizer",
    "BUNDLED",
    "ByteTokenizer",
    "DataError",
    "Document",
    "HFTokenizer",
    "PreparedData",
    "Tokenizer",
    "WindowDataset",
    "WindowLoader",
    "bundled_documents",
    "bundled_index",
    "get_tokenizer",
    "load_prepared",
    "load_tokenizer",
    "prepare",
    "read_documents",
    "split_documents",
    "to_hf_tokenizer",
    "train_bpe",
]
