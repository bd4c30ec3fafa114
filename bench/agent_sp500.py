"""The cross-sectional QR-DQN agent on sp500_stocks beside equal-weight and momentum on the same
fresh calendar (trained up to the row at 80%, traded after it plus a 5-row embargo to the last row;
each book a fund of 256 portfolios, one return per rebalance date).

    python bench/agent_sp500.py
"""
import time

t0 = time.time()
import jax  # noqa: E402
import numpy as np  # noqa: E402

from chaosfm.agents import AgentTrainConfig, EnvConfig, evaluate_agent, market_panel, train_agent
from chaosfm.data import load

frame = load("sp500_stocks")
stamps = np.sort(frame["timestamp"].unique())
fence = int(0.8 * len(stamps))
panel, stamps, names = market_panel(frame, fit_end=stamps[fence])
config = AgentTrainConfig(env=EnvConfig(n_assets=8, holding=5, episode_rebalances=12, cost_bps=2.0),
                          portfolios=32, iterations=200, updates_per_iteration=8)
print("fence row", fence, stamps[fence], "fresh from", stamps[fence + 5], "to", stamps[-1])
print(config)
train_key, eval_key = jax.random.split(jax.random.key(0))
t = time.time()
agent, history = train_agent(panel, config, first=0, last=fence, key=train_key)
train_s = time.time() - t
t = time.time()
result = evaluate_agent(panel, agent.params, config, first=fence + 5, last=len(stamps) - 1, key=eval_key,
                        n_portfolios=256, stamps=stamps)
eval_s = time.time() - t
print(f"train {train_s:.1f}s eval {eval_s:.1f}s total {time.time() - t0:.1f}s")
print("loss first/last 10:", history["loss"][:10].mean(), history["loss"][-10:].mean(),
      "train return first/last 20:", history["return"][:20].mean(), history["return"][-20:].mean(),
      "rows", history["first_row"].min(), history["last_row"].max())
pnl = result["agent"]["pnl"]
print(f"calendar: {len(result['rows'])} rebalances, holds ending {pnl['timestamp'].iloc[0]} to "
      f"{pnl['timestamp'].iloc[-1]}, {result['periods_per_year']:.1f} a year")
for name in ("agent", "equal_weight", "momentum"):
    s = result[name]
    print(f"{name:13s} mean/rebal {s['mean_return']:+.5f} sharpe {s['sharpe']:+.3f} ± {s['sharpe_se']:.3f} "
          f"CI [{s['sharpe_ci'][0]:+.3f}, {s['sharpe_ci'][1]:+.3f}] psr {s['psr']:.3f} hit {s['hit_rate']:.3f} "
          f"turnover/yr {s['turnover']:.1f} costs {s['costs']:.4f} maxdd {s['max_drawdown']:+.3f}"
          + (f" non_flat {s['non_flat_fraction']:.3f}" if "non_flat_fraction" in s else ""))
