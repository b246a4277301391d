"""Die-to-reference comparison: each image beside its difference from a golden die.

Every fab makes one product, so every good die of a fab shows the same layout up to a
shift of a few pixels, the light and the optics. Inspection tools compare each die with a
golden (reference) die; so does this module: one template per fab, fitted as the median of
aligned, standardised good training dies. At run time each image is standardised, the
central patch of every template is matched against every window of the image within the
search shift (one convolution with constant kernels, so it exports to ONNX at any opset),
and the image, moved by the best match, has its template subtracted. The search covers a
fab's stage misalignment (several pixels on some tools); matching a central patch keeps a
wide search as cheap as a narrow one, and the comparison still covers the whole die but for
the strip the shift moved out of view. Good dies still differ from the template where the
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
MATCH_SIZE = 128  # side of the template's central patch that the alignment matches


class GoldenReference(nn.Module):
    """Maps images (B, 3, H, W) in [0, 1] to (B, 6, H, W): standardised image and residual.

    The residual is in units of its spread over good dies, pixel by pixel, and compressed by a
    signed log: linear up to about one spread, logarithmic beyond, so faint and strong defects
    both stay within the range a network learns from.
    """

    def __init__(self, num_templates: int, img_size: int, max_shift: int = 8) -> None:
        super().__init__()
        self.max_shift = max_shift
        self.size = img_size  # Python ints: the exporters see constant slices
        self.match = min(MATCH_SIZE, img_size - 2 * max_shift)
        self.register_buffer("templates", torch.zeros(num_templates, 3, img_size, img_size))
        self.register_buffer("spreads", torch.ones(num_templates, 3, img_size, img_size))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = standardize(images)
        s, n = self.max_shift, self.size
        B, C = x.shape[0], x.shape[1]
        k, dy, dx = self._best_window(x, self.templates)
        # the image moved onto its template's grid: row i of the template faces row
        # i + dy - s of the image; rows moved in from outside the image are masked out
        rows = dy[:, None] + torch.arange(n, device=x.device) - s  # B, n
        cols = dx[:, None] + torch.arange(n, device=x.device) - s
        padded = F.pad(x, (s, s, s, s), mode="replicate")
        window = padded.gather(2, (rows + s)[:, None, :, None].expand(B, C, n, n + 2 * s))
        window = window.gather(3, (cols + s)[:, None, None, :].expand(B, C, n, n))
        inside = ((rows >= 0) & (rows < n))[:, None, :, None] & ((cols >= 0) & (cols < n))[
            :, None, None, :
        ]
        residual = (window - self.templates.index_select(0, k)) / self.spreads.index_select(0, k)
        residual = signed_log(residual) * inside  # linear near zero, logarithmic when strong
        return torch.cat([x, residual], dim=1)

    @torch.no_grad()
    def fit(self, images: np.ndarray, groups: np.ndarray, per_group: int = 200, rounds: int = 2):
        """Fit one template and one residual spread per group (fab) from good dies.

        Args:
            images: uint8 (N, H, W, 3) good dies (a memory map is fine).
            groups: (N,) template index of each die, in [0, num_templates); -1 to skip.
            per_group: dies per template (the median of this many); the spread is measured
                on the next as many dies of the group (on the same ones when there are none).
            rounds: align-to-template-and-refit rounds after the first, unaligned median;
                then one more onto the dies' median position (a template that the first
                median left off-centre would spend the search on its own offset).
        """
        for k in range(self.templates.shape[0]):
            rows = np.flatnonzero(groups == k)
            if len(rows) == 0:
                continue
            x = _standardized(images, rows[:per_group])
            template = x.median(dim=0).values
            for _ in range(rounds):
                template = self._aligned(x, template).median(dim=0).values
            template = self._aligned(x, template, centred=True).median(dim=0).values
            held_out = rows[per_group : 2 * per_group]
            others = _standardized(images, held_out) if len(held_out) else x
            residual = self._aligned(others, template) - template
            spread = MAD_TO_SIGMA * residual.abs().median(dim=0).values
            self.templates[k] = template.to(self.templates.device)
            self.spreads[k] = spread.clamp_min(MIN_SPREAD).to(self.spreads.device)

    def _best_window(self, x: torch.Tensor, templates: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Per image, the template (k) and shift (dy, dx, each in [0, 2s]) that match best.

        The templates' central patch is matched in grey (the channels' mean): alignment is
        geometry, and one channel is a third of the work.
        """
        s, m = self.max_shift, self.match
        a = (self.size - m) // 2  # the patch's first row and column in the template
        patch = templates[:, :, a : a + m, a : a + m].mean(dim=1, keepdim=True)
        grey = x[:, :, a - s : a + m + s, a - s : a + m + s].mean(dim=1, keepdim=True)
        scores = F.conv2d(grey, patch)  # B, K, n, n: every template against every shift
        n = 2 * s + 1
        best = scores.flatten(1).argmax(dim=1)
        return best // (n * n), best // n % n, best % n

    def _aligned(self, x: torch.Tensor, template: torch.Tensor, centred: bool = False):
        """Each image shifted (wrapping) onto the template's grid; `centred`: onto the grid
        moved to the images' median position, so that a template fitted on them sits where
        the dies do on average and the search's +-max_shift is spent on their misalignment."""
        _, dy, dx = self._best_window(x, template[None])
        s = self.max_shift
        if centred:
            dy, dx = dy - (dy.median() - s), dx - (dx.median() - s)
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
