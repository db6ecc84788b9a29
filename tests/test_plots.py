"""Every figure renders a real, non-blank PNG, including from diverging runs."""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from matplotlib.colors import to_rgba
from matplotlib.image import imread

from gdexp import plots
from gdexp.descent import run
from gdexp.objectives import quadratic
from gdexp.optimizers import gd

ROOT = Path(__file__).resolve().parents[1]
STARTS = np.array([[-4.0, 3.0, 4.5, -2.0],
                   [3.0, -4.0, 1.0, -4.5]])
LRS = np.array([0.05, 0.1, 0.15, 0.3])  # stable below 2/λmax = 0.2; the last one diverges


@pytest.fixture(scope="module")
def objective():
    return quadratic(eigenvalues=[1.0, 10.0])


@pytest.fixture(scope="module")
def result(objective):
    return run(objective, STARTS, gd(), LRS, max_steps=120, grad_tol=1e-6, diverge_above=1e8)


def assert_png(path):
    """The file is a readable PNG of about the expected size with more than one colour."""
    path = Path(path)
    assert path.is_file()
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    image = imread(path)
    assert image.ndim == 3 and image.shape[2] in (3, 4)
    assert 150 <= image.shape[0] <= 1000 and 200 <= image.shape[1] <= 1200
    colours = np.unique(image.reshape(-1, image.shape[2]), axis=0)
    assert len(colours) > 10


def labels_for(result):
    return [f"lr={lr:g}" for lr in result.lr]


def test_the_runs_cover_every_outcome(result):
    assert set(result.outcomes) == {"converged", "max_steps", "diverged"}


def test_contour_paths_from_a_trace(objective, result, tmp_path):
    out = plots.contour_paths(objective, result.trace.path, tmp_path / "contour.png",
                              labels=labels_for(result), title="quadratic")
    assert out == tmp_path / "contour.png"
    assert_png(out)


def test_contour_paths_from_a_list_with_non_finite_and_huge_points(objective, tmp_path):
    paths = [np.array([[1.0, 1.0], [1e150, -1e150], [np.inf, np.nan]]),
             np.array([[-3.0, 2.0], [-1e300, 2.0]]),
             np.empty((0, 2))]
    assert_png(plots.contour_paths(objective, paths, tmp_path / "c.png", starts=False))


def test_contour_paths_with_many_paths(objective, tmp_path):
    x0 = np.random.default_rng(0).uniform(-5, 5, (2, 60))
    res = run(objective, x0, gd(), 0.15, max_steps=20)
    labels = [str(j) for j in range(60)]  # too many for a legend
    assert_png(plots.contour_paths(objective, res.trace.path, tmp_path / "c.png", labels=labels))


def test_contour_paths_needs_two_dimensions(tmp_path):
    with pytest.raises(ValueError, match="2-D objective.*dim 3"):
        plots.contour_paths(quadratic(dim=3), np.zeros((5, 3, 2)), tmp_path / "c.png")
    assert not (tmp_path / "c.png").exists()


def test_curves_with_f_min_and_stops(result, tmp_path):
    trace = result.trace
    out = plots.curves(trace.steps, trace.loss, trace.grad_norm, tmp_path / "curves.png",
                       labels=labels_for(result), f_min=0.0, title="curves", stops=result.steps)
    assert_png(out)


def test_curves_with_non_finite_columns_and_one_column(tmp_path):
    steps = np.arange(6)
    loss = np.array([[5.0, 1.0, 3.0], [4.0, 1e200, 2.0], [3.0, np.inf, np.nan],
                     [2.0, np.nan, 1.0], [1.0, np.nan, 0.5], [0.0, np.nan, -1.0]])
    assert_png(plots.curves(steps, loss, np.abs(loss), tmp_path / "a.png", labels=list("abc")))
    assert_png(plots.curves(steps, loss[:, 0], loss[:, 0], tmp_path / "b.png", f_min=0.0))


def test_curves_with_many_columns(objective, tmp_path):
    x0 = np.random.default_rng(1).uniform(-5, 5, (2, 300))
    res = run(objective, x0, gd(), 0.1, max_steps=30)
    t = res.trace
    assert_png(plots.curves(t.steps, t.loss, t.grad_norm, tmp_path / "many.png",
                            labels=[str(j) for j in range(300)]))


def test_atlas_in_two_dimensions(objective, tmp_path):
    x0 = np.random.default_rng(2).uniform(-6, 6, (2, 200))  # some outside the plot window
    res = run(objective, x0, gd(), 0.1, max_steps=25, grad_tol=1e-3)
    labels = ["min 0 (global)" if b == "global" else o for b, o in zip(res.basin, res.outcomes)]
    assert {"min 0 (global)", "max_steps"} <= set(labels)
    assert_png(plots.atlas(objective, x0, labels, tmp_path / "atlas.png", title="atlas"))


def test_atlas_in_three_dimensions_is_a_bar_chart(tmp_path):
    labels = ["min 0 (global)"] * 5 + ["min 2"] * 3 + ["diverged", "max_steps"]
    x0 = np.zeros((3, len(labels)))
    assert_png(plots.atlas(quadratic(dim=3), x0, labels, tmp_path / "atlas3.png"))


def test_bar_fractions(tmp_path):
    assert_png(plots.bar_fractions(["diverged", "min 0 (global)", "min 0 (global)"],
                                   tmp_path / "bars.png", title="fractions"))


def test_outcome_vs_lr(objective, tmp_path):
    lrs = np.geomspace(1e-3, 0.5, 25)
    x0 = np.tile(STARTS[:, :1], (1, lrs.size))
    res = run(objective, x0, gd(), lrs, max_steps=200, grad_tol=1e-6, diverge_above=1e8)
    assert {"converged", "max_steps", "diverged"} == set(res.outcomes)
    out = plots.outcome_vs_lr(res.lr, res.steps, res.f, res.outcomes, tmp_path / "lr.png",
                              f_min=objective.f_min, title="lr sweep")
    assert_png(out)


def test_outcome_vs_lr_when_every_run_diverged(tmp_path):
    out = plots.outcome_vs_lr([0.3, 0.5], [4, 0], [np.nan, np.inf], ["diverged", "diverged"],
                              tmp_path / "lr.png")
    assert_png(out)


def test_outcome_vs_lr_with_negative_losses_and_zero_steps(tmp_path):
    out = plots.outcome_vs_lr([0.1, 0.2, 0.3], [0, 5, 1000], [-146.7, 1.0, 2.0],
                              ["converged", "max_steps", "converged"], tmp_path / "lr.png")
    assert_png(out)


@pytest.mark.parametrize("lr, steps", [
    (np.geomspace(1e-4, 9.9e-4, 12), np.linspace(1.7e4, 2e4, 12)),   # a decade; a factor 1.2
    (np.geomspace(0.05, 0.4, 8), np.geomspace(30, 900, 8)),          # under 1.5 decades
    (np.geomspace(0.001, 1.0, 8), np.geomspace(10, 1e5, 8)),         # wide: matplotlib's own
])
def test_outcome_vs_lr_labels_narrow_log_axes_without_overlap(lr, steps, tmp_path, monkeypatch):
    """Visible tick labels of each axis never overlap, and each axis has at least two, so
    that its scale can be read."""
    labels = {}
    save = plots._save

    def keep(fig, path):
        fig.canvas.draw()
        renderer = fig.canvas.get_renderer()
        for i, ax in enumerate(fig.axes):
            for name, axis in (("x", ax.xaxis), ("y", ax.yaxis)):
                ticks = axis.get_majorticklabels() + axis.get_minorticklabels()
                boxes = [t.get_window_extent(renderer) for t in ticks
                         if t.get_visible() and t.get_text()]
                labels[(i, name)] = boxes
        return save(fig, path)

    monkeypatch.setattr(plots, "_save", keep)
    plots.outcome_vs_lr(lr, steps, np.geomspace(1.0, 1e-3, lr.size), ["max_steps"] * lr.size,
                        tmp_path / "lr.png")
    # the steps axis (0, y) and the shared rate axis, labelled under the loss panel (1, x)
    for key in ((0, "y"), (1, "x")):
        boxes = labels[key]
        assert len(boxes) >= 2, key
        for a in range(len(boxes)):
            for b in range(a + 1, len(boxes)):
                assert not boxes[a].overlaps(boxes[b]), (key, boxes[a], boxes[b])


def test_taylor_ratio(result, tmp_path):
    t = result.trace
    with np.errstate(all="ignore"):  # stopped starts give 0/0
        ratio = (t.loss[:-1] - t.loss[1:]) / (t.lr[:-1] * t.grad_norm[:-1] ** 2)
    assert np.nanmin(ratio) < 0  # the diverging start increases f
    out = plots.taylor_ratio(t.steps[:-1], ratio, tmp_path / "taylor.png",
                             labels=labels_for(result), title="Taylor")
    assert_png(out)


def test_unbounded_divergence_is_plotted(objective, tmp_path):
    """No diverge_above: f climbs to ~1e307 and then overflows to inf."""
    res = run(objective, STARTS[:, :2], gd(), [0.1, 0.3], max_steps=1000)
    assert res.outcomes[1] == "diverged" and res.steps[1] > 100
    t = res.trace
    assert_png(plots.contour_paths(objective, t.path, tmp_path / "c.png"))
    assert_png(plots.curves(t.steps, t.loss, t.grad_norm, tmp_path / "f.png", f_min=0.0))
    assert_png(plots.outcome_vs_lr(res.lr, res.steps, res.f, res.outcomes, tmp_path / "l.png"))


def test_figures_create_missing_folders(tmp_path):
    out = plots.bar_fractions(["a"], tmp_path / "new" / "dir" / "b.png")
    assert_png(out)


def test_descent_does_not_import_matplotlib():
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)}
    code = "import gdexp.descent, sys; assert 'matplotlib' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, check=True)


# ---------------------------------------------------------------- what the figures show

class Drawn:
    """What a figure held when it was saved: per axes its lines, limits and legend."""

    def __init__(self, fig):
        self.lines = [[(line.get_xdata(), line.get_ydata(), line.get_label())
                       for line in ax.get_lines()] for ax in fig.axes]
        self.styles = [[(line.get_linestyle(), tuple(to_rgba(line.get_color())))
                        for line in ax.get_lines()] for ax in fig.axes]
        self.ylim = [ax.get_ylim() for ax in fig.axes]
        self.axes_legends = [ax.get_legend() for ax in fig.axes]
        self.legend = [t.get_text() for leg in fig.legends for t in leg.get_texts()]
        self.labels = [ax.get_xlabel() for ax in fig.axes]
        self.xlim = [ax.get_xlim() for ax in fig.axes]


@pytest.fixture
def drawn(monkeypatch):
    """Every figure saved during the test, as a Drawn, keyed by file name."""
    seen, save = {}, plots._save

    def keep(fig, path):
        seen[Path(path).name] = Drawn(fig)
        return save(fig, path)

    monkeypatch.setattr(plots, "_save", keep)
    return seen


REGIMES = np.array([0.01, 2 / 11, 0.195, 0.21])  # slow, best, oscillating, diverging (2/λmax = 0.2)


@pytest.fixture(scope="module")
def regimes(objective):
    x0 = np.tile([[4.0], [1.5]], (1, REGIMES.size))
    return run(objective, x0, gd(), REGIMES, max_steps=1500, grad_tol=1e-6, diverge_above=1e27)


def test_a_diverging_path_is_drawn_inside_the_window_and_marked_where_it_left(
        objective, regimes, drawn, tmp_path):
    assert list(regimes.outcomes) == ["max_steps", "converged", "converged", "diverged"]
    raw = regimes.trace.path[:, 1, 3]
    assert np.nanmax(np.abs(raw[np.isfinite(raw)])) > 1e10  # it does leave, by far
    plots.contour_paths(objective, regimes.trace.path, tmp_path / "c.png")
    (lower, upper), ax = objective.plot_window, drawn["c.png"].lines[0]
    points = np.concatenate([np.column_stack([x, y]) for x, y, _ in ax if len(x)])
    assert (points >= np.asarray(lower) - 1e-9).all() and (points <= np.asarray(upper) + 1e-9).all()
    # the drawn part of the diverging path ends on the edge, and the exit is marked once
    on_edge = np.isclose(np.abs(points[:, 1]), 5.0)
    assert on_edge.sum() >= 2  # the line's end and the mark on it
    assert "left the window" in drawn["c.png"].legend


def test_the_drawn_path_keeps_every_step_inside_the_window(objective, drawn, tmp_path):
    """A path leaving and coming back: both inside parts drawn, joined to the edge."""
    xy = np.array([[0.0, 0.0], [0.0, 4.0], [0.0, 9.0], [1.0, 3.0], [1.0, 1.0]])
    plots.contour_paths(objective, [xy], tmp_path / "c.png")
    fig = drawn["c.png"]
    lines = [np.column_stack([x, y]) for (x, y, _), (style, _) in zip(fig.lines[0], fig.styles[0])
             if style == "-"]
    assert len(lines) == 2
    np.testing.assert_allclose(lines[0], [[0, 0], [0, 4], [0, 5]])
    np.testing.assert_allclose(lines[1], [[2 / 3, 5], [1, 3], [1, 1]])  # (0, 9)→(1, 3) at y = 5


def test_a_diverged_curve_does_not_set_the_loss_axis(regimes, drawn, tmp_path):
    t = regimes.trace
    assert np.nanmax(t.loss[:, 3]) > 1e20
    plots.curves(t.steps, t.loss, t.grad_norm, tmp_path / "f.png", f_min=0.0,
                 labels=[f"lr={v:g}" for v in REGIMES], stops=regimes.steps,
                 diverged=np.array(regimes.outcomes) == "diverged")
    fig = drawn["f.png"]
    for ylim in fig.ylim:  # f − f_min and ‖∇f‖ both kept to the curves that converge
        assert ylim[1] < 1e4
    xs = [(x, y) for x, y, label in fig.lines[0] if label == "diverged"]
    assert len(xs) == 1 and np.isclose(xs[0][1][0], fig.ylim[0][1])  # × on the top edge
    assert "diverged" in fig.legend


def test_a_run_away_column_is_recognised_without_being_told(drawn, tmp_path):
    steps = np.arange(5)
    loss = np.array([[1.0, 1.0], [0.1, 1e5], [0.01, 1e15], [0.001, np.inf], [1e-4, np.nan]])
    plots.curves(steps, loss, loss, tmp_path / "f.png")
    assert drawn["f.png"].ylim[0][1] < 10


def test_legends_read_short_rates_and_sit_off_the_data(objective, regimes, drawn, tmp_path):
    plots.run_figures(tmp_path, objective, regimes, title="regimes")
    for name in ("curves.png", "contour.png"):
        fig = drawn[name]
        assert [t for t in fig.legend if t.startswith("lr=")] == [
            "lr=0.01", "lr=0.182", "lr=0.195", "lr=0.21"]
        assert all(legend is None for legend in fig.axes_legends)  # none inside an axes


def test_a_scan_of_many_rates_is_coloured_by_rate(objective, drawn, tmp_path):
    lrs = np.geomspace(1e-3, 0.3, 24)
    res = run(objective, np.tile([[4.0], [1.5]], (1, 24)), gd(), lrs, max_steps=300,
              diverge_above=1e27)
    plots.run_figures(tmp_path, objective, res)
    fig = drawn["contour.png"]
    assert "learning rate of the path" in fig.labels  # the colour bar, below the contour
    assert not [t for t in fig.legend if t.startswith("lr=")]
    colours = {colour for (x, _, _), (style, colour) in zip(fig.lines[0], fig.styles[0])
               if style == "-"}
    assert len(colours) == 24  # one colour per rate
    curves = drawn["curves.png"]  # its loss curves alike: a colour bar, no 24-entry legend
    assert "learning rate of the line" in curves.labels
    assert not [t for t in curves.legend if t.startswith("lr=")]
    line_colours = [colour for style, colour in curves.styles[0] if style == "-"]
    assert len(set(line_colours)) == 24


def test_a_report_colours_many_runs_by_rate_and_names_a_few():
    from gdexp.report import RunRecord, _lr_values

    def runs(n, **extra):
        return [RunRecord(str(i), f"r{i}", "FINISHED",
                          {"optimizer.lr": repr(0.01 * (i + 1)), **extra}) for i in range(n)]

    assert _lr_values(runs(11), ["optimizer.lr"]) == [0.01 * (i + 1) for i in range(11)]
    assert _lr_values(runs(10), ["optimizer.lr"]) is None  # a legend holds ten
    # seeds too: each line in its rate's colour
    assert _lr_values(runs(11), ["optimizer.lr", "seed"]) == [0.01 * (i + 1) for i in range(11)]
    assert _lr_values(runs(11, **{"seed": "1"}), ["seed"]) is None  # the rate does not vary
    # other settings vary too (an SGD sweep's batch sizes): a legend names up to 16 runs,
    # more get the colour scale
    keys = ["data.batch_size", "optimizer.lr"]
    assert _lr_values(runs(12, **{"data.batch_size": "4"}), keys) is None
    assert _lr_values(runs(17, **{"data.batch_size": "4"}), keys) == [
        0.01 * (i + 1) for i in range(17)]


def test_distinct_keeps_different_numbers_apart():
    from gdexp.formatting import distinct
    assert distinct([0.01, 2 / 11, 0.195, 0.21]) == ["0.01", "0.182", "0.195", "0.21"]
    assert len(set(distinct([0.1, 0.100001]))) == 2
    assert distinct([1000, 2e12]) == ["1000", "2e+12"]


def test_learning_curves_share_one_legend_below(drawn, tmp_path):
    from types import SimpleNamespace
    steps = np.arange(0, 50, 5)
    trace = SimpleNamespace(
        steps=steps, loss=np.exp(-steps / 10.0), batch_steps=np.arange(50),
        batch_loss=np.exp(-np.arange(50) / 10.0) * 1.1, eval_steps=steps,
        evals={"test_loss": np.exp(-steps / 12.0), "accuracy": 1 - np.exp(-steps / 10.0),
               "test_accuracy": 1 - np.exp(-steps / 12.0)})
    assert_png(plots.learning_curves(trace, tmp_path / "learning.png", title="learn"))
    fig = drawn["learning.png"]
    assert fig.legend == ["mini-batch loss", "training loss", "test loss", "training accuracy",
                          "test accuracy"]
    assert all(legend is None for legend in fig.axes_legends)
    colour = dict(zip((label for _, _, label in fig.lines[0] + fig.lines[1]),
                      (c for _, c in fig.styles[0] + fig.styles[1])))
    assert colour["training loss"] == colour["training accuracy"]
    assert colour["test loss"] == colour["test accuracy"] != colour["training loss"]


def test_learning_curves_with_f_star_shift_the_training_loss_only(drawn, tmp_path):
    # f* is the training loss's minimum: the held-out loss is drawn as it is, and says so
    from types import SimpleNamespace
    steps = np.arange(0, 50, 5)
    loss, test = 0.5 + np.exp(-steps / 10.0), 0.4 + np.exp(-steps / 12.0)  # test below f*
    trace = SimpleNamespace(steps=steps, loss=loss, batch_loss=None, eval_steps=steps,
                            evals={"test_loss": test})
    plots.learning_curves(trace, tmp_path / "learning.png", f_min=0.5)
    (_, train_y, train_label), (_, test_y, test_label) = drawn["learning.png"].lines[0]
    assert train_label == "training loss" and np.allclose(train_y, loss - 0.5)
    assert test_label == "test loss (itself, not − f*)" and np.array_equal(test_y, test)


@pytest.mark.parametrize("accuracy", [1.0, 0.0, 0.5])
def test_an_accuracy_every_start_shares_stays_within_0_and_1(drawn, tmp_path, accuracy):
    plots.final_spread(np.geomspace(1e-3, 2e-3, 50), tmp_path / "spread.png",
                       test_accuracy=np.full(50, accuracy))
    fig = drawn["spread.png"]
    low, high = fig.xlim[1]
    assert 0.0 <= low < accuracy <= high <= 1.0 or 0.0 <= low <= accuracy < high <= 1.0
    assert high - low < 0.05, (low, high)  # around the value, not value ± 0.5
    assert f"max {accuracy:.3g})" in fig.labels[1]


def test_a_label_longer_than_the_figure_is_wrapped_in_the_legend(drawn, tmp_path):
    steps = np.arange(20)
    loss = np.exp(-steps[:, None] / np.array([5.0, 10.0]))
    long = ", ".join(f"setting_{i}=value_{i}" for i in range(8))  # 151 characters
    plots.curves(steps, loss, loss, tmp_path / "curves.png", labels=[long, "gd"])
    first, second = drawn["curves.png"].legend
    assert first.replace("\n", " ") == long and "\n" in first and second == "gd"
    assert max(map(len, first.split("\n"))) <= plots.LEGEND_CHARS - 6


def test_diverged_points_sit_above_the_others(drawn, tmp_path):
    x, y = [1, 2, 4, 8], [1e-3, 2e-3, 1e-2, 1e300]
    assert_png(plots.points(x, y, ["a"] * 4, tmp_path / "p.png", "batch", "f",
                            diverged=[False, False, False, True]))
    fig = drawn["p.png"]
    assert fig.ylim[0][1] < 1                       # the diverged value sets nothing
    (xs, ys, label), = [line for line in fig.lines[0] if line[2] == "diverged"]
    assert list(xs) == [8.0] and label in fig.legend
    line = next(line for line in fig.lines[0] if line[2] == "a")
    assert list(line[0]) == [1.0, 2.0, 4.0]

def test_sharpness_curves_with_thresholds_and_diverged_columns(tmp_path):
    steps = np.arange(0, 50, 10)
    lam = np.array([[5.0, 5.0], [9.0, 30.0], [10.5, np.nan], [9.8, np.nan], [10.1, np.nan]])
    thr = np.array([[10.0, 20.0]] * 5)
    moving = np.column_stack([np.linspace(10, 20, 5), np.full(5, np.nan)])
    loss_steps = np.arange(50)
    loss = np.column_stack([np.linspace(1, 0.1, 50), np.r_[np.linspace(1, 1e5, 12),
                                                            np.full(38, np.inf)]])
    assert_png(plots.sharpness_curves(steps, lam, thr, loss_steps, loss, tmp_path / "s.png",
                                      labels=["lr=0.2", "lr=0.1"], title="t",
                                      stops=np.array([49, 12])))
    assert_png(plots.sharpness_curves(steps, lam[:, 0], moving[:, 0], loss_steps, loss[:, 0],
                                      tmp_path / "one.png"))


# ---------------------------------------------------------------- how figures are saved

def a_variety(objective, result):
    """Figures of every shape, by file name: two axes with a legend, contours with a colour
    bar and paths coloured by rate, a scatter over contours, bars, points with a log axis."""
    t = result.trace
    return {
        "curves.png": lambda out: plots.curves(t.steps, t.loss, t.grad_norm, out,
                                               labels=labels_for(result), f_min=0.0,
                                               title="curves"),
        "contour.png": lambda out: plots.contour_paths(objective, t.path, out,
                                                       values=result.lr),
        "atlas.png": lambda out: plots.atlas(objective, result.x0, list(result.basin), out),
        "bars.png": lambda out: plots.bar_fractions(["a", "b", "b"], out, title="bars"),
        "outcome.png": lambda out: plots.outcome_vs_lr(result.lr, result.steps, result.f,
                                                       list(result.outcomes), out, f_min=0.0),
    }


def draw(figures, folder, names=None):
    """Draw the named figures (all, by default) in that order; their PNG bytes by name."""
    return {name: figures[name](folder / name).read_bytes() for name in names or figures}


def test_a_saved_figure_is_the_png_savefig_writes(objective, result, tmp_path, monkeypatch):
    """One draw per figure, on a reused canvas, writes the very bytes of matplotlib's own
    `Figure.savefig` on a new figure (which draws twice: to lay out, then to render)."""
    figures = a_variety(objective, result)
    ours = draw(figures, tmp_path / "ours")
    from matplotlib.figure import Figure

    def new_figure(nrows=1, sharex=False):
        fig = Figure(figsize=plots.FIGSIZE, layout="constrained")
        return fig, fig.subplots(nrows, 1, sharex=sharex)

    def savefig(fig, path):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=plots.DPI)
        return Path(path)

    monkeypatch.setattr(plots, "_figure", new_figure)
    monkeypatch.setattr(plots, "_save", savefig)
    theirs = draw(figures, tmp_path / "theirs")
    for name in figures:
        assert ours[name] == theirs[name], name


def test_a_figure_does_not_depend_on_the_figures_drawn_before_it(objective, result, tmp_path,
                                                                 monkeypatch):
    """A reused figure keeps nothing of the last one: every figure drawn on a figure that
    served all the others (of other shapes, in reverse order) is byte-identical to the same
    figure drawn on a new one."""
    figures = a_variety(objective, result)
    monkeypatch.setattr(plots, "_SPARE", [])
    first = {}
    for name in figures:
        plots._SPARE.clear()  # a new figure for each
        first.update(draw(figures, tmp_path / "new", [name]))
    again = draw(figures, tmp_path / "again", list(reversed(list(figures))))
    assert len(plots._SPARE) == 1  # one figure served them all, one after the other
    for name in figures:
        assert again[name] == first[name], name
