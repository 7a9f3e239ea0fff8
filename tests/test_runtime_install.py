"""The torch-free runtime installs and runs in a fresh virtual environment (issue 15, claim 4).

The package's core dependencies name torch (training needs it), so ``pip install "humanvision[runtime]"`` would
pull torch in. The documented route for a machine without torch is

    pip install --no-deps humanvision                              # the package alone
    pip install numpy onnxruntime opencv-python-headless           # the runtime extra's three packages

which this test follows, in a new ``python -m venv`` (no system site packages), from a copy of the package's
sources (``pyproject.toml``, ``README.md``, ``humanvision/``: what an sdist holds), a non-editable build as a
user gets it. A script in that venv then checks that torch, torchvision and timm cannot even be found, imports
:mod:`humanvision.runtime`, runs a tiny exported pose model and a tiny exported re-id model on a drawn image with
three boxes, asserts that no torch module was imported, and prints the keypoints and features as JSON; they must
equal the PyTorch path's in this environment (within 0.05 px, as in test_export.py; features within 1e-4).

pip needs PyPI (or a configured index) and uses its cache. Without network the test fails with pip's message;
set ``HUMANVISION_OFFLINE=1`` to skip it instead. About 30-60 s with a warm pip cache (see the report printed
with ``-s``).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import venv
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from test_export import make_method, scene, torch_path

from humanvision.export import export_onnx, export_person_onnx
from humanvision.methods.reid import person_transform
from humanvision.runtime import cut_box


def _tiny_reid():
    import torch

    from humanvision.methods.reid import ReIDMethod
    from humanvision.models.person_vit import ReIDViT

    torch.manual_seed(0)
    return ReIDMethod(ReIDViT(num_classes=4, img_size=(64, 32), embed_dim=192, depth=2, num_heads=3, bnneck=True)).eval()

REPO = Path(__file__).resolve().parents[1]
RUNTIME_DEPS = ["numpy>=2.0", "onnxruntime>=1.18", "opencv-python-headless>=4.8"]  # pyproject's `runtime` extra
FORBIDDEN = ("torch", "torchvision", "timm")

SCRIPT = """
import importlib.util, json, sys
missing = [m for m in {forbidden!r} if importlib.util.find_spec(m) is not None]
assert not missing, f"installed in the runtime venv: {{missing}}"
import numpy as np
import humanvision.runtime
from humanvision.runtime import PoseEstimator, ReIDEmbedder
kp, sc = PoseEstimator(sys.argv[1], flip_test=True)(np.load(sys.argv[2]), np.load(sys.argv[3]))
feats = ReIDEmbedder(sys.argv[4], normalize=False)(np.load(sys.argv[2]), np.load(sys.argv[3]))
loaded = sorted(m for m in sys.modules if m.split(".")[0] in {forbidden!r})
assert "torch" not in sys.modules and not loaded, loaded
print(json.dumps({{"kp": kp.tolist(), "sc": sc.tolist(), "reid": feats.tolist(),
                  "humanvision": humanvision.runtime.__file__}}))
"""


def _pip(python: Path, *args: str, timeout: float = 600) -> None:
    """``python -m pip install ...`` in the venv; a failure (no network, no index) fails the test clearly."""
    cmd = [str(python), "-m", "pip", "install", "--disable-pip-version-check", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    if proc.returncode != 0:
        pytest.fail(f"`{' '.join(cmd)}` failed (exit {proc.returncode}); this test needs pip to reach PyPI or a "
                    "configured index (set HUMANVISION_OFFLINE=1 to skip it on an offline machine):\n"
                    f"{(proc.stdout + proc.stderr)[-3000:]}", pytrace=False)


def _sources(dst: Path) -> Path:
    """The package's sources as an sdist holds them (no data/, runs/, build artefacts)."""
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, dst / name)
    shutil.copytree(REPO / "humanvision", dst / "humanvision",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info"))
    return dst


@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("HUMANVISION_OFFLINE") == "1", reason="HUMANVISION_OFFLINE=1: no pip installs")
def test_runtime_installs_and_runs_without_torch(tmp_path):
    t0 = time.perf_counter()
    method, transform = make_method("lateral_tiny", True, True)  # UDP + DARK, heatmaps rescaled to O(1)
    onnx_path = export_onnx(method, transform, tmp_path / "tiny.onnx", recipe="test").path
    image, boxes = scene(4)
    np.save(tmp_path / "image.npy", image)
    np.save(tmp_path / "boxes.npy", boxes)
    ref_kp, ref_sc, _ = torch_path(method, transform, image, boxes, True)
    reid_method = _tiny_reid()
    reid_path = export_person_onnx(reid_method, tmp_path / "reid.onnx", task="reid", size=(64, 32),
                                   interpolation="bicubic").path
    ref_feats = np.stack([reid_method.embed(person_transform(cut_box(image, b), (64, 32))[None])[0].numpy()
                          for b in boxes])

    t1 = time.perf_counter()
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True, system_site_packages=False, clear=True).create(env_dir)
    python = env_dir / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
    src = tmp_path / "src"
    src.mkdir()
    _pip(python, "--no-deps", str(_sources(src)))
    _pip(python, *RUNTIME_DEPS)
    t2 = time.perf_counter()

    (tmp_path / "run.py").write_text(SCRIPT.format(forbidden=FORBIDDEN))
    clean_env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    clean_env["OMP_NUM_THREADS"] = "1"
    proc = subprocess.run([str(python), str(tmp_path / "run.py"), str(onnx_path), str(tmp_path / "image.npy"),
                           str(tmp_path / "boxes.npy"), str(reid_path)], capture_output=True, text=True, timeout=300, check=False,
                          cwd=tmp_path, env=clean_env)  # cwd: not the repository, so only the venv's copy imports
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    assert Path(res["humanvision"]).resolve().is_relative_to(env_dir.resolve()), res["humanvision"]
    kp, sc = np.array(res["kp"]), np.array(res["sc"])
    assert kp.shape == (3, 17, 2) and sc.shape == (3, 17)
    assert np.abs(kp - ref_kp).max() <= 0.05, np.abs(kp - ref_kp).max()
    np.testing.assert_allclose(sc, ref_sc, rtol=1e-4, atol=1e-6)
    assert (sc > 0).mean() > 0.5 and np.ptp(kp[..., 0]) > 10  # real peaks, spread over the boxes
    np.testing.assert_allclose(np.array(res["reid"]), ref_feats, atol=1e-4, rtol=0)  # person-crop runtime too
    print(f"runtime install test: export + PyTorch path {t1 - t0:.1f} s, venv + pip {t2 - t1:.1f} s, "
          f"run {time.perf_counter() - t2:.1f} s")
