"""The one training loop every chaosfm model uses.

:func:`train` takes a model (an equinox module), a loss ``loss_fn(model, batch, key) -> (loss,
metrics)`` and a batch source ``batch_at(step) -> batch`` that depends on the step alone (or an
:class:`AbstractBatchStream`, read in order, whose position is saved in every checkpoint), and runs
``config.steps`` AdamW updates with:

* a linear warm-up to ``learning_rate``, then cosine decay to ``learning_rate * final_lr_fraction``;
* global-norm gradient clipping and weight decay on matrices only;
* a NaN/inf guard: a step whose loss, gradients or new parameters are not finite is discarded,
  the run stops with :class:`NonFiniteError` naming the step and the tensor, and the last good
  checkpoint is left untouched;
* atomic checkpoints every ``checkpoint_every`` steps, at the end and on Ctrl-C (SIGINT);
* ``resume=True``: continue from the newest checkpoint. Batches depend on the step only and the
  key is checkpointed, so a resumed run (even after SIGKILL) ends bit-identical to an
  uninterrupted one;
* ``log.jsonl``: one line of metrics every ``log_every`` steps; a progress bar with loss and
  tokens/s when a person is watching, which says ``compiling (first step)...`` until the first,
  compiling step returns;
* a held-out loss: given ``heldout`` (a fixed batch of windows the gradient never sees, e.g.
  from :func:`~chaosfm.train.hold_out`), ``loss_fn`` on it with the current weights every
  ``eval_every`` steps and at the end, with one fixed key, logged as ``val_loss`` and shown on
  the progress bar;
* a ``('data', 'fsdp')`` mesh (:func:`~chaosfm.train.training_mesh`): batches are split along
  their first axis over both mesh axes; parameters and optimizer state are split over ``fsdp`` by
  :func:`~chaosfm.train.param_sharding` (replicated when ``fsdp`` is 1: plain data parallelism),
  and XLA inserts the all-gathers, reduce-scatters and all-reduces. One key per step serves the
  whole global batch, so dropout and other draws do not depend on the mesh;
* several processes (JAX's multi-controller runtime, joined by
  :func:`~chaosfm.train.initialize_distributed` before this runs): the mesh spans every process's
  devices, each process keeps only its own rows of a step's batch and the global batch is
  assembled from the pieces (:func:`~chaosfm.train.global_batch`); only process 0 writes
  ``log.jsonl`` and the checkpoints (gathered whole to the host first), the others wait for it at
  a barrier. The arithmetic is that of one process on the same mesh.
"""

from __future__ import annotations

import abc
import json
import os
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from chaosfm._artifacts import ArtifactError
from chaosfm._progress import COMPILING, progress, say
from chaosfm._random import run_keys
from chaosfm.train._checkpoint import (
    checkpoint_path,
    latest_checkpoint,
    load_newest_intact,
    remove_partial_checkpoints,
    save_checkpoint,
)
from chaosfm.train._config import TrainConfig
from chaosfm.train._distributed import (
    barrier,
    gather_json,
    gather_to_host,
    global_batch,
    is_main_process,
    local_rows,
    place,
)
from chaosfm.train._mesh import batch_sharding, param_sharding, training_mesh

__all__ = [
    "LOG_FILE",
    "AbstractBatchStream",
    "NonFiniteError",
    "TrainResult",
    "eval_interval",
    "learning_rate_schedule",
    "make_optimizer",
    "train",
]

LOG_FILE = "log.jsonl"
_HELDOUT_KEY = 2
"""``fold_in(loop key, 2)`` scores the held-out batch (1 is the model's initial weights): one key
for every evaluation, so ``val_loss`` moves between steps only with the weights."""
LossFn = Callable[[Any, Any, Any], tuple[jax.Array, dict[str, jax.Array]]]


class NonFiniteError(FloatingPointError):
    """A training step produced NaN or inf; the run stopped before saving it.

    Attributes:
        step: the update (1-based) that went non-finite.
        tensor: what was non-finite first: ``loss``, ``gradient of <path>`` or ``parameter <path>``.
        checkpoint: the last good checkpoint on disk (None if none was written yet).
    """

    def __init__(self, step: int, tensor: str, checkpoint: Path | None):
        self.step, self.tensor, self.checkpoint = step, tensor, checkpoint
        kept = f"last good checkpoint: {checkpoint}" if checkpoint else "no checkpoint was written before it"
        super().__init__(f"step {step}: non-finite values in {tensor}; training stopped; {kept}")


class AbstractBatchStream(abc.ABC):
    """Batches read in step order from a stream whose position is checkpointed with the run (e.g. a
    Grain iterator over ArrayRecord shards, :class:`~chaosfm.train.ShardStream`).

    The loop calls ``stream(step)`` for ``step = start, start + 1, ...``; it saves
    :meth:`get_state` (every process's) in each checkpoint and hands it back to :meth:`set_state`
    on resume, so a resumed run reads what an uninterrupted one would. In a multi-process run a
    stream yields only this process's rows of each batch: process ``p`` of ``P`` holds rows
    ``p * B / P .. (p + 1) * B / P - 1`` of a ``B``-window batch.
    """

    @abc.abstractmethod
    def __call__(self, step: int) -> Any:
        """The batch of ``step`` (this process's rows); raises ValueError when ``step`` is not the
        stream's next one."""

    @abc.abstractmethod
    def get_state(self) -> Any:
        """The stream's position, JSON-ready."""

    @abc.abstractmethod
    def set_state(self, state: Any) -> None:
        """Continue from a position :meth:`get_state` returned (raises ValueError when it does not fit)."""


@dataclass
class TrainResult:
    """What a finished run hands back.

    ``shardings`` holds where the trained arrays lived on the mesh: ``{"params": ...,
    "opt_state": ...}``, pytrees of ``jax.sharding.Sharding`` read off the last step's outputs
    (None without a mesh).
    """

    model: Any
    step: int
    checkpoint: Path | None
    history: list[dict[str, Any]] = field(default_factory=list)
    resumed_from: int | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    shardings: dict[str, Any] | None = None


def learning_rate_schedule(config: TrainConfig) -> optax.Schedule:
    """Linear warm-up from 0 to ``learning_rate``, then cosine decay to
    ``learning_rate * final_lr_fraction`` at ``config.steps``."""
    peak = config.learning_rate
    warmup = min(config.warmup_steps, config.steps - 1)
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0,
        peak_value=peak,
        warmup_steps=warmup,
        decay_steps=config.steps,
        end_value=peak * config.final_lr_fraction,
    )


def make_optimizer(config: TrainConfig, params: Any, *, flat: bool = True) -> optax.GradientTransformation:
    """Global-norm clipping, then AdamW with the schedule; weight decay on matrices only.

    With ``flat`` the transformation runs on all parameters raveled into one vector
    (``optax.flatten``): the same arithmetic as per leaf, in a few large fused operations instead
    of several small ones per parameter, which compiles and runs faster on a CPU. Without it the
    optimizer state mirrors ``params`` leaf by leaf, so it can be split over a mesh's ``fsdp``
    axis like the parameters (the global norm then sums per leaf: float32 rounding apart, the
    same update). Which entries decay is fixed by ``params`` (leaves with at least two dimensions).
    """
    if flat:
        decays = [
            np.full(np.size(leaf), float(np.ndim(leaf) >= 2), np.float32)
            for leaf in jax.tree_util.tree_leaves(params)
        ]
        decay_mask: Any = np.concatenate(decays) if decays else np.zeros(0, np.float32)
    else:
        decay_mask = jax.tree_util.tree_map(lambda leaf: np.float32(np.ndim(leaf) >= 2), params)
    steps = [] if config.grad_clip is None else [optax.clip_by_global_norm(config.grad_clip)]
    steps += [
        optax.scale_by_adam(b1=config.beta1, b2=config.beta2, eps=config.eps),
        _decoupled_weight_decay(config.weight_decay, decay_mask),
        optax.scale_by_learning_rate(learning_rate_schedule(config)),
    ]
    chain = optax.chain(*steps)
    return optax.flatten(chain) if flat else chain


def _decoupled_weight_decay(rate: float, mask: Any) -> optax.GradientTransformation:
    """AdamW's ``update += rate * param`` (Loshchilov & Hutter 2019), where ``mask`` is 1
    (``mask`` mirrors the updates: one vector for raveled parameters, or one float per leaf)."""

    def init(params: Any) -> optax.EmptyState:
        return optax.EmptyState()

    def update(updates: Any, state: optax.EmptyState, params: Any = None) -> tuple[Any, optax.EmptyState]:
        decayed = jax.tree_util.tree_map(lambda u, m, p: u + rate * jnp.asarray(m) * p, updates, mask, params)
        return decayed, state

    return optax.GradientTransformation(init, update)


class _LiveText(str):
    """A progress-bar description that re-renders the latest loss and throughput on every refresh."""

    def __new__(cls, label: str) -> "_LiveText":
        text = super().__new__(cls, label)
        text.label, text.status = label, ""
        return text

    def __format__(self, spec: str) -> str:
        return f"{self.label} {self.status}".rstrip()

    def __str__(self) -> str:
        return self.__format__("")


def _first_non_finite(flags: dict[str, Any]) -> str:
    if not bool(flags["loss"]):
        return "loss"
    for group, label in (("grads", "gradient of "), ("params", "parameter ")):
        for path, ok in jax.tree_util.tree_flatten_with_path(flags[group])[0]:
            if not bool(ok):
                return f"{label}{jax.tree_util.keystr(path).lstrip('.') or '<root>'}"
    return "an unknown tensor"


def _all_finite(tree: Any) -> Any:
    return jax.tree_util.tree_map(lambda x: jnp.all(jnp.isfinite(x)), tree)


def _state_bytes(config: TrainConfig, params: Any) -> int:
    """Bytes of parameters, their gradients and the optimizer state (traced, nothing allocated)."""
    state = jax.eval_shape(make_optimizer(config, params).init, params)
    leaves = jax.tree_util.tree_leaves(params) * 2 + jax.tree_util.tree_leaves(state)
    return sum(int(np.prod(leaf.shape)) * np.dtype(leaf.dtype).itemsize for leaf in leaves)


def eval_interval(config: TrainConfig) -> int:
    """Steps between held-out losses: ``config.eval_every``, or a tenth of ``config.steps``."""
    return config.eval_every or max(1, config.steps // 10)


def _truncate_log(path: Path, step: int, *, write: bool = True) -> list[dict[str, Any]]:
    """Keep the log lines up to ``step`` (a killed run may have logged steps its checkpoint lacks);
    without ``write`` only read them. Every process reads before process 0 rewrites the file."""
    if not path.is_file():
        barrier("log read")
        return []
    kept = []
    for line in path.read_text().splitlines():
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            break  # the line being written when the run was killed
        if entry.get("step", 0) <= step:
            kept.append(entry)
    barrier("log read")
    if write:
        path.write_text("".join(json.dumps(entry) + "\n" for entry in kept))
    return kept


def _restore_stream(stream: AbstractBatchStream, states: list[Any] | None, path: Path, processes: int) -> None:
    """Put ``stream`` where this process's stream was when checkpoint ``path`` was written."""
    if states is None:
        raise ArtifactError(
            f"{path}: holds no batches.json (the run it continues read no batch stream); resume it the way "
            "it was started, or start a new folder"
        )
    if len(states) != processes:
        raise ArtifactError(
            f"{path}/batches.json: written by {len(states)} processes, resumed by {processes}; a batch "
            "stream resumes with the same number of processes"
        )
    stream.set_state(states[jax.process_index()])


def train(
    model: eqx.Module,
    loss_fn: LossFn,
    batch_at: Callable[[int], Any] | AbstractBatchStream,
    config: TrainConfig,
    run_dir: str | os.PathLike[str],
    *,
    resume: bool = False,
    mesh: Mesh | None = None,
    tokens_per_step: int | None = None,
    on_step: Callable[[int, dict[str, float]], None] | None = None,
    description: str = "train",
    post_update: Callable[[Any, Any, Any], Any] | None = None,
    heldout: Any = None,
    on_checkpoint: Callable[[int], None] | None = None,
) -> TrainResult:
    """Train ``model`` for ``config.steps`` updates, checkpointing into ``run_dir``.

    Args:
        model: the initial model (also the template checkpoints are restored into).
        loss_fn: ``loss_fn(model, batch, key) -> (scalar loss, dict of scalar metrics)``.
        batch_at: ``batch_at(step) -> batch``, a pytree of arrays with the batch on axis 0; must
            depend on ``step`` only (it is how a resumed run sees the same data); or an
            :class:`AbstractBatchStream`, whose state each checkpoint saves (``batches.json``) and a
            resumed run restores.
        config: the loop's settings.
        run_dir: where ``checkpoints/`` and ``log.jsonl`` go.
        resume: continue from the newest checkpoint in ``run_dir`` (start fresh if there is none).
        mesh: the devices to train on: a Mesh with a ``data`` axis (laid out as ``config.mesh``
            says, see :func:`~chaosfm.train.training_mesh`) or with ``('data', 'fsdp')`` axes;
            None for one device (or, with ``config.mesh`` set, the devices it names).
        tokens_per_step: tokens in one batch, for tokens/s in the log and the progress bar.
        on_step: called as ``on_step(step, metrics)`` after each update (and its checkpoint).
        description: progress-bar label.
        post_update: ``post_update(old_model, new_model, step) -> model`` applied inside the
            jitted step after the optimizer's update (e.g. a JEPA's EMA target encoder, which
            follows the online weights rather than a gradient); its result is what is kept.
        heldout: a batch like ``batch_at``'s (its own number of rows) of windows the gradient
            never sees; ``loss_fn`` on it is logged as ``val_loss`` every ``config.eval_every``
            steps and at the end. None: no held-out loss.
        on_checkpoint: called as ``on_checkpoint(step)`` by the writing process after each
            checkpoint, once ``log.jsonl`` holds the step (a job redraws ``loss.png`` there).

    Returns:
        The trained model, the step reached, the last checkpoint and the logged history.

    Raises:
        NonFiniteError: a step went NaN/inf (names the step and the tensor).
        KeyboardInterrupt: on Ctrl-C, after saving a checkpoint of the last completed step.
        ArtifactError: ``run_dir`` already holds checkpoints and ``resume`` is False, or a
            checkpoint is damaged (names the file).
    """
    run = Path(run_dir)
    run.mkdir(parents=True, exist_ok=True)
    log_path = run / LOG_FILE
    processes = jax.process_count()
    writes = is_main_process()  # only process 0 writes the log and the checkpoints
    params, static = eqx.partition(model, eqx.is_inexact_array)
    state_bytes = _state_bytes(config, params) if config.mesh == "auto" else 0  # only auto reads it
    mesh = training_mesh(config, mesh, state_bytes=state_bytes)
    sharded = mesh is not None and mesh.shape["fsdp"] > 1
    optimizer = make_optimizer(config, params, flat=not sharded)
    schedule = learning_rate_schedule(config)
    if sharded:
        # Born split: the optimizer state never exists whole on one device.
        state_layout = param_sharding(jax.eval_shape(optimizer.init, params), mesh)
        initial = params if processes == 1 else place(params, param_sharding(params, mesh))
        opt_state = jax.jit(optimizer.init, out_shardings=state_layout)(initial)
    else:
        opt_state = jax.jit(optimizer.init)(params)  # one compile, not one per parameter shape
    key = run_keys(config.seed).loop
    start, history, resumed_from = 0, [], None
    stream = batch_at if isinstance(batch_at, AbstractBatchStream) else None

    if writes:
        remove_partial_checkpoints(run)
    latest = latest_checkpoint(run)
    if latest is not None and not resume:
        raise ArtifactError(
            f"{run} already holds checkpoints (newest: {latest.name}); resume it or choose a new folder"
        )
    if resume and latest is not None:
        restored, skipped = load_newest_intact(run, params_like=params, opt_state_like=opt_state)
        assert restored is not None  # latest exists, so either one loaded or an error was raised
        params, opt_state, key, start = restored.params, restored.opt_state, restored.key, restored.step
        resumed_from = start
        if stream is not None:
            _restore_stream(stream, restored.batch_states, restored.path, processes)
        history = _truncate_log(log_path, start, write=writes)
        for reason in skipped:
            say(f"skipping checkpoint {reason}")
        latest = restored.path
        say(f"resuming {run} from step {start} ({latest.name})")
    elif writes:
        log_path.write_text("")
    last_checkpoint = latest if resume else None

    if mesh is not None:
        replicated = NamedSharding(mesh, PartitionSpec())
        batch_layout = batch_sharding(mesh)
        params_layout, opt_layout = param_sharding(params, mesh), param_sharding(opt_state, mesh)
        params, opt_state = place((params, opt_state), (params_layout, opt_layout))
        key = place(key, replicated)
        rows = local_rows(batch_layout, config.batch_size)
        if stream is not None and processes > 1:
            share = config.batch_size // processes
            block = slice(jax.process_index() * share, (jax.process_index() + 1) * share)
            if rows != block:
                raise ValueError(
                    f"this process's devices hold rows {rows.start}..{rows.stop - 1} of the batch, but a batch "
                    f"stream reads rows {block.start}..{block.stop - 1} (process {jax.process_index()} of "
                    f"{processes}); order the mesh's devices by process"
                )
        jit_kwargs: dict[str, Any] = {
            "in_shardings": (params_layout, opt_layout, replicated, batch_layout, replicated),
            "out_shardings": (params_layout, opt_layout, replicated, replicated, replicated),
        }
    else:
        batch_layout, jit_kwargs = None, {}

    def update_step(params, opt_state, key, batch, step):
        key, step_key = jax.random.split(key)

        def objective(trainable):
            return loss_fn(eqx.combine(trainable, static), batch, step_key)

        (loss, metrics), grads = jax.value_and_grad(objective, has_aux=True)(params)
        updates, new_opt_state = optimizer.update(grads, opt_state, params)
        new_params = optax.apply_updates(params, updates)
        if post_update is not None:
            old_model, new_model = eqx.combine(params, static), eqx.combine(new_params, static)
            new_params = eqx.filter(post_update(old_model, new_model, step), eqx.is_inexact_array)
        flags = {"loss": jnp.isfinite(loss), "grads": _all_finite(grads), "params": _all_finite(new_params)}
        report = {"loss": loss, "grad_norm": optax.tree.norm(grads), "lr": schedule(step), **metrics}
        return new_params, new_opt_state, key, report, flags

    update = jax.jit(update_step, **jit_kwargs)
    every_eval = eval_interval(config)
    if heldout is not None:
        heldout_key = jax.random.fold_in(run_keys(config.seed).loop, _HELDOUT_KEY)
        if mesh is not None:
            whole = (heldout, heldout_key)
            heldout, heldout_key = place(whole, jax.tree_util.tree_map(lambda _: replicated, whole))

        @jax.jit
        def heldout_loss(params, batch, key):
            return loss_fn(eqx.combine(params, static), batch, key)[0]

    interrupted = threading.Event()
    previous_handler = None
    if threading.current_thread() is threading.main_thread():
        previous_handler = signal.signal(signal.SIGINT, lambda signum, frame: interrupted.set())

    def checkpoint(step: int) -> Path:
        batch_states = None if stream is None else gather_json(stream.get_state())
        if processes == 1:
            return save_checkpoint(
                run,
                step=step,
                params=params,
                opt_state=opt_state,
                key=key,
                seed=config.seed,
                keep=config.keep_checkpoints,
                batch_states=batch_states,
            )
        # A collective: every process gathers, process 0 writes, the others wait until it has.
        host_params, host_opt_state, host_key = gather_to_host((params, opt_state, key))
        if writes:
            save_checkpoint(
                run,
                step=step,
                params=host_params,
                opt_state=host_opt_state,
                key=host_key,
                seed=config.seed,
                keep=config.keep_checkpoints,
                batch_states=batch_states,
            )
        barrier(f"checkpoint {step}")
        return checkpoint_path(run, step)

    live = _LiveText(description)
    shown_loss, shown_val = "", ""  # the progress bar's latest training and held-out losses
    window_start, window_tokens = time.perf_counter(), 0
    started = time.perf_counter()
    done = start
    try:
        with open(log_path if writes else os.devnull, "a") as log:
            for step in progress(range(start, config.steps), live, total=config.steps - start, first=COMPILING):
                batch = batch_at(step)
                if batch_layout is not None and processes > 1:
                    mine = batch if stream is not None else jax.tree_util.tree_map(
                        lambda rows_all: np.asarray(rows_all)[rows], batch)  # a stream reads only its rows
                    batch = global_batch(mine, batch_layout, config.batch_size)
                elif batch_layout is not None:
                    batch = jax.device_put(batch, batch_layout)
                new_params, new_opt_state, new_key, report, flags = update(
                    params, opt_state, key, batch, jnp.asarray(step, jnp.int32)
                )
                flags, report = jax.device_get((flags, report))  # one host sync per step, not two
                if not all(bool(x) for x in jax.tree_util.tree_leaves(flags)):
                    tensor = _first_non_finite(flags)
                    log.write(json.dumps({"step": step + 1, "event": "non_finite", "tensor": tensor}) + "\n")
                    log.flush()
                    raise NonFiniteError(step + 1, tensor, last_checkpoint)
                params, opt_state, key = new_params, new_opt_state, new_key
                done = step + 1
                window_tokens += tokens_per_step or 0
                metrics = {name: float(value) for name, value in report.items()}
                val_loss = None
                if heldout is not None and (done % every_eval == 0 or done == config.steps):
                    evaluating = time.perf_counter()
                    val_loss = float(jax.device_get(heldout_loss(params, heldout, heldout_key)))
                    shown_val = f" · val {val_loss:.4f}"
                    window_start += time.perf_counter() - evaluating  # tokens/s counts training time only
                entry = None
                if done % config.log_every == 0 or done == config.steps:
                    now = time.perf_counter()
                    entry = {"step": done, **metrics, "elapsed_s": round(now - started, 3)}
                    if tokens_per_step:
                        entry["tokens_per_s"] = round(window_tokens / max(now - window_start, 1e-9), 1)
                        shown_loss = f"loss {metrics['loss']:.4f} · {entry['tokens_per_s']:,.0f} tok/s"
                    else:
                        shown_loss = f"loss {metrics['loss']:.4f}"
                    window_start, window_tokens = now, 0
                if val_loss is not None:
                    entry = (entry or {"step": done}) | {"val_loss": val_loss}
                if entry is not None:
                    live.status = shown_loss + shown_val
                    log.write(json.dumps(entry) + "\n")
                    log.flush()
                    history.append(entry)
                if done % config.checkpoint_every == 0 or done == config.steps:
                    last_checkpoint = checkpoint(done)
                    if on_checkpoint is not None and writes:
                        on_checkpoint(done)
                if on_step is not None:
                    on_step(done, metrics)
                if interrupted.is_set():
                    if last_checkpoint is None or last_checkpoint.name != f"step_{done:08d}":
                        last_checkpoint = checkpoint(done)
                    log.write(json.dumps({"step": done, "event": "interrupted"}) + "\n")
                    log.flush()
                    say(f"interrupted at step {done}; checkpoint {last_checkpoint}; resume to continue")
                    raise KeyboardInterrupt(
                        f"interrupted at step {done}; checkpoint saved to {last_checkpoint}"
                    )
    finally:
        if previous_handler is not None:
            signal.signal(signal.SIGINT, previous_handler)

    if start >= config.steps and last_checkpoint is None:
        last_checkpoint = latest
    shardings = None
    if mesh is not None:
        def placed(tree: Any) -> Any:
            return jax.tree_util.tree_map(lambda leaf: leaf.sharding, tree)

        shardings = {"params": placed(params), "opt_state": placed(opt_state)}
    trained = eqx.combine(gather_to_host(params) if mesh is not None else params, static)
    return TrainResult(
        model=trained, step=done, checkpoint=last_checkpoint, history=history, resumed_from=resumed_from,
        shardings=shardings,
    )
