"""The long-running commands' allocator setting (glibc's: citywatch runs on Debian and Ubuntu): memory a
freed large block held goes back to the system, even after an earlier large block would have taught glibc
to keep blocks that size in its heap."""

from __future__ import annotations

import subprocess
import sys
import textwrap

# In a child process, so the test run's own allocator keeps its defaults. A 24 MiB block freed first raises
# glibc's dynamic mmap threshold (and its trim threshold with it) unless the threshold is fixed; then 8 blocks
# of 4 MiB are touched and freed, and the child prints how much of their 32 MiB it still holds.
CHILD = textwrap.dedent("""
    import sys
    from citywatch.interpreter_tuning import fix_mmap_threshold

    def rss_kib():
        with open("/proc/self/status") as status:
            return next(int(line.split()[1]) for line in status if line.startswith("VmRSS"))

    if sys.argv[1] == "fixed":
        assert fix_mmap_threshold()
    large = bytearray(24 << 20)
    del large
    before = rss_kib()
    blocks = [bytearray(4 << 20) for _ in range(8)]
    for block in blocks:
        block[::4096] = b"x" * len(block[::4096])
    del block
    blocks.clear()
    print((rss_kib() - before) // 1024)
""")


def megabytes_kept_after_freeing(mode: str) -> int:
    result = subprocess.run([sys.executable, "-c", CHILD, mode], capture_output=True, text=True, check=True)
    return int(result.stdout)


def test_large_blocks_freed_are_returned_with_the_threshold_fixed() -> None:
    assert megabytes_kept_after_freeing("default") >= 24  # what the setting is for: glibc keeps them
    assert megabytes_kept_after_freeing("fixed") < 4
