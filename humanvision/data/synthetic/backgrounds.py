"""Real photographic backgrounds for synthetic frames: a bank of person-free photos and a collector for them.

The synthetic world's procedural backdrops (:func:`~humanvision.data.synthetic.render.procedural_background`) are
smooth colour fields with rectangles; real photos behind people have texture, clutter, edges and perspective.
:class:`BackgroundBank` decodes a folder of photos once and samples backdrops from it (random photo, crop and zoom,
flip, colour jitter, depth-of-field blur), in the same format as the procedural ones: ``(H, W, 3)`` float32 RGB in
``[0, 1]``.

:func:`collect_backgrounds` gathers the photographs that offline packages ship (scikit-image's ``skimage/data``,
matplotlib's ``mpl-data/sample_data``, the Debian ``opencv-doc`` package's example data) into one folder, with a
``SOURCES.txt`` naming where each file came from. Only photographs that were looked at and show **no person and no
face** are copied (:data:`PACKAGE_PHOTOS`); everything else those packages ship is listed with the reason in
:data:`EXCLUDED`. The images the project validates against real photos (skimage ``astronaut`` and ``camera``,
matplotlib ``grace_hopper``, opencv-doc ``messi5``, ``basketball1``/``2`` and the frames of ``vtest.avi``) are
refused by name *and* by content (a 64-bit difference hash, robust to resizing, re-encoding and mirroring), by the
collector and by the bank, wherever they come from: training on them would leak the validation set.

    apt-get download opencv-doc && dpkg -x opencv-doc_*.deb /tmp/opencv-doc
    python -c "from humanvision.data.synthetic.backgrounds import collect_backgrounds as c; \\
               print(c('data/backgrounds', opencv_doc='/tmp/opencv-doc'))"
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import re
import shutil
import warnings
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from humanvision.data.io import read_image
from humanvision.errors import DataError

__all__ = [
    "DEFAULT_BACKGROUNDS",
    "EXCLUDED",
    "IMAGE_SUFFIXES",
    "PACKAGE_PHOTOS",
    "VALIDATION_IMAGES",
    "BackgroundBank",
    "collect_backgrounds",
    "excluded_reason",
    "validation_match",
]

#: conventional location of the collected backgrounds (relative to the working directory)
DEFAULT_BACKGROUNDS = Path("data/backgrounds")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
_MIN_SIDE = 64

#: images the project validates on (real photos of people): never training material
VALIDATION_IMAGES: tuple[str, ...] = ("astronaut", "camera", "grace_hopper", "messi5", "basketball1", "basketball2",
                                      "vtest")

#: 64-bit difference hashes (:func:`_dhash`) of the validation images; vtest: every 100th frame of the video
_VALIDATION_HASHES: dict[str, tuple[int, ...]] = {
    "astronaut": (0xDD8DBD0D9D3295A6,),
    "camera": (0x00183E7FEE746CEA,),
    "grace_hopper": (0x719B7254FB335454,),
    "messi5": (0xCA5A5678CCCCEACE,),
    "basketball1": (0xF8FCFCF9F8B3F86E,),
    "basketball2": (0xFCFCDCFDF8B3F06E,),
    "vtest": (0x26FAD8D0F9FEF7B8, 0x24FAC8E8F8FEF7B8, 0x26FAF4F0F8FEF7B8, 0x26FAB8D0F8FEF7B8, 0x26FAD8D0F8FEF7B8,
              0x24FADCF0F9FEF7B8, 0x24FAB8F0F5F5F798, 0x24F2AAF878FEF7B8),
}
# every frame of vtest.avi is within 10 bits of one of its hashes; the nearest other packaged image is 12 away
_HASH_BITS = 10

#: the photographs without people or faces that each package ships (file names inside its image folder),
#: reviewed one by one
PACKAGE_PHOTOS: dict[str, tuple[str, ...]] = {
    "scikit-image": ("brick.png", "clock_motion.png", "coffee.png", "grass.png", "gravel.png",
                     "motorcycle_left.png", "rocket.jpg"),
    "matplotlib": (),  # grace_hopper is a validation image; the rest are a logo and clip art
    "opencv-doc": ("aero1.jpg", "aero3.jpg", "aloeL.jpg", "apple.jpg", "blox.jpg", "board.jpg", "box.png",
                   "box_in_scene.png", "building.jpg", "butterfly.jpg", "ela_original.jpg", "fruits.jpg", "home.jpg",
                   "leuvenA.jpg", "leuvenB.jpg", "licenseplate_motion.jpg", "orange.jpg", "rubberwhale1.png",
                   "smarties.png", "squirrel_cls.jpg", "stuff.jpg"),
}

_VALIDATION = "validation image of the project (a real photo of people)"
_PERSON = "shows a person"
_FACE = "shows a face"
_NOT_PHOTO = "not a photograph"
_SCIENCE = "scientific imagery (microscopy, medical, astronomy), not a scene"
_DUPLICATE = "near-duplicate of an included photo (stereo / flow pair)"

#: every other image file of those packages (lower-case stem -> reason), and classic face images
EXCLUDED: dict[str, str] = {
    # validation images
    "astronaut": _VALIDATION, "camera": _VALIDATION, "grace_hopper": _VALIDATION, "messi5": _VALIDATION,
    "basketball1": _VALIDATION, "basketball2": _VALIDATION, "vtest": _VALIDATION + " (video: every frame)",
    # people and faces
    **{f"left{i:02d}": _PERSON + " (holding a calibration board)" for i in (1, 2, 3, 4, 5, 6, 7, 8, 9, 11, 12, 13, 14)},
    **{f"right{i:02d}": _PERSON + " (holding a calibration board)" for i in (1, 2, 3, 4, 5, 6, 7, 8, 9, 11, 12, 13,
                                                                                14)},
    "lena": _FACE + " (portrait)", "lenna": _FACE + " (portrait)", "lfw_subset": _FACE + " (face crops)",
    "no_time_for_that_tiny": _PERSON + "; tiny (14x25)", "megamind": _FACE + " (cartoon character, video)",
    "megamind_bugy": _FACE + " (cartoon character, video)",
    "baboon": _FACE + " (mandrill close-up)", "chelsea": _FACE + " (cat close-up)",
    "chicky_512": _FACE + " (dog close-up)", "coins": _FACE + " (portrait reliefs on coins)",
    "graf1": _FACE + " (graffiti of a cartoon figure)", "graf3": _FACE + " (graffiti of a cartoon figure)",
    "left": _FACE + " (book cover with a drawn face)", "right": _FACE + " (book cover with a drawn face)",
    "blender_suzanne1": _FACE + " (rendered monkey head)", "blender_suzanne2": _FACE + " (rendered monkey head)",
    "pic1": _FACE + " (head silhouette); " + _NOT_PHOTO, "templ": _FACE + " (head silhouette)",
    "tmpl": _FACE + " (head silhouette)", "ml": _NOT_PHOTO + " (cartoon robot)",
    # not photographs
    "happyfish": _NOT_PHOTO + " (cartoon)", "linuxlogo": _NOT_PHOTO + " (logo)", "windowslogo": _NOT_PHOTO + " (logo)",
    "opencv-logo": _NOT_PHOTO + " (logo)", "opencv-logo-white": _NOT_PHOTO + " (logo)", "logo": _NOT_PHOTO + " (logo)",
    "logo2": _NOT_PHOTO + " (logo)", "minduka_present_blue_pack": _NOT_PHOTO + " (clip art)",
    "aloegt": _NOT_PHOTO + " (disparity map)", "cards": _NOT_PHOTO + " (rendered)",
    "chessboard": _NOT_PHOTO + " (checkerboard)", "chessboard_gray": _NOT_PHOTO + " (checkerboard)",
    "chessboard_rgb": _NOT_PHOTO + " (checkerboard)", "detect_blob": _NOT_PHOTO + " (test pattern)",
    "digits": _NOT_PHOTO + " (digit sheet)", "ellipses": _NOT_PHOTO + " (test pattern)",
    "gradient": _NOT_PHOTO + " (test pattern)", "imagetextn": _NOT_PHOTO + " (text page)",
    "imagetextr": _NOT_PHOTO + " (text page)", "mask": _NOT_PHOTO + " (mask)", "notes": _NOT_PHOTO + " (sheet music)",
    "pca_test1": _NOT_PHOTO + " (silhouettes on a light box)", "pic2": _NOT_PHOTO + " (test pattern)",
    "pic3": _NOT_PHOTO + " (test pattern)", "pic4": _NOT_PHOTO + " (test pattern)",
    "pic5": _NOT_PHOTO + " (test pattern)", "pic6": _NOT_PHOTO + " (test pattern)",
    "sudoku": _NOT_PHOTO + " (printed puzzle)", "text_defocus": _NOT_PHOTO + " (text page)",
    "text_motion": _NOT_PHOTO + " (text page)", "page": _NOT_PHOTO + " (text page)", "text": _NOT_PHOTO + " (text)",
    "color": _NOT_PHOTO + " (colour wheel)", "horse": _NOT_PHOTO + " (silhouette)",
    "phantom": _NOT_PHOTO + " (test phantom)", "starry_night": _NOT_PHOTO + " (painting)",
    # scientific imagery
    "cell": _SCIENCE, "ihc": _SCIENCE, "microaneurysms": _SCIENCE, "retina": _SCIENCE, "moon": _SCIENCE,
    "hubble_deep_field": _SCIENCE,
    # near-duplicates
    "aloer": _DUPLICATE, "rubberwhale2": _DUPLICATE, "motorcycle_right": _DUPLICATE,
    "ela_modified": "a tampered copy of ela_original",
    # not image files, listed for completeness
    "tree": "video (not an image)", "multipage": _NOT_PHOTO + " (multi-page TIFF test file)",
    "multipage_rgb": _NOT_PHOTO + " (multi-page TIFF test file)",
}
# name families refused wherever they come from (frames of the validation video, renamed copies of the classics)
_EXCLUDED_FAMILIES = (
    (re.compile(r"^(astronaut|grace_?hopper|messi\d*|basketball\d*)([_\-. ].*)?$"), _VALIDATION),
    (re.compile(r"^vtest.*"), _VALIDATION + " (vtest.avi frame)"),
    (re.compile(r"^lenn?a([_\-. ].*)?$"), _FACE + " (portrait)"),
)
_SOURCE_PREFIX = re.compile(r"^(scikit-image|skimage|matplotlib|opencv-doc|opencv)_")


def _dhash(rgb: np.ndarray) -> int:
    """64-bit difference hash of an image: signs of horizontal differences of its 9x8 grey thumbnail."""
    grey = cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2GRAY) if rgb.ndim == 3 else rgb
    small = cv2.resize(grey.astype(np.float32), (9, 8), interpolation=cv2.INTER_AREA)
    bits = (small[:, 1:] > small[:, :-1]).ravel()
    return int(np.packbits(bits).view(">u8")[0])


def validation_match(rgb: np.ndarray) -> str | None:
    """The name of the validation image ``rgb`` (``(H, W, 3)`` uint8 RGB) is a copy of (resized, re-encoded or
    mirrored), or None."""
    for h in (_dhash(rgb), _dhash(rgb[:, ::-1])):
        for name, refs in _VALIDATION_HASHES.items():
            if any((h ^ r).bit_count() <= _HASH_BITS for r in refs):
                return name
    return None


def excluded_reason(name: str) -> str | None:
    """Why a file of this name is never a background (see :data:`EXCLUDED`), or None. Case-insensitive; the
    source prefix :func:`collect_backgrounds` adds (``opencv-doc_``, ``scikit-image_``, ...) is ignored."""
    stem = Path(name).stem.lower()
    for s in (stem, _SOURCE_PREFIX.sub("", stem)):
        if s in EXCLUDED:
            return EXCLUDED[s]
        for pattern, reason in _EXCLUDED_FAMILIES:
            if pattern.match(s):
                return reason
    return None


def _image_files(folder: Path) -> list[Path]:
    """Image files under ``folder`` (recursive, sorted, hidden files skipped)."""
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
                  and not any(part.startswith(".") for part in p.relative_to(folder).parts))


# --------------------------------------------------------------------------------------------- the bank
class BackgroundBank:
    """Photos decoded once and kept in memory, to sample backdrops from.

    Args:
        sources: a folder (scanned recursively for ``.jpg/.jpeg/.png/.bmp/.webp``, sorted), an image file, or a
            list of them.
        max_side: images are downscaled (area interpolation) so that their longer side is at most this.
        zoom: ``(min, max)`` zoom of a sample's crop relative to the largest crop of the output's aspect that fits
            the photo (log-uniform).
        jitter: strength of the colour jitter (0: none; 1: brightness and contrast +-25 %, saturation +-30 %,
            hue +-18 degrees, gamma 0.82-1.22).
        blur_prob: probability of a slight depth-of-field blur (sigma 0.5-2 px at 256 px).

    Files that cannot be decoded, are smaller than 64 px or are copies of a validation image are skipped and listed
    in :attr:`skipped` as ``(path, reason)``, with one warning naming them. No usable image at all, or a source that
    does not exist, is a :class:`~humanvision.errors.DataError`. Images are held as uint8 (a quarter of the memory
    of float32); :meth:`sample` returns float32. The bank pickles (for dataset writers' worker processes).
    """

    def __init__(self, sources: str | Path | Sequence[str | Path], max_side: int = 1024, *,
                 zoom: tuple[float, float] = (1.0, 3.0), jitter: float = 1.0, blur_prob: float = 0.25) -> None:
        srcs = [Path(sources)] if isinstance(sources, (str, Path)) else [Path(s) for s in sources]
        if not srcs:
            raise DataError("no background source given", field="sources")
        if int(max_side) < _MIN_SIDE:
            raise DataError(f"max_side must be >= {_MIN_SIDE}, got {max_side}", field="max_side")
        if not (1.0 <= zoom[0] <= zoom[1]):
            raise DataError(f"zoom must be (min, max) with 1 <= min <= max, got {tuple(zoom)}", field="zoom")
        self.sources = [str(s) for s in srcs]
        self.max_side = int(max_side)
        self.zoom = (float(zoom[0]), float(zoom[1]))
        self.jitter = float(jitter)
        self.blur_prob = float(blur_prob)
        self.images: list[np.ndarray] = []
        self.paths: list[str] = []
        self.skipped: list[tuple[str, str]] = []
        files: list[Path] = []
        for s in srcs:
            if s.is_dir():
                files += _image_files(s)
            elif s.is_file():
                files.append(s)
            else:
                raise DataError("background source not found", file=str(s))
        for f in files:
            self._add(f)
        if self.skipped:
            listing = "; ".join(f"{p} ({r})" for p, r in self.skipped)
            warnings.warn(f"background bank: skipped {len(self.skipped)} file(s): {listing}", stacklevel=2)
        if not self.images:
            raise DataError(f"no usable background image ({len(files)} image file(s) found, "
                            f"{len(self.skipped)} skipped)", file=", ".join(self.sources))

    def _add(self, path: Path) -> None:
        try:
            img = read_image(path)
        except DataError as e:
            self.skipped.append((str(path), "cannot decode the image (corrupt, truncated or not an image)"
                                 if "decode" in str(e) else str(e)))
            return
        h, w = img.shape[:2]
        if min(h, w) < _MIN_SIDE:
            self.skipped.append((str(path), f"too small ({w}x{h}; at least {_MIN_SIDE} px a side)"))
            return
        match = validation_match(img)
        if match is not None:
            self.skipped.append((str(path), f"a copy of the validation image {match!r}"))
            return
        s = self.max_side / max(h, w)
        if s < 1.0:
            img = cv2.resize(img, (max(round(w * s), 1), max(round(h * s), 1)), interpolation=cv2.INTER_AREA)
        self.images.append(np.ascontiguousarray(img))
        self.paths.append(str(path))

    def __len__(self) -> int:
        return len(self.images)

    def __repr__(self) -> str:
        return f"BackgroundBank({len(self)} images from {self.sources}, {len(self.skipped)} skipped)"

    def sample(self, rng: np.random.Generator, width: int, height: int) -> np.ndarray:
        """A backdrop ``(height, width, 3)`` float32 RGB in [0, 1], like
        :func:`~humanvision.data.synthetic.render.procedural_background` (deterministic given ``rng``).

        A random photo; a crop of the output's aspect at a random zoom and position; a horizontal flip half of
        the time; colour jitter (brightness, contrast, saturation, hue, gamma); sometimes a slight blur.
        """
        W, H = int(width), int(height)
        img = self.images[int(rng.integers(len(self.images)))]
        h, w = img.shape[:2]
        u = rng.uniform(size=11)  # a fixed number of draws per sample
        aspect = W / H
        cw, ch = (h * aspect, float(h)) if w / h > aspect else (float(w), w / aspect)
        zoom = float(np.exp(np.log(self.zoom[0]) + u[0] * (np.log(self.zoom[1]) - np.log(self.zoom[0]))))
        cw, ch = max(cw / zoom, 1.0), max(ch / zoom, 1.0)
        x0, y0 = u[1] * (w - cw), u[2] * (h - ch)
        xa, ya = int(np.floor(x0)), int(np.floor(y0))
        xb, yb = max(min(int(np.ceil(x0 + cw)), w), xa + 1), max(min(int(np.ceil(y0 + ch)), h), ya + 1)
        crop = img[ya:yb, xa:xb]
        shrink = crop.shape[1] > W or crop.shape[0] > H
        out = cv2.resize(crop, (W, H), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
        if u[3] < 0.5:
            out = out[:, ::-1]
        out = out.astype(np.float32) * np.float32(1.0 / 255.0)

        j = self.jitter
        if j > 0:
            bright = 1.0 + j * (u[4] - 0.5) * 0.5
            contrast = 1.0 + j * (u[5] - 0.5) * 0.5
            sat = 1.0 + j * (u[6] - 0.5) * 0.6
            hue = j * (u[7] - 0.5) * 0.2 * np.pi
            mean = float(np.asarray(cv2.mean(out)[:3]) @ _LUMA)
            affine = np.empty((3, 4))  # colour matrix and offset, applied in one cv2.transform
            affine[:, :3] = bright * contrast * _colour_matrix(sat, hue)
            affine[:, 3] = bright * (1.0 - contrast) * mean
            out = cv2.transform(out, affine)
            np.clip(out, 0.0, 1.0, out=out)
            gamma = float(np.exp(j * (u[8] - 0.5) * 0.4))
            if abs(gamma - 1.0) > 1e-3:
                out = cv2.pow(out, gamma)
        if u[9] < self.blur_prob:
            sigma = (0.5 + 1.5 * u[10]) * min(W, H) / 256.0
            out = cv2.GaussianBlur(out, (0, 0), sigmaX=sigma, sigmaY=sigma, borderType=cv2.BORDER_REFLECT)
        return np.ascontiguousarray(np.clip(out, 0.0, 1.0), dtype=np.float32)


_LUMA = np.array([0.299, 0.587, 0.114])
_RGB2YIQ = np.array([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])


def _colour_matrix(saturation: float, hue: float) -> np.ndarray:
    """RGB -> RGB matrix scaling the chroma (YIQ's I, Q) by ``saturation`` and rotating it by ``hue`` radians."""
    c, s = np.cos(hue), np.sin(hue)
    chroma = np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]]) * np.array([1.0, saturation, saturation])[:, None]
    return np.linalg.inv(_RGB2YIQ) @ chroma @ _RGB2YIQ


# --------------------------------------------------------------------------------------------- the collector
def _package_dir(package: str, *parts: str) -> Path | None:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    d = Path(next(iter(spec.submodule_search_locations))).joinpath(*parts)
    return d if d.is_dir() else None


def _version(dist: str) -> str:
    try:
        return f"{dist} {importlib.metadata.version(dist)}"
    except importlib.metadata.PackageNotFoundError:
        return dist


def _opencv_doc_dir(path: Path) -> Path:
    """The example-data folder of an extracted ``opencv-doc`` package (the extraction root, or the folder)."""
    inner = path / "usr" / "share" / "doc" / "opencv-doc" / "examples" / "data"
    if inner.is_dir():
        return inner
    if path.is_dir():
        return path
    raise DataError("opencv-doc folder not found (extract the package with `apt-get download opencv-doc && "
                    "dpkg -x opencv-doc_*.deb DIR` and pass DIR)", file=str(path))


def collect_backgrounds(out_dir: str | Path, opencv_doc: Path | None = None, *, extra: Sequence[str | Path] = (),
                        skimage_data: Path | None = None, matplotlib_data: Path | None = None) -> dict:
    """Copy person-free photographs that offline packages ship into ``out_dir`` (see the module docstring).

    Args:
        out_dir: destination folder (created); files are named ``{source}_{name}`` and listed in
            ``SOURCES.txt`` (file, source package, original path).
        opencv_doc: an extracted Debian ``opencv-doc`` package (the ``dpkg -x`` root or its
            ``usr/share/doc/opencv-doc/examples/data`` folder); None to skip it.
        extra: more folders of the user's own photos; every image in them is copied except those
            :func:`excluded_reason` names or :func:`validation_match` recognises.
        skimage_data, matplotlib_data: the packages' image folders (default: found in the installed packages;
            scikit-image's wheel holds only part of ``skimage.data``, the rest is downloaded on first use and is
            not used here).

    From the packages only the reviewed files of :data:`PACKAGE_PHOTOS` are copied; the others are reported as
    refused (with the :data:`EXCLUDED` reason or "not reviewed"). Returns a summary: ``copied`` (count),
    ``by_source`` (count per source), ``files`` (new name -> original path), ``refused`` (``[path, reason]``),
    ``missing`` (reviewed files a package did not have), ``sources`` (folder used per source, or None) and
    ``out_dir``.
    """
    out = Path(out_dir)
    roots: list[tuple[str, Path | None, tuple[str, ...] | None, str]] = []
    sk = Path(skimage_data) if skimage_data is not None else _package_dir("skimage", "data")
    roots.append(("scikit-image", sk, PACKAGE_PHOTOS["scikit-image"], _version("scikit-image")))
    mpl = Path(matplotlib_data) if matplotlib_data is not None else _package_dir("matplotlib", "mpl-data",
                                                                                  "sample_data")
    roots.append(("matplotlib", mpl, PACKAGE_PHOTOS["matplotlib"], _version("matplotlib")))
    if opencv_doc is not None:
        roots.append(("opencv-doc", _opencv_doc_dir(Path(opencv_doc)), PACKAGE_PHOTOS["opencv-doc"],
                      "Debian opencv-doc"))
    for i, e in enumerate(extra):
        p = Path(e)
        if not p.is_dir():
            raise DataError("extra background folder not found", file=str(p))
        roots.append((f"extra{i + 1}" if len(extra) > 1 else "extra", p, None, f"user folder {p}"))

    files: dict[str, str] = {}
    refused: list[list[str]] = []
    missing: list[str] = []
    by_source: dict[str, int] = {}
    lines = ["# file\tsource\toriginal path"]
    out.mkdir(parents=True, exist_ok=True)
    for source, folder, reviewed, label in roots:
        by_source[source] = 0
        if folder is None:
            continue
        found = _image_files(folder) if reviewed is None else sorted(
            p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        if reviewed is not None:
            names = {p.name for p in found}
            missing += [f"{source}: {n}" for n in reviewed if n not in names]
        for p in found:
            reason = excluded_reason(p.name)
            if reason is None and reviewed is not None and p.name not in reviewed:
                reason = "not reviewed (not in PACKAGE_PHOTOS)"
            img = None
            if reason is None:
                try:
                    img = read_image(p)
                except DataError as err:
                    reason = str(err)
            if img is not None:
                match = validation_match(img)
                if match is not None:
                    reason = f"a copy of the validation image {match!r}"
                elif min(img.shape[:2]) < _MIN_SIDE:
                    reason = f"too small ({img.shape[1]}x{img.shape[0]})"
            if reason is not None:
                refused.append([str(p), reason])
                continue
            rel = p.relative_to(folder).as_posix().replace("/", "_")
            name = f"{source}_{rel}"
            shutil.copyfile(p, out / name)
            files[name] = str(p)
            by_source[source] += 1
            lines.append(f"{name}\t{label}\t{p}")
    (out / "SOURCES.txt").write_text("\n".join(lines) + "\n")
    return {"out_dir": str(out), "copied": len(files), "by_source": by_source, "files": files, "refused": refused,
            "missing": missing, "sources": {s: (str(f) if f is not None else None) for s, f, _, _ in roots}}
