"""Die-to-reference comparison: each image beside its difference from a golden die.

Every fab makes one product, so every good die of a fab shows the same layout up to a
shift of a few pixels, the light and the optics. Inspection tools compare each die with a
golden (reference) die; so does this module: one template per fab, fitted as the median of
aligned, standardised good training dies. At run time each image is standardised, every
window of it within the search shift is matched against every template's centre (one
convolution with constant kernels, so it exports to ONNX at any opset), and the best-matching
window has its template subtracted. Good dies still differ from the template where the
layout has edges (sub-pixel misalignment, blur, light), so the residual is divided, pixel by
pixel, by its spread over other good dies of the fab: a particle, a scratch or a broken line
stands out of the flat residual where it hides in the busy layout, and the layout's edges
no longer look like defects. The module is part of the network (templates and spreads are
buffers), so the exported model does the same.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

EPS = 1e-3
MIN_SPREAD = 0.05  # floor of the residual's spread, in standardised units
MAD_TO_SIGMA = 1.4826


class GoldenReference(nn.Module):
    """Maps images (B, 3, H, W) in [0, 1] to (B, 6, H, W): standardised image and residual.

    The residual is in units of its spread over good dies, pixel by pixel, and compressed by a
    signed log: linear up to about one spread, logarithmic beyond, so faint and strong defects
    both stay within the range a network learns from.
    """

    def __init__(self, num_templates: int, img_size: int, max_shift: int = 2) -> None:
        super().__init__()
        self.max_shift = max_shift
        self.size = img_size  # a Python int: the exporters see constant slices
        self.register_buffer("templates", torch.zeros(num_templates, 3, img_size, img_size))
        self.register_buffer("spreads", torch.ones(num_templates, 3, img_size, img_size))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = standardize(images)
        s = self.max_shift
        B, C, H, W = x.shape[0], x.shape[1], self.size, self.size
        h, w = H - 2 * s, W - 2 * s
        centre = self._centre(self.templates)  # K, 3, h, w
        k, dy, dx = self._best_window(x, centre)
        rows = (dy[:, None] + torch.arange(h, device=x.device))[:, None, :, None]
        cols = (dx[:, None] + torch.arange(w, device=x.device))[:, None, None, :]
        window = x.gather(2, rows.expand(B, C, h, W)).gather(3, cols.expand(B, C, h, w))
        spread = self._centre(self.spreads).index_select(0, k)
        residual = (window - centre.index_select(0, k)) / spread  # in the template's frame
        residual = signed_log(residual)  # linear near zero, logarithmic for strong defects
        return torch.cat([x, F.pad(residual, (s, s, s, s))], dim=1)

    @torch.no_grad()
    def fit(self, images: np.ndarray, groups: np.ndarray, per_group: int = 200, rounds: int = 2):
        """Fit one template and one residual spread per group (fab) from good dies.

        Args:
            images: uint8 (N, H, W, 3) good dies (a memory map is fine).
            groups: (N,) template index of each die, in [0, num_templates); -1 to skip.
            per_group: dies per template (the median of this many); the spread is measured
                on the next as many dies of the group (on the same ones when there are none).
            rounds: align-to-template-and-refit rounds after the first, unaligned median.
        """
        for k in range(self.templates.shape[0]):
            rows = np.flatnonzero(groups == k)
            if len(rows) == 0:
                continue
            x = _standardized(images, rows[:per_group])
            template = x.median(dim=0).values
            for _ in range(rounds):
                template = self._aligned(x, template).median(dim=0).values
            held_out = rows[per_group : 2 * per_group]
            others = _standardized(images, held_out) if len(held_out) else x
            residual = self._aligned(others, template) - template
            spread = MAD_TO_SIGMA * residual.abs().median(dim=0).values
            self.templates[k] = template.to(self.templates.device)
            self.spreads[k] = spread.clamp_min(MIN_SPREAD).to(self.spreads.device)

    def _centre(self, templates: torch.Tensor) -> torch.Tensor:
        """Templates (K, 3, H, W) without their search margin: (K, 3, H - 2s, W - 2s)."""
        s = self.max_shift
        return templates[:, :, s : self.size - s, s : self.size - s]

    def _best_window(self, x: torch.Tensor, centre: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Per image, the template (k) and window offset (dy, dx) that match best (B each).

        Matched in grey (the channels' mean): alignment is geometry, and one channel is a
        third of the work.
        """
        n = 2 * self.max_shift + 1
        grey, centre = x.mean(dim=1, keepdim=True), centre.mean(dim=1, keepdim=True)
        scores = F.conv2d(grey, centre)  # B, K, n, n: every template against every window
        best = scores.flatten(1).argmax(dim=1)
        return best // (n * n), best // n % n, best % n

    def _aligned(self, x: torch.Tensor, template: torch.Tensor) -> torch.Tensor:
        """Each image shifted (wrapping) onto the template's grid."""
        _, dy, dx = self._best_window(x, self._centre(template[None]))
        s = self.max_shift
        return torch.stack(
            [
                img.roll((s - a, s - b), dims=(1, 2))
                for img, a, b in zip(x, dy.tolist(), dx.tolist(), strict=True)
            ]
        )


def signed_log(x: torch.Tensor) -> torch.Tensor:
    """sign(x) * log(1 + |x|): the identity near zero, logarithmic far from it."""
    return torch.log(x.abs() + 1.0) * torch.sign(x)


def _standardized(images: np.ndarray, rows: np.ndarray) -> torch.Tensor:
    return standardize(torch.from_numpy(np.asarray(images[rows])).permute(0, 3, 1, 2))


def standardize(images: torch.Tensor) -> torch.Tensor:
    """Per image and channel: zero mean, unit deviation (light and colour drop out)."""
    x = images.float() / 255.0 if images.dtype == torch.uint8 else images.float()
    centred = x - x.mean(dim=(2, 3), keepdim=True)
    variance = (centred * centred).mean(dim=(2, 3), keepdim=True)
    return centred * torch.rsqrt(variance + EPS * EPS)
