"""The built-in multi-asset dataset ``indices``: the five markets, one asset each, validated."""

import pandas as pd
import pytest

from chaosfm.data import DataError, builtin_names, datasets, describe, load

MARKETS = {"sp500": 5031, "nasdaq": 5031, "ndx": 2862, "n225": 2794, "jkse": 946}


@pytest.fixture(scope="module")
def indices():
    return load("indices")


def test_indices_holds_every_market_under_its_own_name(indices):
    assert dict(indices["asset"].value_counts()) == MARKETS
    assert indices.attrs["name"] == "indices" and indices.attrs["kind"] == "market"
    for name in MARKETS:
        part = indices[indices["asset"] == name].reset_index(drop=True)
        alone = load(name)
        pd.testing.assert_frame_equal(part[alone.columns], alone, check_like=False)


def test_indices_says_which_market_each_repair_came_from(indices):
    assert indices.attrs["repairs"] == [
        "n225: dropped 160 market-holiday rows the source marks null",
        "jkse: dropped 55 market-holiday rows the source marks null",
    ]
    assert set(describe(indices)["assets"]) == set(MARKETS)


def test_indices_is_listed_and_cannot_be_combined_with_its_own_parts():
    assert "indices" in builtin_names()
    listed = datasets().set_index("name")
    assert listed.loc["indices", "kind"] == "market"
    assert listed.loc["indices", "rows"] == sum(MARKETS.values())
    assert listed.loc["indices", "start"] == "1990-01-02" and listed.loc["indices", "end"] == "2018-12-31"
    with pytest.raises(DataError, match="more than one"):
        load("indices,sp500")
