"""Adam for the recipes, without ``torch.optim``.

``torch.optim``'s optimisers are wrapped in ``torch._disable_dynamo`` decorators that import
``torch._dynamo`` on first use: 1.5 s on a quiet machine (11 s on a busy one) before the first
step, for a compiler the recipes never use. This is Adam (Kingma & Ba 2015) with the exact
arithmetic of ``torch.optim.Adam``'s single-tensor path, the one torch takes for CPU tensors
(no weight decay, no amsgrad)::

    m = lerp(m, g, 1 - beta1)                   # exp_avg
    v = beta2 * v + (1 - beta2) * g * g         # exp_avg_sq
    p -= lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)

so a recipe trains bit for bit as it did with ``torch.optim.Adam`` (tested), and its
``state_dict`` has ``torch.optim.Adam``'s layout, so checkpoints written by either resume with
either.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch


class Adam:
    """``torch.optim.Adam(params, lr, betas, eps)`` for one parameter group."""

    def __init__(
        self,
        params: Iterable[torch.nn.Parameter],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
    ) -> None:
        self.params = list(params)
        self.lr = float(lr)
        self.betas = (float(betas[0]), float(betas[1]))
        self.eps = float(eps)
        # per parameter, as torch: (steps taken, exp_avg, exp_avg_sq); a parameter without a
        # gradient in a step keeps its count
        self.state: dict[int, dict[str, torch.Tensor]] = {}

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        beta1, beta2 = self.betas
        for i, p in enumerate(self.params):
            if p.grad is None:
                continue
            state = self.state.get(i)
            if state is None:
                state = self.state[i] = {
                    "step": torch.tensor(0.0, dtype=torch.float32),
                    "exp_avg": torch.zeros_like(p, memory_format=torch.preserve_format),
                    "exp_avg_sq": torch.zeros_like(p, memory_format=torch.preserve_format),
                }
            grad, exp_avg, exp_avg_sq = p.grad, state["exp_avg"], state["exp_avg_sq"]
            state["step"] += 1
            exp_avg.lerp_(grad, 1 - beta1)
            exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
            t = state["step"].item()
            step_size = self.lr / (1 - beta1**t)
            denom = (exp_avg_sq.sqrt() / (1 - beta2**t) ** 0.5).add_(self.eps)
            p.addcdiv_(exp_avg, denom, value=-step_size)

    def state_dict(self) -> dict:
        """The layout of ``torch.optim.Adam.state_dict()`` (one parameter group)."""
        group = {
            "lr": self.lr,
            "betas": self.betas,
            "eps": self.eps,
            "weight_decay": 0,
            "amsgrad": False,
            "maximize": False,
            "foreach": None,
            "capturable": False,
            "differentiable": False,
            "fused": None,
            "decoupled_weight_decay": False,
            "params": list(range(len(self.params))),
        }
        state = {i: {k: v.clone() for k, v in s.items()} for i, s in self.state.items()}
        return {"state": state, "param_groups": [group]}

    def load_state_dict(self, data: dict) -> None:
        """Restore from ``state_dict()`` output of this class or of ``torch.optim.Adam``."""
        groups = data["param_groups"]
        if len(groups) != 1 or len(groups[0]["params"]) != len(self.params):
            raise ValueError("optimiser state does not match the model's parameters")
        group = groups[0]
        self.lr, self.eps = float(group["lr"]), float(group["eps"])
        self.betas = (float(group["betas"][0]), float(group["betas"][1]))
        state = {}
        for key, s in data["state"].items():
            i = int(key)
            if not 0 <= i < len(self.params) or s["exp_avg"].shape != self.params[i].shape:
                raise ValueError(f"optimiser state for parameter {key} does not match the model")
            step = torch.as_tensor(s["step"], dtype=torch.float32).reshape(())
            state[i] = {"step": step.clone(), **{k: s[k].clone() for k in ("exp_avg", "exp_avg_sq")}}
        self.state = state
