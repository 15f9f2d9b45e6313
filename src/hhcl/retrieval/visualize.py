"""Pictures of retrieval results: ranked lists as an image grid, the CMC curve, an HTML page.

Pillow only: no plotting library is needed to look at what a model retrieves.
"""

from __future__ import annotations

import base64
import html
import io
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from hhcl.data.images import read_image
from hhcl.files import atomic_file, ensure_writable_folder, write_bytes_atomically
from hhcl.retrieval.search import RankedList

ImageLike = str | os.PathLike | Image.Image

TRUE_MATCH_COLOR = (0, 170, 0)
FALSE_MATCH_COLOR = (220, 0, 0)
UNKNOWN_MATCH_COLOR = (160, 160, 160)
QUERY_COLOR = (40, 90, 220)
BACKGROUND_COLOR = (255, 255, 255)
TEXT_COLOR = (0, 0, 0)

# Grid geometry in pixels. A cell is one picture with its coloured border; PAD surrounds every
# cell, LABEL_HEIGHT is the caption strip under it, QUERY_GAP sets the query apart from its list.
BORDER = 4
PAD = 4
LABEL_HEIGHT = 14
QUERY_GAP = 16
FONT_SIZE = 11


def ranked_grid_size(num_queries: int, topk: int, cell_size: tuple[int, int] = (128, 64)) -> tuple[int, int]:
    """The ``(width, height)`` in pixels of the grid drawn by :func:`draw_ranked_lists`."""
    cell_height, cell_width = cell_size
    width = (1 + topk) * (cell_width + 2 * PAD) + QUERY_GAP
    height = num_queries * (cell_height + 2 * PAD + LABEL_HEIGHT)
    return width, height


def draw_ranked_lists(
    query_paths: Sequence[ImageLike],
    ranked_paths: Sequence[Sequence[ImageLike]],
    output_path: str | os.PathLike,
    query_pids: Sequence[int | None] | None = None,
    ranked_pids: Sequence[Sequence[int | None]] | None = None,
    distances: Sequence[Sequence[float]] | None = None,
    cell_size: tuple[int, int] = (128, 64),
) -> Path:
    """Draw one row per query, the query first and then its ranked gallery images in order.

    Args:
        query_paths: Q query images (paths or PIL images).
        ranked_paths: Q lists of ranked gallery images, best first; the lists may differ in length.
        output_path: the PNG to write; its folder is created.
        query_pids, ranked_pids: identities, shaped like the images. When both the query's and a
            gallery image's identity are known, the gallery image gets a green border for a true
            match and a red one for a false match; an unknown identity (None or -1) gets grey.
        distances: Q lists of distances, shaped like ``ranked_paths``, printed under each image.
        cell_size: ``(height, width)`` of one picture, border included.

    Returns:
        The path of the PNG, of size :func:`ranked_grid_size` ``(Q, longest list, cell_size)``.
    """
    num_queries = len(query_paths)
    if num_queries == 0:
        raise ValueError("draw_ranked_lists needs at least one query")
    _check_shaped_like(ranked_paths, num_queries, "ranked_paths")
    if query_pids is not None and len(query_pids) != num_queries:
        raise ValueError(f"query_pids has {len(query_pids)} entries for {num_queries} queries")
    if ranked_pids is not None:
        _check_shaped_like(ranked_pids, num_queries, "ranked_pids", like=ranked_paths)
    if distances is not None:
        _check_shaped_like(distances, num_queries, "distances", like=ranked_paths)

    cell_height, cell_width = cell_size
    topk = max(len(ranked) for ranked in ranked_paths)
    grid = Image.new("RGB", ranked_grid_size(num_queries, topk, cell_size), BACKGROUND_COLOR)
    draw = ImageDraw.Draw(grid)
    font = _label_font()
    column_width = cell_width + 2 * PAD
    row_height = cell_height + 2 * PAD + LABEL_HEIGHT

    for row, query in enumerate(query_paths):
        top = row * row_height + PAD
        query_pid = _known_pid(query_pids[row]) if query_pids is not None else None
        _paste_cell(grid, _open_rgb(query), (PAD, top), cell_size, QUERY_COLOR)
        query_label = "query" if query_pid is None else f"query {query_pid}"
        _draw_label(draw, font, query_label, PAD, top + cell_height, cell_width)

        for rank, gallery_image in enumerate(ranked_paths[row]):
            gallery_pid = _known_pid(ranked_pids[row][rank]) if ranked_pids is not None else None
            color = _match_color(query_pid, gallery_pid)
            left = QUERY_GAP + (rank + 1) * column_width + PAD
            _paste_cell(grid, _open_rgb(gallery_image), (left, top), cell_size, color)
            label = f"{rank + 1}"
            if distances is not None:
                label += f"  {float(distances[row][rank]):.3f}"
            _draw_label(draw, font, label, left, top + cell_height, cell_width)

    return _save_png(grid, output_path)


# Colours of the curves that plot_cmc overlays, in order (the first is the single curve's).
CURVE_COLORS = (QUERY_COLOR, (230, 120, 0), (0, 150, 110), (170, 50, 170), (120, 120, 120), (200, 30, 60))


def plot_cmc(
    cmc: Sequence[float] | np.ndarray | dict[str, Sequence[float] | np.ndarray],
    output_path: str | os.PathLike,
    label: str | None = None,
    size: tuple[int, int] = (640, 480),
) -> Path:
    """Draw a CMC curve (matching rate against rank), or several overlaid with a legend, as a PNG.

    Args:
        cmc: ``(R,)`` matching rates at ranks 1..R, fractions in [0, 1] (as
            :func:`hhcl.evaluation.evaluate_ranking` returns them); or ``{legend: (R_i,) rates}``
            for several curves on one chart, e.g. a zero-shot model against the adapted one.
        output_path: the PNG to write; its folder is created.
        label: a title for the chart, e.g. the model file and dataset.
        size: ``(width, height)`` of the picture in pixels.

    Returns:
        The path of the PNG.
    """
    curves = {name: _cmc_rates(rates) for name, rates in (cmc.items() if isinstance(cmc, dict) else [(None, cmc)])}
    if not curves:
        raise ValueError("plot_cmc needs at least one curve")
    if len(curves) > len(CURVE_COLORS):
        raise ValueError(f"plot_cmc overlays at most {len(CURVE_COLORS)} curves, got {len(curves)}")

    width, height = size
    left, right, top, bottom = 64, 24, 36, 48
    plot_width, plot_height = width - left - right, height - top - bottom
    num_ranks = max(rates.size for rates in curves.values())
    chart = Image.new("RGB", size, BACKGROUND_COLOR)
    draw = ImageDraw.Draw(chart)
    font = _label_font()

    def to_pixel(rank: float, rate: float) -> tuple[float, float]:
        x_fraction = 0.5 if num_ranks == 1 else (rank - 1) / (num_ranks - 1)
        return left + x_fraction * plot_width, top + (1 - rate) * plot_height

    for percent in range(0, 101, 10):
        _, y = to_pixel(1, percent / 100)
        draw.line([(left, y), (left + plot_width, y)], fill=(225, 225, 225))
        draw.text((left - 6, y), f"{percent}%", fill=TEXT_COLOR, font=font, anchor="rm")
    for rank in _rank_ticks(num_ranks):
        x, _ = to_pixel(rank, 0)
        draw.line([(x, top), (x, top + plot_height)], fill=(235, 235, 235))
        draw.text((x, top + plot_height + 6), str(rank), fill=TEXT_COLOR, font=font, anchor="mt")
    draw.rectangle([left, top, left + plot_width, top + plot_height], outline=TEXT_COLOR)
    draw.text((left + plot_width / 2, height - 8), "rank", fill=TEXT_COLOR, font=font, anchor="mb")
    draw.text((8, top - 10), "matching rate", fill=TEXT_COLOR, font=font, anchor="lm")
    title = "CMC" if label is None else f"CMC: {label}"
    draw.text((left + plot_width / 2, top - 10), title, fill=TEXT_COLOR, font=font, anchor="mm")

    for number, (name, rates) in enumerate(curves.items()):
        color = CURVE_COLORS[number]
        points = [to_pixel(rank, rate) for rank, rate in enumerate(rates, start=1)]
        if len(points) > 1:
            draw.line(points, fill=color, width=2, joint="curve")
        for rank in (1, 5, 10, 20):
            if rank <= rates.size:
                x, y = points[rank - 1]
                draw.ellipse([x - 3, y - 3, x + 3, y + 3], fill=color)
                if len(curves) == 1:  # several curves: the legend gives rank-1, labels would overlap
                    draw.text((x + 5, y + 4), f"R{rank}: {100 * rates[rank - 1]:.1f}%", fill=TEXT_COLOR, font=font,
                              anchor="la")
        if name is not None:
            # the legend, bottom right, where CMC curves (rising to the top) leave room
            y = top + plot_height - 8 - 16 * (len(curves) - number)
            draw.line([(left + plot_width - 230, y + 6), (left + plot_width - 206, y + 6)], fill=color, width=3)
            draw.text((left + plot_width - 200, y), f"{name}: rank-1 {100 * rates[0]:.1f}%", fill=TEXT_COLOR, font=font)
    return _save_png(chart, output_path)


def _cmc_rates(cmc) -> np.ndarray:
    rates = np.asarray(cmc, dtype=np.float64).reshape(-1)
    if rates.size == 0:
        raise ValueError("plot_cmc needs at least one rank")
    if not np.all(np.isfinite(rates)) or rates.min() < 0 or rates.max() > 1 + 1e-6:
        raise ValueError(f"cmc must hold fractions in [0, 1], got values in [{rates.min()}, {rates.max()}]")
    return rates


def write_html_page(
    ranked_lists: Sequence[RankedList],
    output_path: str | os.PathLike,
    grid_image: str | None = "ranked.png",
    title: str = "hhcl search",
    thumbnail_size: tuple[int, int] = (128, 64),
) -> Path:
    """Write a self-contained HTML page of ranked lists.

    Thumbnails are embedded in the page, so that the page can be moved or mailed; each links to
    its original file. ``grid_image``, relative to the page, is shown on top when given.
    ``thumbnail_size`` is ``(height, width)``.
    """
    output_path = Path(output_path)
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(title)}</title>",
        "<style>",
        "body{font-family:sans-serif;margin:1.5em}",
        "table{border-collapse:collapse;margin-bottom:1.5em}",
        "td{padding:4px;text-align:center;vertical-align:top;font-size:12px}",
        "td img{display:block;margin:auto;border:4px solid}",
        ".name{max-width:10em;overflow-wrap:anywhere}",
        "</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        "<p>Border: <span style='color:rgb%s'>query</span>, <span style='color:rgb%s'>same identity</span>, "
        "<span style='color:rgb%s'>other identity</span>, <span style='color:rgb%s'>identity unknown</span>. "
        "Distance: cosine distance, 1 - cos(query, gallery).</p>"
        % (QUERY_COLOR, TRUE_MATCH_COLOR, FALSE_MATCH_COLOR, UNKNOWN_MATCH_COLOR),
    ]
    if grid_image is not None:
        parts.append(f'<p><img src="{html.escape(grid_image)}" alt="ranked lists"></p>')
    for number, ranked in enumerate(ranked_lists, start=1):
        query_pid = _known_pid(ranked.query_pid)
        parts.append(f"<h2>Query {number}: {html.escape(Path(ranked.query_path).name)}</h2>")
        parts.append("<table><tr>")
        parts.append(_html_cell(ranked.query_path, "query", QUERY_COLOR, thumbnail_size))
        gallery_pids = ranked.gallery_pids or [None] * len(ranked.gallery_paths)
        for rank, (path, distance, pid) in enumerate(
            zip(ranked.gallery_paths, ranked.distances, gallery_pids, strict=True), start=1
        ):
            color = _match_color(query_pid, _known_pid(pid))
            parts.append(_html_cell(path, f"{rank}: {distance:.4f}", color, thumbnail_size))
        parts.append("</tr></table>")
    parts.append("</body></html>")
    ensure_writable_folder(output_path.parent)
    write_bytes_atomically(output_path, "\n".join(parts) + "\n")
    return output_path


def write_search_report(
    ranked_lists: Sequence[RankedList], output_folder: str | os.PathLike, title: str = "hhcl search"
) -> tuple[Path, Path]:
    """Write ``output_folder/ranked.png`` (:func:`draw_ranked_lists`) and ``output_folder/index.html``.

    Returns the two paths.
    """
    output_folder = ensure_writable_folder(output_folder)
    grid = draw_ranked_lists(
        [ranked.query_path for ranked in ranked_lists],
        [ranked.gallery_paths for ranked in ranked_lists],
        output_folder / "ranked.png",
        query_pids=[ranked.query_pid for ranked in ranked_lists],
        ranked_pids=[ranked.gallery_pids or [None] * len(ranked.gallery_paths) for ranked in ranked_lists],
        distances=[ranked.distances for ranked in ranked_lists],
    )
    page = write_html_page(ranked_lists, output_folder / "index.html", grid_image=grid.name, title=title)
    return grid, page


def thumbnail_jpeg(image: ImageLike, size: tuple[int, int], quality: int = 85) -> bytes:
    """``image`` resized to ``size`` ``(height, width)``, as JPEG bytes (the thumbnails of the HTML pages)."""
    buffer = io.BytesIO()
    _open_rgb(image).resize(size[::-1], Image.Resampling.BICUBIC).save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def _html_cell(path: str, caption: str, color: tuple[int, int, int], thumbnail_size: tuple[int, int]) -> str:
    data = base64.b64encode(thumbnail_jpeg(path, thumbnail_size)).decode("ascii")
    link = Path(path).resolve().as_uri()
    name = html.escape(Path(path).name)
    return (
        f'<td><a href="{html.escape(link)}"><img src="data:image/jpeg;base64,{data}" '
        f'style="border-color:rgb{color}" alt="{name}"></a>'
        f'<div>{html.escape(caption)}</div><div class="name">{name}</div></td>'
    )


def _check_shaped_like(values, num_queries: int, name: str, like=None) -> None:
    if len(values) != num_queries:
        raise ValueError(f"{name} has {len(values)} rows for {num_queries} queries")
    if like is not None:
        for row, (these, those) in enumerate(zip(values, like)):
            if len(these) != len(those):
                raise ValueError(f"{name}[{row}] has {len(these)} entries for {len(those)} ranked images")


def _known_pid(pid) -> int | None:
    if pid is None:
        return None
    pid = int(pid)
    return None if pid < 0 else pid


def _match_color(query_pid: int | None, gallery_pid: int | None) -> tuple[int, int, int]:
    if query_pid is None or gallery_pid is None:
        return UNKNOWN_MATCH_COLOR
    return TRUE_MATCH_COLOR if gallery_pid == query_pid else FALSE_MATCH_COLOR


def _open_rgb(image: ImageLike) -> Image.Image:
    if isinstance(image, Image.Image):
        return image.convert("RGB")
    return read_image(image)


def _paste_cell(
    grid: Image.Image, image: Image.Image, corner: tuple[int, int], cell_size: tuple[int, int], color
) -> None:
    cell_height, cell_width = cell_size
    left, top = corner
    ImageDraw.Draw(grid).rectangle([left, top, left + cell_width - 1, top + cell_height - 1], fill=color)
    inner = (cell_width - 2 * BORDER, cell_height - 2 * BORDER)
    grid.paste(image.resize(inner, Image.Resampling.BICUBIC), (left + BORDER, top + BORDER))


def _draw_label(draw: ImageDraw.ImageDraw, font, text: str, left: int, top: int, width: int) -> None:
    while len(text) > 1 and draw.textlength(text, font=font) > width:
        text = text[:-1]
    draw.text((left + width / 2, top + LABEL_HEIGHT / 2 + 1), text, fill=TEXT_COLOR, font=font, anchor="mm")


def _label_font():
    try:
        return ImageFont.load_default(size=FONT_SIZE)
    except TypeError:  # Pillow < 10.1 has only the fixed bitmap font
        return ImageFont.load_default()


def _rank_ticks(num_ranks: int) -> list[int]:
    """Rank 1, then multiples of the smallest 1-2-5 step that gives at most ten ticks."""
    step = next(
        step for step in (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 10**9) if num_ranks / step <= 10
    )
    return sorted({1, *range(step, num_ranks + 1, step)})


def _save_png(image: Image.Image, output_path: str | os.PathLike) -> Path:
    output_path = Path(output_path)
    ensure_writable_folder(output_path.parent)
    with atomic_file(output_path) as temporary:
        image.save(temporary, format="PNG")
    return output_path

