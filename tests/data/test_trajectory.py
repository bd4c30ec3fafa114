"""A user's own trajectory: ``to_trajectory_frame`` on Nixtla and Chronos frames, ``time_step``
from the timestamps, and the exponent and dt read beside a file by ``load``."""

import json

import numpy as np
import pandas as pd
import pytest

from chaosfm.data import DataError, MissingColumnError, NonFiniteError, NonNumericError, load, time_step
from chaosfm.data import to_trajectory_frame


def test_a_chronos_wide_frame_becomes_x0_x1_with_its_channel_names_kept():
    chronos = pd.DataFrame({
        "item_id": ["b"] * 3 + ["a"] * 3,
        "timestamp": pd.date_range("2024-01-01", periods=3, freq="h").tolist() * 2,
        "target_0": [1.0, 2.0, 3.0, 10.0, 20.0, 30.0],
        "target_1": [4.0, 5.0, 6.0, 40.0, 50.0, 60.0],
    })
    frame = to_trajectory_frame(chronos, asset="item_id")
    assert list(frame.columns) == ["asset", "timestamp", "x0", "x1"]
    assert frame.attrs["channels"] == {"x0": "target_0", "x1": "target_1"}
    b = frame[frame["asset"] == "b"]
    assert b["x0"].tolist() == [1.0, 2.0, 3.0] and b["x1"].tolist() == [4.0, 5.0, 6.0]
    assert b["timestamp"].tolist() == chronos["timestamp"].iloc[:3].tolist()
    # columns picks the channels and their order
    swapped = to_trajectory_frame(chronos, asset="item_id", columns=["target_1", "target_0"])
    assert swapped.attrs["channels"] == {"x0": "target_1", "x1": "target_0"}
    assert swapped.loc[swapped["asset"] == "a", "x0"].tolist() == [40.0, 50.0, 60.0]
    # any named columns, one system
    named = to_trajectory_frame(pd.DataFrame({"t": [0.0, 0.5, 1.0], "u": [1, 2, 3], "v": [3, 2, 1]}), timestamp="t",
                                name="pendulum")
    assert named["asset"].unique().tolist() == ["pendulum"] and named["x1"].tolist() == [3.0, 2.0, 1.0]


def test_a_nixtla_long_frame_is_pivoted_one_unique_id_per_channel():
    ds = [0, 1, 2, 3]
    nixtla = pd.DataFrame({
        "unique_id": ["z"] * 4 + ["x"] * 4 + ["y"] * 4,
        "ds": ds * 3,
        "y": [0.5, 0.6, 0.7, 0.8, 1.0, 1.1, 1.2, 1.3, 2.0, 2.1, 2.2, 2.3],
    }).sample(frac=1.0, random_state=0)  # row order must not matter
    frame = to_trajectory_frame(nixtla, timestamp="ds", channel="unique_id", value="y", name="lorenz")
    order = list(dict.fromkeys(nixtla["unique_id"]))  # first appearance
    assert frame.attrs["channels"] == {f"x{i}": c for i, c in enumerate(order)}
    assert frame["timestamp"].tolist() == ds and set(frame["asset"]) == {"lorenz"}
    for column, original in frame.attrs["channels"].items():
        expected = nixtla[nixtla["unique_id"] == original].sort_values("ds")["y"].tolist()
        assert frame[column].tolist() == expected
    chosen = to_trajectory_frame(nixtla, timestamp="ds", channel="unique_id", value="y", columns=["x", "y"])
    assert chosen.attrs["channels"] == {"x0": "x", "x1": "y"} and chosen["x1"].tolist() == [2.0, 2.1, 2.2, 2.3]
    # several systems in one long frame: their column is the asset
    two = pd.concat([nixtla.assign(system="s1"), nixtla.assign(system="s2", y=nixtla["y"] * 10)])
    both = to_trajectory_frame(two, timestamp="ds", channel="unique_id", value="y", asset="system",
                               columns=["x", "y", "z"])
    assert both.groupby("asset").size().to_dict() == {"s1": 4, "s2": 4}
    assert both.loc[both["asset"] == "s2", "x2"].tolist() == [5.0, 6.0, 7.0, 8.0]


def test_errors_name_the_column_and_the_rule():
    nixtla = pd.DataFrame({"unique_id": ["a", "a", "b", "b"], "ds": [0, 1, 0, 1], "y": [1.0, 2.0, 3.0, 4.0]})
    long = {"timestamp": "ds", "channel": "unique_id", "value": "y"}
    with pytest.raises(MissingColumnError, match="column 'time'"):
        to_trajectory_frame(nixtla, timestamp="time", channel="unique_id", value="y")
    with pytest.raises(MissingColumnError, match=r"'b' has no value at 1.*every channel at every time step"):
        to_trajectory_frame(nixtla.drop(index=3), **long)
    with pytest.raises(DataError, match=r"second value.*one value per channel and time step"):
        to_trajectory_frame(pd.concat([nixtla, nixtla.iloc[[0]]]), **long)
    with pytest.raises(NonNumericError, match=r"row 2, column 'y': 'oops' is not a number"):
        to_trajectory_frame(nixtla.astype({"y": object}).assign(y=[1.0, 2.0, "oops", 4.0]), **long)
    with pytest.raises(DataError, match="channel and value together"):
        to_trajectory_frame(nixtla, timestamp="ds", channel="unique_id")
    chronos = pd.DataFrame({"item_id": ["a", "a"], "timestamp": [0, 1], "target_0": [1.0, np.nan]})
    with pytest.raises(NonFiniteError, match=r"row 1, column 'target_0'"):
        to_trajectory_frame(chronos, asset="item_id")
    with pytest.raises(NonNumericError, match="column 'item_id'.*asset="):  # an id column not named as the asset
        to_trajectory_frame(chronos.fillna(2.0))
    with pytest.raises(MissingColumnError, match="column 'target_9'"):
        to_trajectory_frame(chronos, asset="item_id", columns=["target_9"])


def test_time_step_reads_evenly_spaced_numbers_and_refuses_the_rest():
    frame = pd.DataFrame({"asset": "a", "timestamp": 0.02 * np.arange(50), "x0": 1.0})
    assert time_step(frame) == 0.02
    rounded = frame.assign(timestamp=np.round(np.arange(50) / 30, 4))  # dt = 1/30 written to 4 decimals
    assert time_step(rounded) == pytest.approx(1 / 30, rel=1e-4)
    gap = frame.drop(index=20).reset_index(drop=True)
    with pytest.raises(DataError, match=r"row 20, column 'timestamp': timestamps are not evenly spaced"):
        time_step(gap)
    dates = frame.assign(timestamp=pd.date_range("2024-01-01", periods=50, freq="min"))
    with pytest.raises(DataError, match="dates"):
        time_step(dates)


def _trajectory(path, n=40):
    t = 0.1 * np.arange(n)
    pd.DataFrame({"timestamp": t, "x0": np.sin(t), "x1": np.cos(t)}).to_csv(path, index=False)
    return path


def test_load_reads_the_sidecar_and_a_parquet_files_own_attrs(tmp_path):
    csv = _trajectory(tmp_path / "traj.csv")
    assert "lyapunov_exponent" not in load(csv).attrs
    (tmp_path / "traj.json").write_text(json.dumps({"lyapunov_exponent": 0.9056, "dt": 0.1}))
    attrs = load(csv).attrs
    assert (attrs["lyapunov_exponent"], attrs["dt"]) == (0.9056, 0.1)
    # pandas keeps a frame's attrs in a Parquet file; the sidecar wins key by key
    frame = pd.read_csv(csv)
    frame.attrs = {"lyapunov_exponent": 1.5, "dt": 0.1}
    frame.to_parquet(tmp_path / "own.parquet")
    assert load(tmp_path / "own.parquet").attrs["lyapunov_exponent"] == 1.5
    (tmp_path / "own.json").write_text(json.dumps({"lyapunov_exponent": 0.5}))
    attrs = load(tmp_path / "own.parquet").attrs
    assert (attrs["lyapunov_exponent"], attrs["dt"]) == (0.5, 0.1)


@pytest.mark.parametrize("sidecar, words", [
    ({"lyapunov_exponent": -0.9}, ["traj.json", "lyapunov_exponent must be a positive, finite number", "-0.9"]),
    ({"dt": 0}, ["dt must be a positive", "dt > 0 and finite"]),
    ({"dt": "0.02"}, ["dt must be a positive", "'0.02'"]),
    ({"lyapunov": 0.9}, ["unknown key(s) ['lyapunov']", "allowed: lyapunov_exponent, dt"]),
    ([0.9, 0.02], ["must be a JSON object"]),
])
def test_a_bad_sidecar_is_an_error_naming_the_file_and_the_key(tmp_path, sidecar, words):
    csv = _trajectory(tmp_path / "traj.csv")
    (tmp_path / "traj.json").write_text(json.dumps(sidecar))
    with pytest.raises(DataError) as error:
        load(csv)
    assert all(word in str(error.value) for word in words), str(error.value)
