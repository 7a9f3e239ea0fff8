"""Scene presets: :class:`~.scene.SceneConfig` settings that mirror common benchmarks' statistics.

=============  ==============================================================================================
preset         what it mirrors
=============  ==============================================================================================
legacy         today's default ``SceneConfig()`` (whole bodies at small/medium scale, procedural backdrops)
coco           COCO keypoints: far people to portraits, truncation, crowds, photos, real-camera effects
h36m           Human3.6M: one person in a studio seen by a calibrated 4-camera ring, never close up
pedestrian     street video: several walking people, small, from an elevated camera, surveillance codecs
=============  ==============================================================================================

``scene_config("coco", backgrounds="data/backgrounds", size=(192, 256))`` builds a preset's config (keyword
overrides replace fields); an unknown name is a :class:`~humanvision.errors.ConfigError` listing the presets.
Presets that use photo backdrops take them from ``backgrounds`` (a folder, see
:func:`~.backgrounds.collect_backgrounds`); without one they use procedural backdrops and say so once.
:func:`preset_statistics` measures what a config produces (person scale, truncation, people per image, joint
visibility); the numbers in each preset's docstring come from it (400 views, ``seed=0``, at the preset's size).
``docs/presets/{name}.png`` are contact sheets of each preset (``benchmarks/synthetic.py`` prints the statistics
and the frames/s of each).
"""

from __future__ import annotations

import difflib
import warnings
from collections.abc import Callable
from dataclasses import dataclass, fields, replace
from pathlib import Path

import numpy as np

from humanvision.data.synthetic.body import JOINTS
from humanvision.data.synthetic.photometric import ImageEffects
from humanvision.data.synthetic.scene import SceneConfig, generate_frame
from humanvision.errors import ConfigError
from humanvision.skeletons import get_skeleton

__all__ = ["PRESETS", "Preset", "check_preset", "preset_statistics", "scene_config"]


def _outfits() -> str:
    """``"outfits"`` where :func:`~.identities.dress_person` exists, else ``"basic"``."""
    from humanvision.data.synthetic import identities

    return "outfits" if hasattr(identities, "dress_person") else "basic"


def legacy(backgrounds: Path | None = None) -> SceneConfig:
    """Today's default :class:`SceneConfig`: one whole person at small/medium scale, occluder boxes and poles,
    procedural backdrops, the depth visibility rule (with ``backgrounds`` photos replace the backdrops).

    Statistics (256x256): box height / image height p10-p50-p90 0.33-0.46-0.57 (< 0.1: 2%, 0.1-0.25: 4%,
    0.25-0.5: 58%, 0.5-0.9: 36%, >= 0.9: 0%); truncated (a coco17 joint outside the image) 0%; 0.99 people
    per image; overlapping (box IoU >= 0.1) 0%; coco17 joints visible 56% / occluded 44% / outside 0%.
    """
    return SceneConfig() if backgrounds is None else SceneConfig(backgrounds=backgrounds)


def coco(backgrounds: Path | None = None) -> SceneConfig:
    """COCO-like: 1-4 people; 78 % full-body shots with the main person 0.2-0.95 of the image height
    (log-uniform), 14 % upper-body (hips up) and 8 % head-and-shoulders close-ups; 6 % of the shots
    shifted so the border cuts the person; crowds (30 %) overlapping the main person, otherwise the others
    spread within the picture; views from eye level to 35 degrees above; walking (25 %) and sampled poses;
    outfits with close-up faces; photo backdrops (80 %, a ground plane under 30 % of them) else procedural; light
    from a low sun to overhead, 3200-7500 K, with shadows; real-camera effects (noise, blur, exposure, JPEG; 5 %
    black and white); COCO visibility.

    Statistics (256x256): box height / image height p10-p50-p90 0.20-0.40-0.82 (< 0.1: 3%, 0.1-0.25: 19%,
    0.25-0.5: 43%, 0.5-0.9: 30%, >= 0.9: 5%); truncated (a coco17 joint outside the image) 31%; 2.44
    people per image; overlapping (box IoU >= 0.1) 64%; coco17 joints visible 58% / occluded 31% / outside
    10%.
    """
    return SceneConfig(
        people=(1, 4), shots=(0.78, 0.14, 0.08), scale=(0.2, 0.95), truncation=0.06, crowd=0.3,
        camera_elevation=(-5.0, 35.0), walking=0.25, backgrounds=backgrounds, background_prob=0.8, photo_ground=0.3,
        ambient=(0.25, 0.6), diffuse=(0.4, 0.9), light_elevation=(8.0, 85.0), colour_temperature=(3200.0, 7500.0),
        shadows=True, clothing=_outfits(), faces=True, effects=ImageEffects(monochrome_prob=0.05),
        visibility="coco")


def h36m(backgrounds: Path | None = None) -> SceneConfig:
    """Human3.6M-like studio: one person (walking 30 %, else sampled poses) on a plain floor in front of a plain
    wall, seen by the calibrated 4-camera ring of ``views=4`` (about 5 m away, 1.5 m high, lens
    distortion), 1000x1000; no occluders, no close-ups; soft overhead light with shadows; outfits; mild
    sensor noise and video compression; COCO visibility. ``backgrounds`` is not used (a studio has no
    photo backdrop).

    Statistics (1000x1000, 4 views): box height / image height p10-p50-p90 0.35-0.41-0.48 (< 0.1: 0%,
    0.1-0.25: 0%, 0.25-0.5: 98%, 0.5-0.9: 2%, >= 0.9: 0%); truncated (a coco17 joint outside the image)
    0%; 1.00 people per view; overlapping (box IoU >= 0.1) 0%; coco17 joints visible 79% / occluded 21% /
    outside 0%.
    """
    effects = ImageEffects(vignette_prob=0.0, blur_prob=0.1, blur_sigma=(0.3, 0.8), motion_blur_prob=0.05,
                           motion_blur_length=(2.0, 4.0), exposure_prob=0.3, exposure_ev=(-0.2, 0.2),
                           white_balance_prob=0.2, white_balance=0.04, noise_prob=0.8, noise_std=(0.004, 0.015),
                           gamma_prob=0.0, jpeg_prob=0.8, jpeg_quality=(70, 95))
    return SceneConfig(
        size=(1000, 1000), views=4, people=(1, 1), distortion=True, occluder_prob=0.0, walking=0.3,
        backdrop="studio", ambient=(0.45, 0.6), diffuse=(0.3, 0.5), light_elevation=(55.0, 85.0),
        colour_temperature=(4000.0, 5500.0), shadows=True, clothing=_outfits(), faces=True, effects=effects, visibility="coco")


def pedestrian(backgrounds: Path | None = None) -> SceneConfig:
    """Pedestrian / surveillance-video-like, 320x240: 3-8 people (90 % walking) over a 10 m square, the main one
    0.15-0.4 of the image height, seen from 15-40 degrees above the horizon; groups overlapping in 30 % of
    the frames, someone cut by the border in 10 %; poles and boxes as street furniture; outfits; photo
    backdrops (a paved ground plane under 80 % of them) else procedural; daylight with shadows;
    surveillance codecs (heavy JPEG, motion blur, defocus, noise); COCO visibility.

    Statistics (320x240): box height / image height p10-p50-p90 0.11-0.18-0.28 (< 0.1: 6%, 0.1-0.25: 75%,
    0.25-0.5: 19%, 0.5-0.9: 0%, >= 0.9: 0%); truncated (a coco17 joint outside the image) 16%; 5.17 people
    per image; overlapping (box IoU >= 0.1) 50%; coco17 joints visible 67% / occluded 27% / outside 6%.
    """
    effects = ImageEffects(vignette_prob=0.2, blur_prob=0.5, blur_sigma=(0.4, 1.2), motion_blur_prob=0.4,
                           motion_blur_length=(2.0, 6.0), exposure_prob=0.7, noise_prob=0.9,
                           noise_std=(0.01, 0.035), jpeg_prob=0.95, jpeg_quality=(20, 60))
    return SceneConfig(
        size=(320, 240), people=(3, 8), shots=(1.0, 0.0, 0.0), scale=(0.15, 0.4), truncation=0.1, crowd=0.3,
        spread=5000.0, camera_elevation=(15.0, 40.0), walking=0.9, occluder_prob=0.3, backgrounds=backgrounds,
        background_prob=1.0, photo_ground=0.8, ambient=(0.3, 0.55), diffuse=(0.45, 0.9),
        light_elevation=(15.0, 75.0), colour_temperature=(4500.0, 7500.0), shadows=True, clothing=_outfits(), faces=True,
        effects=effects, visibility="coco")


@dataclass(frozen=True)
class Preset:
    """A named scene preset: ``description`` (one line), ``build(backgrounds) -> SceneConfig``, and whether it
    uses photo ``backgrounds``. The build function's docstring holds the measured statistics."""

    name: str
    description: str
    build: Callable[[Path | None], SceneConfig]
    photos: bool


PRESETS: dict[str, Preset] = {
    "legacy": Preset("legacy", "today's default SceneConfig(): whole bodies, small/medium scale", legacy, False),
    "coco": Preset("coco", "COCO-like: far people to portraits, truncation, crowds, photos, camera effects", coco,
                   True),
    "h36m": Preset("h36m", "Human3.6M-like studio: one person, calibrated 4-camera ring, no close-ups", h36m, False),
    "pedestrian": Preset("pedestrian", "street video: walking people, small, elevated camera, surveillance codecs",
                         pedestrian, True),
}

_SAID: set[str] = set()


def check_preset(name: str, key: str | None = "preset") -> Preset:
    """The preset called ``name``; otherwise a :class:`ConfigError` naming ``key`` (when given), the closest name
    and every preset."""
    if name in PRESETS:
        return PRESETS[name]
    close = difflib.get_close_matches(str(name), list(PRESETS), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    where = f"{key}: " if key else ""
    raise ConfigError(f"{where}unknown synthetic preset {name!r}{hint}; presets: {', '.join(PRESETS)}")


def scene_config(preset: str, backgrounds: str | Path | None = None, **overrides) -> SceneConfig:
    """The :class:`SceneConfig` of ``preset`` (:data:`PRESETS`), with photo backdrops from the ``backgrounds``
    folder where the preset uses them and ``overrides`` replacing fields (``size=(192, 256)``).

    A preset that uses photos without a folder falls back to procedural backdrops and says so (once per preset
    and process). Unknown presets or fields are :class:`ConfigError`; a missing folder too.
    """
    p = check_preset(preset)
    folder = None
    if backgrounds is not None:
        folder = Path(backgrounds)
        if not folder.is_dir():
            raise ConfigError(f"backgrounds: folder not found: {folder}")
    if p.photos and folder is None and p.name not in _SAID:
        _SAID.add(p.name)
        warnings.warn(f"synthetic preset {p.name!r}: no background folder given, procedural backdrops only "
                      f"(collect photos with `humanvision synth backgrounds --out data/backgrounds`)", stacklevel=2)
    if folder is not None and not p.photos and p.name != "legacy" and p.name + ":ignored" not in _SAID:
        _SAID.add(p.name + ":ignored")
        warnings.warn(f"synthetic preset {p.name!r} uses no photo backdrops; {folder} is not used", stacklevel=2)
    cfg = p.build(folder if (p.photos or p.name == "legacy") else None)
    known = {f.name for f in fields(SceneConfig)}
    unknown = [k for k in overrides if k not in known]
    if unknown:
        close = difflib.get_close_matches(unknown[0], sorted(known), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ConfigError(f"unknown SceneConfig field {unknown[0]!r}{hint}")
    return replace(cfg, **overrides) if overrides else cfg


# --------------------------------------------------------------------------------------------- statistics
_BINS = (0.0, 0.1, 0.25, 0.5, 0.9, np.inf)


def preset_statistics(cfg: SceneConfig, n: int = 200, seed: int = 0) -> dict:
    """What ``n`` frames of ``cfg`` contain, per view and per person annotated as the COCO writer does (some
    visible mask pixels and at least one coco17 joint in the image). Rendered without colour (labels and geometry
    are the same).

    Returns ``frames``, ``views``, ``people`` (annotated person-views), ``people_per_image`` (mean and the
    fraction of views with 0, 1, 2, 3, 4, 5+ people), ``box_height`` (visible-mask box height / image height:
    quantiles p10 p25 p50 p75 p90 and the fractions in bins < 0.1, 0.1-0.25, 0.25-0.5, 0.5-0.9, >= 0.9),
    ``truncated`` (fraction with a coco17 joint outside the image), ``close_ups`` (box height >= 0.9 image
    height), ``overlapping`` (box IoU >= 0.1 with another annotated person) and ``joints`` (fractions of coco17
    joints visible (2), occluded (1), outside (0)).
    """
    sel = np.array([JOINTS.index(j) for j in get_skeleton("coco17").joints])
    quick = replace(cfg, rgb=False)
    W, H = cfg.size
    counts, heights, truncated, overlapping = [], [], [], []
    vis_counts = np.zeros(3, dtype=np.int64)
    views = 0
    for i in range(int(n)):
        frame = generate_frame(quick, seed, i)
        for view in frame.views:
            views += 1
            people = [p for p in range(view.keypoints_2d.shape[0])
                      if view.areas[p] >= 1 and (view.visibility[p, sel] > 0).any()]
            counts.append(len(people))
            boxes = view.boxes[people]
            for k, p in enumerate(people):
                v = view.visibility[p, sel]
                vis_counts += np.bincount(v, minlength=3)
                heights.append(view.boxes[p, 3] / H)
                truncated.append(bool((v == 0).any()))
                others = np.delete(boxes, k, axis=0)
                overlapping.append(bool(len(others) and (_iou(boxes[k], others) >= 0.1).any()))
    heights_a = np.asarray(heights, dtype=np.float64)
    counts_a = np.asarray(counts)
    hist_people = [float(np.mean(counts_a == k)) for k in range(5)] + [float(np.mean(counts_a >= 5))]
    hist_height = np.histogram(heights_a, bins=_BINS)[0] / max(len(heights_a), 1)
    q = np.percentile(heights_a, [10, 25, 50, 75, 90]) if len(heights_a) else np.zeros(5)
    total = max(int(vis_counts.sum()), 1)
    return {
        "frames": int(n), "views": views, "size": [int(W), int(H)], "people": len(heights),
        "people_per_image": {"mean": float(counts_a.mean()) if views else 0.0,
                             "fraction_0_1_2_3_4_5plus": [round(x, 4) for x in hist_people]},
        "box_height": {"p10_p25_p50_p75_p90": [round(float(x), 4) for x in q],
                       "bins": ["<0.1", "0.1-0.25", "0.25-0.5", "0.5-0.9", ">=0.9"],
                       "fractions": [round(float(x), 4) for x in hist_height]},
        "truncated": float(np.mean(truncated)) if truncated else 0.0,
        "close_ups": float(np.mean(heights_a >= 0.9)) if len(heights_a) else 0.0,
        "overlapping": float(np.mean(overlapping)) if overlapping else 0.0,
        "joints": {"visible": float(vis_counts[2] / total), "occluded": float(vis_counts[1] / total),
                   "outside": float(vis_counts[0] / total)},
    }


def _iou(box: np.ndarray, others: np.ndarray) -> np.ndarray:
    """IoU of one xywh box with each of ``others`` (M, 4)."""
    x0 = np.maximum(box[0], others[:, 0])
    y0 = np.maximum(box[1], others[:, 1])
    x1 = np.minimum(box[0] + box[2], others[:, 0] + others[:, 2])
    y1 = np.minimum(box[1] + box[3], others[:, 1] + others[:, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    return inter / np.maximum(box[2] * box[3] + others[:, 2] * others[:, 3] - inter, 1e-9)
