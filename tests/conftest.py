"""Shared test setup: strict JAX, quiet progress bars, explicit keys."""

import os
import tempfile

os.environ.setdefault("CHAOSFM_PROGRESS", "0")
# A stream or tune run may turn on JAX's persistent compilation cache; a test session gets an
# empty one of its own (also inherited by CLI subprocesses), never the user's: suite times stay
# those of a fresh machine and tests cannot read executables another run left behind.
os.environ.setdefault("CHAOSFM_CACHE_DIR", tempfile.mkdtemp(prefix="chaosfm-test-cache-"))
os.environ.setdefault("CHAOSFM_CONFIG_DIR", tempfile.mkdtemp(prefix="chaosfm-test-config-"))  # the export key
os.environ.setdefault("CHAOSFM_QUIET", "1")
# LLVM's level 1 (--xla_backend_optimization_level=1) was tried for the suite and taken out: it cut
# compile-bound files by a third but CI's whole suite got slower (docs/development.md).

import jax  # noqa: E402
import pytest  # noqa: E402

# Implicit rank promotion hides shape bugs; make it an error in every test.
jax.config.update("jax_numpy_rank_promotion", "raise")


@pytest.fixture
def key():
    """A fresh PRNG key; tests split it explicitly."""
    return jax.random.key(0)


TINY_JEPA_MODEL = dict(context_length=16, d_model=16, n_layers=1, d_state=8, head_dim=8, d_embed=8, d_pred=8,
                       min_future=4, max_future=8, min_span=2, max_span=4, cfm_horizon=3, cfm_steps=2)
TINY_JEPA_TRAIN = dict(steps=3, batch_size=4, warmup_steps=0, checkpoint_every=3, log_every=1)


@pytest.fixture(scope="session")
def tiny_jepa_run(tmp_path_factory):
    """A tiny JEPA+CFM pretrained on sp500 2005-2006 (cutoff 2006-06-30): ``(run, frame, metrics)``,
    shared by the tests of what reads a pretrained encoder."""
    from chaosfm.data import load
    from chaosfm.jobs import pretrain

    frame = load("sp500")
    frame = frame[(frame["timestamp"] >= "2005-01-01") & (frame["timestamp"] <= "2006-12-31")].reset_index(drop=True)
    run = tmp_path_factory.mktemp("jepa") / "run"
    config = pretrain.PretrainConfig.model_validate(
        {"data": {"names": ["sp500"], "cutoff": "2006-06-30"}, "model": {**TINY_JEPA_MODEL, "cfm_weight": 1.0},
         "train": TINY_JEPA_TRAIN, "out": str(run)}
    )
    metrics = pretrain.run(config, frame=frame)
    return run, frame, metrics
