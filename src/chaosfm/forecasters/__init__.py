"""Everything that forecasts, behind one protocol: ``fit(frame) -> self`` and
``forecast(context, horizon, num_samples, *, key) -> Forecast``.

- the protocol: :class:`Forecast` (sample paths ``(S, H, C)``, quantiles, means, a long frame) and
  :class:`AbstractForecaster`;
- one registry of named forecasters (:data:`FORECASTERS`, :func:`make_forecaster`): the
  statistical baselines (random walk, GARCH, HAR-RV, AR, seasonal naive, last value), context parroting,
  and the forecasters below that a config names;
- learned baselines of chaotic flows, in the same registry: :class:`EchoStateNetwork`,
  :class:`NextGenerationReservoir` (NG-RC) and :class:`MLPFlow`, one-step maps iterated in
  closed loop, their hyperparameters chosen on the held-out end of the training rows;
- the learned forecaster of chaotic flows, :class:`FlowMambaForecaster` (``flow_mamba``: a Mamba-2
  over continuous states, its step head's readout refitted by ridge);
- token models trained in ``fit``, in the same registry: :class:`TokenMambaForecaster`
  (``token_mamba``) and :class:`TokenGPTForecaster` (``token_gpt``), quantile bins and a small
  Mamba-2 or GPT over their codes (:class:`CodeModelSettings`);
- forecast combination: :class:`Ensemble` (``ensemble``), a linear pool of registered
  forecasters with weights fitted by the pool's CRPS on the rows before the cutoff;
- calibration of any of them: :class:`ConformalForecaster` (split conformal on the rows before
  the cutoff, adaptive conformal inference online: ``aci``, ``agaci``), with ACI as
  ``aci_init``/``aci_update`` pure functions;
- model-backed forecasters: :class:`TokenForecaster` (a trained GPT or Mamba over a tokenizer's
  codes) and :class:`JEPAForecaster` (a frozen pretrained JEPA with ridge readouts), with
  :func:`probe_windows` for probes of the same encoder; :func:`load_forecaster` reads either back
  from a run folder through one registry (:data:`RUN_FORECASTERS`);
- the frame API: :class:`Forecaster` (``from_name``, ``load``, ``fit``, ``predict``) over long
  frames in the Nixtla, Chronos or chaosfm layout, and :func:`forecast_table`, the long table of
  the mean and quantiles per series, step and column.

The online predictor's forecaster is ``chaosfm.predictor.OnlinePredictorForecaster``: the predictor
sits above this package, so its adapter lives with it.
"""

from chaosfm._lazy import attach

__getattr__, __dir__, __all__ = attach(__name__, {
    "chaosfm.forecasters._base": ("AbstractForecaster", "Forecast", "require_key"),
    "chaosfm.forecasters._aci": (
        "ACI_LEVELS",
        "AGACI_GAMMAS",
        "ACIState",
        "aci_init",
        "aci_samples",
        "aci_update",
        "aci_weights",
        "usable_levels",
    ),
    "chaosfm.forecasters._calibrate": ("ConformalForecaster",),
    "chaosfm.forecasters._baselines": (
        "AutoRegressive",
        "Garch",
        "LastValue",
        "RandomWalk",
        "SeasonalNaive",
        "infer_season",
    ),
    "chaosfm.forecasters._har": ("HarRV",),
    "chaosfm.forecasters._mlp_flow": ("MLPFlow",),
    "chaosfm.forecasters._parroting": ("ContextParroting", "parrot"),
    "chaosfm.forecasters._reservoir": ("EchoStateNetwork", "NextGenerationReservoir"),
    "chaosfm.forecasters._registry": ("FORECASTERS", "make_forecaster"),
    "chaosfm.forecasters._frame_api": (
        "Forecaster",
        "forecast_table",
        "future_timestamps",
        "quantile_column",
        "series_key",
    ),
    # The model-backed forecasters bring the model and training code (seconds of imports): the
    # evaluator and the predictor need only the protocol and the baselines above.
    "chaosfm.forecasters._flow": ("FlowMambaForecaster", "FlowSettings"),
    "chaosfm.forecasters._token": ("TokenForecaster",),
    "chaosfm.forecasters._token_fit": ("CodeModelSettings", "TokenGPTForecaster", "TokenMambaForecaster"),
    "chaosfm.forecasters._market": ("CrossAssetForecaster", "MarketModelConfig"),
    "chaosfm.forecasters._ensemble": ("Ensemble",),
    "chaosfm.forecasters._jepa": ("JEPAForecaster", "probe_windows"),
    "chaosfm.forecasters._from_run": ("RUN_FORECASTERS", "load_forecaster"),
})
