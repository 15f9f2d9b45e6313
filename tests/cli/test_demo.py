import json

from PIL import Image

from hhcl.cli import main
from hhcl.config import load_config
from hhcl.retrieval.visualize import ranked_grid_size


def test_quick_demo_prints_the_json_summary_and_writes_a_picture(tmp_path, capsys):
    output = tmp_path / "demo"
    assert main(["demo", "--quick", "--json", "--output", str(output)]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert set(summary) == {"before", "after", "seconds"}
    for stage in ("before", "after"):
        assert set(summary[stage]) == {"mAP", "rank1"}
        assert all(0.0 <= value <= 100.0 for value in summary[stage].values())
    assert summary["seconds"] > 0
    with Image.open(output / "ranked_lists.png") as picture:
        # one row per query (six), each the query and its top eight gallery images
        assert picture.size == ranked_grid_size(num_queries=6, topk=8)
    assert (output / "run" / "model.pth").is_file()
    assert (output / "synthetic" / "synthetic.json").is_file()


def test_the_demo_presets_train_a_small_backbone_from_scratch():
    for name in ("demo", "demo_quick"):
        config = load_config(name)
        assert config.dataset.name == "synthetic"
        assert config.model.weights is None and config.model.init_weights is None
        assert config.memory.mode == "hybrid"
    assert load_config("demo_quick").train.epochs < load_config("demo").train.epochs
