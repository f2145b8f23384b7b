"""Instant stage 2: lift the teacher's 2D features onto a node grid over the frozen field, without training.

One streamed sweep over a strided subset of the training rays (every ``pixel_stride``-th pixel per axis of
each view's CLIP map, the stride raised until the rays fit ``max_rays``; the grid offset cycles over the
views so together they cover every pixel; the teacher is patch-level, so neighbouring pixels add little). Each
batch is marched through the frozen density (weights w_i = T_i alpha_i above ``weight_threshold``) and
scattered with the adjoint of the trilinear lookup of ``field/lifted.py``: sample i of ray r adds, at each
corner node n of its cell with trilinear weight b_n(x_i), a_{n,r} = c_r w_i b_n(x_i) times the ray's values,
where c_r = top1_c - top2_c of the ray's relevancies averaged over the scales (the 2D teacher's confidence
under its relevancy rule, at least ``MIN_CONFIDENCE``; ``confidence_weighted``, else c_r = 1):

    W_n     = sum_r a_{n,r} / c_r                   accumulated rendering weight (coverage)   [K]
    Fsum_ns = sum_r a_{n,r} f_hat_s(r)              per scale s, unit CLIP f   [K, S, D]
    Rsum_ns = sum_r a_{n,r} R_s(r)                  min-max relevancies        [K, S, C]

(a sparse [K_batch, B] matrix times the batch's [B, S D + S C + 2] values, the last two 1 and 1 / c_r). Only the K nodes that receive
weight get a row (``NodeAccumulator``): memory is K (S D + S C + 2) floats plus one batch, never all views.
Then per node

    f_ns = normalize(Fsum_ns / A_n)                 the weighted mean feature of scale s, A_n = sum_r a_{n,r}
    Rbar_ns = Rsum_ns / A_n  in [0, 1]^C            mean relevancy of scale s over the views
    margin_ns = top1_c Rbar_nsc - top2_c Rbar_nsc   (top1 when C = 1)
    s_n = softmax_s(margin_ns / temperature)        the scale selection
    f_n = normalize(sum_s s_ns f_ns)                the lifted feature (stored in float16)

Why the margin of the *mean* relevancy: a scale is right for a node when, in every view that sees it, its
patch clearly favours one class. Averaging R over views before taking the margin rewards both: a scale
whose patches straddle objects favours different classes from different viewpoints (or none), so its mean
relevancy is flat and its margin small; a scale that is confident and consistent keeps a large margin.
This is the quantity the trained selection is pulled towards by the RDA loss (softmax(sum_s S_s R_s)
sharp and agreeing with F's classes), computed in closed form instead of by gradient descent. Weighting
rays by c_r applies the same argument across rays: a patch that straddles objects (near a silhouette, or
a small object seen from afar) has flat relevancies and says little about the surface its ray meets.

Optionally (``smooth_steps``) the sweep also lifts the DINO features and smooths f over neighbouring nodes
with their DINO affinity (``smooth_features``), off by default.

``lift_run`` writes the result as a stage-2 run (record semantic mode ``instant``) that every verb reads.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch
import torch.nn.functional as nnf

from ovs3d.config import to_plain
from ovs3d.errors import InputError
from ovs3d.field.base import RadianceField
from ovs3d.field.lifted import LiftedConfig, LiftedField, grid_resolution, row_nodes
from ovs3d.field.vm import trilinear_corners
from ovs3d.io.atomic import write_json_atomic
from ovs3d.io.lock import folder_lock
from ovs3d.render.volume import march
from ovs3d.runs.load import field_sections, load_run
from ovs3d.runs.record import stage2_record
from ovs3d.runs.store import check_fresh, write_config, write_run
from ovs3d.train.configs import LiftConfig, SegmentConfig
from ovs3d.train.segment_data import SegmentationData, gather_clip_batch


class NodeAccumulator:
    """Rows of per-node sums, created for a node the first time it receives weight.

    Args: n_nodes, the flat node count of the grid; width, the values per row.
    """

    def __init__(self, n_nodes: int, width: int, device: torch.device) -> None:
        self.row_of = torch.full((n_nodes,), -1, dtype=torch.long, device=device)
        self.sums = torch.zeros(1024, width, device=device)
        self.n_rows = 0

    def rows(self, nodes: torch.Tensor) -> torch.Tensor:
        """Rows [U] of distinct flat nodes [U], creating (and growing the table for) the new ones."""
        new = nodes[self.row_of[nodes] < 0]
        if new.numel():
            self.row_of[new] = torch.arange(self.n_rows, self.n_rows + new.numel(), device=nodes.device)
            self.n_rows += new.numel()
            if self.n_rows > self.sums.shape[0]:
                grown = self.sums.new_zeros(max(2 * self.sums.shape[0], self.n_rows), self.sums.shape[1])
                grown[:self.sums.shape[0]] = self.sums
                self.sums = grown
        return self.row_of[nodes]

    def nodes(self) -> torch.Tensor:
        """The flat node index [K] of every row, in row order."""
        return row_nodes(self.row_of)


def strided_pixels(n_views: int, h: int, w: int, stride: int) -> torch.Tensor:
    """Flat indices into [V, h, w] of every ``stride``-th pixel per axis of each view, the grid's offset
    (ox, oy) cycling over the stride^2 offsets from view to view."""
    pieces = []
    for k in range(n_views):
        oy, ox = divmod(k % (stride * stride), stride)
        y, x = torch.meshgrid(torch.arange(oy, h, stride), torch.arange(ox, w, stride), indexing="ij")
        pieces.append(k * h * w + (y * w + x).reshape(-1))
    return torch.cat(pieces)


def dino_at(data: SegmentationData, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """The DINO features [B, E] at the batch's pixels (bilinear, at the same image positions)."""
    h, w = data.clip_hw
    out = torch.empty(batch["view"].numel(), data.dino.shape[0])
    for image in torch.unique(batch["view"]).tolist():
        sel = (batch["view"] == image).nonzero().squeeze(1)
        out[sel] = data.dino.sample(image, (batch["u"][sel] / w).numpy(), (batch["v"][sel] / h).numpy())
    return out


def sweep_stride(n_views: int, h: int, w: int, stride: int, max_rays: int) -> int:
    """The smallest stride >= ``stride`` whose strided pixels of ``n_views`` h x w maps number at most
    ``max_rays`` (0: ``stride``)."""
    while max_rays > 0 and n_views * (-(-h // stride)) * (-(-w // stride)) > max_rays and stride < max(h, w):
        stride += 1
    return stride


def smooth_features(features: torch.Tensor, dino: torch.Tensor, row_of: torch.Tensor, nodes: torch.Tensor,
                    reso: tuple[int, int, int], steps: int, shift: float) -> torch.Tensor:
    """DINO-affinity smoothing of unit node features [K, D] over the 6 axis neighbours, ``steps`` times:

        f_n <- normalize(f_n + sum_{m in N(n)} a_nm f_m),   a_nm = max(0, cos(g_n, g_m) - shift) / (1 - shift)

    with g [K, E] the nodes' lifted DINO features, ``row_of`` [N] the row of each flat node (-1: none) and
    ``nodes`` [K] the flat node of each row. Neighbours that DINO tells apart (cos <= shift) never mix."""
    gx, gy, gz = reso
    ijk = torch.stack([nodes % gx, (nodes // gx) % gy, nodes // (gx * gy)], dim=-1)
    dims, strides = torch.tensor([gx, gy, gz]), torch.tensor([1, gx, gx * gy])
    g = nnf.normalize(dino, dim=-1)
    pairs = []
    for axis in range(3):
        for sign in (-1, 1):
            inside = (ijk[:, axis] + sign >= 0) & (ijk[:, axis] + sign < dims[axis])
            other = torch.where(inside, row_of[(nodes + sign * strides[axis]).clamp(0, row_of.numel() - 1)], -1)
            held = (other >= 0).nonzero().squeeze(1)
            affinity = ((g[held] * g[other[held]]).sum(-1) - shift).clamp(min=0) / (1 - shift)
            pairs.append((held, other[held], affinity))
    for _ in range(steps):
        total = features.clone()
        for rows, neighbours, affinity in pairs:
            total.index_add_(0, rows, affinity[:, None] * features[neighbours])
        features = nnf.normalize(total, dim=-1)
    return features


MIN_CONFIDENCE = 1e-3
"""c_r is at least this, so a node that only uninformative rays see keeps their plain weighted mean."""


def class_margin(relevancy: torch.Tensor) -> torch.Tensor:
    """top1_c - top2_c over the last (class) axis of relevancies [..., C] (top1 when C = 1): [...]."""
    top = relevancy.topk(min(2, relevancy.shape[-1]), dim=-1).values
    return top[..., 0] - top[..., 1] if top.shape[-1] == 2 else top[..., 0]


def ray_confidence(relevancy: torch.Tensor) -> torch.Tensor:
    """[B] the teacher's confidence in each ray's class: the class margin of its relevancies [B, S, C]
    averaged over the scales (the 2D teacher's relevancy rule)."""
    return class_margin(relevancy.mean(1))


def node_selection(mean_relevancy: torch.Tensor, temperature: float) -> torch.Tensor:
    """Scale weights [K, S] = softmax_s(margin / temperature) of mean relevancies [K, S, C] (module docstring)."""
    return torch.softmax(class_margin(mean_relevancy) / temperature, dim=-1)


@torch.no_grad()
def lift(field: RadianceField, data: SegmentationData, config: LiftConfig, step: float,
         device: torch.device | str = "cpu") -> tuple[LiftedField, dict]:
    """The lifted model of ``field`` from ``data``'s CLIP teacher (module docstring) and sweep statistics."""
    device = torch.device(device)
    start = time.perf_counter()
    text = data.text.to(device)
    n_scales, dim = data.clip.shape[0], int(text.shape[1])
    n_classes = int(text.shape[0])
    reso = grid_resolution(field.reso, config.reso)
    gx, gy, gz = reso
    smooth = config.smooth_steps > 0
    if smooth and data.dino is None:
        raise InputError(None, "--segment.lift.smooth-steps needs the DINO cache, which this teacher lacks",
                         "extract DINO features (`ovs3d extract`) or pass --segment.lift.smooth-steps 0")
    dino_dim = data.dino.shape[0] if smooth else 0
    acc = NodeAccumulator(gx * gy * gz, n_scales * (dim + n_classes) + dino_dim + 2, device)
    h, w = data.clip_hw
    stride = sweep_stride(len(data.views), h, w, config.pixel_stride, config.max_rays)
    pixels = strided_pixels(len(data.views), h, w, stride)
    n_samples = 0
    with field.frozen():          # the field is fixed while lifted: one set of lookup volumes
        for s in range(0, pixels.numel(), config.batch_rays):
            batch = gather_clip_batch(data, pixels[s:s + config.batch_rays])
            o, d = field.space.rays(data.clip_cameras, batch["view"], batch["u"], batch["v"])
            samples = march(field, o.to(device), d.to(device), step, weight_threshold=config.weight_threshold)
            if samples.n_kept == 0:
                continue
            n_samples += samples.n_kept
            corners, b = trilinear_corners(samples.xyz, reso)                    # [M, 8]
            confidence = (ray_confidence(batch["relevancy"]) if config.confidence_weighted
                          else torch.ones(samples.n_rays)).clamp_min(MIN_CONFIDENCE).to(device)
            coef = confidence[samples.ray_index][:, None] * samples.weights[:, None] * b
            nodes, local = torch.unique(corners.reshape(-1), return_inverse=True)
            rays = samples.ray_index[:, None].expand_as(corners).reshape(-1)
            scatter = torch.sparse_coo_tensor(torch.stack([local, rays]), coef.reshape(-1),
                                              (nodes.numel(), samples.n_rays), check_invariants=False).coalesce()
            n = samples.n_rays
            parts = [batch["clip"].reshape(n, -1), batch["relevancy"].reshape(n, -1)]
            if smooth:
                parts.append(dino_at(data, batch))
            ones = torch.ones(n, 1, device=device)
            values = torch.cat([*(p.to(device) for p in parts), ones, ones / confidence[:, None]], dim=1)  # [B, S D + S C (+ E) + 2]
            rows = acc.rows(nodes)
            acc.sums.index_add_(0, rows, torch.sparse.mm(scatter, values))
    sums = acc.sums[:acc.n_rows]
    weight, nodes = sums[:, -1], acc.nodes()                                 # W_n (the 1 / c_r column)
    per_weight = sums[:, :-2] / sums[:, -2:-1].clamp_min(1e-12)              # over sum_r a_{n,r}
    features = nnf.normalize(per_weight[:, :n_scales * dim].view(-1, n_scales, dim), dim=-1)   # [K, S, D]
    split = n_scales * (dim + n_classes)
    mean_relevancy = per_weight[:, n_scales * dim:split].view(-1, n_scales, n_classes)        # [K, S, C]
    selection = node_selection(mean_relevancy, config.selection_temperature)
    lifted_features = nnf.normalize((selection[..., None] * features).sum(1), dim=-1)
    if smooth:
        lifted_features = smooth_features(lifted_features, per_weight[:, split:], acc.row_of, nodes, reso,
                                          config.smooth_steps, config.smooth_shift)
    model = LiftedField(field, LiftedConfig(reso=reso, feature_dim=dim, n_scales=n_scales), n_classes=n_classes)
    model.set_values(nodes, lifted_features, selection, weight)
    model.class_text.copy_(text)
    stats = {"seconds": time.perf_counter() - start, "rays": int(pixels.numel()), "stride": stride, "samples": n_samples,
             "nodes": acc.n_rows, "grid": list(reso), "accumulator_mb": acc.sums.numel() * 4 / 2 ** 20,
             "stored_mb": (model.features.numel() * 2 + model.node_row.numel() * 4) / 2 ** 20,
             "mean_selection": selection.mean(0).tolist()}
    return model.eval(), stats


def lift_run(stage1: str | Path, out: str | Path, config: SegmentConfig, data: SegmentationData, inputs: dict,
             resume: bool = False, device: torch.device | str = "cpu") -> dict:
    """Lift onto the stage-1 run ``stage1`` and write a complete stage-2 run (mode ``instant``) in ``out``;
    ``inputs`` as for ``train.segment.segment``. One sweep has no partial state, so ``resume`` redoes it
    (over a checkpoint left in ``out``). Returns the summary also written to ``train_summary.json``."""
    config.check()
    out, device = Path(out), torch.device(device)
    with folder_lock(out, "ovs3d segment"):
        check_fresh(out, resume)
        field, stage1_record = load_run(stage1, device, stage="reconstruct")
        model, stats = lift(field, data, config.lift, stage1_record.step, device)
        record = stage2_record(stage1_record, inputs, to_plain(config), to_plain(model.config), Path(stage1))
        record.complete, record.state = True, {"elapsed_s": stats["seconds"], "lift": stats}
        semantic = {k: v for k, v in model.state_dict().items() if not k.startswith("field.")}
        out.mkdir(parents=True, exist_ok=True)
        write_run(out, record, {**field_sections(model.field), "semantic": semantic})
        write_config(out, config)
        summary = {"stage": "segment", "mode": "instant", "iteration": 0, "iterations_run": 0, "s_per_iter": 0.0,
                   "elapsed_s": stats["seconds"], "complete": True, "lift": stats}
        write_json_atomic(out / "train_summary.json", summary)
        return {**summary, "device": str(device), "classes": record.classes, "encoders": record.encoders,
                "builtin_encoders": record.builtin_encoders}
