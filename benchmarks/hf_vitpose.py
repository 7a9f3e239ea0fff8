"""ViTPose-B (humanvision) side by side with Hugging Face transformers' ``VitPoseForPoseEstimation``: heatmap
parity on the same weights, and CPU forward time.

Our ``vitpose_base`` (classic decoder, 256x192, COCO-17) gets random weights with every parameter and buffer
non-trivial (LayerNorm and BatchNorm affine parameters and BN statistics drawn around their defaults, biases
non-zero, so a swapped or missing tensor shows) and its last convolution rescaled so that the heatmaps are O(1)
(centred, spatial standard deviation ~1).
:func:`to_hf_vitpose_state_dict` maps its state dict to transformers' layout (written from transformers'
``models/vitpose`` and ``models/vitpose_backbone`` sources):

    backbone.pos_embed (1, N, D)           -> backbone.embeddings.position_embeddings (1, 1 + N, D), slot 0 = 0
                                              (transformers adds slot 0 to every token, as the official code)
    backbone.patch_embed.proj              -> backbone.embeddings.patch_embeddings.projection (padding 2 in both)
    backbone.blocks.i.norm1 / norm2        -> backbone.encoder.layer.i.layernorm_before / layernorm_after
    backbone.blocks.i.attn.qkv (3D, D)     -> ...attention.attention.query / key / value (D, D) each
    backbone.blocks.i.attn.proj            -> ...attention.output.dense
    backbone.blocks.i.mlp.fc1 / fc2        -> ...mlp.fc1 / fc2
    backbone.norm                          -> backbone.layernorm
    head.deconv_layers.0 / 1 / 3 / 4       -> head.deconv1 / batchnorm1 / deconv2 / batchnorm2 (classic decoder)
    head.final_layer                       -> head.conv (both decoders)

loaded with ``strict=True`` into a model built from a ``VitPoseConfig`` (nothing is downloaded;
``HF_HUB_OFFLINE=1``). The config must set ``layer_norm_eps=1e-6`` (ViTPose's value; transformers' default is
1e-12) and ``out_indices=[depth]`` (the last block; the default ``[4]`` would decode block 4's features).

Reported: the largest absolute heatmap difference (fp32) on random crops and on crops of drawn people, also
relative to the largest heatmap value, plus the same with transformers' default ``layer_norm_eps`` to show
what that one setting moves; and the forward time (normalised crops -> heatmaps, no flip test) of our model in
PyTorch eager, of transformers' model, and of our ONNX export on onnxruntime (CPU provider), all with the same
intra-op thread count (``--threads``, default 1), in interleaved rounds after one warm-up call each. Times are
medians of ``time.process_time`` per call (robust to other load on a shared machine) and of wall-clock seconds,
as in ``benchmarks/export.py``; ``ratio`` = ours / transformers (< 1: ours is faster).

transformers is not a dependency of humanvision and must not go into the project's environment: install it,
with what of its own dependencies the environment lacks, into a side folder that only this script puts on
``sys.path``:

    pip install --no-deps --target data/hf_site "transformers>=4.48" regex "tokenizers>=0.23.1,<0.24"
    OMP_NUM_THREADS=1 python benchmarks/hf_vitpose.py [--hf-site data/hf_site] [--rounds 3] [--batches 1 8]

(the tokenizers pin follows the installed transformers' ``Requires-Dist``; huggingface_hub, safetensors, pyyaml,
tqdm, typer, packaging and numpy come from the project's environment). Writes ``benchmarks/results/hf_vitpose.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

REPO = Path(__file__).resolve().parents[1]
VITPOSE_LN_EPS = 1e-6


# -------------------------------------------------------------------------------------------------- conversion
def to_hf_vitpose_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """Our :class:`~humanvision.models.vitpose.ViTPose` state dict in transformers' ``VitPoseForPoseEstimation``
    layout (see the module docstring). Raises ``ValueError`` for a classic decoder transformers cannot hold
    (its deconvolutions have 256 channels, two of them)."""
    sd = model.state_dict()
    if model.decoder == "classic":
        deconvs = [m for m in model.head.deconv_layers if isinstance(m, nn.ConvTranspose2d)]
        if len(deconvs) != 2 or deconvs[0].out_channels != 256:
            raise ValueError(f"{model.model_name}: transformers' classic decoder has 2 deconvolutions of 256 "
                             f"channels, this one {len(deconvs)} of {deconvs[0].out_channels if deconvs else 0}")
    head = {"deconv_layers.0": "deconv1", "deconv_layers.1": "batchnorm1", "deconv_layers.3": "deconv2",
            "deconv_layers.4": "batchnorm2", "final_layer": "conv"}
    out: dict[str, torch.Tensor] = {}
    for key, value in sd.items():
        parts = key.split(".")
        if key == "backbone.pos_embed":
            out["backbone.embeddings.position_embeddings"] = torch.cat([torch.zeros_like(value[:, :1]), value], 1)
        elif key.startswith("backbone.patch_embed.proj."):
            out[f"backbone.embeddings.patch_embeddings.projection.{parts[-1]}"] = value
        elif key.startswith("backbone.norm."):
            out[f"backbone.layernorm.{parts[-1]}"] = value
        elif key.startswith("backbone.blocks."):
            i, rest = parts[2], ".".join(parts[3:])
            prefix = f"backbone.encoder.layer.{i}."
            if rest.startswith("attn.qkv."):
                for name, chunk in zip(("query", "key", "value"), value.chunk(3, dim=0)):
                    out[f"{prefix}attention.attention.{name}.{parts[-1]}"] = chunk.clone()
            else:
                rename = {"norm1": "layernorm_before", "norm2": "layernorm_after", "attn.proj": "attention.output.dense",
                          "mlp.fc1": "mlp.fc1", "mlp.fc2": "mlp.fc2"}
                module = rest.rsplit(".", 1)[0]
                if module not in rename:
                    raise KeyError(f"{key}: no transformers counterpart")
                out[f"{prefix}{rename[module]}.{parts[-1]}"] = value
        elif key.startswith("head."):
            module, leaf = ".".join(parts[1:-1]), parts[-1]
            if module not in head:
                raise KeyError(f"{key}: no transformers counterpart")
            out[f"head.{head[module]}.{leaf}"] = value
        else:
            raise KeyError(f"{key}: no transformers counterpart")
    return out


def hf_vitpose_config(model: nn.Module, layer_norm_eps: float = VITPOSE_LN_EPS):
    """A transformers ``VitPoseConfig`` with ``model``'s architecture (no download)."""
    from transformers import VitPoseBackboneConfig, VitPoseConfig

    blk = model.backbone.blocks[0]
    w, h = model.input_size
    p = model.backbone.patch_embed.patch_size[0]
    backbone = VitPoseBackboneConfig(
        image_size=[h, w], patch_size=[p, p], hidden_size=model.backbone.embed_dim, num_hidden_layers=model.depth,
        num_attention_heads=blk.attn.num_heads, mlp_ratio=blk.mlp.fc1.out_features // model.backbone.embed_dim,
        qkv_bias=blk.attn.qkv.bias is not None, layer_norm_eps=layer_norm_eps, hidden_act="gelu",
        out_indices=[model.depth])
    return VitPoseConfig(backbone_config=backbone, use_simple_decoder=model.decoder == "simple",
                         num_labels=model.num_joints, scale_factor=p // 4)


def build_hf(model: nn.Module, layer_norm_eps: float = VITPOSE_LN_EPS) -> nn.Module:
    from transformers import VitPoseForPoseEstimation

    hf = VitPoseForPoseEstimation(hf_vitpose_config(model, layer_norm_eps)).eval()
    hf.load_state_dict(to_hf_vitpose_state_dict(model), strict=True)
    return hf


# ------------------------------------------------------------------------------------------------------ models
def randomize(model: nn.Module, seed: int = 0) -> nn.Module:
    """Every parameter and buffer non-trivial (a wrong mapping cannot hide behind ones and zeros), heatmaps O(1)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.LayerNorm, nn.BatchNorm2d)):
                m.weight.copy_(1 + 0.2 * torch.randn(m.weight.shape, generator=g))
                m.bias.copy_(0.1 * torch.randn(m.bias.shape, generator=g))
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(0.05 * torch.randn(m.running_mean.shape, generator=g))
                m.running_var.copy_(torch.empty(m.running_var.shape).uniform_(0.5, 2.0, generator=g))
            if isinstance(m, (nn.Linear, nn.Conv2d, nn.ConvTranspose2d)) and m.bias is not None:
                m.bias.copy_(0.02 * torch.randn(m.bias.shape, generator=g))
        last = model.head.final_layer
        w, h = model.input_size
        last.bias.zero_()
        y = model(torch.randn(2, 3, h, w, generator=g))
        s = y.flatten(2).std(-1).mean()
        last.weight.mul_(1.0 / s)  # maps centred on ~0 with a spatial std of ~1
        last.bias.copy_(-y.mean((0, 2, 3)) / s + 0.1 * torch.randn(last.bias.shape, generator=g))
    return model


def forward_hf(hf: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return hf(pixel_values=x).heatmaps


def parity(model: nn.Module, hf: nn.Module, inputs: dict[str, torch.Tensor]) -> dict[str, Any]:
    out: dict[str, Any] = {"max_abs_diff": {}, "reference_max_abs": {}, "relative": {}}
    for name, x in inputs.items():
        with torch.no_grad():
            a, b = model(x), forward_hf(hf, x)
        if a.shape != b.shape:
            raise RuntimeError(f"heatmap shapes differ: ours {tuple(a.shape)}, transformers {tuple(b.shape)}")
        d, peak = float((a - b).abs().max()), float(a.abs().max())
        out["max_abs_diff"][name], out["reference_max_abs"][name], out["relative"][name] = d, peak, d / peak
    return out


# ------------------------------------------------------------------------------------------------------ timing
def bench(model: nn.Module, hf: nn.Module, session, batches: list[int], rounds: int) -> list[dict[str, Any]]:
    from export import interleaved  # benchmarks/export.py (main() puts benchmarks/ on sys.path)

    w, h = model.input_size
    rows = []
    for batch in batches:
        x = torch.randn(batch, 3, h, w, generator=torch.Generator().manual_seed(batch))
        xn = x.numpy()

        def ours(x=x) -> None:
            with torch.no_grad():
                model(x)

        def transformers_(x=x) -> None:
            with torch.no_grad():
                forward_hf(hf, x)

        def ort(xn=xn) -> None:
            session.run(None, {"input": xn})

        runs = {"ours": ours, "transformers": transformers_, "onnxruntime": ort}
        med = interleaved(runs, rounds)  # (cpu, wall)
        row: dict[str, Any] = {"batch": batch, "rounds": rounds}
        for k in runs:
            row[f"{k}_cpu_s"], row[f"{k}_wall_s"] = float(med[k][0]), float(med[k][1])
            row[f"{k}_crops_per_cpu_s"] = batch / row[f"{k}_cpu_s"]
        for k in ("ours", "onnxruntime"):
            row[f"{k}_over_transformers_cpu"] = row[f"{k}_cpu_s"] / row["transformers_cpu_s"]
            row[f"{k}_over_transformers_wall"] = row[f"{k}_wall_s"] / row["transformers_wall_s"]
        rows.append(row)
        print(f"  batch {batch}: ours {row['ours_cpu_s']:.3f} CPU-s, transformers {row['transformers_cpu_s']:.3f}, "
              f"onnxruntime {row['onnxruntime_cpu_s']:.3f} (ours / transformers "
              f"{row['ours_over_transformers_cpu']:.2f})", file=sys.stderr, flush=True)
    return rows


def import_transformers(site: Path):
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    if site.is_dir():
        sys.path.insert(0, str(site.resolve()))
    try:
        import transformers
        from transformers import VitPoseForPoseEstimation  # noqa: F401
    except ImportError as e:
        sys.exit(f"cannot import transformers' VitPose from {site} ({type(e).__name__}: {e}); install it there "
                 f"(not into the project's environment):\n  pip install --no-deps --target {site} "
                 '"transformers>=4.48" regex "tokenizers>=0.23.1,<0.24"\nplus any other module named above')
    return transformers


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--hf-site", type=Path, default=REPO / "data" / "hf_site",
                   help="folder holding transformers (pip install --target), put first on sys.path")
    p.add_argument("--model", default="vitpose_base", help="a ViTPose entry point with 256-channel deconvs")
    p.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    p.add_argument("--rounds", type=int, default=3, help="timed calls per setting (interleaved)")
    p.add_argument("--threads", type=int, default=1, help="intra-op threads of all three")
    p.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "hf_vitpose.json")
    args = p.parse_args(argv)
    transformers = import_transformers(args.hf_site)
    import onnxruntime as ort
    from rich.console import Console
    from rich.table import Table

    sys.path.insert(0, str(REPO / "benchmarks"))
    from export import cpu_name

    from humanvision.export import export_onnx, realish_crops
    from humanvision.methods.topdown import DataConfig, TopDownPose, build_codec, build_transform
    from humanvision.models import create_model

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = randomize(create_model(args.model).eval())
    hf = build_hf(model)
    data = DataConfig()
    method = TopDownPose(model, build_codec(model, data), "coco17").eval()
    transform = build_transform(method, data, train=False)
    w, h = model.input_size
    inputs = {"random": torch.randn(4, 3, h, w, generator=torch.Generator().manual_seed(1)),
              "drawn": realish_crops(transform, n=4)}
    par = parity(model, hf, inputs)
    par_eps = parity(model, build_hf(model, layer_norm_eps=1e-12), inputs)
    print(f"  parity: max |diff| {max(par['max_abs_diff'].values()):.3g} (relative "
          f"{max(par['relative'].values()):.3g}); with transformers' default layer_norm_eps 1e-12: "
          f"{max(par_eps['max_abs_diff'].values()):.3g}", file=sys.stderr, flush=True)

    with tempfile.TemporaryDirectory() as tmp:
        report = export_onnx(method, transform, Path(tmp) / f"{args.model}.onnx")
        so = ort.SessionOptions()
        so.intra_op_num_threads, so.inter_op_num_threads = args.threads, 1
        session = ort.InferenceSession(str(report.path), so, providers=["CPUExecutionProvider"])
        rows = bench(model, hf, session, args.batches, args.rounds)

    attn = getattr(hf.config.backbone_config, "_attn_implementation", None)
    table = Table(title=f"{args.model} {h}x{w} forward, fp32, {args.threads} thread(s), {cpu_name()}: humanvision "
                        f"vs transformers {transformers.__version__} VitPose (attention: {attn}), median of "
                        "interleaved rounds")
    for col in ("batch", "ours crops/CPU-s", "transformers crops/CPU-s", "onnxruntime crops/CPU-s",
                "ours / transformers (CPU)", "(wall)", "onnxruntime / transformers (CPU)", "(wall) "):
        table.add_column(col, justify="right")
    for r in rows:
        table.add_row(str(r["batch"]), f"{r['ours_crops_per_cpu_s']:.2f}", f"{r['transformers_crops_per_cpu_s']:.2f}",
                      f"{r['onnxruntime_crops_per_cpu_s']:.2f}", f"{r['ours_over_transformers_cpu']:.3f}",
                      f"{r['ours_over_transformers_wall']:.3f}", f"{r['onnxruntime_over_transformers_cpu']:.3f}",
                      f"{r['onnxruntime_over_transformers_wall']:.3f}")
    console = Console(width=160)
    console.print(table)
    console.print("heatmap max |diff| ours vs transformers (fp32): " + ", ".join(
        f"{k} {par['max_abs_diff'][k]:.2e} (of max {par['reference_max_abs'][k]:.2f})" for k in inputs)
        + f"; with layer_norm_eps 1e-12: {max(par_eps['max_abs_diff'].values()):.2e}; ONNX export parity "
        f"{max(report.parity['max_abs_diff'].values()):.2e}")
    result = {"benchmark": "hf_vitpose", "model": args.model, "input": f"{h}x{w}", "cpu": cpu_name(),
              "threads": args.threads, "torch": torch.__version__, "transformers": transformers.__version__,
              "onnxruntime": ort.__version__, "hf_attn_implementation": attn, "load_average": list(os.getloadavg()),
              "parity": {**par, "layer_norm_eps": VITPOSE_LN_EPS, "batch_sizes": {k: len(v) for k, v in inputs.items()}},
              "parity_hf_default_layer_norm_eps": {**par_eps, "layer_norm_eps": 1e-12},
              "onnx_export_parity_max_abs_diff": max(report.parity["max_abs_diff"].values()), "rows": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(f"wrote {args.out}")
    return result


if __name__ == "__main__":
    main()
