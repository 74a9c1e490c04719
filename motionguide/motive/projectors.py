"""Seeded Johnson–Lindenstrauss projectors for gradient features (Motive, sec. 5).

Every projector maps a gradient of D numbers to ``dim`` numbers (default 512) with E‖Px‖² = ‖x‖², so inner
products are preserved in expectation and the caller's ℓ2 normalisation turns them into cosines.

Why these choices:

* **Identical across processes.** All randomness comes from ``torch.Generator`` and numpy's PCG64, seeded by
  ``derive_seed(seed, tag, param_index, chunk_index)`` (a sha256 of the keys), never from global RNG state.
  By default (``rng_device=None``) state is generated on the CPU (Mersenne Twister) and moved to the
  gradient's device: every machine, with or without a GPU, gets bitwise identical random matrices.
  ``rng_device="cuda"`` generates it on the GPU instead (Philox: a different stream, so different features
  and scores, reproducible on the same kind of device and torch version), which on a GPU is far cheaper than
  the CPU generation that otherwise dominates featurisation. ``describe()`` names the generator (and the GPU
  model) and carries a fingerprint of generated state, so a store written with another RNG stream (another
  device type, a torch upgrade that changed ``randperm``) refuses to mix with new features instead of
  silently mixing two projections.
* **Streaming.** The featurizer sees one parameter's gradient at a time, in autograd's order, and frees it
  right after. Streaming projectors (``streaming = True``) give a contribution per parameter; the feature is
  the sum of the contributions, and ``project_full`` of the concatenation (in ``named_parameters()`` order)
  equals that sum.
* **fp32 throughout.** A Hadamard transform of 2^k numbers is k butterfly stages; bf16 would lose the signal.

Projectors (``make_projector`` names):

* ``fastfood_blockwise`` (default, :class:`BlockwiseFastfood`): each parameter cut into blocks of at most
  ``block_size`` numbers, one independent Fastfood sketch per block, sketches summed. Memory is one block.
* ``fastfood`` (:class:`FastfoodGlobal`): the paper's single Fastfood transform over the whole padded
  gradient; needs the full vector and O(padded size) memory.
* ``sparse_jl`` (:class:`SparseJL`): each coordinate lands in ``nonzeros`` output rows with random signs.
* ``dense_gaussian`` (:class:`DenseGaussian`): the N(0, 1)/√dim reference, generated chunk by chunk.

Inputs may carry a leading batch dimension ([B, n] -> [B, dim]), which benchmarks and tests use to project
many vectors against one generated state.
"""

from __future__ import annotations

import hashlib
import json
import math
from abc import ABC, abstractmethod
from typing import Any, Callable, Sequence

import numpy as np
import torch

from ..errors import ConfigError, closest_names

__all__ = [
    "Projector",
    "BlockwiseFastfood",
    "FastfoodGlobal",
    "SparseJL",
    "DenseGaussian",
    "PROJECTORS",
    "make_projector",
    "fwht",
    "feistel_permute",
    "derive_seed",
    "next_power_of_two",
    "auto_cache_bytes",
    "resolve_rng_device",
]

# Bump when a change to the maths or the random streams would change the features for the same config.
PROJECTION_SCHEME_VERSION = 1
DEFAULT_DIM = 512
DEFAULT_CACHE_BYTES = 256 * 2**20
PERMUTATIONS = ("randperm", "feistel")
_FEISTEL_ROUNDS = 8
_MASK32 = (1 << 32) - 1
# Odd multipliers below 2**31, so a 32-bit value times one never overflows int64.
_MIX_A = 0x2C1B3C6D
_MIX_B = 0x297A2D39


# ----------------------------------------------------------------------------------------------- helpers


def next_power_of_two(n: int) -> int:
    """The smallest power of two >= n (1 for n <= 1)."""
    return 1 if n <= 1 else 1 << (int(n) - 1).bit_length()


def derive_seed(seed: int, *keys: Any) -> int:
    """A 63-bit seed from a base seed and keys (tag, parameter, chunk): the same on every machine and process."""
    text = ":".join(str(k) for k in (int(seed), *keys))
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little") & ((1 << 63) - 1)


def _generator(seed: int, *keys: Any, device: torch.device | str = "cpu") -> torch.Generator:
    return torch.Generator(device=device).manual_seed(derive_seed(seed, *keys))


CPU_RNG = "torch.Generator(cpu)+numpy.PCG64, sha256-derived seeds"


def resolve_rng_device(rng_device: Any) -> torch.device:
    """The device random state is generated on: the CPU for None / "cpu" (the stream every machine shares),
    else the accelerator named (its own generator; checked now, so a bad name fails before any gradient)."""
    if rng_device is None:
        return torch.device("cpu")
    try:
        device = torch.device(rng_device)
        torch.Generator(device=device)
    except (RuntimeError, TypeError) as exc:
        raise ConfigError(f"rng_device {str(rng_device)!r}: no random generator there ({str(exc).splitlines()[0]}); "
                          "use cpu, or the accelerator the gradients are on (cuda, cuda:N)") from None
    return device


def rng_description(device: torch.device) -> str:
    """`describe()`'s "rng": which generator made the state. An accelerator's stream may differ between device
    models and torch versions, so both are named (the CPU stream is the same everywhere)."""
    if device.type == "cpu":
        return CPU_RNG
    name = device.type
    if device.type == "cuda":
        name = f"cuda, {torch.cuda.get_device_name(device)}"
    return f"torch.Generator({name}, torch {torch.__version__})+numpy.PCG64, sha256-derived seeds"


_LOW_BITS = 4  # the first log2(16) butterfly stages as one [*, 16] x [16, 16] product (contiguous, cheap)
_SMALL_HADAMARD: dict[int, torch.Tensor] = {}


def hadamard_matrix(n: int) -> torch.Tensor:
    """Sylvester's n x n Hadamard matrix (n a power of two), float32, cached; H[i, j] = (-1)^popcount(i & j)."""
    if n not in _SMALL_HADAMARD:
        h = torch.ones(1, 1)
        while h.shape[0] < n:
            h = torch.cat([torch.cat([h, h], 1), torch.cat([h, -h], 1)], 0)
        _SMALL_HADAMARD[n] = h
    return _SMALL_HADAMARD[n]


def fwht(x: torch.Tensor) -> torch.Tensor:
    """Unnormalised fast Walsh–Hadamard transform over the last dim (a power of two), batched, O(n log n).

    Returns ``x @ H`` with Sylvester's H[i, j] = (-1)^popcount(i & j) (symmetric); ``x`` is not modified.
    The four lowest-bit stages are one product with the 16 x 16 Hadamard matrix over contiguous groups of 16
    (H_n = H_{n/16} ⊗ H_16) on a CPU (~1.5x faster than butterflies alone), the rest are butterflies over two
    ping-pong buffers (peak memory about three times the input); on other devices all stages are butterflies.
    """
    n = x.shape[-1]
    if n & (n - 1) or n == 0:
        raise ValueError(f"fwht needs a power-of-two last dimension, got {n}; zero-pad the input first")
    lead = x.shape[:-1]
    rows = x.reshape(-1, n)
    if n == 1:
        return rows.clone().reshape(*lead, n)
    if rows.device.type == "cpu":  # exact here; on GPUs a TF32 matmul setting would round it, so butterflies only
        low = min(n, 1 << _LOW_BITS)
        src = (rows.reshape(-1, low) @ hadamard_matrix(low).to(rows.dtype)).reshape(-1, n)
    else:
        low, src = 1, rows
    buffers = [torch.empty_like(src), torch.empty_like(src) if src is rows else src]
    h, turn = low, 0
    while h < n:
        dst = buffers[turn]
        a = src.view(-1, n // (2 * h), 2, h)
        d = dst.view(-1, n // (2 * h), 2, h)
        torch.add(a[:, :, 0], a[:, :, 1], out=d[:, :, 0])
        torch.sub(a[:, :, 0], a[:, :, 1], out=d[:, :, 1])
        src, h, turn = dst, 2 * h, 1 - turn
    return src.reshape(*lead, n)


def _hash32(values: torch.Tensor, key: int) -> torch.Tensor:
    """A 32-bit integer mix of int64 values below 2**32 (multiply–xorshift; no int64 overflow)."""
    h = (values ^ (key & _MASK32)) & _MASK32
    h = (h * _MIX_A) & _MASK32
    h = h ^ (h >> 16)
    h = (h * _MIX_B) & _MASK32
    h = h ^ (h >> 15)
    return (h * _MIX_A) & _MASK32


def feistel_permute(indices: torch.Tensor, bits: int, keys: Sequence[int]) -> torch.Tensor:
    """A seeded bijection of [0, 2**bits): an (unbalanced) Feistel network on the index bits.

    Lets Fastfood's permutation be computed for any slice of indices on any device instead of storing an
    int64 permutation of the whole padded length. ``keys`` (one per round, an even count) come from the seed.
    """
    if len(keys) % 2:
        raise ValueError("feistel_permute needs an even number of round keys")
    if bits > 62:
        raise ValueError(f"feistel_permute supports at most 62 index bits, got {bits}")
    x = indices.to(torch.int64)
    lo_bits = bits // 2
    hi_bits = bits - lo_bits
    for key in keys:
        hi, lo = x >> lo_bits, x & ((1 << lo_bits) - 1)
        mixed = _hash32(lo, key) >> (32 - hi_bits) if hi_bits else torch.zeros_like(lo)
        x = (lo << hi_bits) | (hi ^ mixed)
        lo_bits, hi_bits = hi_bits, lo_bits
    return x


#: shares of the free memory the "auto" state cache may take: on a GPU the pass's activations need the rest
#: (the state is filled during the first clip's backward, when they are alive); on the CPU other processes do
AUTO_CACHE_SHARE = {"cuda": 0.4, "cpu": 0.25}


def _available_host_bytes() -> int:
    """MemAvailable of /proc/meminfo (psutil where there is no /proc), 0 when neither can tell."""
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except ImportError:
        return 0


def auto_cache_bytes(device: Any = None) -> int:
    """The "auto" budget of kept projector state: a share (`AUTO_CACHE_SHARE`) of the free memory of the device
    the gradients are on (`torch.cuda.mem_get_info` for a GPU, MemAvailable for the CPU), never below the old
    fixed default. Why it matters: regenerating a 2^20 block's state costs ~20-60 ms of one CPU core, so a
    budget that holds the whole model's state (11.9 GiB for Wan2.1-1.3B) makes every clip after the first pay
    only the transform. The budget never changes a feature (kept state equals regenerated state)."""
    device = torch.device(device) if device is not None else torch.device("cpu")
    if device.type == "cuda" and torch.cuda.is_available():
        free, _ = torch.cuda.mem_get_info(device)
        share = AUTO_CACHE_SHARE["cuda"]
    else:
        free, share = _available_host_bytes(), AUTO_CACHE_SHARE["cpu"]
    return max(DEFAULT_CACHE_BYTES, int(free * share))


class _StateCache:
    """Generated random state per (key, device), kept while a byte budget lasts.

    Fill-once rather than LRU: gradients arrive in the same order for every clip, and LRU on a cyclic access
    pattern larger than the budget hits nothing, whereas fill-once keeps a fixed share of the blocks.
    """

    def __init__(self, max_bytes: int):
        self.max_bytes = int(max_bytes)
        self.used = 0
        self._store: dict[tuple, tuple[torch.Tensor, ...]] = {}

    def get(self, key: tuple, device: torch.device, make: Callable[[], tuple[torch.Tensor, ...]]):
        """The state for `key` on `device`, made with `make()` when absent and kept if the budget allows."""
        full_key = (key, str(device))
        state = self._store.get(full_key)
        if state is None:
            state = tuple(t.to(device) for t in make())
            size = sum(t.numel() * t.element_size() for t in state)
            if self.used + size <= self.max_bytes:
                self._store[full_key] = state
                self.used += size
        return state


def _as_batch(x: torch.Tensor, what: str) -> tuple[torch.Tensor, bool]:
    """[n] or [B, n] -> ([B, n] float32, was_single)."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{what} must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() == 1:
        return x.reshape(1, -1).to(torch.float32), True
    if x.dim() == 2:
        return x.to(torch.float32), False
    raise ValueError(f"{what} must be flat [n] (or batched [B, n]), got shape {tuple(x.shape)}; "
                     "pass grad.reshape(-1)")


def _chi_row_scale(seed_keys: tuple, length: int, dim: int, g_norm: float) -> torch.Tensor:
    """Fastfood's S/√L, and 1/√dim: S_ii = chi_L / ‖G‖_F gives each row the norm law of a N(0, 1) row."""
    rng = np.random.Generator(np.random.PCG64(derive_seed(*seed_keys)))
    chi = np.sqrt(rng.chisquare(length, size=dim))
    return torch.from_numpy(chi / (g_norm * math.sqrt(length) * math.sqrt(dim))).to(torch.float32)


def _fold_first_rows(v: torch.Tensor, dim: int) -> torch.Tensor:
    """The first ``dim`` outputs of a length-L Hadamard transform, in O(L + d log d) instead of O(L log L).

    For i < d (d = dim rounded up to a power of two), H_L[i, j] = H_d[i, j mod d], so the first d outputs are
    H_d applied to the sum of the L/d consecutive length-d slices.
    """
    d = next_power_of_two(dim)
    folded = v.view(v.shape[0], v.shape[1] // d, d).sum(dim=1)
    return fwht(folded)[:, :dim]


def _sha_of_tensors(tensors: Sequence[torch.Tensor]) -> str:
    digest = hashlib.sha256()
    for t in tensors:
        t = t.detach().cpu().contiguous()
        digest.update(str(t.dtype).encode() + str(tuple(t.shape)).encode())
        digest.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()[:16]


# ------------------------------------------------------------------------------------------ base classes


class Projector(ABC):
    """A seeded linear map R^D -> R^dim with E‖Px‖² = ‖x‖²; outputs are float32 on the input's device."""

    dim: int
    seed: int
    streaming: bool = False

    def __init__(self, dim: int, seed: int, rng_device: Any = None):
        if int(dim) < 1:
            raise ConfigError(f"projection dim must be >= 1, got {dim}")
        self.dim = int(dim)
        self.seed = int(seed)
        #: where random state is generated (then moved to each gradient's device): see `resolve_rng_device`
        self.rng_device = resolve_rng_device(rng_device)
        self._fingerprint: str | None = None

    def describe(self) -> dict:
        """JSON-able config that decides the projection (for hashing into feature stores)."""
        if self._fingerprint is None:
            self._fingerprint = _sha_of_tensors(self._fingerprint_state())
        return {"class": type(self).__name__, "scheme_version": PROJECTION_SCHEME_VERSION, "dim": self.dim,
                "seed": self.seed, "rng": rng_description(self.rng_device),
                "fingerprint": self._fingerprint, **self._describe_extra()}

    def project_parameter(self, param_index: int, flat_grad: torch.Tensor) -> torch.Tensor:
        """One parameter's contribution to the feature ([dim] float32); only for streaming projectors."""
        raise NotImplementedError(f"{type(self).__name__} needs the whole gradient: call project_full, or use "
                                  "a streaming projector such as make_projector('fastfood_blockwise', ...)")

    @abstractmethod
    def project_full(self, flat: torch.Tensor) -> torch.Tensor:
        """The feature ([dim] float32, not normalised) of the whole flat gradient in parameter order."""

    @abstractmethod
    def _describe_extra(self) -> dict:
        ...

    @abstractmethod
    def _fingerprint_state(self) -> list[torch.Tensor]:
        """A little generated random state, so a changed RNG stream changes ``describe()``."""


class _StreamingProjector(Projector):
    """Sums per-chunk sketches; each (parameter, chunk) has its own seed, so any order gives the same sum."""

    streaming = True

    def __init__(self, sizes: Sequence[int], dim: int, seed: int, chunk: int, cache_bytes: int,
                 rng_device: Any = None):
        super().__init__(dim, seed, rng_device)
        sizes = [int(s) for s in sizes]
        if not sizes or any(s < 0 for s in sizes):
            raise ConfigError("sizes must be a non-empty list of parameter numels (>= 0), in "
                              "named_parameters() order, e.g. [p.numel() for _, p in model.named_parameters()]")
        if int(chunk) < 1:
            raise ConfigError(f"chunk/block size must be >= 1, got {chunk}")
        self.sizes = tuple(sizes)
        self.total_size = sum(sizes)
        self.chunk = int(chunk)
        self._cache = _StateCache(cache_bytes)

    def project_parameter(self, param_index: int, flat_grad: torch.Tensor) -> torch.Tensor:
        """Sum of the chunk sketches of one parameter's flat gradient ([dim] or [B, dim])."""
        if not 0 <= param_index < len(self.sizes):
            raise IndexError(f"param_index {param_index} out of range: this projector was built for "
                             f"{len(self.sizes)} parameters")
        x, single = _as_batch(flat_grad, "flat_grad")
        n = self.sizes[param_index]
        if x.shape[1] != n:
            raise ValueError(f"parameter {param_index} has {n} elements in this projector's sizes but the "
                             f"gradient has {x.shape[1]}; build the projector from the same model's "
                             "named_parameters() order")
        out = torch.zeros(x.shape[0], self.dim, dtype=torch.float32, device=x.device)
        for chunk_index, start in enumerate(range(0, n, self.chunk)):
            out += self._project_chunk(param_index, chunk_index, x[:, start:start + self.chunk])
        return out[0] if single else out

    def project_many(self, items: Sequence[tuple[int, torch.Tensor]]) -> torch.Tensor:
        """Sum of the features of several parameters' flat gradients, [(param_index, flat [n]), ...] -> [dim].

        The same number as summing `project_parameter` over the items (up to float rounding); projectors may
        batch the work (many small tensors are far cheaper together than one by one).
        """
        out = None
        for index, flat in items:
            part = self.project_parameter(index, flat)
            out = part if out is None else out + part
        if out is None:
            raise ValueError("project_many needs at least one (param_index, gradient) item")
        return out

    def project_full(self, flat: torch.Tensor) -> torch.Tensor:
        """Split the flat gradient by parameter sizes and sum the per-parameter contributions."""
        x, single = _as_batch(flat, "flat")
        if x.shape[1] != self.total_size:
            raise ValueError(f"flat gradient has {x.shape[1]} elements, the projector's sizes sum to "
                             f"{self.total_size}")
        out = torch.zeros(x.shape[0], self.dim, dtype=torch.float32, device=x.device)
        start = 0
        for index, n in enumerate(self.sizes):
            out += self.project_parameter(index, x[:, start:start + n])
            start += n
        return out[0] if single else out

    def _describe_extra(self) -> dict:
        sizes_json = json.dumps(list(self.sizes)).encode()
        return {"n_params": len(self.sizes), "total_size": self.total_size,
                "sizes_sha256": hashlib.sha256(sizes_json).hexdigest()[:16]}

    @abstractmethod
    def _project_chunk(self, param_index: int, chunk_index: int, x: torch.Tensor) -> torch.Tensor:
        """[B, n] -> [B, dim] for one chunk of one parameter."""


# -------------------------------------------------------------------------------------------- projectors


class DenseGaussian(_StreamingProjector):
    """The reference: x ↦ M x / √dim with M ~ N(0, 1), generated ``chunk`` columns at a time from seeds.

    The full matrix never exists in memory; one chunk is dim × chunk float32 (128 MiB at the defaults).
    Slow for real models (D × dim numbers drawn per clip unless cached): for tests and benchmarks.
    """

    def __init__(self, sizes: Sequence[int], dim: int = DEFAULT_DIM, seed: int = 0, chunk: int = 2**16,
                 cache_bytes: int = DEFAULT_CACHE_BYTES, rng_device: Any = None):
        super().__init__(sizes, dim, seed, chunk, cache_bytes, rng_device)

    def _matrix(self, param_index: int, chunk_index: int, n: int) -> tuple[torch.Tensor]:
        dev = self.rng_device
        gen = _generator(self.seed, "dense", param_index, chunk_index, device=dev)
        return (torch.randn(n, self.dim, generator=gen, device=dev).mul_(1.0 / math.sqrt(self.dim)),)

    def _project_chunk(self, param_index: int, chunk_index: int, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[1]
        (matrix,) = self._cache.get(("dense", param_index, chunk_index), x.device,
                                    lambda: self._matrix(param_index, chunk_index, n))
        return x @ matrix

    def _describe_extra(self) -> dict:
        return {**super()._describe_extra(), "chunk": self.chunk}

    def _fingerprint_state(self) -> list[torch.Tensor]:
        return list(self._matrix(0, 0, 3))


class SparseJL(_StreamingProjector):
    """Sparse JL (Kane–Nelson style): each coordinate goes to ``nonzeros`` rows with signs ±1/√nonzeros.

    When ``nonzeros`` divides ``dim``, the output is split into ``nonzeros`` blocks and each coordinate picks
    one row per block (no collisions); otherwise the rows are drawn independently. Per chunk the state is
    ``nonzeros`` int64 row indices and signs per input coordinate.

    The sum uses ``index_add_``, which is sequential on the CPU but uses atomics on CUDA: for bitwise
    identical CUDA features across ranks, run under ``torch.use_deterministic_algorithms(True)`` (which makes
    CUDA ``index_add_`` deterministic). The Fastfood and dense projectors need no such setting.
    """

    def __init__(self, sizes: Sequence[int], dim: int = DEFAULT_DIM, seed: int = 0, nonzeros: int = 4,
                 chunk: int = 2**20, cache_bytes: int = DEFAULT_CACHE_BYTES, rng_device: Any = None):
        super().__init__(sizes, dim, seed, chunk, cache_bytes, rng_device)
        if not 1 <= int(nonzeros) <= self.dim:
            raise ConfigError(f"nonzeros must be in [1, dim={self.dim}], got {nonzeros}")
        self.nonzeros = int(nonzeros)

    def _hashing(self, param_index: int, chunk_index: int, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        dev = self.rng_device
        gen = _generator(self.seed, "sparse", param_index, chunk_index, device=dev)
        s = self.nonzeros
        if self.dim % s == 0:
            block = self.dim // s
            rows = (torch.randint(0, block, (s, n), generator=gen, device=dev)
                    + torch.arange(s, device=dev)[:, None] * block)
        else:
            rows = torch.randint(0, self.dim, (s, n), generator=gen, device=dev)
        signs = torch.randint(0, 2, (s, n), generator=gen, device=dev).to(torch.float32).mul_(2).sub_(1)
        return rows.reshape(-1), signs.mul_(1.0 / math.sqrt(s)).reshape(-1)

    def _project_chunk(self, param_index: int, chunk_index: int, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[1]
        rows, signs = self._cache.get(("sparse", param_index, chunk_index), x.device,
                                      lambda: self._hashing(param_index, chunk_index, n))
        values = (x.unsqueeze(1) * signs.view(self.nonzeros, n)).reshape(x.shape[0], -1)
        out = torch.zeros(x.shape[0], self.dim, dtype=torch.float32, device=x.device)
        return out.index_add_(1, rows, values)

    def _describe_extra(self) -> dict:
        return {**super()._describe_extra(), "chunk": self.chunk, "nonzeros": self.nonzeros}

    def _fingerprint_state(self) -> list[torch.Tensor]:
        return list(self._hashing(0, 0, 7))


class BlockwiseFastfood(_StreamingProjector):
    """The default: an independent Fastfood sketch per block of at most ``block_size`` gradient numbers, summed.

    Per block of n numbers, zero-padded to L = next power of two ≥ n: V = S H G Π H B / √L (B random ±1,
    H Walsh–Hadamard, Π a seeded permutation, G diagonal N(0, 1), S_ii = chi_L / ‖G‖_F), first ``dim`` rows,
    so each row has the norm law of a dense N(0, 1) row and each entry unit variance, whatever n is: blocks of
    different sizes are weighted alike, and the sum over independent blocks is a JL sketch of the whole
    gradient (E‖Px‖² = ‖x‖² after the shared 1/√dim). Memory: one block (work vector, B, Π, G).

    Blocks with L < dim (biases, norms) cannot give ``dim`` Fastfood rows; they use a dense seeded
    N(0, 1)/√dim matrix of dim × n instead (at most dim² numbers, cheap).

    ``permutation="feistel"`` computes Π by a seeded Feistel bijection on the device instead of storing an
    int64 permutation of L per block. Generated state (per 2^20 block: B int8 1 MiB, Π int32 4 MiB, G 4 MiB)
    is kept per block while ``cache_bytes`` lasts; generating it costs ~40–60 ms of one CPU core per 2^20
    block with ``randperm`` (~10 ms with ``feistel``, whose Π is then computed on the gradient's device:
    cheap on a GPU, ~0.25 s per block on one CPU core), so for billion-parameter models give the cache room
    for as much of the model as memory allows, and on a GPU generate it there (``rng_device``).
    """

    def __init__(self, sizes: Sequence[int], dim: int = DEFAULT_DIM, seed: int = 0, block_size: int = 2**20,
                 permutation: str = "randperm", cache_bytes: int = DEFAULT_CACHE_BYTES, rng_device: Any = None):
        super().__init__(sizes, dim, seed, block_size, cache_bytes, rng_device)
        if permutation not in PERMUTATIONS:
            raise ConfigError(f"unknown permutation {permutation!r}; valid: {', '.join(PERMUTATIONS)}")
        self.block_size = int(block_size)
        self.permutation = permutation

    def _fastfood_state(self, param_index: int, chunk_index: int, n: int) -> tuple[torch.Tensor, ...]:
        length = next_power_of_two(n)
        dev = self.rng_device
        gen = _generator(self.seed, "fastfood", param_index, chunk_index, device=dev)
        signs = torch.randint(0, 2, (n,), generator=gen, dtype=torch.int8, device=dev).mul_(2).sub_(1)
        if self.permutation == "randperm":
            perm = torch.randperm(length, generator=gen, device=dev).to(torch.int32)  # index_select takes int32
        else:
            perm = torch.randint(0, 2**31, (_FEISTEL_ROUNDS,), generator=gen, device=dev)  # round keys
        gauss = torch.randn(length, generator=gen, device=dev)
        g_norm = float(gauss.double().norm())
        row_scale = _chi_row_scale((self.seed, "fastfood-chi", param_index, chunk_index), length, self.dim,
                                   g_norm).to(dev)
        return signs, perm, gauss, row_scale

    def _dense_state(self, param_index: int, chunk_index: int, n: int) -> tuple[torch.Tensor]:
        dev = self.rng_device
        gen = _generator(self.seed, "fastfood-dense", param_index, chunk_index, device=dev)
        return (torch.randn(n, self.dim, generator=gen, device=dev).mul_(1.0 / math.sqrt(self.dim)),)

    def _project_chunk(self, param_index: int, chunk_index: int, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[1]
        length = next_power_of_two(n)
        key = ("fastfood", param_index, chunk_index)
        if length < self.dim:
            (matrix,) = self._cache.get(key, x.device, lambda: self._dense_state(param_index, chunk_index, n))
            return x @ matrix
        signs, perm, gauss, row_scale = self._cache.get(
            key, x.device, lambda: self._fastfood_state(param_index, chunk_index, n))
        return _fastfood(x, signs, perm, gauss, row_scale, self.dim, self.permutation)

    def project_many(self, items: Sequence[tuple[int, torch.Tensor]]) -> torch.Tensor:
        """Batched `project_parameter` over many tensors: chunks of one padded length go through one stacked
        Fastfood (one FWHT over [k, L] rather than k calls), small ones through one batched product per size.
        The stacked random state of a group is the per-chunk state, so the result is the per-tensor sum."""
        if not items:
            raise ValueError("project_many needs at least one (param_index, gradient) item")
        if self.permutation != "randperm":
            return super().project_many(items)
        groups: dict[tuple[str, int], list[tuple[int, int, torch.Tensor]]] = {}
        device = items[0][1].device
        for index, flat in items:
            flat = flat.reshape(-1).to(device, torch.float32)
            if flat.numel() != self.sizes[index]:
                raise ValueError(f"parameter {index} has {self.sizes[index]} elements in this projector's sizes "
                                 f"but the gradient has {flat.numel()}")
            for chunk_index, start in enumerate(range(0, flat.numel(), self.chunk)):
                x = flat[start:start + self.chunk]
                length = next_power_of_two(x.numel())
                kind = ("dense", x.numel()) if length < self.dim else ("fastfood", length)
                groups.setdefault(kind, []).append((index, chunk_index, x))
        out = torch.zeros(self.dim, dtype=torch.float32, device=device)
        for (kind, size), members in sorted(groups.items()):
            keys = tuple((i, c) for i, c, _ in members)
            if kind == "dense":
                (matrices,) = self._cache.get(("dense-stack", keys), device, lambda k=keys, n=size: (torch.stack(
                    [self._dense_state(i, c, n)[0] for i, c in k]),))
                xs = torch.stack([x for _, _, x in members])  # [k, n]
                out += torch.bmm(xs.unsqueeze(1), matrices).sum(dim=0)[0]
                continue
            state = self._cache.get(("fastfood-stack", keys), device,
                                    lambda m=members, L=size: self._stacked_fastfood_state(m, L))
            signs, perm, gauss, row_scale = state
            if all(x.numel() == size for _, _, x in members):  # no padding: one stacked product
                v = torch.stack([x for _, _, x in members]).mul_(signs)
            else:
                v = torch.zeros(len(members), size, dtype=torch.float32, device=device)
                for row, (_, _, x) in enumerate(members):
                    v[row, :x.numel()] = x * signs[row, :x.numel()]
            rows = len(members)
            v = fwht(v).reshape(-1).index_select(0, perm).view(rows, size).mul_(gauss)
            out += (_fold_first_rows(v, self.dim) * row_scale).sum(dim=0)
        return out

    def _stacked_fastfood_state(self, members, length: int) -> tuple[torch.Tensor, ...]:
        signs = torch.zeros(len(members), length, dtype=torch.int8, device=self.rng_device)
        perms, gausses, scales = [], [], []
        for row, (index, chunk_index, x) in enumerate(members):
            s, perm, gauss, scale = self._fastfood_state(index, chunk_index, x.numel())
            signs[row, :x.numel()] = s
            perms.append(perm.long() + row * length)  # rows flattened: one index_select for the whole group
            gausses.append(gauss)
            scales.append(scale)
        flat_perm = torch.cat(perms)
        if flat_perm.numel() < 2**31:
            flat_perm = flat_perm.to(torch.int32)  # index_select takes int32, and it is faster
        return signs, flat_perm, torch.stack(gausses), torch.stack(scales)

    def _describe_extra(self) -> dict:
        return {**super()._describe_extra(), "block_size": self.block_size, "permutation": self.permutation}

    def _fingerprint_state(self) -> list[torch.Tensor]:
        return [*self._fastfood_state(0, 0, self.dim + 1), *self._dense_state(0, 1, 3)]


class FastfoodGlobal(Projector):
    """The paper's Fastfood: one transform over the whole gradient zero-padded to L = next power of two.

    Not streaming (Π mixes every parameter with every other). Memory O(L): the work vector and its FWHT
    buffers (3 × 4L bytes), G (4L bytes), B (1 byte per gradient number) and, with ``permutation="randperm"``,
    Π as int32 (4L bytes; generating it takes an int64 permutation of L on the CPU once). For Wan2.1-1.3B,
    L = 2^31: ~8 GiB per fp32 vector, so prefer ``permutation="feistel"`` (no stored Π) and keep the state on
    one device. B and G are generated in ``gen_chunk`` pieces from per-piece seeds, so the CPU never holds
    more than one piece of them at a time besides the kept state.
    """

    def __init__(self, total_size: int, dim: int = DEFAULT_DIM, seed: int = 0, permutation: str = "randperm",
                 gen_chunk: int = 2**22, rng_device: Any = None):
        super().__init__(dim, seed, rng_device)
        if int(total_size) < 1:
            raise ConfigError(f"total_size must be >= 1, got {total_size}")
        if permutation not in PERMUTATIONS:
            raise ConfigError(f"unknown permutation {permutation!r}; valid: {', '.join(PERMUTATIONS)}")
        self.total_size = int(total_size)
        self.length = next_power_of_two(max(self.total_size, next_power_of_two(self.dim)))
        self.permutation = permutation
        self.gen_chunk = int(gen_chunk)
        self._state: dict[str, tuple[torch.Tensor, ...]] = {}

    def _make_state(self, device: torch.device) -> tuple[torch.Tensor, ...]:
        signs = torch.empty(self.total_size, dtype=torch.int8, device=device)
        gauss = torch.empty(self.length, dtype=torch.float32, device=device)
        g_sq = 0.0
        dev = self.rng_device
        for k, start in enumerate(range(0, self.length, self.gen_chunk)):
            stop = min(self.length, start + self.gen_chunk)
            gen = _generator(self.seed, "global", k, device=dev)
            if start < self.total_size:
                hi = min(stop, self.total_size)
                bits = torch.randint(0, 2, (hi - start,), generator=gen, dtype=torch.int8, device=dev)
                signs[start:hi] = (bits * 2 - 1).to(device)
            piece = torch.randn(stop - start, generator=gen, device=dev)
            g_sq += float(piece.double().square().sum())
            gauss[start:stop] = piece.to(device)
        gen = _generator(self.seed, "global-perm", device=dev)
        if self.permutation == "randperm":
            perm = torch.randperm(self.length, generator=gen, device=dev).to(torch.int32).to(device)
        else:
            perm = torch.randint(0, 2**31, (_FEISTEL_ROUNDS,), generator=gen, device=dev)
        row_scale = _chi_row_scale((self.seed, "global-chi"), self.length, self.dim, math.sqrt(g_sq)).to(device)
        return signs, perm, gauss, row_scale

    def project_full(self, flat: torch.Tensor) -> torch.Tensor:
        """One Fastfood transform of the whole flat gradient, generating the state on first use per device."""
        x, single = _as_batch(flat, "flat")
        if x.shape[1] != self.total_size:
            raise ValueError(f"flat gradient has {x.shape[1]} elements, this projector was built for "
                             f"total_size={self.total_size}")
        key = str(x.device)
        if key not in self._state:
            self._state[key] = self._make_state(x.device)
        signs, perm, gauss, row_scale = self._state[key]
        out = _fastfood(x, signs, perm, gauss, row_scale, self.dim, self.permutation)
        return out[0] if single else out

    def _describe_extra(self) -> dict:
        return {"total_size": self.total_size, "padded_size": self.length, "permutation": self.permutation,
                "gen_chunk": self.gen_chunk}

    def _fingerprint_state(self) -> list[torch.Tensor]:
        dev = self.rng_device
        gen = _generator(self.seed, "global", 0, device=dev)
        head = [torch.randint(0, 2, (7,), generator=gen, dtype=torch.int8, device=dev),
                torch.randn(7, generator=gen, device=dev)]
        perm_gen = _generator(self.seed, "global-perm", device=dev)
        head.append(torch.randperm(8, generator=perm_gen, device=dev) if self.permutation == "randperm"
                    else torch.randint(0, 2**31, (_FEISTEL_ROUNDS,), generator=perm_gen, device=dev))
        return head


def _fastfood(x: torch.Tensor, signs: torch.Tensor, perm: torch.Tensor, gauss: torch.Tensor,
              row_scale: torch.Tensor, dim: int, permutation: str, piece: int = 2**22) -> torch.Tensor:
    """[B, n] -> [B, dim]: first ``dim`` rows of S H G Π H B (x zero-padded to len(gauss)), scaled."""
    batch, n = x.shape
    length = gauss.shape[0]
    v = torch.zeros(batch, length, dtype=torch.float32, device=x.device)
    v[:, :n] = x * signs
    v = fwht(v)
    if permutation == "randperm":
        v = v.index_select(1, perm)
    else:
        keys = [int(k) for k in perm.tolist()]
        bits = length.bit_length() - 1
        permuted = torch.empty_like(v)
        for start in range(0, length, piece):
            idx = torch.arange(start, min(length, start + piece), device=x.device)
            permuted[:, start:start + idx.numel()] = v.index_select(1, feistel_permute(idx, bits, keys))
        v = permuted
    v.mul_(gauss)
    return _fold_first_rows(v, dim) * row_scale


# -------------------------------------------------------------------------------------------- registry

PROJECTORS = ("fastfood_blockwise", "fastfood", "sparse_jl", "dense_gaussian")


def make_projector(name: str, sizes: Sequence[int], dim: int = DEFAULT_DIM, seed: int = 0, **kw) -> Projector:
    """Build a projector by name for parameters of the given numels (``named_parameters()`` order)."""
    if name == "fastfood_blockwise":
        return BlockwiseFastfood(sizes, dim=dim, seed=seed, **kw)
    if name == "fastfood":
        return FastfoodGlobal(sum(int(s) for s in sizes), dim=dim, seed=seed, **kw)
    if name == "sparse_jl":
        return SparseJL(sizes, dim=dim, seed=seed, **kw)
    if name == "dense_gaussian":
        return DenseGaussian(sizes, dim=dim, seed=seed, **kw)
    close = closest_names(name, PROJECTORS)
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    raise ConfigError(f"unknown projector {name!r}.{hint} Valid names: {', '.join(PROJECTORS)}.")
