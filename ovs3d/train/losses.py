"""Stage-2 losses (method spec section 6.5): feature distillation, RDA, FDA and RGB.

Notation: F [B, 512] rendered CLIP-space features (not normalised), S [B, 3] the rendered scale
selection (rows sum to 1), f_hat [B, 3, 512] L2-normalised CLIP features per scale, R [B, 3, C]
min-max relevancies in [0, 1], t_hat [C, 512] L2-normalised text embeddings. All logs are natural.

JS(p, q) = 1/2 KL(p || m) + 1/2 KL(q || m) with m = (p + q) / 2, which equals H(m) - (H(p) + H(q)) / 2
(H = Shannon entropy). It lies in [0, log 2].

The FDA pairwise term sum_ij W_ij JS(P_i, P_j) over all 1024 x 1024 positions of a crop is computed
without the naive [crops, P, P, C] autograd graph: by the identity above it splits into per-position
entropies (cheap) and the pairwise mixture entropies H(m_ij), whose weighted sum is evaluated by
``_PairwiseMixtureEntropy`` in chunks of rows i (rebuilding the DINO correlation rows per chunk), in log space (log m = logaddexp(log p_i, log p_j) - log 2),
with an analytic backward that recomputes each chunk, so forward and backward both hold only
[chunk, P, C] temporaries. ``fda_loss_dense`` is the naive reference (tests and bench only).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as nnf

LOG2 = math.log(2.0)


def entropy_from_log(logp: torch.Tensor) -> torch.Tensor:
    """H(p) = -sum_c p_c log p_c along the last dim, from log-probabilities ``logp`` [..., C]."""
    return -(logp.exp() * logp).sum(-1)


def js_divergence_from_log(logp: torch.Tensor, logq: torch.Tensor) -> torch.Tensor:
    """Jensen-Shannon divergence along the last dim from log-probabilities [..., C] -> [...], in [0, log 2].

    log m = logaddexp(log p, log q) - log 2;  JS = H(m) - (H(p) + H(q)) / 2.
    """
    logm = torch.logaddexp(logp, logq) - LOG2
    return entropy_from_log(logm) - 0.5 * (entropy_from_log(logp) + entropy_from_log(logq))


def selected_clip_feature(selection: torch.Tensor, clip_features: torch.Tensor) -> torch.Tensor:
    """phi = normalize(sum_s S_s f_hat_s): selection [B, 3], clip_features [B, 3, D] -> [B, D]."""
    return nnf.normalize(torch.einsum("bs,bsd->bd", selection, clip_features), dim=-1)


def feature_distillation_loss(features: torch.Tensor, selection: torch.Tensor,
                              clip_features: torch.Tensor, selection_grad: bool = True) -> torch.Tensor:
    """L_feat = -mean_r cos(F_r, normalize(sum_s S_{r,s} f_hat_{r,s})), in [-1, 1].

    ``selection_grad`` True (faithful, spec 6.5.1): no stop-gradient on the target, so the selection
    receives dL/dS_{r,s} = -<d cos / d phi_r, f_hat_{r,s}> and moves toward whichever scale the current
    F already agrees with: a fit criterion, not a semantic one, which drifts to the smoothest (coarsest)
    scale. False (improved): phi_r = normalize(sum_s sg(S_{r,s}) f_hat_{r,s}); only F is trained here and
    the selection is learned from the RDA loss alone.
    Shapes: features [B, D], selection [B, 3], clip_features [B, 3, D].
    """
    target = selected_clip_feature(selection if selection_grad else selection.detach(), clip_features)
    return -nnf.cosine_similarity(features, target, dim=-1).mean()


def relevancy_alignment_loss(features: torch.Tensor, text: torch.Tensor, selection: torch.Tensor,
                             relevancy: torch.Tensor, normalize_features: bool = False,
                             temperature: float = 1.0) -> torch.Tensor:
    """L_RDA = mean_r JS(p_r, q_r) (spec 6.5.2).

    p_r = softmax_c(<F_r, t_hat_c> / temperature): with ``normalize_features`` False (faithful) F is used
    unnormalised, so its norm acts as a learned inverse temperature; True uses cos(F_r, t_hat_c).
    q_r = softmax_c(sum_s S_{r,s} R_{r,s,c}) at temperature 1. Both sides carry gradients.
    Shapes: features [B, D], text [C, D], selection [B, 3], relevancy [B, 3, C].
    """
    feats = nnf.normalize(features, dim=-1) if normalize_features else features
    logp = torch.log_softmax(feats @ text.t() / temperature, dim=-1)
    logq = torch.log_softmax(torch.einsum("bs,bsc->bc", selection, relevancy), dim=-1)
    return js_divergence_from_log(logp, logq).mean()


def rgb_loss(rgb: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean squared error between rendered and ground-truth colours, [B, 3] each."""
    return nnf.mse_loss(rgb, target)


def patch_class_log_probs(features: torch.Tensor, text: torch.Tensor, temperature: float) -> torch.Tensor:
    """log P = log_softmax_c(cos(F, t_hat_c) / temperature): features [..., D], text [C, D] -> [..., C]."""
    return torch.log_softmax(nnf.normalize(features, dim=-1) @ text.t() / temperature, dim=-1)


def _correlation_rows(dino_unit: torch.Tensor, a: int, b: int, shift: float) -> torch.Tensor:
    """Rows a..b of D = cos(d_i, d_j) - shift: dino_unit [N, P, E] (unit rows) -> [N, b - a, P]."""
    return dino_unit[:, a:b] @ dino_unit.transpose(1, 2) - shift


def _mixture(p: torch.Tensor, a: int, b: int) -> torch.Tensor:
    """m_ij = (p_i + p_j) / 2 for rows i in a..b: p [N, P, C] -> [N, b - a, P, C] (floored at 1e-30 for the log)."""
    return ((p[:, a:b, None, :] + p[:, None, :, :]) * 0.5).clamp_(min=1e-30)


class _PairwiseMixtureEntropy(torch.autograd.Function):
    """(sum_{n,i,j} D+_{n,ij} H(m_{n,ij}), sum_{n,i,j} D-_{n,ij} H(m_{n,ij})) with m_ij = (p_i + p_j) / 2.

    Inputs: logp [N, P, C] (log-probabilities of softmaxes with bounded logits, so p > 0), dino_unit
    [N, P, E] (unit DINO features, constant), shift, chunk (rows i per step). D = cos - shift is rebuilt
    per chunk of rows, never stored whole. m is formed in probability space (one log per element).
    Backward (exact): dH(m)/dp_i,c = -(log m_c + 1) / 2 and D is symmetric, so with
    W = g_pos D+ + g_neg D-:  d/dlogp_{n,i,c} = -p_{n,i,c} (sum_j W_{n,ij} log m_{n,ij,c} + rowsum(W)_{n,i}).
    Only [N, chunk, P, C] temporaries exist in either pass.
    """

    @staticmethod
    def forward(ctx, logp: torch.Tensor, dino_unit: torch.Tensor, shift: float, chunk: int) -> torch.Tensor:
        ctx.save_for_backward(logp, dino_unit)
        ctx.shift, ctx.chunk = shift, chunk
        p = logp.exp()
        n, n_pos, c = logp.shape
        out = logp.new_zeros(2)
        for a in range(0, n_pos, chunk):
            b = min(a + chunk, n_pos)
            corr = _correlation_rows(dino_unit, a, b, shift)  # [N, k, P]
            m = _mixture(p, a, b)  # [N, k, P, C]
            h = torch.special.entr(m).sum(-1)  # [N, k, P], entr(x) = -x log x
            out[0] += (corr.clamp(min=0) * h).sum()
            out[1] += (corr.clamp(max=0) * h).sum()
        return out

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        logp, dino_unit = ctx.saved_tensors
        p = logp.exp()
        n, n_pos, c = logp.shape
        grad = torch.empty_like(logp)
        for a in range(0, n_pos, ctx.chunk):
            b = min(a + ctx.chunk, n_pos)
            corr = _correlation_rows(dino_unit, a, b, ctx.shift)
            weight = grad_out[0] * corr.clamp(min=0) + grad_out[1] * corr.clamp(max=0)  # [N, k, P]
            logm = _mixture(p, a, b).log_()  # [N, k, P, C]
            k = b - a
            dp = torch.bmm(weight.reshape(n * k, 1, n_pos), logm.reshape(n * k, n_pos, c)).view(n, k, c)
            dp = dp + weight.sum(2, keepdim=True)
            grad[:, a:b] = -dp * p[:, a:b]
        return grad, None, None, None


def fda_loss(features: torch.Tensor, text: torch.Tensor, dino: torch.Tensor, temperature: float = 0.2,
             shift: float = 0.7, chunk: int = 128) -> tuple[torch.Tensor, torch.Tensor]:
    """Feature-Distribution Alignment (spec 6.5.3), memory-light and exact.

    P_{n,i} = softmax_c(cos(F_{n,i}, t_hat_c) / temperature);  D = cos(d_i, d_j) - shift (no gradient),
    D+ = max(D, 0), D- = min(D, 0);  JS_{n,ij} = JS(P_{n,i}, P_{n,j}) within each crop n.
    L_pos = sum D+ JS / #{D+ != 0},  L_neg = sum D- JS / #{D- != 0}, counts over all crops (L_neg <= 0).

    Computed as sum_ij D_ij H(m_ij) - sum_i H(P_i) rowsum(D)_i (D is symmetric), with D rebuilt chunk by
    chunk from the DINO features: extra memory O(N chunk P C), never O(N P^2).
    Shapes: features [N, P, D] (P positions per crop), text [C, D], dino [N, P, E]. Returns (L_pos, L_neg).
    """
    logp = patch_class_log_probs(features, text, temperature)  # [N, P, C]
    with torch.no_grad():
        dino_unit = nnf.normalize(dino.to(logp.dtype), dim=-1)
        counts = logp.new_zeros(2)
        rowsums = logp.new_zeros(2, *logp.shape[:2])  # [2, N, P]
        for a in range(0, logp.shape[1], chunk):
            corr = _correlation_rows(dino_unit, a, min(a + chunk, logp.shape[1]), shift)
            pos, neg = corr.clamp(min=0), corr.clamp(max=0)
            counts += torch.stack([(pos != 0).sum(), (neg != 0).sum()]).to(logp.dtype)
            rowsums[:, :, a:a + chunk] = torch.stack([pos.sum(2), neg.sum(2)])
        counts = counts.clamp(min=1)
    mixture = _PairwiseMixtureEntropy.apply(logp, dino_unit, shift, chunk)  # [2]
    own = torch.einsum("knp,np->k", rowsums, entropy_from_log(logp))
    total = (mixture - own) / counts
    return total[0], total[1]


def fda_loss_dense(features: torch.Tensor, text: torch.Tensor, dino: torch.Tensor, temperature: float = 0.2,
                   shift: float = 0.7) -> tuple[torch.Tensor, torch.Tensor]:
    """The naive reference of ``fda_loss``: materialises JS as [N, P, P, C] under autograd (as the
    authors do). Used only by tests and the memory bench."""
    logp = patch_class_log_probs(features, text, temperature)
    with torch.no_grad():
        unit = nnf.normalize(dino.to(logp.dtype), dim=-1)
        corr = unit @ unit.transpose(1, 2) - shift
    pos, neg = corr.clamp(min=0), corr.clamp(max=0)
    js = js_divergence_from_log(logp[:, :, None, :], logp[:, None, :, :])  # [N, P, P]
    loss_pos = (pos * js).sum() / (pos != 0).sum().clamp(min=1)
    loss_neg = (neg * js).sum() / (neg != 0).sum().clamp(min=1)
    return loss_pos, loss_neg
