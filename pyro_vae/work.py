"""Estimates of work and memory, checked before starting what cannot finish.

A VAE step or a log p(x) estimate is dominated by the decoder outputs and prior terms it holds:
``per_point = params_per_element * prod(data_shape) + prior.size_per_point`` numbers per latent
sample per data point. A training step holds K * batch of them (forward and backward, a few
copies); log p(x) computes n * K of them in cache-sized chunks.
"""

import os
import warnings

from .errors import ConfigError, PyroVAEWarning

#: float32 numbers a step keeps per decoder output (activations, gradients, temporaries); generous
STEP_COPIES = 8
#: decoder outputs per second this kind of CPU computes for log p(x): 3.9e10 in 486 s on MNIST (2 cores)
LOGPX_RATE = 8e7
#: log p(x) work above this many seconds is refused, above WARN_SECONDS it is announced
REFUSE_SECONDS, WARN_SECONDS = 30 * 86400, 3600


def memory_bytes():
    """Physical memory of this machine (0 if unknown)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 0


def per_point(vae):
    return vae.likelihood.params_per_element * vae.num_inputs + vae.prior.size_per_point


def _size(n):
    return f"{n / 2**30:,.1f} GiB"


def check_step_memory(vae, batch_size, num_particles):
    """Refuse a training step whose K particles of a batch cannot fit in this machine's memory."""
    need = STEP_COPIES * 4 * num_particles * batch_size * per_point(vae)
    have = memory_bytes()
    if have and need > have:
        raise ConfigError(
            f"one training step with {num_particles} particle(s) of a batch of {batch_size} needs about {_size(need)}, "
            f"more than this machine's {_size(have)}: lower train.elbo.num_particles or data.batch_size"
        )


def _duration(seconds):
    for unit, size in (("days", 86400), ("hours", 3600), ("minutes", 60)):
        if seconds >= size:
            return f"{seconds / size:,.1f} {unit}"
    return f"{seconds:.0f} seconds"


def check_logpx_work(vae, num_points, num_samples, what="--iwae-samples"):
    """Refuse a log p(x) estimate that would run for more than a month on a CPU; warn above an hour."""
    seconds = num_points * num_samples * per_point(vae) / LOGPX_RATE
    if seconds > REFUSE_SECONDS:
        raise ConfigError(
            f"log p(x) with K = {num_samples:,} importance samples on {num_points:,} points would take about "
            f"{_duration(seconds)} on a 2-core CPU: lower {what} (K = 1000 to 5000 is the usual range)"
        )
    if seconds > WARN_SECONDS:
        warnings.warn(
            PyroVAEWarning(
                f"log p(x) with K = {num_samples:,} on {num_points:,} points: about {_duration(seconds)} on a 2-core CPU"
            ),
            stacklevel=2,
        )
