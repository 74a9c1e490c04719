"""Fine-tune a video DiT (LoRA or full) with motion-aware data.

    accelerate launch train/finetune.py --config configs/toy.yaml [--key value ...]
    accelerate launch --config_file configs/accelerate/deepspeed_zero2.yaml train/finetune.py \
        --config configs/wan2.1-t2v-1.3b.yaml --curation motive --monitor imap \
        --method_options '{motive: {queries: /data/motion-queries, fraction: 0.1}}'

Every YAML key can be overridden on the command line in snake_case or kebab-case (`--learning_rate 5e-5`,
`--learning-rate 5e-5`); lists and mappings take YAML/JSON; unknown keys are errors. `--help` lists every flag.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from motionguide.training.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
