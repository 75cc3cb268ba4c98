"""Image features for the set-anomaly task.

The default source works offline: scikit-learn's bundled 8x8 digits, each image's 64 pixels
standardised with the training images' statistics. The tutorial's source, CIFAR-100 through an
ImageNet-trained ResNet-34 (512 features per image), needs torchvision, installed with the
``wordformer[vision]`` extra; it is imported only when used.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

from ..errors import WordformerError, check_int

log = logging.getLogger(__name__)

PathLike = Union[str, Path]
# ImageNet statistics: the ResNet was trained on images normalised with them (as in the tutorial).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
VISION_HINT = "install the optional extra: pip install 'wordformer[vision]'"


@dataclass
class FeatureSplit:
    """Per-image features and class labels, split by images into train / validation / test."""

    train_features: Tensor  # (N_train, F)
    train_labels: Tensor  # (N_train,)
    val_features: Tensor
    val_labels: Tensor
    test_features: Tensor
    test_labels: Tensor
    mean: Tensor  # (F,) training-set statistics used to standardise all three
    std: Tensor


def standardise(features: Tensor, mean: Tensor, std: Tensor) -> Tensor:
    """Zero mean, unit variance per feature (constant features keep std 1 rather than dividing by 0)."""
    return (features - mean) / std


def digits_split(
    *,
    test_fraction: float = 0.2,
    val_fraction: float = 0.1,
    split_seed: int = 0,
    mean: Optional[Tensor] = None,
    std: Optional[Tensor] = None,
) -> FeatureSplit:
    """scikit-learn's digits as standardised 64-pixel features, stratified by class, split by images.

    The same arguments always give the same split, so an evaluation can rebuild the test images;
    ``mean``/``std`` (a checkpoint's) replace the training images' statistics.
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    for name, value in (("test_fraction", test_fraction), ("val_fraction", val_fraction)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 < value < 0.5:
            raise WordformerError(f"{name}={value!r} must be a number in (0, 0.5)")
    digits = load_digits()
    images = digits.data.astype(np.float32)  # (1797, 64)
    labels = digits.target.astype(np.int64)  # (1797,)
    index = np.arange(len(labels))
    rest, test = train_test_split(index, test_size=test_fraction, stratify=labels, random_state=split_seed)
    train, val = train_test_split(
        rest, test_size=val_fraction / (1.0 - test_fraction), stratify=labels[rest], random_state=split_seed
    )
    x = torch.from_numpy(images)
    y = torch.from_numpy(labels)
    if mean is None or std is None:
        mean = x[train].mean(dim=0)  # (64,)
        std = x[train].std(dim=0)
        std = torch.where(std > 1e-6, std, torch.ones_like(std))  # border pixels are always 0
    elif mean.shape != (x.size(1),) or std.shape != (x.size(1),):
        raise WordformerError(f"mean/std must have shape ({x.size(1)},) for the digits' pixels")
    return FeatureSplit(
        standardise(x[train], mean, std), y[train],
        standardise(x[val], mean, std), y[val],
        standardise(x[test], mean, std), y[test],
        mean, std,
    )


def _images_loader(images: Union[Tensor, Dataset], batch_size: int) -> DataLoader:
    if isinstance(images, Tensor):
        images = TensorDataset(images)
    return DataLoader(images, batch_size=batch_size, shuffle=False)


@torch.no_grad()
def extract_features(
    images: Union[Tensor, Dataset],
    backbone: nn.Module,
    batch_size: int = 128,
    *,
    device: Optional[Union[str, torch.device]] = None,
) -> Tensor:
    """Run a frozen ``backbone`` over ``images`` and return one flat feature row per image (N, F).

    ``images`` is a tensor (N, ...) or a dataset yielding images or (image, label) pairs; any module
    works as the backbone (the tutorial's is :func:`resnet34_backbone`). The backbone's training
    mode is restored afterwards.
    """
    check_int("batch_size", batch_size)
    if not isinstance(backbone, nn.Module):
        raise WordformerError(f"backbone must be a torch.nn.Module, got {type(backbone).__name__}")
    if device is None:
        device = next((p.device for p in backbone.parameters()), torch.device("cpu"))
    was_training = backbone.training
    backbone.eval()
    chunks: list[Tensor] = []
    try:
        for batch in _images_loader(images, batch_size):
            x = batch[0] if isinstance(batch, (list, tuple)) else batch  # (B, C, H, W)
            feats = backbone(x.to(device))
            chunks.append(feats.reshape(feats.size(0), -1).float().cpu())  # (B, F)
    finally:
        backbone.train(was_training)
    if not chunks:
        raise WordformerError("no images to extract features from: pass at least one image")
    return torch.cat(chunks, dim=0)  # (N, F)


def import_torchvision() -> Any:
    """torchvision, or a one-line error saying how to install it (it is an optional extra)."""
    try:
        import torchvision  # noqa: F401 - optional dependency
    except Exception as exc:  # missing, or built for another torch
        raise WordformerError(f"torchvision is not usable here ({type(exc).__name__}): {VISION_HINT}") from None
    return torchvision


def resnet34_backbone(*, pretrained: bool = True) -> nn.Module:
    """The tutorial's feature extractor: ResNet-34 (ImageNet weights) with its classifier removed -> 512 features."""
    torchvision = import_torchvision()
    weights = torchvision.models.ResNet34_Weights.IMAGENET1K_V1 if pretrained else None
    model = torchvision.models.resnet34(weights=weights)
    model.fc = nn.Identity()  # (B, 512) penultimate features
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def cifar100_features(
    data_dir: PathLike,
    *,
    train: bool,
    download: bool = False,
    backbone: Optional[nn.Module] = None,
    batch_size: int = 128,
    device: Optional[Union[str, torch.device]] = None,
) -> tuple[Tensor, Tensor]:
    """CIFAR-100 images (resized to 224, ImageNet-normalised) through ResNet-34: features (N, 512), labels (N,)."""
    torchvision = import_torchvision()
    from torchvision import transforms

    transform = transforms.Compose(
        [transforms.Resize((224, 224)), transforms.ToTensor(), transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
    )
    try:
        dataset = torchvision.datasets.CIFAR100(root=str(data_dir), train=train, transform=transform, download=download)
    except RuntimeError as exc:
        raise WordformerError(f"CIFAR-100 not found under {data_dir} ({exc}): pass --download or the right --data-dir") from None
    model = backbone if backbone is not None else resnet34_backbone()
    if device is not None:
        model = model.to(device)
    log.info("extracting %s features of %d CIFAR-100 images", "train" if train else "test", len(dataset))
    features = extract_features(dataset, model, batch_size, device=device)
    labels = torch.as_tensor(dataset.targets, dtype=torch.long)
    return features, labels
