"""torch.compile: the custom operators (opcheck), fullgraph compiles of every public loss with compiled == eager
(values and gradients), dynamic shapes without recompiles, no host reads with the value checks off, the
fallback when nothing is compiled, and the layering of the engine.

Most compiles use ``backend="aot_eager"`` (AOTAutograd's joint graph without code generation: seconds); a
few use inductor, the code generator, whose compile takes tens of seconds on two busy cores.
"""

from __future__ import annotations

import ast
import pathlib

import pytest
import torch
from torch._dynamo.testing import CompileCounterWithBackend

import softseg
import softseg.compat.monai as monai
import softseg.compat.smp as smp
import softseg.dispatch as dispatch
import softseg.kernels.ops as ops_module
from softseg import set_value_checks
from softseg.dispatch import fused_statistics
from softseg.kernels.native import native_available, native_status
from softseg.losses.compound import DiceCELoss, RegionCELoss, dice_ce_loss, region_ce_loss

SOURCE = pathlib.Path(softseg.__file__).parent
PATHS = ["formula", "operator"]


@pytest.fixture(autouse=True)
def fresh_compiler():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


@pytest.fixture(params=PATHS)
def compiled_path(request, monkeypatch):
    monkeypatch.setattr(dispatch, "COMPILED_PATH", request.param)
    return request.param


def _problem(batch=2, channels=3, spatial=(5, 6), seed=0, dtype=torch.float64):
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(batch, channels, *spatial, generator=gen, dtype=dtype) * 2
    labels = torch.randint(0, channels, (batch, *spatial), generator=gen)
    ignored = labels.masked_fill(torch.rand(batch, *spatial, generator=gen) < 0.2, 255)
    soft = torch.rand(batch, channels, *spatial, generator=gen, dtype=dtype).softmax(1)
    mask = torch.rand(batch, *spatial, generator=gen) > 0.3
    class_mask = torch.rand(batch, channels, *spatial, generator=gen) > 0.3
    binary = (labels > 0).long()
    return logits, labels, ignored, soft, mask, class_mask, binary


def _losses(problem):
    """{name: loss(z)}: every public loss over softmax and sigmoid, index and dense targets, ignore_index and
    mask, every aggregation and reduction, the compound losses and the compat layers."""
    _, labels, ignored, soft, mask, class_mask, binary = problem
    weight = [1.0, 2.0, 0.5]
    return {
        "dice": lambda z: softseg.dice_loss(z, labels),
        "dice_ignore_image": lambda z: softseg.dice_loss(z, ignored, ignore_index=255, aggregation="image"),
        "dice_norm2_class_present": lambda z: softseg.dice_loss(
            z, labels, norm=2, aggregation="class", active_classes="present", mask=mask
        ),
        "tversky_dense_mask_mix": lambda z: softseg.tversky_loss(
            z, soft, alpha=0.3, beta=0.7, mask=mask, aggregation={"image": 0.5, "class": 0.3, "global": 0.2},
            weight=weight, gamma=1.5,
        ),
        "jaccard_dense_class_mask_sum": lambda z: softseg.jaccard_loss(
            z, soft, mask=class_mask, reduction="sum", log_loss=True
        ),
        "jaccard_sigmoid_dense_none": lambda z: softseg.jaccard_loss(
            z, soft, activation="sigmoid", aggregation="image", reduction="none"
        ),
        "dice_sigmoid_index": lambda z: softseg.dice_loss(z, ignored, activation="sigmoid", ignore_index=255),
        "dice_sigmoid_binary": lambda z: softseg.dice_loss(z[:, :1], binary, activation="sigmoid", smooth=1.0),
        "dice_probabilities": lambda z: softseg.dice_loss(z.softmax(1), labels, activation="none"),
        "dice_no_background": lambda z: softseg.dice_loss(z, labels, include_background=False, weight=[1.0, 2.0]),
        "dice_ce": lambda z: dice_ce_loss(z, ignored, ignore_index=255),
        "dice_ce_dense_mask": lambda z: dice_ce_loss(z, soft, mask=mask, aggregation="image"),
        "jaccard_ce_sigmoid": lambda z: region_ce_loss(z, labels, region="jaccard", activation="sigmoid", lambda_ce=0.5),
        "tversky_focal": lambda z: region_ce_loss(z, labels, region="tversky", alpha=0.2, beta=0.8, ce="focal"),
        "DiceLoss": (lambda m: lambda z: m(z, labels))(softseg.DiceLoss(aggregation="class", weight=weight)),
        "TverskyLoss": (lambda m: lambda z: m(z, soft, mask))(softseg.TverskyLoss(alpha=0.4, beta=0.6)),
        "JaccardLoss": (lambda m: lambda z: m(z, ignored))(softseg.JaccardLoss(ignore_index=255)),
        "DiceCELoss": (lambda m: lambda z: m(z, labels))(DiceCELoss(lambda_ce=0.3)),
        "RegionCELoss": (lambda m: lambda z: m(z, soft))(RegionCELoss(region="jaccard", activation="sigmoid")),
        "focal": lambda z: softseg.focal_loss(z, ignored, ignore_index=255),
        "monai.DiceLoss": (lambda m: lambda z: m(z, labels.unsqueeze(1)))(monai.DiceLoss(softmax=True, to_onehot_y=True)),
        "monai.DiceCELoss": (lambda m: lambda z: m(z, labels.unsqueeze(1)))(
            monai.DiceCELoss(softmax=True, to_onehot_y=True, soft_label=True)
        ),
        "monai.TverskyLoss": (lambda m: lambda z: m(z, soft))(monai.TverskyLoss(sigmoid=True, soft_label=True)),
        "smp.DiceLoss": (lambda m: lambda z: m(z, labels))(smp.DiceLoss("multiclass")),
        "smp.JaccardLoss": (lambda m: lambda z: m(z, soft))(smp.JaccardLoss("multilabel")),
    }


def test_every_public_loss_compiles_fullgraph_and_equals_eager(compiled_path):
    # One fullgraph compile computes every loss at once (a graph break anywhere fails it); each value and the
    # gradient of a random mix of them equal eager mode's.
    problem = _problem()
    losses = _losses(problem)
    names = sorted(losses)

    def all_losses(z):
        return [losses[name](z) for name in names]

    mix = torch.randn(len(names), generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    results = []
    for function in (torch.compile(all_losses, backend="aot_eager", fullgraph=True), all_losses):
        z = problem[0].clone().requires_grad_()
        values = function(z)
        sum(m * v.sum() for m, v in zip(mix, values)).backward()
        results.append((values, z.grad))
    (compiled, compiled_grad), (eager, eager_grad) = results
    for name, a, b in zip(names, compiled, eager):
        torch.testing.assert_close(a, b, msg=f"{name} differs")
    torch.testing.assert_close(compiled_grad, eager_grad)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_compiled_statistics_equal_eager_in_low_precision(compiled_path, dtype):
    logits, labels, ignored, soft, mask, _, _ = _problem(dtype=torch.float32, spatial=(9, 11))
    logits = logits.to(dtype)

    def statistics(z):
        index, ce = fused_statistics(z, ignored, ignore_index=255, cross_entropy=True)
        dense, _ = fused_statistics(z, soft.to(dtype), activation="sigmoid", mask=mask)
        return [*index[:3], ce, *dense[:3]]

    results = []
    for function in (torch.compile(statistics, backend="aot_eager", fullgraph=True), statistics):
        z = logits.clone().requires_grad_()
        values = function(z)
        sum((v * (k + 1)).sum() for k, v in enumerate(values)).backward()
        results.append((values, z.grad))
    tolerance = {"rtol": 1e-5, "atol": 1e-5} if dtype == torch.float32 else {"rtol": 2e-2, "atol": 2e-2}
    for a, b in zip(results[0][0], results[1][0]):
        assert a.dtype == torch.float32
        torch.testing.assert_close(a, b, **tolerance)
    assert results[0][1].dtype == dtype
    torch.testing.assert_close(results[0][1].float(), results[1][1].float(), **tolerance)


def test_compiled_paths_take_the_fused_kernels(monkeypatch):
    # Under the compiler the fused path runs (not the reference path), as the formula or as the operator.
    problem = _problem()
    monkeypatch.setattr(dispatch, "_reference_statistics", lambda *args, **kwargs: pytest.fail("reference path"))
    calls = []
    original = ops_module.block_statistics
    monkeypatch.setattr(ops_module, "block_statistics", lambda *a, **k: calls.append(1) or original(*a, **k))
    for path in PATHS:
        monkeypatch.setattr(dispatch, "COMPILED_PATH", path)
        torch._dynamo.reset()
        compiled = torch.compile(lambda z: dice_ce_loss(z, problem[1]), backend="aot_eager", fullgraph=True)
        compiled(problem[0].clone().requires_grad_()).backward()
    assert len(calls) >= 1  # the operator path ran the blocks at run time; the formula path did not


@pytest.mark.parametrize(
    "loss",
    [
        lambda z, y, soft: softseg.dice_loss(z, y, ignore_index=255, aggregation="image"),
        lambda z, y, soft: dice_ce_loss(z, soft, activation="sigmoid"),
    ],
    ids=["dice_softmax_index", "dice_ce_sigmoid_dense"],
)
def test_inductor_equals_eager(loss):
    # The code generator on the formula path: the generated kernels give eager's values and gradients.
    logits, _, ignored, soft, _, _, _ = _problem(spatial=(7, 9), seed=3)
    results = []
    for function in (torch.compile(loss, fullgraph=True), loss):
        z = logits.clone().requires_grad_()
        value = function(z, ignored, soft)
        value.backward()
        results.append((value, z.grad))
    torch.testing.assert_close(results[0][0], results[1][0])
    torch.testing.assert_close(results[0][1], results[1][1])


@pytest.mark.parametrize("activation", ["softmax", "sigmoid"])
def test_uint8_labels_compile_fullgraph_and_equal_int64_eager(compiled_path, activation):
    # PNG label maps arrive as uint8: the native kernels read them as they are (no int64 copy), compiled too.
    logits, labels, ignored, _, _, _, binary = _problem(spatial=(7, 9), seed=4, dtype=torch.float32)
    target = ignored if activation == "softmax" else binary
    z = logits if activation == "softmax" else logits[:, :1].contiguous()

    def loss(z, y):
        return dice_ce_loss(z, y, activation=activation, ignore_index=255, aggregation="image")

    results = []
    for function, y in ((torch.compile(loss, backend="aot_eager", fullgraph=True), target.to(torch.uint8)), (loss, target)):
        leaf = z.clone().requires_grad_()
        value = function(leaf, y)
        value.backward()
        results.append((value, leaf.grad))
    torch.testing.assert_close(results[0][0], results[1][0], rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(results[0][1], results[1][1], rtol=1e-6, atol=1e-7)


# ---------------------------------------------------------------- dynamic shapes


def _shapes():
    return [(2, 5, 6), (3, 5, 6), (4, 5, 6), (5, 7, 6), (7, 9, 4)]


@pytest.mark.parametrize("loss", [softseg.dice_loss, dice_ce_loss], ids=["dice", "dice_ce"])
def test_marked_dynamic_batch_and_size_never_recompile(compiled_path, loss):
    counter = CompileCounterWithBackend("aot_eager")
    compiled = torch.compile(lambda z, y: loss(z, y, ignore_index=255), backend=counter, fullgraph=True)
    for batch, height, width in _shapes():
        z = torch.randn(batch, 3, height, width, requires_grad=True)
        y = torch.randint(0, 3, (batch, height, width))
        for tensor in (z, y):
            for dim in (0, tensor.ndim - 2, tensor.ndim - 1):
                torch._dynamo.mark_dynamic(tensor, dim)
        compiled(z, y).backward()
    assert counter.frame_count == 1


def test_unmarked_batch_size_recompiles_once_then_never(compiled_path):
    # torch's automatic dynamic shapes: the first new batch size recompiles with a symbolic size; after that
    # no new batch size recompiles (softseg's code does not specialise on it).
    counter = CompileCounterWithBackend("aot_eager")
    compiled = torch.compile(lambda z, y: dice_ce_loss(z, y, aggregation="image"), backend=counter, fullgraph=True)
    counts = []
    for batch in (2, 3, 4, 6, 9):
        z = torch.randn(batch, 3, 5, 6, requires_grad=True)
        compiled(z, torch.randint(0, 3, (batch, 5, 6))).backward()
        counts.append(counter.frame_count)
    assert counts == [1, 2, 2, 2, 2]


# ---------------------------------------------------------------- no host reads, fallback, layering


HOST_READS = ("item", "tolist", "__bool__", "__int__", "__float__", "__index__", "nonzero")


@pytest.fixture
def count_host_reads(monkeypatch):
    """Counts the tensor methods that read a value back to the host (each a sync on a GPU)."""
    reads = []
    for name in HOST_READS:
        original = getattr(torch.Tensor, name)
        monkeypatch.setattr(torch.Tensor, name, lambda self, *a, _o=original, _n=name, **k: reads.append(_n) or _o(self, *a, **k))
    return reads


@pytest.mark.parametrize("activation", ["softmax", "sigmoid"])
def test_no_host_read_in_a_step_with_value_checks_off(count_host_reads, activation):
    logits, labels, ignored, soft, mask, _, binary = _problem(dtype=torch.float32)
    weight = torch.tensor([1.0, 2.0, 0.5])
    steps = [
        lambda z: softseg.dice_loss(z, ignored, activation=activation, ignore_index=255, weight=weight),
        lambda z: softseg.tversky_loss(z, soft, activation=activation, mask=mask, aggregation="image"),
        lambda z: dice_ce_loss(z, labels, activation=activation, aggregation="class", active_classes="present"),
        lambda z: softseg.dice_loss(z[:, :1], binary, activation="sigmoid"),
    ]
    with set_value_checks(False):
        for step in steps:
            z = logits.clone().requires_grad_()
            count_host_reads.clear()
            step(z).backward()
            assert count_host_reads == []
    step = steps[1]
    step(logits.clone().requires_grad_()).backward()  # checks on: the dense target's range is read back
    assert count_host_reads != []


def test_without_a_compiler_the_same_values(monkeypatch):
    # Nothing needs a compiler at run time: eager mode takes the blocks; under the compiler without code
    # generation (backend "eager": the traced Python ops run as they are) the formula path gives eager's values.
    logits, labels, *_ = _problem()
    results = []
    for backend in ("eager", None):
        z = logits.clone().requires_grad_()
        function = (lambda z: dice_ce_loss(z, labels))
        value = torch.compile(function, backend=backend, fullgraph=True)(z) if backend else function(z)
        value.backward()
        results.append((value, z.grad))
    torch.testing.assert_close(results[0][0], results[1][0])
    torch.testing.assert_close(results[0][1], results[1][1])


def _imports(path: pathlib.Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return names


def test_layers_statistics_below_kernels_below_dispatch():
    statistics = _imports(SOURCE / "statistics.py")
    assert not {name for name in statistics if name.startswith(("softseg.kernels", "softseg.dispatch"))}
    for path in (SOURCE / "kernels").glob("*.py"):
        higher = {name for name in _imports(path) if name.startswith(("softseg.dispatch", "softseg.losses"))}
        assert not higher, f"{path.name} imports {higher}"
    # the choice between the paths: only softseg.dispatch decides (the losses ask it)
    for path in (SOURCE / "losses").glob("*.py"):
        assert "softseg.kernels.fused" not in _imports(path), path.name


def test_old_import_paths_still_work():
    from softseg.kernels import fused_statistics as old_fused
    from softseg.statistics import logit_statistics as old_logit

    assert old_fused is dispatch.fused_statistics and old_logit is dispatch.logit_statistics
    assert softseg.logit_statistics is dispatch.logit_statistics


# ---------------------------------------------------------------- the custom operators


OPCHECK_CASES = {
    "softmax_index_weight_ce": lambda z, y, soft, w, cw: (z, y, None, w, "softmax", 1, True, False, "blocks"),
    "softmax_dense_class_weight_norm2_range": lambda z, y, soft, w, cw: (z, None, soft, cw, "softmax", 2, False, True,
                                                                         "blocks"),
    "sigmoid_dense_ce": lambda z, y, soft, w, cw: (z, None, soft, w, "sigmoid", 1, True, False, "blocks"),
    "sigmoid_index": lambda z, y, soft, w, cw: (z, y, None, None, "sigmoid", 2, False, False, "blocks"),
    "sigmoid_binary_range": lambda z, y, soft, w, cw: (z[:, :1].contiguous(), (y > 0).long(), None, w, "sigmoid", 1,
                                                       False, True, "blocks"),
    "native_softmax_index_ce": lambda z, y, soft, w, cw: (z.float(), y, None, w, "softmax", 1, True, False, "native"),
    "native_softmax_dense_range": lambda z, y, soft, w, cw: (z.float(), None, soft.float(), cw, "softmax", 1, False,
                                                             True, "native"),
    "native_sigmoid_index_norm2": lambda z, y, soft, w, cw: (z.float(), y, None, w, "sigmoid", 2, False, False,
                                                             "native"),
}


@pytest.mark.parametrize("case", sorted(OPCHECK_CASES))
def test_opcheck_statistics_operator(case):
    # Schema (no aliasing, no hidden mutation), fake implementation (shapes, dtypes, strides), the autograd
    # registration and AOTAutograd with dynamic shapes, against the real implementation.
    gen = torch.Generator().manual_seed(4)
    z = torch.randn(2, 3, 30, generator=gen, dtype=torch.float64).requires_grad_()
    y = torch.randint(0, 3, (2, 30), generator=gen)
    soft = torch.rand(2, 3, 30, generator=gen, dtype=torch.float64)
    w = torch.rand(2, 1, 30, generator=gen) > 0.3
    cw = torch.rand(2, 3, 30, generator=gen) > 0.3
    if case.startswith("native") and not native_available():
        pytest.skip(native_status())
    args = OPCHECK_CASES[case](z, y, soft, w, cw)
    if args[0] is not z:
        args = (args[0].detach().requires_grad_(), *args[1:])
    torch.library.opcheck(torch.ops.softseg.logit_statistics.default, args)


def test_opcheck_backward_operator_and_fake_shapes():
    gen = torch.Generator().manual_seed(5)
    z = torch.randn(2, 3, 20, generator=gen)
    y = torch.randint(0, 3, (2, 20), generator=gen)
    grads = [torch.randn(2, 3, generator=gen) for _ in range(4)]
    for path in ("blocks", "native") if native_available() else ("blocks",):
        outputs = torch.ops.softseg.logit_statistics(z, y, None, None, "softmax", 1, True, False, path)
        args = (z, y, None, None, outputs[6], outputs[7], *grads, "softmax", 1, True, path)
        torch.library.opcheck(torch.ops.softseg.logit_statistics_backward.default, args)
    # the fake outputs: (B, C) sums in float32 (float64 for float64), the log-sum-exp pair of the softmax blocks
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode():
        fake = torch.ops.softseg.logit_statistics(
            torch.empty(4, 5, 7, dtype=torch.bfloat16), torch.empty(4, 7, dtype=torch.long), None, None,
            "softmax", 1, True, False, "blocks",
        )
        native = torch.ops.softseg.logit_statistics(
            torch.empty(4, 5, 7), torch.empty(4, 7, dtype=torch.long), None, None, "softmax", 1, True, False, "native",
        )
    assert [tuple(t.shape) for t in fake] == [(4, 5)] * 5 + [(0,), (4, 1, 7), (4, 1, 7)]
    assert [t.dtype for t in fake] == [torch.float32] * 7 + [torch.bfloat16]  # log-sum-exp: float32 head, bf16 tail
    assert [tuple(t.shape) for t in native] == [(4, 5)] * 5 + [(0,), (4, 1, 7), (4, 1, 7)]
    assert [t.dtype for t in native] == [torch.float32] * 8  # each pixel's max and 1 / sum of exponentials


def test_range_request_and_path_are_checked():
    with pytest.raises(ValueError, match=r"with_range needs a CPU path \(blocks or native\)"):
        torch.ops.softseg.logit_statistics(torch.zeros(1, 2, 3), torch.zeros(1, 3, dtype=torch.long), None, None,
                                           "softmax", 1, False, True, "triton")
    with pytest.raises(ValueError, match="path must be one of 'blocks', 'native', 'triton'; got 'fast'"):
        torch.ops.softseg.logit_statistics(torch.zeros(1, 2, 3), torch.zeros(1, 3, dtype=torch.long), None, None,
                                           "softmax", 1, False, False, "fast")


def test_value_checks_run_on_the_device_when_compiled():
    # With the checks on, a bad label or target fails inside the compiled graph (no host read, no graph break);
    # switched off, the same call runs.
    compiled = torch.compile(lambda z, y: softseg.dice_loss(z, y, ignore_index=255), backend="aot_eager",
                             fullgraph=True)
    logits = torch.randn(2, 3, 4, 5)
    labels = torch.randint(0, 3, (2, 4, 5))
    labels[0, 0, 0] = 255  # ignored: fine
    compiled(logits, labels)
    labels[1, 2, 3] = 7
    with pytest.raises(RuntimeError, match=r"target holds a class index outside \[0, 2\] \(checked on the device"):
        compiled(logits, labels)
    with set_value_checks(False):
        assert torch.isfinite(compiled(logits, labels))
    dense = torch.compile(lambda z, y: dice_ce_loss(z, y, activation="sigmoid"), backend="aot_eager", fullgraph=True)
    target = torch.rand(2, 3, 4, 5)
    dense(logits, target)
    target[0, 1, 2, 2] = 1.5
    with pytest.raises(RuntimeError, match=r"target must hold values in \[0, 1\] \(checked on the device"):
        dense(logits, target)
