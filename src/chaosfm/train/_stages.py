"""The four training stages of a code model as classes: what each reads, optimises and reports.

- :class:`Pretrain`: next-code prediction on the combined code stream of every asset; it may
  start from nothing (a tokenizer and a model are fitted) or continue a run.
- :class:`Midtrain`: the same objective on one asset, at a lower learning rate.
- :class:`SFT`: given ``context_len`` codes, predict the next ``horizon`` codes, teacher forced,
  the loss on the horizon only (:func:`~chaosfm.train.horizon_loss`).
- :class:`RL`: REINFORCE on sampled horizons with the batch-mean baseline and an exact KL penalty
  to the SFT model (:func:`~chaosfm.train.rl_loss`).

The ``chaosfm stage`` job asks the stage object (:data:`STAGES`) for everything that differs
between stages; it never compares stage names.
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from chaosfm._config import ConfigError
from chaosfm.train._codes import code_loss
from chaosfm.train._reinforce import horizon_loss, rl_loss

__all__ = ["STAGES", "AbstractStage", "Midtrain", "Pretrain", "RL", "SFT", "StageSettings"]

LossFn = Callable[[Any, Any, Any], Any]


@dataclass(frozen=True)
class StageSettings:
    """The stage keys a loss reads (the job's config, as the library sees it).

    Attributes:
        horizon: sft/rl: codes predicted after each context.
        context_len: sft/rl: context codes (None: the model's context minus the horizon).
        reward: rl: a key of :data:`chaosfm.train.REWARDS` (``token_accuracy``, ``return_mse``, ``pnl``, ``sharpe``).
        kl_coef: rl: weight of KL(policy || sft model).
        samples: rl: horizons sampled per context.
        temperature: rl: sampling temperature of the policy.
    """

    horizon: int = 5
    context_len: int | None = None
    reward: str = "token_accuracy"
    kl_coef: float = 0.05
    samples: int = 8
    temperature: float = 1.0


class AbstractStage(abc.ABC):
    """One stage: its parents, defaults, windows, loss and extra metrics.

    Attributes:
        name: the stage's name (``meta.json``'s ``stage``, the CLI's choice).
        parents: the kinds of run it may continue (``"train"``: a run of ``chaosfm train``;
            None: it may start from nothing).
        lr_scale: its default learning rate is its parent's times this.
        single_asset: it trains on one asset.
        heldout_loss: its loss on held-out training windows (``val_loss``) says how well it
            generalises; False where the loss is a surrogate with no such reading.
        loss_label: what its loss is, with its unit (``loss.png``'s y axis).
    """

    name: ClassVar[str]
    parents: ClassVar[tuple[str | None, ...]]
    lr_scale: ClassVar[float]
    single_asset: ClassVar[bool] = False
    heldout_loss: ClassVar[bool] = True
    loss_label: ClassVar[str] = "cross-entropy (nats per code)"

    @property
    def from_scratch(self) -> bool:
        """It may run without a parent (fitting a tokenizer and a model first)."""
        return None in self.parents

    def train_defaults(self, given: dict[str, Any]) -> dict[str, Any]:
        """``train:`` keys this stage fixes or defaults, over the inherited ones (``given`` are the
        keys the config sets)."""
        return {}

    @abc.abstractmethod
    def window(self, context_length: int, segments: int, settings: StageSettings) -> tuple[int, int | None]:
        """``(codes per training window, context codes)`` for a model of ``context_length``."""

    @abc.abstractmethod
    def loss(self, settings: StageSettings, *, reference: Any, segments: int, decode_returns: Any) -> LossFn:
        """The loop's ``loss_fn(model, batch, key)``."""

    def needs_returns(self, settings: StageSettings) -> bool:
        """Whether batches carry the true per-code log returns (a return reward)."""
        return False

    def check(self, settings: StageSettings, batch_size: int) -> None:
        """Raise ConfigError for settings this stage cannot train with."""

    def metrics(self, history: list[dict[str, Any]], settings: StageSettings) -> dict[str, Any]:
        """Stage-specific entries of ``metrics.json`` from the loop's logged history."""
        return {}


class _NextCode(AbstractStage):
    """Next-code prediction over whole windows (truncated BPTT allowed)."""

    def window(self, context_length: int, segments: int, settings: StageSettings) -> tuple[int, int | None]:
        return context_length * segments + 1, None

    def loss(self, settings: StageSettings, *, reference: Any, segments: int, decode_returns: Any) -> LossFn:
        def loss_fn(model, batch, key):
            return code_loss(model, batch, key, segments=segments)

        return loss_fn


class _Horizon(AbstractStage):
    """A context of codes, then a horizon the loss is about; windows are read whole."""

    def train_defaults(self, given: dict[str, Any]) -> dict[str, Any]:
        if given.get("tbptt_segments", 1) != 1:
            raise ConfigError(f"train.tbptt_segments: {self.name} reads whole windows; leave it at 1")
        return {"tbptt_segments": 1}

    def window(self, context_length: int, segments: int, settings: StageSettings) -> tuple[int, int | None]:
        context = settings.context_len or context_length - settings.horizon
        if context < 1:
            raise ConfigError(
                f"horizon: {settings.horizon} leaves no context in the model's {context_length} codes; set context_len"
            )
        return context + settings.horizon, context


class Pretrain(_NextCode):
    name = "pretrain"
    parents = (None, "train", "pretrain")
    lr_scale = 1.0


class Midtrain(_NextCode):
    name = "midtrain"
    parents = ("pretrain",)
    lr_scale = 0.1
    single_asset = True


class SFT(_Horizon):
    name = "sft"
    parents = ("midtrain", "pretrain")
    lr_scale = 0.5

    def loss(self, settings: StageSettings, *, reference: Any, segments: int, decode_returns: Any) -> LossFn:
        horizon = settings.horizon

        def loss_fn(model, batch, key):
            return horizon_loss(model, batch, key, horizon=horizon)

        return loss_fn


class RL(_Horizon):
    name = "rl"
    parents = ("sft",)
    lr_scale = 0.1
    # REINFORCE's surrogate averages to about 0 whatever the policy's quality; the reward curve
    # (reward_curve.png) is what an RL stage is read by.
    heldout_loss = False
    loss_label = "REINFORCE surrogate + KL penalty (nats)"

    def train_defaults(self, given: dict[str, Any]) -> dict[str, Any]:
        # The reward curve has a point per step unless train.log_every says otherwise.
        return {**super().train_defaults(given), "log_every": 1}

    def needs_returns(self, settings: StageSettings) -> bool:
        return settings.reward != "token_accuracy"  # every other reward decodes returns

    def check(self, settings: StageSettings, batch_size: int) -> None:
        if batch_size * settings.samples < 2:
            raise ConfigError("samples: the batch-mean baseline needs batch_size * samples >= 2")

    def loss(self, settings: StageSettings, *, reference: Any, segments: int, decode_returns: Any) -> LossFn:
        def loss_fn(model, batch, key):
            return rl_loss(
                model, batch, key, reference=reference, horizon=settings.horizon, samples=settings.samples,
                reward=settings.reward, kl_coef=settings.kl_coef, temperature=settings.temperature,
                decode_returns=decode_returns,
            )

        return loss_fn

    def metrics(self, history: list[dict[str, Any]], settings: StageSettings) -> dict[str, Any]:
        rewards = [e["reward_mean"] for e in history if "reward_mean" in e]
        # One batch's reward depends on how predictable its contexts are; means of 10 steps compare better.
        return {
            "reward": {
                "kind": settings.reward,
                "logged_steps": len(rewards),
                "first": rewards[0] if rewards else None,
                "last": rewards[-1] if rewards else None,
                "first_10_mean": float(np.mean(rewards[:10])) if rewards else None,
                "last_10_mean": float(np.mean(rewards[-10:])) if rewards else None,
            }
        }


STAGES: dict[str, AbstractStage] = {kind.name: kind() for kind in (Pretrain, Midtrain, SFT, RL)}
"""Stage name -> stage, in training order."""
