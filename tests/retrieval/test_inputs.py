import numpy as np
import pytest

from hhcl.errors import HHCLError
from hhcl.retrieval.inputs import gather_image_paths
from hhcl.retrieval.outputs import load_features, read_npz, save_features


@pytest.fixture
def folder(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    for name in ["0002_c1.jpg", "0001_c1.png", "0003_c2.bmp", "0004_c2.JPEG"]:
        (images / name).write_bytes(b"pixels")
    (images / "notes.txt").write_text("not an image")
    (images / "nested").mkdir()
    (images / "nested" / "0005_c1.jpg").write_bytes(b"pixels")
    return images


def test_a_folder_gives_its_images_sorted_not_recursive(folder):
    names = [path.rsplit("/", 1)[1] for path in gather_image_paths([folder])]
    assert names == ["0001_c1.png", "0002_c1.jpg", "0003_c2.bmp", "0004_c2.JPEG"]


def test_a_list_file_is_relative_to_itself_and_skips_comments(folder, tmp_path):
    listing = tmp_path / "lists" / "query.txt"
    listing.parent.mkdir()
    listing.write_text("# queries\n../images/0003_c2.bmp\n\n  ../images/0001_c1.png  \n")
    assert gather_image_paths([listing]) == [
        str(listing.parent / "../images/0003_c2.bmp"), str(listing.parent / "../images/0001_c1.png")
    ]


def test_sources_combine_in_order_without_duplicates(folder):
    single = folder / "0004_c2.JPEG"
    paths = gather_image_paths([single, folder])
    assert paths[0] == str(single) and len(paths) == 4


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda root: root / "absent", "--images {} not found"),
        (lambda root: (root / "empty").mkdir() or root / "empty", "--images folder {} has no images"),
        (lambda root: (root / "list.txt").write_text("# nothing\n") and root / "list.txt", "lists no images"),
        (lambda root: (root / "list.txt").write_text("a.jpg\n") and root / "list.txt",
         r"list.txt:1: image .*a.jpg not found"),
        (lambda root: (root / "list.txt").write_text("list.txt\n") and root / "list.txt",
         r"list.txt:1: .* is not an image"),
        (lambda root: (root / "raw.bin").write_bytes(b"\xff\xfe\x00") and root / "raw.bin", "neither an image"),
    ],
)
def test_bad_sources_are_named(tmp_path, make, message):
    source = make(tmp_path)
    with pytest.raises(HHCLError, match=message.format(source).replace("(", r"\(")):
        gather_image_paths([source])


def test_save_features_keeps_the_exact_name_and_metadata(tmp_path):
    features = np.arange(6, dtype=np.float32).reshape(2, 3)
    path = save_features(tmp_path / "out" / "features", ["a.jpg", "b.jpg"], features, arch="osnet_x0_25")
    assert path == tmp_path / "out" / "features"
    with np.load(path) as stored:
        assert stored["paths"].tolist() == ["a.jpg", "b.jpg"]
        np.testing.assert_array_equal(stored["features"], features)
        assert str(stored["arch"]) == "osnet_x0_25"


def test_save_features_refuses_a_folder_or_an_unwritable_place(tmp_path):
    with pytest.raises(HHCLError, match="is a folder"):
        save_features(tmp_path, [], np.zeros((0, 3)))
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(HHCLError, match=str(blocker / "sub")):
        save_features(blocker / "sub" / "f.npz", [], np.zeros((0, 3)))


def flip_byte_in(path, data: bytes) -> None:
    """Flip one bit of the middle byte of ``data``, where it lies in the file ``path``."""
    content = bytearray(path.read_bytes())
    start = content.index(data)
    content[start + len(data) // 2] ^= 0x01
    path.write_bytes(bytes(content))


def test_features_read_back_verified_and_a_changed_byte_is_a_one_line_error(tmp_path):
    features = np.random.default_rng(0).standard_normal((5, 4)).astype(np.float32)
    path = save_features(tmp_path / "features.npz", [f"{i}.jpg" for i in range(5)], features, arch="osnet_x0_25")
    paths, loaded, metadata = load_features(path)
    assert paths == [f"{i}.jpg" for i in range(5)] and metadata == {"arch": "osnet_x0_25"}
    np.testing.assert_array_equal(loaded, features)

    flip_byte_in(path, features.tobytes())
    with pytest.raises(HHCLError, match="features.npz is corrupt") as error:
        load_features(path)
    assert "\n" not in str(error.value)


def test_rewritten_arrays_that_keep_the_old_checksum_are_refused(tmp_path):
    path = save_features(tmp_path / "features.npz", ["a.jpg"], np.ones((1, 2)))
    with np.load(path) as stored:
        arrays = {key: stored[key] for key in stored.files}
    arrays["features"] = arrays["features"] * 2
    with open(path, "wb") as stream:
        np.savez(stream, **arrays)
    with pytest.raises(HHCLError, match="is corrupt: its contents do not match the sha256 checksum"):
        read_npz(path)
    plain = tmp_path / "plain.npz"
    with open(plain, "wb") as stream:
        np.savez(stream, paths=np.array(["a.jpg"]), features=np.ones((1, 2), np.float32))
    assert load_features(plain)[0] == ["a.jpg"]  # a file without a checksum loads unchecked
