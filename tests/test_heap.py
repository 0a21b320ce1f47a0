"""release_free_heap gives memory that a process freed, but glibc kept, back to the OS."""

from pathlib import Path

import pytest

from recbole_llm.heap import release_free_heap

pytestmark = pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads /proc (Linux)")


def resident_mb() -> float:
    line = next(x for x in Path("/proc/self/status").read_text().splitlines() if x.startswith("VmRSS:"))
    return int(line.split()[1]) / 1024


def test_memory_freed_below_a_live_block_goes_back_to_the_os_when_released():
    release_free_heap()
    start = resident_mb()
    # 256 MB in 64 KB blocks (heap, not mmap), then one block above them that stays alive: freeing the
    # others leaves a hole glibc keeps, as a fine-tuning step's tensors of many sizes do.
    blocks = [bytes(64 * 1024) for _ in range(4096)]
    pin = bytes(64 * 1024)
    del blocks
    kept = resident_mb()
    assert release_free_heap() is True
    released = resident_mb()
    assert kept - start > 128, f"glibc kept {kept - start:.0f} of the 256 MB freed (expected most)"
    assert released - start < 32, f"{released - start:.0f} MB still resident after the release"
    assert pin
