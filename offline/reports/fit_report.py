"""The fit's report: ``evaluation.json`` with every number, and ``report.html`` with PNG figures.

Figures: every test face beside its VAE-GAN and PCA reconstructions; pairwise accuracy bars per face space and
feature space with the chance line (and the permutation control); the estimated head motion of every run.
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

import numpy as np

from service.jsonsafe import jsonable as _jsonable

__all__ = ["write_report"]


def _faces_figure(path: Path, test_images: np.ndarray, recon: dict[str, np.ndarray]) -> None:
    import matplotlib.pyplot as plt

    rows = ["shown", *recon]
    n = len(test_images)
    fig, axes = plt.subplots(len(rows), n, figsize=(0.9 * n + 1.2, 1.0 * len(rows) + 0.3), squeeze=False)
    for r, name in enumerate(rows):
        ims = test_images if name == "shown" else recon[name]
        for c in range(n):
            ax = axes[r, c]
            ax.imshow(np.clip(ims[c], 0, 1))
            ax.set_xticks([])
            ax.set_yticks([])
            if c == 0:
                ax.set_ylabel(name.replace(" ", "\n"), fontsize=7)
    fig.suptitle("test faces (top) and their reconstructions from brain activity", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _accuracy_figure(path: Path, evaluation: dict) -> None:
    import matplotlib.pyplot as plt

    details = evaluation["details"]
    bars, labels = [], []
    for est, by_map in details.items():
        for mname, by_space in by_map.items():
            for sname, scores in by_space.items():
                for kind in ("latent", "pixel", "perceptual"):
                    if kind in scores:
                        bars.append(scores[kind]["accuracy"])
                        labels.append(f"{sname} {kind}\n{mname} / {est}")
    colours = ["#3b6ea5" if "vaegan" in lab else "#c47f2c" for lab in labels]
    fig, ax = plt.subplots(figsize=(max(6.0, 0.45 * len(bars) + 1.5), 4.2))
    ax.bar(range(len(bars)), bars, color=colours)
    ax.axhline(0.5, color="k", ls="--", lw=1, label="chance (50 %)")
    perm = evaluation.get("permutation", {})
    if "mean" in perm:
        ax.axhline(perm["mean"], color="#999999", ls=":", lw=1.5, label=f"permutation control ({perm['mean']:.0%})")
    ax.set_xticks(range(len(bars)))
    ax.set_xticklabels(labels, rotation=90, fontsize=7)
    ax.set_ylim(0, 1)
    ax.set_ylabel("pairwise identification accuracy")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _motion_figure(path: Path, motion: dict[str, np.ndarray]) -> None:
    import matplotlib.pyplot as plt

    fig, (ax_t, ax_r) = plt.subplots(2, 1, figsize=(9, 4.5), sharex=True)
    offset = 0
    for i, params in enumerate(motion.values()):
        t = np.arange(len(params)) + offset
        for j, lab in enumerate(("x", "y", "z")):
            ax_t.plot(t, params[:, j], color=f"C{j}", lw=0.8, label=lab if i == 0 else None)
            ax_r.plot(t, params[:, 3 + j], color=f"C{j}", lw=0.8, label=lab if i == 0 else None)
        offset += len(params)
        ax_t.axvline(offset, color="#cccccc", lw=0.5)
        ax_r.axvline(offset, color="#cccccc", lw=0.5)
    ax_t.set_ylabel("translation (mm)")
    ax_r.set_ylabel("rotation (deg)")
    ax_r.set_xlabel("volume (runs concatenated)")
    ax_t.legend(loc="upper right", fontsize=7, ncol=3)
    fig.suptitle("estimated head motion (realigned to the mean of the first run)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.3f}" if abs(v) >= 1e-3 or v == 0 else f"{v:.1e}"
    return html.escape(str(v))


def _fitted(sc: dict) -> str:
    """The mapping's cross-validated settings: penalty, latent directions (encoding) and rescale factor."""
    parts = [f"alpha {_fmt(sc['alpha'])}"]
    if "n_components" in sc:
        parts.append(f"{sc['n_components'] or 'all'} latent directions")
    if "scale" in sc:
        parts.append(f"rescale x{sc['scale']:.2f}")
    return ", ".join(parts)


def _table(details: dict) -> str:
    rows = [
        "<tr><th>estimate</th><th>mapping</th><th>face space</th><th>latent</th><th>pixel</th>"
        "<th>perceptual</th><th>fitted by cross-validation</th></tr>"
    ]
    for est, by_map in details.items():
        for mname, by_space in by_map.items():
            for sname, sc in by_space.items():
                cells = [
                    f"{sc[k]['accuracy']:.1%} (p={_fmt(sc[k]['p_value'])})"
                    + (
                        f"<br><small>centred {sc[k + '_centred']['accuracy']:.1%}</small>"
                        if k + "_centred" in sc
                        else ""
                    )
                    if k in sc
                    else "-"
                    for k in ("latent", "pixel", "perceptual")
                ]
                rows.append(
                    f"<tr><td>{est}</td><td>{mname}</td><td>{sname}</td><td>{'</td><td>'.join(cells)}</td>"
                    f"<td>{_fitted(sc)}</td></tr>"
                )
    return "<table>" + "".join(rows) + "</table>"


def _gender_html(gender: dict) -> str:
    if "skipped" in gender:
        return f"<p>Gender: skipped ({html.escape(gender['skipped'])}).</p>"
    rows = ["<tr><th>face space</th><th>latents</th><th>projection on Male</th><th>linear classifier</th></tr>"]
    for sname, by_map in gender.items():
        for mname, res in by_map.items():
            p, c = res["projection"], res["classifier"]
            rows.append(
                f"<tr><td>{sname}</td><td>{'true' if mname == 'true_latents' else 'decoded, ' + mname}</td>"
                f"<td>{p['accuracy']:.0%} (p={_fmt(p['p_value'])})</td>"
                f"<td>{c['accuracy']:.0%} (p={_fmt(c['p_value'])})</td></tr>"
            )
    return "<table>" + "".join(rows) + "</table>"


def _imagery_html(imagery: dict) -> str:
    if "skipped" in imagery:
        return f"<p>Imagery: skipped ({html.escape(imagery['skipped'])}).</p>"
    rows = [
        "<tr><th>estimate</th><th>mapping</th><th>face space</th><th>latent</th><th>pixel</th><th>perceptual</th>"
        "<th>single trials (latent)</th></tr>"
    ]
    for est, by_map in imagery["details"].items():
        for mname, by_space in by_map.items():
            for sname, sc in by_space.items():
                cells = [
                    f"{sc[k]['accuracy']:.1%} (n={sc[k]['n_items']}, p={_fmt(sc[k]['p_value'])})" if k in sc else "-"
                    for k in ("latent", "pixel", "perceptual")
                ]
                t = sc["trials"]
                cells.append(f"{t['accuracy']:.1%} ({t['n_trials']} trials, p={_fmt(t['p_value'])})")
                rows.append(
                    f"<tr><td>{est}</td><td>{mname}</td><td>{sname}</td><td>{'</td><td>'.join(cells)}</td></tr>"
                )
    return "<table>" + "".join(rows) + "</table>"


_ALIGN_LINES = (
    ("alone", "alone", "-o"),
    ("aligned", "aligned", "-s"),
    ("aligned_fine_tuned", "aligned, fine-tuned", "-^"),
)


def _alignment_html(out: Path, evaluation: dict) -> str:
    """The ``--align-to`` table and plot: accuracy against the new subject's sessions, alone and aligned."""
    table = evaluation.get("alignment")
    if not table or not table.get("rows"):
        return ""
    import matplotlib.pyplot as plt

    rows = table["rows"]
    n = [r["sessions"] for r in rows]
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4), sharey=True)
    for ax, suffix, title in ((axes[0], "", "raw (the paper's)"), (axes[1], "_centred", "centred")):
        for key, label, style in _ALIGN_LINES:
            ax.plot(n, [r[f"{key}{suffix}"] for r in rows], style, label=label)
        ax.axhline(0.5, color="grey", lw=0.8, ls=":")
        ax.set_xticks(n)
        ax.set_xlabel("the new subject's sessions")
        ax.set_title(f"pairwise latent accuracy, {title}", fontsize=10)
    axes[0].set_ylabel("accuracy")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "figures" / "alignment.png", dpi=100)
    plt.close(fig)
    head = "<tr><th>sessions</th><th>training faces</th><th>shared faces</th><th>voxels</th>" + "".join(
        f"<th>{label}</th><th>{label}, centred</th>" for _, label, _ in _ALIGN_LINES
    )
    body = "".join(
        f"<tr><td>{r['sessions']}</td><td>{r['train_faces']}</td><td>{r['shared_faces']}</td><td>{r['voxels']}</td>"
        + "".join(f"<td>{r[k]:.1%}</td><td>{r[k + '_centred']:.1%}</td>" for k, _, _ in _ALIGN_LINES)
        + "</tr>"
        for r in rows
    )
    return (
        f"<h2>A new subject through another subject's decoder ({html.escape(table['method'])} alignment)</h2>"
        f"<p>Reference bundle <code>{html.escape(str(table.get('reference')))}</code>. For each number of this"
        " subject's sessions: its own ridge mapping (alone), the reference's mapping read through the alignment fitted"
        " on the shared faces among those sessions (aligned), and that map corrected on the sessions' own training"
        f" faces (fine-tuned). {html.escape(table['metric'])}.</p><table>{head}</tr>{body}</table>"
        '<img src="figures/alignment.png" alt="accuracy against sessions, alone and aligned">'
    )


def write_report(
    out: str | Path,
    *,
    evaluation: dict,
    test_images: np.ndarray,
    recon: dict[str, np.ndarray],
    motion: dict[str, np.ndarray],
    training: dict,
    timing: dict,
) -> Path:
    """Write ``evaluation.json``, the figures and ``report.html`` into ``out``; returns the HTML path."""
    out = Path(out)
    (out / "figures").mkdir(parents=True, exist_ok=True)
    (out / "evaluation.json").write_text(
        json.dumps({**evaluation, "training": training, "timing": timing}, indent=2, default=_jsonable) + "\n"
    )
    import matplotlib

    matplotlib.use("Agg")
    _faces_figure(out / "figures" / "faces.png", test_images, recon)
    _accuracy_figure(out / "figures" / "accuracy.png", evaluation)
    _motion_figure(out / "figures" / "motion.png", motion)
    from offline.reports.paper import ablation_html, repeats_figure

    where = ""
    if repeats_figure(out / "figures" / "repeats.png", evaluation):
        where += (
            "<h2>Accuracy against the number of test repeats averaged</h2><p>Each point: the fitted mappings on test"
            " patterns averaged over that many repeats of each face, drawn at random (mean and SD over draws); dotted:"
            " the twin's ceiling (a ridge map from its noise-free hidden code).</p>"
            '<img src="figures/repeats.png" alt="accuracy against repeats">'
        )
    where += _alignment_html(out, evaluation)
    abl = ablation_html(evaluation)
    if abl:
        where += (
            "<h2>Where the accuracy goes (the twin's ground truth)</h2><p>The ridge mapping refitted on what only the"
            " twin knows: its responsive voxels, their BOLD without scanner noise or motion, and the hidden code"
            " that drives them.</p>" + abl
        )
    perm = evaluation.get("permutation", {})
    perm_html = (
        "<p>Permutation control (training pairs shuffled, mapping refitted, latent space, VAE-GAN): "
        + ", ".join(
            f"{m} {perm[m]['mean']:.1%} &plusmn; {perm[m]['std']:.1%} over {perm[m]['n_permutations']} shuffles"
            for m in ("ridge", "encoding")
            if m in perm
        )
        + " (chance 50 %).</p>"
        if perm
        else "<p>Permutation control: not run.</p>"
    )
    body = f"""<!doctype html><html><head><meta charset="utf-8"><title>fmriface fit report</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:2em auto}}table{{border-collapse:collapse;margin:1em 0}}
td,th{{border:1px solid #ccc;padding:3px 8px;font-size:13px}}img{{max-width:100%}}</style></head><body>
<h1>fmriface fit: decoding faces from brain activity</h1>
<p>Subject {html.escape(str(training.get("subject")))} of <code>{html.escape(str(training.get("bids")))}</code>:
{training.get("train_stimuli")} training faces, {training.get("test_stimuli")} test faces (repeats averaged),
{training.get("imagery_stimuli")} imagined faces; {training.get("volumes")} volumes realigned to
{html.escape(str(training.get("reference")))}. Voxels: {html.escape(json.dumps(evaluation.get("selection", {})))}.</p>
<p>The bundle uses the <b>{evaluation["mapping"]}</b> mapping on <b>{evaluation["estimate"]}</b> estimates in the
VAE-GAN face space. Pairwise identification as in VanRullen &amp; Reddy (2019): for each test face, the fraction
of the other faces whose correlation with the prediction is lower than that of its own; chance 50 %; binomial
p-values over the N(N-1) comparisons (descriptive: comparisons are not independent).
Perceptual features are {html.escape(evaluation.get("perceptual_space", ""), quote=False)}.</p>
<h2>Test faces and their reconstructions (both mappings, {evaluation["estimate"]} estimates)</h2>
<img src="figures/faces.png" alt="test faces and reconstructions">
<h2>Pairwise decoding accuracy</h2>
<img src="figures/accuracy.png" alt="accuracy bars">
<p>Each cell: the paper's pairwise accuracy (raw correlations) and, below it, the same with predicted and true
vectors centred on the mean training vector of that space (mean latent, mean face, mean features). Raw
correlations are dominated by the mean face / mean latent whenever it is large next to the faces' differences
(e.g. saturated latent units), which drags the raw score toward chance; the centred score shows what the
decoder tells the faces apart by. Where a mapping was fitted with <i>rescale</i>, its decoded latents' deviations
from the mean latent were multiplied by one factor, fitted on held-out training predictions, so that they spread
like the training latents: ridge otherwise shrinks every decoded face toward the mean face. One factor leaves
every centred score unchanged.</p>{_table(evaluation["details"])}{perm_html}
<h2>Gender (Male) from the decoded latents</h2>
<p>By the sign of the projection on the Male direction (mean latent of male minus female training faces, from
their midpoint), and by a logistic-regression classifier trained on the true latents of the training faces.</p>
{_gender_html(evaluation["gender"])}
<h2>Imagery: which imagined face was decoded</h2>
<p>Pairwise identification among the imagined faces (each face's trials averaged), and per single trial
(window estimates: one imagery trial; GLM: one run): the fraction of the other imagined faces beaten by the
imagined one in correlation with the decoded latent.</p>
{_imagery_html(evaluation["imagery"])}
{where}
<h2>Head motion</h2><img src="figures/motion.png" alt="motion trace">
<h2>Timing</h2><p>{html.escape(json.dumps(timing))}</p>
<p>Every number: <a href="evaluation.json">evaluation.json</a>.</p></body></html>
"""
    path = out / "report.html"
    path.write_text(body)
    return path
