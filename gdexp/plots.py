"""Figures for descent runs: contours with paths, loss curves, basin atlases and lr sweeps."""
from __future__ import annotations

import re
import textwrap
from pathlib import Path
from typing import Optional

import numpy as np
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.cm import ScalarMappable
from matplotlib.colors import ListedColormap, LogNorm, Normalize
from matplotlib.figure import Figure  # no pyplot: nothing opens a window, no backend to set
from matplotlib.image import imsave
from matplotlib.markers import MarkerStyle
from matplotlib.transforms import Affine2D
from matplotlib.ticker import (FixedLocator, LogFormatterSciNotation, LogLocator, MaxNLocator,
                               NullFormatter, NullLocator, ScalarFormatter)

from .formatting import distinct
from .objectives import Objective

FIGSIZE = (6.0, 4.5)
DPI = 100
MAX_LEGEND = 10      # more labelled lines than this get no legend
LEGEND_CHARS = 96    # characters of 8-point legend text that fit across the figure
GRID = 200           # contour grid points per axis
LEVELS = 20          # contour levels, log spaced
LEVEL_DECADES = 4    # the lowest level sits this many decades below the grid's range of f
# Plotted magnitudes are kept within [FLOOR, CEILING]: a log axis spanning more decades
# than that overflows in matplotlib's margins and tick locator (ticks at 1e308 and beyond).
FLOOR = 1e-100
CEILING = 1e100
DIVERGED_COLOR = "tab:red"
MAX_STEPS_COLOR = "tab:gray"
# paths coloured by a value (lr): plasma without its yellow end, which the viridis contours
# share
PATH_CMAP = colormaps["plasma"].resampled(256)(np.linspace(0.0, 0.82, 256))


# ---------------------------------------------------------------- figures

def contour_paths(objective: Objective, paths, path, labels=None, title=None, starts=True,
                  groups=None, values=None, value_label="learning rate") -> Path:
    """Log-spaced contours of a 2-D objective over its plot window, with descent paths on top.

    ``paths`` is an array (p, 2, n) or a list of (p_i, 2) arrays. Non-finite points are
    dropped and each path is clipped to the plot window: a path that leaves it ends at the
    edge with an outward triangle, so a diverging path never draws across the contour.
    ``groups`` (one int per path) colours paths by group, e.g. all starts of one run alike;
    ``labels`` then names the groups, else the paths. ``values`` (one number per path, e.g.
    its learning rate) colours the paths on a colour scale with a colour bar instead, for
    scans with too many paths for a legend.
    """
    _require_2d(objective, "contour_paths")
    lines = _as_path_list(paths)
    group = np.arange(len(lines)) if groups is None else np.asarray(groups, dtype=int)
    n_groups = int(group.max()) + 1 if len(lines) else 0
    lower, upper = (np.asarray(c, dtype=float) for c in objective.plot_window)
    fig, ax = _figure()
    _draw_contours(fig, ax, objective, lower, upper)
    if values is not None:
        values = np.asarray(values, dtype=float).ravel()
        scale = _value_scale(values)
        colors = [scale.to_rgba(v) for v in values]
        labels = None
    else:
        palette = _colors(n_groups)
        colors = [palette[g] for g in group]
    if labels is not None and n_groups > MAX_LEGEND:
        labels = None  # a legend that long hides the figure and cannot be read
    thin = len(lines) > MAX_LEGEND
    labelled, left = set(), False
    for xy, g, color in zip(lines, group, colors):
        if len(xy) == 0:
            continue
        label = labels[g] if labels is not None and g not in labelled else None
        labelled.add(g)
        pieces, exits = _clip_to_window(xy, lower, upper)
        for piece in pieces:
            ax.plot(piece[:, 0], piece[:, 1], "-", color=color, lw=0.6 if thin else 1.2,
                    alpha=0.6 if thin else 1.0, label=label)
            label = None
        inside = xy[_inside(xy, lower, upper)]  # a marker at every step taken in the window
        ax.plot(inside[:, 0], inside[:, 1], "o", color=color, ms=1.5 if thin else 3,
                alpha=0.6 if thin else 1.0, ls="none")
        for point, angle in exits:
            ax.plot(*point, marker=_arrowhead(angle), color=color, mec="k", mew=0.5,
                    ms=6 if thin else 9, ls="none", zorder=6, clip_on=False)
            left = True
        if starts and _inside(xy[:1], lower, upper)[0]:
            ax.plot(*xy[0], "o", color=color, mec="white", ms=4 if thin else 7, zorder=4)
        if _inside(xy[-1:], lower, upper)[0]:
            ax.plot(*xy[-1], "x", color=color, ms=4 if thin else 8, mew=2, zorder=4)
    _draw_minima(ax, objective)
    if left:  # a legend entry for the exit mark
        ax.plot([], [], marker=_arrowhead(0.0), color="0.6", mec="k", mew=0.5, ms=8,
                ls="none", label="left the window")
    ax.set_xlim(lower[0], upper[0])
    ax.set_ylim(lower[1], upper[1])
    ax.set_xlabel("$x_1$")
    ax.set_ylabel("$x_2$")
    ax.set_title(title if title is not None else objective.name)
    if values is not None:
        fig.colorbar(scale, ax=ax, location="bottom", pad=0.02, shrink=0.8,
                     label=value_label + " of the path")
    _legend(fig, ax)
    return _save(fig, path)


def curves(steps, loss, grad_norm, path, labels=None, f_min=None, title=None,
           stops=None, diverged=None, values=None, value_label="learning rate",
           max_legend: int = MAX_LEGEND) -> Path:
    """Loss (or f − f_min) and gradient norm against step, one line per column, log y.

    ``values`` (one number per column, e.g. its learning rate) colours the lines on a colour
    scale with a colour bar instead of a legend, for scans with too many lines for one; a
    legend names at most ``max_legend`` lines.

    ``stops`` (optional, one step per column, e.g. ``result.steps``) ends each line where its
    start stopped; otherwise a stopped start's frozen values run on as a flat tail.
    ``diverged`` (one bool per column; by default a column that climbs above 1e3 times its
    first value, or turns non-finite) marks the columns whose values run away: the y axes keep
    to the other columns, and a diverged line ends in a red × where it leaves the axes.
    """
    steps = np.asarray(steps, dtype=float)
    loss, grad_norm = _columns(loss), _columns(grad_norm)
    diverged = (_runs_away(loss) if diverged is None
                else np.broadcast_to(np.asarray(diverged, dtype=bool), loss.shape[1:]))
    if f_min is not None:
        loss = _gap(loss, f_min)
    if stops is not None:
        after = steps[:, None] > np.asarray(stops, dtype=float)[None, :]
        loss, grad_norm = np.where(after, np.nan, loss), np.where(after, np.nan, grad_norm)
    scale = colors = None
    if values is not None:
        scale = _value_scale(np.asarray(values, dtype=float).ravel())
        colors, labels = [scale.to_rgba(v) for v in np.asarray(values, dtype=float).ravel()], None
    fig, (ax_f, ax_g) = _figure(2, sharex=True)
    for ax, column_values, these in ((ax_f, loss, labels), (ax_g, grad_norm, None)):
        _plot_columns(ax, steps, column_values, these, diverged, yscale=_log_or_symlog,
                      colors=colors, many=loss.shape[1] > max_legend)
    ax_f.set_ylabel(_loss_label("f", f_min))
    ax_g.set_ylabel("‖∇f‖")
    ax_g.set_xlabel("step")
    if scale is not None:
        fig.colorbar(scale, ax=[ax_f, ax_g], location="bottom", pad=0.02, shrink=0.8,
                     aspect=40, label=value_label + " of the line")
    return _finish(fig, ax_f, path, labels, loss.shape[1], title, max_legend)


def _runs_away(values) -> np.ndarray:
    """Per column: did it turn non-finite, or climb above 1e3 times its first |value|?"""
    v = _columns(values)
    with np.errstate(all="ignore"):
        first = np.abs(v[0])
        bad = ~np.isfinite(v).all(axis=0) & np.isfinite(v[0])
        climbed = np.nanmax(np.where(np.isfinite(v), v, -np.inf), axis=0) > 1e3 * first
    return bad | (climbed & np.isfinite(first) & (first > 0))


def atlas(objective: Objective, x0, labels, path, title=None) -> Path:
    """Start points coloured by outcome label: over the contours in 2-D, else a bar chart."""
    if objective.dim != 2:
        return bar_fractions(labels, path, title=title)
    x0 = np.asarray(x0, dtype=float).reshape(2, -1)
    labels = np.asarray(labels, dtype=str)
    lower, upper = (np.asarray(c, dtype=float) for c in objective.plot_window)
    finite = np.isfinite(x0).all(axis=0)
    if finite.any():  # widen the view so that every start is shown whole
        low, high = x0[:, finite].min(axis=1), x0[:, finite].max(axis=1)
        pad = 0.03 * (high - low)
        lower, upper = np.minimum(lower, low - pad), np.maximum(upper, high + pad)
    fig, ax = _figure()
    _draw_contours(fig, ax, objective, lower, upper)
    order = _label_order(labels)
    for name, color in zip(order, _label_colors(order)):
        pts = x0[:, labels == name]
        ax.scatter(pts[0], pts[1], s=14, color=color, edgecolors="none", label=name, zorder=3)
    _draw_minima(ax, objective)
    ax.set_xlim(lower[0], upper[0])
    ax.set_ylim(lower[1], upper[1])
    ax.set_xlabel("$x_1$")
    ax.set_ylabel("$x_2$")
    ax.set_title(title if title is not None else f"{objective.name}: outcome by start")
    handles, names = ax.get_legend_handles_labels()  # below the axes: starts fill the window
    fig.legend(handles, names, loc="outside lower center", ncols=min(len(names), 3), fontsize=8)
    return _save(fig, path)


def bar_fractions(labels, path, title=None) -> Path:
    """Horizontal bars: the fraction of starts carrying each label, with the counts."""
    labels = np.asarray(labels, dtype=str)
    order = _label_order(labels)
    counts = np.array([np.sum(labels == name) for name in order])
    fractions = counts / max(labels.size, 1)
    fig, ax = _figure()
    y = np.arange(len(order))[::-1]  # first label on top
    ax.barh(y, fractions, color=_label_colors(order))
    for yi, frac, count in zip(y, fractions, counts):
        ax.text(frac, yi, f" {count}", va="center", fontsize=8)
    ax.set_yticks(y, order)
    ax.set_xlim(0, 1.1)
    ax.set_xlabel(f"fraction of starts (n = {labels.size})")
    if title is not None:
        ax.set_title(title)
    return _save(fig, path)


def outcome_vs_lr(lr, steps, final_loss, outcomes, path, f_min=None, title=None) -> Path:
    """Steps taken and final loss against the learning rate (log x), one marker per run.

    Diverged runs (or any with a non-finite loss) are red crosses, drawn at the top of the
    loss panel; runs that used up their budget are grey triangles.
    """
    lr = np.asarray(lr, dtype=float).ravel()
    steps = np.broadcast_to(np.asarray(steps, dtype=float).ravel(), lr.shape)
    loss = np.broadcast_to(np.asarray(final_loss, dtype=float).ravel(), lr.shape)
    outcomes = np.broadcast_to(np.asarray(outcomes, dtype=str).ravel(), lr.shape)
    if f_min is not None:
        loss = _gap(loss, f_min)
    diverged = (outcomes == "diverged") | ~np.isfinite(loss)
    budget = (outcomes == "max_steps") & ~diverged
    other = ~diverged & ~budget
    fig, (ax_s, ax_f) = _figure(2, sharex=True)
    kinds = ((other, "o", "tab:blue", "converged"), (budget, "^", MAX_STEPS_COLOR, "max_steps"),
             (diverged, "x", DIVERGED_COLOR, "diverged"))
    for mask, marker, color, name in kinds:
        if mask.any():
            ax_s.plot(lr[mask], steps[mask], marker, color=color, ms=5, ls="none", label=name)
    for mask, marker, color, _ in kinds[:2]:
        if mask.any():
            ax_f.plot(lr[mask], _clip(loss[mask]), marker, color=color, ms=5, ls="none")
    ax_s.set_xscale("log")
    _narrow_log(ax_s.xaxis, lr)
    if np.all(steps > 0):
        ax_s.set_yscale("log")
        _narrow_log(ax_s.yaxis, steps)
    else:  # a start can stop at step 0
        _symlog(ax_s, steps)
        ax_s.set_ylim(bottom=-0.3)
    _log_or_symlog(ax_f, loss[~diverged])
    if diverged.any():  # their loss has no place on the axis: pin them above the data
        _headroom(ax_f, 0.15)
        ax_f.plot(lr[diverged], np.full(diverged.sum(), 0.96), "x", color=DIVERGED_COLOR, ms=6,
                  mew=1.5, transform=ax_f.get_xaxis_transform(), clip_on=False)
        ax_f.text(0.01, 0.96, "diverged", color=DIVERGED_COLOR, fontsize=8, va="center",
                  transform=ax_f.transAxes)
    ax_s.set_ylabel("steps")
    ax_f.set_ylabel(_loss_label("final f", f_min))
    ax_f.set_xlabel("learning rate")
    _legend(fig, ax_s)
    if title is not None:
        ax_s.set_title(title)
    return _save(fig, path)


def taylor_ratio(steps, ratio, path, labels=None, title=None) -> Path:
    """Actual decrease over predicted decrease per step, with the ideal ratio 1 marked."""
    steps = np.asarray(steps, dtype=float)
    ratio = _columns(ratio)
    fig, ax = _figure()
    ax.axhline(1.0, color="k", lw=0.8, ls="--", zorder=1)
    _plot_columns(ax, steps, ratio, labels)
    finite = ratio[np.isfinite(ratio)]
    if finite.size and np.abs(finite).max() > 10:  # a few wild steps would flatten the rest
        _symlog(ax, finite)
    ax.set_xlabel("step")
    ax.set_ylabel("actual / predicted decrease")
    return _finish(fig, ax, path, labels, ratio.shape[1], title)


def ecdf(steps, fraction, path, labels=None, title=None) -> Path:
    """Fixed-target ECDF: the fraction of (start, target) pairs solved within each budget."""
    fig, ax = _figure()
    steps, fraction = np.asarray(steps, dtype=float), np.asarray(fraction, dtype=float)
    if steps.size:
        ax.step(np.maximum(steps, 1.0), fraction, where="post", color="tab:blue")
    ax.set_xscale("log")
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("steps (log)")
    ax.set_ylabel("fraction of (start, target) pairs reached")
    ax.set_title(title if title is not None else "fixed-target ECDF")
    return _save(fig, path)


def _median_columns(values):
    v = np.asarray(values, dtype=float)
    if v.ndim == 1 or v.shape[1] == 1:
        return v.reshape(len(v), -1)[:, 0]
    with np.errstate(all="ignore"):
        v = np.where(np.isfinite(v), v, np.nan)
        ok = np.isfinite(v).any(axis=1)
        out = np.full(len(v), np.nan)
        out[ok] = np.nanmedian(v[ok], axis=1)
    return out


# one legend serves both panels of a learning figure: a colour per data split
LEARNING_COLORS = {"mini-batch": "tab:gray", "training": "tab:blue", "test": "tab:orange"}


def learning_curves(trace, path, f_min=None, title=None) -> Path:
    """A learning run's curves (median over starts): training loss (full batch), mini-batch
    loss, held-out loss; below, train and test accuracy when the task is classification."""
    accuracy = [k for k in ("accuracy", "test_accuracy") if k in trace.evals]
    fig, axes = _figure(2 if accuracy else 1, sharex=True)
    ax_f = axes[0] if accuracy else axes
    lines = []
    if trace.batch_loss is not None:
        lines.append(("mini-batch loss", trace.batch_steps, trace.batch_loss, 0.35))
    lines.append(("training loss", trace.steps, trace.loss, 1.0))
    if "test_loss" in trace.evals:
        lines.append(("test loss", trace.eval_steps, trace.evals["test_loss"], 1.0))
    shown = []
    for label, steps, values, alpha in lines:
        v = _median_columns(values)
        if f_min is not None and label != "test loss":
            v = _gap(v, f_min)
        elif f_min is not None:  # f* is the training loss's minimum: no gap to the held-out
            label = "test loss (itself, not − f*)"  # loss, which may lie below it
        shown.append(v)
        ax_f.plot(steps, v, lw=1.0 if alpha < 1 else 1.6, alpha=alpha, label=label,
                  color=LEARNING_COLORS[label.split()[0]])
    _log_or_symlog(ax_f, np.concatenate(shown)[:, None])
    ax_f.set_ylabel("loss" if f_min is None else f"training loss − f*\n(f* = {f_min:.6g})")
    if accuracy:
        for k in accuracy:
            which = "test" if k == "test_accuracy" else "training"
            axes[1].plot(trace.eval_steps, _median_columns(trace.evals[k]), "--",
                         color=LEARNING_COLORS[which], label=f"{which} accuracy")
        axes[1].set_ylabel("accuracy")
        axes[1].set_xlabel("step")
    else:
        ax_f.set_xlabel("step")
    _legend(fig, *(axes if accuracy else [ax_f]))
    if title is not None:
        ax_f.set_title(title)
    return _save(fig, path)


def final_spread(final_loss, path, test_accuracy=None, title=None) -> Path:
    """Histogram of the final training loss over many starts (log bins), and of the final
    test accuracy when there is one: how far apart seeded inits of one model end."""
    f = np.asarray(final_loss, dtype=float)
    f = f[np.isfinite(f)]
    fig, axes = _figure(2 if test_accuracy is not None else 1)
    ax = axes[0] if test_accuracy is not None else axes
    if f.size:
        low, high = max(f.min(), FLOOR), max(f.max(), FLOOR)
        bins = np.geomspace(low, high * 1.0001, 30) if high > low * 1.0001 else 10
        ax.hist(np.maximum(f, FLOOR), bins=bins, color="tab:blue")
        if high > low * 1.0001:
            ax.set_xscale("log")
    ax.set_xlabel(f"final training loss ({f.size} starts; min {f.min():.3g}, "
                  f"median {np.median(f):.3g}, max {f.max():.3g})" if f.size else
                  "final training loss (none finite)")
    ax.set_ylabel("starts")
    if test_accuracy is not None:
        acc = np.asarray(test_accuracy, dtype=float)
        acc = acc[np.isfinite(acc)]
        if acc.size:
            # within [0, 1]: starts that all end at one accuracy get a bin around it
            # (matplotlib would span value ± 0.5)
            low, high = float(acc.min()), float(acc.max())
            if high - low < 0.01:
                mid = min(max((low + high) / 2, 0.005), 0.995)
                low, high = mid - 0.005, mid + 0.005
            axes[1].hist(acc, bins=20, range=(low, high), color="tab:green")
            axes[1].set_xlim(low, high)
        axes[1].set_xlabel(f"final test accuracy (min {acc.min():.3g}, median "
                           f"{np.median(acc):.3g}, max {acc.max():.3g})" if acc.size else
                           "final test accuracy (none finite)")
        axes[1].set_ylabel("starts")
    if title is not None:
        ax.set_title(title)
    return _save(fig, path)


def metric_lines(series: dict, path, ylabel: str, title=None, logy=True,
                 max_legend: int = 16) -> Path:
    """One line per labelled (steps, values) series, e.g. one run's metric history each."""
    fig, ax = _figure()
    colors = _colors(len(series))
    for (label, (steps, values)), color in zip(series.items(), colors):
        style = "--" if "inverse_time" in label else "-"
        ax.plot(steps, np.maximum(values, FLOOR) if logy else values, style, color=color,
                lw=1.2, label=label)
    if logy:
        ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel(ylabel)
    if len(series) <= max_legend:
        _legend(fig, ax, ncols=3 if len(series) > 6 else 2, fontsize=7)
    if title is not None:
        ax.set_title(title)
    return _save(fig, path)


def points(x, y, labels, path, xlabel: str, ylabel: str, title=None, logx=True,
           logy=True, diverged=None) -> Path:
    """Markers joined by lines, one series per label: e.g. final loss against batch size.

    ``diverged`` (one bool per point) takes those points off the lines and the y scale: they
    are red crosses pinned to the top of the axes, at their x."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    labels = np.asarray(labels, dtype=str)
    diverged = (np.zeros(x.shape, bool) if diverged is None
                else np.asarray(diverged, dtype=bool))
    fig, ax = _figure()
    kept = ~diverged
    for (name, (xs, ys)), color in zip(
            _group_points(x[kept], y[kept], labels[kept]).items(),
            _colors(len(set(labels[kept])))):
        ax.plot(xs, np.maximum(ys, FLOOR) if logy else ys, "-o", color=color, label=name)
    if logx:
        ax.set_xscale("log", base=2)
    if logy:
        ax.set_yscale("log")
    if diverged.any():
        _headroom(ax, 0.15)
        ax.plot(x[diverged], np.full(diverged.sum(), 0.96), "x", color=DIVERGED_COLOR, ms=8,
                mew=2, ls="none", transform=ax.get_xaxis_transform(), clip_on=False,
                label="diverged")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    _legend(fig, ax)
    if title is not None:
        ax.set_title(title)
    return _save(fig, path)


def _group_points(x, y, labels) -> dict:
    out = {}
    for xi, yi, li in sorted(zip(x, y, labels)):
        out.setdefault(li, ([], []))
        out[li][0].append(xi)
        out[li][1].append(yi)
    return out


MAX_PATHS = 100  # more starts than this: the contour shows an even subset of their paths


def sharpness_curves(steps, sharpness, threshold, loss_steps, loss, path, labels=None,
                     title=None, stops=None) -> Path:
    """Sharpness λmax(∇²f(x_k)) against step with each column's stability threshold (2/η for
    GD) as a dashed line of the same colour, and the loss below, one line per column, log y."""
    steps = np.asarray(steps, dtype=float)
    lam, thr = _columns(sharpness), _columns(threshold)
    loss_steps = np.asarray(loss_steps, dtype=float)
    loss = _columns(loss)
    if stops is not None:
        loss = np.where(loss_steps[:, None] > np.asarray(stops, dtype=float)[None, :],
                        np.nan, loss)
    fig, (ax_s, ax_f) = _figure(2, sharex=True)
    _plot_columns(ax_s, steps, lam, labels)
    for j, color in enumerate(_colors(lam.shape[1])):
        level = thr[np.isfinite(thr[:, j]), j]
        if level.size and np.all(level == level[0]):  # a constant rate: one line
            ax_s.axhline(level[0], color=color, ls="--", lw=1.0)
        elif level.size:  # a schedule moves the threshold with the rate
            ax_s.plot(steps, _clip(thr[:, j]), color=color, ls="--", lw=1.0)
    ax_s.set_yscale("log", nonpositive="mask")
    # a diverging start's sharpness would squash the thresholds into one line: what matters
    # is near them, so the axis ends a decade above the highest (such lines leave at the top)
    top = 10 * np.nanmax(thr) if np.isfinite(thr).any() else np.inf
    finite = lam[np.isfinite(lam) & (lam > 0)]
    if finite.size and finite.max() > top:
        ax_s.set_ylim(min(finite.min(), np.nanmin(thr)) / 1.5, top)
    ax_s.set_ylabel("sharpness λmax\n(--: threshold)")
    _plot_columns(ax_f, loss_steps, loss, None)
    _log_or_symlog(ax_f, loss)
    ax_f.set_ylabel("f")
    ax_f.set_xlabel("step")
    return _finish(fig, ax_s, path, labels, lam.shape[1], title)


def run_figures(out_dir, objective: Objective, result, diag=None, title=None) -> list[Path]:
    """The figures of one run, chosen by what it has: every run gets its curves; 2-D runs a
    contour with paths; many starts an atlas and an ECDF; a learning-rate axis the outcome
    against lr; the Taylor ratio when the diagnostics computed it; the sharpness with its
    thresholds and the loss when the run recorded a sharpness curve (up to MAX_LEGEND starts)."""
    out_dir = Path(out_dir)
    n = result.n
    f_min = objective.f_min if objective.global_minima else None
    lr_axis = np.unique(result.lr).size > 1
    labels = ([f"lr={v}" for v in distinct(result.lr)] if lr_axis and n <= MAX_LEGEND
              else None)
    t = result.trace
    diverged = np.asarray(result.outcomes, dtype=str) == "diverged"
    # an even subset of the starts: a matplotlib line costs ~18 KB, 10^5 of them gigabytes
    cols = np.unique(np.linspace(0, n - 1, min(n, MAX_PATHS)).round().astype(int))
    # a scan over more rates than a legend holds: colour by rate, with a colour bar
    by_lr = lr_axis and labels is None
    made = [curves(t.steps, t.loss[:, cols], t.grad_norm[:, cols], out_dir / "curves.png",
                   labels=None if labels is None else [labels[j] for j in cols],
                   f_min=f_min, title=title, stops=result.steps[cols],
                   diverged=diverged[cols],
                   values=np.asarray(result.lr)[cols] if by_lr else None)]
    if objective.dim == 2:
        made.append(contour_paths(objective, t.path[:, :, cols], out_dir / "contour.png",
                                  labels=None if labels is None else [labels[j] for j in cols],
                                  title=title,
                                  values=np.asarray(result.lr)[cols] if by_lr else None))
    if n > 1:
        atlas_labels = diag["parts"]["atlas"]["labels"] if diag else list(result.basin)
        made.append(atlas(objective, result.x0, atlas_labels, out_dir / "atlas.png",
                          title=title))
    if lr_axis:
        made.append(outcome_vs_lr(result.lr, result.steps, result.f, list(result.outcomes),
                                  out_dir / "outcome_vs_lr.png", f_min=f_min, title=title))
    if diag and "taylor_ratio" in diag["curves"]:
        steps, ratio = diag["curves"]["taylor_ratio"]
        made.append(taylor_ratio(steps, ratio, out_dir / "taylor_ratio.png",
                                 title=title if n == 1 else f"{title or ''} (median)".strip()))
    if diag and "sharpness" in diag["parts"] and n <= MAX_LEGEND:
        arr = diag["arrays"]
        made.append(sharpness_curves(arr["sharpness_steps"], arr["sharpness"],
                                     arr["stability_threshold"], t.steps, t.loss,
                                     out_dir / "sharpness.png", labels=labels, title=title,
                                     stops=result.steps))
    if t.evals or t.batch_loss is not None:
        made.append(learning_curves(t, out_dir / "learning.png", f_min=f_min, title=title))
    if objective.n_samples and n > 1:
        acc = t.evals["test_accuracy"][-1] if "test_accuracy" in t.evals else None
        made.append(final_spread(result.f, out_dir / "spread.png", test_accuracy=acc,
                                 title=title))
    if diag and n > 1 and "fixed_target" in diag["parts"]:
        ft = diag["parts"]["fixed_target"]
        made.append(ecdf(ft["ecdf_steps"], ft["ecdf_fraction"], out_dir / "ecdf.png",
                         title=title))
    return made


# ---------------------------------------------------------------- helpers

# Saved figures, cleared, each with its Agg canvas: the next figure reuses one. A canvas keeps
# its renderer, and matplotlib caches text metrics per renderer, so the tick labels and titles
# of every later figure are measured once. A cleared figure draws exactly as a new one (a test
# compares the bytes).
_SPARE: list[Figure] = []


def _figure(nrows=1, sharex=False):
    try:
        fig = _SPARE.pop()
    except IndexError:  # none spare (the first figure, or one per figure being drawn at once)
        fig = Figure(figsize=FIGSIZE, dpi=DPI, layout="constrained")
        FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, 1, sharex=sharex)
    return fig, axes


def _finish(fig, ax, path, labels, n_lines: int, title, max_legend: int = MAX_LEGEND) -> Path:
    """Legend below the axes (when the labelled lines are few enough to read), title, save."""
    if n_lines > max_legend:
        for line in ax.get_lines():  # the × marks keep their entry
            if line.get_label() != "diverged":
                line.set_label("_nolegend_")
    _legend(fig, ax)
    if title is not None:
        ax.set_title(title)
    return _save(fig, path)


def _save(fig, path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # One draw lays the figure out (constrained layout) and renders it; `savefig` would draw it
    # twice, first to lay it out and then to render (its PNG is byte-identical to this one, a
    # test compares them). Constrained layout already fits every artist, the legend below
    # included, inside the figure: a tight bounding box would draw it a third time.
    fig.canvas.draw()
    imsave(path, fig.canvas.buffer_rgba(), format="png", origin="upper", dpi=DPI)
    # Figure.clear would clear each axes before removing it (a tenth of a figure's cost):
    # removed, an axes is gone with everything on it
    for ax in fig.axes:
        fig.delaxes(ax)
    fig.clear()  # a bare Figure is not registered with pyplot: nothing else holds it
    _SPARE.append(fig)
    return path


def _require_2d(objective: Objective, what: str) -> None:
    if objective.dim != 2:
        raise ValueError(
            f"{what} needs a 2-D objective; {objective.name!r} has dim {objective.dim}")


def _as_path_list(paths) -> list[np.ndarray]:
    """(p, 2, n) array or list of (p_i, 2) arrays -> list of (q_i, 2) arrays of finite points."""
    if isinstance(paths, np.ndarray) and paths.ndim == 3:
        if paths.shape[1] != 2:
            raise ValueError(f"paths must have shape (p, 2, n), got {paths.shape}")
        paths = [paths[:, :, j] for j in range(paths.shape[2])]
    out = []
    for xy in paths:
        xy = np.asarray(xy, dtype=float).reshape(-1, 2)
        out.append(xy[np.isfinite(xy).all(axis=1)])
    return out


def _inside(xy, lower, upper) -> np.ndarray:
    """Which rows of an (m, 2) array lie in the window (its edges included)."""
    return ((xy >= lower) & (xy <= upper)).all(axis=1)


def _crossing(p, q, lower, upper) -> np.ndarray:
    """Where the segment from ``p`` (inside the window) to ``q`` (outside) meets the edge."""
    with np.errstate(all="ignore"):
        d = q - p
        t = np.where(q > upper, (upper - p) / d, np.where(q < lower, (lower - p) / d, np.inf))
        point = p + np.min(t) * d
    return np.clip(point, lower, upper)


def _clip_to_window(xy, lower, upper):
    """A path cut to the window: the pieces (m_i, 2) that run inside it, each ending on the
    edge where the path left, and the exits as (point, direction in radians). A step between
    two points outside the window is not drawn even when it crosses the window: a diverging
    start's jumps from one far side to the other would otherwise sweep across the figure."""
    inside = _inside(xy, lower, upper)
    pieces, exits = [], []
    idx = np.flatnonzero(inside)
    if idx.size == 0:
        return pieces, exits
    breaks = np.flatnonzero(np.diff(idx) > 1)
    firsts = np.concatenate([[idx[0]], idx[breaks + 1]])
    lasts = np.concatenate([idx[breaks], [idx[-1]]])
    span = upper - lower
    for a, b in zip(firsts, lasts):
        piece = [xy[a:b + 1]]
        if a > 0:  # came in from outside
            piece.insert(0, _crossing(xy[a], xy[a - 1], lower, upper)[None])
        if b < len(xy) - 1:  # and left again
            edge = _crossing(xy[b], xy[b + 1], lower, upper)
            piece.append(edge[None])
            with np.errstate(all="ignore"):
                step = (xy[b + 1] - xy[b]) / span  # in axes units, the way the eye sees it
            exits.append((edge, float(np.arctan2(step[1], step[0]))))
        pieces.append(np.concatenate(piece))
    return pieces, exits


def _arrowhead(angle: float) -> MarkerStyle:
    """A triangle pointing along ``angle`` (radians): where and which way a path left."""
    return MarkerStyle(">", transform=Affine2D().rotate(angle))


def _value_scale(values) -> ScalarMappable:
    """A colour scale over ``values``: logarithmic for positive values spanning a decade or
    more (learning rates), linear otherwise."""
    finite = values[np.isfinite(values)]
    low, high = (finite.min(), finite.max()) if finite.size else (0.0, 1.0)
    if low > 0 and high >= 10 * low:
        norm = LogNorm(low, high)
    else:
        norm = Normalize(low, high if high > low else low + 1.0)
    return ScalarMappable(norm=norm, cmap=ListedColormap(PATH_CMAP, name="paths"))


def _legend(fig, *axes, ncols: int = 3, fontsize: float = 8) -> None:
    """The labelled artists of ``axes`` in one legend below the figure, off the data."""
    handles, names = [], []
    for ax in axes:
        h, n = ax.get_legend_handles_labels()
        handles, names = handles + h, names + n
    if handles:
        if len(handles) > MAX_LEGEND:  # a report's legend of up to 16 runs: smaller, in columns
            fontsize = min(fontsize, 7)
        # no wider than the figure: long labels (several varying params) take fewer columns,
        # and one too long for a single column goes on lines of its own
        across = int(LEGEND_CHARS * 8 // fontsize) - 6
        names = [textwrap.fill(n, across, break_on_hyphens=False) for n in names]
        widest = max(len(line) for n in names for line in n.split("\n"))
        fit = max(1, LEGEND_CHARS * 8 // (fontsize * (widest + 6)))
        ncols = min(len(names), ncols, fit)
        fig.legend(handles, names, loc="outside lower center", ncols=ncols,
                   fontsize=fontsize)


def _draw_contours(fig, ax, objective: Objective, lower, upper) -> None:
    """Filled log-spaced contours of f − min over the grid, with a colour bar."""
    xx, yy = np.meshgrid(np.linspace(lower[0], upper[0], GRID),
                         np.linspace(lower[1], upper[1], GRID))
    with np.errstate(all="ignore"):
        z = np.asarray(objective.f(np.stack([xx.ravel(), yy.ravel()])), dtype=float)
    z = z.reshape(xx.shape)
    finite = np.isfinite(z)
    if not finite.any():
        return
    span = z[finite].max() - z[finite].min()
    span = span if span > 0 else 1.0
    shifted = np.ma.masked_invalid(z - z[finite].min() + span * 10.0 ** -(LEVEL_DECADES + 2))
    levels = np.geomspace(span * 10.0 ** -LEVEL_DECADES, span, LEVELS)
    filled = ax.contourf(xx, yy, shifted, levels=levels, norm=LogNorm(), cmap="viridis",
                         alpha=0.55, extend="min")
    ax.contour(xx, yy, shifted, levels=levels, colors="k", linewidths=0.3, alpha=0.35)
    bar = fig.colorbar(filled, ax=ax, pad=0.02)
    decades = np.arange(np.ceil(np.log10(levels[0])), np.floor(np.log10(levels[-1])) + 1)
    bar.set_ticks(10.0 ** decades)
    bar.ax.yaxis.set_major_formatter(LogFormatterSciNotation())
    bar.ax.minorticks_off()
    bar.set_label("f − min over window")


def _draw_minima(ax, objective: Objective) -> None:
    """Stars at the known minima: gold for global ones, white for the others."""
    seen = set()
    for m in objective.minima:
        kind = "global minimum" if m.is_global else "local minimum"
        ax.plot(m.x[0], m.x[1], "*", ms=13, mec="k", mew=0.8,
                color="gold" if m.is_global else "white", ls="none", zorder=5,
                label=None if kind in seen else kind)
        seen.add(kind)


def _columns(a) -> np.ndarray:
    """(m,) or (m, n) -> (m, n) float array."""
    a = np.asarray(a, dtype=float)
    return a[:, None] if a.ndim == 1 else a


def _gap(values, f_min: float) -> np.ndarray:
    """f − f_min, clipped below at FLOOR (non-finite values stay as they are)."""
    with np.errstate(invalid="ignore", over="ignore"):
        return np.where(np.isfinite(values), np.maximum(values - f_min, FLOOR), values)


def _loss_label(name: str, f_min) -> str:
    if f_min is None:
        return name
    return f"{name} − f_min\n(f_min = {f_min:.6g})"


def _clip(values) -> np.ndarray:
    """Magnitudes into [FLOOR, CEILING], sign kept; zeros and non-finite values unchanged."""
    values = np.asarray(values, dtype=float)
    with np.errstate(invalid="ignore"):
        v = np.clip(values, -CEILING, CEILING)
        v = np.where((v != 0) & (np.abs(v) < FLOOR), np.sign(v) * FLOOR, v)
    return np.where(np.isfinite(values), v, values)


def _colors(n: int) -> list:
    if n <= 10:
        return [colormaps["tab10"](i) for i in range(n)]
    return [colormaps["turbo"](t) for t in np.linspace(0.05, 0.95, n)]


def _plot_columns(ax, steps, values, labels, diverged=None, yscale=None, colors=None,
                  many: Optional[bool] = None) -> None:
    """One line per column, each cut after its last finite value; thin lines when ``many``
    (default: more than a legend names);
    ``colors`` one per column (default: a palette over the columns).

    The y scale (``yscale(ax, values)``, if given) and limits come from the columns not in
    ``diverged``; the diverged ones are
    drawn afterwards within those limits and end in a red × where they leave the axes (or
    at their last point if they never do)."""
    n = values.shape[1]
    diverged = np.zeros(n, bool) if diverged is None else np.asarray(diverged, dtype=bool)
    if diverged.all():  # nothing else to scale by
        diverged = np.zeros(n, bool)
    many = n > MAX_LEGEND if many is None else many
    lines = []
    for j, color in enumerate(_colors(n) if colors is None else colors):
        y = values[:, j]
        finite = np.flatnonzero(np.isfinite(y))
        if finite.size == 0:
            continue
        end = finite[-1] + 1
        lines.append((j, steps[:end], _clip(y[:end]), color))
    for j, x, y, color in lines:
        if not diverged[j]:
            ax.plot(x, y, color=color, lw=0.5 if many else 1.3, alpha=0.5 if many else 1.0,
                    label=labels[j] if labels is not None else None)
    if yscale is not None:
        yscale(ax, values[:, ~diverged])
    if not diverged.any():
        return
    ylim = ax.get_ylim()
    high = ax.yaxis.get_transform().transform(np.array([ylim[1]])).ravel()[0]
    marked = False
    for j, x, y, color in lines:
        if not diverged[j]:
            continue
        ax.plot(x, y, color=color, lw=0.5 if many else 1.3, alpha=0.5 if many else 1.0,
                label=labels[j] if labels is not None else None)
        with np.errstate(all="ignore"):
            scaled = ax.yaxis.get_transform().transform(y.reshape(-1, 1)).ravel()
        out = np.flatnonzero(~(scaled <= high))  # above the top, or not drawable at all
        if out.size and out[0] > 0:  # where it crosses the top, interpolated on the axis scale
            k = out[0]
            a, b = scaled[k - 1], scaled[k] if np.isfinite(scaled[k]) else high
            t = (high - a) / (b - a) if b > a else 1.0
            xm, ym = x[k - 1] + t * (x[k] - x[k - 1]), ylim[1]
        else:
            xm, ym = x[-1], y[-1]
        ax.plot(xm, ym, "x", color=DIVERGED_COLOR, ms=7, mew=2, zorder=5, clip_on=False,
                label=None if marked else "diverged")
        marked = True
    ax.set_ylim(ylim)


def _narrow_log(axis, values) -> None:
    """A log axis whose values span less than two decades gets ticks it can label without
    overlap: at 1, 2 and 5 × 10^k, or, within a factor of three, at about four round values;
    its minor ticks stay unlabelled (matplotlib labels every minor tick of such a span)."""
    v = np.asarray(values, dtype=float).ravel()
    v = v[np.isfinite(v) & (v > 0)]
    if v.size == 0 or v.max() <= v.min() * (1 + 1e-9):
        return
    span = np.log10(v.max() / v.min())
    if span >= 2:
        return
    if span >= np.log10(3):
        axis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
        axis.set_major_formatter(LogFormatterSciNotation(labelOnlyBase=False))
    else:
        axis.set_major_locator(MaxNLocator(4))
        axis.set_major_formatter(ScalarFormatter())
    axis.set_minor_formatter(NullFormatter())


def _log_or_symlog(ax, values) -> None:
    """Log y unless some value is negative (f may be), then symmetric log; zeros are dropped."""
    finite = np.asarray(values)[np.isfinite(values)]
    if finite.size and finite.min() < 0:
        _symlog(ax, finite)
    else:
        ax.set_yscale("log", nonpositive="mask")


def _symlog(ax, values) -> None:
    """Symmetric log y (linear within ±1) with at most ~6 decade ticks on each side of 0."""
    ax.set_yscale("symlog", linthresh=1.0)
    finite = _clip(np.asarray(values)[np.isfinite(values)])
    biggest = np.abs(finite).max() if finite.size else 1.0
    top = max(int(np.ceil(np.log10(max(biggest, 1.0)))), 1)
    stride = int(np.ceil(top / 6))
    # with wide strides, ±1 would crowd the tick at 0
    decades = 10.0 ** np.arange(0 if stride == 1 else stride, top + stride, stride)
    ax.yaxis.set_major_locator(FixedLocator(np.concatenate([-decades[::-1], [0.0], decades])))
    ax.yaxis.set_minor_locator(NullLocator())


def _headroom(ax, fraction: float) -> None:
    """Raise the top of the y axis by ``fraction`` of its height, in the axis' own scale."""
    scale = ax.yaxis.get_transform()
    low, high = scale.transform(np.array(ax.get_ylim())).ravel()
    top = scale.inverted().transform(np.array([high + fraction * (high - low)])).ravel()[0]
    ax.set_ylim(top=float(top))


def _label_order(labels) -> list[str]:
    """Distinct labels, minima first (numbers in natural order), then max_steps, then diverged."""
    def key(name):
        natural = [(0, int(t), "") if t.isdigit() else (1, 0, t) for t in re.split(r"(\d+)", name)]
        return ("diverged" in name, "max_steps" in name, natural)
    return sorted(set(labels.tolist()), key=key)


def _label_colors(order) -> list:
    """Red for diverged, grey for max_steps, tab10 (minus those two) for the rest."""
    palette = [colormaps["tab10"](i) for i in (0, 1, 2, 4, 5, 6, 8, 9)]
    out, k = [], 0
    for name in order:
        if "diverged" in name:
            out.append(DIVERGED_COLOR)
        elif "max_steps" in name:
            out.append(MAX_STEPS_COLOR)
        else:
            out.append(palette[k % len(palette)])
            k += 1
    return out
