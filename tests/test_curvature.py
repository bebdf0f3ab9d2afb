"""The retain-curvature step (precondition: retain): the direction that moves retain outputs least."""

import torch

from razor.components import Component, Slice
from razor.curvature import preconditioned


def _retain_inputs(n=256, k=6, seed=0):
    """Retain inputs that mostly use the first half of the input space."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, k, generator=g, dtype=torch.float64)
    x[:, k // 2:] *= 0.05
    return x


def test_the_shaped_step_buys_the_same_forget_gain_for_less_retain_drift():
    x = _retain_inputs()
    moments = {"w": x.T @ x / len(x)}
    d = {"w": torch.randn(4, 6, generator=torch.Generator().manual_seed(1), dtype=torch.float64)}
    c = Component("t.0.v", "t", 0, "v", (Slice("w"),))
    shaped = preconditioned(c, d, moments, damping=1e-6)["w"]

    def drift_per_gain(step):  # ‖ΔW·X_r‖² for the step scaled to forget gain ⟨d, ΔW⟩ = 1
        step = step / (d["w"] * step).sum()
        return ((x @ step.T) ** 2).sum().item()

    assert drift_per_gain(shaped) < 0.2 * drift_per_gain(d["w"])
    for seed in range(5):  # and no other direction does better: the shaped step is the minimiser
        other = shaped + 0.1 * torch.randn(4, 6, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
        assert drift_per_gain(shaped) <= drift_per_gain(other) + 1e-9


def test_a_head_shapes_its_rows_by_the_whole_moment_and_its_out_columns_by_their_block():
    x = _retain_inputs()
    m = x.T @ x / len(x)
    moments = {"v": m, "out": m}
    g = torch.Generator().manual_seed(2)
    d = {"v": torch.randn(6, 6, generator=g, dtype=torch.float64), "out": torch.randn(6, 6, generator=g, dtype=torch.float64)}
    original = {n: t.clone() for n, t in d.items()}
    head = Component("t.0.head1", "t", 0, "head", (Slice("v", 0, 2, 4), Slice("out", 1, 2, 4)))
    shaped = preconditioned(head, d, moments, damping=0.01)

    def ridge(a):
        return a + 0.01 * a.trace() / len(a) * torch.eye(len(a), dtype=a.dtype)

    assert torch.allclose(shaped["v"][2:4], d["v"][2:4] @ torch.linalg.inv(ridge(m)))
    assert torch.allclose(shaped["out"][:, 2:4], d["out"][:, 2:4] @ torch.linalg.inv(ridge(m[2:4, 2:4])))
    assert torch.equal(shaped["v"][:2], d["v"][:2]) and torch.equal(shaped["out"][:, 4:], d["out"][:, 4:])
    assert all(torch.equal(d[n], original[n]) for n in d)  # the shared direction is not touched
