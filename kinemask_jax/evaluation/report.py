"""The evaluation's report: report.md with the results table, the metrics' sentences and plots.

The table's columns and the sentences that explain them come from the metric table (evaluation/metrics.py),
so a registered metric shows up here without a change.
"""

from __future__ import annotations

import json
import math
import os

import numpy as np

from kinemask_jax.evaluation import metrics


def columns() -> list[tuple[str, str, str]]:
  """(key, header with its arrow, format) of every metric, in table order."""
  return [(m.key, f"{m.header} {'↑' if m.higher_is_better else '↓'}", m.fmt) for m in metrics.METRICS.values()]


def table(results: dict) -> str:
  """The results as a markdown table, one row per method."""
  def cell(value, fmt):
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else fmt.format(value)
  cols = columns()
  lines = ["| method | " + " | ".join(h for _, h, _ in cols) + " |", "|---" * (len(cols) + 1) + "|"]
  for name, r in results.items():
    lines.append(f"| {name} | " + " | ".join(cell(r.get(k), f) for k, _, f in cols) + " |")
  return "\n".join(lines)


def _line_plot(path: str, series, xlabel: str, ylabel: str, title: str) -> None:
  """One PNG with a line per (label, x, y) of `series`."""
  import matplotlib.pyplot as plt
  fig, ax = plt.subplots(figsize=(6, 4))
  for label, x, y in series:
    ax.plot(list(x), y, marker="o", label=label)
  ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
  ax.grid(alpha=0.3)
  ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def _text_following_line(results: dict) -> str:
  r = results.get("KineMask", {})
  if not r.get("text_following_pairs"):
    return "Text following: not measured (no prompt, or no example with a hit)."
  return (f"Text following (KineMask): the same image and push described as hitting the first-hit object or as "
          f"hitting nothing; the hit object moved more under its own description in "
          f"{r['text_following_rate']:.2f} of {r['text_following_pairs']} pairs (chance 0.5; one-sided binomial "
          f"p = {r['text_following_p']:.3f}).")


def write_report(out_dir: str, results: dict, meta: dict, strips: dict, examples: list[dict]) -> str:
  """Writes report.md, eval/metrics.json and the plots eval/{motion_error,causality,samples}.png."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  plots = os.path.join(out_dir, "eval")
  os.makedirs(plots, exist_ok=True)
  with open(os.path.join(plots, "metrics.json"), "w") as f:
    json.dump(dict(meta=meta, results=results), f, indent=1)

  _line_plot(os.path.join(plots, "motion_error.png"),
             [(name, range(len(r["motion_error_curve"])), r["motion_error_curve"]) for name, r in results.items()],
             "frame", "controlled-object centroid error (px)", "Motion fidelity per frame")
  _line_plot(os.path.join(plots, "causality.png"),
             [(f"{name} (ρ = {r['causality_rho']:.2f})", meta["speeds_mps"], r["causality_displacement_px"])
              for name, r in results.items() if "causality_displacement_px" in r],
             "input speed (m/s)", "hit object's largest displacement (px)", "Causality sweep")

  names = list(strips)
  n_ex = min(len(examples), min(len(v) for v in strips.values()))
  if n_ex:
    t = strips[names[0]][0].shape[0]
    fig, axes = plt.subplots(len(names) * n_ex, 1, figsize=(t * 0.9, len(names) * n_ex * 0.95), squeeze=False)
    for i in range(n_ex):
      for j, name in enumerate(names):
        ax = axes[i * len(names) + j, 0]
        ax.imshow(np.concatenate(list(strips[name][i]), axis=1), interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_ylabel(name, rotation=0, ha="right", va="center", fontsize=7)
      axes[i * len(names), 0].set_title(f"example {i}: {examples[i]['caption']}", fontsize=7, loc="left")
    fig.tight_layout()
    fig.savefig(os.path.join(plots, "samples.png"), dpi=110)
    plt.close(fig)

  text = [
      "# KineMask evaluation", "",
      f"Model: `{meta['workdir']}` at step {meta['checkpoint_step']}; {meta['examples']} `{meta['split']}` examples "
      f"({' x '.join(map(str, meta['video'][:3]))}), only frame 0's velocity given; text: {meta['prompt']}; "
      f"{meta['num_steps']} sampler steps. {meta['machine']}; {meta['seconds']:.0f} s on {meta['date']}.", "",
      table(results), "",
      " ".join(m.about for m in metrics.METRICS.values() if m.about),
      f"The move threshold is {meta['move_threshold_px']:.2f} px; the speed sweep runs at {list(meta['speeds_mps'])} "
      f"m/s over {meta['causality_examples']} examples.", "",
      _text_following_line(results), "",
      "![motion error per frame](eval/motion_error.png) ![causality sweep](eval/causality.png)", "",
      "![samples](eval/samples.png)", "",
  ]
  path = os.path.join(out_dir, "report.md")
  with open(path, "w") as f:
    f.write("\n".join(text))
  return path
