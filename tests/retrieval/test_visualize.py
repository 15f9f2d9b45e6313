import re

import numpy as np
import pytest
from PIL import Image

from hhcl.errors import HHCLError
from hhcl.retrieval import visualize
from hhcl.retrieval.search import RankedList
from hhcl.retrieval.visualize import (
    FALSE_MATCH_COLOR,
    QUERY_COLOR,
    TRUE_MATCH_COLOR,
    UNKNOWN_MATCH_COLOR,
    draw_ranked_lists,
    plot_cmc,
    ranked_grid_size,
    write_html_page,
)

CELL = (128, 64)
COLUMN_WIDTH = CELL[1] + 2 * visualize.PAD
ROW_HEIGHT = CELL[0] + 2 * visualize.PAD + visualize.LABEL_HEIGHT


def solid(color, size=(40, 90)) -> Image.Image:
    return Image.new("RGB", size, color)


def cell_corner(row: int, column: int) -> tuple[int, int]:
    """Top-left pixel of a cell; column 0 is the query, column r the rank-r image."""
    left = visualize.PAD if column == 0 else visualize.QUERY_GAP + column * COLUMN_WIDTH + visualize.PAD
    return left, row * ROW_HEIGHT + visualize.PAD


def cell_center(row: int, column: int) -> tuple[int, int]:
    left, top = cell_corner(row, column)
    return left + CELL[1] // 2, top + CELL[0] // 2


def test_grid_has_one_row_per_query_and_ranked_images_in_order(tmp_path):
    gallery_colors = [(250, 200, 0), (0, 200, 250), (120, 0, 120)]
    query_colors = [(10, 10, 10), (240, 240, 240)]
    ranked = [[solid(color) for color in gallery_colors], [solid(color) for color in reversed(gallery_colors)]]

    output = draw_ranked_lists(
        [solid(color) for color in query_colors], ranked, tmp_path / "nested" / "ranked.png", cell_size=CELL
    )

    with Image.open(output) as grid:
        assert grid.format == "PNG"
        assert grid.size == ranked_grid_size(2, 3, CELL)
        assert grid.size == (4 * COLUMN_WIDTH + visualize.QUERY_GAP, 2 * ROW_HEIGHT)
        grid = grid.convert("RGB")
        for row in range(2):
            assert grid.getpixel(cell_center(row, 0)) == query_colors[row]
            assert grid.getpixel(cell_corner(row, 0)) == QUERY_COLOR
        for rank, color in enumerate(gallery_colors, start=1):
            assert grid.getpixel(cell_center(0, rank)) == color
            assert grid.getpixel(cell_center(1, 4 - rank)) == color


def test_borders_show_true_false_and_unknown_matches(tmp_path):
    ranked = [[solid((0, 0, 255))] * 4]
    output = draw_ranked_lists(
        [solid((0, 0, 0))],
        ranked,
        tmp_path / "ranked.png",
        query_pids=[7],
        ranked_pids=[[7, 3, -1, None]],
        distances=[[0.1, 0.2, 0.3, 0.4]],
        cell_size=CELL,
    )
    with Image.open(output) as grid:
        grid = grid.convert("RGB")
        borders = [grid.getpixel(cell_corner(0, rank)) for rank in range(1, 5)]
    assert borders == [TRUE_MATCH_COLOR, FALSE_MATCH_COLOR, UNKNOWN_MATCH_COLOR, UNKNOWN_MATCH_COLOR]


def test_unknown_query_identity_greys_every_border(tmp_path):
    output = draw_ranked_lists(
        [solid((0, 0, 0))], [[solid((0, 0, 255))] * 2], tmp_path / "ranked.png",
        query_pids=[-1], ranked_pids=[[-1, 4]], cell_size=CELL,
    )
    with Image.open(output) as grid:
        grid = grid.convert("RGB")
        assert [grid.getpixel(cell_corner(0, rank)) for rank in (1, 2)] == [UNKNOWN_MATCH_COLOR] * 2


def test_rows_of_different_lengths_and_image_files(tmp_path):
    paths = []
    for index, color in enumerate([(255, 0, 0), (0, 255, 0), (0, 0, 255)]):
        path = tmp_path / f"{index:04d}_c1.png"
        solid(color).save(path)
        paths.append(path)
    output = draw_ranked_lists([paths[0], str(paths[1])], [[paths[1], paths[2]], [paths[0]]], tmp_path / "out.png")
    with Image.open(output) as grid:
        assert grid.size == ranked_grid_size(2, 2)
        grid = grid.convert("RGB")
        assert grid.getpixel(cell_center(0, 2)) == (0, 0, 255)
        assert grid.getpixel(cell_center(1, 1)) == (255, 0, 0)
        # the short row leaves its second rank empty
        assert grid.getpixel(cell_center(1, 2)) == visualize.BACKGROUND_COLOR


@pytest.mark.parametrize(
    "arguments, message",
    [
        (dict(query_paths=[], ranked_paths=[]), "at least one query"),
        (dict(ranked_paths=[[]] * 2), "ranked_paths has 2 rows"),
        (dict(query_pids=[1, 2]), "query_pids has 2 entries"),
        (dict(ranked_pids=[[1]]), r"ranked_pids\[0\] has 1 entries for 2"),
        (dict(distances=[[0.1, 0.2, 0.3]]), r"distances\[0\] has 3 entries for 2"),
    ],
)
def test_mismatched_shapes_are_rejected(tmp_path, arguments, message):
    call = dict(query_paths=[solid((0, 0, 0))], ranked_paths=[[solid((1, 1, 1))] * 2], output_path=tmp_path / "x.png")
    call.update(arguments)
    with pytest.raises(ValueError, match=message):
        draw_ranked_lists(**call)


def test_unwritable_output_folder_names_it(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    with pytest.raises(HHCLError, match=re.escape(str(blocker / "sub"))):
        draw_ranked_lists([solid((0, 0, 0))], [[solid((1, 1, 1))]], blocker / "sub" / "ranked.png")


def test_unreadable_image_names_the_file(tmp_path):
    broken = tmp_path / "0001_c1.jpg"
    broken.write_bytes(b"not a jpeg")
    with pytest.raises(HHCLError, match=re.escape(str(broken))):
        draw_ranked_lists([broken], [[solid((1, 1, 1))]], tmp_path / "ranked.png")


def curve_pixels(path) -> np.ndarray:
    """(x, y) of the pixels drawn in the curve colour."""
    with Image.open(path) as chart:
        pixels = np.asarray(chart.convert("RGB"))
    ys, xs = np.nonzero(np.all(pixels == QUERY_COLOR, axis=-1))
    return np.stack([xs, ys], axis=1)


def test_plot_cmc_draws_a_rising_curve(tmp_path):
    cmc = np.minimum(1.0, 0.3 + 0.05 * np.arange(20))
    output = plot_cmc(cmc, tmp_path / "plots" / "cmc.png", label="osnet on prid2011", size=(500, 400))
    with Image.open(output) as chart:
        assert chart.format == "PNG" and chart.size == (500, 400)
    points = curve_pixels(output)
    assert len(points) > 100
    left_third = points[points[:, 0] < np.percentile(points[:, 0], 33)]
    right_third = points[points[:, 0] > np.percentile(points[:, 0], 67)]
    # image rows grow downwards: a rising curve ends higher on the picture
    assert left_third[:, 1].mean() > right_third[:, 1].mean() + 50


def test_plot_cmc_height_follows_the_rate(tmp_path):
    low = curve_pixels(plot_cmc([0.2] * 10, tmp_path / "low.png"))
    high = curve_pixels(plot_cmc([0.9] * 10, tmp_path / "high.png"))
    assert np.median(low[:, 1]) - np.median(high[:, 1]) > 200


@pytest.mark.parametrize("cmc", [[], [0.5, 1.5], [float("nan")], [-0.1]])
def test_plot_cmc_rejects_values_that_are_not_fractions(tmp_path, cmc):
    with pytest.raises(ValueError):
        plot_cmc(cmc, tmp_path / "cmc.png")


def test_html_page_lists_ranked_files_in_order_with_colours(tmp_path):
    paths = []
    for name in ["0001_q.png", "0001_g.png", "0002_g.png", "weird <name>.png"]:
        path = tmp_path / "images" / name
        path.parent.mkdir(exist_ok=True)
        solid((90, 90, 90)).save(path)
        paths.append(str(path))
    ranked = RankedList(
        query_path=paths[0], gallery_paths=paths[1:], distances=[0.05, 0.5, 0.9],
        query_pid=1, gallery_pids=[1, 2, None],
    )

    page = write_html_page([ranked], tmp_path / "out" / "index.html").read_text()

    assert page.index("0001_g.png") < page.index("0002_g.png") < page.index("weird &lt;name&gt;.png")
    assert "weird <name>" not in page
    assert page.count("data:image/jpeg;base64,") == 4
    assert 'src="ranked.png"' in page
    colours = re.findall(r'style="border-color:rgb(\(\d+, \d+, \d+\))"', page)
    assert colours == [str(color) for color in (QUERY_COLOR, TRUE_MATCH_COLOR, FALSE_MATCH_COLOR, UNKNOWN_MATCH_COLOR)]
    assert "1: 0.0500" in page and "3: 0.9000" in page


def test_search_report_writes_the_grid_and_the_page(tmp_path):
    from hhcl.retrieval.visualize import write_search_report

    paths = []
    for name in ["0001_a.png", "0001_b.png", "0002_b.png"]:
        solid((30, 60, 90)).save(tmp_path / name)
        paths.append(str(tmp_path / name))
    ranked = RankedList(paths[0], paths[1:], [0.1, 0.2], query_pid=1, gallery_pids=[1, 2])
    grid, page = write_search_report([ranked], tmp_path / "out")
    assert grid == tmp_path / "out" / "ranked.png" and page == tmp_path / "out" / "index.html"
    with Image.open(grid) as image:
        assert image.size == ranked_grid_size(1, 2)
        image = image.convert("RGB")
        assert [image.getpixel(cell_corner(0, rank)) for rank in (1, 2)] == [TRUE_MATCH_COLOR, FALSE_MATCH_COLOR]
    assert 'src="ranked.png"' in page.read_text()


def test_plot_cmc_overlays_several_curves_in_their_own_colours(tmp_path):
    curves = {"zero-shot/model.pth": np.linspace(0.3, 0.9, 20), "adapt/model.pth": np.linspace(0.5, 1.0, 20)}
    with Image.open(plot_cmc(curves, tmp_path / "cmc.png", label="2 models on ilids")) as picture:
        colours = {colour for _, colour in picture.convert("RGB").getcolors(1 << 20)}
    assert {visualize.CURVE_COLORS[0], visualize.CURVE_COLORS[1]} <= colours
    assert visualize.CURVE_COLORS[2] not in colours
