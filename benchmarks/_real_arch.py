"""The stages a Wan2.1 fine-tune runs, on a random-weight pipeline with the released architecture, each as one
timed call with its peak memory: shared by `real_arch_stages.py` (CPU, projected to 81x480x832) and
`gpu_smoke.py` (CUDA, measured there).

Every stage goes through the library's own API, so what is measured is what `train/finetune.py`, `motionguide
curate` and `sample/generate.py` run: `motionguide.loading.load_pipeline` (bf16 weights; diffusers keeps its
fp32 modules), the backbone's VAE / text encoding (the latent cache's), a LoRA r32 step on the configs' target
modules (trainable weights fp32, forward under bf16 autocast as accelerate runs it), Motive's
`GradientFeaturizer` with the pass's default projector, stock sampling with and without
`correspondence_guided`, and `IMAPMonitor.probe_maps`.

Stages that do not need the text encoder or the VAE get random latents and prompt embeddings of the real shapes
(512 x 4096 text tokens), so they time the transformer alone.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from _peak_memory import _status_bytes as status_bytes
from _peak_memory import cpu_peak_supported

#: the configs' LoRA (configs/wan2.1-t2v-1.3b.yaml)
LORA_RANK = 32
LORA_TARGETS = ["to_q", "to_k", "to_v", "to_out.0", "ffn.net.0.proj", "ffn.net.2"]
PROMPT = "a dog runs across a grassy field"
TEXT_LENGTH = 512  # Wan2.1's

#: stage name -> what it is (the order they run in)
STAGES = {
    "cache": "latent caching of one clip: VAE encode (posterior mode) + text encode (512 tokens)",
    "forward": "one no-grad transformer forward (conditional only): the unit of the time ratios",
    "train_step": "one LoRA r32 training step (bf16 autocast forward, backward, AdamW step), no checkpointing",
    "train_step_gc": "the same step with gradient checkpointing",
    "motive": "Motive featurization of one clip (all transformer weights, default projector), no checkpointing",
    "motive_gc": "Motive featurization of one clip with gradient checkpointing",
    "sample_cfg": "one sampling step, CFG (conditional + unconditional forward)",
    "sample_guided": "one sampling step, CFG + correspondence guidance on every step",
    "decode": "VAE decode of one clip's latents (the end of every sampling call)",
    "imap": "one IMAP probe (no-grad conditional forward capturing text attention in the probe blocks)",
}


def write_pipeline(folder: Path, num_layers: int | None, text_layers: int = 1) -> Path:
    """The random Wan2.1-T2V-1.3B pipeline folder (built once, reused when its config matches)."""
    import json

    from motionguide.backbones.random_pipeline import write_random_pipeline

    def depth(component: str) -> int | None:
        config = folder / component / "config.json"
        return json.loads(config.read_text()).get("num_layers") if config.is_file() else None

    if depth("transformer") == (num_layers or 30) and depth("text_encoder") == text_layers:
        return folder
    write_random_pipeline("wan2.1-t2v-1.3b", str(folder), num_layers=num_layers, text_layers=text_layers,
                          dtype="bfloat16", seed=0, overwrite=True)
    return folder


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


@dataclass
class VideoSize:
    frames: int
    height: int
    width: int

    @classmethod
    def parse(cls, text: str) -> "VideoSize":
        f, h, w = (int(v) for v in text.lower().split("x"))
        return cls(f, h, w)

    def __str__(self) -> str:
        return f"{self.frames}x{self.height}x{self.width}"


class Bench:
    """One loaded pipeline at one video size; `stage(name)` -> a callable running that stage once."""

    def __init__(self, model: str | Path, size: VideoSize, device: str = "cpu", dtype: str = "bf16",
                 offload_text_encoder: bool = False):
        from motionguide.backbones import backbone_for
        from motionguide.loading import PipelinePlacement, load_pipeline, parse_dtype

        self.device = torch.device(device)
        self.dtype = parse_dtype(dtype)
        self.size = size
        self.pipe = load_pipeline(model, PipelinePlacement(dtype=self.dtype, device=str(self.device)))
        self.pipe.set_progress_bar_config(disable=True)
        if self.device.type == "cpu":
            self._own_weights()
        if offload_text_encoder:  # what sampling with the text encoder offloaded holds on the accelerator
            self.pipe.text_encoder.to("cpu")
        self.backbone = backbone_for(self.pipe)
        self.grid = self.backbone.token_grid_for_video(size.frames, size.height, size.width)
        self.tokens = self.grid.num_tokens
        latent = self.backbone.latent_shape(size.frames, size.height, size.width)
        gen = torch.Generator().manual_seed(0)
        channels = self.pipe.transformer.config.in_channels
        self.latents = torch.randn(1, channels, *latent, generator=gen).to(self.device)
        text_dim = self.pipe.transformer.config.text_dim
        self.embeds = (torch.randn(1, TEXT_LENGTH, text_dim, generator=gen) * 0.1).to(self.device, self.dtype)
        self.negative = (torch.randn(1, TEXT_LENGTH, text_dim, generator=gen) * 0.1).to(self.device, self.dtype)
        self.pixels = (torch.rand(1, 3, size.frames, size.height, size.width, generator=gen) * 2 - 1)
        self.timestep = torch.tensor([500.0], device=self.device)
        self._lora = False
        self._optimizer = None

    # ------------------------------------------------------------------ setup shared by stages
    def _own_weights(self) -> None:
        """Copy every weight out of the safetensors memory map into the process's own memory: mapped pages
        become resident only when touched (a stage that never runs the VAE would not count it), so without
        this the resident-memory accounting of the weights depends on the stage."""
        for name in ("transformer", "vae", "text_encoder"):
            for tensor in [*getattr(self.pipe, name).parameters(), *getattr(self.pipe, name).buffers()]:
                tensor.data = tensor.data.clone()

    def num_layers(self) -> int:
        return len(self.backbone.blocks)

    def weight_bytes(self) -> dict[str, int]:
        """Bytes of each component's parameters and buffers (what a stage holds before it allocates)."""
        out = {}
        for name in ("transformer", "vae", "text_encoder"):
            module = getattr(self.pipe, name)
            out[name] = sum(t.numel() * t.element_size() for t in [*module.parameters(), *module.buffers()])
        return out

    def _autocast(self):
        return torch.autocast(self.device.type, dtype=self.dtype) if self.dtype != torch.float32 \
            else contextlib.nullcontext()

    def _with_lora(self) -> None:
        from motionguide.training.lora import add_lora, trainable_parameters

        if not self._lora:
            add_lora(self.pipe.transformer, LORA_RANK, LORA_RANK, LORA_TARGETS)
            self._optimizer = torch.optim.AdamW(trainable_parameters(self.pipe.transformer), lr=1e-4)
            self._lora = True

    def _checkpointing(self, on: bool) -> None:
        transformer = self.pipe.transformer
        if on:
            transformer.enable_gradient_checkpointing()
        else:
            transformer.disable_gradient_checkpointing()

    # ------------------------------------------------------------------ stages
    def stage(self, name: str) -> Callable[[], Any]:
        if name not in STAGES:
            raise ValueError(f"unknown stage {name!r}; choose from {', '.join(STAGES)}")
        return getattr(self, f"_prepare_{name.removesuffix('_gc')}")(name.endswith("_gc"))

    def _prepare_cache(self, _gc: bool):
        backbone = self.backbone

        def run() -> None:
            with torch.no_grad():
                vae = backbone.vae
                x = self.pixels.to(vae.device, vae.dtype)
                latents = backbone.normalize_latents(vae.encode(x).latent_dist.mode().float())
                embeds = backbone.encode_prompt([PROMPT], TEXT_LENGTH)  # where the text encoder sits
            sync(self.device)
            return latents, embeds
        return run

    def _prepare_forward(self, _gc: bool):
        transformer = self.pipe.transformer
        transformer.eval()

        def run() -> None:
            with torch.no_grad():
                self.backbone.predict(self.latents.to(self.dtype), self.timestep, self.embeds)
            sync(self.device)
        return run

    def _prepare_train_step(self, gc: bool):
        self._with_lora()
        self._checkpointing(gc)
        transformer = self.pipe.transformer
        transformer.train()
        noise = torch.randn(self.latents.shape, generator=torch.Generator().manual_seed(1)).to(self.device)

        def run() -> float:
            noisy = self.backbone.add_noise(self.latents, noise, self.timestep)
            target = self.backbone.training_target(self.latents, noise, self.timestep)
            with self._autocast():
                pred = self.backbone.predict(noisy, self.timestep, self.embeds)
            loss = torch.nn.functional.mse_loss(pred.float(), target.float())
            loss.backward()
            self._optimizer.step()
            self._optimizer.zero_grad(set_to_none=True)
            sync(self.device)
            return float(loss.detach())
        return run

    def _prepare_motive(self, gc: bool):
        from motionguide.motive import CommonRandomness, GradientFeaturizer, MotiveConfig

        self._checkpointing(gc)
        config = MotiveConfig(model="", data="", queries="", out="")
        # the pass's own placement: projector state budgeted on, and generated on, the gradients' device
        featurizer = GradientFeaturizer(_InputsInWeightDtype(self.backbone),
                                        config.make_projector_factory(self.device), CommonRandomness(seed=0),
                                        scope=config.params, loss=config.loss)
        latents = self.latents[0]
        mask = torch.ones(latents.shape[1:], device=self.device)

        def run() -> None:
            result = featurizer.featurize(latents, self.embeds[0], mask, self.size.frames)
            if result.feature is None:
                raise RuntimeError(f"Motive featurization skipped the clip: {result.skip_reason}")
            sync(self.device)
        return run

    def _sampling_call(self, steps: int) -> Callable[[], Any]:
        pipe = self.pipe
        self.pipe.transformer.eval()

        def call() -> Any:
            out = pipe(prompt_embeds=self.embeds, negative_prompt_embeds=self.negative, num_frames=self.size.frames,
                       height=self.size.height, width=self.size.width, num_inference_steps=steps,
                       guidance_scale=5.0, output_type="latent", generator=torch.Generator().manual_seed(0))
            sync(self.device)
            return out
        return call

    def guidance_blocks(self) -> list[int]:
        """The shipped profile's guidance blocks (13, 17, 21 of 30) at the same relative depth here."""
        layers = self.num_layers()
        return sorted({min(layers - 1, round(b * layers / 30)) for b in (13, 17, 21)})

    def _prepare_sample(self, _gc: bool, guided: bool = False, steps: int = 1):
        call = self._sampling_call(steps)
        if not guided:
            return call

        from motionguide.correspondence import correspondence_guided

        blocks = self.guidance_blocks()

        def run() -> Any:
            with correspondence_guided(self.pipe, blocks=blocks, window=(0.0, 1.0), scale=1.0):
                return call()
        return run

    def _prepare_sample_cfg(self, gc: bool):
        return self._prepare_sample(gc)

    def _prepare_sample_guided(self, gc: bool):
        return self._prepare_sample(gc, guided=True)

    def _prepare_decode(self, _gc: bool):
        vae = self.backbone.vae

        def run() -> None:
            with torch.no_grad():
                vae.decode(self.backbone.denormalize_latents(self.latents).to(vae.dtype)).sample
            sync(self.device)
        return run

    def imap_blocks(self) -> list[int]:
        """The shipped profile's IMAP blocks (5-19 of 30: half the depth) at the same relative depth here
        (4 blocks: 1-2; 2 blocks: 0)."""
        layers = self.num_layers()
        first, count = round(5 * layers / 30), max(1, round(15 * layers / 30))
        return list(range(first, min(layers, first + count)))

    def _prepare_imap(self, _gc: bool):
        from motionguide.saliency.monitor import IMAPMonitor

        monitor = IMAPMonitor(words=["dog", "runs"], blocks=self.imap_blocks(), top_k=3, save_images=False)
        # where the text encoder sits (gpu_smoke moves it off the device after caching), then to the device
        embeds = self.backbone.encode_prompt([PROMPT], TEXT_LENGTH).to(self.device)
        monitor.set_probes(self.backbone, self.latents.float(), embeds, [PROMPT], device=self.device)

        def run() -> None:
            monitor.probe_maps()
            sync(self.device)
        return run


class _InputsInWeightDtype:
    """The backbone, with `predict` casting its inputs to the transformer's dtype.

    Why: on main, `GradientFeaturizer` casts the inputs to its first parameter's dtype, which in a bf16 Wan
    transformer is one diffusers keeps in fp32, so the bf16 patch embedding gets fp32 input and raises
    (helper "motive" fixes this in the library; this keeps the benchmark measuring until then)."""

    def __init__(self, backbone: Any):
        self._backbone = backbone

    def __getattr__(self, name: str) -> Any:
        return getattr(self._backbone, name)

    def predict(self, latents, timesteps, prompt_embeds, model=None):
        dtype = self._backbone.transformer.dtype
        return self._backbone.predict(latents.to(dtype), timesteps, prompt_embeds.to(dtype), model=model)


def measure(run: Callable[[], Any], device: torch.device, repeats: int = 1, warmup: int = 1) -> dict[str, Any]:
    """Median seconds (wall, and the process's CPU time: at one thread on a shared machine, the CPU time is
    what the stage costs, the wall time adds other jobs' load) of `repeats` calls after `warmup` calls, and
    the memory high-water mark of the timed calls: `peak_total_bytes` (everything resident, weights included;
    CUDA: the allocator's peak, CPU: the process's RSS), `peak_above_bytes` (above what was in use when the
    call started: activations, gradients) and `start_bytes` (in use when it started: weights plus what the
    stage keeps between calls)."""
    for _ in range(warmup):
        run()
    seconds, cpu_seconds, totals, aboves, starts = [], [], [], [], []
    for _ in range(max(1, repeats)):
        before = _reset_peak(device)
        starts.append(before)
        start, cpu_start = time.perf_counter(), time.process_time()
        run()
        seconds.append(time.perf_counter() - start)
        cpu_seconds.append(time.process_time() - cpu_start)
        peak = _read_peak(device) if before is not None else None
        totals.append(peak)
        aboves.append(None if peak is None else max(0, peak - before))
    seconds.sort()
    cpu_seconds.sort()
    return {"seconds": seconds[len(seconds) // 2], "all_seconds": seconds,
            "cpu_seconds": cpu_seconds[len(cpu_seconds) // 2],
            "peak_total_bytes": None if None in totals else max(totals),
            "peak_above_bytes": None if None in aboves else max(aboves),
            "start_bytes": None if None in starts else min(starts)}


def _reset_peak(device: torch.device) -> int | None:
    """Start a new high-water mark; returns the memory in use now."""
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        return int(torch.cuda.memory_allocated())
    if not cpu_peak_supported():
        return None
    gc.collect()
    with contextlib.suppress(OSError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    Path("/proc/self/clear_refs").write_text("5")
    return status_bytes("VmRSS")


def _read_peak(device: torch.device) -> int | None:
    if device.type == "cuda":
        torch.cuda.synchronize()
        return int(torch.cuda.max_memory_allocated())
    return status_bytes("VmHWM")  # (not cpu_peak_supported(): it would reset the mark)


def resident_bytes() -> int:
    """The process's resident memory now (the baseline a subprocess stage is measured from)."""
    return status_bytes("VmRSS")
