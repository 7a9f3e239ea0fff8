"""bf16 autocast of the volumetric method and ContextPose (humanvision.methods.volumetric / contextpose,
humanvision.models.v2v): the V2V convolutions on inputs smaller than their kernel run in float32 (oneDNN's bf16
Conv3d weight gradient is wrong there: the cause of a non-finite loss within a few steps of bf16 training), the 3D
soft-argmax and the coordinate grid stay float32 / float64 about the base point, and bf16 forward / backward agree
with float32 (pose3d.md §9: numerically sensitive parts in fp32)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from humanvision.config import load_config
from humanvision.geometry import Camera
from humanvision.geometry.volume import coord_volume
from humanvision.methods import contextpose as cp
from humanvision.methods import volumetric as vol
from humanvision.models.v2v import V2VConv3d, V2VModel

TINY = {"backbone": "simplebaseline_tiny", "input_size": 64, "volume_size": 32, "base": "gt"}
BF16 = {"device_type": "cpu", "dtype": torch.bfloat16}


def ring_proj(n: int, size: int = 64) -> np.ndarray:
    """``(n, 3, 4)`` cameras on a 4 m ring looking at (0, 0, 900) (z up, mm), ``size`` px crops."""
    angles = np.linspace(0, 2 * np.pi, n, endpoint=False) + 0.2
    return np.stack([Camera.look_at([4000 * np.cos(a), 4000 * np.sin(a), 1500.0], [0, 0, 900], focal=40.0,
                                    width=size, height=size).projection_matrix for a in angles])


def tiny_batch(b: int = 2, v: int = 3) -> dict:
    torch.manual_seed(1)
    gt = (torch.rand(b, 17, 3, dtype=torch.float64) * torch.tensor([600.0, 600, 1600]).double()
          + torch.tensor([-300.0, -300, 100]).double())
    return {"images": torch.randn(b, v, 3, 64, 64), "proj": torch.from_numpy(np.stack([ring_proj(v)] * b)),
            "view_mask": torch.ones(b, v, dtype=torch.bool), "keypoints_3d": gt,
            "keypoints_3d_valid": torch.ones(b, 17), "base_point": gt[:, 6] + torch.tensor([30.0, -20, 10]).double()}


def tiny_volumetric() -> vol.VolumetricTriangulation:
    torch.manual_seed(0)
    return vol.build_method(load_config({"model": TINY}, vol.VolumetricRecipe))


def tiny_contextpose() -> cp.ContextPose:
    torch.manual_seed(0)
    method = cp.build_method(load_config({"model": TINY}, cp.ContextPoseRecipe))
    g = torch.Generator().manual_seed(0)
    method.set_limb_statistics(torch.rand(16, generator=g) * 300 + 100, torch.rand(16, generator=g) * 20 + 5)
    return method


def forward_backward(method, batch: dict, bf16: bool, angle: torch.Tensor) -> tuple[dict, dict, dict]:
    """(predict output, loss terms, gradients) of one training-mode step at a fixed rotation."""
    method.train()
    method.zero_grad(set_to_none=True)
    with torch.autocast(**BF16, enabled=bf16):
        out = method.predict(batch["images"], batch["proj"], batch["base_point"], batch["view_mask"], angle=angle)
        gt = batch["keypoints_3d"]
        if isinstance(method, cp.ContextPose):
            terms = cp.contextpose_loss(out["keypoints_3d"], gt, out["volumes"], out["coord_volumes"],
                                        out["attention"], out["attention_coords"], ga_sigma=method.ga_sigma)
        else:
            mae = vol.mae_loss(out["keypoints_3d"] * 0.1, gt * 0.1)
            ce = vol.volumetric_ce_loss(out["volumes"], out["coord_volumes"], gt)
            terms = {"loss": mae + 0.01 * ce, "loss_mae": mae, "loss_ce": ce}
    terms["loss"].backward()
    grads = {n: p.grad.detach().double().clone() for n, p in method.named_parameters() if p.grad is not None}
    return out, {k: float(v.detach()) for k, v in terms.items()}, grads


def check_gradients(g16: dict, g32: dict) -> None:
    """bf16 gradients: the same set, finite, and bounded by the float32 ones (oneDNN's wrong bf16 weight
    gradient on 2³ levels gave values up to 1e36); near the output they also agree. (Deeper ones need not: at
    batch 2 the BatchNorms of the small levels make them ill-conditioned; a 1e-3 relative change of the input
    images moves the fp32 gradient of ``process_features`` by ~80%.)"""
    assert set(g16) == set(g32)
    scale = max(float(g.abs().max()) for g in g32.values())  # (biases before a BatchNorm have ~0 gradients)
    for name, g in g16.items():
        assert torch.isfinite(g).all(), name
        assert g.abs().max() <= 10 * g32[name].abs().max() + 0.1 * scale, name
    rel = (g16["volume_net.output_layer.weight"] - g32["volume_net.output_layer.weight"]).norm() \
        / g32["volume_net.output_layer.weight"].norm()
    assert rel < 0.1, float(rel)  # measured 0.02 (volumetric)


# ------------------------------------------------------------------------------ V2V convs below their kernel
def test_v2v_conv_on_inputs_smaller_than_its_kernel_runs_in_fp32_with_exact_weight_gradients():
    torch.manual_seed(0)
    conv = V2VConv3d(16, 16, 3, padding=1)
    plain = torch.nn.Conv3d(16, 16, 3, padding=1)
    plain.load_state_dict(conv.state_dict())
    for shape, fp32 in (((2, 16, 2, 2, 2), True), ((2, 16, 2, 6, 6), True), ((2, 16, 1, 1, 1), True),
                        ((2, 16, 4, 4, 4), False)):
        x = torch.randn(shape)
        conv.zero_grad()
        with torch.autocast(**BF16):
            y = conv(x.bfloat16())
        assert y.dtype == (torch.float32 if fp32 else torch.bfloat16), shape
        g = torch.randn(y.shape, dtype=torch.float64)
        y.backward(g.to(y.dtype))
        if fp32:  # the float32 path: the exact weight gradient of the bf16-rounded input
            ref = torch.nn.grad.conv3d_weight(x.bfloat16().double(), conv.weight.shape, g, padding=1)
            assert torch.allclose(conv.weight.grad.double(), ref, rtol=1e-4, atol=1e-4 * float(ref.abs().max()))
            assert torch.allclose(y.double(), F.conv3d(x.bfloat16().double(), conv.weight.double(),
                                                       conv.bias.double(), padding=1), atol=1e-4)
    # outside autocast it is nn.Conv3d
    x = torch.randn(2, 16, 2, 2, 2)
    assert torch.equal(conv(x), plain(x))
    # every V2V / ContextPose-V2V conv with a kernel > 1 is one (1x1 convs cannot be smaller than their input)
    for net in (V2VModel(32, 17), tiny_contextpose().volume_net):
        convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv3d) and max(m.kernel_size) > 1]
        assert convs and all(isinstance(m, V2VConv3d) for m in convs)


# ------------------------------------------------------------------------------------ the volumetric method
def test_volumetric_bf16_forward_backward_matches_fp32(monkeypatch):
    method, batch = tiny_volumetric(), tiny_batch()
    seen = []
    real = vol.soft_argmax_3d

    def spy(logits, beta, coords):
        seen.append((logits.dtype, coords.dtype, torch.is_autocast_enabled("cpu")))
        return real(logits, beta, coords)

    monkeypatch.setattr(vol, "soft_argmax_3d", spy)
    angle = torch.tensor([0.3, -1.2], dtype=torch.float64)
    o32, t32, g32 = forward_backward(method, batch, False, angle)
    o16, t16, g16 = forward_backward(method, batch, True, angle)
    # the soft-argmax: float32 logits on float32 coordinates relative to the base, autocast off; the grid float64
    assert seen == [(torch.float32, torch.float32, False)] * 2
    assert o16["keypoints_3d"].dtype == torch.float64 and o16["coord_volumes"].dtype == torch.float64
    assert o16["volumes"].dtype == torch.float32
    assert all(math.isfinite(v) for v in t16.values())
    assert t16["loss"] == pytest.approx(t32["loss"], rel=1e-3)
    # predictions: measured 1.5 mm mean, 3.7 mm max (bf16 activations through the V2V); a bf16 world grid alone
    # has 8-16 mm steps at 2-4 m
    d = (o16["keypoints_3d"] - o32["keypoints_3d"]).norm(dim=-1)
    assert d.mean() < 3.0 and d.max() < 8.0, (float(d.mean()), float(d.max()))
    check_gradients(g16, g32)


def shifted(batch: dict, t: torch.Tensor) -> dict:
    """The same scene with the world translated by ``t`` (mm): points + t, cameras P [[I, -t], [0, 1]]."""
    m = torch.eye(4, dtype=torch.float64)
    m[:3, 3] = -t
    return {**batch, "proj": batch["proj"] @ m, "keypoints_3d": batch["keypoints_3d"] + t,
            "base_point": batch["base_point"] + t}


def test_bf16_predictions_follow_a_translated_world_to_the_micrometre():
    """Everything geometric is float64, or float32 relative to the base point, so moving the world by 4-5 m changes
    the bf16 predictions by the shift only; a soft-argmax on a bf16 world grid would be off by millimetres."""
    method, batch = tiny_volumetric().eval(), tiny_batch()
    t = torch.tensor([4000.0, -3000.0, 5000.0], dtype=torch.float64)
    with torch.no_grad(), torch.autocast(**BF16):
        a = method.predict(batch["images"], batch["proj"], batch["base_point"], batch["view_mask"])
        b = method.predict(*(shifted(batch, t)[k] for k in ("images", "proj", "base_point", "view_mask")))
    err = (b["keypoints_3d"] - t - a["keypoints_3d"]).norm(dim=-1)
    assert err.max() < 0.05, float(err.max())
    # the control: the same probabilities on the bf16 world grid
    probs, coords = b["volumes"], b["coord_volumes"]
    exact = torch.einsum("bjn,bnc->bjc", probs.flatten(2).double(), coords.flatten(1, 3))
    naive = torch.einsum("bjn,bnc->bjc", probs.flatten(2).bfloat16().float(),
                         coords.flatten(1, 3).bfloat16().float()).double()
    assert (naive - exact).norm(dim=-1).mean() > 20 * 0.05


def test_soft_argmax_of_a_peaked_bf16_volume_far_from_the_origin_is_exact():
    method = tiny_volumetric()
    base = torch.tensor([[3141.59, -2718.28, 4000.5]], dtype=torch.float64)
    coords = coord_volume(base, 2500.0, 32, angle=torch.tensor([0.7], dtype=torch.float64))
    logits = torch.full((1, 2, 32, 32, 32), -1e4)
    logits[0, 0, 3, 17, 30] = 0.0  # one-hot
    logits[0, 1, 1, 2, 3] = math.log(0.25)  # two deltas, 0.25 / 0.75
    logits[0, 1, 20, 10, 5] = math.log(0.75)
    with torch.autocast(**BF16):
        x, p = method.soft_argmax(logits.bfloat16(), {"coords": coords, "base": base})
    assert x.dtype == torch.float64 and p.dtype == torch.float32
    assert (x[0, 0] - coords[0, 3, 17, 30]).norm() < 1e-3  # mm
    # the mixture of the bf16-rounded logits (0.25 / 0.75 become 0.2506 / 0.7494), computed in float64
    w = torch.softmax(logits[0, 1].bfloat16().double().flatten(), 0)
    want = torch.stack([coords[0, 3, 17, 30], w @ coords[0].reshape(-1, 3)])
    assert (x[0] - want).norm(dim=-1).max() < 1e-3
    naive, _ = vol.soft_argmax_3d(logits.bfloat16(), 1.0, coords.bfloat16())  # a bf16 world grid: 16-32 mm steps
    assert (naive[0].double() - want).norm(dim=-1).max() > 2.0


def test_bf16_training_steps_stay_finite(tmp_path):
    """The regression: bf16 training of the tiny volumetric recipe (a 32³ volume: V2V levels at 2³ and 1³) hit a
    non-finite loss by its third step; three steps through the engine now stay finite."""
    from humanvision.data.synthetic.writers import generate_h36m

    root = tmp_path / "h36m"
    generate_h36m(root, 4, size=(128, 128), views=2, subjects=1, actions=1, seed=3)
    recipe = load_config({
        "triangulation": "volumetric", "model": {**TINY, "base": "gt_noisy", "base_noise_mm": 20.0},
        "data": {"labels": str(root / "human36m-multiview-labels-GTbboxes.npy"), "root": str(root / "processed"),
                 "train_subjects": ["S1"], "val_subjects": [], "objects_per_epoch": 2, "cache_images": True},
        "train": {"epochs": 4, "batch_size": 2, "optimizer": "adam", "lr": 1e-3, "weight_decay": 0.0,
                  "progress": False, "tensorboard": False, "device": "cpu", "precision": "bf16",
                  "channels_last": False, "log_every": 1, "output_dir": str(tmp_path / "run")}}, vol.VolumetricRecipe)
    result = vol.run_training(recipe, quiet=True)
    assert result["step"] == 4 and result["precision"]["precision"] == "bf16"
    rows = [json.loads(line) for line in (tmp_path / "run/log.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in rows if r.get("kind") == "train"]
    assert len(losses) == 4 and all(math.isfinite(v) for v in losses)


# ----------------------------------------------------------------------------------------------- ContextPose
def test_contextpose_bf16_forward_backward_matches_fp32():
    method, batch = tiny_contextpose(), tiny_batch(2, 1)
    angle = torch.tensor([0.3, -1.2], dtype=torch.float64)
    o32, t32, g32 = forward_backward(method, batch, False, angle)
    o16, t16, g16 = forward_backward(method, batch, True, angle)
    assert o16["attention"].dtype == torch.float32 and o16["volumes"].dtype == torch.float32
    assert o16["keypoints_3d"].dtype == torch.float64 and o16["attention_coords"].dtype == torch.float64
    assert all(math.isfinite(v) for v in t16.values())
    # the attention (values ~1e-3) and its 1e6-weighted MSE (~5e-6): measured 2e-6 abs, 1e-5 relative
    assert (o16["attention"] - o32["attention"]).abs().max() < 1e-5
    torch.testing.assert_close(o16["attention"].sum(-1), torch.ones(2, 17), atol=1e-5, rtol=0)
    assert t16["loss_ga"] == pytest.approx(t32["loss_ga"], rel=1e-3)
    assert t16["loss"] == pytest.approx(t32["loss"], rel=1e-3)
    d = (o16["keypoints_3d"] - o32["keypoints_3d"]).norm(dim=-1)  # measured 0.03 mm max (N(0, 1e-3) init)
    assert d.max() < 1.0, float(d.max())
    check_gradients(g16, g32)
