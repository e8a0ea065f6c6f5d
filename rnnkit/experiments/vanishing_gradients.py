r"""Vanishing and exploding gradients, made visible: ||dL/dh_t|| against the distance T - t.

Back-propagation through time multiplies the error signal by the Jacobian dh_{t+1}/dh_t once per step:

.. math::
    \frac{\partial L}{\partial h_t} = \frac{\partial L}{\partial h_T} \prod_{k=t}^{T-1}
    \frac{\partial h_{k+1}}{\partial h_k}, \qquad
    \frac{\partial h_{k+1}}{\partial h_k} = \mathrm{diag}(1 - h_{k+1}^2)\, W_{hh}   \text{ (tanh RNN)}

so for a tanh RNN its norm shrinks geometrically when the largest singular value of W_hh (times the tanh
slope) is below 1 and can grow geometrically when it is above (Bengio et al. 1994; Pascanu et al. 2013,
section 2). The LSTM's cell state carries the signal through c_t = f_t * c_{t-1} + ..., scaled by the forget
gate f_t at each step instead of by a weight matrix (Hochreiter & Schmidhuber 1997); the GRU's update gate
does the same through h_t = (1 - z_t) * n_t + z_t * h_{t-1} (Cho et al. 2014).

What this experiment measures, on the adding problem at T = 100 (the task of ``rnnkit experiment adding``,
with the same models and training):

1. ||dL/dh_t|| for every step t (:func:`rnnkit.diagnostics.diagnose`, computed in float64 so that tiny values
   do not underflow to 0) for a tanh RNN, an LSTM (forget-gate bias 1), an LSTM with torch's default
   initialisation (forget bias 0, so f_t starts near 0.5) and a GRU, at initialisation and after training;
   the figure of merit is the ratio far / near = ||dL/dh_1|| / ||dL/dh_T||;
2. the exploding case: a tanh RNN whose W_hh is an orthogonal matrix times ``explode_scale`` (2), its
   gradient norm at initialisation growing with distance, and training it with plain SGD (Pascanu et al.
   2013 used SGD) with and without clipping the gradient's global norm at 1: the step sizes, the largest
   gradient norm met, non-finite losses and the test MSE.

Quick setting: fewer training steps, the same measurements.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from rnnkit.checks import check_choice
from rnnkit.data.generated import adding_problem
from rnnkit.diagnostics import diagnose, plot_gates, plot_gradient_norms
from rnnkit.experiments.adding import BASELINE_MSE
from rnnkit.experiments.harness import (
    CELL_LABELS,
    finish,
    fit,
    mean_squared_error,
    memory_regressor,
    plot_curves,
    threads,
)

__all__ = ["VanishingConfig", "QUICK", "FULL", "MODELS", "gradient_profile", "run_config", "run"]

#: The models compared: label -> (cell, forget-gate bias or None for torch's default initialisation).
MODELS = {
    "rnn": ("rnn", None),
    "lstm": ("lstm", 1.0),
    "lstm_forget_bias_0": ("lstm", None),
    "gru": ("gru", None),
}
LABELS = {"rnn": CELL_LABELS["rnn"], "lstm": "LSTM (forget bias 1)", "lstm_forget_bias_0": "LSTM (forget bias 0)",
          "gru": CELL_LABELS["gru"]}


@dataclass
class VanishingConfig:
    """Settings (defaults: the full setting)."""

    T: int = 100
    models: tuple[str, ...] = tuple(MODELS)
    hidden_size: int = 64
    probe_size: int = 256  # test sequences in the batch the gradients are measured on
    train_steps: int = 2000
    batch_size: int = 64
    lr: float = 1e-2
    clip_norm: float = 1.0
    train_size: int = 50_000
    explode_scale: float = 2.0
    explode_steps: int = 300
    explode_lr: float = 0.1
    explode_clip_norm: float = 1.0
    seed: int = 0
    threads: int | None = None


FULL = VanishingConfig()
QUICK = VanishingConfig(train_steps=250, train_size=16_000, explode_steps=100)


def gradient_profile(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor) -> dict[str, Any]:
    """||dL/dh_t|| per step of the model's (one) recurrent layer for the MSE loss, computed in float64, and
    the gate statistics of that batch."""
    probe = copy.deepcopy(model).double().eval()
    result = diagnose(probe, lambda m: m.loss(m(inputs.double()), targets.double()))
    trace = result.layers[0]
    norms = trace.grad_norm
    far_near = norms[0] / norms[-1] if norms[-1] > 0 else math.nan
    return {
        "grad_norm": norms,
        "far_near_ratio": far_near,
        # the geometric-mean factor per step: (far / near)^(1 / (T - 1))
        "per_step_factor": far_near ** (1.0 / (len(norms) - 1)) if far_near > 0 else 0.0,
        "trace": trace,
    }


def _orthogonal_recurrence(model: nn.Module, scale: float, seed: int) -> None:
    """W_hh = scale * Q, Q a random orthogonal matrix: every singular value equals ``scale``."""
    generator = torch.Generator().manual_seed(seed)
    for name, parameter in model.named_parameters():
        if "weight_hh" in name:
            with torch.no_grad():
                q, r = torch.linalg.qr(torch.randn(parameter.shape, generator=generator, dtype=torch.float64))
                q = q * torch.sign(torch.diagonal(r))  # a uniformly random orthogonal matrix (Mezzadri 2007)
                parameter.copy_(scale * q)


def run_config(config: VanishingConfig, out: Path) -> dict[str, Any]:
    """Run the experiment with ``config``, write the report into ``out`` and return its figures."""
    for name in config.models:
        check_choice("model", name, MODELS)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    train = adding_problem("train", config.train_size, config.T, seed=config.seed)
    test = adding_problem("test", max(config.probe_size, 1000), config.T, seed=config.seed)
    inputs, targets = torch.from_numpy(train.inputs), torch.from_numpy(train.targets)
    test_inputs, test_targets = torch.from_numpy(test.inputs), torch.from_numpy(test.targets)
    probe_inputs, probe_targets = test_inputs[: config.probe_size], test_targets[: config.probe_size]

    def batches(index):
        return (inputs[index],), targets[index]

    figures: dict[str, Any] = {"T": config.T, "train_steps": config.train_steps, "models": {}}
    initial, trained, traces = {}, {}, {}
    with threads(config.threads):
        for name in config.models:
            cell, forget_bias = MODELS[name]
            torch.manual_seed(config.seed)
            model = memory_regressor(cell, 2, config.hidden_size, forget_bias=forget_bias)
            before = gradient_profile(model, probe_inputs, probe_targets)
            log = fit(model, batches, len(inputs), steps=config.train_steps, batch_size=config.batch_size,
                      lr=config.lr, clip_norm=config.clip_norm, seed=config.seed)
            after = gradient_profile(model, probe_inputs, probe_targets)
            initial[name], trained[name], traces[name] = before["grad_norm"], after["grad_norm"], after["trace"]
            figures["models"][name] = {
                "label": LABELS[name],
                "init_far_near_ratio": before["far_near_ratio"],
                "init_per_step_factor": before["per_step_factor"],
                "trained_far_near_ratio": after["far_near_ratio"],
                "trained_per_step_factor": after["per_step_factor"],
                "test_mse_after_training": mean_squared_error(model, test_inputs, test_targets),
                "train_seconds": log.seconds,
                "init_grad_norm": before["grad_norm"],
                "trained_grad_norm": after["grad_norm"],
            }
        exploding = _exploding(config, out, batches, len(inputs), probe_inputs, probe_targets, test_inputs,
                               test_targets)
    figures["exploding"] = exploding.pop("figures")
    plots = [
        plot_gradient_norms({LABELS[n]: initial[n] for n in config.models}, out / "gradients_init.png",
                            normalise=True, title=f"At initialisation (adding problem, T = {config.T})"),
        plot_gradient_norms({LABELS[n]: trained[n] for n in config.models}, out / "gradients_trained.png",
                            normalise=True, title=f"After {config.train_steps} training steps"),
    ]
    for name in config.models:
        if traces[name].gates:
            plots.append(plot_gates(traces[name], out / f"gates_{name}.png",
                                    title=f"{LABELS[name]} gates after training (test batch)"))
    plots += exploding["plots"]
    table = {
        LABELS[n]: f"init {f['init_far_near_ratio']:.3g} (x{f['init_per_step_factor']:.3f} per step), "
                   f"trained {f['trained_far_near_ratio']:.3g} (x{f['trained_per_step_factor']:.3f} per step), "
                   f"test MSE {f['test_mse_after_training']:.4f}"
        for n, f in figures["models"].items()
    }
    explode_table = {
        label: f"max ||g|| {f['max_grad_norm']:.3g}, non-finite losses {f['non_finite_losses']}, "
               f"test MSE {f['final_test_mse']}"
        for label, f in figures["exploding"]["runs"].items()
    }
    text = [
        "||dL/dh_t|| is the norm over the batch and the units of the gradient of the batch's MSE with respect "
        "to the hidden state at step t, through every path (rnnkit.diagnostics). far/near = ||dL/dh_1|| / "
        "||dL/dh_T||; the per-step factor is its (T-1)-th root. Plots are normalised to 1 at the last step.",
        f"Exploding case: a tanh RNN with W_hh = {config.explode_scale} x orthogonal; at initialisation "
        f"far/near = {figures['exploding']['init_far_near_ratio']:.3g}. Trained with SGD (lr "
        f"{config.explode_lr}) with and without clipping the global gradient norm at {config.explode_clip_norm}.",
    ]
    return finish(out, "Vanishing and exploding gradients", figures, config=config, plots=plots,
                  tables={"gradient ratio far / near": table, "exploding gradients": explode_table}, text=text)


def _exploding(config: VanishingConfig, out: Path, batches, size: int, probe_inputs, probe_targets,
               test_inputs, test_targets) -> dict[str, Any]:
    """The large-recurrent-weight tanh RNN: gradient profile at initialisation, then SGD with / without clipping."""
    torch.manual_seed(config.seed)
    model = memory_regressor("rnn", 2, config.hidden_size)
    _orthogonal_recurrence(model, config.explode_scale, config.seed)
    profile = gradient_profile(model, probe_inputs, probe_targets)
    runs, logs = {}, {}
    for label, clip in (("no clipping", None), (f"clipped at {config.explode_clip_norm}", config.explode_clip_norm)):
        run_model = copy.deepcopy(model)
        start = [p.detach().clone() for p in run_model.parameters()]
        log = fit(run_model, batches, size, steps=config.explode_steps, batch_size=config.batch_size,
                  lr=config.explode_lr, clip_norm=clip, optimizer="sgd", seed=config.seed)
        moved = math.sqrt(sum(float((p.detach() - s).pow(2).sum()) for p, s in zip(run_model.parameters(), start,
                                                                                     strict=True)))
        finite = [v for v in log.step_grad_norms if math.isfinite(v)]
        runs[label] = {
            "max_grad_norm": max(finite) if finite else math.nan,
            "median_grad_norm": sorted(finite)[len(finite) // 2] if finite else math.nan,
            "non_finite_losses": sum(not math.isfinite(v) for v in log.step_losses),
            "final_test_mse": mean_squared_error(run_model, test_inputs, test_targets),
            "parameter_distance_moved": moved,
            "grad_norm_per_step": log.step_grad_norms,
            "loss_per_step": log.step_losses,
        }
        logs[label] = log
    steps = list(range(1, config.explode_steps + 1))
    plots = [
        plot_gradient_norms({f"tanh RNN, W_hh = {config.explode_scale} x orthogonal": profile["grad_norm"]},
                            out / "gradients_exploding_init.png", normalise=True,
                            title="Exploding: gradient norm at initialisation"),
        plot_curves({label: (steps, log.step_grad_norms) for label, log in logs.items()},
                    out / "exploding_grad_norm.png", title="Exploding: gradient norm before clipping (SGD)",
                    ylabel="||dL/dtheta||", log_y=True),
        plot_curves({label: (steps, log.step_losses) for label, log in logs.items()},
                    out / "exploding_loss.png", title="Exploding: training loss (SGD)", ylabel="batch MSE",
                    log_y=True, lines={"predict the mean: 1/6": BASELINE_MSE}),
    ]
    return {"figures": {"scale": config.explode_scale, "init_far_near_ratio": profile["far_near_ratio"],
                        "init_grad_norm": profile["grad_norm"], "baseline_mse": BASELINE_MSE, "runs": runs},
            "plots": plots}


def run(quick: bool, out: Path, seed: int = 0) -> dict[str, Any]:
    """The registry entry: the quick (CI) or full setting with ``seed``."""
    return run_config(replace(QUICK if quick else FULL, seed=seed), out)
