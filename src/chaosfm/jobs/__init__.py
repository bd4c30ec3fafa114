"""One module per ``chaosfm`` command: its pydantic config and ``run(config) -> dict`` (the metrics
it wrote).

Jobs are the only code that reads config files, loads and fences data, writes run folders and
reports the progress of a whole job; the library below them (``data`` ... ``report``) takes
arrays, frames and config objects. Nothing imports a job but ``chaosfm.cli``, which imports the
one job a command needs after parsing its flags. What every job shares (the one cutoff rule,
loading, picking an asset, the run folder's ``config.yaml`` and ``meta.json``) is in ``_common``.

| command | module |
|---|---|
| ``datasets``, ``data check``, ``data stage``, ``data archive`` | ``data`` |
| ``evaluate`` | ``evaluate`` |
| ``demo`` | ``demo`` |
| ``tokenize`` (and ``inspect``) | ``tokenize`` |
| ``train`` | ``train`` |
| ``shard`` (and ``train --shards``) | ``shard`` |
| ``stage`` | ``stage`` |
| ``pipeline`` | ``pipeline`` |
| ``generate``, ``forecast`` | ``forecast`` |
| ``multitask`` | ``multitask`` |
| ``pretrain`` | ``pretrain`` |
| ``mvx`` | ``mvx`` |
| ``agent train``, ``agent eval`` | ``agent`` |
| ``leakage`` | ``leakage`` |
| ``stream`` | ``stream`` |
| ``tune`` | ``tune`` |
| ``backtest`` | ``backtest`` |
| ``bench chaos`` | ``bench_chaos`` |
| ``config size`` | ``config_size`` |
| ``greeks`` | ``greeks`` |
| ``inspect`` | ``inspect`` |
"""
