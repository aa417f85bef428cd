"""The report's plots (seaborn on matplotlib's Agg backend), each written as a PNG.

Every function takes plain data (DataFrames, dicts, lists) and writes one file; nothing here reads results or
imports the report. Score plots are per model: the report calls write_model_plots once per model.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from snrtune.naming import format_t  # noqa: E402
from snrtune.report.cost import FAILED  # noqa: E402

sns.set_theme(style="whitegrid", context="notebook")


def palette(order: list[str]) -> dict:
    """A colour per variant, in the given order; the base model grey."""
    colors = sns.color_palette("tab10", n_colors=max(len(order), 1))
    return {v: ("#555555" if v == "base" else colors[i % len(colors)]) for i, v in enumerate(order)}


def _labels(frame: pd.DataFrame, variants) -> list[str]:
    """Display names: a variant that failed (``status`` "did not learn" or "diverged") reads "NAME (STATUS)"."""
    status = dict(zip(frame["variant"], frame["status"])) if "status" in frame else {}
    return [f"{v} ({status[v]})" if status.get(v) in FAILED else v for v in variants]


def _errors(frame: pd.DataFrame) -> np.ndarray:
    """Asymmetric error bars (2 × n) from the ci_low/ci_high columns; 0 where there is no interval."""
    low = (frame["score"] - frame["ci_low"]).fillna(0).clip(lower=0)
    high = (frame["ci_high"] - frame["score"]).fillna(0).clip(lower=0)
    return np.vstack([low.to_numpy(), high.to_numpy()])


def _save(fig, folder: Path, name: str) -> str:
    fig.savefig(folder / name, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return name


# --- SNR heatmaps -----------------------------------------------------------------------------------------

def snr_grid(snr: dict) -> pd.DataFrame:
    """Layers × module types of SNR (mean over MoE experts)."""
    rows = [{"layer": m["layer"], "type": m["type"], "snr": m["snr"]} for m in snr["modules"]
            if m.get("layer") is not None and m.get("status", "ok") == "ok"]
    frame = pd.DataFrame(rows)
    if frame.empty:
        return frame
    return frame.pivot_table(index="layer", columns="type", values="snr", aggfunc="mean")


def snr_heatmap(snr: dict, selection: dict | None, folder: Path, name: str) -> str | None:
    grid = snr_grid(snr)
    if grid.empty:
        return None
    fig, ax = plt.subplots(figsize=(1.1 * grid.shape[1] + 3, 0.22 * grid.shape[0] + 2.4))
    low, high = np.nanmin(grid.to_numpy()), np.nanmax(grid.to_numpy())
    log = low > 0 and high / low > 20  # a few outliers would flatten a linear scale
    norm = matplotlib.colors.LogNorm(low, high) if log else None
    sns.heatmap(grid, ax=ax, cmap="mako", norm=norm, cbar_kws={"label": "SNR (log scale)" if log else "SNR"},
                linewidths=0.3, linecolor="white")
    if selection:
        chosen = {(m["layer"], m["type"]) for m in selection["modules"] if m.get("layer") is not None}
        for (layer, mtype) in chosen:
            if layer in grid.index and mtype in grid.columns:
                y, x = grid.index.get_loc(layer), grid.columns.get_loc(mtype)
                ax.add_patch(plt.Rectangle((x + 0.06, y + 0.06), 0.88, 0.88, fill=False, ec="#ff4f00", lw=2))
        kind = selection.get("selection", "snr")
        seed = f" (seed {selection.get('seed')})" if selection.get("seed") is not None else ""
        what = (f"top {selection.get('top_percent')}%" if kind == "snr" else
                f"{kind} selection{seed} as large as the top {selection.get('top_percent')}%")
        title = (f"{snr.get('model', '')}: SNR per module, {what} selected "
                 f"(orange boxes, {len(chosen)} modules, {selection.get('trainable_params', 0) / 1e6:.1f}M params)")
    else:
        title = f"{snr.get('model', '')}: SNR per module"
    ax.set_title(title, fontsize=11)
    ax.set_xlabel("module type")
    ax.set_ylabel("layer")
    ax.set_xticklabels(ax.get_xticklabels(), rotation=35, ha="right")
    ax.tick_params(axis="y", labelsize=8, labelrotation=0)
    return _save(fig, folder, name)


# --- scores -----------------------------------------------------------------------------------------------

def score_bars(agg: pd.DataFrame, tasks: list[str], folder: Path, name: str, colors: dict, order: list[str],
               title: str) -> str:
    """One model's score per variant and task (bars from 0, 95 % CI whiskers, base model dashed)."""
    fig, axes = plt.subplots(1, len(tasks), figsize=(3.2 + 2.6 * len(tasks), 0.45 * len(order) + 2.4), squeeze=False,
                             layout="constrained")
    for ax, task in zip(axes[0], tasks):
        sub = agg[agg.task == task].set_index("variant").reindex([v for v in order if v in set(agg.variant)])
        sub = sub.dropna(subset=["score"])
        if sub.empty:
            ax.set_visible(False)
            continue
        y = np.arange(len(sub))
        err = _errors(sub)
        ax.barh(y, sub["score"], xerr=err, color=[colors[v] for v in sub.index], capsize=3, height=0.7)
        ax.set_yticks(y, _labels(agg, sub.index) if ax is axes[0][0] else [""] * len(sub))
        ax.invert_yaxis()
        arrow = "↑" if bool(sub["higher_is_better"].iloc[0]) else "↓ (lower is better)"
        ax.set_title(f"{task}\n{sub['metric'].iloc[0]} {arrow}", fontsize=10)
        if "base" in sub.index:
            ax.axvline(sub.loc["base", "score"], color="#555555", ls="--", lw=1)
        for yi, value, up in zip(y, sub["score"], err[1]):
            ax.text(value + up, yi, f"  {value:.4g}", va="center", fontsize=8)
        ax.set_xlim(0, float((sub["score"] + err[1]).max()) * 1.3 or 1)  # bars from 0: honest lengths
    fig.suptitle(title)
    return _save(fig, folder, name)


def pareto_front(x: np.ndarray, y: np.ndarray, higher_is_better: bool) -> np.ndarray:
    """Indices of points no other point beats on both cost (lower x) and quality."""
    sign = 1 if higher_is_better else -1
    keep = []
    for i in range(len(x)):
        dominated = any((x[j] <= x[i] and sign * y[j] >= sign * y[i]) and (x[j] < x[i] or sign * y[j] > sign * y[i])
                        for j in range(len(x)))
        if not dominated:
            keep.append(i)
    return np.array(sorted(keep, key=lambda i: x[i]), dtype=int)


def label_groups(x, y, near_x: float = 0.25, near_y: float = 0.04) -> list[list[int]]:
    """Indices of points whose labels would overprint: in x order, a point joins a group when it is closer than
    ``near_x`` of the x range (a label is wide) and ``near_y`` of the y range to the group's last point."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    span_x = max(float(np.ptp(x)) if len(x) else 0.0, 1e-12)
    span_y = max(float(np.ptp(y)) if len(y) else 0.0, 1e-12)
    groups: list[list[int]] = []
    for i in np.argsort(x, kind="stable").tolist():
        for group in groups:
            j = group[-1]
            if abs(x[i] - x[j]) <= near_x * span_x and abs(y[i] - y[j]) <= near_y * span_y:
                group.append(i)
                break
        else:
            groups.append([i])
    return groups


def annotate_points(ax, names, x, y) -> None:
    """Label every point; labels of points that would overprint are stacked upwards with a leader line."""
    names, x, y = list(names), list(x), list(y)
    for group in label_groups(x, y):
        for k, i in enumerate(group):
            ax.annotate(names[i], (x[i], y[i]), textcoords="offset points", xytext=(6, 5 + 11 * k), fontsize=8,
                        arrowprops=dict(arrowstyle="-", lw=0.5, color="#777777") if k else None)


def quality_vs_cost(agg: pd.DataFrame, cost: pd.DataFrame, target: str, folder: Path, name: str,
                    colors: dict, title: str) -> str | None:
    """One model's target score against peak memory, GPU-hours (CPU-hours on a CPU) and trainable parameters,
    each with its Pareto front (``cost``: per variant, from snrtune.report.tables.costs)."""
    from snrtune.report.cost import compute_hours, peak_memory

    sub = agg[(agg.task == target) & (agg.variant != "base")].set_index("variant")
    memory, memory_label = peak_memory(cost)
    hours, hours_label = compute_hours(cost)
    cost = pd.DataFrame({"memory": memory, "hours": hours, "trainable_params": cost["trainable_params"]})
    sub = sub.join(cost, how="inner")
    if sub.empty:
        return None
    hib, metric = bool(sub["higher_is_better"].iloc[0]), sub["metric"].iloc[0]
    panels = [("memory", f"{memory_label} (GB)", 1e9), ("hours", hours_label, 1),
              ("trainable_params", "trainable parameters (M)", 1e6)]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.4), layout="constrained")
    for ax, (col, label, scale) in zip(axes, panels):
        data = sub.dropna(subset=[col, "score"])
        if data.empty:
            ax.set_visible(False)
            continue
        x, y = data[col].to_numpy() / scale, data["score"].to_numpy()
        front = pareto_front(x, y, hib)
        ax.plot(x[front], y[front], color="#999999", lw=1.5, ls="--", zorder=1, label="Pareto front")
        err = _errors(data)
        for i, (v, xi, yi) in enumerate(zip(data.index, x, y)):
            ax.errorbar(xi, yi, yerr=err[:, i:i + 1], fmt="o", color=colors[v], ms=8, capsize=3, zorder=2)
        annotate_points(ax, _labels(agg, data.index), x, y)
        base = agg[(agg.task == target) & (agg.variant == "base")]
        if not base.empty:
            ax.axhline(base["score"].iloc[0], color="#555555", ls=":", lw=1, label="base model")
        ax.set_xlabel(label)
        ax.set_ylabel(f"{target} {metric}")
        ax.margins(x=0.2, y=0.15)
    visible = [ax for ax in axes if ax.get_visible()]
    if visible:
        visible[0].legend(loc="best", fontsize=8)
    fig.suptitle(f"{title}: quality against cost ({'up' if hib else 'down'} and left is better; 95% CI)")
    return _save(fig, folder, name)


# --- loss curves ------------------------------------------------------------------------------------------

def loss_curves(frame: pd.DataFrame, folder: Path, name: str, colors: dict, title: str) -> str | None:
    """Training and evaluation loss, one line per variant and seed (``frame``: variant, seed, step, loss, kind)."""
    if frame.empty:
        return None
    frame = frame.assign(seed=frame["seed"].astype(str))
    kinds = [k for k in ("train loss", "eval loss") if k in set(frame.kind)]
    fig, axes = plt.subplots(1, len(kinds), figsize=(6.5 * len(kinds), 4.2), squeeze=False, layout="constrained")
    for ax, kind in zip(axes[0], kinds):
        sns.lineplot(frame[frame.kind == kind], x="step", y="loss", hue="variant", units="seed", estimator=None,
                     palette=colors, ax=ax, marker="o" if kind == "eval loss" else None, lw=1.4)
        ax.set_title(kind)
        ax.legend(fontsize=8, title=None)
    fig.suptitle(f"{title}: training and evaluation loss (one line per seed)")
    return _save(fig, folder, name)


# --- gain against forgetting ------------------------------------------------------------------------------

def gain_vs_forgetting(agg: pd.DataFrame, target: str, tasks: list[str], folder: Path, name: str, colors: dict,
                       title: str) -> str | None:
    others = [t for t in tasks if t != target]
    gain = agg[(agg.task == target) & (agg.variant != "base")].set_index("variant")["delta_vs_base"]
    if gain.dropna().empty or not others:
        return None
    fig, axes = plt.subplots(1, len(others), figsize=(5.2 * len(others), 4.4), squeeze=False, layout="constrained")
    for ax, task in zip(axes[0], others):
        sub = agg[(agg.task == task) & (agg.variant != "base")].set_index("variant")
        both = sub.join(gain.rename("gain"), how="inner").dropna(subset=["delta_vs_base", "gain"])
        if both.empty:
            ax.set_visible(False)
            continue
        hib = bool(sub["higher_is_better"].iloc[0])
        for v, row in both.iterrows():
            ax.scatter(row.delta_vs_base, row.gain, color=colors[v], s=70, zorder=2)
        annotate_points(ax, _labels(agg, both.index), both["delta_vs_base"], both["gain"])
        ax.axvline(0, color="#555555", lw=1)
        ax.axhline(0, color="#555555", lw=1)
        ax.set_xlabel(f"change in {task} {sub['metric'].iloc[0]} vs base\n"
                      f"({'left' if hib else 'right'} = forgot more)")
        ax.set_ylabel(f"gain on {target} vs base")
        ax.margins(0.25)
    fig.suptitle(f"{title}: what the gain on the target task cost in retention")
    return _save(fig, folder, name)


# --- learning against forgetting across the sweep candidates ---------------------------------------------

def learning_vs_forgetting(frame: pd.DataFrame, target: str, folder: Path, name: str, colors: dict,
                           title: str) -> str | None:
    """One model's sweep candidates (``frame``: snrtune.report.tables.candidate_frame, one model): one panel per
    retention task (each in its own metric's units), per variant a line through its learning rates in order,
    target gain against that task's retention change (both vs the base model, positive = better), each point
    labelled with its learning rate, the picked one ringed. Never a ranking."""
    frame = frame.dropna(subset=["target_gain", "retention_change"])
    if frame.empty:
        return None
    tasks = list(dict.fromkeys(frame["retention_task"]))
    fig, axes = plt.subplots(1, len(tasks), figsize=(6.8 * len(tasks), 5.2), squeeze=False, layout="constrained")
    for ax, task in zip(axes[0], tasks):
        names, xs, ys = [], [], []
        for variant, sub in frame[frame.retention_task == task].groupby("variant", sort=False):
            sub = sub.sort_values("learning_rate")
            color = colors.get(variant, "#333333")
            ax.plot(sub["retention_change"], sub["target_gain"], "-o", color=color, ms=7, lw=1.2, label=variant,
                    zorder=2)
            chosen = sub[sub["picked_by"] > 0]
            ax.scatter(chosen["retention_change"], chosen["target_gain"], s=260, facecolors="none",
                       edgecolors=color, linewidths=2, zorder=3)
            for r in sub.itertuples():
                picked = "" if not r.picked_by else (" picked" if r.picked_by == r.n_seeds
                                                     else f" picked {r.picked_by}/{r.n_seeds}")
                names.append(f"lr {r.learning_rate:g}{picked}")
                xs.append(r.retention_change)
                ys.append(r.target_gain)
        annotate_points(ax, names, xs, ys)
        ax.axvline(0, color="#555555", lw=1)
        ax.axhline(0, color="#555555", lw=1)
        ax.set_xlabel(f"change on {task} vs base, in its own metric (left = forgot more)")
        ax.set_ylabel(f"gain on {target} vs base")
        ax.margins(0.25)
        ax.legend(fontsize=8, title="method (ringed: picked)", title_fontsize=8)
    fig.suptitle(f"{title}: learning against forgetting across each method's learning-rate candidates "
                 "(mean over seeds; one panel per retention task; not a ranking)", fontsize=10)
    return _save(fig, folder, name)


def write_candidate_plot(folder: Path, slug: str, frame: pd.DataFrame, target: str, order: list[str],
                         model: str) -> list[tuple[str, str]]:
    """The learning–forgetting plot of one model's sweep candidates, as (file name, caption), or []."""
    colors = palette(list(dict.fromkeys(list(order) + sorted(set(frame["variant"]) - set(order)))))
    name = learning_vs_forgetting(frame, target, folder, f"learning_forgetting_{slug}.png", colors, model)
    caption = (f"{model}: gain on {target} against retention change for every evaluated learning-rate candidate "
               "(the ringed one was picked on validation loss; candidates are never ranked)")
    return [(name, caption)] if name else []


# --- all --------------------------------------------------------------------------------------------------

def write_model_plots(folder: Path, slug: str, agg: pd.DataFrame, cost: pd.DataFrame, losses: pd.DataFrame,
                      target: str, tasks: list[str], order: list[str]) -> list[tuple[str, str]]:
    """One model's plots (its rows of the aggregated scores, its cost per variant, its losses); returns
    (file name, caption) pairs in reading order. ``order``: the variants in display order."""
    model = str(agg["model"].iloc[0]) if not agg.empty else slug
    colors = palette(list(dict.fromkeys(list(order) + sorted(set(losses["variant"]) - set(order)))))
    images = [(score_bars(agg, tasks, folder, f"scores_{slug}.png", colors, order,
                          f"{model}: score per method (mean over seeds, 95% CI; dashed: base model)"),
               f"{model}: score per method and task")]
    for name, caption in [
        (quality_vs_cost(agg, cost, target, folder, f"quality_vs_cost_{slug}.png", colors, model),
         f"{model}: quality on {target} against cost, with the Pareto front"),
        (gain_vs_forgetting(agg, target, tasks, folder, f"gain_vs_forgetting_{slug}.png", colors, model),
         f"{model}: gain on the target task against change on retention tasks"),
        (loss_curves(losses, folder, f"loss_curves_{slug}.png", colors, model),
         f"{model}: training and evaluation loss"),
    ]:
        if name:
            images.append((name, caption))
    return images


def selection_tag(selection: dict) -> str:
    """``_t25`` for an SNR selection, ``_t25_kappa`` for another criterion's, ``_t25_random-s0`` with a seed."""
    t = selection.get("top_percent")
    tag = f"_t{format_t(t)}" if t is not None else f"_b{selection.get('budget_params')}"
    kind = selection.get("selection", "snr")
    if kind not in (None, "snr"):
        tag += f"_{kind}" + (f"-s{selection['seed']}" if selection.get("seed") is not None else "")
    return tag


def write_heatmaps(folder: Path, snrs: list[dict], selections: list[dict]) -> list[tuple[str, str]]:
    """An SNR heatmap per scan and selection of its model (the selected modules boxed)."""
    images = []
    for snr in snrs:
        chosen = [s for s in selections if s.get("model") in (None, snr.get("model"))]
        chosen.sort(key=lambda s: (s.get("top_percent") is None, s.get("top_percent") or 0,
                                   s.get("selection", "snr") != "snr", str(s.get("seed"))))
        for sel in chosen or [None]:
            tag = selection_tag(sel) if sel else ""
            name = snr_heatmap(snr, sel, folder, f"snr_heatmap_{snr.get('model', 'model')}{tag}.png".replace("/", "_"))
            if name and name not in {n for n, _ in images}:
                images.append((name, f"SNR per layer and module type ({name})"))
    return images
