"""Sample videos from a stock diffusers pipeline, optionally with a LoRA and a registered guidance.

    python sample/generate.py --model assets/toy-model --prompt "a red circle moves left" --out out/samples
    python sample/generate.py --model Wan-AI/Wan2.1-T2V-1.3B-Diffusers --lora out/lora --prompts_file p.txt \
        --num_frames 81 --height 480 --width 832 --guidance_scale 5 --guidance correspondence \
        --correspondence_scale 1.0 --device cuda

`--guidance_scale` is classifier-free guidance as in diffusers (`--cfg` is an alias); the correspondence
guidance's scale is `--correspondence_scale`. `--device` and `--dtype` default to auto (the GPU in bf16 when there
is one, else the CPU in fp32); `--enable_model_cpu_offload`, `--vae_tiling` and `--vae_slicing` save GPU memory.
Every flag also answers to its kebab spelling; `--help` lists them.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from motionguide.sampling.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
