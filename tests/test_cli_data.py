"""The embedded multi-rater generator, the --data folder loader and the compact U-Net."""

import nibabel
import numpy as np
import pytest
import torch
from PIL import Image

from softseg.cli.dataset import generate_multirater
from softseg.cli.folder import DataError, load_rater_folder
from softseg.cli.model import CompactUNet
from softseg.labels import majority_vote, rater_mean


@pytest.fixture(scope="module")
def data():
    return generate_multirater(6, size=32, raters=5, seed=3)


def test_generator_shapes_dtypes_and_standardised_images(data):
    assert data.images.shape == (6, 1, 32, 32) and data.images.dtype == torch.float32
    assert data.raters.shape == (6, 5, 32, 32) and data.raters.dtype == torch.int64
    assert data.num_classes == 3 and len(data.names) == 6
    assert set(data.raters.unique().tolist()) <= {0, 1, 2}
    assert torch.allclose(data.images.mean((1, 2, 3)), torch.zeros(6), atol=1e-4)
    assert torch.allclose(data.images.std((1, 2, 3), unbiased=False), torch.ones(6), atol=1e-3)


def test_generator_is_deterministic_from_the_seed(data):
    again = generate_multirater(6, size=32, raters=5, seed=3)
    assert torch.equal(again.raters, data.raters) and torch.equal(again.images, data.images)
    other = generate_multirater(6, size=32, raters=5, seed=4)
    assert not torch.equal(other.raters, data.raters)


def test_raters_disagree_at_boundaries_but_mostly_agree(data):
    soft = rater_mean(data.raters, 3)
    fractional = ((soft > 0) & (soft < 1)).any(1).float().mean().item()
    assert 0.02 < fractional < 0.5  # a band of disputed pixels, not noise everywhere
    agreement = (data.raters == majority_vote(data.raters, 3).unsqueeze(1)).float().mean().item()
    assert agreement > 0.85
    # Every image has a large structure in the majority vote; small ones are present somewhere.
    hard = majority_vote(data.raters, 3)
    assert all((hard[i] == 1).any() for i in range(6)) and (hard == 2).any()


def test_small_structures_are_missed_with_the_given_probability():
    always = generate_multirater(4, size=32, raters=3, seed=0, miss_probability=1.0)
    assert not (always.raters == 2).any()  # every lesion missed by every rater
    never = generate_multirater(4, size=32, raters=3, seed=0, miss_probability=0.0)
    lesion_pixels = (never.raters == 2).flatten(2).any(-1)
    assert lesion_pixels.all()  # every rater draws lesions in every image


def test_raters_differ_by_shift_and_morphology():
    data = generate_multirater(3, size=32, raters=4, seed=1)
    areas = (data.raters == 1).sum((2, 3)).float()  # (N, R) area of the large structures per rater
    assert (areas.max(1).values > areas.min(1).values).all()  # dilation and erosion change the area


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(num_images=0), "num_images must be an int >= 1; got 0"),
        (dict(num_images=2, raters=0), "raters must be an int >= 1; got 0"),
        (dict(num_images=2, size=4), "size must be an int >= 8; got 4"),
        (dict(num_images=2, miss_probability=1.5), r"miss_probability must lie in \[0, 1\]; got 1.5"),
        (dict(num_images=2, noise=-1.0), "noise must be >= 0; got -1.0"),
    ],
)
def test_generator_rejects_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        generate_multirater(**kwargs)


def _write_png(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(array, dtype=np.uint8)).save(path)


def _write_nifti(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    nibabel.save(nibabel.Nifti1Image(np.asarray(array, dtype=np.float32), np.eye(4)), str(path))


def _folder(tmp_path, cases=("a", "b"), raters=2, size=8):
    for index, case in enumerate(cases):
        _write_png(tmp_path / "images" / f"{case}.png", np.full((size, size), 10 * index) + np.eye(size) * 100)
        for k in range(1, raters + 1):
            mask = np.zeros((size, size))
            mask[: k + 2, :4] = 1
            _write_png(tmp_path / "masks" / case / f"rater{k}.png", mask)
    return tmp_path


def test_folder_png_round_trip(tmp_path):
    data = load_rater_folder(_folder(tmp_path))
    assert data.names == ("a", "b") and data.num_classes == 2
    assert data.raters.shape == (2, 2, 8, 8) and data.raters.dtype == torch.int64
    assert data.raters[0, 0, :3, :4].eq(1).all() and data.raters[0, 0, 3:].eq(0).all()
    assert data.raters[0, 1, :4, :4].eq(1).all()
    image = data.images[0, 0]
    assert abs(image.mean().item()) < 1e-5 and image[0, 0] > image[0, 1]  # standardised, diagonal bright


def test_folder_nifti_and_mixed_formats(tmp_path):
    root = _folder(tmp_path, cases=("a",), raters=1)
    image = np.arange(64, dtype=np.float32).reshape(8, 8, 1)  # trailing axis of length 1 is dropped
    _write_nifti(root / "images" / "c.nii.gz", image)
    labels = np.zeros((8, 8))
    labels[2:4, 2:4] = 3
    _write_nifti(root / "masks" / "c" / "rater1.nii.gz", labels)
    data = load_rater_folder(root)
    assert data.names == ("a", "c") and data.num_classes == 4
    assert data.raters[1, 0].sum().item() == 12 and data.raters[1, 0, 2, 2].item() == 3


def test_folder_errors_name_the_file(tmp_path):
    with pytest.raises(DataError, match="does not exist or is not a folder"):
        load_rater_folder(tmp_path / "nowhere")
    with pytest.raises(DataError, match=f"missing folder {tmp_path / 'images'}"):
        load_rater_folder(tmp_path)
    (tmp_path / "images").mkdir()
    with pytest.raises(DataError, match="no images in"):
        load_rater_folder(tmp_path)


def test_folder_missing_masks_and_rater_gaps(tmp_path):
    root = _folder(tmp_path)
    _write_png(root / "images" / "z.png", np.zeros((8, 8)))
    with pytest.raises(DataError, match=r"missing masks of case 'z': expected .*masks/z/rater1.png"):
        load_rater_folder(root)
    _write_png(root / "masks" / "z" / "rater2.png", np.zeros((8, 8)))
    with pytest.raises(DataError, match=r"missing .*masks/z/rater1\.\*: raters must be numbered 1..R"):
        load_rater_folder(root)


def test_folder_mismatches_name_both_files(tmp_path):
    root = _folder(tmp_path)
    _write_png(root / "masks" / "b" / "rater2.png", np.zeros((8, 4)))
    with pytest.raises(DataError, match=r"rater2.png has size \(8, 4\), but its image .*b.png has \(8, 8\)"):
        load_rater_folder(root)


def test_folder_image_size_and_rater_count_mismatch(tmp_path):
    root = _folder(tmp_path)
    _write_png(root / "images" / "b.png", np.zeros((12, 12)))
    with pytest.raises(DataError, match=r"b.png has size \(12, 12\), but .*a.png has \(8, 8\)"):
        load_rater_folder(root)
    root2 = _folder(tmp_path / "second")
    _write_png(root2 / "masks" / "b" / "rater3.png", np.zeros((8, 8)))
    with pytest.raises(DataError, match="case 'b' has 3 raters, but 'a' has 2"):
        load_rater_folder(root2)


def test_folder_bad_contents(tmp_path):
    root = _folder(tmp_path)
    (root / "masks" / "b" / "rater1.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match=r"cannot read .*b/rater1.png"):
        load_rater_folder(root)
    _write_nifti(root / "masks" / "b" / "rater1.nii", np.full((8, 8), 0.5))
    (root / "masks" / "b" / "rater1.png").unlink()
    with pytest.raises(DataError, match=r"rater1.nii must hold integer class labels; found non-integer values"):
        load_rater_folder(root)
    _write_nifti(root / "masks" / "b" / "rater1.nii", np.zeros((8, 8, 2)))
    with pytest.raises(DataError, match=r"rater1.nii must hold a 2D mask .* got an array of shape \(8, 8, 2\)"):
        load_rater_folder(root)
    _write_nifti(root / "masks" / "b" / "rater1.nii", -np.ones((8, 8)))
    with pytest.raises(DataError, match=r"rater1.nii must hold class labels >= 0; found -1"):
        load_rater_folder(root)


def test_folder_field_of_view(tmp_path):
    root = _folder(tmp_path)
    fov = np.zeros((8, 8))
    fov[2:6, 2:6] = 255
    _write_png(root / "fov" / "a.png", fov)
    with pytest.raises(DataError, match=r"missing .*fov/b.png \(or .nii, .nii.gz\): .*fov holds fields of view"):
        load_rater_folder(root)
    _write_png(root / "fov" / "b.png", fov)
    data = load_rater_folder(root)
    assert data.fov.shape == (2, 8, 8) and data.fov.sum().item() == 32
    assert data.images[:, 0][~data.fov].eq(0).all()


def test_compact_unet_shapes_and_errors():
    torch.manual_seed(0)
    net = CompactUNet(in_channels=1, num_classes=3, width=4, depth=2)
    out = net(torch.randn(2, 1, 16, 12))
    assert out.shape == (2, 3, 16, 12) and torch.isfinite(out).all()
    with pytest.raises(ValueError, match=r"H and W divisible by 4; got \(1, 1, 10, 12\)"):
        net(torch.randn(1, 1, 10, 12))
    with pytest.raises(ValueError, match="width must be a positive int; got 0"):
        CompactUNet(in_channels=1, num_classes=3, width=0)


def test_compact_unet_learns_a_trivial_mapping():
    # Label = pixel above zero: a few Adam steps must fit it almost perfectly (the network is trainable).
    torch.manual_seed(0)
    net = CompactUNet(in_channels=1, num_classes=2, width=4, depth=1)
    images = torch.randn(4, 1, 8, 8)
    labels = (images[:, 0] > 0).long()
    optimizer = torch.optim.Adam(net.parameters(), lr=0.02)
    for _ in range(60):
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(net(images), labels)
        loss.backward()
        optimizer.step()
    net.eval()
    assert (net(images).argmax(1) == labels).float().mean() > 0.95
