"""The AOT decode packages (`ttt export`, models/aot.py) equal eager decoding, are used when present and fit, and are
ignored with a notice when stale. Exporting compiles C++ (tens of seconds), so one module-scoped export per model."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from ttt import TTTCache, TTTForCausalLM, get_preset
from ttt.integrity import DamagedFileError
from ttt.models.aot import AOT_FOLDER, AOT_MANIFEST, export_decode
from ttt.models.weights import quantize_weights, weights_format

BATCH_SIZES = (1, 2)
MODELS = {
    # the paper's TTT-Linear on the Mamba backbone (pre-conv, shared q/k convs)
    "linear": dict(preset="ttt-linear-tiny"),
    # TTT-MLP with carried optimizer buffers and retention, on the Transformer backbone
    "mlp-momentum-forget": dict(preset="ttt-mlp-tiny-T", inner_optimizer="momentum", forget_gate=True),
}


@pytest.fixture(scope="module", params=list(MODELS))
def exported(request, tmp_path_factory):
    options = dict(MODELS[request.param])
    torch.manual_seed(0)
    model = TTTForCausalLM(get_preset(options.pop("preset"), mini_batch_size=4, **options)).eval()
    folder = tmp_path_factory.mktemp(request.param)
    model.save_pretrained(folder)
    export_decode(model, folder, batch_sizes=BATCH_SIZES, log=lambda _: None)
    return model, folder


def counting(model: TTTForCausalLM) -> list[bool]:
    """Record, per single-token cached call, whether a package ran it."""
    used: list[bool] = []
    original = model._artifact_decode

    def spy(*args):
        logits = original(*args)
        used.append(logits is not None)
        return logits

    model._artifact_decode = spy  # type: ignore[method-assign]
    return used


def prompts(batch: int) -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(1)
    ids = torch.randint(0, 256, (batch, 11))
    mask = torch.ones_like(ids)
    if batch > 1:
        mask[1, :5] = 0  # left padding: the rows decode from different offsets in their mini-batches
    return ids, mask


@pytest.mark.parametrize("batch", BATCH_SIZES)
def test_logits_and_state_equal_eager(exported, batch):
    eager, folder = exported
    fast = TTTForCausalLM.from_pretrained(folder).eval()
    assert set(fast._decode_artifacts) == {(b, torch.float32, "float32") for b in BATCH_SIZES}
    used = counting(fast)
    ids, mask = prompts(batch)
    ours, theirs = TTTCache.from_model(fast, batch), TTTCache.from_model(eager, batch)
    with torch.no_grad():
        fast(ids, attention_mask=mask, cache=ours)
        eager(ids, attention_mask=mask, cache=theirs)
        for _ in range(9):  # crosses mini-batch boundaries (b = 4) at different steps per row
            token = torch.randint(0, 256, (batch, 1))
            got, expected = fast(token, cache=ours).logits, eager(token, cache=theirs).logits
            assert got.shape == expected.shape == (batch, 1, 256)
            assert ((got - expected).abs().max() / expected.abs().max()) < 1e-5
    assert used == [False] + [True] * 9  # the prefill is eager, every decode step ran the package
    # the float32 package holds no weights: it reads the model's own tensors (no copy)
    artifact = fast._decode_artifacts[(batch, torch.float32, "float32")]
    own = {f"model.{name}": p for name, p in fast.named_parameters(remove_duplicate=False)}
    assert not artifact.weights_in_package and artifact._constants
    assert set(artifact._constants) <= set(own) and "model.lm_head.weight" in artifact._constants
    assert all(t.data_ptr() == own[name].data_ptr() for name, t in artifact._constants.items())
    for a, b in zip(ours.layers, theirs.layers):
        mine, other = a.named_tensors(), b.named_tensors()
        assert list(mine) == list(other) and a.num_positions == b.num_positions
        for name in mine:
            assert torch.allclose(mine[name], other[name], rtol=1e-4, atol=1e-5), name


def test_generate_gives_the_same_tokens(exported):
    eager, folder = exported
    fast = TTTForCausalLM.from_pretrained(folder).eval()
    used = counting(fast)
    ids, mask = prompts(2)
    greedy = dict(max_new_tokens=12, do_sample=False, attention_mask=mask)
    assert torch.equal(fast.generate(ids, **greedy), eager.generate(ids, **greedy))
    assert sum(used) == 11  # every step after the prefill
    sampled = []
    for model in (fast, eager):
        torch.manual_seed(3)
        sampled.append(model.generate(ids[:1], max_new_tokens=12, do_sample=True, top_k=20))
    assert torch.equal(*sampled)


def test_other_batch_sizes_and_changed_weights_run_eagerly(exported):
    _, folder = exported
    fast = TTTForCausalLM.from_pretrained(folder).eval()
    used = counting(fast)
    ids = torch.randint(0, 256, (3, 6))
    cache = TTTCache.from_model(fast, 3)
    with torch.no_grad():
        fast(ids, cache=cache)
        fast(ids[:, :1], cache=cache)  # batch size 3: no package
        cache = TTTCache.from_model(fast, 1)
        fast(ids[:1], cache=cache)
        fast.lm_head.weight.mul_(2.0)  # weights changed since they were loaded: eager (the signature no longer holds)
        fast(ids[:1, :1], cache=cache)
    assert used == [False, False, False, False]


def test_stale_packages_give_a_notice_and_eager_decoding(exported, tmp_path, capsys):
    _, folder = exported
    copy = tmp_path / "copy"
    shutil.copytree(folder, copy)
    manifest = copy / AOT_FOLDER / AOT_MANIFEST
    data = json.loads(manifest.read_text())
    data["torch"] = "0.0.1"
    manifest.write_text(json.dumps(data))
    model = TTTForCausalLM.from_pretrained(copy)
    assert model._decode_artifacts == {}
    assert "built for torch 0.0.1" in capsys.readouterr().err

    # new weights saved into the folder: the packages were built for the old ones
    shutil.rmtree(copy)
    shutil.copytree(folder, copy)
    other = TTTForCausalLM.from_pretrained(copy)
    with torch.no_grad():
        other.lm_head.weight.add_(1.0)
    other.save_pretrained(copy)
    capsys.readouterr()
    assert TTTForCausalLM.from_pretrained(copy)._decode_artifacts == {}
    assert "built for other weights" in capsys.readouterr().err


def test_a_damaged_or_missing_package_is_named(exported, tmp_path):
    _, folder = exported
    copy = tmp_path / "copy"
    shutil.copytree(folder, copy)
    package = copy / AOT_FOLDER / "decode_b1_float32.pt2"
    package.write_bytes(package.read_bytes()[:-10] + b"0123456789")
    # checked at its first use: loading a folder does not pay for packages a process never runs
    model = TTTForCausalLM.from_pretrained(copy).eval()
    cache = TTTCache.from_model(model, 1)
    with torch.no_grad():
        model(torch.randint(0, 256, (1, 5)), cache=cache)
        with pytest.raises(DamagedFileError, match="decode_b1_float32.pt2"):
            model(torch.randint(0, 256, (1, 1)), cache=cache)
    package.unlink()
    with pytest.raises(DamagedFileError, match="decode_b1_float32.pt2 is damaged: missing"):
        TTTForCausalLM.from_pretrained(copy)


def test_export_refuses_bad_options(exported):
    model, folder = exported
    with pytest.raises(ValueError, match="batch sizes"):
        export_decode(model, folder, batch_sizes=(0,))
    with pytest.raises(ValueError, match="dtype must be one of"):
        export_decode(model, folder, dtypes=("float8",))
    with pytest.raises(FileNotFoundError, match="no model.safetensors"):
        export_decode(model, folder / AOT_FOLDER)
    with pytest.raises(ValueError, match="linears must be one of"):
        export_decode(model, folder, linears="gemv")


def test_manifest_says_how_linears_run(exported):
    """Up to STREAMING_MAX_BATCH rows the packages stream the weights through a reduction (models/streaming.py)."""
    _, folder = exported
    entries = json.loads((folder / AOT_FOLDER / AOT_MANIFEST).read_text())["packages"]
    assert {e["batch_size"]: e["linears"] for e in entries} == {b: "streaming" for b in BATCH_SIZES}


@pytest.mark.parametrize("weights", ["bfloat16", "int8"])
def test_quantized_weights_error_and_their_packages(tmp_path, weights):
    """The linear layers in bfloat16 / int8, the rest (inner state included) float32: logits within a bound of the
    float32 model's, and a package built for the format equals the quantized model run eagerly."""
    torch.manual_seed(0)
    reference = TTTForCausalLM(get_preset("ttt-linear-tiny", mini_batch_size=4)).eval()
    reference.save_pretrained(tmp_path)
    export_decode(reference, tmp_path, batch_sizes=(1,), weights=(weights,), log=lambda _: None)
    eager = quantize_weights(TTTForCausalLM.from_pretrained(tmp_path).eval(), weights)
    fast = quantize_weights(TTTForCausalLM.from_pretrained(tmp_path).eval(), weights)
    assert weights_format(fast) == weights and (1, torch.float32, weights) in fast._decode_artifacts
    assert fast.model.embed_tokens.weight.dtype == torch.float32  # untied: the lookup stays float32
    used = counting(fast)
    ids = torch.randint(0, 256, (1, 11))
    caches = [TTTCache.from_model(m, 1) for m in (reference, eager, fast)]
    assert all(layer.ttt.params[0].dtype == torch.float32 for cache in caches for layer in cache.layers)
    with torch.no_grad():
        for model, cache in zip((reference, eager, fast), caches):
            model(ids, cache=cache)
        for _ in range(6):
            token = torch.randint(0, 256, (1, 1))
            ref, got, packaged = (m(token, cache=c).logits for m, c in zip((reference, eager, fast), caches))
            scale = ref.abs().max()
            assert (got - ref).abs().max() / scale < 3e-2  # the quantization error (measured ~0.4% / 0.7%)
            assert (packaged - got).abs().max() / scale < 1e-5  # the package is the quantized model, compiled
    assert used == [False] + [True] * 6
    # bfloat16 packages read the model's bfloat16 tensors; int8 ones carry their (unwrapped torchao) weights
    assert fast._decode_artifacts[(1, torch.float32, weights)].weights_in_package == (weights == "int8")


def test_quantize_weights_refuses_bad_formats():
    model = TTTForCausalLM(get_preset("ttt-linear-tiny"))
    with pytest.raises(ValueError, match="weights must be one of"):
        quantize_weights(model, "int4")
    with pytest.raises(ValueError, match="starts from a float32 model"):
        quantize_weights(model.double(), "int8")
