"""Trainer: learns, is reproducible, resumes exactly, stops on NaN, runs its callbacks."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import pytest
import torch

from ensemblenet import ConfigError, TrainConfig, Trainer, TrainingError
from ensemblenet.training import EarlyStopping, ModelCheckpoint, lr_factor

from .conftest import make_tiny_model, separable_loader


def config(**kw: object) -> TrainConfig:
    base = {"epochs": 3, "lr": 1e-2, "progress": False, "device": "cpu"}
    base.update(kw)
    return TrainConfig(**base)  # type: ignore[arg-type]


def test_fit_learns_and_records_history() -> None:
    model = make_tiny_model()
    trainer = Trainer(config(epochs=4), freeze="none")
    history = trainer.fit(model, separable_loader(seed=1), separable_loader(seed=2))
    assert [r.epoch for r in history] == [1, 2, 3, 4]
    for r in history:
        assert math.isfinite(r.train_loss) and math.isfinite(r.val_loss)
        assert r.train_images == 64
    assert history[-1].train_loss < history[0].train_loss
    assert history[-1].val_accuracy >= 0.95
    evaluation = trainer.evaluate(model, separable_loader(seed=3))
    assert evaluation.n == 64 and evaluation.accuracy >= 0.95


def final_weights(seed: int, epochs: int = 3) -> dict[str, torch.Tensor]:
    model = make_tiny_model(seed=0)
    Trainer(config(epochs=epochs, seed=seed, augment=False), freeze="none").fit(model, separable_loader())
    return model.state_dict()


def test_same_seed_same_weights_other_seed_differs() -> None:
    a, b, c = final_weights(seed=7), final_weights(seed=7), final_weights(seed=8)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_resume_reaches_the_same_weights_as_an_uninterrupted_run(tmp_path: Path) -> None:
    straight = make_tiny_model()
    Trainer(config(epochs=3, schedule="cosine"), freeze="none").fit(straight, separable_loader())

    # "interrupted" after epoch 1: a run configured for 3 epochs, stopped by a callback
    class StopAfterFirst(EarlyStopping):
        def on_epoch_end(self, trainer, model, record):  # type: ignore[no-untyped-def]
            trainer.should_stop = True

    last = tmp_path / "last.pt"
    first = make_tiny_model()
    Trainer(
        config(epochs=3, schedule="cosine"),
        freeze="none",
        callbacks=[
            ModelCheckpoint(tmp_path / "best.pt", restore_best=False, last_path=last),
            StopAfterFirst(),
        ],
    ).fit(first, separable_loader())

    resumed = make_tiny_model(seed=123)  # different init: everything must come from the file
    history = Trainer(config(epochs=3, schedule="cosine"), freeze="none").fit(
        resumed, separable_loader(), resume=last
    )
    assert [r.epoch for r in history] == [1, 2, 3]
    for key, value in straight.state_dict().items():
        assert torch.equal(value, resumed.state_dict()[key]), key


def test_non_finite_loss_stops_with_epoch_and_step() -> None:
    model = make_tiny_model()
    images = torch.full((8, 3, 16, 16), float("nan"))
    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(images, torch.zeros(8, dtype=torch.long))
    )
    before = {k: v.clone() for k, v in model.named_parameters()}
    with pytest.raises(TrainingError, match=r"epoch 1, step 1"):
        Trainer(config(), freeze="none").fit(model, loader)
    # The bad step was never applied to the weights (BatchNorm statistics did see the batch).
    assert all(torch.equal(before[k], v) for k, v in model.named_parameters())


def test_checkpoint_keeps_best_and_restores_it(tmp_path: Path) -> None:
    from ensemblenet.models import load_checkpoint

    model = make_tiny_model()
    saver = ModelCheckpoint(tmp_path / "best.pt", monitor="val_accuracy")
    history = Trainer(config(epochs=3), freeze="none", callbacks=[saver]).fit(
        model, separable_loader(), separable_loader(seed=5)
    )
    best = max(history, key=lambda r: r.val_accuracy)  # first max wins ties, as 'improved' is strict
    assert saver.best_epoch == best.epoch
    payload = load_checkpoint(tmp_path / "best.pt")
    assert payload["metrics"]["epoch"] == best.epoch
    for k, v in model.state_dict().items():
        assert torch.equal(v, payload["state_dict"][k])


def test_early_stopping_stops() -> None:
    model = make_tiny_model()
    stopper = EarlyStopping(monitor="val_loss", patience=0, min_delta=1e9)  # nothing ever counts as better
    history = Trainer(config(epochs=5), freeze="none", callbacks=[stopper]).fit(
        model, separable_loader(), separable_loader()
    )
    assert len(history) == 2  # epoch 1 sets the baseline, epoch 2 fails to improve


def test_bad_config_values_are_named() -> None:
    with pytest.raises(ConfigError, match="optimizer"):
        TrainConfig(optimizer="adamm")
    with pytest.raises(ConfigError, match="schedule"):
        TrainConfig(schedule="cosin")
    with pytest.raises(ConfigError, match="epochs"):
        TrainConfig(epochs=0)
    with pytest.raises(ConfigError, match="device"):
        Trainer(device="gpu9")
    with pytest.raises(ConfigError, match=r"monitor|metric"):
        ModelCheckpoint("x.pt", monitor="val_acc").on_epoch_end(
            None,  # type: ignore[arg-type]
            make_tiny_model(),
            Trainer(config()).history.records[0] if False else _record(),
        )


def _record():  # type: ignore[no-untyped-def]
    from ensemblenet.training import EpochRecord

    return EpochRecord(epoch=1, train_loss=1.0)


@pytest.mark.parametrize("schedule", ["constant", "cosine", "linear"])
def test_schedules_start_high_and_warm_up(schedule: str) -> None:
    factors = [lr_factor(schedule, s, 100, warmup=0.1) for s in range(100)]
    assert factors[0] == pytest.approx(0.1)
    assert factors[9] == pytest.approx(1.0)
    assert all(0.0 <= f <= 1.0 for f in factors)
    if schedule != "constant":
        assert factors[-1] < 0.05
        assert all(a >= b for a, b in itertools.pairwise(factors[9:]))


def test_adamw_and_sgd_train() -> None:
    for name in ("adamw", "sgd"):
        model = make_tiny_model()
        history = Trainer(config(epochs=3, optimizer=name, weight_decay=1e-4), freeze="none").fit(
            model, separable_loader(), separable_loader(seed=4)
        )
        assert history[-1].val_accuracy >= 0.9, name
