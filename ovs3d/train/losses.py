"""Stage-2 losses (method spec section 6.5): feature distillation, RDA, FDA and RGB.

Notation: F [B, 512] rendered CLIP-space features (not normalised), S [B, 3] the rendered scale
selection (rows sum to 1), f_hat [B, 3, 512] L2-normalised CLIP features per scale, R [B, 3, C]
min-max relevancies in [0, 1], t_hat [C, 512] L2-normalised text embeddings. All logs are natural.

JS(p, q) = 1/2 KL(p || m) + 1/2 KL(q || m) with m = (p + q) / 2, which equals H(m) - (H(p) + H(q)) / 2
(H = Shannon entropy). It lies in [0, log 2].

The FDA pairwise term sum_ij W_ij JS(P_i, P_j) over all 1024 x 1024 positions of a crop is computed
without the naive [crops, P, P, C] autograd graph: by the identity above it splits into per-position
entropies (cheap) and the pairwise mixture entropies H(m_ij), whose weighted sum is evaluated by
``_WeightedMixtureEntropy`` in chunks of rows i, in log space (log m = logaddexp(log p_i, log p_j) - log 2),
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
                              clip_features: torch.Tensor) -> torch.Tensor:
    """L_feat = -mean_r cos(F_r, normalize(sum_s S_{r,s} f_hat_{r,s})), in [-1, 1].

    No stop-gradient on the target: the selection receives gradient (spec 6.5.1).
    Shapes: features [B, D], selection [B, 3], clip_features [B, 3, D].
    """
    target = selected_clip_feature(selection, clip_features)
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


def dino_correlation(dino: torch.Tensor, shift: float) -> torch.Tensor:
    """D_ij = cos(d_i, d_j) - shift within each crop: dino [N, P, E] -> [N, P, P] (no gradient)."""
    with torch.no_grad():
        d = nnf.normalize(dino, dim=-1)
        return d @ d.transpose(1, 2) - shift


class _WeightedMixtureEntropy(torch.autograd.Function):
    """sum_{n,i,j} W_{k,n,i,j} H(m_{n,ij}) for each of K weight tensors, m_ij = (p_i + p_j) / 2.

    Inputs: logp [N, P, C] (log-probabilities), weights [K, N, P, P] (constants), chunk (rows per step).
    Output: [K]. Backward (exact): dH(m)/dp_i,c = -(log m_c + 1) / 2, so
    d/dlogp_{n,i,c} = p_{n,i,c} * sum_j -(Wg_{n,ij} + Wg_{n,ji}) (log m_{n,ij,c} + 1) / 2 with
    Wg = sum_k grad_k W_k; m is recomputed chunk by chunk, never stored.
    """

    @staticmethod
    def forward(ctx, logp: torch.Tensor, weights: torch.Tensor, chunk: int) -> torch.Tensor:
        ctx.save_for_backward(logp, weights)
        ctx.chunk = chunk
        out = logp.new_zeros(weights.shape[0])
        n_pos = logp.shape[1]
        for a in range(0, n_pos, chunk):
            b = min(a + chunk, n_pos)
            logm = torch.logaddexp(logp[:, a:b, None, :], logp[:, None, :, :]) - LOG2  # [N, k, P, C]
            h = entropy_from_log(logm)  # [N, k, P]
            out += torch.einsum("knij,nij->k", weights[:, :, a:b, :], h)
        return out

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        logp, weights = ctx.saved_tensors
        chunk = ctx.chunk
        wg = torch.einsum("k,knij->nij", grad_out, weights)
        wsym = 0.5 * (wg + wg.transpose(1, 2))  # only the symmetric part matters since m_ij = m_ji
        grad = torch.empty_like(logp)
        n_pos = logp.shape[1]
        for a in range(0, n_pos, chunk):
            b = min(a + chunk, n_pos)
            logm = torch.logaddexp(logp[:, a:b, None, :], logp[:, None, :, :]) - LOG2  # [N, k, P, C]
            # d/dp_i of sum_j (W_ij + W_ji) H(m_ij) = -sum_j (W_ij + W_ji) (log m_ij + 1) / 2
            dp = -torch.einsum("nij,nijc->nic", wsym[:, a:b, :], logm + 1.0)
            grad[:, a:b] = dp * logp[:, a:b].exp()
        return grad, None, None


def fda_loss(features: torch.Tensor, text: torch.Tensor, dino: torch.Tensor, temperature: float = 0.2,
             shift: float = 0.7, chunk: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """Feature-Distribution Alignment (spec 6.5.3), memory-light and exact.

    P_{n,i} = softmax_c(cos(F_{n,i}, t_hat_c) / temperature);  D = cos(d_i, d_j) - shift (no gradient),
    D+ = max(D, 0), D- = min(D, 0);  JS_{n,ij} = JS(P_{n,i}, P_{n,j}) within each crop n.
    L_pos = sum D+ JS / #{D+ != 0},  L_neg = sum D- JS / #{D- != 0}, counts over all crops (L_neg <= 0).

    Shapes: features [N, P, D] (P positions per crop), text [C, D], dino [N, P, E].
    Returns (L_pos, L_neg). Peak extra memory: O(N P^2) for D plus O(N chunk P C) temporaries.
    """
    logp = patch_class_log_probs(features, text, temperature)  # [N, P, C]
    corr = dino_correlation(dino.to(logp.dtype), shift)
    pos, neg = corr.clamp(min=0), corr.clamp(max=0)
    n_pos = (pos != 0).sum().clamp(min=1).to(logp.dtype)
    n_neg = (neg != 0).sum().clamp(min=1).to(logp.dtype)
    weights = torch.stack([pos / n_pos, neg / n_neg]).to(logp.dtype)  # [2, N, P, P]
    mixture = _WeightedMixtureEntropy.apply(logp, weights, chunk)  # [2]
    # sum_ij W_ij (H_i + H_j) / 2 = 1/2 sum_i H_i (row sums + column sums of W)_i
    h = entropy_from_log(logp)  # [N, P]
    marginal = 0.5 * (weights.sum(3) + weights.sum(2))  # [2, N, P]
    own = torch.einsum("knp,np->k", marginal, h)
    total = mixture - own
    return total[0], total[1]


def fda_loss_dense(features: torch.Tensor, text: torch.Tensor, dino: torch.Tensor, temperature: float = 0.2,
                   shift: float = 0.7) -> tuple[torch.Tensor, torch.Tensor]:
    """The naive reference of ``fda_loss``: materialises JS as [N, P, P, C] under autograd (as the
    authors do). Used only by tests and the memory bench."""
    logp = patch_class_log_probs(features, text, temperature)
    corr = dino_correlation(dino.to(logp.dtype), shift)
    pos, neg = corr.clamp(min=0), corr.clamp(max=0)
    js = js_divergence_from_log(logp[:, :, None, :], logp[:, None, :, :])  # [N, P, P]
    loss_pos = (pos * js).sum() / (pos != 0).sum().clamp(min=1)
    loss_neg = (neg * js).sum() / (neg != 0).sum().clamp(min=1)
    return loss_pos, loss_neg
