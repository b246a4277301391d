"""The golden-die comparison finds the template and shift, and leaves only the defect."""

import numpy as np
import torch

from model.reference import GoldenReference, standardize


def layout(seed: int, size: int = 32) -> torch.Tensor:
    """A random binary layout (3, size, size) in [0, 1], different per seed."""
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(1, size // 4, size // 4, generator=g) > 0.5).float().repeat_interleave(
        4, 1
    ).repeat_interleave(4, 2).expand(3, -1, -1) * 0.6 + 0.2


def fitted(shift: int = 2) -> GoldenReference:
    ref = GoldenReference(num_templates=2, img_size=32, max_shift=shift)
    dies = torch.stack([layout(0), layout(0), layout(1), layout(1)])  # two fabs, two dies each
    images = (dies.permute(0, 2, 3, 1) * 255).round().to(torch.uint8).numpy()
    ref.fit(images, np.array([0, 0, 1, 1]))
    return ref


def test_a_shifted_good_die_leaves_no_residual_inside_the_search_window():
    ref = fitted()
    for fab in (0, 1):
        die = layout(fab).roll((1, -2), dims=(1, 2))[None]  # misaligned by (1, -2) px
        out = ref(die)
        assert out.shape == (1, 6, 32, 32)
        assert torch.allclose(out[:, :3], standardize(die), atol=1e-6)
        assert out[:, 3:, 2:-2, 2:-2].abs().max() < 1e-4


def test_a_die_misaligned_by_several_pixels_is_compared_over_the_whole_die():
    size = 64
    ref = GoldenReference(num_templates=1, img_size=size, max_shift=8)
    template = layout(2, size)
    images = (template[None].permute(0, 2, 3, 1) * 255).round().to(torch.uint8).numpy()
    ref.fit(images, np.zeros(1, dtype=int), per_group=1)
    die = ref.templates.new_tensor(images[0]).permute(2, 0, 1)[None] / 255.0
    out = ref(die.roll((6, -5), dims=(2, 3)))[0, 3:]  # a stage 6 px down, 5 px left
    assert out[:, : size - 6, 5:].abs().max() < 1e-4  # the layout cancels everywhere it is seen
    assert out[:, size - 6 :].abs().max() == 0 and out[:, :, :5].abs().max() == 0  # moved in


def test_a_particle_stands_out_of_the_residual_where_it_is():
    ref = fitted()
    die = layout(1).clone()
    die[:, 14:18, 20:24] = 0.0  # a dark particle
    residual = ref(die[None])[0, 3:].sinh().abs().sum(0)  # sinh undoes the compression
    y, x = divmod(int(residual.argmax()), 32)
    assert 14 <= y < 18 and 20 <= x < 24
    outside = residual.clone()
    outside[12:20, 18:26] = 0
    assert residual.max() > 10 * outside.max() + 1e-6


def test_each_die_in_a_batch_is_matched_on_its_own():
    ref = fitted()
    dies = torch.stack([layout(0), layout(1).roll(1, dims=2)])
    together = ref(dies)
    alone = torch.cat([ref(dies[:1]), ref(dies[1:])])
    assert torch.allclose(together, alone, atol=1e-6)


def test_the_residual_is_measured_in_units_of_the_good_dies_spread():
    size = 32
    base = layout(0, size)
    g = torch.Generator().manual_seed(3)
    goods = []
    for _ in range(40):  # good dies whose one edge column wanders, as blur and sub-pixel shift do
        die = base.clone()
        die[:, :, 16] += 0.15 * torch.randn(1, generator=g)
        goods.append(die.clamp(0, 1))
    images = (torch.stack(goods).permute(0, 2, 3, 1) * 255).round().to(torch.uint8).numpy()
    ref = GoldenReference(num_templates=1, img_size=size, max_shift=2)
    ref.fit(images, np.zeros(40, dtype=int), per_group=20)

    spread = ref.spreads[0, :, 2:-2]  # rows inside the search margin, all columns
    assert spread[:, :, 14].max() < 0.1  # a quiet column keeps the floor
    assert spread[:, :, 14].min() >= 0.05
    assert spread[:, :, 14].max() * 3 < spread[:, :, 16].min()  # the wandering one is wide

    wandering, particle = base.clone(), base.clone()
    wandering[:, :, 16] += 0.15  # a usual excursion of that column
    particle[:, 6:8, 6:8] -= 0.15  # a particle of the same contrast on a quiet spot
    out = ref(torch.stack([wandering, particle]).clamp(0, 1))[:, 3:]
    residual = out.abs().expm1().amax(dim=(1, 2, 3))  # in spreads
    assert residual[1] > 5 * residual[0]
    assert out.abs().max() < 6  # the signed log keeps even a strong defect in a learnable range


def test_a_template_fitted_on_a_fab_that_misaligns_by_6_px_sits_where_its_dies_do():
    """A randomized fab (fine periodic layout, stage misalignment up to 6 px): the template
    is fitted at the dies' median position, so no die's match lands on the edge of the
    +-8 px search (one that does was cut off there: misaligned, its layout left in the
    residual)."""
    from model.synthetic.images import render_die
    from model.synthetic.world import draw_world

    look = draw_world(2).look
    assert look.misalignment == 6

    def good_dies(n: int, first_seed: int) -> np.ndarray:
        rows = [
            {"die_seed": first_seed + i, "label": 0, "fab": "C", "discoloration": False,
             "faint": False, "wafer_zone": "middle", "die_x": 0, "die_y": 0}
            for i in range(n)
        ]  # fmt: skip
        return np.stack([render_die(row, look=look) for row in rows])

    ref = GoldenReference(num_templates=1, img_size=256, max_shift=8)
    ref.fit(good_dies(60, 0), np.zeros(60, dtype=int), per_group=30)
    dies = standardize(torch.from_numpy(good_dies(40, 1000)).permute(0, 3, 1, 2))
    _, dy, dx = ref._best_window(dies, ref.templates)
    shifts = torch.cat([dy, dx]) - 8
    assert shifts.abs().max() < 8  # every die found inside the search
    assert dy.float().median().sub(8).abs() <= 2 and dx.float().median().sub(8).abs() <= 2
