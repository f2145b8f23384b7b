"""Image quality: PSNR and SSIM (images [H, W, 3] in [0, 1]).

    PSNR = -10 log10(mean((x - y)^2))
    SSIM = mean over pixels and channels of
           (2 mu_x mu_y + C1)(2 s_xy + C2) / ((mu_x^2 + mu_y^2 + C1)(s_x^2 + s_y^2 + C2)),
           with Gaussian-weighted local statistics (11 x 11 window, sigma 1.5, 'valid' extent),
           C1 = (0.01)^2, C2 = (0.03)^2 (data range 1), as in the NeRF/TensoRF evaluation code.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as nnf


def psnr(pred: torch.Tensor, gt: torch.Tensor) -> float:
    """Peak signal-to-noise ratio in dB for images in [0, 1] (inf for identical images)."""
    mse = float(torch.mean((pred.float() - gt.float()) ** 2))
    return float("inf") if mse == 0 else -10.0 * math.log10(mse)


def _gaussian_window(size: int, sigma: float) -> torch.Tensor:
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-0.5 * (x / sigma) ** 2)
    return g / g.sum()


def ssim(pred: torch.Tensor, gt: torch.Tensor, window: int = 11, sigma: float = 1.5) -> float:
    """Structural similarity of two [H, W, 3] images in [0, 1] (see the module docstring)."""
    x = pred.double().permute(2, 0, 1)[:, None]      # [3, 1, H, W]
    y = gt.double().permute(2, 0, 1)[:, None]
    g = _gaussian_window(window, sigma).to(x.device)

    def blur(z: torch.Tensor) -> torch.Tensor:
        z = nnf.conv2d(z, g.view(1, 1, -1, 1))
        return nnf.conv2d(z, g.view(1, 1, 1, -1))

    mu_x, mu_y = blur(x), blur(y)
    s_xx = blur(x * x) - mu_x ** 2
    s_yy = blur(y * y) - mu_y ** 2
    s_xy = blur(x * y) - mu_x * mu_y
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    num = (2 * mu_x * mu_y + c1) * (2 * s_xy + c2)
    den = (mu_x ** 2 + mu_y ** 2 + c1) * (s_xx + s_yy + c2)
    return float((num / den).mean())
