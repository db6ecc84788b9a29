"""L1–L3: the runner on the mlp objective (full batch, mini-batch, 100 batched starts), and the
cost of the batch-independent product schemes. Run alone: python benchmarks/bench_learning.py."""
from __future__ import annotations

import sys

import numpy as np

from common import bare_gd, cpu, goal, goal_line, interleave, paired_ratio, say

LR = 0.1


def _mlp():
    from gdexp.objectives import data, learning

    # moons, 200 samples (160 for training), 2-20-20-1 tanh: 501 parameters
    return learning.mlp(data.moons(n_samples=200, test_fraction=0.2), hidden=[20, 20])


def l1_full_batch(steps: int, rounds: int) -> dict:
    from gdexp import descent
    from gdexp.optimizers import OPTIMIZERS

    obj = _mlp()
    x0 = obj.init_model(np.random.default_rng(0), 1)[:, 0]
    say(f"L1: full-batch GD on mlp (d={obj.dim}) vs bare value_and_grad, {steps} steps")

    bare = bare_gd(obj.f, x0, LR, steps)

    def runner():
        return descent.run(obj, x0, OPTIMIZERS["gd"](), LR, max_steps=steps)

    assert np.allclose(runner().x[:, 0], bare(), rtol=0, atol=1e-12)
    s = interleave({"runner": cpu(runner), "bare": cpu(bare)}, rounds, "L1")
    st = paired_ratio(s["runner"], s["bare"])
    return goal("L1", "mlp full-batch GD per step / bare value_and_grad loop", st["ratio"],
                1.10, "<=", details={"steps": steps, "dim": obj.dim, **st,
                                     "bare_ms_per_step": min(s["bare"]) / steps * 1e3})


def l2_minibatch(steps: int, rounds: int, batch: int = 32) -> dict:
    from autograd import value_and_grad

    from gdexp import descent
    from gdexp.optimizers import OPTIMIZERS
    from gdexp.sampling import BatchSampler

    obj = _mlp()
    x0 = obj.init_model(np.random.default_rng(0), 1)[:, 0]
    say(f"L2: SGD step (batch {batch}) vs bare loop with the same sampler, {steps} steps")

    def bare():
        vg = value_and_grad(obj.f)
        sampler = BatchSampler(0, obj.n_samples, batch, "epoch")
        x = x0.copy()
        for k in range(steps):
            _, g = vg(x, sampler(k))
            x = x - LR * g
        return x

    def runner():
        # one full-batch evaluation at the start and at the end only: the step's own cost
        return descent.run(obj, x0, OPTIMIZERS["gd"](), LR, max_steps=steps, batch_size=batch,
                           eval_every=steps)

    assert np.allclose(runner().x[:, 0], bare(), rtol=0, atol=1e-12)
    s = interleave({"runner": cpu(runner), "bare": cpu(bare)}, rounds, "L2")
    st = paired_ratio(s["runner"], s["bare"])
    return goal("L2", f"mlp mini-batch (b={batch}) step / bare loop, same sampling",
                st["ratio"], 1.15, "<=", details={"steps": steps, **st})


def l3_batched(steps: int, rounds: int, n: int = 100) -> dict:
    from gdexp import descent
    from gdexp.optimizers import OPTIMIZERS

    obj = _mlp()
    x = obj.init_model(np.random.default_rng(1), n)
    say(f"L3: {n} batched starts vs one on mlp, {steps} steps")

    def batched():
        return descent.run(obj, x, OPTIMIZERS["gd"](), LR, max_steps=steps)

    def single():
        return descent.run(obj, x[:, 0], OPTIMIZERS["gd"](), LR, max_steps=steps)

    s = interleave({"batched": cpu(batched), "single": cpu(single)}, rounds, "L3")
    st = paired_ratio(s["batched"], s["single"], scale=1.0 / n)
    return goal("L3", f"mlp n={n} per trajectory-step / n=1", st["ratio"], 1 / 20, "<=",
                details={"steps": steps, "n": n, **st})


def schemes(rounds: int, n: int = 100) -> dict:
    """value_and_grad of the mlp loss under three product schemes, n starts: the stacked
    per-start matmul gdexp uses, colsum/contract (cumulative sums), and one shared BLAS
    product over all starts (fast, but not batch-independent)."""
    import autograd.numpy as anp

    from gdexp.descent import batched_value_and_grad
    from gdexp.objectives import colsum

    obj = _mlp()
    from gdexp.objectives import data
    ds = data.moons(n_samples=200, test_fraction=0.2)
    xtr, ytr = ds.x_train, ds.y_train
    sizes = [2, 20, 20, 1]

    def unpack(x):
        o, out = 0, []
        for a, b in zip(sizes[:-1], sizes[1:]):
            w = anp.reshape(x[o:o + a * b], (a, b, -1)); o += a * b
            bb = x[o:o + b]; o += b
            out.append((w, bb))
        return out

    def loss_colsum(x):  # h (m, a, n), w (a, b, n): sum over a with colsum
        h = anp.repeat(xtr[:, :, None], x.shape[1], axis=2)
        layers = unpack(x)
        for i, (w, b) in enumerate(layers):
            h = colsum(h[:, :, None, :] * w[None, :, :, :], axis=1) + b[None, :, :]
            if i < len(layers) - 1:
                h = anp.tanh(h)
        z = h[:, 0, :]
        per = anp.logaddexp(0.0, z) - ytr[:, None] * z
        return colsum(per, axis=0) / xtr.shape[0]

    def loss_shared(x):  # one einsum over all starts: BLAS sees a different shape per n
        h = anp.repeat(xtr[:, :, None], x.shape[1], axis=2)
        layers = unpack(x)
        for i, (w, b) in enumerate(layers):
            h = anp.einsum("man,abn->mbn", h, w) + b[None, :, :]
            if i < len(layers) - 1:
                h = anp.tanh(h)
        z = h[:, 0, :]
        per = anp.logaddexp(0.0, z) - ytr[:, None] * z
        return anp.mean(per, axis=0)

    x = obj.init_model(np.random.default_rng(2), n)
    np.testing.assert_allclose(loss_colsum(x), obj.f(x), rtol=1e-10)
    np.testing.assert_allclose(loss_shared(x), obj.f(x), rtol=1e-10)
    vgs = {"stacked": batched_value_and_grad(obj.f),
           "colsum": batched_value_and_grad(loss_colsum),
           "shared_einsum": batched_value_and_grad(loss_shared)}
    say(f"schemes: stacked matmul vs colsum vs a shared einsum, n={n}")
    reps = 20
    sides = {k: cpu(lambda vg=vg: [vg(x) for _ in range(reps)]) for k, vg in vgs.items()}
    s = interleave(sides, rounds, "schemes")
    ms = {k: min(v) / reps * 1e3 for k, v in s.items()}
    return goal("S1", f"colsum scheme / stacked matmul, mlp n={n} (information)",
                paired_ratio(s["colsum"], s["stacked"])["ratio"], float("inf"), "<=",
                details={"ms_per_value_and_grad": ms,
                         "shared_over_stacked": paired_ratio(s["shared_einsum"],
                                                             s["stacked"])["ratio"]})


def main() -> int:
    quick = "--quick" in sys.argv
    rows = [l1_full_batch(200, 5 if quick else 15), l2_minibatch(300, 5 if quick else 15),
            l3_batched(50 if quick else 100, 3 if quick else 7), schemes(3 if quick else 5)]
    for r in rows:
        print(goal_line(r, f"{r['details'].get('ms_per_value_and_grad', '')} "
                           f"{r['details'].get('shared_over_stacked', '')}"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
