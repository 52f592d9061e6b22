#!/usr/bin/python3
"""Independent PyTorch reference for clad's interop tests (tests/test_interop.c).

Implements, from their documented behaviour and without clad's code:
  - timm's VisionTransformer forward (fused qkv, Conv2d patch embedding, pre-norm blocks, exact GELU,
    class-token head) and Hugging Face transformers' ViTForImageClassification forward (separate
    query/key/value, layernorm_before/after, intermediate/output dense, classifier);
  - PEFT's LoRA on disk: adapter_model.safetensors with base_model.model.<module>.lora_A/B.weight and the
    modules_to_save head as base_model.model.<module>.weight, adapter_config.json with r, lora_alpha,
    rank_pattern and alpha_pattern (PEFT's key rule: the first pattern p with re.match(rf"(.*\\.)?({p})$",
    module) wins), scaling lora_alpha / r (or / sqrt(r) with use_rslora).
Weights are random (nothing can be downloaded here); the reference runs in float64.

Commands (every file is safetensors, written and read by the few lines below; several commands may be
joined with "+" to share one run):
  base --layout timm|hf ... --out DIR      DIR/model.safetensors (+ config.json for hf) and DIR/io.safetensors
                                           with inputs "x" (N,3,H,W) and the reference "logits"
  peft-apply --base F --adapter DIR --io F --heads H --eps E --out F
                                           logits of a base (either layout) with a PEFT adapter applied
  peft-make --base F --io F --heads H --eps E --seed S --classes K --out DIR
                                           a random PEFT adapter (per-layer ranks and alphas, some layers
                                           left out, a new head; on an HF base HF's module names, LoRA on
                                           query and value) and DIR/logits.safetensors
"""
import argparse
import json
import math
import os
import re
import struct
import sys

import numpy as np
import torch
import torch.nn.functional as F

# ---- safetensors (F32 only) -------------------------------------------------------------------------


def st_save(path, tensors, metadata=None, dtype="F32"):
    header, blobs, off = {}, [], 0
    if metadata:
        header["__metadata__"] = metadata
    for name in sorted(tensors):
        t = tensors[name].detach().cpu()
        if dtype == "BF16":  # numpy has no bfloat16: its bits are the top half of float32's
            a = np.ascontiguousarray(t.to(torch.bfloat16).view(torch.int16).numpy().astype("<i2"))
        else:
            a = np.ascontiguousarray(t.numpy().astype("<f2" if dtype == "F16" else "<f4"))
        b = a.tobytes()
        header[name] = {"dtype": dtype, "shape": list(a.shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))


def st_load(path):
    with open(path, "rb") as f:
        data = f.read()
    n = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8 : 8 + n])
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        assert info["dtype"] == "F32", name
        b, e = info["data_offsets"]
        a = np.frombuffer(data[8 + n + b : 8 + n + e], dtype="<f4").reshape(info["shape"])
        out[name] = torch.from_numpy(a.copy())
    return out


# ---- ViT forward passes -----------------------------------------------------------------------------


def lora_linear(sd, module, x, lora):
    y = F.linear(x, sd[module + ".weight"], sd.get(module + ".bias"))
    if lora and module in lora:
        A, B, s = lora[module]
        y = y + s * F.linear(F.linear(x, A), B)
    return y


def attention(q, k, v, heads):
    B, N, D = q.shape
    hd = D // heads
    q, k, v = (t.reshape(B, N, heads, hd).permute(0, 2, 1, 3) for t in (q, k, v))
    att = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(hd), dim=-1)
    return (att @ v).permute(0, 2, 1, 3).reshape(B, N, D)


def forward_timm(sd, x, heads, eps, lora=None, head=None):
    D = sd["cls_token"].shape[-1]
    depth = len({k.split(".")[1] for k in sd if k.startswith("blocks.")})
    w = sd["patch_embed.proj.weight"]
    if lora and "patch_embed.proj" in lora:
        A, B, s = lora["patch_embed.proj"]
        w = w + s * (B @ A).reshape(w.shape)  # a Conv2d's LoRA is on the flattened kernel
    t = F.conv2d(x, w, sd["patch_embed.proj.bias"], stride=w.shape[-1]).flatten(2).transpose(1, 2)
    t = torch.cat([sd["cls_token"].expand(x.shape[0], -1, -1), t], dim=1) + sd["pos_embed"]
    for i in range(depth):
        p = f"blocks.{i}."
        h = F.layer_norm(t, (D,), sd[p + "norm1.weight"], sd[p + "norm1.bias"], eps)
        q, k, v = lora_linear(sd, p + "attn.qkv", h, lora).split(D, dim=-1)
        t = t + lora_linear(sd, p + "attn.proj", attention(q, k, v, heads), lora)
        h = F.layer_norm(t, (D,), sd[p + "norm2.weight"], sd[p + "norm2.bias"], eps)
        t = t + lora_linear(sd, p + "mlp.fc2", F.gelu(lora_linear(sd, p + "mlp.fc1", h, lora)), lora)
    t = F.layer_norm(t, (D,), sd["norm.weight"], sd["norm.bias"], eps)
    hw, hb = head if head else (sd["head.weight"], sd["head.bias"])
    return F.linear(t[:, 0], hw, hb)


def forward_hf(sd, x, heads, eps, lora=None, head=None):
    D = sd["vit.embeddings.cls_token"].shape[-1]
    depth = len({k.split(".")[3] for k in sd if k.startswith("vit.encoder.layer.")})
    w = sd["vit.embeddings.patch_embeddings.projection.weight"]
    t = F.conv2d(x, w, sd["vit.embeddings.patch_embeddings.projection.bias"], stride=w.shape[-1])
    t = t.flatten(2).transpose(1, 2)
    t = torch.cat([sd["vit.embeddings.cls_token"].expand(x.shape[0], -1, -1), t], dim=1)
    t = t + sd["vit.embeddings.position_embeddings"]
    for i in range(depth):
        p = f"vit.encoder.layer.{i}."
        h = F.layer_norm(t, (D,), sd[p + "layernorm_before.weight"], sd[p + "layernorm_before.bias"], eps)
        q, k, v = (lora_linear(sd, p + "attention.attention." + n, h, lora) for n in ("query", "key", "value"))
        t = t + lora_linear(sd, p + "attention.output.dense", attention(q, k, v, heads), lora)
        h = F.layer_norm(t, (D,), sd[p + "layernorm_after.weight"], sd[p + "layernorm_after.bias"], eps)
        t = t + lora_linear(sd, p + "output.dense", F.gelu(lora_linear(sd, p + "intermediate.dense", h, lora)), lora)
    t = F.layer_norm(t, (D,), sd["vit.layernorm.weight"], sd["vit.layernorm.bias"], eps)
    hw, hb = head if head else (sd["classifier.weight"], sd["classifier.bias"])
    return F.linear(t[:, 0], hw, hb)


def forward_any(sd, x, heads, eps, lora=None, head=None):
    fwd = forward_hf if "vit.embeddings.cls_token" in sd else forward_timm
    return fwd(sd, x, heads, eps, lora, head)


# ---- random checkpoints -----------------------------------------------------------------------------


def rand_linear(g, out, inp):
    bound = 1.0 / math.sqrt(inp)
    return (torch.rand(out, inp, generator=g) * 2 - 1) * bound, (torch.rand(out, generator=g) * 2 - 1) * bound


def rand_norm(g, d):
    # Not 1 and 0, so that swapping a norm's weight and bias or two norms shows in the logits.
    return 1 + 0.1 * torch.randn(d, generator=g), 0.1 * torch.randn(d, generator=g)


def make_base(a):
    g = torch.Generator().manual_seed(a.seed)
    D, M, P, C = a.dim, a.mlp, a.patch, 3
    T = (a.img // P) ** 2 + 1
    timm = {}
    timm["patch_embed.proj.weight"] = rand_linear(g, D, C * P * P)[0].reshape(D, C, P, P)
    timm["patch_embed.proj.bias"] = 0.1 * torch.randn(D, generator=g)
    timm["cls_token"] = 0.02 * torch.randn(1, 1, D, generator=g)
    timm["pos_embed"] = 0.02 * torch.randn(1, T, D, generator=g)
    for i in range(a.depth):
        p = f"blocks.{i}."
        timm[p + "norm1.weight"], timm[p + "norm1.bias"] = rand_norm(g, D)
        timm[p + "attn.qkv.weight"], timm[p + "attn.qkv.bias"] = rand_linear(g, 3 * D, D)
        timm[p + "attn.proj.weight"], timm[p + "attn.proj.bias"] = rand_linear(g, D, D)
        timm[p + "norm2.weight"], timm[p + "norm2.bias"] = rand_norm(g, D)
        timm[p + "mlp.fc1.weight"], timm[p + "mlp.fc1.bias"] = rand_linear(g, M, D)
        timm[p + "mlp.fc2.weight"], timm[p + "mlp.fc2.bias"] = rand_linear(g, D, M)
    timm["norm.weight"], timm["norm.bias"] = rand_norm(g, D)
    timm["head.weight"], timm["head.bias"] = rand_linear(g, a.classes, D)
    x = torch.randn(a.n, C, a.img, a.img, generator=g)
    if a.dtype != "F32":  # the reference runs on the weights as the file holds them
        half = torch.float16 if a.dtype == "F16" else torch.bfloat16
        timm = {k: v.to(half).float() for k, v in timm.items()}
    os.makedirs(a.out, exist_ok=True)
    f64 = {k: v.double() for k, v in timm.items()}
    if a.layout == "timm":
        st_save(os.path.join(a.out, "model.safetensors"), timm, {"format": "pt"}, a.dtype)
        logits = forward_timm(f64, x.double(), a.heads, a.eps)
    else:
        hf = hf_names(timm, a.depth, D)
        st_save(os.path.join(a.out, "model.safetensors"), hf, {"format": "pt"}, a.dtype)
        config = {
            "architectures": ["ViTForImageClassification"], "model_type": "vit", "hidden_size": D,
            "num_hidden_layers": a.depth, "num_attention_heads": a.heads, "intermediate_size": M,
            "hidden_act": "gelu", "image_size": a.img, "patch_size": P, "num_channels": C,
            "layer_norm_eps": a.eps, "qkv_bias": True,
            "id2label": {str(i): f"class{i}" for i in range(a.classes)},
        }
        with open(os.path.join(a.out, "config.json"), "w") as f:
            json.dump(config, f, indent=2)
        logits = forward_hf({k: v.double() for k, v in hf.items()}, x.double(), a.heads, a.eps)
        # The two forward passes are written separately; on the same weights they must agree.
        assert torch.allclose(logits, forward_timm(f64, x.double(), a.heads, a.eps), atol=1e-10)
    st_save(os.path.join(a.out, "io.safetensors"), {"x": x, "logits": logits.float()})


def hf_names(timm, depth, D):
    """The same weights under ViTForImageClassification's names (qkv split into query, key, value)."""
    hf = {
        "vit.embeddings.patch_embeddings.projection.weight": timm["patch_embed.proj.weight"],
        "vit.embeddings.patch_embeddings.projection.bias": timm["patch_embed.proj.bias"],
        "vit.embeddings.cls_token": timm["cls_token"],
        "vit.embeddings.position_embeddings": timm["pos_embed"],
        "vit.layernorm.weight": timm["norm.weight"], "vit.layernorm.bias": timm["norm.bias"],
        "classifier.weight": timm["head.weight"], "classifier.bias": timm["head.bias"],
    }
    pairs = [("norm1", "layernorm_before"), ("attn.proj", "attention.output.dense"),
             ("norm2", "layernorm_after"), ("mlp.fc1", "intermediate.dense"), ("mlp.fc2", "output.dense")]
    for i in range(depth):
        p, q = f"blocks.{i}.", f"vit.encoder.layer.{i}."
        for t, h in pairs:
            for s in ("weight", "bias"):
                hf[q + h + "." + s] = timm[p + t + "." + s]
        for s in ("weight", "bias"):
            for j, n in enumerate(("query", "key", "value")):
                hf[q + "attention.attention." + n + "." + s] = timm[p + "attn.qkv." + s][j * D : (j + 1) * D]
    return hf


# ---- PEFT -------------------------------------------------------------------------------------------


def pattern_value(patterns, module, default):
    for p in patterns:  # PEFT's get_pattern_key: the first matching key, in the dict's order
        if re.match(rf"(.*\.)?({p})$", module):
            return patterns[p]
    return default


def is_target(target_modules, module):
    if isinstance(target_modules, str):
        return re.fullmatch(target_modules, module) is not None
    return any(module == t or module.endswith("." + t) for t in target_modules)


def load_peft(adir):
    with open(os.path.join(adir, "adapter_config.json")) as f:
        cfg = json.load(f)
    assert cfg["peft_type"] == "LORA" and cfg.get("bias", "none") == "none", cfg
    sd = st_load(os.path.join(adir, "adapter_model.safetensors"))
    prefix, lora, head = "base_model.model.", {}, None
    for k in sd:
        assert k.startswith(prefix), k
        if not k.endswith(".lora_A.weight"):
            continue
        module = k[len(prefix) : -len(".lora_A.weight")]
        assert is_target(cfg["target_modules"], module), module
        # A Conv2d's (patch_embed.proj) factors are kernels: A (r,C,P,P), B (out,r,1,1); flatten them.
        A = sd[k].double().flatten(1)
        B = sd[prefix + module + ".lora_B.weight"].double().flatten(1)
        r = pattern_value(cfg.get("rank_pattern") or {}, module, cfg["r"])
        alpha = pattern_value(cfg.get("alpha_pattern") or {}, module, cfg["lora_alpha"])
        assert A.shape[0] == r and B.shape[1] == r, (module, A.shape, B.shape, r)
        lora[module] = (A, B, alpha / (math.sqrt(r) if cfg.get("use_rslora") else r))
    for m in cfg.get("modules_to_save") or []:
        head = (sd[prefix + m + ".weight"].double(), sd[prefix + m + ".bias"].double())
    return lora, head


def peft_apply(a):
    sd = {k: v.double() for k, v in st_load(a.base).items()}
    lora, head = load_peft(a.adapter)
    x = st_load(a.io)["x"].double()
    st_save(a.out, {"logits": forward_any(sd, x, a.heads, a.eps, lora, head).float()})


def random_factors(g, w, rank):
    A = (torch.rand(rank, w.shape[1], generator=g) * 2 - 1) / math.sqrt(w.shape[1])
    B = 0.5 * torch.randn(w.shape[0], rank, generator=g)  # trained: not PEFT's zero init
    return A, B


def peft_make(a):
    """A timm-layout adapter with full module names, or (HF base) one with the short names people use."""
    g = torch.Generator().manual_seed(a.seed)
    sd = {k: v.double() for k, v in st_load(a.base).items()}
    hf = "vit.embeddings.cls_token" in sd
    r, alpha = 4, 8.0
    tensors, rank_pattern, alpha_pattern, targets = {}, {}, {}, []
    if hf:
        depth = len({k.split(".")[3] for k in sd if k.startswith("vit.encoder.layer.")})
        targets = ["query", "value", "intermediate.dense"]
        rank_pattern = {"layer.1.attention.attention.value": 6, "value": 3, "intermediate.dense": 2}
        alpha_pattern = {"intermediate.dense": 3.0}
        for i in range(depth):
            for name in ("attention.attention.query", "attention.attention.value", "intermediate.dense"):
                module = f"vit.encoder.layer.{i}.{name}"
                rank = pattern_value(rank_pattern, module, r)
                A, B = random_factors(g, sd[module + ".weight"], rank)
                tensors[f"base_model.model.{module}.lora_A.weight"] = A
                tensors[f"base_model.model.{module}.lora_B.weight"] = B
        D, head = sd["vit.embeddings.cls_token"].shape[-1], "classifier"
    else:
        depth = len({k.split(".")[1] for k in sd if k.startswith("blocks.")})
        for i in range(depth):
            for name in ("attn.qkv", "attn.proj", "mlp.fc1", "mlp.fc2"):
                module = f"blocks.{i}.{name}"
                if i == depth - 1 and name == "attn.proj":
                    continue  # left out: not a target
                targets.append(module)
                rank = {"attn.qkv": 4, "attn.proj": 2, "mlp.fc1": 3, "mlp.fc2": 4}[name] + (i % 2)
                if rank != r:
                    rank_pattern[module] = rank
                if name == "mlp.fc1":
                    alpha_pattern[module] = 5.0 + i
                A, B = random_factors(g, sd[module + ".weight"], rank)
                tensors[f"base_model.model.{module}.lora_A.weight"] = A
                tensors[f"base_model.model.{module}.lora_B.weight"] = B
        D, head = sd["cls_token"].shape[-1], "head"
    hw, hb = rand_linear(g, a.classes, D)
    tensors[f"base_model.model.{head}.weight"], tensors[f"base_model.model.{head}.bias"] = hw, hb
    config = {
        "peft_type": "LORA", "r": r, "lora_alpha": alpha, "lora_dropout": 0.0, "target_modules": targets,
        "rank_pattern": rank_pattern, "alpha_pattern": alpha_pattern, "modules_to_save": [head],
        "bias": "none", "fan_in_fan_out": False, "use_rslora": False, "use_dora": False,
        "base_model_name_or_path": "random-vit", "task_type": None, "inference_mode": True,
    }
    os.makedirs(a.out, exist_ok=True)
    st_save(os.path.join(a.out, "adapter_model.safetensors"), tensors, {"format": "pt"})
    with open(os.path.join(a.out, "adapter_config.json"), "w") as f:
        json.dump(config, f, indent=2)
    lora, head_w = load_peft(a.out)
    x = st_load(a.io)["x"].double()
    logits = forward_any(sd, x, a.heads, a.eps, lora, head_w)
    st_save(os.path.join(a.out, "logits.safetensors"), {"logits": logits.float()})


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("base")
    b.add_argument("--layout", choices=["timm", "hf"], required=True)
    for k, v in (("img", 32), ("patch", 8), ("dim", 48), ("depth", 2), ("heads", 3), ("mlp", 96), ("classes", 5),
                 ("n", 3), ("seed", 1)):
        b.add_argument("--" + k, type=int, default=v)
    b.add_argument("--eps", type=float, default=1e-6)
    b.add_argument("--dtype", choices=["F32", "F16", "BF16"], default="F32")
    b.add_argument("--out", required=True)
    for name in ("peft-apply", "peft-make"):
        p = sub.add_parser(name)
        p.add_argument("--base", required=True)
        p.add_argument("--io", required=True)
        p.add_argument("--heads", type=int, required=True)
        p.add_argument("--eps", type=float, required=True)
        p.add_argument("--out", required=True)
        if name == "peft-apply":
            p.add_argument("--adapter", required=True)
        else:
            p.add_argument("--seed", type=int, default=2)
            p.add_argument("--classes", type=int, default=7)
    # Several commands may share one run (importing torch costs more than the work): CMD ... + CMD ...
    argv, cmds = sys.argv[1:], [[]]
    for word in argv:
        if word == "+":
            cmds.append([])
        else:
            cmds[-1].append(word)
    torch.set_num_threads(1)
    for c in cmds:
        a = ap.parse_args(c)
        {"base": make_base, "peft-apply": peft_apply, "peft-make": peft_make}[a.cmd](a)


if __name__ == "__main__":
    main()
