import numpy as np
import pytest
import torch

from ttt import data


def make_loader(n_tokens: int = 1000, seq_len: int = 7, batch_size: int = 6, **kwargs) -> data.WindowLoader:
    tokens = np.arange(n_tokens, dtype=np.uint16)
    return data.WindowLoader(data.WindowDataset(tokens, seq_len), batch_size, **kwargs)


def take(loader: data.WindowLoader, n: int) -> list[torch.Tensor]:
    out: list[torch.Tensor] = []
    while len(out) < n:
        for batch in loader:
            out.append(batch)
            if len(out) == n:
                break
    return out


@pytest.mark.parametrize("seq_len", [1, 7, 16, 37])
def test_windows_share_one_token_and_cover_every_target(seq_len: int) -> None:
    tokens = np.arange(200, dtype=np.uint16)
    windows = data.WindowDataset(tokens, seq_len)
    assert len(windows) == (200 - 1) // seq_len
    for i in range(len(windows)):
        assert windows[i].tolist() == list(range(i * seq_len, i * seq_len + seq_len + 1))
        assert windows[i].dtype == torch.int64
    targets = torch.cat([windows[i][1:] for i in range(len(windows))])
    assert targets.tolist() == list(range(1, len(windows) * seq_len + 1))
    batch = windows.batch(np.array([2, 0]))
    assert torch.equal(batch, torch.stack([windows[2], windows[0]]))


def test_order_is_deterministic_and_changes_per_epoch() -> None:
    a, b = make_loader(seed=5), make_loader(seed=5)
    first_a, first_b = take(a, 2 * len(a)), take(b, 2 * len(b))
    assert all(torch.equal(x, y) for x, y in zip(first_a, first_b))
    epoch0, epoch1 = torch.cat(first_a[: len(a)]), torch.cat(first_a[len(a) :])
    assert not torch.equal(epoch0, epoch1)
    # An epoch visits distinct windows; drop_last leaves out the partial last batch only.
    assert len(set(epoch0[:, 0].tolist())) == len(a) * 6 == (len(a.dataset) // 6) * 6
    assert not torch.equal(torch.cat(take(make_loader(seed=6), len(a))), epoch0)


def test_unshuffled_order_is_sequential() -> None:
    loader = make_loader(shuffle=False, drop_last=False)
    starts = torch.cat(list(loader))[:, 0].tolist()
    assert starts == [7 * i for i in range(len(loader.dataset))]
    assert len(list(loader)[-1]) == len(loader.dataset) % 6


@pytest.mark.parametrize("stop", [0, 1, 5, 23, 24, 25], ids=lambda s: f"after{s}")
def test_resume_yields_the_same_following_batches(stop: int) -> None:
    reference = take(make_loader(seed=1), 40)
    interrupted = make_loader(seed=1)
    take(interrupted, stop)
    state = interrupted.state_dict()
    resumed = make_loader(seed=1)
    resumed.load_state_dict(state)
    following = take(resumed, 40 - stop)
    assert all(torch.equal(x, y) for x, y in zip(following, reference[stop:]))


@pytest.mark.parametrize("world_size", [2, 3])
def test_rank_shards_concatenate_to_the_global_batch(world_size: int) -> None:
    batch_size = 6
    single = take(make_loader(batch_size=batch_size, seed=2), 30)
    ranks = [make_loader(batch_size=batch_size, seed=2, rank=r, world_size=world_size) for r in range(world_size)]
    shards = [take(loader, 30) for loader in ranks]
    for step in range(30):
        pieces = [shards[r][step] for r in range(world_size)]
        assert all(len(p) == batch_size // world_size for p in pieces)
        assert torch.equal(torch.cat(pieces), single[step])


def test_state_moves_between_world_sizes() -> None:
    single = take(make_loader(seed=4), 12)
    ranks = [make_loader(seed=4, rank=r, world_size=2) for r in range(2)]
    for loader in ranks:
        take(loader, 7)
    resumed = make_loader(seed=4)
    resumed.load_state_dict(ranks[0].state_dict())
    assert all(torch.equal(x, y) for x, y in zip(take(resumed, 5), single[7:]))


def test_prepared_loader_end_to_end(bundled_byte: data.PreparedData) -> None:
    loader = bundled_byte.loader("train", seq_len=64, batch_size=4, seed=0)
    batch = next(iter(loader))
    assert batch.shape == (4, 65) and batch.dtype == torch.int64
    assert int(batch.max()) < 258
    val = bundled_byte.loader("val", seq_len=64, batch_size=4)
    assert not val.shuffle and next(iter(val))[0, 0].item() == 256


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"batch_size": 5, "world_size": 2}, "multiple of world_size=2"),
        ({"rank": 2, "world_size": 2}, "rank < world_size"),
        ({"batch_size": 1000}, "fewer than one batch"),
        ({"n_tokens": 5}, "fewer than one window"),
        ({"seq_len": 0}, "seq_len must be >= 1"),
    ],
    ids=["indivisible-batch", "bad-rank", "too-few-windows", "too-few-tokens", "zero-seq-len"],
)
def test_loader_errors(kwargs: dict, message: str) -> None:
    with pytest.raises(data.DataError, match=message):
        make_loader(**kwargs)


def test_resume_refuses_other_data() -> None:
    state = make_loader(seed=1).state_dict()
    with pytest.raises(data.DataError, match="seed=1"):
        make_loader(seed=2).load_state_dict(state)
    with pytest.raises(data.DataError, match="num_windows"):
        make_loader(n_tokens=2000, seed=1).load_state_dict(state)


@pytest.mark.parametrize("stop", [23, 24, 25], ids=lambda s: f"after{s}")
def test_state_dict_inside_a_running_stream_keeps_the_epoch_order(stop: int) -> None:
    """As the trainer uses it: one endless stream, a checkpoint taken between batches (24 = one epoch's end)."""

    def stream(loader: data.WindowLoader):
        while True:
            yield from loader

    reference = take(make_loader(seed=1), 40)
    running = make_loader(seed=1)
    batches = stream(running)
    seen = [next(batches) for _ in range(stop)]
    state = running.state_dict()
    seen += [next(batches) for _ in range(40 - stop)]
    assert all(torch.equal(x, y) for x, y in zip(seen, reference))
    resumed = make_loader(seed=1)
    resumed.load_state_dict(state)
    assert all(torch.equal(x, y) for x, y in zip(take(resumed, 40 - stop), reference[stop:]))
