"""refimpl.memory: freed blocks stay in the process (glibc), so the next step reuses them."""

import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent("""
    import sys
    import numpy as np
    from refimpl.memory import retain_freed_memory

    def rss_kib():
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))

    if sys.argv[1] == "retain":
        assert retain_freed_memory() is True
        assert retain_freed_memory() is True  # once per process, then cached
    a = np.ones(16 << 20, dtype=np.uint8)  # 16 MiB, touched
    before = rss_kib()
    del a
    print(before - rss_kib())  # KiB given back to the OS by the free
""")


def freed_kib(mode: str) -> int:
    out = subprocess.run([sys.executable, "-c", SCRIPT, mode], capture_output=True, text=True,
                         check=True)
    return int(out.stdout.strip())


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt: Linux only")
def test_freed_blocks_stay_in_the_process_only_when_retained():
    # Without the setting a 16 MiB block is unmapped when freed; with it, it stays for reuse.
    assert freed_kib("default") > 12 * 1024
    assert freed_kib("retain") < 1024
