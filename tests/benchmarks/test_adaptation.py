import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[2]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from benchmarks.adaptation import evaluate_test_sets, evaluation_items  # noqa: E402
from benchmarks.adaptation_protocols import (  # noqa: E402
    FOLDERS,
    PROTOCOLS,
    FolderSpec,
    Image,
    Part,
    ProtocolUnavailable,
    build_protocol,
    camera_protocol_split,
    identity_key,
    load_protocol,
    pool_shape,
    single_query_split,
    split_identities,
)
from benchmarks.adaptation_report import (  # noqa: E402
    BEGIN_MARKER,
    END_MARKER,
    gap_closed,
    render_protocol_section,
    render_section,
    replace_section,
)

PRID_LIKE = FolderSpec("pair", "unused", shared_identities=4, query_camera="a", gallery_camera="b")


def prid_like_images() -> list[Image]:
    images = []
    for number in range(1, 5):  # seen by both cameras
        images += [Image(f"{number:04d}_a.png", str(number), "a"), Image(f"{number:04d}_b.png", str(number), "b")]
    for number in (5, 6):  # camera a only
        images.append(Image(f"{number:04d}_a.png", identity_key(str(number), "a", PRID_LIKE), "a"))
    for number in (5, 6, 7, 8):  # camera b only: other people than a5, a6
        images.append(Image(f"{number:04d}_b.png", identity_key(str(number), "b", PRID_LIKE), "b"))
    return images


def test_split_identities_halves_disjointly_and_deterministically():
    identities = list(range(11)) * 2
    train, test = split_identities(identities, seed=0)
    assert len(test) == 5 and len(train) == 6
    assert sorted(train + test) == list(range(11))
    assert split_identities(identities, seed=0) == (train, test)
    assert split_identities(identities, seed=1) != (train, test)


def test_unshared_identities_are_per_camera():
    assert identity_key("0003", "a", PRID_LIKE) == "3"
    assert identity_key("0201", "a", FOLDERS[0]) == "a201"
    assert identity_key("0201", "b", FOLDERS[0]) == "b201"
    assert identity_key("0201", "0", FOLDERS[1]) == "201"


def test_camera_protocol_split():
    train, query, gallery = camera_protocol_split(prid_like_images(), PRID_LIKE, seed=0)
    shared_train, shared_test = split_identities([str(n) for n in range(1, 5)], seed=0)
    assert {image.identity for image in query} == set(shared_test)
    assert all(image.camera == "a" for image in query)
    assert all(image.camera == "b" for image in gallery)
    assert {image.identity for image in gallery} == set(shared_test) | {"b5", "b6", "b7", "b8"}
    assert {image.identity for image in train} == set(shared_train) | {"a5", "a6"}
    assert Counter(image.camera for image in train) == Counter({"a": len(shared_train) + 2, "b": len(shared_train)})


def test_single_query_split():
    images = [Image(f"{pid}_{k}.jpg", str(pid), "0") for pid in range(1, 9) for k in range(pid % 3 + 1)]
    train, query, gallery = single_query_split(images, seed=0)
    train_ids, test_ids = split_identities([image.identity for image in images], seed=0)
    assert {image.identity for image in train} == set(train_ids)
    assert len(train) == sum(1 for image in images if image.identity in train_ids)
    counts = Counter(image.identity for image in images)
    assert sorted(image.identity for image in query) == sorted(i for i in test_ids if counts[i] >= 2)
    assert {image.identity for image in gallery} == set(test_ids)
    assert len(query) + len(gallery) == sum(counts[i] for i in test_ids)
    assert single_query_split(images, seed=0) == (train, query, gallery)


def test_build_protocol_pools_train_halves_with_distinct_identities_and_cameras():
    other = FolderSpec("other", "unused")
    others = [Image(f"o{pid}_{k}.jpg", str(pid), "0") for pid in range(1, 7) for k in range(3)]
    protocol = build_protocol({"pair": prid_like_images(), "other": others}, specs=(PRID_LIKE, other), seed=0)
    pair_ids = {pid for (_, pid, _), folder in zip(protocol.train, protocol.train_folders) if folder == "pair"}
    other_ids = {pid for (_, pid, _), folder in zip(protocol.train, protocol.train_folders) if folder == "other"}
    assert pair_ids.isdisjoint(other_ids)
    assert {camera for _, _, camera in protocol.train} == {0, 1, 2}
    assert protocol.camera_sources == {0: 0, 1: 0, 2: 1}  # the two-camera folder is one source
    assert all(pid == -1 for _, pid, _ in protocol.unlabeled_train())
    assert [(t.name, t.cross_camera) for t in protocol.test_sets] == [("pair", True), ("other", False)]
    # distractors carry identities no query has
    pair = protocol.test_sets[0]
    query_ids = {pid for _, pid, _ in pair.query}
    assert len({pid for _, pid, _ in pair.gallery} - query_ids) == 4


def test_evaluate_test_sets_on_perfect_features():
    other = FolderSpec("other", "unused")
    others = [Image(f"o{pid}_{k}.jpg", str(pid), "0") for pid in range(1, 9) for k in range(3)]
    protocol = build_protocol({"pair": prid_like_images(), "other": others}, specs=(PRID_LIKE, other), seed=0)
    items = evaluation_items(protocol)
    pids = [pid + 100 * index for index, t in enumerate(protocol.test_sets) for _, pid, _ in t.query + t.gallery]
    features = torch.nn.functional.one_hot(torch.tensor(pids) % 64, 64).float()
    assert features.shape[0] == len(items)
    results = evaluate_test_sets(features, protocol)
    assert results["pair"]["mAP"] == pytest.approx(100.0)
    assert results["other"]["rank1"] == pytest.approx(100.0)
    assert results["mean"]["mAP"] == pytest.approx(100.0)
    assert results["pair"]["mINP"] == results["mean"]["mINP"] == pytest.approx(100.0)


def test_gap_closed():
    assert gap_closed(30.0, 35.0, 40.0) == pytest.approx(0.5)
    assert gap_closed(30.0, 25.0, 40.0) == pytest.approx(-0.5)
    assert gap_closed(30.0, 35.0, 30.0) is None


def fake_result(label: str, overrides=(), mean_gain=2.0, lr=1e-4) -> dict:
    names = ["pair", "other"]
    zero = {name: {"mAP": 30.0, "rank1": 20.0} for name in names + ["mean"]}
    final = {name: {"mAP": 30.0 + mean_gain, "rank1": 25.0} for name in names + ["mean"]}
    oracle = {name: {"mAP": 36.0, "rank1": 30.0} for name in names + ["mean"]}
    epoch = {"epoch": 1, "clusters": 10, "outliers": 5, "images": 50, "loss": 1.0, "lr": 1e-4,
             "train_seconds": {"train": 3.0}, "measure_seconds": 1.0, "pair_precision": 0.9, "pair_recall": 0.5,
             "metrics": final}
    return {"label": label, "note": "", "command": "python -m benchmarks.adaptation", "config_file": "adapt",
            "overrides": list(overrides), "threads": 2,
            "config": {"optim": {"lr": lr}, "train": {"num_threads": 2}}, "load_average": {"before": 1.0, "after": 2.0}, "cpu_count": 2,
            "pool_images": 50, "test_sets": {name: {"queries": 3, "gallery": 9} for name in names},
            "zero_shot": zero, "zero_shot_seconds": 5.0, "adapted": {"epochs": [epoch], "seconds": 9.0},
            "oracle": {"epochs": [dict(epoch, metrics=oracle)], "seconds": 9.0} if label == "adapt" else None,
            "seconds": 60.0, "finished": "2024-01-01 00:00"}


def test_render_section_reports_the_goal_and_variants():
    section = render_section([fake_result("adapt"), fake_result("lr", ["optim.lr=1e-3"], mean_gain=-1.0, lr=1e-3)])
    assert section.startswith(BEGIN_MARKER) and section.endswith(END_MARKER)
    assert "| zero-shot | 30.0 / 20.0 | 30.0 / 20.0 | 30.0 / 20.0 |" in section
    assert "33% of the gap closed" in section
    assert "above zero-shot on 2 of 2 test sets" in section
    assert "`optim.lr=0.001`" in section and "pair -1.0" in section
    assert render_section([fake_result("adapt")], "What helped: nothing.").endswith("What helped: nothing.\n" + END_MARKER)
    assert "training seeds" not in section


def test_render_section_sums_up_the_runs_of_other_seeds():
    main = fake_result("adapt")
    other_seed = fake_result("adapt-seed-2", mean_gain=-1.0)
    other_seed["config"]["train"]["seed"] = 2
    section = render_section([main, other_seed])
    assert "Across 2 training seeds" in section
    assert "seed ?: 32.0 (33%); seed 2: 29.0 (-17%)" in section
    assert "every test set in 1 of 2 runs" in section and "pair -1.0 to +2.0" in section


def test_config_differences_leave_out_the_run_environment():
    from benchmarks.adaptation_report import config_differences

    reference = {"optim": {"lr": 1e-4}, "train": {"num_threads": 1, "epochs": 3}}
    variant = {"optim": {"lr": 3.5e-4}, "train": {"num_threads": 2, "epochs": 3}}
    assert config_differences(reference, variant) == [("optim.lr", 3.5e-4)]
    # a run stored before an option existed ran with that option's default
    reference["model"] = {"init_mix": 0.5}
    assert config_differences(reference, variant, {"model": {"init_mix": 0.0}}) == [("optim.lr", 3.5e-4),
                                                                                    ("model.init_mix", 0.0)]
    assert config_differences(reference, variant) == [("optim.lr", 3.5e-4)]
    assert config_differences({}, {"optim": {"lr": 1e-3}}) == [("optim.lr", 1e-3)]
    # and the other way round: a reference stored before the option, a variant that sets it
    newer = {"optim": {"lr": 1e-4}, "model": {"parts": 0, "init_mix": 0.5}}
    old = {"optim": {"lr": 1e-4}, "model": {"init_mix": 0.5}}
    assert config_differences(old, newer, {"model": {"parts": 0}}) == []
    assert config_differences(old, {**newer, "model": {"parts": 3, "init_mix": 0.5}},
                              {"model": {"parts": 0}}) == [("model.parts", 3)]


def test_replace_section_leaves_other_sections_alone():
    document = f"# Benchmarks\n\n## Other\ntext\n\n{BEGIN_MARKER}\nold\n{END_MARKER}\n\n## After\nmore\n"
    updated = replace_section(document, f"{BEGIN_MARKER}\nnew\n{END_MARKER}")
    assert "old" not in updated and "new" in updated
    assert updated.startswith("# Benchmarks\n\n## Other\ntext") and updated.endswith("## After\nmore\n")
    appended = replace_section("# Benchmarks\n\n## Other\n", f"{BEGIN_MARKER}\nnew\n{END_MARKER}")
    assert appended.startswith("# Benchmarks\n\n## Other\n") and appended.rstrip().endswith(END_MARKER)


@pytest.mark.shared
def test_real_folders_follow_the_protocol(shared_data):
    protocol = load_protocol(shared_data)
    sets = {t.name: t for t in protocol.test_sets}
    prid = sets["prid2011"]
    assert len(prid.query) == 100 and len(prid.gallery) == 100 + 549
    assert Counter(protocol.train_folders)["prid2011"] == 2 * 100 + 185
    for name in ("caviar4reid", "ilids", "3dpes", "towncentre"):
        query_ids = [pid for _, pid, _ in sets[name].query]
        assert len(query_ids) == len(set(query_ids))
    train_paths = {path for path, _, _ in protocol.train}
    assert train_paths.isdisjoint(path for path, _, _ in evaluation_items(protocol))
    assert len(np.unique(protocol.train_identities())) == len({(f, p) for (_, p, _), f in
                                                                zip(protocol.train, protocol.train_folders)})


def test_pool_shapes_keep_one_image_per_camera_or_one_image():
    images = [Image(f"{pid}_{cam}_{n}.png", str(pid), cam) for pid in (1, 2) for cam in "ab" for n in (1, 2)]
    assert pool_shape(images, "all") == sorted(images, key=lambda image: image.path)
    pairs = pool_shape(images, "one_per_camera")
    assert sorted((image.identity, image.camera) for image in pairs) == [("1", "a"), ("1", "b"), ("2", "a"), ("2", "b")]
    assert pool_shape(images, "one_per_camera") == pairs  # seeded
    assert len(pool_shape(images, "one_image")) == 1
    with pytest.raises(ValueError):
        pool_shape(images, "some")


def test_parts_pool_reshaped_folders_with_distinct_cameras_and_skip_untested_ones():
    cuhk = FolderSpec("cuhk", "unused", query_camera="a", gallery_camera="b", train_identities=2)
    images = {"cuhk": [Image(f"{pid}_{cam}_{n}.png", str(pid), cam) for pid in (1, 2, 3, 4) for cam in "ab"
                       for n in (1, 2)],
              "solo": [Image(f"s{n}.jpg", str(n), "0") for n in range(6)]}
    solo = FolderSpec("solo", "unused")
    protocol = build_protocol(images, [cuhk, solo], parts=[Part("cuhk", "one_per_camera"), Part("solo", "one_image",
                                                                                                   test=False)])
    assert len(protocol.train) == 2 * 2 + 1
    assert len(protocol.camera_sources) == 3 and sorted(set(protocol.camera_sources.values())) == [0, 1]
    assert [t.name for t in protocol.test_sets] == ["cuhk"]
    test = protocol.test_sets[0]
    assert test.cross_camera and len(test.query) == 4 and len(test.gallery) == 4


def test_duke_without_data_is_unavailable_with_a_reason(tmp_path):
    with pytest.raises(ProtocolUnavailable, match="no DukeMTMC-reID"):
        load_protocol(tmp_path, name="duke")


def test_the_no_harm_table_marks_every_set_an_adapted_seed_ends_below_zero_shot():
    runs = []
    for seed, gain in ((1, 2.0), (2, -1.0)):
        run = fake_result("adapt" if seed == 1 else f"adapt-seed-{seed}", mean_gain=gain)
        run["config"]["train"]["seed"] = seed
        runs.append(run)
    section = render_protocol_section("pairs", runs)
    assert section.startswith("<!-- adaptation-pairs:begin -->") and section.endswith("<!-- adaptation-pairs:end -->")
    assert "| pair | 30.0 | 32.0 | 29.0 | -1.0 | 36.0 | **harm** |" in section
    assert "not met" in section and "harm on pair, other, mean" in section


@pytest.mark.shared
@pytest.mark.parametrize("name, images, cameras, sets", [
    ("cuhk01", 1940, 2, ["cuhk01"]),
    ("pairs", 970 + 385, 4, ["cuhk01", "prid2011"]),
    ("many-cameras", 970 + 385 + 630 + 249 + 560 + 1, 8, ["cuhk01", "prid2011", "caviar4reid", "ilids", "3dpes"]),
])
def test_real_protocols_have_their_shape(shared_data, name, images, cameras, sets):
    protocol = load_protocol(shared_data, name=name)
    assert len(protocol.train) == images
    assert len(protocol.camera_sources) == cameras
    assert [t.name for t in protocol.test_sets] == sets
    cuhk = protocol.test_sets[0]
    assert len(cuhk.query) == len(cuhk.gallery) == 486 * 2
    train_paths = {path for path, _, _ in protocol.train}
    assert train_paths.isdisjoint(path for path, _, _ in evaluation_items(protocol))
    if name != "cuhk01":  # two images a person at most: one per camera
        cuhk_ids = [pid for (_, pid, _), folder in zip(protocol.train, protocol.train_folders) if folder == "cuhk01"]
        assert max(Counter(cuhk_ids).values()) == 2


def test_an_option_run_at_several_seeds_gets_one_row_with_its_worst_change():
    runs = [fake_result("adapt", mean_gain=2.0)]
    for seed, gain in ((1, 1.0), (2, -0.5), (3, 3.0)):
        run = fake_result("proxies" if seed == 1 else f"proxies-seed-{seed}", overrides=["memory.camera_proxies=true"],
                          mean_gain=gain)
        run["config"]["train"]["seed"] = seed
        run["cpu"] = "AMD EPYC, torch CPU capability AVX2"
        runs.append(run)
    runs.append(fake_result("one-off", overrides=["optim.lr=1e-3"], mean_gain=4.0))
    section = render_protocol_section("pairs", runs)
    assert ("| `proxies` | `memory.camera_proxies=true` | 31.0 (seed 1), 29.5 (seed 2), 33.0 (seed 3) | "
            "other -0.5 | **harm** | AVX2 |") in section
    assert "- `one-off` (`optim.lr=1e-3`)" in section  # a single-seed run stays in the list below
    assert "- `proxies" not in section


def test_zero_shot_of_a_parts_model_is_the_starting_model_with_its_stripes(tmp_path, osnet_weights):
    # An option's change against zero-shot must be what its training did: with model.parts the
    # zero-shot model is the one training starts from, stripes included, not the global-only model.
    from benchmarks.adaptation import zero_shot_features
    from hhcl.config import load_config

    from PIL import Image as PILImage

    base = tmp_path / "duke"
    names = {"readyTrain": ["0_c2_f01.jpg", "0_c5_f02.jpg", "1_c8_f03.jpg", "2_c1_f04.jpg"],
             "test": ["0002_c1_f05.jpg", "0002_c7_f06.jpg", "0019_c2_f07.jpg"],
             "query": ["0002_c2_f08.jpg", "0019_c6_f09.jpg"]}
    rng = np.random.default_rng(0)
    for folder, files in names.items():
        (base / folder).mkdir(parents=True)
        for name in files:
            PILImage.fromarray(rng.integers(0, 256, (64, 32, 3), dtype=np.uint8)).save(base / folder / name)
    protocol = load_protocol(tmp_path, name="duke", duke_root=base)
    plain = load_config("adapt", ["model.arch=osnet_x0_25"])
    striped = load_config("adapt", ["model.arch=osnet_x0_25", "model.parts=2"])
    plain_pool, plain_metrics, _ = zero_shot_features(plain, protocol, str(osnet_weights))
    pool, metrics, _ = zero_shot_features(striped, protocol, str(osnet_weights))
    assert pool.shape == (len(protocol.train), 3 * plain_pool.shape[1])
    global_piece = torch.nn.functional.normalize(pool[:, :plain_pool.shape[1]], dim=1)
    torch.testing.assert_close(global_piece, plain_pool, atol=1e-5, rtol=0)
    assert not torch.allclose(pool[:, plain_pool.shape[1]:2 * plain_pool.shape[1]] * 3 ** 0.5, plain_pool, atol=1e-3)
    assert metrics.keys() == plain_metrics.keys()
