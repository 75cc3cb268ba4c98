"""Tutorial 6's set-anomaly task: find the one image in a set whose class differs from the others.

The predictor has no positional encoding, so it is permutation-equivariant: shuffling the set shuffles
its scores the same way. It gives one score per element and a softmax over the set picks the anomaly.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from ..errors import WordformerError, check_int
from .checkpoints import TaskCheckpoint, check_task_out, load_task_checkpoint, save_task_checkpoint
from .encoder import EncoderConfig
from .features import FeatureSplit, cifar100_features, digits_split, import_torchvision
from .loading import safe_load
from .module import TaskModule, evaluate_module, fit

log = logging.getLogger(__name__)

PathLike = Union[str, Path]
SOURCES = ("digits", "cifar100")
TEST_SEED = 42  # the tutorial's seed for pre-generating the test sets
CHECKPOINT_NAME = "anomaly.ckpt"


@dataclass
class AnomalyConfig:
    """Set, model and optimiser settings; the model and optimiser defaults are the tutorial's."""

    set_size: int = 10  # N-1 images of one class plus one anomaly
    batch_size: int = 64
    model_dim: int = 256
    num_heads: int = 4
    num_layers: int = 4
    dropout: float = 0.1
    input_dropout: float = 0.1  # dropout on the image features makes the model robust to feature noise
    lr: float = 5e-4
    warmup: int = 100
    gradient_clip: float = 2.0
    test_fraction: float = 0.2  # digits only: share of images held out for testing
    val_fraction: float = 0.1  # digits only: share of images for choosing the best epoch
    split_seed: int = 0  # digits only: which images land in which split

    def __post_init__(self) -> None:
        check_int("set_size", self.set_size, 2)
        check_int("batch_size", self.batch_size)
        check_int("split_seed", self.split_seed, 0)
        if isinstance(self.gradient_clip, bool) or not isinstance(self.gradient_clip, (int, float)) or self.gradient_clip < 0:
            raise WordformerError(f"gradient_clip={self.gradient_clip!r} must be a number >= 0 (0 turns clipping off)")
        self.model_config(input_dim=1)  # validates the architecture fields

    def model_config(self, input_dim: int) -> EncoderConfig:
        return EncoderConfig(
            input_dim=input_dim,
            model_dim=self.model_dim,
            num_classes=1,  # one anomaly score per set element
            num_heads=self.num_heads,
            num_layers=self.num_layers,
            dropout=self.dropout,
            input_dropout=self.input_dropout,
            positional_encoding=False,  # a set has no order
        )


class SetAnomalyDataset(Dataset):
    """Sets of ``set_size - 1`` images of one class plus image ``idx`` of another class, the anomaly.

    Each image is the anomaly once per epoch. Training sets are drawn afresh at every access; test
    sets are drawn once from ``seed`` so every evaluation sees the same sets. The anomaly's position in
    the set is random too (the tutorial put it last; with an order-blind model it makes no difference).
    Items are ``(features (S, F), image indices (S,), anomaly position)``.
    """

    def __init__(self, features: Tensor, labels: Tensor, set_size: int = 10, *, train: bool, seed: int):
        if features.dim() != 2 or labels.dim() != 1 or features.size(0) != labels.size(0):
            raise WordformerError(
                f"features {tuple(features.shape)} and labels {tuple(labels.shape)} must be (N, F) and (N,) for the same N"
            )
        check_int("set_size", set_size, 2)
        self.features = features
        self.labels = labels.cpu().numpy()
        self.set_size = set_size
        self.train = train
        self.rng = np.random.default_rng(seed)
        members = set_size - 1
        self.by_class = {int(c): np.flatnonzero(self.labels == c) for c in np.unique(self.labels)}
        self.set_classes = np.array(sorted(c for c, idx in self.by_class.items() if len(idx) >= members))
        if len(self.set_classes) < 2:
            raise WordformerError(
                f"need at least 2 classes with {members} images each to build sets of {set_size}: use a smaller set_size or more images"
            )
        self.sets = None if train else [self._sample(i) for i in range(len(self.labels))]

    def _sample(self, idx: int) -> tuple[np.ndarray, int]:
        choices = self.set_classes[self.set_classes != self.labels[idx]]
        cls = int(choices[self.rng.integers(len(choices))])
        members = self.rng.choice(self.by_class[cls], size=self.set_size - 1, replace=False)
        position = int(self.rng.integers(self.set_size))
        return np.insert(members, position, idx), position

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, idx: int) -> tuple[Tensor, Tensor, int]:
        indices, position = self._sample(idx) if self.sets is None else self.sets[idx]
        index = torch.from_numpy(indices)  # (S,)
        return self.features[index], index, position  # (S, F), (S,), anomaly position


class AnomalyModule(TaskModule):
    """One score per set element; cross-entropy of the softmax over the set against the anomaly's position."""

    def _calculate_loss(self, batch: Any) -> tuple[Tensor, Tensor]:
        sets, labels = batch[0], batch[-1]  # (B, S, F), (B,)
        scores = self(sets).squeeze(-1)  # (B, S)
        loss = F.cross_entropy(scores, labels)
        acc = (scores.argmax(dim=-1) == labels).float().mean()
        return loss, acc


@dataclass
class AnomalyResult:
    """What :func:`train_anomaly` produced."""

    checkpoint: Path
    test_accuracy: float
    test_loss: float
    val_accuracy: float
    seconds: float


def _cifar_split(data_dir: PathLike, download: bool) -> FeatureSplit:
    """The tutorial's data: CIFAR-100 ResNet-34 features; 10% of each class's training images validate."""
    train_x, train_y = cifar100_features(data_dir, train=True, download=download)
    test_x, test_y = cifar100_features(data_dir, train=False, download=download)
    val_mask = torch.zeros(len(train_y), dtype=torch.bool)
    for c in train_y.unique():
        idx = torch.nonzero(train_y == c).flatten()
        val_mask[idx[: len(idx) // 10]] = True
    dim = train_x.size(1)
    return FeatureSplit(
        train_x[~val_mask], train_y[~val_mask], train_x[val_mask], train_y[val_mask], test_x, test_y,
        torch.zeros(dim), torch.ones(dim),  # the ResNet features are used as they are
    )


def train_anomaly(
    out_dir: PathLike,
    *,
    epochs: int = 40,
    seed: int = 42,
    config: Optional[AnomalyConfig] = None,
    source: str = "digits",
    data_dir: Optional[PathLike] = None,
    download: bool = False,
    accelerator: str = "auto",
    test_seed: int = TEST_SEED,
    overwrite: bool = False,
) -> AnomalyResult:
    """Train the set-anomaly predictor on ``source`` features, test it, write ``out_dir/anomaly.ckpt``.

    ``source="digits"`` runs offline; ``"cifar100"`` is the tutorial's setting and needs
    ``wordformer[vision]`` and ``data_dir`` (with ``download=True`` to fetch CIFAR-100 there).
    An existing ``anomaly.ckpt`` is refused before training unless ``overwrite``.
    """
    check_int("epochs", epochs)
    check_int("seed", seed, 0)
    cfg = config or AnomalyConfig()
    if source not in SOURCES:
        raise WordformerError(f"source={source!r} must be one of: {', '.join(SOURCES)}")
    if source == "cifar100" and data_dir is None:
        raise WordformerError("the cifar100 source needs data_dir: pass --data-dir DIR (and --download the first time)")
    out = Path(out_dir)
    target = check_task_out(out, CHECKPOINT_NAME, task="anomaly", overwrite=overwrite)
    start = time.perf_counter()
    if source == "digits":
        split = digits_split(test_fraction=cfg.test_fraction, val_fraction=cfg.val_fraction, split_seed=cfg.split_seed)
    else:
        split = _cifar_split(data_dir, download)  # type: ignore[arg-type]
    torch.manual_seed(seed)
    train_set = SetAnomalyDataset(split.train_features, split.train_labels, cfg.set_size, train=True, seed=seed)
    val_set = SetAnomalyDataset(split.val_features, split.val_labels, cfg.set_size, train=False, seed=seed + 1)
    test_set = SetAnomalyDataset(split.test_features, split.test_labels, cfg.set_size, train=False, seed=test_seed)
    if len(train_set) < cfg.batch_size:
        raise WordformerError(f"only {len(train_set)} training images for batch_size={cfg.batch_size}: lower the batch size")
    train_loader = DataLoader(
        train_set, batch_size=cfg.batch_size, shuffle=True, drop_last=True, generator=torch.Generator().manual_seed(seed)
    )
    val_loader = DataLoader(val_set, batch_size=cfg.batch_size)
    model_config = cfg.model_config(input_dim=split.train_features.size(1))
    module = AnomalyModule(model_config.to_dict(), lr=cfg.lr, warmup=cfg.warmup, max_iters=epochs * len(train_loader))
    val_acc = fit(module, train_loader, val_loader, epochs=epochs, gradient_clip=cfg.gradient_clip, out_dir=out, accelerator=accelerator)
    test = evaluate_module(module, DataLoader(test_set, batch_size=256))
    seconds = time.perf_counter() - start
    log.info("anomaly (%s): test accuracy %.4f after %d epochs (%.1fs)", source, test["accuracy"], epochs, seconds)
    path = save_task_checkpoint(
        target,
        overwrite=overwrite,
        task="anomaly",
        model=module.model,
        hparams={**dict(module.hparams), "epochs": epochs, "seed": seed},
        data={"source": source, "set_size": cfg.set_size, "test_seed": test_seed, "config": asdict(cfg),
              "feature_mean": split.mean, "feature_std": split.std},
        metrics={"test_accuracy": test["accuracy"], "test_loss": test["loss"], "val_accuracy": val_acc},
    )
    return AnomalyResult(path, test["accuracy"], test["loss"], val_acc, seconds)


def load_anomaly_module(checkpoint_path: PathLike) -> tuple[AnomalyModule, TaskCheckpoint]:
    """An :class:`AnomalyModule` with the weights of ours or the tutorial's ``SetAnomalyTask.ckpt``."""
    loaded = load_task_checkpoint(checkpoint_path, expect="anomaly")
    module = AnomalyModule(loaded.model.config.to_dict())
    module.model.load_state_dict(loaded.model.state_dict())
    module.eval()
    return module, loaded


def _features_file(path: PathLike, data_dir: Optional[PathLike], download: bool) -> tuple[Tensor, Tensor]:
    """Test features from a file: {"features", "labels"}, or the tutorial's bare test_set_features tensor."""
    raw = safe_load(path, kind="features file",
                    hint="pass --features an existing file of features and labels, or the tutorial's test_set_features.tar")
    if isinstance(raw, dict) and isinstance(raw.get("features"), Tensor) and isinstance(raw.get("labels"), Tensor):
        return raw["features"].float(), raw["labels"].long()
    if isinstance(raw, Tensor):
        if data_dir is None:
            raise WordformerError(f"{path} holds features without labels: pass --data-dir with CIFAR-100 for the labels")
        torchvision = import_torchvision()
        try:
            targets = torchvision.datasets.CIFAR100(root=str(data_dir), train=False, download=download).targets
        except RuntimeError as exc:
            raise WordformerError(f"CIFAR-100 not found under {data_dir} ({exc}): pass --download or the right --data-dir") from None
        labels = torch.as_tensor(targets, dtype=torch.long)
        if len(labels) != raw.size(0):
            raise WordformerError(f"{path} has {raw.size(0)} feature rows but CIFAR-100's test set has {len(labels)} images")
        return raw.float(), labels
    raise WordformerError(f"{path} must hold a dict with 'features' (N, F) and 'labels' (N,) tensors, or an (N, F) tensor")


def evaluate_anomaly(
    checkpoint_path: PathLike,
    *,
    seed: int = TEST_SEED,
    features: Optional[PathLike] = None,
    data_dir: Optional[PathLike] = None,
    download: bool = False,
    batch_size: int = 256,
    device: str = "cpu",
) -> dict[str, float]:
    """Accuracy and loss of a set-anomaly checkpoint on one test set per test image.

    The test images are, in order of precedence: ``features`` (a file of features and labels); the
    digits split recorded in one of our checkpoints; CIFAR-100 test images through ResNet-34 (the
    tutorial's ``SetAnomalyTask.ckpt``; needs ``wordformer[vision]`` and ``data_dir``).
    """
    check_int("batch_size", batch_size)
    module, loaded = load_anomaly_module(checkpoint_path)
    data = loaded.data
    set_size = data.get("set_size", 10)  # a damaged file may hold anything: checked like the rest
    check_int("set_size", set_size, 2)
    if features is not None:
        test_x, test_y = _features_file(features, data_dir, download)
    elif data.get("source") == "digits":
        cfg = data.get("config", {})
        if not isinstance(cfg, dict):
            raise WordformerError(f"{checkpoint_path} is damaged: its data config must be a mapping; retrain it")
        check_int("split_seed", cfg.get("split_seed", 0), low=0)
        stats = [data.get(k) if isinstance(data.get(k), Tensor) else None for k in ("feature_mean", "feature_std")]
        split = digits_split(
            test_fraction=cfg.get("test_fraction", 0.2),
            val_fraction=cfg.get("val_fraction", 0.1),
            split_seed=cfg.get("split_seed", 0),
            mean=stats[0],
            std=stats[1],
        )
        test_x, test_y = split.test_features, split.test_labels
    else:
        if data_dir is None:
            raise WordformerError(
                f"{checkpoint_path} was trained on CIFAR-100 features: pass --data-dir DIR (needs wordformer[vision]) or --features FILE"
            )
        test_x, test_y = cifar100_features(data_dir, train=False, download=download)
    expected = module.model.config.input_dim
    if test_x.dim() != 2 or test_x.size(1) != expected:
        raise WordformerError(f"test features have shape {tuple(test_x.shape)} but the model expects {expected} per image")
    test_set = SetAnomalyDataset(test_x, test_y, set_size, train=False, seed=seed)
    result = evaluate_module(module, DataLoader(test_set, batch_size=batch_size), device)
    return {"accuracy": result["accuracy"], "loss": result["loss"], "num_sets": float(result["count"])}
