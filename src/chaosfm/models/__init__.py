"""Strate II sequence models over codes: GPT, Mamba-2 (SSD) with its options, and generation.

Every model reads one stream of codes and returns next-code logits (batch with ``jax.vmap``);
:func:`generate` samples code paths from any of them.
"""

from chaosfm.models._base import AbstractCodeModel, count_params, rms_norm
from chaosfm.models._cfm import VelocityField, cfm_loss, ot_coupling, ot_plan, sample_flow
from chaosfm.models._flow import FlowConfig, FlowMamba, StepHead, flow_loss
from chaosfm.models._generate import generate, sample_logits
from chaosfm.models._inspect import parameter_report
from chaosfm.models._gpt import GPT, GPT_SIZES, Attention, GPTConfig, KVMemory, rope
from chaosfm.models._jepa import (
    JEPA,
    PREDICTORS,
    AbstractJEPAPredictor,
    JEPAConfig,
    JEPAEncoder,
    JEPAPredictor,
    PredictorKind,
    StepwisePredictor,
    causal_window_norm,
    l2_normalize,
)
from chaosfm.models._jepa_loss import ema_post_update, jepa_loss
from chaosfm.models._kan import KAN_BASES, KANLayer, bspline_basis, rbf_basis
from chaosfm.models._mamba import (
    MAMBA_SIZES,
    Mamba,
    Mamba2Mixer,
    MambaBlock,
    MambaConfig,
    MixerState,
    ScanCarry,
    mamba_layers,
    selective_scan,
    selective_scan_reference,
)
from chaosfm.models._multitask import (
    QUANTILE_LEVELS,
    FeatureMamba,
    MultitaskConfig,
    MultitaskOutput,
    multitask_loss,
    uncertainty_weighted,
)
from chaosfm.models._registry import MODEL_KINDS, build_model, config_from_json, config_to_json
from chaosfm.models._ssd import ssd_chunked, ssd_reference
from chaosfm.models._ssl_losses import barlow_twins_loss, cross_resolution_loss, downsample_pairs, pooled_embedding
from chaosfm.models._vicreg import (
    BlockMasks,
    block_masks,
    ema_update,
    vicreg_covariance,
    vicreg_invariance,
    vicreg_variance,
)

__all__ = [
    "FlowConfig",
    "FlowMamba",
    "StepHead",
    "flow_loss",
    "QUANTILE_LEVELS",
    "FeatureMamba",
    "MultitaskConfig",
    "MultitaskOutput",
    "multitask_loss",
    "uncertainty_weighted",
    "GPT",
    "GPT_SIZES",
    "MAMBA_SIZES",
    "MODEL_KINDS",
    "AbstractCodeModel",
    "Attention",
    "GPTConfig",
    "KVMemory",
    "Mamba",
    "Mamba2Mixer",
    "MambaBlock",
    "MambaConfig",
    "MixerState",
    "ScanCarry",
    "build_model",
    "config_from_json",
    "config_to_json",
    "count_params",
    "generate",
    "parameter_report",
    "rms_norm",
    "rope",
    "sample_logits",
    "mamba_layers",
    "selective_scan",
    "selective_scan_reference",
    "ssd_chunked",
    "ssd_reference",
    # JEPA, its predictors (with the KAN layer), VICReg and the other losses, the flow-matching head
    "JEPA",
    "JEPAConfig",
    "JEPAEncoder",
    "JEPAPredictor",
    "AbstractJEPAPredictor",
    "StepwisePredictor",
    "PredictorKind",
    "PREDICTORS",
    "KANLayer",
    "KAN_BASES",
    "bspline_basis",
    "rbf_basis",
    "barlow_twins_loss",
    "cross_resolution_loss",
    "downsample_pairs",
    "pooled_embedding",
    "BlockMasks",
    "VelocityField",
    "block_masks",
    "causal_window_norm",
    "cfm_loss",
    "ema_post_update",
    "ema_update",
    "jepa_loss",
    "l2_normalize",
    "ot_coupling",
    "ot_plan",
    "sample_flow",
    "vicreg_covariance",
    "vicreg_invariance",
    "vicreg_variance",
]
