"""The one window sampler against a slow, obviously correct reference."""

import numpy as np
import pytest

from chaosfm._config import ConfigError
from chaosfm.train import WindowSampler


def reference(streams, window, batch_size, seed, step, first_start=0):
    """Every (stream, start) that holds a whole window, in stream order; draw with the step's own
    generator; slice each array by hand."""
    candidates = []
    for asset, arrays in streams.items():
        length = len(next(iter(arrays.values())))
        candidates += [(asset, start) for start in range(first_start, length - window + 1)]
    picks = np.random.default_rng([seed, step]).integers(0, len(candidates), batch_size)
    names = list(streams[candidates[0][0]])
    batch = {}
    for name in names:
        batch[name] = np.stack([streams[asset][name][start : start + window] for asset, start in
                                (candidates[i] for i in picks)])
    return batch, candidates


def make_streams(lengths, seed=0):
    """Aligned arrays per stream: int codes, a float series and a (n, 3) feature block, all
    distinct across streams so a window names where it came from."""
    rng = np.random.default_rng(seed)
    streams, offset = {}, 0
    for index, length in enumerate(lengths):
        streams[f"s{index}"] = {
            "codes": np.arange(offset, offset + length, dtype=np.int32),
            "exo": rng.standard_normal(length).astype(np.float32),
            "features": rng.standard_normal((length, 3)).astype(np.float32),
        }
        offset += 1000
    return streams


@pytest.mark.parametrize("lengths", [(40,), (40, 7, 25, 12), (9, 60, 10, 33)])
@pytest.mark.parametrize("window", [1, 5, 10])
@pytest.mark.parametrize("first_start", [0, 3])
def test_batches_match_the_reference(lengths, window, first_start):
    streams = make_streams(lengths)
    sampler = WindowSampler(streams, window, batch_size=6, seed=11, first_start=first_start)
    for step in (0, 1, 7, 123):
        expected, candidates = reference(streams, window, 6, 11, step, first_start)
        got = sampler(step)
        assert set(got) == {"codes", "exo", "features"}
        assert got["codes"].shape == (6, window) and got["features"].shape == (6, window, 3)
        for name in got:
            np.testing.assert_array_equal(got[name], expected[name])
    assert sampler.windows == len(candidates)


def test_short_streams_give_no_window_and_first_start_skips_warm_up_rows():
    streams = make_streams((12, 4, 20))
    sampler = WindowSampler(streams, 5, batch_size=64, seed=0, first_start=2)
    # s0: starts 2..7 (6), s1: 4 rows, too short, s2: starts 2..15 (14)
    assert sampler.windows == 6 + 14
    starts = set()
    for step in range(20):
        first = sampler(step)["codes"][:, 0]
        starts |= set(first.tolist())
    stream, row = np.divmod(np.array(sorted(starts)), 1000)
    assert set(stream.tolist()) == {0, 2}  # never the stream too short for a window
    assert row.min() >= 2  # never a warm-up row
    assert np.all(row[stream == 0] <= 12 - 5) and np.all(row[stream == 2] <= 20 - 5)
    # the windows are consecutive rows of one stream
    codes = sampler(3)["codes"]
    np.testing.assert_array_equal(np.diff(codes, axis=1), 1)


def test_a_stream_exactly_one_window_long_has_one_window():
    sampler = WindowSampler(make_streams((8,)), 5, batch_size=3, seed=0, first_start=3)
    assert sampler.windows == 1
    np.testing.assert_array_equal(sampler(0)["codes"], np.tile(np.arange(3, 8), (3, 1)))


def test_no_stream_long_enough_names_the_window():
    with pytest.raises(ConfigError, match=r"model\.context_length: a window.*longer than every training stream \(longest 9\)"):
        WindowSampler(make_streams((9, 4)), 10, 2, 0, what="model.context_length: a window")
    # warm-up rows count against the stream
    with pytest.raises(ConfigError, match=r"longest 9, 5 of them warm-up"):
        WindowSampler(make_streams((9, 4)), 5, 2, 0, first_start=5)
    WindowSampler(make_streams((9, 4)), 5, 2, 0, first_start=4)  # 9 - 4 = 5 rows: one window
    with pytest.raises(ConfigError, match="longest 0"):
        WindowSampler({}, 3, 2, 0)


def test_arrays_of_one_stream_must_be_aligned():
    streams = make_streams((20, 20))
    streams["s1"]["exo"] = streams["s1"]["exo"][:-1]
    with pytest.raises(ValueError, match="stream 's1': arrays of different lengths"):
        WindowSampler(streams, 5, 2, 0)


def test_the_batch_depends_on_the_step_only():
    streams = make_streams((40, 25, 31))
    one = WindowSampler(streams, 6, batch_size=8, seed=5)
    forward = [one(step)["codes"] for step in range(10)]
    other = WindowSampler(streams, 6, batch_size=8, seed=5)  # a resumed run: a new sampler
    backward = [other(step)["codes"] for step in reversed(range(10))][::-1]
    for a, b in zip(forward, backward):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(one(4)["codes"], forward[4])  # called again, the same batch
    assert any(not np.array_equal(forward[0], f) for f in forward[1:])  # steps differ
    reseeded = WindowSampler(streams, 6, batch_size=8, seed=6)
    assert not np.array_equal(reseeded(0)["codes"], forward[0])  # the seed matters
