"""``--segment.init instant``: start a trained stage 2 from the instant lifting, so training only refines.

The trained head maps the 27-d appearance feature a(x) to CLIP space and cannot copy a grid, so it is
distilled onto it: before the first iteration, ``init_steps`` Adam steps fit the head and the selection
volume at the lifted nodes x_n (drawn with probability proportional to their accumulated weight W_n, so
the nodes on the surfaces the views saw dominate) to the lifted values:

    L = mean_n (1 - cos(h(a(x_n)), f_n)) + mean_n KL(s_n || softmax(l(x_n)))

(h the head, l the selection scores, f_n and s_n the lifted feature and scale weights). Point evaluations
only: no marching, no compositing, no teacher reads, so this costs a small fraction of one training
iteration per step. Training then starts (fresh optimiser, its own schedule) from a head that already
renders the multi-view-consistent lifted features, and its losses refine them against the teacher.
"""

from __future__ import annotations

import time

import torch
import torch.nn.functional as nnf

from ovs3d.field.lifted import LiftedField, node_positions, row_nodes
from ovs3d.field.semantic import SemanticField
from ovs3d.train.configs import SegmentConfig


def distill_lifted(model: SemanticField, lifted: LiftedField, config: SegmentConfig) -> dict:
    """Fit ``model``'s head and selection to ``lifted`` (module docstring); returns the first and last loss
    and the seconds taken."""
    start = time.perf_counter()
    steps, batch = config.lift.init_steps, config.lift.init_batch
    xyz = node_positions(row_nodes(lifted.node_row), lifted.config.reso)   # [K, 3] in row order
    target_f = lifted.features.float()
    target_s = lifted.selection.clamp_min(1e-8)
    prob = lifted.node_weight / lifted.node_weight.sum().clamp_min(1e-12)
    groups = model.parameter_groups(config.lr_grid, config.lr_network, joint=False)
    optimizer = torch.optim.Adam(groups, betas=(0.9, 0.99))
    gen = torch.Generator(device=prob.device).manual_seed(config.seed * 31 + 7)
    losses = []
    for _ in range(steps):
        pick = torch.multinomial(prob, batch, replacement=True, generator=gen)
        x = xyz[pick]
        with torch.no_grad():
            a = model.field.appearance(x)
        loss_f = 1 - nnf.cosine_similarity(model.feature_of_points(a), target_f[pick], dim=-1).mean()
        log_s = torch.log_softmax(model.selection_logits(x), dim=-1)
        loss_s = (target_s[pick] * (target_s[pick].log() - log_s)).sum(-1).mean()
        loss = loss_f + loss_s
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    return {"steps": steps, "first_loss": losses[0] if losses else None, "last_loss": losses[-1] if losses else None,
            "seconds": time.perf_counter() - start}
