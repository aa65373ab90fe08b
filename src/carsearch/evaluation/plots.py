"""PNG renderings of results people would rather look at than read."""

from __future__ import annotations

from pathlib import Path

from carsearch.core.imaging import open_rgb
from carsearch.core.io import atomic_path


def recall_curves_png(curves: dict[str, dict[str, list[float]]], out_png: Path) -> None:
    """curves: model name -> direction -> recall@1..K."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    directions = sorted({d for c in curves.values() for d in c})
    fig, axes = plt.subplots(1, len(directions), figsize=(5 * len(directions), 4), squeeze=False)
    for ax, direction in zip(axes[0], directions):
        for name, c in curves.items():
            ys = c[direction]
            ax.plot(range(1, len(ys) + 1), ys, marker="o", label=name)
        ax.set_title(direction.replace("_", " "))
        ax.set_xlabel("k")
        ax.set_ylabel("recall@k")
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    with atomic_path(out_png, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)


def results_grid_png(queries: list[tuple], out_png: Path, thumb: int = 112) -> None:
    """One row per query: the query text (and the query image, for an image query: a third tuple
    element), then its top results with their scores (green frame = relevant, red = not)."""
    from PIL import Image, ImageDraw

    cols = max((len(q[1]) for q in queries), default=1)
    label_w, cell_h = 220, thumb + 16
    sheet = Image.new("RGB", (label_w + cols * (thumb + 4), max(1, len(queries)) * cell_h), "white")
    d = ImageDraw.Draw(sheet)
    for row, (text, results, *qimg) in enumerate(queries):
        y = row * cell_h
        if qimg and qimg[0] is not None:
            q = open_rgb(qimg[0])
            q.thumbnail((label_w - 120, thumb - 6))
            sheet.paste(q, (label_w - q.width - 8, y + 3))
        words, line, lines = text.split(), "", []
        for w in words:
            if len(line) + len(w) > 16:
                lines.append(line)
                line = ""
            line += w + " "
        lines.append(line)
        for j, ln in enumerate(lines[:6]):
            d.text((4, y + 4 + 12 * j), ln, fill=(0, 0, 0))
        for col, (path, score, ok) in enumerate(results):
            x = label_w + col * (thumb + 4)
            if isinstance(path, Image.Image):
                im = path.convert("RGB")
            else:
                try:
                    im = open_rgb(path)
                except (OSError, ValueError):  # missing or unreadable (a stale index): a grey placeholder tile
                    im = Image.new("RGB", (thumb - 6, thumb - 6), (215, 215, 215))
                    ImageDraw.Draw(im).text(
                        (6, thumb // 2 - 12),
                        "missing file" if not Path(path).exists() else "unreadable",
                        fill=(90, 90, 90),
                    )
            im.thumbnail((thumb - 6, thumb - 6))
            d.rectangle([x, y, x + thumb - 1, y + thumb - 1], outline=(20, 160, 40) if ok else (200, 30, 30), width=3)
            sheet.paste(im, (x + 3, y + 3))
            d.text((x + 3, y + thumb + 1), f"{score:.3f}", fill=(0, 0, 0))
    with atomic_path(out_png, suffix=".png") as tmp:
        sheet.save(tmp, format="PNG")
