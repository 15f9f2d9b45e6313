import pytest
import yaml

from hhcl import config as cfg
from hhcl.errors import HHCLError

PAPER_EPS = {"market1501": 0.45, "dukemtmcreid": 0.6, "msmt17": 0.7}


def test_defaults_are_the_papers_setup():
    config = cfg.load_config()
    assert config.model.arch == "resnet50"
    assert (config.train.batch_size, config.train.num_instances) == (256, 16)
    assert (config.optim.lr, config.optim.weight_decay) == (3.5e-4, 5e-4)
    assert (config.optim.step_size, config.optim.gamma) == (20, 0.1)
    assert (config.train.epochs, config.train.iters) == (60, 200)
    assert (config.memory.mode, config.memory.temperature, config.memory.momentum) == ("hybrid", 0.05, 0.1)
    assert (config.cluster.k1, config.cluster.k2, config.cluster.min_samples) == (30, 6, 4)


@pytest.mark.parametrize("dataset", sorted(PAPER_EPS))
def test_dataset_presets_carry_the_papers_eps_and_inherit_the_base(dataset):
    config = cfg.load_config(f"{dataset}_resnet50")
    assert config.dataset.name == dataset
    assert config.cluster.eps == PAPER_EPS[dataset]
    assert config.train.iters == (300 if dataset == "msmt17" else 200)
    assert config.optim.lr == 3.5e-4  # from base.yaml
    assert isinstance(config.optim.lr, float)


def test_every_shipped_preset_loads():
    presets = cfg.list_presets()
    assert "base" not in presets
    assert {"market1501_resnet50", "dukemtmcreid_resnet50", "msmt17_resnet50", "demo"} <= set(presets)
    for name in presets:
        cfg.load_config(name)


def test_duke_adaptation_preset_is_the_adapt_policy_at_dukes_scale():
    duke, adapt = cfg.load_config("dukemtmcreid_osnet_x0_25"), cfg.load_config("adapt")
    assert (duke.dataset.name, duke.model.arch, duke.model.init_weights) == ("dukemtmcreid", "osnet_x0_25", None)
    assert (duke.cluster.eps, duke.cluster.k1, duke.cluster.knn) == (0.6, 30, "auto")
    # No test-set evaluation between epochs (it costs about as much as an epoch), none used to select.
    assert duke.evaluation.eval_every == 0 and not duke.evaluation.select_best
    assert duke.train.compile and not adapt.train.compile  # extraction is most of a Duke epoch on CPU
    for key in ("model.freeze_bn", "model.init_mix", "cluster.camera_centering", "cluster.reliability_margin",
                "cluster.min_compactness", "guard.enabled", "memory.mode", "optim.lr", "train.batch_size"):
        assert duke.get(key) == adapt.get(key), key
    assert adapt.dataset.name == "folder" and adapt.cluster.k1 == 20  # adapt.yaml does not bend towards Duke


def test_base_defaults_match_the_dataclass_defaults():
    # base.yaml and the dataclasses must not drift apart: both describe the paper's setup
    base = yaml.safe_load((cfg.PRESET_DIR / "base.yaml").read_text())
    defaults = cfg.Config().to_dict()
    for section, values in base.items():
        for key, value in values.items():
            assert cfg.Config.from_dict({section: {key: value}}).get(f"{section}.{key}") == defaults[section][key]


def test_overrides_are_typed():
    config = cfg.load_config("market1501_resnet50", [
        "cluster.eps=0.5", "train.epochs=3", "optim.lr=1e-3", "train.supervised=true",
        "model.init_weights=run/model.pth", "model.weights=null", "dataset.options.num_identities=40",
    ])
    assert config.cluster.eps == 0.5
    assert config.train.epochs == 3
    assert config.optim.lr == 1e-3 and isinstance(config.optim.lr, float)
    assert config.train.supervised is True
    assert config.model.init_weights == "run/model.pth"
    assert config.model.weights is None
    assert config.dataset.options == {"num_identities": 40}


def test_unknown_key_names_the_closest_valid_key():
    with pytest.raises(HHCLError, match="did you mean 'memory.temperature'"):
        cfg.load_config("market1501_resnet50", ["memory.temprature=0.1"])
    with pytest.raises(HHCLError, match="did you mean 'cluster.eps'"):
        cfg.load_config(None, ["eps=0.5"])


def test_bad_values_are_one_line_errors_naming_the_key():
    for override, key in [("train.epochs=abc", "train.epochs"), ("memory.mode=CM", "memory.mode"),
                          ("train.batch_size=100", "train.batch_size"), ("memory.loss_form=mean", "memory.loss_form")]:
        with pytest.raises(HHCLError) as error:
            cfg.load_config("market1501_resnet50", [override])
        assert key in str(error.value) and "\n" not in str(error.value)
    with pytest.raises(HHCLError, match="section.key=value"):
        cfg.load_config(None, ["cluster.eps"])


def test_parts_are_off_by_default_and_checked_in_one_line():
    config = cfg.load_config("market1501_resnet50")
    assert (config.model.parts, config.memory.part_weight) == (0, 1.0)
    config = cfg.load_config("market1501_resnet50", ["model.parts=2", "memory.part_weight=0.5"])
    assert (config.model.parts, config.memory.part_weight) == (2, 0.5)
    for override, key in [("model.parts=-1", "model.parts"), ("memory.part_weight=-0.5", "memory.part_weight"),
                          ("model.parts=1.5", "model.parts")]:
        with pytest.raises(HHCLError, match=key.replace(".", r"\.")) as error:
            cfg.load_config("market1501_resnet50", [override])
        assert "\n" not in str(error.value)


def test_cluster_knn_takes_the_knn_methods():
    assert cfg.load_config("market1501_resnet50").cluster.knn == "auto"
    assert cfg.load_config("market1501_resnet50", ["cluster.knn=faiss"]).cluster.knn == "faiss"
    assert cfg.load_config("market1501_resnet50", ["cluster.knn=approximate"]).cluster.knn == "approximate"
    with pytest.raises(HHCLError, match=r"cluster.knn = 'flat' is invalid; it must be one of auto, exact, approximate, "):
        cfg.load_config("market1501_resnet50", ["cluster.knn=flat"])
    assert cfg.load_config("market1501_resnet50", ["cluster.knn_nprobe=32"]).cluster.knn_nprobe == 32
    with pytest.raises(HHCLError, match=r"cluster.knn_nprobe = -1 is invalid"):
        cfg.load_config("market1501_resnet50", ["cluster.knn_nprobe=-1"])


def test_the_ensemble_and_camera_proxy_keys_are_off_by_default_and_checked():
    config = cfg.load_config("market1501_resnet50")
    assert (config.cluster.ensemble_eps, config.memory.camera_proxies) == ([], False)
    config = cfg.load_config("market1501_resnet50",
                             ["cluster.ensemble_eps=[0.5, 6.0e-1]", "memory.camera_proxies=true"])
    assert (config.cluster.ensemble_eps, config.memory.camera_proxies) == ([0.5, 0.6], True)
    for override, expected in [("cluster.ensemble_eps=[0.5, 1.5]", "a list of numbers in (0, 1)"),
                               ("cluster.ensemble_eps=[0.5, 0.5]", "distinct"),
                               ("cluster.ensemble_eps=0.5", "not a valid list"),
                               ("memory.camera_proxies=maybe", "not a valid bool")]:
        with pytest.raises(HHCLError) as error:
            cfg.load_config("market1501_resnet50", [override])
        message = str(error.value)
        assert override.split("=")[0] in message and expected in message and "\n" not in message


def test_yaml_file_with_a_base_chain(tmp_path):
    (tmp_path / "parent.yaml").write_text("_base_: " + str(cfg.PRESET_DIR / "market1501_resnet50.yaml")
                                          + "\ncluster:\n  k1: 20\n")
    (tmp_path / "child.yaml").write_text("_base_: parent.yaml\ntrain:\n  epochs: 2\n")
    config = cfg.load_config(tmp_path / "child.yaml", ["cluster.k2=4"])
    assert (config.cluster.eps, config.cluster.k1, config.cluster.k2, config.train.epochs) == (0.45, 20, 4, 2)


def test_a_users_file_can_start_from_a_shipped_preset(tmp_path):
    (tmp_path / "mine.yaml").write_text("_base_: adapt\ndataset:\n  name: folder\n  root: [cams/a, cams/b]\n")
    config = cfg.load_config(tmp_path / "mine.yaml")
    assert config.dataset.root == ["cams/a", "cams/b"]
    assert config.model.arch == cfg.load_config("adapt").model.arch
    (tmp_path / "typo.yaml").write_text("_base_: adpat\n")
    with pytest.raises(HHCLError, match="did you mean 'adapt'"):
        cfg.load_config(tmp_path / "typo.yaml")


def test_a_base_cycle_and_bad_files_are_reported(tmp_path):
    (tmp_path / "a.yaml").write_text("_base_: b.yaml\n")
    (tmp_path / "b.yaml").write_text("_base_: a.yaml\n")
    with pytest.raises(HHCLError, match="includes itself"):
        cfg.load_config(tmp_path / "a.yaml")
    (tmp_path / "bad.yaml").write_text("cluster: [1, 2\n")
    with pytest.raises(HHCLError, match="not valid YAML"):
        cfg.load_config(tmp_path / "bad.yaml")
    with pytest.raises(HHCLError, match="not found"):
        cfg.load_config(tmp_path / "missing.yaml")
    with pytest.raises(HHCLError, match="did you mean 'market1501_resnet50'"):
        cfg.load_config("market1501_resnet5")


def test_yaml_round_trip():
    config = cfg.load_config("dukemtmcreid_resnet50", ["dataset.options.seed=3"])
    again = cfg.Config.from_dict(yaml.safe_load(config.to_yaml()))
    assert again == config


def test_memory_modes_agree_with_the_memory_module():
    from hhcl import losses, memory

    assert cfg.MEMORY_MODES == memory.MEMORY_MODES
    assert cfg.LOSS_FORMS == losses.LOSS_FORMS


def test_config_show_prints_the_resolved_yaml(capsys):
    from hhcl.cli import main

    assert main(["config", "show", "msmt17_resnet50", "--set", "cluster.eps=0.65"]) == 0
    shown = yaml.safe_load(capsys.readouterr().out)
    assert shown["cluster"]["eps"] == 0.65
    assert shown["train"]["iters"] == 300
    assert shown["dataset"]["name"] == "msmt17"


def test_config_show_unknown_key_is_one_line_with_exit_2(capsys):
    from hhcl.cli import main

    assert main(["config", "show", "market1501_resnet50", "--set", "train.epoch=3"]) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and "did you mean 'train.epochs'" in error


def test_config_list_names_the_presets(capsys):
    from hhcl.cli import main

    assert main(["config", "list"]) == 0
    assert "market1501_resnet50" in capsys.readouterr().out.split()
