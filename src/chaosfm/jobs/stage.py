"""``chaosfm stage {pretrain,midtrain,sft,rl}``: four training stages, each a run folder read by the next.

- *pretrain*: next-code prediction on the combined code stream of every asset of ``data``. Without
  a parent it is a whole ``chaosfm train`` run (tokenizer fitted up to the cutoff, then the model);
  with one (a ``chaosfm train`` run or a pretrain run) it continues training its model.
- *midtrain*: the same objective on one asset, from a pretrain run, at a lower learning rate
  (default: the parent's times the stage's ``lr_scale``).
- *sft*: from a midtrain (or pretrain) run: given ``context_len`` codes, predict the next
  ``horizon`` codes, teacher forced, the loss on the horizon only.
- *rl*: from an sft run: REINFORCE on sampled horizons with the batch-mean baseline and an exact KL
  penalty to the SFT model; the reward per step goes to ``log.jsonl`` and ``reward_curve.png``.

What differs between stages is asked of the stage objects of :data:`chaosfm.train.STAGES`.

Every stage folder is a complete code-model run (``tokenizer/``, ``codes.json``,
``model_config.json``, ``model.eqx``, ``metrics.json``, ``log.jsonl``, ``meta.json``), so
:class:`~chaosfm.forecasters.TokenForecaster` and the next stage load it. ``meta.json`` adds
``stage``, ``parent`` (path, stage and sha256 of its ``model.eqx``), ``tokenizer_sha256`` and
``stage_trained_through`` (what this stage's own updates saw); ``trained_through`` is the union
over the stage and all its ancestors, because the weights carry what every ancestor saw, so the
evaluator never calls a window fresh that an ancestor trained on.

Everything that can be checked is checked before the first step: the parent's files and hashes
(a damaged file is named), its stage kind, its tokenizer against ``tokenizer.path`` and against
the kind of data asked for, the window against the data.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from chaosfm._artifacts import atomic_write_bytes, nan_to_none, verify_run, write_json
from chaosfm._config import ConfigError, parse_config, read_config
from chaosfm.data import trained_through, trained_through_from_json
from chaosfm.jobs import train as train_job
from chaosfm._progress import say
from chaosfm.jobs._common import ReadOptions, default_out, load_data, resolve_fence, write_config, write_loss_plot
from chaosfm.jobs._lineage import Parent, check_tokenizer, copy_parent_files, write_meta_for_stage
from chaosfm.report import reward_curve
from chaosfm.train import (
    LOG_FILE,
    METRICS_FILE,
    MODEL_FILE,
    STAGES,
    AbstractStage,
    StageSettings,
    TrainConfig,
    WindowSampler,
    data_mesh,
    evaluate_codes,
    hold_out,
    serialise,
    train,
)

__all__ = ["FLAGS", "StageConfig", "StageData", "read", "run"]

REWARD_PLOT = "reward_curve.png"
FLAGS = {"data": "data.names", "cutoff": "data.cutoff", "embargo": "data.embargo", "seed": "train.seed",
         "steps": "train.steps", "lr": "train.learning_rate", "batch_size": "train.batch_size",
         "context_length": "context_len", "num_samples": "samples",
         **{key: f"data.{key}" for key in ReadOptions.model_fields}}
"""CLI flag -> config key."""


class StageData(ReadOptions):
    """``data:`` of a stage; a key left out is the parent's."""

    model_config = ConfigDict(extra="forbid")

    names: list[str] | None = Field(None, description="datasets (default: the parent's)")
    options: dict[str, Any] | None = Field(None, description="options for chaosfm.data.load")
    cutoff: str | float | dict[str, str | float] | None = Field(None, description="last timestamp this stage may train on")
    cutoff_fraction: float | None = Field(None, gt=0, lt=1)
    embargo: int | None = Field(None, ge=0, description="rows after the cutoff left out of held-out codes")


class StageConfig(BaseModel):
    """One stage. Every key is a flag of ``chaosfm stage`` (``parent`` is ``--in``)."""

    model_config = ConfigDict(extra="forbid")

    stage: Literal["pretrain", "midtrain", "sft", "rl"]
    parent: str | None = Field(None, description="run folder of the previous stage (--in)")
    data: StageData = Field(default_factory=StageData)
    tokenizer: train_job.TokenizerSection | None = Field(
        None, description="pretrain without a parent: the tokenizer to fit; otherwise a path that must be the parent's"
    )
    model: dict[str, Any] | None = Field(None, description="pretrain without a parent: the model section")
    train: dict[str, Any] = Field(default_factory=dict, description="TrainConfig keys (default: the parent's)")
    epochs: float | None = Field(None, gt=0, description="passes over the training windows; sets train.steps")
    context_len: int | None = Field(None, ge=1, description="sft/rl: context codes (default: model context - horizon)")
    horizon: int = Field(5, ge=1, description="sft/rl: codes predicted after each context")
    reward: Literal["token_accuracy", "return_mse", "pnl", "sharpe"] = Field(
        "token_accuracy", description="rl: token_accuracy, return_mse, or the trading rewards pnl and sharpe")
    kl_coef: float = Field(0.05, ge=0, description="rl: weight of KL(policy || sft model)")
    samples: int = Field(8, ge=1, description="rl: horizons sampled per context")
    temperature: float = Field(1.0, gt=0, description="rl: sampling temperature of the policy")
    out: Path = Field(default_factory=lambda data: default_out(f"stage-{data.get('stage', 'run')}"),
                      description="the run folder (--out; default: runs/stage-STAGE-YYYYmmdd-HHMMSS)")
    resume: bool = Field(False, description="continue from the run folder's newest checkpoint (--resume)")

    @property
    def settings(self) -> StageSettings:
        return StageSettings(
            horizon=self.horizon, context_len=self.context_len, reward=self.reward, kl_coef=self.kl_coef,
            samples=self.samples, temperature=self.temperature,
        )


def read(path: str | os.PathLike[str] | None, overrides: dict[str, Any] | None = None) -> StageConfig:
    """A :class:`StageConfig` from an optional YAML file with ``overrides`` (dotted keys allowed) on top."""
    return read_config(StageConfig, path, overrides)


def _resolve_train(stage: AbstractStage, config: StageConfig, parent: Parent) -> dict[str, Any]:
    inherited = dict(parent.config.get("train") or {})
    if "learning_rate" not in config.train and "learning_rate" in inherited:
        inherited["learning_rate"] = inherited["learning_rate"] * stage.lr_scale
    inherited.update(stage.train_defaults(config.train))
    resolved = {**inherited, **config.train}
    parse_config(TrainConfig, resolved, "train")  # a typo fails here, naming the key
    return resolved


def _data_section(config: StageConfig, parent: Parent) -> train_job.DataSection:
    inherited = dict(parent.config.get("data") or {})
    given = {k: v for k, v in config.data.model_dump(exclude_unset=True).items() if v is not None}
    if "names" in given:  # load and read options belong to the parent's datasets
        for key in ("options", *ReadOptions.model_fields):
            if key not in given:
                inherited.pop(key, None)
    if given.get("cutoff") is not None:
        inherited.pop("cutoff_fraction", None)
    merged = {**inherited, **given}
    if "names" not in merged:
        raise ConfigError(f"data.names: the parent {parent.path} records no data; name the datasets")
    return parse_config(train_job.DataSection, merged, "data")


def _per_code_returns(part: pd.DataFrame, ends: np.ndarray, patch: int) -> np.ndarray:
    """Log close return of each code's patch of candles (0 where the patch starts the series)."""
    log_close = np.log(part["close"].to_numpy(np.float64))
    before = ends - patch
    out = np.where(before >= 0, log_close[ends] - log_close[np.maximum(before, 0)], 0.0)
    return out.astype(np.float32)


def run(config: StageConfig) -> dict[str, Any]:
    """Run one stage and write its run folder ``config.out`` (see the module docstring); return
    ``metrics.json``.

    Raises:
        ConfigError, ArtifactError, DataError: before any training, naming the key, file or rule.
    """
    out = Path(config.out)
    stage = STAGES[config.stage]
    if config.parent is None:
        if stage.from_scratch:
            return _from_scratch(stage, config, out)
        kinds = " or ".join(p for p in stage.parents if p)
        raise ConfigError(f"--in: {stage.name} needs the run folder of its parent stage ({kinds})")
    if config.model is not None or (config.tokenizer is not None and config.tokenizer.kind is not None):
        raise ConfigError(f"model/tokenizer.kind: a {stage.name} stage takes its parent's model and tokenizer")
    parent = Parent(config.parent, stage)
    if out.resolve() == parent.path.resolve():
        raise ConfigError(f"--out {out}: is the parent run itself; write the stage to a new folder")
    data = _data_section(config, parent)
    frame = load_data(data.names, data.options, data)
    check_tokenizer(stage, config.tokenizer, parent, frame, data.names)
    fence = resolve_fence(frame, data.cutoff, data.cutoff_fraction, data.embargo, key="data.cutoff")
    train_rows = fence.train(frame)
    codes, layout, ends = train_job.code_data(parent.tokenizer, frame, train_rows, data.embargo, data.vol_window,
                                              layout=parent.layout)
    if stage.single_asset and len(codes.train) != 1:
        raise ConfigError(
            f"data.names: {stage.name} trains on one asset; {', '.join(data.names)} holds "
            f"{len(codes.train)} ({', '.join(codes.train)})"
        )
    train_values = _resolve_train(stage, config, parent)
    return _train_stage(stage, config, out, parent=parent, data=data, frame=frame, train_rows=train_rows,
                        codes=codes, ends=ends, layout=layout, train_values=train_values)


DEFAULT_TOKENIZER = {"kind": "fsq", "options": {"levels": [4, 4, 4]}, "steps": 600}
DEFAULT_MODEL = {"kind": "gpt", "size": "tiny", "d_model": 32, "n_layers": 2, "context_length": 64}
"""Pretrain without a config's tokenizer or model: as ``configs/gpt-tiny.yaml``."""


def _from_scratch(stage: AbstractStage, config: StageConfig, out: Path) -> dict[str, Any]:
    if config.data.names is None:
        raise ConfigError(f"data.names: {stage.name} without --in fits a tokenizer and a model: name the datasets")
    if config.epochs is not None:
        raise ConfigError(
            f"epochs: {stage.name} without --in cannot count windows before the tokenizer exists; give train.steps"
        )
    file = train_job.parse_train_run_file(
        {
            "data": {k: v for k, v in config.data.model_dump().items() if v is not None},
            "tokenizer": (config.tokenizer.model_dump() if config.tokenizer else DEFAULT_TOKENIZER),
            "model": config.model or DEFAULT_MODEL,
            "train": config.train,
            "out": str(out),
            "resume": config.resume,
        },
        stage.name,
    )
    metrics = train_job.run(file)
    meta = verify_run(out)
    own = trained_through_from_json(meta.get("trained_through"))
    upstream = trained_through_from_json(meta.get("upstream_trained_through"))
    write_meta_for_stage(out, stage, meta["seed"], own=own, parent=None, upstream=upstream)
    return metrics


def steps_for_epochs(epochs: float, windows: int, batch_size: int) -> int:
    """Updates that draw ``epochs`` times as many windows as there are window positions."""
    return max(1, math.ceil(epochs * windows / batch_size))


def _train_stage(
    stage: AbstractStage,
    config: StageConfig,
    out: Path,
    *,
    parent: Parent,
    data: train_job.DataSection,
    frame: pd.DataFrame,
    train_rows: pd.DataFrame,
    codes: Any,
    ends: dict[str, np.ndarray],
    layout: dict[str, Any],
    train_values: dict[str, Any],
) -> dict[str, Any]:
    model = parent.model
    settings = config.settings
    train_config = parse_config(TrainConfig, train_values, "train")
    window, context = stage.window(int(model.config.context_length), train_config.tbptt_segments, settings)
    longest = max(np.asarray(c).size for c in codes.train.values())
    if longest < window:
        raise ConfigError(
            f"context_len/horizon: a {stage.name} window needs {window} codes, "
            f"the longest training stream has {longest}"
        )
    rewarded_returns = stage.needs_returns(settings)
    decode = None
    if rewarded_returns:
        try:
            decode = parent.tokenizer.return_decoder()
        except ConfigError as error:  # name the key that asked for returns
            raise ConfigError(
                f"reward: {settings.reward} decodes returns with a candle tokenizer (fsq, vqvae); {error}; "
                "use reward token_accuracy"
            ) from None
    streams: dict[str, dict[str, np.ndarray]] = {}
    parts = {str(a): p.reset_index(drop=True) for a, p in frame.groupby("asset", sort=False)}
    for asset, stream in codes.train.items():
        streams[asset] = {"codes": np.asarray(stream, np.int32)}
        if model.uses_exo:
            streams[asset]["exo"] = np.asarray(codes.exo_train[asset], np.float32)
        if rewarded_returns:
            patch = parent.tokenizer.rows_per_code or 1
            streams[asset]["returns"] = _per_code_returns(parts[asset], ends[asset], patch)
    label = f"{stage.name} {model.kind}"
    heldout = None
    if stage.heldout_loss:
        streams, heldout = hold_out(streams, train_config.val_fraction, window, train_config.batch_size, label=label)
    elif train_config.val_fraction > 0:
        say(f"{label}: no held-out loss: the {stage.name} stage is read by its reward curve ({REWARD_PLOT})")
    sampler = WindowSampler(streams, window, train_config.batch_size, train_config.seed,
                            what=f"context_len/horizon: a {stage.name} window")
    if config.epochs is not None:
        steps = steps_for_epochs(config.epochs, sampler.windows, train_config.batch_size)
        train_config = train_config.model_copy(update={"steps": steps})
    stage.check(settings, train_config.batch_size)
    mesh = data_mesh(train_config.devices, train_config.batch_size)
    loss_fn = stage.loss(settings, reference=parent.model, segments=train_config.tbptt_segments,
                         decode_returns=decode)

    copy_parent_files(parent, out, layout)
    resolved = config.model_dump(mode="json", exclude={"out", "resume"})
    resolved.update(
        parent=str(parent.path), data=data.model_dump(mode="json"), train=train_config.model_dump(mode="json"),
        context_len=context,
    )
    write_config(out, resolved)

    def draw(step: int) -> None:
        write_loss_plot(out, loss_label=stage.loss_label, title=label)

    result = train(
        model, loss_fn, sampler, train_config, out, resume=config.resume, mesh=mesh,
        tokens_per_step=train_config.batch_size * (window - 1), description=label, heldout=heldout,
        on_checkpoint=draw,
    )
    atomic_write_bytes(out / MODEL_FILE, serialise(result.model))
    draw(result.step)
    metrics: dict[str, Any] = {
        "stage": stage.name,
        "parent": str(parent.path),
        "steps": result.step,
        "final_train_loss": result.history[-1]["loss"] if result.history else None,
        "final_val_loss": next((e["val_loss"] for e in reversed(result.history) if "val_loss" in e), None),
        "data": list(data.names),
        "codes": {
            "train": int(sum(np.asarray(c).size for c in codes.train.values())),
            "valid": int(sum(np.asarray(c).size for c in (codes.valid or {}).values())),
        },
    }
    if codes.valid:
        uses_exo = model.uses_exo
        metrics["heldout"] = nan_to_none(evaluate_codes(
            result.model, codes.valid, train=codes.train,
            exo=codes.exo_valid if uses_exo else None, exo_train=codes.exo_train if uses_exo else None,
            segment_length=train_config.eval_segment,
        ))
    metrics.update(stage.metrics(result.history, settings))
    logged = _reward_log(out / LOG_FILE)
    if "reward" in metrics and logged:
        atomic_write_bytes(out / REWARD_PLOT, reward_curve(logged))
        metrics["reward"]["plot"] = REWARD_PLOT
    write_json(out / METRICS_FILE, metrics)
    write_meta_for_stage(out, stage, train_config.seed, own=trained_through(train_rows), parent=parent,
                         upstream=parent.tokenizer.trained_through)
    return metrics


def _reward_log(path: Path) -> list[dict[str, Any]]:
    """The ``log.jsonl`` records of an RL stage that hold a reward."""
    lines = path.read_text().splitlines() if path.is_file() else []
    return [entry for entry in map(json.loads, filter(None, lines)) if "reward_mean" in entry]
