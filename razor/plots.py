"""Plots a person would rather look at than read: scores, expansion trace, before/after."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from razor.io import atomic_path  # noqa: E402


def _save(fig, path: Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight")
    plt.close(fig)


def score_scatter(scores: list[dict], chosen: list[str], path: Path, note: str = "",
                  title: str = "component scores (red: the initial selection)", initial: tuple[str, ...] = ()) -> None:
    """Importance ‖g_f‖/‖θ‖ against alignment cos(g_f, g_r), one colour per tower; every component in
    `chosen` circled and numbered in order, those of `initial` also starred (no scores: the `note` saying why)."""
    fig, ax = plt.subplots(figsize=(6, 4.5))
    for tower in dict.fromkeys(s["tower"] for s in scores):
        rows = [s for s in scores if s["tower"] == tower]
        ax.scatter([s["cos"] for s in rows], [s["importance"] for s in rows], s=12, alpha=0.6, label=tower)
    if not scores:
        ax.text(0.5, 0.5, note or "no component scores", ha="center", va="center", transform=ax.transAxes)
    where = {s["component"]: s for s in scores}
    for i, name in enumerate((c for c in chosen if c in where), 1):
        s = where[name]
        ax.scatter(s["cos"], s["importance"], s=90, facecolors="none", edgecolors="red", linewidths=1.5)
        if name in initial:
            ax.scatter(s["cos"], s["importance"], s=40, marker="*", color="black")
        ax.annotate(f"{i}. {name}" if len(chosen) > 1 else name, (s["cos"], s["importance"]), fontsize=7,
                    xytext=(4, 4), textcoords="offset points")
    ax.set_xlabel("alignment cos(g_f, g_r)")
    ax.set_ylabel("importance ‖g_f‖ / ‖θ‖")
    ax.set_title(title)
    if scores:
        ax.legend()
    _save(fig, path)


def expansion_trace(rounds: list[dict], path: Path) -> None:
    """Forget-val FA@1 and retain-val accuracy after each edited component."""
    fig, ax = plt.subplots(figsize=(6, 3.5))
    if not rounds or "fa_val" not in rounds[0]:
        ax.text(0.5, 0.5, "this method logs no per-round validation", ha="center", va="center")
        ax.set_axis_off()
        _save(fig, path)
        return
    x = list(range(1, len(rounds) + 1))
    ax.plot(x, [r["fa_val"] for r in rounds], "o-", c="tab:red", label="FA@1 (forget val)")
    ax.plot(x, [r["retain_val"] for r in rounds], "s-", c="tab:green", label="predictions kept (retain val)")
    if "accuracy_val" in rounds[0]:
        ax.plot(x, [r["accuracy_val"] for r in rounds], "^--", c="tab:olive", label="accuracy (retain val)")
    labels = [r.get("component", r.get("step", "")) for r in rounds]
    ax.set_xticks(x, [str(v) for v in labels], rotation=30, fontsize=7, ha="right")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title("expansion trace")
    ax.legend(fontsize=8)
    _save(fig, path)


def before_after(report: dict, path: Path) -> None:
    """Bars of every metric before and after the edit."""
    keys = list(report["before"])
    fig, ax = plt.subplots(figsize=(7, 3.5))
    xs = range(len(keys))
    ax.bar([x - 0.2 for x in xs], [report["before"][k] for k in keys], 0.4, label="before", color="tab:gray")
    ax.bar([x + 0.2 for x in xs], [report["after"][k] for k in keys], 0.4, label="after", color="tab:purple")
    ax.set_xticks(list(xs), keys, rotation=20, fontsize=8)
    ax.set_title(f"{report['method']}: forget {report['forget']}")
    ax.legend()
    _save(fig, path)


def image_grid(prompts: list[str], rows: dict, path: Path) -> None:
    """Generated images: one row per model or method, one column per prompt (images in [-1, 1])."""
    fig, axes = plt.subplots(len(rows), len(prompts), figsize=(1.3 * len(prompts), 1.4 * len(rows)), squeeze=False)
    for r, (name, images) in enumerate(rows.items()):
        for c, prompt in enumerate(prompts):
            ax = axes[r][c]
            ax.imshow(((images[c].detach().cpu().float().permute(1, 2, 0) + 1) / 2).clamp(0, 1).numpy())
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(prompt, fontsize=7)
            if c == 0:
                ax.set_ylabel(name, fontsize=8)
    _save(fig, path)


def attack_bars(attacks: dict, path: Path, title: str) -> None:
    """Each attack's ASR on the edited, base and oracle models (a dash where a model was not attacked);
    with no attacks, a figure that says so."""
    names = list(attacks)
    fig, ax = plt.subplots(figsize=(max(4.0, 1.6 * len(names) + 1), 3.5))
    models = (("asr", "edited", "tab:purple"), ("base_asr", "base", "tab:gray"), ("oracle_asr", "oracle", "tab:green"))
    for i, (key, label, color) in enumerate(models):
        xs = [x + (i - 1) * 0.27 for x in range(len(names))]
        ax.bar(xs, [attacks[n][key] or 0 for n in names], 0.27, label=label, color=color)
        for x, n in zip(xs, names):
            if attacks[n][key] is None:
                ax.text(x, 0.01, "—", ha="center", fontsize=8)
    ax.set_xticks(range(len(names)), names, fontsize=8)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("attack success (concept recognised)")
    ax.set_title(title, fontsize=9)
    if names:
        ax.legend(fontsize=8)
    else:
        ax.text(0.5, 0.5, "no attacks run", ha="center", va="center", transform=ax.transAxes)
    _save(fig, path)
