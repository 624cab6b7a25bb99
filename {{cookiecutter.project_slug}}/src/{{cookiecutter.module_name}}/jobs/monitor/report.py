"""The figures and the self-contained HTML report of a `monitor` run.

The report is one HTML file with its figures inside (PNG as data URIs) and no
script: it opens from the MLflow UI, an e-mail or a file share, with nothing to
fetch from anywhere.
"""

import base64
import html
import io

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from ...config import MonitoringConfig
from ...core.evaluation import BOUNDS, GREATER_IS_BETTER
from .windows import MIN_OUTCOMES, SEVERE_OUTCOMES, Result, Window, recent, worst_allowed

CSS = """
body { font-family: system-ui, sans-serif; margin: 2rem; color: #222; max-width: 70rem; }
.verdict { padding: 1rem; border-radius: 0.4rem; font-size: 1.2rem; }
.retrain { background: #fde2e1; border: 1px solid #c0392b; }
.watch { background: #fff4d6; border: 1px solid #d4a017; }
.fine { background: #e3f5e6; border: 1px solid #27ae60; }
table { border-collapse: collapse; margin: 1rem 0; }
th, td { border: 1px solid #ccc; padding: 0.3rem 0.6rem; text-align: right; }
th:first-child, td:first-child, td.reasons { text-align: left; }
tr.flagged { background: #fff1f0; }
tr.severe { background: #fbd3cf; }
figcaption { color: #555; }
img { max-width: 100%; border: 1px solid #eee; margin: 0.5rem 0; }
"""


def figures(result: Result, settings: MonitoringConfig) -> dict[str, Figure]:
    """The drift heatmap, and the metric and prediction drift over the windows."""
    windows = [window for window in result.windows if window.rows]
    quality = Figure(figsize=(max(6, 0.5 * len(windows) + 3), 6), layout="constrained")
    metric_axes, drift_axes = quality.subplots(2, 1, sharex=True)
    draw_metric(metric_axes, result, windows, settings)
    draw_prediction_drift(drift_axes, windows, settings)
    return {"drift_heatmap.png": drift_heatmap(result, windows, settings), "quality.png": quality}


def drift_heatmap(result: Result, windows: list[Window], settings: MonitoringConfig) -> Figure:
    """Each feature's PSI in each window, with its value where there is room."""
    labels = [short(window.label) for window in windows]
    features = sorted({name for window in windows for name in window.psi})
    psi = np.array(
        [[window.psi.get(name) or 0.0 for window in windows] for name in features], dtype=float
    ).reshape(len(features), len(windows))
    heatmap = Figure(
        figsize=(max(6, 0.7 * len(windows) + 3), max(3, 0.35 * len(features) + 2)),
        layout="constrained",
    )
    axes = heatmap.subplots()
    top = max(2 * settings.drift_threshold, float(psi.max()) if psi.size else 0.0)
    image = axes.imshow(psi, cmap="Reds", vmin=0, vmax=top, aspect="auto")
    axes.set_xticks(range(len(windows)), labels, rotation=45, ha="right")
    axes.set_yticks(range(len(features)), features)
    for (row, column), value in np.ndenumerate(psi):
        if len(windows) * len(features) <= 400:
            colour = "white" if value > top / 2 else "black"
            axes.text(
                column, row, f"{value:.2f}", ha="center", va="center", fontsize=7, color=colour
            )
    heatmap.colorbar(image, ax=axes, label=f"PSI (threshold {settings.drift_threshold:g})")
    above = int((psi > settings.drift_threshold).any(axis=0).sum())
    axes.set_title(
        f"Drift of each feature, {result.model} v{result.version}: a PSI above "
        f"{settings.drift_threshold:g} in {above} of {len(windows)} windows"
    )
    return heatmap


def draw_metric(
    axes: Axes, result: Result, windows: list[Window], settings: MonitoringConfig
) -> None:
    """The served metric per window, against its held-out value, tolerance and severe line."""
    positions = list(range(len(windows)))
    values = [np.nan if w.metric is None else w.metric for w in windows]
    axes.plot(positions, values, marker="o", label=f"{result.metric}, served")
    if result.baseline is not None:
        axes.axhline(result.baseline, color="grey", linestyle="--", label="held out")
        low, high = BOUNDS[result.metric]
        allowed = settings.tolerance * abs(result.baseline)
        axes.axhspan(
            max(low, result.baseline - allowed),
            min(high, result.baseline + allowed),
            color="grey",
            alpha=0.15,
            label=f"held out ± {settings.tolerance * 100:g} %",
        )
        # The metric's name alone tells its direction: no name serves both tasks.
        greater = {m: g for table in GREATER_IS_BETTER.values() for m, g in table.items()}
        severe = worst_allowed(result.baseline, greater[result.metric], settings.severe)
        if low <= severe <= high:
            axes.axhline(severe, color="tab:red", linestyle=":", label="severe")
    axes.set_ylabel(result.metric)
    axes.legend(loc="best")
    axes.set_title(quality_title(result.metric, windows))


def draw_prediction_drift(axes: Axes, windows: list[Window], settings: MonitoringConfig) -> None:
    """The PSI of the predictions per window, against the drift threshold."""
    positions = list(range(len(windows)))
    prediction = [np.nan if w.prediction_psi is None else w.prediction_psi for w in windows]
    axes.plot(positions, prediction, marker="o", color="tab:red", label="predictions")
    axes.axhline(settings.drift_threshold, color="grey", linestyle="--", label="threshold")
    axes.set_ylabel("PSI")
    axes.legend(loc="best")
    scored = [w.prediction_psi for w in windows if w.prediction_psi is not None]
    above = sum(value > settings.drift_threshold for value in scored)
    axes.set_title(
        f"Prediction drift: a PSI above {settings.drift_threshold:g} in {above} of "
        f"{len(scored)} windows"
        if scored
        else "Prediction drift: no point, no window's predictions could be scored"
    )
    axes.set_xticks(positions, [short(window.label) for window in windows], rotation=45, ha="right")


def quality_title(metric: str, windows: list[Window]) -> str:
    """What the metric's plot shows: how many windows have a point, and why the others not."""
    drawn = [window for window in windows if window.metric is not None]
    if not drawn:
        return f"{metric}: no point yet, no window has {MIN_OUTCOMES} outcomes"
    outcomes = sum(window.outcomes for window in drawn)
    title = f"{metric} of {len(drawn)} of {len(windows)} windows, from {outcomes} outcomes"
    if len(drawn) < len(windows):
        title += f" (the others: fewer than {MIN_OUTCOMES})"
    return title


def caption(figure: Figure) -> str:
    """The titles a figure shows, for the report's text."""
    return " / ".join(axes.get_title() for axes in figure.axes if axes.get_title())


def short(label: str) -> str:
    """A window's label, short enough for an axis."""
    return label.replace("T", " ").removesuffix("+00:00")[:16]


def png(figure: Figure) -> bytes:
    """A figure as PNG bytes."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    return buffer.getvalue()


def row(window: Window, metric: str) -> str:
    """A window's line of the table."""
    worst = max(
        ((value, name) for name, value in window.psi.items() if value is not None), default=None
    )
    cells = [
        html.escape(window.label),
        str(window.rows),
        str(window.outcomes),
        "" if window.metric is None else f"{window.metric:.3f}",
        "" if worst is None else f"{worst[0]:.3f} ({html.escape(worst[1])})",
        "" if window.prediction_psi is None else f"{window.prediction_psi:.3f}",
    ]
    reasons = html.escape(window.summary())
    css = (
        ' class="flagged severe"' if window.severe else ' class="flagged"' if window.flagged else ""
    )
    return (
        f"<tr{css}>"
        + "".join(f"<td>{c}</td>" for c in cells)
        + f'<td class="reasons">{reasons}</td></tr>'
    )


def shadow_table(result: Result) -> str:
    """The shadow (SHADOW_ALIAS) beside the served model, window by window; empty if none."""
    windows = [window for window in result.windows if window.shadow_rows]
    if not windows:
        return ""
    # The metric's name tells the task: no name serves both.
    values = result.metric in GREATER_IS_BETTER["regression"]
    metric = html.escape(result.metric)
    comparison = "mean absolute difference" if values else "agreement"
    heads = ["window", "shadow version", "rows scored by both", f"{metric}, served",
             f"{metric}, shadow", comparison]  # fmt: skip
    body = "".join(
        "<tr>" + "".join(f"<td>{cell}</td>" for cell in shadow_cells(window)) + "</tr>"
        for window in windows
    )
    header = "".join(f"<th>{head}</th>" for head in heads)
    return (
        '<h2>The shadow beside the served model</h2><table class="shadow"><thead><tr>'
        f"{header}</tr></thead><tbody>{body}</tbody></table>"
    )


def shadow_cells(window: Window) -> list[str]:
    """A window's line of the shadow's table."""
    figures = [window.metric, window.shadow_metric, window.shadow_agreement]
    return [
        html.escape(window.label),
        html.escape(window.shadow_version or ""),
        str(window.shadow_rows),
        *("" if figure is None else f"{figure:.3f}" for figure in figures),
    ]


def verdict_kind(result: Result, settings: MonitoringConfig) -> str:
    """The verdict box's class: retrain (red), watch (amber: flagged, not yet enough), fine."""
    if result.retrain:
        return "retrain"
    return "watch" if any(window.flagged for window in recent(result.windows, settings)) else "fine"


def html_report(result: Result, settings: MonitoringConfig, images: dict[str, Figure]) -> str:
    """The report: verdict, the table of windows, the figures with the titles they show."""
    kind = verdict_kind(result, settings)
    title = f"Monitoring of {result.model} version {result.version}"
    pictures = "".join(
        f'<figure><img alt="{html.escape(name)}" src="data:image/png;base64,'
        f'{base64.b64encode(png(image)).decode()}">'
        f"<figcaption>{html.escape(caption(image))}</figcaption></figure>"
        for name, image in images.items()
    )
    header = "".join(
        f"<th>{h}</th>"
        for h in ["window", "rows", "outcomes", html.escape(result.metric), "worst feature PSI",
                  "prediction PSI", "flagged because"]
    )  # fmt: skip
    baseline = "none" if result.baseline is None else f"{result.baseline:.3f}"
    tolerance = f"{settings.tolerance * 100:g} %"
    severe = f"{settings.severe * 100:g} %"
    left_out = (
        f"<p>{result.left_out} rows of other model versions were left out.</p>"
        if result.left_out
        else ""
    )
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>{CSS}</style></head>
<body>
<h1>{html.escape(title)}</h1>
<p class="verdict {kind}">{html.escape(result.verdict)}</p>
<p>Windows of {html.escape(settings.window)}; a window is flagged when a feature's or the
predictions' PSI is above {settings.drift_threshold:g}, or when {html.escape(result.metric)}
is worse than its held-out value ({baseline}) by more than {tolerance}; it is severe when a
PSI is above {settings.severe_drift_threshold:g}, or when the metric is worse by more than
{severe} on {SEVERE_OUTCOMES} outcomes or more. Retraining is recommended when at least
{settings.flagged} of the last {settings.of} windows are flagged, or one is severe.</p>
{left_out}
<table><thead><tr>{header}</tr></thead><tbody>
{"".join(row(window, result.metric) for window in result.windows)}
</tbody></table>
{shadow_table(result)}
{pictures}
</body></html>
"""
