"""Large tensors reuse freed memory instead of faulting fresh pages in on every step."""

import subprocess
import sys

import pytest

STEPS = """
import resource, sys, torch
if sys.argv[1] == "kept":
    from model.allocator import keep_freed_memory
    assert keep_freed_memory()
x = torch.rand(64, 3, 256, 256)  # 50 MB, a batch of dies at full resolution

def step():
    y = (x - x.mean(dim=(2, 3), keepdim=True)) * 2.0
    return torch.log1p(y.abs()) * torch.sign(y)

step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(5):
    step()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def page_faults(mode: str) -> int:
    out = subprocess.run(
        [sys.executable, "-c", STEPS, mode], capture_output=True, text=True, check=True
    )
    return int(out.stdout.split()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc only")
def test_steps_over_large_tensors_reuse_their_memory():
    default, kept = page_faults("default"), page_faults("kept")
    assert kept * 4 < default, f"page faults: {kept} kept, {default} by default"
