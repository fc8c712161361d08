"""Host devices: one JAX CPU device per core, so that sharded calls use every core.

XLA runs one compiled program on about one core of a CPU; moejax's engine shards each call's
lanes over the local devices, so on a CPU it needs one *host device* per core. ``moejax sweep``
sets that up itself; in your own Python, call `use_all_cores()` before anything runs on JAX.
"""

from __future__ import annotations

import os


def cpu_cores() -> int:
    """The cores this process may run on (its CPU affinity; os.cpu_count() if unknown)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def use_all_cores(n: int | None = None) -> int:
    """Expose ``n`` (default: one per core) JAX CPU devices. Must run before JAX's backend
    starts (before the first computation); raises RuntimeError afterwards, naming the fix.
    Results never depend on the device count (see `moejax.simulate`). Returns n."""
    import jax

    n = cpu_cores() if n is None else int(n)
    if n < 1:
        raise ValueError(f"n: expected a positive number of devices, got {n}")
    if "xla_force_host_platform_device_count" in os.environ.get("XLA_FLAGS", ""):
        return len(jax.devices("cpu"))
    try:
        jax.config.update("jax_num_cpu_devices", n)
    except RuntimeError as err:
        raise RuntimeError(
            "use_all_cores: JAX has already started its backend; call moejax.use_all_cores() "
            f"before the first JAX computation, or set XLA_FLAGS ({err})"
        ) from None
    return n
