"""Strate I: tokenizers that turn candles and trajectories into integer codes, and back.

- :class:`FSQTokenizer`: finite scalar quantization (1024 codes by default) behind a dilated
  causal CNN over candle features; one code per candle or per patch.
- :class:`VQVAETokenizer`: the same network around a 512-entry EMA codebook with commitment
  loss and dead-code restarts.
- :class:`BinTokenizer`: Chronos-style mean-abs scaling and uniform or quantile bins, per
  channel; for chaotic trajectories and any univariate series.

All implement :class:`AbstractTokenizer`: ``fit(frame, *, key, steps, fence)``, ``encode``,
``decode``, ``vocab_size``, ``save(dir)``, ``load(dir)``, ``trained_through``, and the contract a
sequence model and its forecaster use without asking which kind they hold: ``code_streams``
(training streams), ``context_input`` / ``forecast_output`` (a forecast's prompt and its
decoding), ``target_columns``. :func:`make_tokenizer` and :func:`load_tokenizer` go through the
one registry, :data:`TOKENIZERS`.
"""

from chaosfm.tokenizers._analysis import (
    CodeStream,
    code_distribution,
    code_values,
    forward_returns,
    ngram_counts,
    pattern_stats,
    rare_codes,
    return_stats,
)
from chaosfm.tokenizers._base import AbstractTokenizer, ContextInput
from chaosfm.tokenizers._bins import EOS, PAD, BinConfig, BinTokenizer, mean_abs_scale
from chaosfm.tokenizers._candle import AbstractCandleTokenizer, CandleConfig
from chaosfm.tokenizers._cnn import CausalConv, CausalStack, Decoder, Encoder, causal_conv_reference
from chaosfm.tokenizers._fsq import FSQConfig, FSQTokenizer, FSQuantizer
from chaosfm.tokenizers._health import (
    code_counts,
    codebook_usage,
    encodable,
    encode_throughput,
    health_table,
    perplexity,
    reconstruction_errors,
    tokenizer_health,
)
from chaosfm.tokenizers._registry import TOKENIZERS, load_tokenizer, make_tokenizer
from chaosfm.tokenizers._vqvae import EMACodebook, VQVAEConfig, VQVAETokenizer

__all__ = [
    "EOS",
    "PAD",
    "AbstractCandleTokenizer",
    "AbstractTokenizer",
    "BinConfig",
    "BinTokenizer",
    "CandleConfig",
    "CodeStream",
    "CausalConv",
    "CausalStack",
    "Decoder",
    "EMACodebook",
    "Encoder",
    "FSQConfig",
    "FSQTokenizer",
    "FSQuantizer",
    "TOKENIZERS",
    "ContextInput",
    "VQVAEConfig",
    "VQVAETokenizer",
    "causal_conv_reference",
    "code_counts",
    "code_distribution",
    "code_values",
    "codebook_usage",
    "encodable",
    "encode_throughput",
    "forward_returns",
    "health_table",
    "load_tokenizer",
    "make_tokenizer",
    "mean_abs_scale",
    "ngram_counts",
    "pattern_stats",
    "perplexity",
    "rare_codes",
    "reconstruction_errors",
    "return_stats",
    "tokenizer_health",
]
