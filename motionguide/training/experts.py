"""Fine-tuning a model of several denoisers chosen by timestep (Wan2.2-T2V-A14B: `transformer` for
t >= boundary_ratio x 1000, the high-noise expert; `transformer_2` below it, the low-noise expert).

Each trained expert gets its own LoRA (same rank, alpha and target modules) and every sample's loss is computed
on the expert that owns its timestep, as the stock `WanPipeline` would run that timestep when sampling.

Why the batch is split by expert (and not one timestep range drawn per step): :class:`ExpertRouter` runs each
expert on its own rows of the batch and puts the predictions back in batch order, so the loss is the same mean
over the batch as for one transformer, with each sample's prediction from its expert. Its gradient with respect
to each LoRA is then exactly the gradient of that objective: a LoRA receives the gradient of its own samples'
share of the mean and nothing else. Drawing one range per step instead would change the timestep distribution of
every batch (all samples on one side of the boundary) and make each step's gradient a different, noisier
estimator; the split keeps the configured distribution and the RNG draws of the one-transformer loop.

An expert that saw no sample in an optimiser step (on any rank) does not step: its gradients are dropped before
clipping and AdamW (which skips a parameter without a gradient), so DDP (whose unused parameters can come back
with zero gradients) and a single process update the same weights. Clipping uses the joint norm of both LoRAs,
the gradient norm of the one two-expert model.

`experts` (the config field) trains both (default), or one: `high_noise` / `low_noise` add a LoRA to that expert
only and draw the training timesteps from the configured distribution conditioned on its range (the other
expert's timesteps would reach no trainable weight), by inverting the distribution's CDF.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import torch

from ..errors import ConfigError

#: values of the config field `experts`, and the expert indices each trains (0: transformer, 1: transformer_2)
EXPERT_CHOICES = {"both": (0, 1), "high_noise": (0,), "low_noise": (1,)}


def check_expert_settings(choice: str, training_type: str, num_experts: int) -> None:
    """One-line ConfigError for `experts` / `training_type` values the model's expert count cannot train:
    high_noise / low_noise on one transformer; a full fine-tune of two experts (two 14B transformers of
    trainable weights: a LoRA per expert only). Called from the config files (preflight) and on load."""
    if choice not in EXPERT_CHOICES:
        raise ConfigError(f"experts={choice!r} must be one of {', '.join(EXPERT_CHOICES)}")
    if num_experts == 1 and choice != "both":
        raise ConfigError(f"experts={choice!r}: the model has one transformer; high_noise / low_noise choose an "
                          "expert of a two-expert model (Wan2.2-T2V-A14B). Leave experts at both")
    if num_experts > 1 and training_type != "lora":
        raise ConfigError(f"training_type={training_type!r}: a two-expert model (transformer, transformer_2) "
                          "trains a LoRA per expert only; use training_type: lora")


def trained_experts(choice: str, backbone: Any, training_type: str = "lora") -> tuple[int, ...]:
    """The indices in `backbone.experts` that get a LoRA for the config's `experts` value (one transformer:
    itself), after :func:`check_expert_settings`."""
    check_expert_settings(choice, training_type, len(backbone.experts))
    if len(backbone.experts) == 1:
        return (0,)
    if len(backbone.experts) != 2 or backbone.boundary_timestep is None:
        raise ConfigError(f"this pipeline has {len(backbone.experts)} transformers but no timestep boundary "
                          "(boundary_ratio in its model_index.json); the trainer knows two experts split by one")
    return EXPERT_CHOICES[choice]


def sigma_range(trained: Sequence[int], boundary_timestep: float, num_experts: int) -> tuple[float, float] | None:
    """The noise levels [low, high) the trained experts own (sigma = t / 1000), or None when they own all."""
    if num_experts == 1 or len(trained) == num_experts:
        return None
    boundary = float(boundary_timestep) / 1000.0
    return (boundary, 1.0) if tuple(trained) == (0,) else (0.0, boundary)


def shift_sigmas(s: torch.Tensor, shift: float) -> torch.Tensor:
    """The flow-matching timestep shift s -> shift s / (1 + (shift - 1) s) (SD3 / Wan), which `loop.sample_sigmas`
    applies to its draws and `sample_sigmas_between` inverts at its bounds."""
    return shift * s / (1 + (shift - 1) * s)


def _unshifted(sigma: torch.Tensor, shift: float) -> torch.Tensor:
    return sigma / (shift - (shift - 1) * sigma)


def sample_sigmas_between(n: int, generator: torch.Generator, mode: str, shift: float, low: float,
                          high: float) -> torch.Tensor:
    """`loop.sample_sigmas`'s distribution (shifted logit-normal or uniform) conditioned on low <= sigma < high:
    a uniform draw between the CDF's values at the bounds, mapped back through the inverse CDF (float64), so
    no draw is rejected and the count of random numbers used is fixed."""
    bounds = torch.tensor([low, high], dtype=torch.float64)
    s_bounds = _unshifted(bounds, shift)
    cdf = torch.special.ndtr(torch.logit(s_bounds)) if mode == "logit_normal" else s_bounds
    u = torch.rand(n, generator=generator, dtype=torch.float64)
    q = cdf[0] + (cdf[1] - cdf[0]) * u
    s = torch.sigmoid(torch.special.ndtri(q)) if mode == "logit_normal" else q
    sigma = shift_sigmas(s, shift).float()
    # float32 rounding must not carry a sample over the boundary into the other expert's range
    top = torch.nextafter(torch.tensor(high, dtype=torch.float32), torch.tensor(-math.inf))
    return sigma.clamp(min=float(low), max=float(top))


class ExpertRouter(torch.nn.Module):
    """The experts as one module the loop trains: called like a transformer (`hidden_states`, `timestep`,
    `encoder_hidden_states`), it runs each expert on the rows whose timestep it owns and returns the
    predictions in batch order. One forward per micro-step, so DDP sees one forward before each backward."""

    def __init__(self, experts: Sequence[torch.nn.Module], boundary_timestep: float):
        super().__init__()
        self.experts = torch.nn.ModuleList(experts)
        self.boundary = float(boundary_timestep)

    @property
    def dtype(self) -> torch.dtype:
        """The first expert's compute dtype (the experts share theirs)."""
        return self.experts[0].dtype

    @property
    def device(self) -> torch.device:
        """The first expert's device."""
        return self.experts[0].device

    def route(self, timestep: torch.Tensor, batch: int | None = None) -> torch.Tensor:
        """Each sample's expert: 0 when t >= the boundary, else 1 (the stock `WanPipeline`'s rule); `timestep`
        is one t per sample ([B]) or per token ([B, tokens], every token of a text-to-video sample alike)."""
        t = timestep.reshape(timestep.shape[0], -1)[:, 0] if timestep.ndim else timestep.reshape(1)
        if batch is not None and t.shape[0] == 1 and batch > 1:
            t = t.expand(batch)
        return (t.float() < self.boundary).long()

    def forward(self, hidden_states: torch.Tensor, timestep: torch.Tensor, encoder_hidden_states: torch.Tensor,
                return_dict: bool = False, **kwargs: Any) -> tuple[torch.Tensor]:
        """(prediction,) as the experts' own forward with `return_dict=False` returns it."""
        batch = hidden_states.shape[0]
        route = self.route(timestep, batch)
        used = sorted(set(route.tolist()))
        if len(used) == 1:  # the whole batch on one expert: exactly its own call
            return (self.experts[used[0]](hidden_states=hidden_states, timestep=timestep,
                                          encoder_hidden_states=encoder_hidden_states, return_dict=False,
                                          **kwargs)[0],)
        parts, order = [], []
        per_sample_t = timestep.ndim and timestep.shape[0] == batch
        for index in used:
            rows = (route == index).nonzero().flatten()
            # per-sample extras (e.g. an image-to-video model's image embeddings) follow their rows
            extras = {k: v[rows] if torch.is_tensor(v) and v.ndim and v.shape[0] == batch else v
                      for k, v in kwargs.items()}
            parts.append(self.experts[index](
                hidden_states=hidden_states[rows], timestep=timestep[rows] if per_sample_t else timestep,
                encoder_hidden_states=encoder_hidden_states[rows], return_dict=False, **extras)[0])
            order.append(rows)
        inverse = torch.argsort(torch.cat(order))
        return (torch.cat(parts)[inverse],)


def drop_unvisited_expert_grads(router: ExpertRouter, counts: torch.Tensor) -> None:
    """Set the gradients of every expert with no sample in `counts` (samples per expert, summed over the
    accumulation window and the ranks) to None, so AdamW leaves that expert as it is."""
    for index, expert in enumerate(router.experts):
        if int(counts[index]) == 0:
            for p in expert.parameters():
                if p.requires_grad:
                    p.grad = None
