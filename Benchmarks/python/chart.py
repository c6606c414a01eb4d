"""Draws one chart per suite from the benchmark's JSON: bench-results/<suite>.png.

Each case is a group of horizontal bars (one per implementation, the engine first), on a log scale,
so figures that differ by orders of magnitude stay readable. Run by the Swift harness after it has
written the JSON; needs matplotlib (make deps installs it with pip when it is missing).
"""
import json
import os
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main(path, out_dir):
    with open(path) as f:
        data = json.load(f)
    suites = {}
    for r in data["results"]:
        if r.get("median") is None or r["median"] <= 0:
            continue
        suites.setdefault(r["suite"], []).append(r)
    machine = data["machine"]
    for suite, rows in suites.items():
        cases = list(dict.fromkeys(r["case"] for r in rows))
        fig, axes = plt.subplots(len(cases), 1, figsize=(10, 1.0 + 0.45 * len(rows) + 0.5 * len(cases)))
        if len(cases) == 1:
            axes = [axes]
        for ax, case in zip(axes, cases):
            case_rows = [r for r in rows if r["case"] == case]
            labels = [r["impl"] for r in case_rows]
            values = [r["median"] for r in case_rows]
            errors = [[r["median"] - r["min"] for r in case_rows], [r["max"] - r["median"] for r in case_rows]]
            # This library's rows are the ones named "engine …" (as in the tables): drawn in colour.
            colors = ["#d9480f" if r["impl"].startswith("engine") else "#868e96" for r in case_rows]
            ax.barh(labels, values, xerr=errors, color=colors, capsize=2)
            ax.invert_yaxis()
            ax.set_xscale("log")
            ax.set_title(f"{case} ({case_rows[0]['unit']})", fontsize=9, loc="left")
            ax.tick_params(labelsize=8)
        fig.suptitle(f"{suite}: median with min–max, {machine['cpus']} CPUs, {machine['date']}", fontsize=10)
        fig.tight_layout()
        target = os.path.join(out_dir, f"{suite}.png")
        fig.savefig(target, dpi=110)
        plt.close(fig)
        print(f"wrote {target}")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
