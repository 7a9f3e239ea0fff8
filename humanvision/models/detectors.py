"""torchvision person detectors from local weights, with the interface of :mod:`humanvision.runtime.detectors`.

:class:`TorchvisionDetector` builds a ``torchvision.models.detection`` model (Faster / Mask / Keypoint R-CNN,
RetinaNet, FCOS, SSD; ``torchvision.models.list_models(module=torchvision.models.detection)``) with ``weights=None,
weights_backbone=None`` (nothing is downloaded) and loads a local state dict (``.pth`` read without executing code,
or ``.safetensors``; a torchvision reference checkpoint's ``{'model': ...}`` is unwrapped). Calling it returns the
person boxes like every runtime detector: ``(boxes (N, 4) xyxy float32 image pixels, scores (N,) float32)``.

:func:`build_detector` turns the ``--detector`` spec of ``humanvision infer`` into a detector:
``torchvision:NAME:WEIGHTS``, an ``.onnx`` file, a ``.json`` box file or ``whole``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from humanvision.errors import ConfigError, DataError
from humanvision.runtime.detectors import Detector, _check_image, _finish, load_detector

__all__ = ["TorchvisionDetector", "build_detector", "torchvision_detector_names"]

#: state-dict keys whose first dimension is the number of classes (two-stage and FCOS heads)
_CLASS_KEYS = ("roi_heads.box_predictor.cls_score.weight", "head.classification_head.cls_logits.weight")


def torchvision_detector_names() -> list[str]:
    import torchvision

    return sorted(torchvision.models.list_models(module=torchvision.models.detection))


class TorchvisionDetector:
    """A torchvision detection model with local weights, keeping the person class.

    Args:
        name: a ``torchvision.models.detection`` builder, e.g. ``fasterrcnn_resnet50_fpn_v2``.
        weights: the local state dict file.
        score_thr: keep boxes scoring at least this.
        person_label: the person label (torchvision's COCO models: 1, of 91 categories).
        num_classes: default: read from the weights (R-CNN and FCOS heads), else 91.
        device: where the model runs.
        **model_kwargs: passed to the builder (``min_size``, ``max_size``, ``box_score_thresh``, ...).
    """

    def __init__(self, name: str, weights: str | Path, *, score_thr: float = 0.5, person_label: int = 1,
                 num_classes: int | None = None, device: str | torch.device = "cpu", **model_kwargs: Any) -> None:
        import torchvision

        from humanvision.models.weights import read_checkpoint

        names = torchvision_detector_names()
        if name not in names:
            raise ConfigError(f"detector: unknown torchvision detection model {name!r}; choose one of {names}")
        self.name, self.weights = name, Path(weights)
        state = read_checkpoint(self.weights)  # DataError naming the file when missing / unreadable
        if num_classes is None:
            key = next((k for k in _CLASS_KEYS if k in state), None)
            num_classes = int(state[key].shape[0]) if key is not None and "retinanet" not in name else 91
        try:
            model = torchvision.models.get_model(name, weights=None, weights_backbone=None, num_classes=num_classes,
                                                 **model_kwargs)
        except TypeError as e:
            raise ConfigError(f"detector: {name}: bad model arguments {sorted(model_kwargs)}: {e}") from None
        own = model.state_dict()
        missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
        if missing or unexpected:
            raise DataError(f"not weights of {name} (missing keys {missing[:3]}, unexpected {unexpected[:3]})",
                            file=str(self.weights), field=(missing or unexpected)[0])
        for k, v in state.items():
            if tuple(v.shape) != tuple(own[k].shape):
                raise DataError(f"shape {tuple(v.shape)} does not match {name}'s {tuple(own[k].shape)} (num_classes "
                                f"{num_classes})", file=str(self.weights), field=k)
        model.load_state_dict(state)
        self.device = torch.device(device)
        self.model = model.eval().to(self.device)
        self.score_thr, self.person_label, self.num_classes = float(score_thr), int(person_label), num_classes

    def __repr__(self) -> str:
        return (f"TorchvisionDetector({self.name!r}, {str(self.weights)!r}, score_thr={self.score_thr}, "
                f"person_label={self.person_label})")

    @torch.no_grad()
    def __call__(self, image: np.ndarray, name: str | None = None) -> tuple[np.ndarray, np.ndarray]:
        """``image`` ``(H, W, 3)`` uint8 RGB -> person boxes xyxy and scores, by descending score."""
        img = _check_image(image)
        x = torch.from_numpy(np.ascontiguousarray(img)).to(self.device).permute(2, 0, 1).float().div_(255.0)
        out = self.model([x])[0]
        keep = (out["labels"] == self.person_label) & (out["scores"] >= self.score_thr)
        return _finish(out["boxes"][keep].float().cpu().numpy(), out["scores"][keep].float().cpu().numpy(),
                       img.shape)


def build_detector(spec: str | Path, *, score_thr: float | None = None, device: str | torch.device = "cpu",
                   **kwargs: Any) -> Detector:
    """A detector from ``humanvision infer --detector``: ``torchvision:NAME:WEIGHTS`` (:class:`TorchvisionDetector`),
    or what :func:`humanvision.runtime.detectors.load_detector` takes (``whole``, ``.onnx``, ``.json``)."""
    text = str(spec)
    if text.startswith("torchvision:"):
        parts = text.split(":", 2)
        if len(parts) != 3 or not parts[1] or not parts[2]:
            raise ConfigError(f"--detector {text}: expected torchvision:NAME:WEIGHTS, e.g. "
                              "torchvision:fasterrcnn_resnet50_fpn_v2:weights/frcnn.pth")
        thr = {} if score_thr is None else {"score_thr": score_thr}
        return TorchvisionDetector(parts[1], parts[2], device=device, **thr, **kwargs)
    return load_detector(text, score_thr=score_thr, **kwargs)
