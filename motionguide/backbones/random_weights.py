"""Random-weight pipelines with a real model's architecture: the recipe format and the memory-conscious build.

A released checkpoint is tens of GB and needs the network; the real-model code paths (bf16, the real widths,
the stock scheduler, `from_pretrained`) still have to run on a CPU in CI. A family's folder declares a
:class:`ReferencePipeline` (`wan/reference.py`, `cogvideox/reference.py`); :func:`write_reference_pipeline`
turns it into a pipeline folder that `DiffusionPipeline.from_pretrained` loads offline.

Memory: each model is built with the target dtype as torch's default dtype (its parameters never exist in fp32),
saved, and dropped to the meta device before the next one is built, so the peak is about the largest component
once (the Wan2.1-1.3B transformer: 2.8 GB in bf16 instead of 5.7 GB in fp32).
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import json
import os
import resource
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import torch

__all__ = [
    "BASIC_WORDS",
    "DTYPES",
    "ModelRecipe",
    "RecipeFamily",
    "ReferencePipeline",
    "fp32_kept_modules",
    "folder_size",
    "is_fp32_kept",
    "write_reference_pipeline",
]

#: `--dtype` names
DTYPES: dict[str, torch.dtype] = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}

#: the word-level tokenizer's built-in vocabulary: enough for the README's, the configs' and the tests' prompts
#: (any other word becomes `<unk>`, which the pipeline encodes like any token; `--vocabulary` adds words)
BASIC_WORDS = tuple(
    """
    a an the and or of in on at to from into onto over under up down left right across along around through
    toward towards away back forth past behind beside between above below near far off out with without while
    is are it its his her their this that these those one two three some many all each other another
    moves move moving runs run running walks walk walking jumps jump jumping bounces bounce bouncing rolls roll
    rolling flies fly flying falls fall falling swims swim swimming spins spin spinning turns turn turning
    slides slide sliding drives drive driving rises rise flows flow flowing waves wave stays stay still static
    stops stop slowly quickly fast slow gently steadily smoothly camera pans pan zooms zoom tilts tilt orbits
    dog cat bird horse fish person man woman child people car bicycle train boat plane ball toy robot leaf
    leaves tree trees flower flowers water river ocean sea wave waves cloud clouds sky sun rain snow fire smoke
    field grass grassy street road city forest mountain beach room table kitchen window door stairs flight
    red green blue yellow orange purple white black grey gray brown pink dark light bright small large big
    tiny long short tall circle square triangle shape shapes object objects scene video clip background
    """.split()
) + tuple(".,!?;:'\"-")


def _resolve(dotted: str) -> Any:
    """'diffusers.WanPipeline' -> the class."""
    module, _, name = dotted.rpartition(".")
    return getattr(importlib.import_module(module), name)


@dataclasses.dataclass(frozen=True)
class ModelRecipe:
    """One model of a pipeline: its class and its released config (a diffusers model, or a transformers model
    built from `config_class(**config)`)."""

    class_path: str
    config: Mapping[str, Any]
    config_class_path: str | None = None
    #: the config key holding the number of layers (the depth a smaller build may override)
    depth_key: str = "num_layers"
    #: further depth keys the same override sets (HunyuanVideo: `num_single_layers` next to `num_layers`)
    extra_depth_keys: tuple[str, ...] = ()
    #: the fewest layers the pipeline can run on (HunyuanVideo reads its Llama's third-last hidden state: 2)
    min_depth: int = 1

    @property
    def class_name(self) -> str:
        return self.class_path.rpartition(".")[2]

    def config_with(self, **overrides: Any) -> dict[str, Any]:
        """The released config with the given keys replaced (None values leave the key as released)."""
        return {**dict(self.config), **{k: v for k, v in overrides.items() if v is not None}}

    def build(self, **overrides: Any) -> torch.nn.Module:
        """A randomly initialised instance (the caller seeds and chooses the default dtype), in eval mode."""
        cls = _resolve(self.class_path)
        config = self.config_with(**overrides)
        if self.config_class_path is not None:
            return cls(_resolve(self.config_class_path)(**config)).eval()
        return cls(**config).eval()


@dataclasses.dataclass(frozen=True)
class ReferencePipeline:
    """A released text-to-video pipeline's architecture, as a recipe for a random-weight copy.

    The transformer and the VAE are the released architecture (the transformer's depth may be overridden for
    quick tests); the text encoder has the released width and class but few layers and a word-level vocabulary;
    the scheduler is the released one with its released config.
    """

    name: str
    pipeline_class_path: str
    transformer: ModelRecipe
    vae: ModelRecipe
    text_encoder: ModelRecipe
    scheduler_class_path: str
    scheduler_config: Mapping[str, Any]
    #: the pipeline's text length (the tokenizer's `model_max_length`)
    max_sequence_length: int
    #: where the numbers come from, for the folder's provenance note
    source: str = ""
    #: a second text encoder (HunyuanVideo: CLIP, pooled) with its own word-level tokenizer and text length
    text_encoder_2: ModelRecipe | None = None
    max_sequence_length_2: int = 77
    #: dotted path of `f(words, model_max_length) -> tokenizer` for the first tokenizer (default: word level)
    tokenizer_factory: str | None = None
    #: a second denoiser of the same architecture (Wan2.2 A14B's low-noise expert), seeded apart from the first
    transformer_2: ModelRecipe | None = None
    #: the pipeline's own config values (Wan2.2: `boundary_ratio`, `expand_timesteps`)
    pipeline_config: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    #: an image-to-video pipeline's image encoder (Wan2.1-I2V: CLIP ViT-H; its depth follows `--text_layers`, at
    #: least its `min_depth`) and the config of its image processor (a transformers `CLIPImageProcessor`)
    image_encoder: ModelRecipe | None = None
    image_processor_config: Mapping[str, Any] | None = None

    @property
    def pipeline_class_name(self) -> str:
        return self.pipeline_class_path.rpartition(".")[2]


@dataclasses.dataclass(frozen=True)
class RecipeFamily:
    """What one family's released pipelines share (classes, text encoder, scheduler class, text length), so that
    each recipe states only its own data (`WAN_FAMILY.pipeline("wan2.1-t2v-1.3b", transformer, vae, scheduler)`)."""

    pipeline_class_path: str
    transformer_class_path: str
    vae_class_path: str
    text_encoder: ModelRecipe
    scheduler_class_path: str
    max_sequence_length: int

    def pipeline(self, name: str, transformer: Mapping[str, Any], vae: Mapping[str, Any],
                 scheduler_config: Mapping[str, Any], *, transformer_2: Mapping[str, Any] | None = None,
                 **fields: Any) -> ReferencePipeline:
        """The recipe `name` from its transformer, VAE and scheduler configs (`transformer_2`: a second expert's
        config); `fields` set any other :class:`ReferencePipeline` field, the family's own included."""
        shared = {"pipeline_class_path": self.pipeline_class_path, "text_encoder": self.text_encoder,
                  "scheduler_class_path": self.scheduler_class_path,
                  "max_sequence_length": self.max_sequence_length}
        if transformer_2 is not None:
            shared["transformer_2"] = ModelRecipe(self.transformer_class_path, transformer_2)
        return ReferencePipeline(name=name, transformer=ModelRecipe(self.transformer_class_path, transformer),
                                 vae=ModelRecipe(self.vae_class_path, vae), scheduler_config=scheduler_config,
                                 **{**shared, **fields})


# ---------------------------------------------------------------------------------------------------- dtypes
@contextlib.contextmanager
def default_dtype(dtype: torch.dtype) -> Iterator[None]:
    """Floating tensors created inside are `dtype` (a model built here never holds an fp32 copy)."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)


def fp32_kept_modules(model: torch.nn.Module, dtype: torch.dtype) -> tuple[str, ...]:
    """Module names the model's own library keeps in fp32 when it loads the model in `dtype`.

    diffusers keeps `_keep_in_fp32_modules` in fp32 for any `torch_dtype`; transformers keeps
    `_keep_in_fp32_modules_strict` for fp16 and bf16, and `_keep_in_fp32_modules` for fp16 only. Saving weights
    that way means `from_pretrained(..., torch_dtype=dtype)` converts nothing.
    """
    if dtype == torch.float32:
        return ()
    names = set(getattr(model, "_keep_in_fp32_modules_strict", None) or ())
    from_diffusers = type(model).__module__.split(".")[0] == "diffusers"
    if from_diffusers or dtype == torch.float16:
        names |= set(getattr(model, "_keep_in_fp32_modules", None) or ())
    return tuple(sorted(names))


def is_fp32_kept(tensor_name: str, kept: Sequence[str]) -> bool:
    """diffusers' loading rule: a weight is kept in fp32 when one of its dotted name's parts is a kept module."""
    return any(part in kept for part in tensor_name.split("."))


def _apply_fp32_kept(model: torch.nn.Module, kept: Sequence[str]) -> int:
    """Cast the kept parameters and persistent floating buffers to fp32 in place; returns how many."""
    count = 0
    for name, param in model.named_parameters():
        if is_fp32_kept(name, kept) and param.dtype != torch.float32:
            param.data = param.data.float()
            count += 1
    persistent = set(model.state_dict(keep_vars=True))
    for name, buffer in model.named_buffers():
        reduced = buffer.is_floating_point() and buffer.dtype != torch.float32
        if name in persistent and reduced and is_fp32_kept(name, kept):
            module_name, _, leaf = name.rpartition(".")
            owner = model.get_submodule(module_name) if module_name else model
            owner.register_buffer(leaf, buffer.float())
            count += 1
    return count


def build_in_dtype(recipe: ModelRecipe, dtype: torch.dtype, seed: int, **overrides: Any) -> torch.nn.Module:
    """`recipe` built directly in `dtype` (seeded) with the modules its library keeps in fp32 cast back to fp32."""
    torch.manual_seed(seed)
    with default_dtype(dtype):
        model = recipe.build(**overrides)
    _apply_fp32_kept(model, fp32_kept_modules(model, dtype))
    return model.requires_grad_(False)


# ---------------------------------------------------------------------------------------------------- writing
def folder_size(path: str | os.PathLike) -> int:
    """Bytes of every file under `path`."""
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())


def _gib(n_bytes: float) -> str:
    return f"{n_bytes / 2**30:.2f} GiB"


def peak_rss_bytes() -> int:
    """This process's peak resident set size so far (Linux reports KiB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


def _release(model: torch.nn.Module) -> torch.nn.Module:
    """Free a saved model's memory, keeping its class and config (what `model_index.json` records)."""
    return torch.nn.Module.to_empty(model, device="meta")


def _prepare_folder(out: Path, overwrite: bool) -> Path:
    """Check `out` can be written and return the hidden partial folder next to it (a crash leaves `out` as it was)."""
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"--out {out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise FileExistsError(f"--out {out} exists and is not empty; choose another folder or pass --overwrite")
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.parent / f".{out.name}.partial"
    if partial.exists():
        shutil.rmtree(partial)
    partial.mkdir()
    return partial


def _publish(partial: Path, out: Path) -> None:
    """Move the finished folder into place (replacing an old `out` only now that the new one is complete)."""
    for file in partial.rglob("*"):
        if file.is_file():
            file.chmod(0o644)  # some savers write through 0600 temp files; a model folder is shared read-only
    old = None
    if out.exists():
        old = out.parent / f".{out.name}.old"
        if old.exists():
            shutil.rmtree(old)
        os.replace(out, old)
    os.replace(partial, out)
    if old is not None:
        shutil.rmtree(old)


def write_reference_pipeline(
    recipe: ReferencePipeline,
    out: str | os.PathLike,
    *,
    num_layers: int | None = None,
    text_layers: int = 2,
    dtype: torch.dtype | str = torch.bfloat16,
    seed: int = 0,
    vocabulary: Sequence[str] = (),
    overwrite: bool = False,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Write a `save_pretrained` folder of `recipe` with random weights; returns a summary (also saved in the
    folder as `random_pipeline.json`).

    `num_layers` overrides the transformer's depth (the real one when None; every depth key of its recipe, e.g.
    HunyuanVideo's dual- and single-stream block counts), `text_layers` the text encoders'.
    Weights are saved in `dtype` except the modules diffusers / transformers keep in fp32 at that dtype, so
    `from_pretrained(out, torch_dtype=dtype)` loads them unchanged.
    """
    from ..files import atomic_write_text
    from ..text import word_level_tokenizer

    if isinstance(dtype, str):
        if dtype not in DTYPES:
            raise ValueError(f"--dtype {dtype!r}: choose one of {', '.join(DTYPES)}")
        dtype = DTYPES[dtype]
    for flag, value in (("--num_layers", num_layers), ("--text_layers", text_layers)):
        if value is not None and value < 1:
            raise ValueError(f"{flag} must be at least 1; got {value}")
    out = Path(out)
    partial = _prepare_folder(out, overwrite)
    dtype_name = str(dtype).removeprefix("torch.")
    released_depth = recipe.transformer.config[recipe.transformer.depth_key]
    started = time.perf_counter()
    log(f"random {recipe.name} pipeline ({dtype_name}, seed {seed}) -> {out}")
    try:
        words = [*BASIC_WORDS, *vocabulary]
        make_tokenizer = word_level_tokenizer if recipe.tokenizer_factory is None else \
            _resolve(recipe.tokenizer_factory)
        tokenizer = make_tokenizer(words, model_max_length=recipe.max_sequence_length)
        tokenizer.save_pretrained(partial / "tokenizer")
        components: dict[str, Any] = {"tokenizer": tokenizer}
        summary: dict[str, Any] = {"components": {}}
        depth = recipe.transformer
        depth_overrides = {key: num_layers for key in (depth.depth_key, *depth.extra_depth_keys)}
        plans = [
            ("transformer", depth, depth_overrides),
            ("vae", recipe.vae, {}),
            ("text_encoder", recipe.text_encoder, {
                recipe.text_encoder.depth_key: max(text_layers, recipe.text_encoder.min_depth),
                "vocab_size": len(tokenizer)}),
        ]
        if recipe.text_encoder_2 is not None:
            tokenizer_2 = word_level_tokenizer(words, model_max_length=recipe.max_sequence_length_2)
            tokenizer_2.save_pretrained(partial / "tokenizer_2")
            components["tokenizer_2"] = tokenizer_2
            plans.append(("text_encoder_2", recipe.text_encoder_2, {recipe.text_encoder_2.depth_key: text_layers,
                                                                   "vocab_size": len(tokenizer_2)}))
        if recipe.transformer_2 is not None:
            plans.append(("transformer_2", recipe.transformer_2, depth_overrides))
        if recipe.image_encoder is not None:
            plans.append(("image_encoder", recipe.image_encoder,
                          {recipe.image_encoder.depth_key: max(text_layers, recipe.image_encoder.min_depth)}))
            from transformers import CLIPImageProcessor

            processor = CLIPImageProcessor(**dict(recipe.image_processor_config or {}))
            processor.save_pretrained(partial / "image_processor")
            components["image_processor"] = processor
        for name, model_recipe, overrides in plans:
            tick = time.perf_counter()
            # a second expert gets its own weights, so that a mix-up of the experts shows in any test
            model = build_in_dtype(model_recipe, dtype, seed + (name == "transformer_2"), **overrides)
            params = sum(p.numel() for p in model.parameters())
            kept = sum(p.numel() for p in model.parameters() if p.dtype == torch.float32 and dtype != torch.float32)
            built = time.perf_counter() - tick
            model.save_pretrained(partial / name)
            saved = time.perf_counter() - tick - built
            size = folder_size(partial / name)
            log(f"  {name:12s} {model_recipe.class_name}: {params:,} params ({kept:,} kept in fp32), "
                f"built {built:.1f} s, saved {saved:.1f} s, {_gib(size)}")
            summary["components"][name] = {"class": model_recipe.class_name, "params": params,
                                           "fp32_params": kept, "bytes": size}
            components[name] = _release(model)
            del model
        scheduler = _resolve(recipe.scheduler_class_path).from_config(dict(recipe.scheduler_config))
        scheduler.save_pretrained(partial / "scheduler")
        components["scheduler"] = scheduler
        # the pipeline over the released (meta) components only records each one's library and class
        _resolve(recipe.pipeline_class_path)(**components, **dict(recipe.pipeline_config)).save_config(partial)
        summary.update({
            "like": recipe.name,
            "random_weights": True,
            "note": f"random weights with the {recipe.name} architecture: not a trained model",
            "source": recipe.source,
            "pipeline": recipe.pipeline_class_name,
            "dtype": dtype_name,
            "seed": seed,
            "num_layers": num_layers if num_layers is not None else released_depth,
            "real_num_layers": released_depth,
            "text_layers": text_layers,
            "vocab_size": len(tokenizer),
            "max_sequence_length": recipe.max_sequence_length,
        })
        atomic_write_text(partial / "random_pipeline.json", json.dumps(summary, indent=2) + "\n")
        _publish(partial, out)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    size = folder_size(out)
    elapsed = time.perf_counter() - started
    peak = peak_rss_bytes()
    log(f"wrote {out}: {_gib(size)} in {elapsed:.1f} s (peak RSS {_gib(peak)}); load it with "
        f"DiffusionPipeline.from_pretrained({str(out)!r}, torch_dtype=torch.{dtype_name})")
    return {**summary, "path": str(out), "bytes": size, "seconds": elapsed, "peak_rss_bytes": peak}
