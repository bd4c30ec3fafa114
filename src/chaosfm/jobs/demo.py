"""``chaosfm demo``: every baseline, tiny code models (and, in full, a tiny JEPA+CFM) on ``sp500``
and ``lorenz63``, under the leakage protocol.

The code models are the shipped configs (``configs/lorenz-*.yaml``, ``configs/gpt-tiny.yaml``,
``configs/mamba-tiny.yaml``), each fenced at the demo's cutoff; the evaluation is
``chaosfm evaluate``'s, on the demo's datasets and protocols.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from chaosfm._artifacts import nan_to_none, write_json
from chaosfm.evaluate import Protocol
from chaosfm.jobs import evaluate as evaluate_job
from chaosfm.jobs import pretrain as pretrain_job
from chaosfm.jobs import train as train_job
from chaosfm.jobs._common import finish_run, out_field
from chaosfm.jobs.evaluate import DatasetSpec, EvaluateConfig
from chaosfm.jobs.pretrain import PretrainConfig
from chaosfm.jobs.train import TokenizerSection, parse_train_run_file
from chaosfm.train import TOKENIZER_DIR

__all__ = ["FLAGS", "DemoConfig", "demo_config", "demo_jepa_config", "demo_train_files", "run"]

FLAGS: dict[str, str] = {}
"""CLI flag -> config key."""

DEMO_SEED = 0
"""The demo's one seed: every model's ``train.seed`` and the evaluation's."""


class DemoConfig(BaseModel):
    """``chaosfm demo``."""

    model_config = ConfigDict(extra="forbid")

    out: Path = out_field("demo")
    fast: bool = Field(False, description="fewer windows, samples and steps: under 3 minutes on 2 cores")
    models: bool = Field(True, description="train the code models (False: baselines only)")


def demo_config(out: Path = Path("runs/demo"), fast: bool = False, runs: dict[str, list[str]] | None = None) -> EvaluateConfig:
    """The main job: every baseline on ``sp500`` and ``lorenz63`` under the leakage protocol.

    ``fast`` scores fewer windows with fewer samples and a shorter trajectory (under 3 minutes on
    two CPU cores); the full demo takes longer and its intervals are tighter. ``runs`` maps a
    dataset name to run folders of ``chaosfm train`` scored beside the baselines on it.
    """
    runs = runs or {}
    market = Protocol(
        horizon=5,
        num_samples=64 if fast else 200,
        context_length=750,
        min_context=500,
        step=20 if fast else 5,
        embargo=5,
    )
    chaos = Protocol(
        horizon=150,
        num_samples=16 if fast else 32,
        context_length=3000,
        min_context=2000,
        step=150 if fast else 50,
        embargo=150,
        max_windows=None,
    )
    return EvaluateConfig(
        datasets=[
            DatasetSpec(name="sp500", cutoff=DEMO_MARKET_CUTOFF, protocol=market, runs=runs.get("sp500", [])),
            DatasetSpec(
                name="lorenz63",
                options=_demo_lorenz_options(fast),
                protocol=chaos,
                runs=runs.get("lorenz63", []),
            ),
        ],
        cutoff_fraction=DEMO_CUTOFF_FRACTION,
        out=out,
        title="chaosfm demo: baselines and tiny code models under the leakage protocol",
    )


DEMO_MARKET_CUTOFF = "2014-12-31"
DEMO_CUTOFF_FRACTION = 0.5


def _demo_lorenz_options(fast: bool) -> dict[str, Any]:
    return {"length": 7000 if fast else 12000}


def demo_train_files(fast: bool = False) -> dict[str, tuple[str, Any]]:
    """The demo's code models: run name -> (dataset it is scored on, its ``chaosfm train`` file).

    A tiny GPT and a tiny Mamba-2 over bins of the Lorenz-63 trajectory as in
    ``configs/lorenz-gpt.yaml`` / ``configs/lorenz-mamba.yaml``, and (not when ``fast``, to keep it
    under 3 minutes) over FSQ codes of the S&P 500 candles as in ``configs/gpt-tiny.yaml`` /
    ``configs/mamba-tiny.yaml``. Each is fenced at the demo's cutoff, so the evaluation's fresh
    windows are fresh for it too. The Mamba reuses the GPT's tokenizer (``tokenizer.path``).
    """
    loop = {"batch_size": 16, "checkpoint_every": 1000, "log_every": 25, "seed": DEMO_SEED}
    market = {
        "data": {"names": ["sp500"], "cutoff": DEMO_MARKET_CUTOFF, "embargo": 5},
        "tokenizer": {"kind": "fsq", "options": {"levels": [4, 4, 4]}, "steps": 300 if fast else 600},
        "model": {"size": "tiny", "d_model": 32, "n_layers": 2, "context_length": 64},
        # ~4000 training codes: longer runs memorise them and lose held-out perplexity.
        "train": {**loop, "steps": 150, "learning_rate": 0.002, "warmup_steps": 30, "weight_decay": 0.1},
    }
    chaos = {
        "data": {
            "names": ["lorenz63"],
            "options": _demo_lorenz_options(fast),
            "cutoff_fraction": DEMO_CUTOFF_FRACTION,
            "embargo": 50,
        },
        "tokenizer": {"kind": "bins", "options": {"kind": "quantile", "vocab_size": 130, "context_length": 512}},
        "model": {"size": "tiny", "d_model": 64, "n_layers": 2, "context_length": 96},
        "train": {**loop, "steps": 250 if fast else 600, "learning_rate": 0.003, "warmup_steps": 50},
    }
    files = {}
    chosen = [("lorenz63", "lorenz", chaos)] if fast else [("sp500", "sp500", market), ("lorenz63", "lorenz", chaos)]
    for dataset, prefix, base in chosen:
        for kind in ("gpt", "mamba"):
            model = {**base["model"], "kind": kind}
            if kind == "mamba" and dataset == "sp500":
                model["exo_clock"] = True  # realized volatility modulates dt, as in mamba-tiny.yaml
            data = {**base, "model": model}
            files[f"{prefix}-{kind}"] = (dataset, parse_train_run_file(data, f"demo {prefix}-{kind}"))
    return files


def demo_jepa_config(out: Path | None = None) -> PretrainConfig:
    """The demo's JEPA+CFM: ``configs/jepa-tiny.yaml`` on sp500 alone, fenced at the demo's cutoff."""
    return PretrainConfig.model_validate({
        **({} if out is None else {"out": str(out)}),
        "data": {"names": ["sp500"], "cutoff": DEMO_MARKET_CUTOFF, "embargo": 5},
        "model": {"context_length": 64, "d_model": 32, "n_layers": 2, "d_embed": 32, "d_pred": 16,
                  "cfm_weight": 1.0, "cfm_horizon": 5},
        "train": {"steps": 300, "batch_size": 16, "learning_rate": 0.002, "warmup_steps": 30,
                  "checkpoint_every": 300, "log_every": 25, "seed": DEMO_SEED},
    })


def run(config: DemoConfig) -> dict[str, Any]:
    """Train the demo's code models (unless ``config.models`` is False), then run the evaluation.

    See :func:`demo_config` and :func:`demo_train_files`; the trained runs go to ``out/models``
    (``out/models-fast`` with ``fast``). A run already there is resumed, so a second demo in the
    same folder reuses finished models. Returns the evaluation's metrics, with each run's held-out
    perplexity under ``code_models``.
    """
    out, fast = Path(config.out), config.fast
    runs: dict[str, list[str]] = {}
    trained: dict[str, Any] = {}
    if config.models:
        shared: dict[str, Path] = {}  # dataset -> the tokenizer its first model fitted
        for name, (dataset, file) in demo_train_files(fast).items():
            run_dir = out / ("models-fast" if fast else "models") / name
            update: dict[str, Any] = {"out": run_dir, "resume": (run_dir / "config.yaml").is_file()}
            if dataset in shared:
                update["tokenizer"] = TokenizerSection(path=str(shared[dataset]))
            metrics = train_job.run(file.model_copy(update=update))
            shared.setdefault(dataset, run_dir / TOKENIZER_DIR)
            runs.setdefault(dataset, []).append(str(run_dir))
            trained[name] = {"dataset": dataset, "heldout": metrics.get("heldout")}
        if not fast:  # the tiny JEPA+CFM row (configs/jepa-tiny.yaml, fenced at the demo's cutoff)
            run_dir = out / "models" / "sp500-jepa-cfm"
            if not (run_dir / "meta.json").is_file():
                jepa = demo_jepa_config(run_dir).model_copy(update={"resume": (run_dir / "config.yaml").is_file()})
                pretrain_job.run(jepa)
            runs.setdefault("sp500", []).append(str(run_dir))
    metrics = evaluate_job.run(demo_config(out, fast, runs))
    if trained:
        metrics["code_models"] = nan_to_none(trained)
        write_json(out / "metrics.json", metrics)
        # metrics.json changed: meta.json is written again over the evaluation's record.
        seen = json.loads((out / "meta.json").read_text()).get("trained_through")
        finish_run(out, seed=DEMO_SEED, trained_through=seen)
    return metrics
