#!/usr/bin/python3
"""PyTorch reference for `make bench`: the same models and LoRA setup as `clad-bench speed`.

vit-tiny (28x28x1, patch 4, dim 64, depth 4, 4 heads, MLP 128, pre-LayerNorm, tanh GELU, 10 classes) and
mlp (784-256-256-10, tanh GELU), LoRA rank 8 alpha 16 on every linear inside the blocks (vit) or every
hidden linear (mlp), the head trained, the rest frozen, AdamW on the trainable parameters, batch 128.
Inference at batch 1 and 128, with the LoRA branch unmerged (as PEFT runs it) and merged into the weights.
Full training: a fresh model of the same shape with every weight trained (no LoRA), AdamW, batch 128.

PyTorch's speed on a small machine depends strongly on its thread settings, so the script runs itself once
per setting (threads 1 and N, OMP_WAIT_POLICY active and passive) in child processes and reports each and
the best. Output: one JSON object on stdout. Usage: torch_reference.py [--threads N] [--seconds S]
"""
import json
import math
import os
import subprocess
import sys
import time

SETTINGS_ENV = "CLAD_TORCH_SETTING"


def build(kind, lora=True):
    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    class LoRALinear(nn.Module):
        """A frozen linear with a LoRA branch, or (lora=False) a plain trained linear."""

        def __init__(self, i, o, r=8, alpha=16.0):
            super().__init__()
            self.base = nn.Linear(i, o)
            self.merged = not lora
            if not lora:
                return
            self.base.weight.requires_grad_(False)
            self.base.bias.requires_grad_(False)
            self.A = nn.Parameter(torch.randn(r, i) / math.sqrt(i))
            self.B = nn.Parameter(torch.zeros(o, r))
            self.scale = alpha / r

        def merge(self):
            with torch.no_grad():
                self.base.weight += self.scale * self.B @ self.A
            self.merged = True

        def forward(self, x):
            y = self.base(x)
            if not self.merged:
                y = y + self.scale * F.linear(F.linear(x, self.A), self.B)
            return y

    def gelu(x):
        return F.gelu(x, approximate="tanh")

    class Block(nn.Module):
        def __init__(self, d, heads, m):
            super().__init__()
            self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
            self.qkv, self.proj = LoRALinear(d, 3 * d), LoRALinear(d, d)
            self.fc1, self.fc2 = LoRALinear(d, m), LoRALinear(m, d)
            self.heads = heads
            for p in list(self.ln1.parameters()) + list(self.ln2.parameters()):
                p.requires_grad_(not lora)

        def forward(self, x):
            B, T, C = x.shape
            q, k, v = self.qkv(self.ln1(x)).view(B, T, 3, self.heads, C // self.heads).permute(2, 0, 3, 1, 4)
            a = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(C // self.heads), dim=-1)
            x = x + self.proj((a @ v).transpose(1, 2).reshape(B, T, C))
            return x + self.fc2(gelu(self.fc1(self.ln2(x))))

    class ViT(nn.Module):
        def __init__(self, d=64, depth=4, heads=4, m=128, patch=4, classes=10):
            super().__init__()
            self.patch = nn.Conv2d(1, d, patch, patch)
            self.cls = nn.Parameter(torch.zeros(1, 1, d), requires_grad=not lora)
            self.pos = nn.Parameter(torch.zeros(1, (28 // patch) ** 2 + 1, d), requires_grad=not lora)
            self.blocks = nn.ModuleList(Block(d, heads, m) for _ in range(depth))
            self.ln = nn.LayerNorm(d)
            self.head = nn.Linear(d, classes)
            for p in list(self.patch.parameters()) + list(self.ln.parameters()):
                p.requires_grad_(not lora)

        def forward(self, x):
            x = self.patch(x).flatten(2).transpose(1, 2)
            x = torch.cat([self.cls.expand(x.shape[0], -1, -1), x], 1) + self.pos
            for b in self.blocks:
                x = b(x)
            return self.head(self.ln(x[:, 0]))

    class MLP(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1, self.fc2 = LoRALinear(784, 256), LoRALinear(256, 256)
            self.head = nn.Linear(256, 10)

        def forward(self, x):
            return self.head(gelu(self.fc2(gelu(self.fc1(x.flatten(1))))))

    return ViT() if kind == "vit-tiny" else MLP()


def rate(fn, samples, seconds):
    fn()  # warm-up
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        fn()
        n += samples
    return n / (time.perf_counter() - t0)


def measure(threads, seconds):
    import torch
    import torch.nn.functional as F

    torch.set_num_threads(threads)
    torch.manual_seed(1)
    out = {}
    x = torch.rand(2048, 1, 28, 28)
    y = torch.randint(0, 10, (2048,))

    def train_rate(model):
        opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
        state = {"i": 0}

        def step():
            i = state["i"]
            state["i"] = (i + 128) % 2048
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(model(x[i:i + 128]), y[i:i + 128]).backward()
            opt.step()

        return rate(step, 128, seconds)

    for kind in ("mlp", "vit-tiny"):
        r = {"full_train_samples_per_s": train_rate(build(kind, lora=False))}
        model = build(kind)
        r["train_samples_per_s"] = train_rate(model)
        for merged in (False, True):
            if merged:
                for mod in model.modules():
                    if hasattr(mod, "merge"):
                        mod.merge()
            tag = "merged" if merged else "unmerged"
            with torch.inference_mode():
                for bs in (1, 128):
                    r[f"infer_b{bs}_{tag}"] = rate(lambda: model(x[:bs]), bs, seconds / 2)
        out[kind] = r
    return out


def main():
    args = sys.argv[1:]
    threads = int(args[args.index("--threads") + 1]) if "--threads" in args else os.cpu_count()
    seconds = float(args[args.index("--seconds") + 1]) if "--seconds" in args else 3.0
    if SETTINGS_ENV in os.environ:
        print(json.dumps(measure(int(os.environ[SETTINGS_ENV]), seconds)))
        return
    runs = []
    for t in sorted({1, threads}):
        for policy in ("ACTIVE", "PASSIVE"):
            env = dict(os.environ, OMP_WAIT_POLICY=policy, OPENBLAS_NUM_THREADS="1", **{SETTINGS_ENV: str(t)})
            res = subprocess.run([sys.executable, __file__, "--seconds", str(seconds)], env=env,
                                 capture_output=True, text=True, check=True)
            runs.append({"threads": t, "omp_wait_policy": policy, **json.loads(res.stdout)})
    best = {}
    for kind in ("mlp", "vit-tiny"):
        best[kind] = {k: max(r[kind][k] for r in runs) for k in runs[0][kind]}
    print(json.dumps({"torch_version": __import__("torch").__version__, "best": best, "runs": runs}))


if __name__ == "__main__":
    main()
