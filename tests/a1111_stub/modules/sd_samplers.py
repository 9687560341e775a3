"""Stand-in for `modules.sd_samplers.all_samplers` (names only)."""

from types import SimpleNamespace

all_samplers = [SimpleNamespace(name=n) for n in ("DPM++ 2M", "Euler a", "Euler")]
