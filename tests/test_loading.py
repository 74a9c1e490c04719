"""`motionguide.loading`: one way to load a pipeline, in the user's dtypes, checked before any work."""

import pytest
import torch

from motionguide.errors import ConfigError
from motionguide.loading import PipelinePlacement, component_dtypes_of, load_pipeline, parse_dtype, resolve_device

TOY = "assets/toy-model"


def test_dtype_names_follow_accelerate_and_torch_spellings():
    assert parse_dtype("bf16") is torch.bfloat16 and parse_dtype("bfloat16") is torch.bfloat16
    assert parse_dtype("no") is torch.float32 and parse_dtype(None) is None
    with pytest.raises(ConfigError, match="bf17"):
        parse_dtype("bf17")


def test_a_missing_local_model_folder_is_named_before_the_hub_client_runs():
    with pytest.raises(ConfigError, match="no such folder"):
        load_pipeline("./no/such/model")


def test_asking_for_cuda_without_cuda_is_a_clean_error():
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(ConfigError, match="no CUDA device"):
        resolve_device("cuda")


def test_bf16_loads_every_weight_in_bf16_except_what_diffusers_keeps_in_fp32():
    pipe = load_pipeline(TOY, PipelinePlacement(dtype=torch.bfloat16, component_dtypes={"vae": torch.float32}))
    assert component_dtypes_of(pipe) == {"transformer": torch.bfloat16, "vae": torch.float32,
                                         "text_encoder": torch.bfloat16}
    keep = tuple(getattr(pipe.transformer, "_keep_in_fp32_modules", None) or ())
    for name, param in pipe.transformer.named_parameters():
        if param.dtype == torch.float32:
            assert any(part in name.split(".") for part in keep), name


def test_a_component_that_is_not_a_pipeline_model_cannot_get_a_dtype():
    with pytest.raises(ConfigError, match="scheduler"):
        PipelinePlacement(component_dtypes={"scheduler": torch.float16})


def test_a_lora_of_another_model_is_one_line_naming_it(tmp_path):
    from safetensors.torch import save_file

    lora = tmp_path / "pytorch_lora_weights.safetensors"
    # a LoRA for a layer width the toy transformer does not have
    save_file({"transformer.blocks.0.attn1.to_q.lora_A.weight": torch.zeros(4, 999),
               "transformer.blocks.0.attn1.to_q.lora_B.weight": torch.zeros(999, 4)}, str(lora))
    with pytest.raises(ConfigError, match=r"LoRA .*pytorch_lora_weights.safetensors does not fit"):
        load_pipeline(TOY, lora=lora)


def test_a_bf16_transformer_is_identified_as_bf16_although_its_first_weights_are_kept_in_fp32():
    """The Motive feature store and latent cache records name a module's dtype: the majority one, with the
    count per dtype when it mixes them; a one-dtype module's identity keeps its old form (and keys)."""
    from motionguide.identity import module_identity

    pipe = load_pipeline(TOY, PipelinePlacement(dtype=torch.bfloat16))
    transformer = pipe.transformer
    assert next(transformer.parameters()).dtype == torch.float32  # what the first-parameter rule read
    counts = {}
    for param in transformer.parameters():
        counts[str(param.dtype)] = counts.get(str(param.dtype), 0) + param.numel()
    assert set(counts) == {"torch.bfloat16", "torch.float32"} and counts["torch.bfloat16"] > counts["torch.float32"]
    identity = module_identity(transformer)
    assert identity["dtype"] == "torch.bfloat16" and identity["dtypes"] == counts

    fp32 = module_identity(load_pipeline(TOY).transformer)
    assert sorted(fp32) == ["class", "config", "dtype", "weights"] and fp32["dtype"] == "torch.float32"
