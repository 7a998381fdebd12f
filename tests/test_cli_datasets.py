"""The --data readers: CHASE_DB1, STARE and DRIVE in their download layouts, channels, scale, field of view."""

import numpy as np
import pytest
import torch
from fundus_layouts import shared_data, write_chase, write_drive, write_stare
from PIL import Image

from softseg.cli.datasets import detect_layout, load_data
from softseg.cli.images import CaseFiles, DataError, load_cases, read_image, read_mask, resize_labels


def _rgb(path, array):
    Image.fromarray(np.asarray(array, dtype=np.uint8)).save(path)
    return path


def test_chase_layout_reads_green_channel_and_both_observers(tmp_path):
    root = write_chase(tmp_path, cases=3)
    loaded = load_data(root)
    assert loaded.layout.name == "CHASE_DB1" and loaded.channel == "green"
    data = loaded.data
    assert data.names == ("01L", "01R", "02L") and data.fov is None and data.num_classes == 2
    assert tuple(data.images.shape) == (3, 1, 16, 20) and tuple(data.raters.shape) == (3, 2, 16, 20)
    first = np.asarray(Image.open(root / "Image_01R_1stHO.png"))
    second = np.asarray(Image.open(root / "Image_01R_2ndHO.png"))
    assert torch.equal(data.raters[1, 0], torch.from_numpy(first.astype(np.int64)))
    assert torch.equal(data.raters[1, 1], torch.from_numpy((second == 255).astype(np.int64)))
    # Green is bright on vessels (JPEG is lossy, so compare by ordering, not values).
    image = data.images[1, 0]
    assert image[data.raters[1, 0] == 1].mean() > 1.0 > image[data.raters[1, 0] == 0].mean() + 1.0


def test_stare_layout_reads_gz_and_plain_files_and_ignores_unlabelled_images(tmp_path):
    root = write_stare(tmp_path, cases=3)
    assert (root / "labels-ah" / "im0001.ah.ppm").exists() and (root / "labels-ah" / "im0002.ah.ppm.gz").exists()
    loaded = load_data(root, channel="rgb")
    assert loaded.layout.name == "STARE" and loaded.channel == "rgb"
    assert loaded.data.names == ("im0001", "im0002", "im0003")  # im0400 has no labels: not a case
    assert tuple(loaded.data.images.shape) == (3, 3, 16, 20)
    # PPM is lossless: the observers' masks come back exactly; vk is the ah mask shifted by one column.
    raters = loaded.data.raters
    assert torch.equal(raters[:, 1], raters[:, 0].roll(1, dims=-1))
    assert raters.unique().tolist() == [0, 1]


def test_drive_layout_uses_the_field_of_view(tmp_path):
    root = write_drive(tmp_path, cases=2)
    for folder in (root, root / "test"):  # the DRIVE folder or its test folder
        loaded = load_data(folder)
        assert loaded.layout.name == "DRIVE test set" and loaded.data.names == ("01", "02")
    data = loaded.data
    mask = np.asarray(Image.open(root / "test" / "mask" / "01_test_mask.gif").convert("L")) == 255
    assert torch.equal(data.fov[0], torch.from_numpy(mask))
    inside = data.images[0, 0][data.fov[0]]
    assert abs(inside.mean().item()) < 1e-4 and abs(inside.std(unbiased=False).item() - 1) < 1e-3
    assert data.images[0, 0][~data.fov[0]].eq(0).all()  # standardised over the field of view, 0 outside


def test_generic_layout_is_still_recognised(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "masks" / "a").mkdir(parents=True)
    _rgb(tmp_path / "images" / "a.png", np.full((4, 4, 3), [255, 0, 0]))
    _rgb(tmp_path / "masks" / "a" / "rater1.png", np.eye(4) * 2)
    loaded = load_data(tmp_path)
    assert loaded.layout.name == "generic" and loaded.channel == "gray" and loaded.data.num_classes == 3
    with pytest.raises(DataError, match=r"--channel green needs colour images; .*rater1.png has one channel"):
        load_cases(
            [CaseFiles("a", tmp_path / "masks" / "a" / "rater1.png", (tmp_path / "masks" / "a" / "rater1.png",))],
            channel="green",
        )


def test_unknown_layout_lists_the_known_ones(tmp_path):
    (tmp_path / "photos").mkdir()
    with pytest.raises(
        DataError, match=r"--data .*: unknown layout; expected one of: CHASE_DB1 \(Image_01L.jpg.*STARE.*DRIVE.*generic"
    ):
        detect_layout(tmp_path)
    with pytest.raises(DataError, match="does not exist or is not a folder"):
        load_data(tmp_path / "absent")


def test_missing_files_are_named_before_anything_is_decoded(tmp_path):
    chase = write_chase(tmp_path / "chase", cases=2)
    (chase / "Image_01R_2ndHO.png").unlink()
    (chase / "Image_01L.jpg").write_bytes(b"broken")  # would fail to decode, but the missing file comes first
    with pytest.raises(DataError, match=r"missing .*Image_01R_2ndHO.png \(rater 2's mask of case '01R'\)"):
        load_data(chase)
    (chase / "Image_01R.jpg").unlink()
    (chase / "Image_01R_1stHO.png").unlink()
    with pytest.raises(DataError, match=r"cannot read .*Image_01L.jpg"):
        load_data(chase)
    chase_masks_only = write_chase(tmp_path / "orphan", cases=1)
    (chase_masks_only / "Image_01L.jpg").unlink()
    with pytest.raises(DataError, match=r"missing .*Image_01L.jpg \(the image of Image_01L_1stHO.png\)"):
        load_data(chase_masks_only)

    stare = write_stare(tmp_path / "stare", cases=2)
    (stare / "labels-vk" / "im0002.vk.ppm.gz").unlink()
    with pytest.raises(
        DataError, match=r"missing .*labels-vk/im0002.vk.ppm \(or im0002.vk.ppm.gz\), needed by labels-ah/im0002"
    ):
        load_data(stare)

    drive = write_drive(tmp_path / "drive", cases=2)
    (drive / "test" / "mask" / "02_test_mask.gif").unlink()
    with pytest.raises(DataError, match=r"missing .*mask/02_test_mask.gif \(the field of view of case '02'\)"):
        load_data(drive)
    (drive / "test" / "2nd_manual" / "01_manual2.gif").unlink()
    (drive / "test" / "2nd_manual" / "02_manual2.gif").unlink()
    (drive / "test" / "2nd_manual").rmdir()
    with pytest.raises(DataError, match=r"missing folder .*2nd_manual: .*second observer comes with the test set only"):
        load_data(drive)


def test_mismatched_and_bad_masks_are_named(tmp_path):
    chase = write_chase(tmp_path / "chase", cases=2)
    _rgb(chase / "Image_01R_2ndHO.png", np.zeros((16, 18)))
    with pytest.raises(
        DataError, match=r"Image_01R_2ndHO.png has size \(16, 18\), but its image .*Image_01R.jpg has \(16, 20\)"
    ):
        load_data(chase)
    _rgb(chase / "Image_01R_2ndHO.png", np.full((16, 20), 128))
    with pytest.raises(
        DataError, match=r"Image_01R_2ndHO.png must be a binary mask \(values 0 and 255, or 0 and 1\); found values 128"
    ):
        load_data(chase)
    _rgb(chase / "Image_01R.jpg", np.zeros((12, 20, 3)))
    with pytest.raises(DataError, match=r"Image_01R.jpg has size \(12, 20\), but .*Image_01L.jpg has \(16, 20\)"):
        load_data(chase)


def test_read_image_channels_by_hand(tmp_path):
    path = _rgb(tmp_path / "c.png", np.full((2, 2, 3), [100, 50, 200]))
    assert read_image(path, channel="green").tolist() == [[[50.0, 50.0], [50.0, 50.0]]]
    assert read_image(path, channel="rgb")[:, 0, 0].tolist() == [100.0, 50.0, 200.0]
    # Pillow's luma: (100 * 299 + 50 * 587 + 200 * 114) / 1000 = 82.05, rounded to 82.
    assert read_image(path, channel="gray")[0, 0, 0] == 82.0
    with pytest.raises(ValueError, match=r"channel must be one of \('gray', 'green', 'rgb'\); got 'blue'"):
        read_image(path, channel="blue")
    with pytest.raises(ValueError, match=r"kind must be one of \('labels', 'binary'\); got 'soft'"):
        read_mask(path, kind="soft")


def test_scale_resizes_images_by_area_and_masks_by_area_then_half(tmp_path):
    image = np.arange(16, dtype=np.uint8).reshape(4, 4) * 10
    mask = np.array([[255, 255, 0, 0], [255, 0, 0, 0], [0, 0, 255, 255], [0, 0, 0, 255]], dtype=np.uint8)
    _rgb(tmp_path / "image.png", image)
    _rgb(tmp_path / "mask.png", mask)
    case = CaseFiles("a", tmp_path / "image.png", (tmp_path / "mask.png",), tmp_path / "mask.png", "binary")
    data = load_cases([case], scale=0.5)
    # Blocks: top-left 3/4 vessel -> 1, top-right 0 -> 0, bottom-left 0 -> 0, bottom-right 3/4 -> 1.
    assert data.raters[0, 0].tolist() == [[1, 0], [0, 1]]
    assert data.fov[0].tolist() == [[True, False], [False, True]]
    # Image block means 25 and 125 inside the field of view -> standardised to -1 and +1; 0 outside.
    assert data.images[0, 0].flatten().tolist() == pytest.approx([-1.0, 0.0, 0.0, 1.0], abs=1e-4)
    # Exactly half a block counts as vessel; a multi-class map keeps the class covering half or more.
    assert resize_labels(np.array([[1, 0], [1, 0]]), (1, 1)).tolist() == [[1]]
    assert resize_labels(np.array([[2, 2], [1, 0]]), (1, 1)).tolist() == [[2]]
    assert resize_labels(np.array([[2, 3], [1, 0]]), (1, 1)).tolist() == [[0]]
    with pytest.raises(ValueError, match=r"scale must be a number in \(0, 1\]; got 1.5"):
        load_cases([case], scale=1.5)


def test_any_image_size_loads(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "masks" / "a").mkdir(parents=True)
    _rgb(tmp_path / "images" / "a.png", np.zeros((6, 7)))
    _rgb(tmp_path / "masks" / "a" / "rater1.png", np.ones((6, 7)))
    assert tuple(load_data(tmp_path).data.images.shape) == (1, 1, 6, 7)  # the network pads; no size rule


@pytest.mark.skipif(shared_data() is None, reason="the team's data folder ../shared/data is absent")
def test_real_chase_db1_original_files():
    root = shared_data() / "chase_db1-original" / "CHASEDB1"
    if not root.is_dir():
        pytest.skip(f"{root} is absent")
    layout = detect_layout(root)
    files = layout.case_files(root)
    assert layout.name == "CHASE_DB1" and len(files) == 28 and files[0].name == "01L" and files[-1].name == "14R"
    # Full resolution, two cases: the observers' Dice equals the data set README's (0.8173 and 0.7744).
    data = load_cases(files[:2], channel="green")
    assert tuple(data.images.shape) == (2, 1, 960, 999) and data.raters.unique().tolist() == [0, 1]
    first, second = data.raters[:, 0].flatten(1).double(), data.raters[:, 1].flatten(1).double()
    dice = 2 * (first * second).sum(1) / (first.sum(1) + second.sum(1))
    assert dice.tolist() == pytest.approx([0.8173, 0.7744], abs=5e-5)


@pytest.mark.skipif(shared_data() is None, reason="the team's data folder ../shared/data is absent")
def test_real_chase_db1_converted_copy_matches_its_readme():
    root = shared_data() / "chase_db1"
    if not root.is_dir():
        pytest.skip(f"{root} is absent")
    loaded = load_data(root)
    data = loaded.data
    assert loaded.layout.name == "generic" and data.names[0] == "01L" and tuple(data.raters.shape) == (28, 2, 240, 248)
    first, second = data.raters[:, 0].flatten(1).double(), data.raters[:, 1].flatten(1).double()
    dice = 2 * (first * second).sum(1) / (first.sum(1) + second.sum(1))
    assert dice.mean().item() == pytest.approx(0.7836, abs=5e-5)  # "Saved (240 x 248) masks: mean 0.7836"
    assert first.mean().item() == pytest.approx(0.0719, abs=5e-5)
