"""HCMoCo losses and the CMC memory bank (pretraining.md §A.4.1-A.4.5): each loss equals a reference written here
with explicit loops over samples, locations and joints; the bank's momentum update equals a hand computation;
state_dict round trips; named errors; two gloo ranks end with the bank of one process that saw the whole batch.

Fixture: B=3, J=5, C=16; sample 1 has no depth (``true_depth`` 0, empty foreground). Dense maps are 8x8 where
the layout does not matter and non-square (6x8, 8x7) where a row/col mix-up must show.
"""

from __future__ import annotations

import io
import math

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from humanvision.errors import ConfigError, DataError
from humanvision.methods.hcmoco_losses import (
    CMCMemoryBank,
    dense_loss,
    hcmoco_loss,
    joint_loss,
    sample_dense_locations,
    sample_joint_features,
    structure_contrast_loss,
)

B, J, C, T = 3, 5, 16, 0.07
N, K = 12, 7
TRUE_DEPTH = torch.tensor([1, 0, 1])
PAIRS = ((1, 2), (2, 1), (2, 3), (3, 2), (1, 3), (3, 1))


def unit(x: torch.Tensor) -> torch.Tensor:
    return x / x.norm()


def global_feats(seed: int, batch: int = B) -> dict[int, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {m: F.normalize(torch.randn(batch, C, generator=g), dim=1) for m in (1, 2, 3)}


def make_bank(**kw) -> CMCMemoryBank:
    return CMCMemoryBank(N, feat_dim=C, num_negatives=K, **kw)


def dense_maps(h4: int, w4: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(B, C, h4, w4, generator=g), torch.randn(B, C, h4, w4, generator=g)


def joints_fixture(h4: int, w4: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(row, col) crop pixels in a (4 h4) x (4 w4) crop, two invisible joints at (0, 0), one invisible outside."""
    g = torch.Generator().manual_seed(3)
    rc = torch.rand(B, J, 2, generator=g) * torch.tensor([4.0 * h4, 4.0 * w4])
    vis = torch.ones(B, J, dtype=torch.long)
    vis[0, 1] = vis[2, 4] = vis[1, 0] = 0
    rc[0, 1] = rc[2, 4] = 0.0
    rc[1, 0] = torch.tensor([-5.0, 4.0 * w4 + 9])  # invisible and outside: clamped, as the original does
    return rc, vis


# ------------------------------------------------------------------------------------------ references
def ref_sample_terms(memory: dict[int, torch.Tensor], f: dict[int, torch.Tensor], idx: torch.Tensor,
                     has_depth: torch.Tensor) -> dict[str, float]:
    out = {}
    for a, b in PAIRS:
        total, count = 0.0, 0
        for s in range(len(idx)):
            if 2 in (a, b) and not has_depth[s]:
                continue
            logits = [float(memory[b][int(idx[s, j])].double() @ f[a][s].double()) / T for j in range(idx.shape[1])]
            total += math.log(sum(math.exp(v) for v in logits)) - logits[0]
            count += 1
        out[f"sample_{a}{b}"] = total / count if count else 0.0
    return out


def ref_update(memory: dict[int, torch.Tensor], f: dict[int, torch.Tensor], index: torch.Tensor) -> None:
    """memory[y] <- normalize(0.5 memory_before[y] + 0.5 f); later duplicates overwrite earlier ones."""
    before = {m: memory[m].clone() for m in memory}
    for s, y in enumerate(index.tolist()):
        for m, rows in memory.items():
            rows[y] = unit(0.5 * before[m][y] + 0.5 * f[m][s])


def ref_dense(f_rgb, f_depth, loc_by_sample: dict[int, list[int]], w4: int) -> dict[str, float]:
    out = {}
    for name, rows_map, cols_map in (("rd", f_depth, f_rgb), ("dr", f_rgb, f_depth)):
        total, count = 0.0, 0
        for b, locs in loc_by_sample.items():
            pos = [(q // w4, q % w4) for q in locs]  # (row, col) in grid units
            rows = [unit(rows_map[b, :, r, c].double()) for r, c in pos]
            cols = [unit(cols_map[b, :, r, c].double()) for r, c in pos]
            n = len(locs)
            for j in range(n):
                dist = [math.hypot(pos[i][0] - pos[j][0], pos[i][1] - pos[j][1]) for i in range(n)]
                z = sum(math.exp(-v) for v in dist)
                soft = [math.exp(-v) / z for v in dist]  # sums to 1 over i
                logits = [float(rows[i] @ cols[j]) / T for i in range(n)]
                lse = math.log(sum(math.exp(v) for v in logits))
                total += -sum(soft[i] * (logits[i] - lse) for i in range(n))
                count += 1
        out[f"dense_{name}"] = total / count if count else 0.0
    return out


def cell(rc: torch.Tensor, h4: int, w4: int) -> tuple[int, int]:
    return min(max(int(rc[0].item() // 4), 0), h4 - 1), min(max(int(rc[1].item() // 4), 0), w4 - 1)


def ref_joint(f_rgb, f_depth, joint_feats, rc, vis, has_depth) -> dict[str, float]:
    h4, w4 = f_rgb.shape[2:]
    out = {}
    for name, dense in (("rgb", f_rgb), ("depth", f_depth)):
        total, count = 0.0, 0
        for b in range(B):
            if name == "depth" and not has_depth[b]:
                continue
            g = [unit(joint_feats[b, i].double()) for i in range(J)]
            for k in range(J):
                if not vis[b, k]:
                    continue
                r, c = cell(rc[b, k], h4, w4)
                x = unit(dense[b, :, r, c].double())
                logits = [float(g[i] @ x) / T for i in range(J)]  # over the J nodes of this sample
                total += math.log(sum(math.exp(v) for v in logits)) - logits[k]
                count += 1
        out[f"joint_{name}"] = total / count if count else 0.0
    return out


def ref_scl(f_rgb, f_depth, rc, has_depth, has_rgb) -> float:
    h4, w4 = f_rgb.shape[2:]
    items = []  # (feature, joint index, modality present)
    for dense, present in ((f_rgb, has_rgb), (f_depth, has_depth)):
        for b in range(B):
            for j in range(J):
                r, c = cell(rc[b, j], h4, w4)
                items.append((unit(dense[b, :, r, c].double()), j, bool(present[b])))
    total = 0.0
    for a, (za, ja, pa) in enumerate(items):
        sims = [float(za @ zp) / T for zp, _, _ in items]  # self included in the denominator
        lse = math.log(sum(math.exp(v) for v in sims))
        pos = [p for p, (_, jp, pp) in enumerate(items) if p != a and jp == ja and pa and pp]
        total += -sum(sims[p] - lse for p in pos) / max(1, len(pos))
    return total / len(items)  # every row, those without positives included


# ----------------------------------------------------------------------------------------- memory bank
def test_bank_buffers_init_and_negative_sampling():
    bank = make_bank(seed=4)
    assert [k for k in bank.state_dict()] == ["memory_1", "memory_2", "memory_3"]
    for m in (1, 2, 3):
        assert bank.memory(m).shape == (N, C)
        torch.testing.assert_close(bank.memory(m).norm(dim=1), torch.ones(N))
    assert not torch.equal(bank.memory_1, bank.memory_2)
    assert torch.equal(make_bank(seed=4).memory_3, bank.memory_3)  # every rank starts alike
    assert not torch.equal(make_bank(seed=5).memory_3, bank.memory_3)
    assert CMCMemoryBank(5).num_negatives == 16384 and CMCMemoryBank(5).temperature == 0.07
    assert CMCMemoryBank(5).memory_1.shape == (5, 128) and CMCMemoryBank(5).momentum == 0.5

    index = torch.tensor([3, 11, 0])
    state = torch.get_rng_state()
    idx = bank.sample_indices(index, torch.Generator().manual_seed(1))
    assert torch.equal(torch.get_rng_state(), state)  # a given generator leaves the global RNG alone
    assert idx.shape == (B, K + 1) and torch.equal(idx[:, 0], index)
    assert torch.equal(idx, bank.sample_indices(index, torch.Generator().manual_seed(1)))
    torch.manual_seed(9)
    a = bank.sample_indices(index)
    torch.manual_seed(9)
    assert torch.equal(a, bank.sample_indices(index))  # global RNG: reproducible from torch.manual_seed
    big = CMCMemoryBank(10, feat_dim=4, num_negatives=20000).sample_indices(torch.tensor([2]),
                                                                            torch.Generator().manual_seed(0))
    counts = torch.bincount(big[0, 1:], minlength=10).float()  # uniform over [0, N), positive included
    assert counts.min() > 1800 and counts.max() < 2200


@pytest.mark.parametrize("true_depth", [TRUE_DEPTH, torch.zeros(B, dtype=torch.long)])
def test_bank_terms_match_reference(true_depth):
    bank = make_bank().eval()  # eval: no update
    f, index = {m: v.requires_grad_(True) for m, v in global_feats(0).items()}, torch.tensor([3, 11, 3])
    # make the positive win for one term so that the accuracy is not trivially 0
    bank.memory_2[3] = f[1][0].detach()
    before = {m: bank.memory(m).clone() for m in (1, 2, 3)}
    out = bank(f[1], f[2], f[3], index, true_depth=true_depth, generator=torch.Generator().manual_seed(7))
    idx = bank.sample_indices(index, torch.Generator().manual_seed(7))
    ref = ref_sample_terms(before, {m: v.detach() for m, v in f.items()}, idx, true_depth)
    for key, value in ref.items():
        assert out[key].item() == pytest.approx(value, rel=1e-5, abs=1e-6), key
    assert out["sample"].item() == pytest.approx(sum(ref.values()), rel=1e-5)
    if true_depth.sum() == 0:  # no depth sample: the four depth terms are exactly 0, the others are not
        assert all(out[f"sample_{p}"].item() == 0.0 for p in ("12", "21", "23", "32"))
        assert out["sample_13"].item() > 0
    else:
        assert out["acc_sample_12"].item() == 0.5  # sample 0 (positive wins) of the 2 with depth
    for m in (1, 2, 3):
        assert torch.equal(bank.memory(m), before[m])
    out["sample"].backward()  # differentiable through the features, never through the bank
    assert f[1].grad.abs().sum() > 0 and f[3].grad.abs().sum() > 0
    assert (f[2].grad.abs().sum() > 0) == bool(true_depth.sum())  # depth only enters the masked depth terms


def test_bank_nseg_true_rgb_masks_all_six_terms():
    bank = make_bank().eval()
    f, index = global_feats(1), torch.tensor([0, 1, 2])
    true_rgb = torch.tensor([1, 1, 0])
    out = bank(f[1], f[2], f[3], index, true_depth=TRUE_DEPTH, true_rgb=true_rgb,
               generator=torch.Generator().manual_seed(2))
    idx = bank.sample_indices(index, torch.Generator().manual_seed(2))
    ref = ref_sample_terms({m: bank.memory(m) for m in (1, 2, 3)}, f, idx, torch.tensor([1, 0, 0]))
    ref_13 = ref_sample_terms({m: bank.memory(m) for m in (1, 2, 3)}, {1: f[1][:1], 2: f[2][:1], 3: f[3][:1]},
                              idx[:1], torch.tensor([1]))
    assert out["sample_12"].item() == pytest.approx(ref["sample_12"], rel=1e-5)
    assert out["sample_13"].item() == pytest.approx(ref_13["sample_13"], rel=1e-5)  # only sample 0


def test_bank_update_after_k_steps_equals_hand_computation():
    bank = make_bank().train()
    memory = {m: bank.memory(m).clone() for m in (1, 2, 3)}
    gen = torch.Generator().manual_seed(11)
    steps = [torch.tensor([4, 7, 4]), torch.tensor([0, 11, 7]), torch.tensor([11, 11, 2])]  # duplicates
    for k, index in enumerate(steps):
        f = global_feats(20 + k)
        state = gen.get_state()
        out = bank(f[1], f[2], f[3], index, true_depth=TRUE_DEPTH, generator=gen)
        # the loss of step k is computed against the bank after steps 0..k-1 (the hand-updated one)
        idx = bank.sample_indices(index, torch.Generator().set_state(state))
        ref = ref_sample_terms(memory, f, idx, TRUE_DEPTH)
        assert out["sample"].item() == pytest.approx(sum(ref.values()), rel=1e-5)
        ref_update(memory, f, index)
        for m in (1, 2, 3):
            torch.testing.assert_close(bank.memory(m), memory[m], rtol=0, atol=1e-6)
    untouched = [i for i in range(N) if i not in (0, 2, 4, 7, 11)]
    assert torch.equal(bank.memory_1[untouched], make_bank().memory_1[untouched])
    # the momentum really is 0.5: one row by hand from the formula
    bank2, f = make_bank().train(), global_feats(5)
    bank2.update(f[1], f[2], f[3], torch.tensor([1, 2, 3]))
    expected = make_bank().memory_2[2] * 0.5 + f[2][1] * 0.5
    torch.testing.assert_close(bank2.memory_2[2], expected / expected.norm())


def test_bank_state_dict_round_trip_continues_identically():
    bank = make_bank().train()
    gen = torch.Generator().manual_seed(0)
    batches = [(global_feats(30 + k), torch.tensor([k, 2 * k + 1, 5])) for k in range(4)]
    for f, index in batches[:2]:
        bank(f[1], f[2], f[3], index, true_depth=TRUE_DEPTH, generator=gen)
    buf = io.BytesIO()
    torch.save(bank.state_dict(), buf)
    gen_state = gen.get_state()
    restored = make_bank(seed=99).train()
    buf.seek(0)
    restored.load_state_dict(torch.load(buf, weights_only=True))
    gen2 = torch.Generator().set_state(gen_state)
    for f, index in batches[2:]:
        a = bank(f[1], f[2], f[3], index, true_depth=TRUE_DEPTH, generator=gen)
        b = restored(f[1], f[2], f[3], index, true_depth=TRUE_DEPTH, generator=gen2)
        assert all(torch.equal(a[k], b[k]) for k in a)
    for m in (1, 2, 3):
        assert torch.equal(bank.memory(m), restored.memory(m))


def test_bank_size_mismatch_and_bad_inputs_are_named_errors():
    saved = CMCMemoryBank(20, feat_dim=C).state_dict()
    with pytest.raises(ConfigError, match=r"memory_1.*20 samples.*30 samples"):
        CMCMemoryBank(30, feat_dim=C).load_state_dict(saved)
    outer = torch.nn.Module()
    outer.contrast = CMCMemoryBank(30, feat_dim=C)
    with pytest.raises(ConfigError, match=r"contrast\.memory_1.*20 samples.*30 samples"):
        outer.load_state_dict({f"contrast.{k}": v for k, v in saved.items()})
    with pytest.raises(ConfigError, match=r"\(20, 16\).*\(20, 8\)"):
        CMCMemoryBank(20, feat_dim=8).load_state_dict(saved)
    bank, f = make_bank(), global_feats(0)
    with pytest.raises(DataError, match=r"sample 1: field index: dataset index 12 is outside.*12 samples"):
        bank(f[1], f[2], f[3], torch.tensor([0, 12, 1]))
    with pytest.raises(DataError, match="f_depth"):
        bank(f[1], f[2][:, :8], f[3], torch.tensor([0, 1, 2]))
    with pytest.raises(ConfigError):
        CMCMemoryBank(0)


# ---------------------------------------------------------------------------------------------- L_dense
def test_dense_loss_matches_reference_non_square():
    h4, w4, n = 6, 8, 12
    f_rgb, f_depth = dense_maps(h4, w4)
    mask = torch.zeros(B, 4 * h4, 4 * w4)  # full resolution, nearest-downsampled: pixel (4 i, 4 j)
    mask[0, 4 * 1, 4 * 2] = mask[0, 4 * 5, 4 * 7] = mask[0, 4 * 3, 4 * 0] = 1  # 3 cells: duplicates certain
    mask[0, 4 * 1 + 1, 4 * 3] = 1  # off the nearest grid: never a valid cell
    mask[2, 8:20, 4:24] = 1.0
    # sample 1 (no depth): empty foreground, dropped
    out = dense_loss(f_rgb, f_depth, mask, num_points=n, generator=torch.Generator().manual_seed(3))

    valid = torch.zeros(B, h4 * w4, dtype=torch.bool)
    for b in range(B):
        for i in range(h4):
            for j in range(w4):
                valid[b, i * w4 + j] = bool(mask[b, 4 * i, 4 * j])
    assert valid[1].sum() == 0 and valid[0].sum() == 3
    loc = sample_dense_locations(valid[[0, 2]], n, torch.Generator().manual_seed(3))
    assert bool(valid[[0, 2]].gather(1, loc).all())  # only foreground locations
    assert len(set(loc[0].tolist())) < n  # with replacement: duplicates
    ref = ref_dense(f_rgb, f_depth, {0: loc[0].tolist(), 2: loc[1].tolist()}, w4)
    for key, value in ref.items():
        assert out[key].item() == pytest.approx(value, rel=1e-5), key
    assert out["dense_rd"].item() != pytest.approx(out["dense_dr"].item(), rel=1e-3)  # the two directions differ
    assert 0.0 <= out["acc_dense_rd"].item() <= 1.0


def test_dense_loss_no_foreground_and_shape_errors():
    f_rgb, f_depth = dense_maps(8, 8)
    f_rgb.requires_grad_(True)
    out = dense_loss(f_rgb, f_depth, torch.zeros(B, 8, 8))
    assert out["dense_rd"].item() == 0.0 and out["dense_dr"].item() == 0.0
    out["dense_rd"].backward()  # still part of the graph
    with pytest.raises(DataError, match=r"RGB \(3, 16, 8, 8\) and depth \(3, 16, 8, 6\)"):
        dense_loss(f_rgb, f_depth[..., :6], torch.ones(B, 8, 8))
    with pytest.raises(DataError, match="depth_mask"):
        dense_loss(f_rgb, f_depth, torch.ones(2, 8, 8))


# ---------------------------------------------------------------------------------------------- L_joint
def test_joint_loss_matches_reference_non_square():
    h4, w4 = 8, 7
    f_rgb, f_depth = dense_maps(h4, w4, seed=1)
    rc, vis = joints_fixture(h4, w4)
    feats = torch.randn(B, J, C, generator=torch.Generator().manual_seed(4))
    out = joint_loss(f_rgb, f_depth, feats, rc, vis, TRUE_DEPTH)
    ref = ref_joint(f_rgb, f_depth, feats, rc, vis, TRUE_DEPTH)
    for key, value in ref.items():
        assert out[key].item() == pytest.approx(value, rel=1e-5), key
    # the cell of a joint at (row 13.9, col 2.5) is (3, 0): flat index 3 * w4 + 0
    one = torch.zeros(1, 1, 2)
    one[0, 0] = torch.tensor([13.9, 2.5])
    got = sample_joint_features(f_rgb[:1], one)
    torch.testing.assert_close(got[0, 0], unit(f_rgb[0, :, 3, 0]))
    # the positive is found when the keypoint node equals its own image feature
    aligned = sample_joint_features(f_rgb, rc, vis) * 5.0
    acc = joint_loss(f_rgb, f_depth, aligned, rc, vis, TRUE_DEPTH)["acc_joint_rgb"]
    assert acc.item() == 1.0


def test_joint_loss_ignores_invisible_and_missing_depth():
    f_rgb, f_depth = dense_maps(8, 8, seed=2)
    rc, vis = joints_fixture(8, 8)
    feats = torch.randn(B, J, C, generator=torch.Generator().manual_seed(5))
    base = joint_loss(f_rgb, f_depth, feats, rc, vis, TRUE_DEPTH)
    f_depth2 = f_depth.clone()
    f_depth2[1] = torch.randn(C, 8, 8)  # sample 1 has no depth: its depth features do not count
    f_rgb2 = f_rgb.clone()
    r, c = cell(rc[2, 4], 8, 8)  # invisible joint 4 of sample 2: its cell is read, but the column ignored
    assert (r, c) == (0, 0)
    f_rgb2[2, :, 0, 0] = torch.randn(C)
    assert not any(bool(vis[2, k]) and cell(rc[2, k], 8, 8) == (0, 0) for k in range(J))
    other = joint_loss(f_rgb2, f_depth2, feats, rc, vis, TRUE_DEPTH)
    assert other["joint_rgb"].item() == pytest.approx(base["joint_rgb"].item(), rel=1e-6)
    assert other["joint_depth"].item() == pytest.approx(base["joint_depth"].item(), rel=1e-6)
    none = joint_loss(f_rgb, f_depth, feats, rc, torch.zeros(B, J), torch.zeros(B))
    assert none["joint_rgb"].item() == 0.0 and none["joint_depth"].item() == 0.0


def test_visible_joint_outside_the_image_is_a_named_error():
    f_rgb, f_depth = dense_maps(8, 7)
    rc, vis = joints_fixture(8, 7)
    feats = torch.zeros(B, J, C)
    bad = rc.clone()
    bad[1, 2] = torch.tensor([10.0, 28.0])  # col 28 is outside the 32x28 crop
    with pytest.raises(DataError, match=r"sample 1: field joints_rc: joint 2 .*col 28.0.*32x28"):
        joint_loss(f_rgb, f_depth, feats, bad, vis, TRUE_DEPTH)
    with pytest.raises(DataError, match="sample 1"):
        structure_contrast_loss(f_rgb, f_depth, bad, TRUE_DEPTH, visible=vis)
    bad[1, 2] = torch.tensor([float("nan"), 3.0])
    bad_vis = vis.clone()
    bad_vis[1, 2] = 0
    with pytest.raises(DataError, match="joint 2"):  # non-finite even when invisible
        joint_loss(f_rgb, f_depth, feats, bad, bad_vis, TRUE_DEPTH)
    with pytest.raises(DataError, match=r"RGB \(3, 16, 8, 7\) and depth \(3, 16, 7, 8\)"):
        joint_loss(f_rgb, f_depth.transpose(2, 3), feats, rc, vis, TRUE_DEPTH)


# ------------------------------------------------------------------------------------------------ L_scl
@pytest.mark.parametrize("true_rgb", [None, torch.tensor([1, 1, 0])])
def test_structure_contrast_matches_reference(true_rgb):
    h4, w4 = 8, 7
    f_rgb, f_depth = dense_maps(h4, w4, seed=6)
    rc, vis = joints_fixture(h4, w4)
    out = structure_contrast_loss(f_rgb, f_depth, rc, TRUE_DEPTH, true_rgb, visible=vis)
    has_rgb = torch.ones(B) if true_rgb is None else true_rgb
    assert out["scl"].item() == pytest.approx(ref_scl(f_rgb, f_depth, rc, TRUE_DEPTH, has_rgb), rel=1e-5)
    # visibility is ignored: the same loss with every joint marked invisible (visible only guards the bounds)
    hidden = structure_contrast_loss(f_rgb, f_depth, rc, TRUE_DEPTH, true_rgb, visible=torch.zeros(B, J))
    assert hidden["scl"].item() == pytest.approx(out["scl"].item(), rel=1e-6)
    with pytest.raises(DataError, match="sample 1: field joints_rc: joint 0"):  # visible=None: all checked
        structure_contrast_loss(f_rgb, f_depth, rc, TRUE_DEPTH, true_rgb)


# ----------------------------------------------------------------------------------------------- totals
def test_hcmoco_loss_stage_totals():
    h4, w4 = 8, 8
    f = {m: v.requires_grad_(True) for m, v in global_feats(40).items()}
    f_rgb, f_depth = (x.requires_grad_(True) for x in dense_maps(h4, w4, seed=7))
    rc, vis = joints_fixture(h4, w4)
    feats = torch.randn(B, J, C, requires_grad=True)
    mask = torch.zeros(B, 4 * h4, 4 * w4)
    mask[:, 4:20, 8:28] = 1  # sample 1 has a foreground but no depth: true_depth drops it from L_dense
    index = torch.tensor([1, 5, 9])

    one = hcmoco_loss(make_bank().eval(), f[1], f[2], f[3], index, TRUE_DEPTH, stage=1,
                      generator=torch.Generator().manual_seed(0))
    assert set(one) == {"loss", "sample"} | {f"{p}sample_{a}{b}" for p in ("", "acc_") for a, b in PAIRS}
    assert torch.equal(one["loss"], one["sample"])

    gen = torch.Generator().manual_seed(0)
    two = hcmoco_loss(make_bank().eval(), f[1], f[2], f[3], index, TRUE_DEPTH, stage=2, dense_rgb=f_rgb,
                      dense_depth=f_depth, joint_feats=feats, joints_rc=rc, visible=vis, depth_mask=mask,
                      num_points=20, generator=gen)
    terms = ["sample", "dense_rd", "dense_dr", "joint_rgb", "joint_depth", "scl"]
    assert two["loss"].item() == pytest.approx(sum(two[k].item() for k in terms), rel=1e-6)  # weights all 1
    assert two["sample"].item() == pytest.approx(one["sample"].item(), rel=1e-6)
    # the generator order: bank negatives first, then the dense locations
    gen2 = torch.Generator().manual_seed(0)
    make_bank().sample_indices(index, gen2)
    dense_mask = mask * TRUE_DEPTH.view(B, 1, 1)
    expected = dense_loss(f_rgb, f_depth, dense_mask, num_points=20, generator=gen2)
    assert two["dense_rd"].item() == pytest.approx(expected["dense_rd"].item(), rel=1e-6)
    assert two["joint_rgb"].item() == pytest.approx(
        joint_loss(f_rgb, f_depth, feats, rc, vis, TRUE_DEPTH)["joint_rgb"].item(), rel=1e-6)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # the losses turn autocast off: fp32 as the original
        low = hcmoco_loss(make_bank().eval(), f[1], f[2], f[3], index, TRUE_DEPTH, stage=2, dense_rgb=f_rgb,
                          dense_depth=f_depth, joint_feats=feats, joints_rc=rc, visible=vis, depth_mask=mask,
                          num_points=20, generator=torch.Generator().manual_seed(0))
    assert all(low[k].dtype == torch.float32 and low[k].item() == pytest.approx(two[k].item(), rel=1e-6)
               for k in two)
    two["loss"].backward()
    for t in (f[1], f[2], f[3], f_rgb, f_depth, feats):
        assert t.grad is not None and torch.isfinite(t.grad).all() and t.grad.abs().sum() > 0
    assert f_rgb.grad[1].abs().sum() > 0  # sample 1: RGB joint terms and L_scl still train its RGB map
    with pytest.raises(ConfigError, match="stage 2 needs.*depth_mask"):
        hcmoco_loss(make_bank(), f[1], f[2], f[3], index, TRUE_DEPTH, stage=2, dense_rgb=f_rgb,
                    dense_depth=f_depth, joint_feats=feats, joints_rc=rc, visible=vis)
    with pytest.raises(ConfigError, match="stage"):
        hcmoco_loss(make_bank(), f[1], f[2], f[3], index, TRUE_DEPTH, stage=3)


# -------------------------------------------------------------------------------------- DDP (gloo, CPU)
DDP_STEPS = [  # (global batch indices, rank 0's share); index 5 sits on both ranks in step 0, 9 twice in step 1
    (torch.tensor([5, 1, 5, 8]), 2),
    (torch.tensor([9, 0, 3, 9, 11]), 3),
]


def _ddp_worker(rank: int, world: int, init_file: str, out_file: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        bank = make_bank().train()
        for k, (index, split) in enumerate(DDP_STEPS):
            f = global_feats(50 + k, len(index))
            part = slice(0, split) if rank == 0 else slice(split, None)
            bank(f[1][part], f[2][part], f[3][part], index[part], generator=torch.Generator().manual_seed(rank))
        torch.save(bank.state_dict(), f"{out_file}.{rank}")
    finally:
        dist.destroy_process_group()


def test_two_gloo_ranks_end_with_the_single_process_bank(tmp_path):
    mp.spawn(_ddp_worker, args=(2, str(tmp_path / "init"), str(tmp_path / "bank")), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"bank.{r}", weights_only=True) for r in range(2)]
    single = make_bank().train()
    for k, (index, _) in enumerate(DDP_STEPS):
        f = global_feats(50 + k, len(index))
        single.update(f[1], f[2], f[3], index)
    for key, value in single.state_dict().items():
        assert torch.equal(ranks[0][key], ranks[1][key]), key
        torch.testing.assert_close(ranks[0][key], value, rtol=0, atol=1e-7)
    assert not torch.equal(single.memory_1, make_bank().memory_1)
