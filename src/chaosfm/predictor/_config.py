"""Configuration of the online predictor and of ``chaosfm stream``.

Every model is pydantic with ``extra="forbid"`` (a typo names the key and the allowed keys) and
``frozen=True`` (a config is hashable, so jitted steps can close over it). Each field carries a
one-line why.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CusumConfig(_Strict):
    """One-sided CUSUM on standardised error magnitudes (see ``_cusum.py``)."""

    slack: float = Field(0.5, ge=0.0, description="k: drift allowance per step, in error sigmas")
    threshold_scale: float = Field(
        5.0, gt=0.0, description="h in h_t = h * sigma_t * (1 + ln(kappa_t / 3)), in error sigmas"
    )
    variance_decay: float = Field(
        0.005, gt=0.0, lt=1.0, description="EMA weight of a new squared error in sigma_t^2;"
        " slow, so a shift is detected before sigma absorbs it"
    )
    kurtosis_window: int = Field(
        64, ge=8, description="rolling window of standardised errors for the empirical kurtosis"
    )
    kurtosis_floor: float = Field(
        3.0, gt=1.0, description="kappa is clamped below here, so light tails never lower the bar"
    )
    kurtosis_ceiling: float = Field(
        50.0, gt=3.0, description="kappa is clamped above here: one outlier must not mute CUSUM"
    )
    magnitude_clip: float = Field(
        4.0, gt=0.0, description="|e| / sigma is winsorised here: one outlier alone never alarms"
    )
    warmup: int = Field(16, ge=1, description="errors seen before an alarm may fire")
    initial_sigma: float = Field(1.0, gt=0.0, description="sigma_0 before any error is seen")


class HoelderConfig(_Strict):
    """WTMM Hölder exponent of the signal buffer (see ``_holder.py``)."""

    min_scale: float = Field(
        0.75, gt=0.0, description="finest CWT scale, in samples (gaus1 at scale a sees periods ~5a)"
    )
    max_scale: float = Field(
        8.0, gt=0.0, description="coarsest CWT scale, in samples: roughness is read at fine scales;"
        " coarser ones see trends and mean reversion (sp500 1999-2001 reads 0.30 up to 16, 0.45 up to 8)"
    )
    max_scale_fraction: float = Field(
        0.125, gt=0.0, le=0.5, description="and at most this fraction of the samples in the buffer"
    )
    voices_per_octave: int = Field(4, ge=1, description="scales per octave: dense dyadic grid")
    cone: float = Field(
        2.0, gt=0.0, description="Besov constant C: maxima chain inside the cone |b' - b| <= C a"
    )
    moments: tuple[float, ...] = Field(
        (0.5, 1.0, 1.5, 2.0, 2.5, 3.0), min_length=2, description="q grid of the partition function"
    )
    moment: float = Field(
        0.0, description="q at which h = d tau / d q is read off: q = 0 is the most frequent"
        " exponent (the peak of D(h)); larger q lets a few jumps pull h towards 0"
    )
    edge_cone: float = Field(
        1.0, ge=0.0, description="maxima closer than edge_cone * a to either end are ignored"
    )
    min_samples: int = Field(
        32, ge=8, description="h is NaN until this many samples are in the buffer (no slope yet)"
    )


class StableConfig(_Strict):
    """Kernel A: alpha-stable Lévy Monte Carlo (see ``_kernel_stable.py``)."""

    num_draws: int = Field(64, ge=8, description="CMS draws per step for the point prediction")
    min_alpha: float = Field(1.1, gt=0.0, le=2.0, description="alpha is clipped into [min, 2]")


class DGMConfig(_Strict):
    """Kernel B: Deep Galerkin network for a risk-sensitive HJB (see ``_kernel_dgm.py``)."""

    width: int = Field(16, ge=2, description="hidden width of the DGM layers")
    depth: int = Field(2, ge=1, description="number of DGM (gated) layers")
    horizon: float = Field(5.0, gt=0.0, description="T: control horizon, in steps")
    domain: float = Field(4.0, gt=0.0, description="z lives in [-domain, domain] (sigmas)")
    collocation: int = Field(32, ge=4, description="interior points per online Adam step")
    learning_rate: float = Field(3e-3, gt=0.0, description="Adam step size")
    fit_steps: int = Field(300, ge=0, description="Adam steps in fit (warm start)")
    online_steps: int = Field(
        0, ge=0, description="Adam steps per update; one costs ~1.3 ms here, over the step budget"
    )
    entropy_grid: int = Field(33, ge=4, description="grid of z for the entropy monitor")
    drift_grid: int = Field(
        513, ge=9, description="grid of z on which V_z is tabulated after training; the per-step"
        " drift interpolates it linearly (max error of V_z 8e-4 on a random network, measured)"
    )
    collapse_tolerance: float = Field(
        0.002, gt=0.0, lt=1.0, description="normalised entropy above 1 - this: V is flat (trivial)"
    )


class IMEXConfig(_Strict):
    """Kernel C: IMEX step for a jump-diffusion density (see ``_kernel_imex.py``)."""

    grid_size: int = Field(
        64, ge=16, description="points of the increment grid; finer grids stiffen the Jacobi map"
    )
    grid_width: float = Field(8.0, gt=0.0, description="grid covers +-width sigmas")
    substeps: int = Field(4, ge=1, description="IMEX time steps per observation step")
    jump_threshold: float = Field(3.0, gt=0.0, description="|return| above this many sigmas is a jump")
    anderson_memory: int = Field(5, ge=1, description="Anderson acceleration history m")
    fixed_point_iterations: int = Field(
        12, ge=1, description="Anderson iterations per implicit solve. With the moment-matched"
        " coefficients (kernel C's diffusion is ~1.3 sigma, sde_parameters) the density is within"
        " 0.1-0.2% of the direct solve for fitted sigma ~1 and 0.9% at 1.6 (8 iterations: 0.4-0.6%"
        " and 3.1%); measured on synthetic parameters, no market rows involved"
    )


class SignatureConfig(_Strict):
    """Kernel D: log-signature ridge (see ``_kernel_signature.py``)."""

    window: int = Field(8, ge=2, description="increments in the path whose log-signature is taken")
    depth: int = Field(3, ge=1, le=4, description="log-signature truncation depth")
    ridge: float = Field(1.0, gt=0.0, description="ridge penalty lambda")
    forgetting: float = Field(
        0.995, gt=0.0, le=1.0, description="recursive least squares forgetting factor"
    )


class OrchestratorConfig(_Strict):
    """Mirror step + entropic OT projection of the kernel weights (see ``_orchestrator.py``)."""

    step_size: float = Field(0.5, gt=0.0, description="tau of the mirror step softmax(log w - tau g)")
    epsilon: float = Field(
        0.1, gt=0.0, description="Sinkhorn entropic regularisation; 0.1 rather than 0.05 halves the"
        " iterations (median 10 vs 20, p99 20 vs 35 on sp500) at the same one-step CRPS (8.26 vs 8.27)"
    )
    marginal_relaxation: float = Field(
        1.0, gt=0.0, description="rho of the unbalanced target marginal: the JKO proximity weight"
    )
    sinkhorn_threshold: float = Field(1e-3, gt=0.0, description="Sinkhorn marginal error to stop")
    sinkhorn_max_iterations: int = Field(200, ge=1, description="Sinkhorn iteration cap")
    sinkhorn_inner_iterations: int = Field(
        5, ge=1, description="iterations between error checks (a check costs ~3 iterations here)"
    )
    sinkhorn_momentum: float = Field(
        1.5, ge=1.0, lt=2.0, description="over-relaxation of the first attempt (1: plain): the"
        " unbalanced marginal contracts only by rho / (rho + eps) per plain iteration; at eps 0.1,"
        " 1.5 gives a median of 10 iterations warm-started on sp500 (1.4: 15, 1.6: 15), same fixed point"
    )
    weight_floor: float = Field(
        1e-3, ge=0.0, lt=0.25, description="mixing with uniform so no kernel dies for good"
    )
    robust: bool = Field(False, description="Huber loss (delta = 1.35 sigma) instead of MSE")


class PredictorConfig(_Strict):
    """The whole online predictor."""

    buffer_size: int = Field(128, ge=32, description="signal buffer for WTMM and kernel fits")
    increments: Literal["difference", "log"] = Field(
        "difference", description="kernels model x_t - x_{t-1} or log(x_t / x_{t-1})"
    )
    scale_decay: float = Field(
        0.06, gt=0.0, lt=1.0,
        description="EMA weight for increment scale; 0.06 (an effective window of ~32 steps) scored a "
        "lower one-step CRPS than 0.03 on four of five markets' rows before their cutoffs (docs/predictor.md)",
    )
    unit_spread: bool = Field(
        True, description="rescale the kernel mixture to unit spread, so the EMA scale alone sets the width and"
        " the kernels the shape; see docs/predictor.md for the rows before the cutoff it was chosen on",
    )
    gaussian_share: float = Field(
        1.0, ge=0.0, le=1.0, description="share of the draws taken from a normal of unit width (with"
        " unit_spread, the mixture's own) instead of the kernels: shrinks the shape the kernels fit on 128"
        " increments towards the normal; 1 (the EMA scale's normal, shaped by the forecaster's calibration)"
        " had the lowest worst-market CRPS against the random walk on rows before each cutoff (0.5: 0.6%"
        " worse on jkse, the worst market; docs/predictor.md)",
    )
    level_decay: float = Field(0.05, gt=0.0, lt=1.0, description="EMA weight of the level for z")
    hoelder_threshold: float = Field(
        0.2, description="Hölder below this trips the circuit breaker (kernel D, Huber)"
    )
    warmup: int = Field(32, ge=2, description="observations before kernels and flags are trusted")
    mode_collapse_steps: int = Field(
        10, ge=1, description="collapsed DGM steps before the flag; while it is up kernel B's weight is 0"
    )
    degraded_ttl: int = Field(
        10, ge=1, description="consecutive steps without a fresh observation (NaN: missing or late)"
        " before degraded_inference is entered; the orchestrator's weights stay frozen while it is up"
    )
    degraded_exit_fraction: float = Field(
        0.8, gt=0.0, le=1.0, description="hysteresis: degraded_inference is left after"
        " ceil(this * degraded_ttl) fresh steps in a row, so one good row does not end it"
    )
    kurtosis_high: float = Field(
        5.0, gt=3.0, description="CUSUM error kurtosis above this raises high_volatility (3: Gaussian)"
    )
    kurtosis_crisis: float = Field(15.0, gt=3.0, description="error kurtosis above this raises crisis")
    kurtosis_invalid: float = Field(
        20.0, gt=3.0, description="error kurtosis above this: the residual model is invalid"
        " (residual_invalid) and the circuit breaker (emergency) engages"
    )
    num_samples: int = Field(64, ge=1, description="mixture samples per step (CRPS, intervals)")
    drift: float = Field(
        0.0, ge=0.0, le=1.0, description="share of the kernels' mean increment kept in the"
        " prediction and the samples; 0 centres them on the last value. 0 because on the rows"
        " before the cutoff the kernels' drift is noise: one step ahead, CRPS 6.959 against"
        " 6.996 with 1 on sp500 (200 windows, 2011-10 to 2014-12) and 12.408 against 12.517 on"
        " ndx (114 windows, 1997-03 to 1999-01)"
    )
    refresh_every: int = Field(
        4, ge=1, description="the slow parts (WTMM, stable fit, IMEX density, DGM refit) rerun every"
        " this many steps, one part per step, cached between: a step pays for one, not four"
    )
    meta_learning: bool = Field(
        False, description="learn the orchestrator's epsilon and step size and the kernels' spread"
        " temperatures online, by Adam on the one-step CRPS of each forecast (_meta.py); off, the"
        " step is the plain one (no gradient computed)"
    )
    meta_learning_rate: float = Field(
        0.01, gt=0.0, description="Adam step size on the log meta-parameters: 0.01 moves a"
        " parameter by at most ~1% per observation"
    )
    meta_gradient_clip: float = Field(
        1.0, gt=0.0, description="global norm the meta-gradient is clipped to before Adam: one"
        " outlier observation must not throw the meta-parameters"
    )
    cusum: CusumConfig = CusumConfig()
    hoelder: HoelderConfig = HoelderConfig()
    stable: StableConfig = StableConfig()
    dgm: DGMConfig = DGMConfig()
    imex: IMEXConfig = IMEXConfig()
    signature: SignatureConfig = SignatureConfig()
    orchestrator: OrchestratorConfig = OrchestratorConfig()

    @model_validator(mode="after")
    def _fits(self) -> "PredictorConfig":
        if self.signature.window + 1 > self.buffer_size:
            raise ValueError("signature.window must be smaller than buffer_size")
        if self.cusum.kurtosis_window > 4 * self.buffer_size:
            raise ValueError("cusum.kurtosis_window must be at most 4 * buffer_size")
        if self.refresh_every > self.warmup:
            raise ValueError("refresh_every must be at most warmup: every part is fresh once warm")
        if not self.kurtosis_high < self.kurtosis_crisis < self.kurtosis_invalid:
            raise ValueError(
                f"kurtosis thresholds must increase: kurtosis_high ({self.kurtosis_high}) < kurtosis_crisis"
                f" ({self.kurtosis_crisis}) < kurtosis_invalid ({self.kurtosis_invalid})"
            )
        if self.kurtosis_invalid >= self.cusum.kurtosis_ceiling:
            raise ValueError(
                f"kurtosis_invalid ({self.kurtosis_invalid}) must be below cusum.kurtosis_ceiling"
                f" ({self.cusum.kurtosis_ceiling}): the kurtosis is clamped there, so it could never fire"
            )
        return self

    @property
    def degraded_exit_steps(self) -> int:
        """Fresh steps in a row that end degraded_inference: ceil(fraction * ttl), at least 1."""
        return max(1, math.ceil(self.degraded_exit_fraction * self.degraded_ttl - 1e-9))


class StreamConfig(_Strict):
    """``chaosfm stream``: what to read and how to run the predictor over it."""

    column: str = Field("close", description="the column streamed from a frame or CSV rows")
    seed: int = Field(0, description="every PRNG key of the run derives from this")
    plot: bool = Field(True, description="write telemetry.png")
    on_bad_line: Literal["raise", "skip"] = Field(
        "raise", description="NaN/inf/non-numeric input: raise DataError, or record it and skip"
    )
    predictor: PredictorConfig = PredictorConfig()
    x64: bool = Field(
        False, description="compute in float64 (default float32; also CHAOSFM_X64=1): for levels whose"
        " increments float32 cannot resolve (near 1e8 its spacing is 8); the job switches JAX's x64 on"
        " before the run, and a snapshot restores only into a process of the dtype that wrote it"
    )
    deterministic: bool = Field(
        False, description="bit-reproducible run: matmul precision 'highest' and the threefry2x32"
        " PRNG (partitionable) pinned for everything run_stream executes (see _stream.py)"
    )
    compilation_cache: bool = Field(
        True, description="persistent JAX compilation cache with the predictor's exported programs"
        " beside it: a restart loads them instead of tracing and compiling them again (~5x sooner"
        " to the first prediction on a 2-core VM, bench/warm_start.py)"
    )
    cache_dir: Path | None = Field(
        None, description="where the compilation cache lives; None: $CHAOSFM_CACHE_DIR, else"
        " <user cache dir>/chaosfm/jax (platformdirs). It must be private (owned by you, not"
        " writable by group or others; created 0700): one that is not is refused with a note on"
        " stderr and the default used instead"
    )
    warm_up: bool = Field(
        True, description="run the step once on zeros of the production shapes before the first"
        " observation (compiles or loads it then, not on the first real value; state untouched)"
    )
    snapshot: Path | None = Field(
        None, description="write the predictor and stream state here (msgpack, atomic) at the end"
        " of the run and every snapshot_every steps"
    )
    snapshot_every: int = Field(0, ge=0, description="steps between snapshots; 0: only at the end")
    restore: Path | None = Field(
        None, description="resume from this snapshot (its predictor config must equal this one)"
    )
    metrics_port: int | None = Field(
        None, ge=0, le=65535, description="serve Prometheus metrics on 127.0.0.1:PORT during the"
        " run (0: any free port); None: no endpoint"
    )
    calibration_gamma: float = Field(
        0.0, ge=0.0, lt=1.0, description="adaptive conformal inference on the one-step quantiles"
        " (Gibbs & Candes 2021): after each observation every quantile level moves by gamma *"
        " (miss - (1 - level)), so the intervals widen after misses; 0 turns it off (0.005 is"
        " the paper's)"
    )

    @model_validator(mode="after")
    def _snapshot_path(self) -> "StreamConfig":
        if self.snapshot_every and self.snapshot is None:
            raise ValueError("snapshot_every needs snapshot (the path to write)")
        return self
