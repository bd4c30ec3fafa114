"""``chaosfm stage {pretrain,midtrain,sft,rl}``: four training stages, each a run folder read by the next.

- *pretrain*: next-code prediction on the combined code stream of every asset of ``data``. Without
  a parent it is a whole ``chaosfm train`` run (tokenizer fitted up to the cutoff, then the model);
  with one (a ``chaosfm train`` run or a pretrain run) it continues training its model.
- *midtrain*: the same objective on one asset, from a pretrain run, at a lower learning rate
  (default: the parent's times :data:`LR_SCALE`).
- *sft*: from a midtrain (or pretrain) run: given ``context_len`` codes, predict the next
  ``horizon`` codes, teacher forced, the loss on the horizon only (:func:`horizon_loss`).
- *rl*: from an sft run: REINFORCE on sampled horizons with the batch-mean baseline and an exact KL
  penalty to the SFT model (:func:`rl_loss`); the reward per step goes to ``log.jsonl`` and
  ``reward_curve.png``.

Every stage folder is a complete code-model run (``tokenizer/``, ``codes.json``,
``model_config.json``, ``model.eqx``, ``metrics.json``, ``log.jsonl``, ``meta.json``), so
:class:`~chaosfm.evaluate.TokenForecaster` and the next stage load it. ``meta.json`` adds
``stage``, ``parent`` (path, stage and sha256 of its ``model.eqx``), ``tokenizer_sha256`` and
``stage_trained_through`` (what this stage's own updates saw); ``trained_through`` is the union
over the stage and all its ancestors, because the weights carry what every ancestor saw, so the
evaluator never calls a window fresh that an ancestor trained on.

Everything that can be checked is checked before the first step: the parent's files and hashes
(:func:`~chaosfm._artifacts.verify_run` names a damaged file), its stage kind (:data:`PARENTS`),
its tokenizer against ``tokenizer.path`` and against the kind of data asked for, the window
against the data.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from chaosfm._artifacts import atomic_write_bytes, nan_to_none, verify_run, write_json, write_yaml
from chaosfm._config import ConfigError, parse_config
from chaosfm.data import load, trained_through, trained_through_from_json
from chaosfm.train._codes import CONFIG_FILE, METRICS_FILE, MODEL_FILE, WindowSampler
from chaosfm.train._config import TrainConfig
from chaosfm.train._lineage import PARENTS, Parent, check_tokenizer, copy_parent_files, write_meta_for_stage
from chaosfm.train._loop import LOG_FILE, TrainResult
from chaosfm.train._tokenized import (
    DataSection,
    TokenizerSection,
    _fence,
    code_streams,
    exo_series,
    is_bins,
    parse_train_run_file,
    run_train_tokenized,
)

__all__ = ["LR_SCALE", "STAGES", "StageConfig", "StageData", "read_stage", "run_stage"]

STAGES = ("pretrain", "midtrain", "sft", "rl")
LR_SCALE = {"pretrain": 1.0, "midtrain": 0.1, "sft": 0.5, "rl": 0.1}
"""A stage's default learning rate is its parent's times this."""
REWARD_PLOT = "reward_curve.png"


class StageData(BaseModel):
    """``data:`` of a stage; a key left out is the parent's."""

    model_config = ConfigDict(extra="forbid")

    names: list[str] | None = Field(None, description="datasets (default: the parent's)")
    options: dict[str, Any] | None = Field(None, description="options for chaosfm.data.load")
    cutoff: str | float | None = Field(None, description="last timestamp this stage may train on")
    cutoff_fraction: float | None = Field(None, gt=0, lt=1)
    embargo: int | None = Field(None, ge=0, description="rows after the cutoff left out of held-out codes")


class StageConfig(BaseModel):
    """One stage. Every key is a flag of ``chaosfm stage`` (``parent`` is ``--in``)."""

    model_config = ConfigDict(extra="forbid")

    stage: Literal["pretrain", "midtrain", "sft", "rl"]
    parent: str | None = Field(None, description="run folder of the previous stage (--in)")
    data: StageData = Field(default_factory=StageData)
    tokenizer: TokenizerSection | None = Field(
        None, description="pretrain without a parent: the tokenizer to fit; otherwise a path that must be the parent's"
    )
    model: dict[str, Any] | None = Field(None, description="pretrain without a parent: the model section")
    train: dict[str, Any] = Field(default_factory=dict, description="TrainConfig keys (default: the parent's)")
    epochs: float | None = Field(None, gt=0, description="passes over the training windows; sets train.steps")
    context_len: int | None = Field(None, ge=1, description="sft/rl: context codes (default: model context - horizon)")
    horizon: int = Field(5, ge=1, description="sft/rl: codes predicted after each context")
    reward: Literal["token_accuracy", "return_mse"] = "token_accuracy"
    kl_coef: float = Field(0.05, ge=0, description="rl: weight of KL(policy || sft model)")
    samples: int = Field(8, ge=1, description="rl: horizons sampled per context")
    temperature: float = Field(1.0, gt=0, description="rl: sampling temperature of the policy")


def read_stage(path: str | os.PathLike[str] | None, overrides: dict[str, Any]) -> StageConfig:
    """A :class:`StageConfig` from an optional YAML file with ``overrides`` (dotted keys allowed) on top."""
    import yaml

    data: dict[str, Any] = {}
    source = "flags"
    if path is not None:
        file = Path(path)
        if not file.is_file():
            raise ConfigError(f"{file}: no such config file")
        data = yaml.safe_load(file.read_text()) or {}
        source = str(file)
    for key, value in overrides.items():
        if value is None:
            continue
        *sections, last = key.split(".")
        target = data
        for section in sections:
            if not isinstance(target.get(section), dict):
                target[section] = {}
            target = target[section]
        target[last] = value
    return parse_config(StageConfig, data, source)


def _resolve_train(config: StageConfig, parent: Parent | None) -> dict[str, Any]:
    inherited = dict((parent.config.get("train") if parent else None) or {})
    if parent is not None and "learning_rate" not in config.train and "learning_rate" in inherited:
        inherited["learning_rate"] = inherited["learning_rate"] * LR_SCALE[config.stage]
    if config.stage in ("sft", "rl"):
        if config.train.get("tbptt_segments", 1) != 1:
            raise ConfigError(f"train.tbptt_segments: {config.stage} reads whole windows; leave it at 1")
        inherited["tbptt_segments"] = 1
    if config.stage == "rl":
        inherited["log_every"] = 1  # the reward curve has a point per step unless train.log_every says otherwise
    resolved = {**inherited, **config.train}
    parse_config(TrainConfig, resolved, "train")  # a typo fails here, naming the key
    return resolved


def _data_section(config: StageConfig, parent: Parent) -> DataSection:
    inherited = dict(parent.config.get("data") or {})
    given = {k: v for k, v in config.data.model_dump().items() if v is not None}
    if "names" in given and "options" not in given:
        inherited.pop("options", None)  # load options belong to the parent's datasets
    if given.get("cutoff") is not None:
        inherited.pop("cutoff_fraction", None)
    merged = {**inherited, **given}
    if "names" not in merged:
        raise ConfigError(f"data.names: the parent {parent.path} records no data; name the datasets")
    return parse_config(DataSection, merged, "data")


def _per_code_returns(part: pd.DataFrame, ends: np.ndarray, patch: int) -> np.ndarray:
    """Log close return of each code's patch of candles (0 where the patch starts the series)."""
    log_close = np.log(part["close"].to_numpy(np.float64))
    before = ends - patch
    out = np.where(before >= 0, log_close[ends] - log_close[np.maximum(before, 0)], 0.0)
    return out.astype(np.float32)


def _stage_codes(parent: Parent, data: DataSection, frame: pd.DataFrame) -> dict[str, Any]:
    """Training and held-out codes (and exo, per-code returns) of ``frame`` with the parent's tokenizer."""
    from chaosfm.tokenizers import mean_abs_scale

    fence = _fence(frame, data)
    train_rows = frame.loc[fence.before(frame)].reset_index(drop=True)
    if len(train_rows) == 0:
        raise ConfigError(f"data.cutoff: no rows of {', '.join(data.names)} at or before the cutoff")
    columns = list(parent.layout["columns"])
    scales = None
    if is_bins(parent.tokenizer):
        scales = {
            str(a): mean_abs_scale(p[columns].to_numpy(np.float64)) for a, p in train_rows.groupby("asset", sort=False)
        }
    streams = code_streams(parent.tokenizer, frame, scales)
    parts = {str(a): p.reset_index(drop=True) for a, p in frame.groupby("asset", sort=False)}
    counts = {str(a): int(n) for a, n in train_rows.groupby("asset", sort=False).size().items()}
    out: dict[str, Any] = {name: {} for name in ("train", "valid", "exo_train", "exo_valid", "returns")}
    patch = int(parent.layout.get("patch") or 1)
    for asset, (codes, ends) in streams.items():
        seen = counts.get(asset, 0)
        exo = exo_series(parts[asset], ends, columns, parent.layout["exo"])
        is_train, is_valid = ends < seen, ends >= seen + data.embargo
        if is_train.any():
            out["train"][asset], out["exo_train"][asset] = codes[is_train], exo[is_train]
            if "close" in parts[asset].columns:
                out["returns"][asset] = _per_code_returns(parts[asset], ends, patch)[is_train]
        if is_valid.any():
            out["valid"][asset], out["exo_valid"][asset] = codes[is_valid], exo[is_valid]
    if not out["train"]:
        raise ConfigError("data.cutoff: no codes at or before the cutoff")
    out.update(train_rows=train_rows, scales=scales)
    return out


def run_stage(config: StageConfig, out_dir: str | os.PathLike[str], resume: bool = False) -> TrainResult:
    """Run one stage and write its run folder ``out_dir`` (see the module docstring).

    Raises:
        ConfigError, ArtifactError, DataError: before any training, naming the key, file or rule.
    """
    out = Path(out_dir)
    if config.stage == "pretrain" and config.parent is None:
        return _pretrain_from_scratch(config, out, resume)
    if config.parent is None:
        kinds = " or ".join(p for p in PARENTS[config.stage] if p)
        raise ConfigError(f"--in: {config.stage} needs the run folder of its parent stage ({kinds})")
    if config.model is not None or (config.tokenizer is not None and config.tokenizer.kind is not None):
        raise ConfigError(f"model/tokenizer.kind: a {config.stage} stage takes its parent's model and tokenizer")
    parent = Parent(config.parent, config.stage)
    if out.resolve() == parent.path.resolve():
        raise ConfigError(f"--out {out}: is the parent run itself; write the stage to a new folder")
    data = _data_section(config, parent)
    frame = load(",".join(data.names), **data.options)
    check_tokenizer(config.stage, config.tokenizer, parent, frame, data.names)
    codes = _stage_codes(parent, data, frame)
    if config.stage == "midtrain" and len(codes["train"]) != 1:
        raise ConfigError(
            f"data.names: midtrain trains on one asset; {', '.join(data.names)} holds "
            f"{len(codes['train'])} ({', '.join(codes['train'])})"
        )
    train_values = _resolve_train(config, parent)
    return _train_stage(config, out, resume, parent=parent, data=data, codes=codes, train_values=train_values)


def _pretrain_from_scratch(config: StageConfig, out: Path, resume: bool) -> TrainResult:
    if config.data.names is None:
        raise ConfigError("data.names: pretrain without --in fits a tokenizer and a model: name the datasets")
    if config.epochs is not None:
        raise ConfigError(
            "epochs: pretrain without --in cannot count windows before the tokenizer exists; give train.steps"
        )
    file = parse_train_run_file(
        {
            "data": {k: v for k, v in config.data.model_dump().items() if v is not None},
            "tokenizer": (config.tokenizer.model_dump() if config.tokenizer else DEFAULT_TOKENIZER),
            "model": config.model or DEFAULT_MODEL,
            "train": config.train,
        },
        "pretrain",
    )
    result = run_train_tokenized(file, out, resume=resume)
    meta = verify_run(out)
    own = trained_through_from_json(meta.get("trained_through"))
    upstream = trained_through_from_json(meta.get("upstream_trained_through"))
    write_meta_for_stage(out, config.stage, meta["seed"], own=own, parent=None, upstream=upstream)
    return result


def steps_for_epochs(epochs: float, windows: int, batch_size: int) -> int:
    """Updates that draw ``epochs`` times as many windows as there are window positions."""
    return max(1, math.ceil(epochs * windows / batch_size))


def stage_sampler(codes: dict[str, Any], window: int, batch_size: int, seed: int, *, exo: bool, returns: bool):
    """``batch_at(step)`` over training windows of ``window`` codes, with ``exo`` and per-code ``returns``."""
    base = WindowSampler(codes["train"], window, batch_size, seed, exo=codes["exo_train"] if exo else None)
    extra = WindowSampler(codes["train"], window, batch_size, seed, exo=codes["returns"]) if returns else None

    def batch_at(step: int) -> dict[str, np.ndarray]:
        batch = base(step)
        if extra is not None:
            batch["returns"] = extra(step)["exo"]  # same seed and starts: the same windows
        return batch

    batch_at.windows = int(base.starts.size)  # type: ignore[attr-defined]
    return batch_at


DEFAULT_TOKENIZER = {"kind": "fsq", "options": {"levels": [4, 4, 4]}, "steps": 600, "seed": 0}
DEFAULT_MODEL = {"kind": "gpt", "size": "tiny", "d_model": 32, "n_layers": 2, "context_length": 64}
"""Pretrain without a config's tokenizer or model: as ``configs/gpt-tiny.yaml``."""


def _train_stage(
    config: StageConfig,
    out: Path,
    resume: bool,
    *,
    parent: Parent,
    data: DataSection,
    codes: dict[str, Any],
    train_values: dict[str, Any],
) -> TrainResult:
    import jax
    from jax.sharding import Mesh

    from chaosfm.train._codes import _serialise, code_loss
    from chaosfm.train._evaluate import evaluate_codes
    from chaosfm.train._loop import train
    from chaosfm.train._reinforce import candle_return_decoder, horizon_loss, reward_plot, rl_loss

    model = parent.model
    context_length = int(model.config.context_length)
    horizon = config.horizon
    context = None
    if config.stage in ("pretrain", "midtrain"):
        window = context_length * int(train_values.get("tbptt_segments", 1)) + 1
    else:
        context = config.context_len or context_length - horizon
        if context < 1:
            raise ConfigError(
                f"horizon: {horizon} leaves no context in the model's {context_length} codes; set context_len"
            )
        window = context + horizon
    longest = max(np.asarray(c).size for c in codes["train"].values())
    if longest < window:
        raise ConfigError(
            f"context_len/horizon: a {config.stage} window needs {window} codes, "
            f"the longest training stream has {longest}"
        )
    decode = None
    rewarded_returns = config.stage == "rl" and config.reward == "return_mse"
    if rewarded_returns:
        decode = candle_return_decoder(parent.tokenizer)
    train_config = parse_config(TrainConfig, train_values, "train")
    batch_at = stage_sampler(
        codes, window, train_config.batch_size, train_config.seed, exo=model.uses_exo, returns=rewarded_returns
    )
    if config.epochs is not None:
        steps = steps_for_epochs(config.epochs, batch_at.windows, train_config.batch_size)
        train_config = train_config.model_copy(update={"steps": steps})
    if config.stage == "rl" and train_config.batch_size * config.samples < 2:
        raise ConfigError("samples: the batch-mean baseline needs batch_size * samples >= 2")
    if train_config.devices is not None:
        if train_config.devices > len(jax.devices()) or train_config.batch_size % train_config.devices:
            raise ConfigError(
                f"train.devices: {train_config.devices} does not fit {len(jax.devices())} device(s) and batch_size"
            )

    if config.stage in ("pretrain", "midtrain"):
        segments = train_config.tbptt_segments

        def loss_fn(m, batch, key):
            return code_loss(m, batch, key, segments=segments)
    elif config.stage == "sft":

        def loss_fn(m, batch, key):
            return horizon_loss(m, batch, key, horizon=horizon)
    else:
        reference = parent.model

        def loss_fn(m, batch, key):
            return rl_loss(
                m, batch, key, reference=reference, horizon=horizon, samples=config.samples, reward=config.reward,
                kl_coef=config.kl_coef, temperature=config.temperature, decode_returns=decode,
            )

    copy_parent_files(parent, out, codes["scales"])
    resolved = config.model_dump(mode="json")
    resolved.update(
        parent=str(parent.path), data=data.model_dump(mode="json"), train=train_config.model_dump(mode="json"),
        context_len=context,
    )
    write_yaml(out / CONFIG_FILE, resolved)
    mesh = None if train_config.devices is None else Mesh(np.asarray(jax.devices()[: train_config.devices]), ("data",))
    result = train(
        model, loss_fn, batch_at, train_config, out, resume=resume, mesh=mesh,
        tokens_per_step=train_config.batch_size * (window - 1), description=f"{config.stage} {model.kind}",
    )
    atomic_write_bytes(out / MODEL_FILE, _serialise(result.model))
    metrics: dict[str, Any] = {
        "stage": config.stage,
        "parent": str(parent.path),
        "steps": result.step,
        "final_train_loss": result.history[-1]["loss"] if result.history else None,
        "data": list(data.names),
        "codes": {name: int(sum(np.asarray(c).size for c in codes[name].values())) for name in ("train", "valid")},
    }
    if codes["valid"]:
        uses_exo = model.uses_exo
        heldout = evaluate_codes(
            result.model, codes["valid"], train=codes["train"],
            exo=codes["exo_valid"] if uses_exo else None, exo_train=codes["exo_train"] if uses_exo else None,
            segment_length=train_config.eval_segment,
        )
        metrics["heldout"] = nan_to_none(heldout)
    if config.stage == "rl":
        rewards = [e["reward_mean"] for e in result.history if "reward_mean" in e]
        # One batch's reward depends on how predictable its contexts are; means of 10 steps compare better.
        metrics["reward"] = {
            "kind": config.reward,
            "logged_steps": len(rewards),
            "first": rewards[0] if rewards else None,
            "last": rewards[-1] if rewards else None,
            "first_10_mean": float(np.mean(rewards[:10])) if rewards else None,
            "last_10_mean": float(np.mean(rewards[-10:])) if rewards else None,
        }
        if reward_plot(out / LOG_FILE, out / REWARD_PLOT):
            metrics["reward"]["plot"] = REWARD_PLOT
    write_json(out / METRICS_FILE, metrics)
    own = trained_through(codes["train_rows"])
    upstream = parent.tokenizer.trained_through
    write_meta_for_stage(out, config.stage, train_config.seed, own=own, parent=parent, upstream=upstream)
    result.metrics = metrics
    return result
