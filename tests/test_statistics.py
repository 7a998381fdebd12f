"""The statistics engine, scores and power: hand-computed values, index == dense, masks, dtypes."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch.utils._python_dispatch import TorchDispatchMode

from softseg import RegionStatistics, dice_loss, region_statistics, tversky_index
from softseg.scores import power
from softseg.statistics import accumulation_dtype, product_statistics

GOLDEN_X = [0.2, 0.7, 0.5]
GOLDEN_Y = [0.5, 0.5, 1.0]


def _close(actual: torch.Tensor, expected, **kwargs) -> None:
    expected = torch.as_tensor(expected, dtype=actual.dtype)
    torch.testing.assert_close(actual, expected, **kwargs)


def _direct_statistics(probs: torch.Tensor, target: torch.Tensor, counted: torch.Tensor, norm: int):
    """tp, fp, fn by the definitions of DESIGN.md, in float64, pixel by pixel over counted pixels."""
    x, y, keep = probs.double(), target.double(), counted.expand_as(probs)
    if norm == 1:
        tp = torch.where(keep, torch.minimum(x, y), 0).flatten(2).sum(-1)
        fp = torch.where(keep, (x - y).clamp_min(0), 0).flatten(2).sum(-1)
        fn = torch.where(keep, (y - x).clamp_min(0), 0).flatten(2).sum(-1)
    else:
        tp = torch.where(keep, x * y, 0).flatten(2).sum(-1)
        fp = torch.where(keep, x * x, 0).flatten(2).sum(-1) - tp
        fn = torch.where(keep, y * y, 0).flatten(2).sum(-1) - tp
    return tp, fp, fn


# ---------------------------------------------------------------- hand-computed values


def test_golden_norm1_statistics():
    # DESIGN.md P6: sum min = 0.2 + 0.5 + 0.5 = 1.2; fp = 1.4 - 1.2; fn = 2.0 - 1.2.
    stats = region_statistics(torch.tensor([[GOLDEN_X]]), torch.tensor([[GOLDEN_Y]]))
    _close(stats.tp, [[1.2]])
    _close(stats.fp, [[0.2]])
    _close(stats.fn, [[0.8]])
    _close(stats.target_max, [[1.0]])


def test_golden_norm2_statistics():
    # <x,y> = 0.1 + 0.35 + 0.5 = 0.95; ||x||^2 = 0.78; ||y||^2 = 1.5. fp may be negative in the L2 form.
    stats = region_statistics(torch.tensor([[GOLDEN_X]]), torch.tensor([[GOLDEN_Y]]), norm=2)
    _close(stats.tp, [[0.95]])
    _close(stats.fp, [[-0.17]])
    _close(stats.fn, [[0.55]])
    # Dice of the L2 form: 2<x,y> / (||x||^2 + ||y||^2) = 1.9 / 2.28
    _close(tversky_index(stats, alpha=0.5, beta=0.5), [[1.9 / 2.28]])


def test_index_target_hand_computed():
    # Two classes, labels (0, 1, 1): tp_0 = p_0 at pixel 0, tp_1 = p_1 at pixels 1 and 2.
    probs = torch.tensor([[[0.9, 0.2, 0.4], [0.1, 0.8, 0.6]]])
    stats = region_statistics(probs, torch.tensor([[0, 1, 1]]))
    _close(stats.tp, [[0.9, 1.4]])
    _close(stats.fp, [[0.6 - 0.0, 1.5 - 1.4]])  # |x_0| = 1.5 -> fp_0 = 0.6; |x_1| = 1.5 -> fp_1 = 0.1
    _close(stats.fn, [[0.1, 0.6]])  # counts 1 and 2
    _close(stats.target_max, [[1.0, 1.0]])


def test_binary_single_channel_index_target():
    # C = 1: label 1 is the foreground of channel 0, label 0 the background.
    probs = torch.tensor([[[0.9, 0.2, 0.4, 0.7]]])
    stats = region_statistics(probs, torch.tensor([[1, 0, 0, 1]]))
    _close(stats.tp, [[1.6]])
    _close(stats.fp, [[0.6]])
    _close(stats.fn, [[0.4]])
    dense = region_statistics(probs, torch.tensor([[[1.0, 0.0, 0.0, 1.0]]]))
    for a, b in zip(stats, dense):
        torch.testing.assert_close(a, b)


def test_absent_class_has_zero_target_max_and_zero_counts():
    probs = torch.tensor([[[0.5, 0.5], [0.3, 0.3], [0.2, 0.2]]])
    stats = region_statistics(probs, torch.tensor([[0, 0]]))
    _close(stats.target_max, [[1.0, 0.0, 0.0]])
    _close(stats.fn, [[1.0, 0.0, 0.0]])
    _close(stats.tp, [[1.0, 0.0, 0.0]])
    _close(stats.fp, [[0.0, 0.6, 0.4]])


def test_sum_images_pools_sums_and_maxes():
    stats = RegionStatistics(
        torch.tensor([[1.0, 2.0], [3.0, 4.0]]),
        torch.tensor([[0.5, 0.0], [0.0, 1.0]]),
        torch.tensor([[0.0, 2.0], [1.0, 0.0]]),
        torch.tensor([[0.3, 0.0], [0.9, 0.005]]),
    )
    pooled = stats.sum_images()
    _close(pooled.tp, [[4.0, 6.0]])
    _close(pooled.fp, [[0.5, 1.0]])
    _close(pooled.fn, [[1.0, 2.0]])
    _close(pooled.target_max, [[0.9, 0.005]])


def test_sum_images_of_empty_batch_is_zero():
    empty = RegionStatistics(*(torch.zeros(0, 3) for _ in range(4)))
    pooled = empty.sum_images()
    for value in pooled:
        _close(value, torch.zeros(1, 3))


# ---------------------------------------------------------------- index == dense, masks, ignore_index


@st.composite
def _problems(draw):
    spatial = tuple(draw(st.lists(st.integers(1, 4), min_size=1, max_size=3)))
    batch, channels = draw(st.integers(1, 3)), draw(st.integers(2, 4))
    seed = draw(st.integers(0, 2**31 - 1))
    return batch, channels, spatial, seed


@given(_problems(), st.sampled_from([1, 2]), st.booleans(), st.sampled_from([None, -100, 1]))
def test_index_target_equals_dense_one_hot(problem, norm, channel_dim, ignore_index):
    batch, channels, spatial, seed = problem
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(batch, channels, *spatial, generator=gen, dtype=torch.float64)
    labels = torch.randint(0, channels, (batch, *spatial), generator=gen)
    if ignore_index is not None:
        labels = torch.where(torch.rand(labels.shape, generator=gen) < 0.3, ignore_index, labels)
    keep = labels != ignore_index if ignore_index is not None else torch.ones_like(labels, dtype=torch.bool)
    one_hot = torch.nn.functional.one_hot(labels.clamp(0, channels - 1), channels).movedim(-1, 1).double()
    index_target = labels.unsqueeze(1) if channel_dim else labels

    weights = torch.randn(4, batch, channels, generator=gen, dtype=torch.float64)
    results = []
    for target, options in ((index_target, {"ignore_index": ignore_index}), (one_hot, {"mask": keep})):
        x = logits.clone().requires_grad_(True)
        stats = region_statistics(x.softmax(1), target, norm=norm, **options)
        (sum((w * s).sum() for w, s in zip(weights, stats[:3]))).backward()
        results.append((stats, x.grad))
    (index_stats, index_grad), (dense_stats, dense_grad) = results
    for a, b in zip(index_stats, dense_stats):
        torch.testing.assert_close(a, b)
    torch.testing.assert_close(index_grad, dense_grad)
    # ... and both equal the definitions, pixel by pixel.
    for a, b in zip(index_stats[:3], _direct_statistics(logits.softmax(1), one_hot, keep.unsqueeze(1), norm)):
        torch.testing.assert_close(a.detach(), b)


def _kept_pixels_only(probs, target, keep, norm):
    """Statistics of every (image, class) computed on a tensor holding nothing but its counted pixels."""
    batch, channels = probs.shape[:2]
    keep = keep.expand(batch, channels, *probs.shape[2:]).reshape(batch, channels, -1)
    flat_probs, flat_target = probs.reshape(batch, channels, -1), target.reshape(batch, channels, -1)
    out = torch.zeros(3, batch, channels, dtype=torch.float64)
    for b in range(batch):
        for c in range(channels):
            kept = keep[b, c]
            stats = region_statistics(
                flat_probs[b, c, kept].reshape(1, 1, -1), flat_target[b, c, kept].reshape(1, 1, -1), norm=norm
            )
            out[:, b, c] = torch.stack([s[0, 0] for s in stats[:3]])
    return out


@given(_problems(), st.sampled_from([1, 2]), st.sampled_from(["pixel", "pixel_channel", "class"]))
def test_mask_equals_computing_on_kept_pixels_only(problem, norm, mask_shape):
    batch, channels, spatial, seed = problem
    gen = torch.Generator().manual_seed(seed)
    probs = torch.rand(batch, channels, *spatial, generator=gen, dtype=torch.float64)
    soft = torch.rand(batch, channels, *spatial, generator=gen, dtype=torch.float64)
    labels = torch.randint(0, channels, (batch, *spatial), generator=gen)
    one_hot = torch.nn.functional.one_hot(labels, channels).movedim(-1, 1).double()
    mask_channels = {"pixel": None, "pixel_channel": 1, "class": channels}[mask_shape]
    shape = (batch, *spatial) if mask_channels is None else (batch, mask_channels, *spatial)
    mask = torch.rand(shape, generator=gen) < 0.6
    keep = mask.unsqueeze(1) if mask_channels is None else mask

    for target, dense in ((soft, soft), (labels, one_hot)):
        stats = region_statistics(probs, target, norm=norm, mask=mask)
        expected = _kept_pixels_only(probs, dense, keep, norm)
        for actual, wanted in zip(stats[:3], expected):
            torch.testing.assert_close(actual, wanted)
        # target_max of the counted pixels only (0 where nothing counts)
        counted = torch.where(keep.expand_as(dense), dense, 0).flatten(2)
        wanted_max = counted.amax(-1) if counted.shape[-1] else torch.zeros(batch, channels)
        torch.testing.assert_close(stats.target_max, wanted_max.to(stats.target_max))


def test_ignore_index_and_mask_combine():
    probs = torch.tensor([[[0.9, 0.2, 0.4, 0.5], [0.1, 0.8, 0.6, 0.5]]])
    labels = torch.tensor([[0, 255, 1, 1]])
    mask = torch.tensor([[True, True, True, False]])
    stats = region_statistics(probs, labels, ignore_index=255, mask=mask)
    # counted pixels: 0 (label 0) and 2 (label 1)
    _close(stats.tp, [[0.9, 0.6]])
    _close(stats.fp, [[0.4, 0.1]])
    _close(stats.fn, [[0.1, 0.4]])


def test_everything_ignored_gives_zero_statistics():
    probs = torch.full((2, 3, 4), 1 / 3)
    stats = region_statistics(probs, torch.full((2, 4), 7), ignore_index=7)
    for value in stats:
        _close(value, torch.zeros(2, 3))


@pytest.mark.parametrize("dtype", [torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64])
def test_every_integer_label_dtype_gives_the_same_statistics(dtype):
    probs = torch.tensor([[[0.9, 0.2, 0.4], [0.1, 0.8, 0.6]]])
    labels = torch.tensor([[0, 1, 1]])
    expected = region_statistics(probs, labels)
    actual = region_statistics(probs, labels.to(dtype), mask=torch.ones(1, 2, 3, dtype=torch.bool))
    for a, b in zip(actual, expected):
        torch.testing.assert_close(a, b)


def test_uint8_labels_with_ignore_index_255():
    probs = torch.tensor([[[0.9, 0.2, 0.4], [0.1, 0.8, 0.6]]])
    stats = region_statistics(probs, torch.tensor([[0, 255, 1]], dtype=torch.uint8), ignore_index=255)
    _close(stats.tp, [[0.9, 0.6]])


# ---------------------------------------------------------------- dtypes and empty shapes


@pytest.mark.parametrize(
    ("dtype", "expected"),
    [
        (torch.float16, torch.float32),
        (torch.bfloat16, torch.float32),
        (torch.float32, torch.float32),
        (torch.float64, torch.float64),
    ],
)
def test_accumulation_dtype(dtype, expected):
    assert accumulation_dtype(dtype) == expected
    probs = torch.full((1, 2, 3), 0.5, dtype=dtype)
    for target in (torch.tensor([[0, 1, 1]]), torch.full((1, 2, 3), 0.5, dtype=dtype)):
        assert all(s.dtype == expected for s in region_statistics(probs, target))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("norm", [1, 2])
def test_half_precision_sums_of_a_large_mask_do_not_overflow(dtype, norm):
    # 512 * 512 = 262144 > 65504, the largest float16; bfloat16 would round the sum to 8 bits of mantissa.
    ones = torch.ones(1, 1, 512, 512, dtype=dtype)
    pixels = 512 * 512
    for target in (ones, torch.ones(1, 512, 512, dtype=torch.long)):
        stats = region_statistics(ones, target, norm=norm, mask=torch.ones(1, 512, 512, dtype=torch.bool))
        assert stats.tp.dtype == torch.float32
        _close(stats.tp, [[float(pixels)]])
        _close(stats.fp, [[0.0]])
        _close(stats.fn, [[0.0]])


def test_empty_batch_and_empty_spatial():
    stats = region_statistics(torch.rand(0, 3, 4, 4), torch.zeros(0, 4, 4, dtype=torch.long))
    assert all(s.shape == (0, 3) for s in stats)
    stats = region_statistics(torch.rand(0, 3, 4), torch.rand(0, 3, 4))
    assert all(s.shape == (0, 3) for s in stats)
    stats = region_statistics(torch.rand(2, 3, 0), torch.rand(2, 3, 0))
    for value in stats:
        _close(value, torch.zeros(2, 3))
    stats = region_statistics(torch.rand(2, 3, 0), torch.zeros(2, 0, dtype=torch.long))
    for value in stats:
        _close(value, torch.zeros(2, 3))


# ---------------------------------------------------------------- scores


def test_tversky_index_golden_values():
    stats = RegionStatistics(*(torch.tensor([[v]]) for v in (1.2, 0.2, 0.8, 1.0)))
    _close(1 - tversky_index(stats, alpha=0.5, beta=0.5), [[0.294118]], atol=1e-6, rtol=0)
    _close(1 - tversky_index(stats, alpha=1.0, beta=1.0), [[0.454545]], atol=1e-6, rtol=0)
    _close(1 - tversky_index(stats, alpha=0.3, beta=0.7), [[0.340659]], atol=1e-6, rtol=0)
    # smoothing: (1.2 + 1) / (1.2 + 0.2 + 0.8 + 1)
    _close(tversky_index(stats, alpha=1.0, beta=1.0, smooth=1.0), [[2.2 / 3.2]])


def test_tversky_index_of_empty_entry_is_one_with_zero_gradient():
    tp, fp, fn = (torch.zeros(1, 2, dtype=torch.float64, requires_grad=True) for _ in range(3))
    index = tversky_index(RegionStatistics(tp, fp, fn, torch.zeros(1, 2)), alpha=0.5, beta=0.5)
    _close(index, [[1.0, 1.0]])
    index.sum().backward()
    for value in (tp, fp, fn):
        _close(value.grad, torch.zeros(1, 2))


def test_power():
    value = torch.tensor([0.0, 0.25, 1.0], dtype=torch.float64, requires_grad=True)
    _close(power(value, 2.0), [0.0, 0.0625, 1.0])
    result = power(value, 0.5)
    _close(result, [0.0, 0.5, 1.0])
    result.sum().backward()
    # d/dv sqrt(v) = 1 / (2 sqrt v): 1 at 0.25, 0.5 at 1; 0 (not inf) at 0.
    _close(value.grad, [0.0, 1.0, 0.5])
    assert power(value, 1) is value


# ---------------------------------------------------------------- public API documentation


def _public_objects():
    import softseg

    return [(name, getattr(softseg, name)) for name in softseg.__all__]


@pytest.mark.parametrize(("name", "obj"), _public_objects(), ids=[name for name, _ in _public_objects()])
def test_public_api_has_a_convention_block_and_a_passing_example(name, obj):
    import doctest

    docstring = obj.__doc__ or ""
    assert "Convention:" in docstring, f"{name} has no Convention block"
    # Run this object's examples here too, so they run even when only tests/ is collected.
    finder = doctest.DocTestFinder(recurse=False)
    tests = [t for t in finder.find(obj, name, globs={"torch": torch, **dict(_public_objects())}) if t.examples]
    assert tests, f"{name} has no >>> example"
    runner = doctest.DocTestRunner(optionflags=doctest.NORMALIZE_WHITESPACE | doctest.ELLIPSIS)
    for test in tests:
        test.globs.update(vars(__import__(obj.__module__, fromlist=["_"])))
        runner.run(test)
    assert runner.failures == 0, f"{name}: {runner.failures} failing example(s)"


# ---------------------------------------------------------------- index targets are never expanded


class _RecordOutputs(TorchDispatchMode):
    """Records (op, shape, dtype) of every tensor an aten op returns."""

    def __init__(self):
        super().__init__()
        self.outputs = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for value in out if isinstance(out, (tuple, list)) else [out]:
            if isinstance(value, torch.Tensor):
                self.outputs.append((func.__name__, tuple(value.shape), value.dtype))
        return out


_EXPANDING_OPS = ("one_hot", "scatter", "zeros", "full", "eq", "ne", "index_put", "new_zeros", "to_copy", "copy")


@pytest.mark.parametrize("norm", [1, 2])
@pytest.mark.parametrize("options", [{}, {"ignore_index": 0}, {"mask": "pixel"}])
def test_index_target_is_never_expanded_to_a_dense_one_hot(norm, options):
    batch, channels, spatial = 2, 6, (5, 7)
    size = batch * channels * 35
    logits = torch.randn(batch, channels, *spatial, requires_grad=True)
    labels = torch.randint(0, channels, (batch, *spatial))
    if options.get("mask") == "pixel":
        options = {"mask": torch.rand(batch, *spatial) < 0.7}
    probs = logits.softmax(1)
    for run in (
        lambda: region_statistics(probs, labels, norm=norm, **options),
        lambda: dice_loss(logits, labels, norm=norm, **options),
    ):
        recorder = _RecordOutputs()
        with recorder:
            run()
        big = [(op, shape, dtype) for op, shape, dtype in recorder.outputs if math.prod(shape) >= size]
        # Tensors of the logits' size may only be the probabilities and what is computed from them.
        assert all(dtype.is_floating_point for _, _, dtype in big), big
        assert not [entry for entry in big if entry[0].split(".")[0].strip("_") in _EXPANDING_OPS], big


# ---- product_statistics: the classic form, kept for legacy losses and baselines ----------------------------


def test_product_statistics_hand_values():
    # x = (0.2, 0.7, 0.5), y = (0.5, 0.5, 1.0): <x, y> = 0.1 + 0.35 + 0.5 = 0.95, |x| = 1.4, |y| = 2.0.
    stats = product_statistics(torch.tensor([[[0.2, 0.7, 0.5]]]), torch.tensor([[[0.5, 0.5, 1.0]]]))
    assert torch.allclose(stats.tp, torch.tensor([[0.95]]))
    assert torch.allclose(stats.fp, torch.tensor([[0.45]]))
    assert torch.allclose(stats.fn, torch.tensor([[1.05]]))
    assert stats.target_max.item() == 1.0


def test_product_statistics_equal_region_statistics_on_binary_targets():
    generator = torch.Generator().manual_seed(3)
    probs = torch.rand(2, 3, 4, 5, generator=generator, dtype=torch.float64)
    one_hot = torch.nn.functional.one_hot(torch.randint(0, 3, (2, 4, 5), generator=generator), 3)
    one_hot = one_hot.permute(0, 3, 1, 2).to(torch.float64)
    for ours, theirs in zip(product_statistics(probs, one_hot), region_statistics(probs, one_hot)):
        assert ours.dtype == torch.float64
        assert torch.allclose(ours, theirs)


def test_product_statistics_keeps_fp_and_fn_at_a_soft_target():
    soft = torch.full((1, 1, 4), 0.5)
    stats = product_statistics(soft, soft)
    assert stats.fp.item() == pytest.approx(1.0) and stats.fn.item() == pytest.approx(1.0)


def test_product_statistics_rejects_index_targets_and_out_of_range_values():
    probs = torch.rand(1, 2, 4)
    with pytest.raises(TypeError, match=r"product_statistics needs class probabilities of shape \(1, 2, 4\)"):
        product_statistics(probs, torch.zeros(1, 4, dtype=torch.long))
    with pytest.raises(ValueError, match=r"target must hold values in \[0, 1\]"):
        product_statistics(probs, torch.full((1, 2, 4), 1.5))
