"""softseg compare with the staged configurations: registered by default, the schedules advance with the
optimisation steps, the weights are in the history and in the learning-curve plot."""

import json

import pytest


from softseg.cli import main
from softseg.cli.configs import LOSS_CONFIGURATIONS, build_loss, resolve_configurations
from softseg.cli.plots import plot_learning_curves
from softseg.cli.train import RunResult


def test_staged_configurations_are_registered_and_span_the_run():
    configs = resolve_configurations("ce-to-softseg-dice,l2-to-l1-dice")
    assert [c.target for c in configs] == ["soft", "soft"]
    staged = build_loss(configs[0], total_steps=40)   # CE for 10 steps, handed over during 20, then Dice
    assert staged.weights_at(10) == {"ce": 1.0, "region": 0.0}
    assert staged.weights_at(20) == pytest.approx({"ce": 0.5, "region": 0.5})
    assert staged.weights_at(30) == {"ce": 0.0, "region": 1.0}
    plain = build_loss(LOSS_CONFIGURATIONS["softseg-dice"], total_steps=40)  # a build without total_steps
    assert not hasattr(plain, "step")


def test_quick_compare_with_staged_configurations(tmp_path):
    out = tmp_path / "report"
    assert main(["compare", "--quick", "--threads", "1", "--epochs", "4", "--out", str(out),
                 "--losses", "ce,ce-to-softseg-dice,l2-to-l1-dice"]) == 0
    report = json.loads((out / "summary.json").read_text())
    assert list(report["results"]) == ["ce", "ce-to-softseg-dice", "l2-to-l1-dice"]
    histories = {run["loss"]: run["history"] for run in report["runs"]}
    assert "loss_weights" not in histories["ce"][0]
    for name, first, second in (("ce-to-softseg-dice", "ce", "region"), ("l2-to-l1-dice", "dice_l2", "dice_l1")):
        history = histories[name]
        weights = [h["loss_weights"] for h in history]
        # The counter advanced with every optimisation step: the first term hands over to the second.
        assert weights[0][first] > weights[-1][first] and weights[-1] == {first: 0.0, second: 1.0}
        assert all(abs(w[first] + w[second] - 1) < 1e-9 for w in weights)
        assert [h["epoch"] for h in history] == [1, 2, 3, 4]
    assert (out / "learning_curves.png").stat().st_size > 0


def test_learning_curves_show_the_weights_of_staged_runs(tmp_path, monkeypatch):
    import matplotlib.axes

    labels = []
    original = matplotlib.axes.Axes.plot

    def recording_plot(self, *args, **kwargs):
        labels.append(kwargs.get("label"))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(matplotlib.axes.Axes, "plot", recording_plot)
    history = [
        {"epoch": e, "step": e, "train_loss": 1.0 / e, "test_soft_dice": 0.5,
         "loss_weights": {"ce": 1 - e / 2, "region": e / 2}}
        for e in (1, 2)
    ]
    result = RunResult(LOSS_CONFIGURATIONS["ce-to-softseg-dice"], 1, 0, history, {}, (0,), 1.0, 1.0, None)
    plot_learning_curves(tmp_path / "curves.png", [result])
    assert "ce-to-softseg-dice: ce" in labels and "ce-to-softseg-dice: region" in labels
    assert (tmp_path / "curves.png").exists()
