"""Ahead-of-time compiled decode: one token through the whole model as an AOTInductor package beside the weights.

`ttt export MODEL_DIR` (or `export_decode`) traces the single-token step (embedding, every block with its TTT primal
step, final norm, LM head) with `torch.export` for each batch size and dtype asked for, compiles it with AOTInductor
and stores the packages in `MODEL_DIR/aot/` with a manifest. `TTTForCausalLM.from_pretrained` and `ttt generate`
load them when present (`attach_decode_artifacts`); from then on a single-token call with a cache of a matching
batch size runs the package: no Python per op, and no compile at start-up. A package built by another torch
release, for another CPU capability or for other weights is not used: a one-line notice says why and decoding stays
eager. The package's logits equal eager's (tested), so `generate` gives the same tokens.

Packages of float32 and bfloat16 weights hold no weights: at its first use a package is bound to the model's own
parameter tensors (AOTInductor's user-managed constants: no copy), so on disk it is its compiled code instead of the
weights' size, and loading it reads no weights. int8 packages keep their weights inside (torchao's quantized tensors
are unwrapped by the export into tensors the model does not hold). A package takes the cache's tensors in the order
`TTTLayerState.named_tensors` lists them.
"""

from __future__ import annotations

import copy
import json
import os
import platform
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from ..atomic import atomic_dir
from ..integrity import MANIFEST as CHECKSUMS
from ..integrity import DamagedFileError, sha256_of
from ..layers import TTTBase, TTTLayerState
from .cache import TTTCache
from .streaming import STREAMING_MAX_BATCH, streaming_linears
from .weights import WEIGHT_FORMATS, quantize_weights, weights_signature

if TYPE_CHECKING:
    from .modeling import TTTForCausalLM

AOT_FOLDER = "aot"
AOT_MANIFEST = "manifest.json"
FORMAT = "ttt-aot-decode-2"
# weight formats whose packages are bound to the model's tensors at load (the others carry their weights); such a
# package is compiled without the weights and without oneDNN's prepacked copies of them (cpp.weight_prepack), which
# it would otherwise make of every linear weight at its first step
BOUND_WEIGHTS = ("float32", "bfloat16")
BOUND_CONFIG = {"aot_inductor.package_constants_in_so": False, "cpp.weight_prepack": False}
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float64": torch.float64}
# how a package computes the linear layers: "streaming" (a reduction per output, `models/streaming.py`), "matmul"
# (torch's matrix product), "auto" (streaming up to STREAMING_MAX_BATCH rows)
LINEAR_KINDS = ("auto", "streaming", "matmul")


def platform_tag() -> dict[str, str]:
    """What a package is bound to: the torch release, the CPU instruction set torch uses, the machine type."""
    return {
        "torch": torch.__version__,
        "cpu_capability": str(torch.backends.cpu.get_cpu_capability()),
        "machine": platform.machine(),
    }


def weights_id(folder: Path) -> str:
    """The sha256 of the folder's weights file (from its checksum manifest when there is one)."""
    weights = folder / "model.safetensors"
    manifest = folder / CHECKSUMS
    if manifest.is_file():
        entry = json.loads(manifest.read_text()).get("files", {}).get("model.safetensors")
        if entry is not None:
            return str(entry["sha256"])
    if not weights.is_file():
        raise FileNotFoundError(f"{folder} holds no model.safetensors: not a model folder")
    return sha256_of(weights)


class _DecodeGraph(nn.Module):
    """What is traced: (input_ids [B, 1], *state) -> (logits [B, V], *new state), the state as flat tensors in the
    order of `names` (per layer, `TTTLayerState.named_tensors`)."""

    def __init__(self, model: TTTForCausalLM, templates: Sequence[TTTLayerState]) -> None:
        super().__init__()
        self.model = model
        self.templates = list(templates)
        self.names = [list(t.named_tensors()) for t in templates]

    def forward(self, input_ids: Tensor, *state: Tensor) -> tuple[Tensor, ...]:
        backbone = self.model.model
        h = backbone.embed_tokens(input_ids)
        flat = iter(state)
        new: list[Tensor] = []
        for block, template, names in zip(backbone.layers, self.templates, self.names):
            layer_state = TTTLayerState(ttt=template.ttt, conv=dict(template.conv))
            layer_state.load_named({name: next(flat) for name in names})
            h = block(h, None, layer_state)
            after = layer_state.named_tensors()
            new += [after[name] for name in names]
        logits = self.model.lm_head(backbone.norm(h))[:, -1]
        return (logits, *new)


@contextmanager
def _primal_layers(model: nn.Module) -> Iterator[None]:
    """Trace the TTT layers' primal step (the decode form, equal to the others: tested) whatever form they run."""
    layers = [m for m in model.modules() if isinstance(m, TTTBase)]
    saved = [layer.implementation for layer in layers]
    try:
        for layer in layers:
            layer.implementation = "primal"
        yield
    finally:
        for layer, implementation in zip(layers, saved):
            layer.implementation = implementation


def _decode_templates(model: TTTForCausalLM, batch_size: int) -> list[TTTLayerState]:
    """Layer states with every tensor a decode step carries (one token read: the gradient sums and any optimizer
    buffers exist), for `batch_size` rows."""
    cache = TTTCache.from_model(model, batch_size)
    with torch.no_grad():
        model(torch.zeros(batch_size, 1, dtype=torch.long, device=model.device), cache=cache, use_cache=True)
    return [layer.clone() for layer in cache.layers]


def _variant(model: TTTForCausalLM, dtype: str, weights: str) -> TTTForCausalLM:
    """`model` in `dtype` with its linear layers in `weights` (a copy unless nothing changes)."""
    if model.dtype == DTYPES[dtype] and weights == "float32":
        return model
    variant = copy.deepcopy(model)
    nn.Module.to(variant, DTYPES[dtype])
    quantize_weights(variant, weights)
    return variant


def export_decode(
    model: TTTForCausalLM,
    folder: str | os.PathLike,
    batch_sizes: Sequence[int] = (1,),
    dtypes: Sequence[str] = ("float32",),
    log: Callable[[str], None] = print,
    weights: Sequence[str] = ("float32",),
    linears: str = "auto",
) -> Path:
    """Build the decode packages for `model` (the weights in `folder`, float32) and store them in `folder/aot/`
    (replacing what is there, atomically): one per batch size, dtype (the whole model's, state included) and weight
    format (`quantize_weights`: the linear layers in float32, bfloat16 or int8, the rest float32). Returns the
    manifest's path. `linears` (one of LINEAR_KINDS) says how the packages compute the float32 and bfloat16 linear
    layers: "auto" streams the weights through a reduction (`models/streaming.py`) at batch sizes up to
    STREAMING_MAX_BATCH, where that reads them faster than the matrix product, and uses the matrix product above.

    Raises ValueError for a model without a fixed-size state, a batch size < 1, an unknown dtype, weight format or
    `linears` name, or a weight format other than float32 with a dtype other than float32; FileNotFoundError when
    `folder` holds no model.safetensors."""
    folder = Path(folder)
    if not all(layer.seq_modeling_block.supports_cache for layer in model.model.layers):
        raise ValueError("this model has no fixed-size state (generic / Nadaraya-Watson layers): nothing to export")
    for b in batch_sizes:
        if not isinstance(b, int) or b < 1:
            raise ValueError(f"batch sizes must be integers >= 1, got {b!r}")
    for name in dtypes:
        if name not in DTYPES:
            raise ValueError(f"dtype must be one of {tuple(DTYPES)}, got {name!r}")
    for name in weights:
        if name not in WEIGHT_FORMATS:
            raise ValueError(f"weights must be one of {WEIGHT_FORMATS}, got {name!r}")
    if linears not in LINEAR_KINDS:
        raise ValueError(f"linears must be one of {LINEAR_KINDS}, got {linears!r}")
    if any(w != "float32" for w in weights) and any(d != "float32" for d in dtypes):
        raise ValueError(
            "bfloat16 / int8 weights keep the rest of the model in float32: export them with dtype float32"
        )
    weights_sha = weights_id(folder)
    entries = []
    with atomic_dir(folder / AOT_FOLDER, overwrite=True) as out:
        for dtype in dtypes:
            for fmt in weights:
                variant = _variant(model, dtype, fmt).eval()
                for b in batch_sizes:
                    file = f"decode_b{b}_{dtype}" + ("" if fmt == "float32" else f"_{fmt}_weights") + ".pt2"
                    log(f"exporting the decode step for batch size {b}, {dtype}, {fmt} weights -> {file}")
                    templates = _decode_templates(variant, b)
                    graph = _DecodeGraph(variant, templates)
                    example = [t.contiguous() for template in templates for t in template.named_tensors().values()]
                    token = torch.zeros(b, 1, dtype=torch.long, device=variant.device)
                    bound = fmt in BOUND_WEIGHTS
                    stream = linears == "streaming" or (linears == "auto" and b <= STREAMING_MAX_BATCH)
                    streamed = streaming_linears(variant) if stream else nullcontext(0)
                    with torch.no_grad(), _primal_layers(variant), streamed as switched:
                        program = torch.export.export(graph, (token, *example))
                        torch._inductor.aoti_compile_and_package(
                            program,
                            package_path=str(out / file),
                            inductor_configs=BOUND_CONFIG if bound else {},
                        )
                    entry = {"file": file, "batch_size": b, "dtype": dtype, "weights_format": fmt}
                    entry["weights"] = "model" if bound else "package"
                    entry["linears"] = "streaming" if switched else "matmul"
                    entries.append({**entry, "state": graph.names, "sha256": sha256_of(out / file)})
        manifest = {"format": FORMAT, **platform_tag(), "weights": weights_sha, "packages": entries}
        (out / AOT_MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
    return folder / AOT_FOLDER / AOT_MANIFEST


@dataclass
class DecodeArtifact:
    """A decode package for one batch size, dtype and weight format. `step(input_ids, cache, model)` -> logits
    [B, 1, V], the cache updated in place, or None when the cache does not have the layout the package was built for.

    The package file is checked against its sha256 and loaded at its first use (a folder may hold packages for batch
    sizes and weight formats a process never runs: start-up does not pay for them); a package without weights
    (`weights_in_package` False) is then bound to `model`'s parameter and buffer tensors, which it reads in place.
    Raises DamagedFileError naming the file when its checksum differs from the manifest's, ValueError when the model
    lacks a tensor the package reads."""

    batch_size: int
    dtype: torch.dtype
    weights_format: str
    names: list[list[str]]
    path: Path
    sha256: str
    weights_in_package: bool = True
    _runner: Callable[..., Sequence[Tensor]] | None = None
    # the model tensors a bound package reads (kept referenced while it may run)
    _constants: dict[str, Tensor] | None = None

    def runner(self, model: nn.Module) -> Callable[..., Sequence[Tensor]]:
        """The loaded package (loaded, and bound to `model`'s tensors when it holds no weights, at the first call)."""
        if self._runner is None:
            if sha256_of(self.path) != self.sha256:
                raise DamagedFileError(self.path, "its sha256 differs from the one in the manifest")
            runner = torch._inductor.aoti_load_package(str(self.path))
            if not self.weights_in_package:
                self._constants = _model_tensors(model, runner.get_constant_fqns(), self.path)
                runner.load_constants(self._constants, check_full_update=True, user_managed=True)
            self._runner = runner
        return self._runner

    def _layout(self, cache: TTTCache) -> list[dict[str, Tensor]] | None:
        """The cache's tensors per layer when they have the names and dtype the package was built for, else None."""
        if cache.batch_size != self.batch_size or len(cache.layers) != len(self.names):
            return None
        layers = [layer.named_tensors() for layer in cache.layers]
        for tensors, names in zip(layers, self.names):
            if list(tensors) != names or tensors[names[0]].dtype != self.dtype:
                return None
        return layers

    def step(self, input_ids: Tensor, cache: TTTCache, model: nn.Module) -> Tensor | None:
        layers = self._layout(cache)
        if layers is None:
            return None
        # the package reads its inputs with the strides it was traced with (contiguous); the initial weights are
        # expanded over the batch (stride 0) until a row's first mini-batch closes
        flat = [t.contiguous() for tensors in layers for t in tensors.values()]
        logits, *new = self.runner(model)(input_ids, *flat)
        out = iter(new)
        for layer, names in zip(cache.layers, self.names):
            layer.load_named({name: next(out) for name in names})
            layer.num_positions += 1
        return logits.unsqueeze(1)


def _model_tensors(model: nn.Module, names: Sequence[str], path: Path) -> dict[str, Tensor]:
    """The tensors of `model` a package without weights reads, by the package's names (the traced graph holds the
    model as `model`: "model." + the parameter's or buffer's name, tied weights under each of their names)."""
    own = {f"model.{name}": t.detach() for name, t in model.named_parameters(remove_duplicate=False)}
    own.update({f"model.{name}": t for name, t in model.named_buffers(remove_duplicate=False)})
    missing = [name for name in names if name not in own]
    if missing:
        raise ValueError(f"{path} reads tensors this model does not have: {', '.join(missing[:3])}")
    return {name: own[name] for name in names}


def _notice(message: str) -> None:
    print(f"ttt: {message}", file=sys.stderr)


ArtifactKey = tuple[int, torch.dtype, str]  # (batch size, dtype, weight format)


def load_decode_artifacts(folder: str | os.PathLike) -> dict[ArtifactKey, DecodeArtifact]:
    """The packages in `folder/aot/` that this process can use, by (batch size, dtype, weight format); {} when there
    are none.

    A manifest built by another torch release, CPU capability or machine, or for other weights than the folder's,
    gives a one-line notice on stderr and {} (decoding stays eager). Raises DamagedFileError naming a missing package
    or an unreadable manifest (a package's checksum is checked at its first use)."""
    folder = Path(folder)
    path = folder / AOT_FOLDER / AOT_MANIFEST
    if not path.is_file():
        return {}
    try:
        manifest = json.loads(path.read_text())
        if manifest.get("format") != FORMAT:
            raise ValueError(f"format {manifest.get('format')!r}")
        packages = list(manifest["packages"])
    except (json.JSONDecodeError, KeyError, TypeError, ValueError, UnicodeDecodeError) as err:
        raise DamagedFileError(path, f"not a readable decode-package manifest ({err})") from None
    here = platform_tag()
    for key, value in here.items():
        if manifest.get(key) != value:
            _notice(
                f"{folder / AOT_FOLDER} was built for {key} {manifest.get(key)}, this is {value}: decoding eagerly "
                f"(run `ttt export {folder}` again)"
            )
            return {}
    if manifest.get("weights") != weights_id(folder):
        _notice(f"{folder / AOT_FOLDER} was built for other weights: decoding eagerly (run `ttt export {folder}`)")
        return {}
    loaded = {}
    for entry in packages:
        file = folder / AOT_FOLDER / entry["file"]
        if not file.is_file():
            raise DamagedFileError(file, f"missing (listed in {AOT_MANIFEST})")
        batch, dtype, fmt = int(entry["batch_size"]), DTYPES[entry["dtype"]], str(entry["weights_format"])
        in_package = entry.get("weights", "package") == "package"
        loaded[(batch, dtype, fmt)] = DecodeArtifact(
            batch, dtype, fmt, entry["state"], file, str(entry["sha256"]), in_package
        )
    return loaded


def attach_decode_artifacts(model: TTTForCausalLM, folder: str | os.PathLike) -> int:
    """Load `folder`'s decode packages (`load_decode_artifacts`) into `model`, which then runs single-token cached
    calls through them while its weights stay as loaded. Returns the number of packages attached."""
    artifacts = load_decode_artifacts(folder)
    model.use_decode_artifacts(artifacts, weights_signature(model))
    return len(artifacts)
