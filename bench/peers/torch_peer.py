#!/usr/bin/env python3
"""The PyTorch peer of `lossfuse bench`: every bench shape as a PyTorch user would write it.

`lossfuse bench --peer torch[:PYTHON]` runs this script once per shape on the inputs it dumped
(`lossfuse bench --dump-inputs DIR` writes the same files): DIR/<shape>.safetensors holds the
tensors the GPU read, bit for bit (reals F32, ids I64), and DIR/<shape>.json the shape's metadata
(family, rows, dim, bank, classes, the loss configs as TOML, lossfuse's first-step total loss).

A step is the forward pass of the shape's total loss (the sum of its terms, as lossfuse's fixed
strategy with unit weights sums them) and the backward pass to every differentiable input, with
autograd, timed with the clock around it (on CUDA, synchronised). Eager first; then, where it
works, torch.compile of the same step function as a second column.

Prints one JSON object on stdout:
  {"shape", "device", "threads", "torch", "loss", "eager": {"median_s", "min_s", "steps"},
   "compiled": {...} or null, "compiled_note": null or why not}
Exit status: 0 on success; 3 for a shape this peer does not know (JSON with "error");
4 when torch (or numpy, safetensors) cannot be imported (a message on stderr).

Formulas: docs/LOSSES.md of this repository; shapes and configs: tools/src/bench/shapes.rs.
"""

import argparse
import json
import statistics
import sys
import time

try:
    import torch
    import torch.nn.functional as F
    from safetensors.torch import load_file
except ImportError as e:  # lossfuse bench reports this and goes on
    print(f"torch peer: cannot import {e.name}: {e}", file=sys.stderr)
    sys.exit(4)


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--inputs", required=True, help="the folder lossfuse bench dumped the shape to")
    p.add_argument("--shape", required=True)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0: leave)")
    p.add_argument("--device", default="cpu", help="cpu or cuda (cuda falls back to cpu when "
                   "torch sees no GPU, and says so)")
    p.add_argument("--no-compile", action="store_true", help="skip the torch.compile column")
    p.add_argument("--time-budget", type=float, default=None,
                   help="stop timing once the timed steps add up to this many seconds")
    return p.parse_args(argv)


# ---------------------------------------------------------------------------------------------
# The shapes. Each builder takes (tensors, meta, device) and returns (step, leaves): `leaves` are
# the differentiable inputs (requires_grad), and `step()` computes the total loss, runs backward
# and returns the loss tensor (detached). Gradients are cleared by the harness between steps.
# ---------------------------------------------------------------------------------------------

SHAPES = {}


def shape(*names):
    def register(builder):
        for n in names:
            SHAPES[n] = builder
        return builder
    return register


def leaf(t):
    """A differentiable input: a float copy that autograd tracks."""
    return t.detach().float().requires_grad_(True)


def one_config(meta):
    """The single config text of a one-plan shape (the peer knows only those)."""
    (text,) = meta["configs"]
    return text


def binary_ce(x, y):
    """EasyRec `classification` (sigmoid CE), mean over rows (nonzero_mean without weights)."""
    return F.binary_cross_entropy_with_logits(x, y)


def binary_focal(x, y, gamma, alpha):
    """docs/LOSSES.md §2.5 without smoothing or OHEM: (1 − p_t)^γ·α_t·CE, p clipped to
    [1e-7, 1 − 1e-7], the modulator not detached; mean over rows."""
    p = torch.sigmoid(x).clamp(1e-7, 1 - 1e-7)
    p_t = y * p + (1 - y) * (1 - p)
    alpha_t = alpha * y + (1 - alpha) * (1 - y)
    ce = F.binary_cross_entropy_with_logits(x, y, reduction="none")
    return ((1 - p_t) ** gamma * alpha_t * ce).mean()


def sigmoid_l2(x, y):
    """EasyRec SIGMOID_L2_LOSS: mean of (σ(x) − y)²."""
    return ((torch.sigmoid(x) - y) ** 2).mean()


@shape("classification_64k", "classification_1m", "classification_16m", "classification_64m")
def classification(t, meta, device):
    x, y = leaf(t["logits"]), t["labels"].float()
    return (lambda: backward(binary_ce(x, y))), [x]


@shape("fused3_1m", "fused3_16m")
def fused3(t, meta, device):
    # classification + binary_focal_loss (γ = 2, α = 0.25) + sigmoid_l2_loss on one logits column.
    assert "gamma = 2.0" in one_config(meta) and "alpha = 0.25" in one_config(meta)
    x, y = leaf(t["logits"]), t["labels"].float()
    total = lambda: binary_ce(x, y) + binary_focal(x, y, 2.0, 0.25) + sigmoid_l2(x, y)
    return (lambda: backward(total())), [x]


@shape("separate3_1m")
def separate3(t, meta, device):
    # The fused3 terms as three plans (lossfuse's total is their sum); one step for PyTorch.
    assert len(meta["configs"]) == 3
    x, y = leaf(t["logits"]), t["labels"].float()
    total = lambda: binary_ce(x, y) + binary_focal(x, y, 2.0, 0.25) + sigmoid_l2(x, y)
    return (lambda: backward(total())), [x]


@shape("kd_softmax_4096x1024")
def kd_softmax(t, meta, device):
    # softmax_cross_entropy + kl_divergence_loss (T = 2) on one logits tensor, docs/LOSSES.md
    # §10.2: Keras' KLD of softmax(teacher/T) and softmax(student/T), both clipped below at 1e-7,
    # mean over rows; the teacher gets no gradient.
    assert "temperature = 2.0" in one_config(meta)
    x, y = leaf(t["logits"]), t["labels"].long()
    q = F.softmax(t["teacher"].float() / 2.0, dim=1).clamp_min(1e-7)

    def total():
        p = F.softmax(x / 2.0, dim=1).clamp_min(1e-7)
        kl = (q * (q.log() - p.log())).sum(dim=1).mean()
        return F.cross_entropy(x, y) + kl
    return (lambda: backward(total())), [x]


@shape("softmax_ce_4096x8192", "softmax_ce_16384x131072")
def softmax_ce(t, meta, device):
    x, y = leaf(t["logits"]), t["labels"].long()
    return (lambda: backward(F.cross_entropy(x, y))), [x]


@shape("in_batch_4096_d64", "in_batch_16384_d128", "in_batch_65536_d128")
def in_batch(t, meta, device):
    # docs/LOSSES.md §7.1: s_ij = cos(u_i, v_j)/T − log_q_j; columns j ≠ i with id_j = id_i
    # removed; mean over rows of lse_j(s_ij) − s_ii.
    text = one_config(meta)
    assert "similarity = 'cosine'" in text and "temperature = 0.05" in text
    u, v = leaf(t["user"]), leaf(t["item"])
    ids, log_q = t["item_id"].long(), t["log_q"].float()
    hits = ids[:, None] == ids[None, :]
    hits.fill_diagonal_(False)
    target = torch.arange(u.shape[0], device=u.device)

    def total():
        s = F.normalize(u, dim=1) @ F.normalize(v, dim=1).T / 0.05 - log_q[None, :]
        return F.cross_entropy(s.masked_fill(hits, float("-inf")), target)
    return (lambda: backward(total())), [u, v]


def backward(loss):
    loss.backward()
    return loss.detach()


# ---------------------------------------------------------------------------------------------
# The harness.
# ---------------------------------------------------------------------------------------------

def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def time_steps(step, leaves, device, steps, warmup, budget):
    """Median and min seconds of `steps` timed steps after `warmup` untimed ones; the first
    step's loss."""
    first = None
    times = []
    for k in range(warmup + steps):
        for t in leaves:
            t.grad = None
        sync(device)
        start = time.perf_counter()
        loss = step()
        sync(device)
        elapsed = time.perf_counter() - start
        if first is None:
            first = float(loss)
        if k >= warmup:
            times.append(elapsed)
            if budget is not None and sum(times) >= budget:
                break
    return first, {"median_s": statistics.median(times), "min_s": min(times), "steps": len(times)}


def main(argv):
    args = parse_args(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    device = torch.device("cpu")
    note = None
    if args.device == "cuda":
        if torch.cuda.is_available():
            device = torch.device("cuda")
        else:
            note = "torch sees no CUDA device: ran on the CPU"
    builder = SHAPES.get(args.shape)
    if builder is None:
        print(json.dumps({"shape": args.shape, "error": "the torch peer does not know this shape"}))
        return 3
    with open(f"{args.inputs}/{args.shape}.json") as f:
        meta = json.load(f)
    tensors = {k: v.to(device) for k, v in load_file(f"{args.inputs}/{args.shape}.safetensors").items()}
    step, leaves = builder(tensors, meta, device)
    loss, eager = time_steps(step, leaves, device, args.steps, args.warmup, args.time_budget)
    compiled, compiled_note = None, None
    if args.no_compile:
        compiled_note = "skipped (--no-compile)"
    else:
        try:
            fast = torch.compile(step)
            _, compiled = time_steps(fast, leaves, device, args.steps, max(args.warmup, 1),
                                     args.time_budget)
        except Exception as e:  # a compiler missing or failing is a note, not a failure
            compiled_note = f"torch.compile failed: {type(e).__name__}: {str(e).splitlines()[0][:200]}"
    out = {
        "shape": args.shape,
        "device": str(device),
        "device_note": note,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "loss": loss,
        "eager": eager,
        "compiled": compiled,
        "compiled_note": compiled_note,
    }
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
