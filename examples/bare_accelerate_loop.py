"""A bare accelerate LoRA fine-tune, written like the diffusers training examples, with two motionguide methods
plugged in from the outside: the Motive selection picks the clips (`CuratedDataset` and its sampler) and the
IMAP monitor probes saliency maps every few steps and logs them through the accelerator's trackers.

Nothing here uses motionguide's Trainer: this is the shape of a user's own script. The data comes from
`motionguide.data` (VAE latents and prompt embeddings computed once into a cache, as the diffusers examples
do with `--cache_latents`); the loss is the plain flow-matching one of Wan.

    python examples/bare_accelerate_loop.py --pretrained_model_name_or_path assets/toy-model \
        --data_root data/toy-train --selection out/curate/selection.json --output_dir out/bare-loop

`--selection` is a `selection.json` written by `motionguide curate` (any mode: filter keeps the chosen clips,
reweight draws every clip with its weight). The run writes the LoRA (`pytorch_lora_weights.safetensors`, loadable
with `pipe.load_lora_weights`), TensorBoard logs with the saliency maps, and `summary.json` (losses, the clip ids
each step drew, the monitor's history).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
import torch.nn.functional as F
from accelerate import Accelerator
from accelerate.utils import ProjectConfiguration, set_seed
from diffusers import DiffusionPipeline
from peft import LoraConfig
from peft.utils import get_peft_model_state_dict

from motionguide.motive import CuratedDataset
from motionguide.backbones import backbone_for
from motionguide.data import CachedLatentDataset, LatentCache, VideoDataset
from motionguide.saliency import IMAPMonitor


def parse_args(argv=None) -> argparse.Namespace:
    """The flags, in the diffusers examples' vocabulary."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--pretrained_model_name_or_path", required=True, help="a diffusers Wan pipeline folder")
    p.add_argument("--data_root", required=True, help="a video folder (any layout motionguide.data reads)")
    p.add_argument("--selection", required=True, help="a Motive selection.json (or its folder)")
    p.add_argument("--output_dir", required=True)
    p.add_argument("--latent_cache_dir", default=None, help="default: <output_dir>/latent-cache")
    p.add_argument("--num_frames", type=int, default=17)
    p.add_argument("--height", type=int, default=64)
    p.add_argument("--width", type=int, default=64)
    p.add_argument("--max_sequence_length", type=int, default=16)
    p.add_argument("--max_train_steps", type=int, default=20)
    p.add_argument("--train_batch_size", type=int, default=2)
    p.add_argument("--learning_rate", type=float, default=1e-4)
    p.add_argument("--rank", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--report_to", default="tensorboard", help="tensorboard | wandb")
    p.add_argument("--monitor_every", type=int, default=5, help="probe the IMAP maps every N steps")
    p.add_argument("--monitor_probes", type=int, default=2, help="clips the monitor probes")
    p.add_argument("--monitor_words", nargs="*", default=None,
                   help="words to map (default: each caption's subject and verb)")
    return p.parse_args(argv)


def main(argv=None) -> dict:
    """Fine-tune, probing and logging as it goes; returns what `summary.json` holds."""
    args = parse_args(argv)
    output_dir = Path(args.output_dir)
    accelerator = Accelerator(log_with=args.report_to, project_config=ProjectConfiguration(
        project_dir=str(output_dir), logging_dir=str(output_dir / "logs")))
    set_seed(args.seed)

    # The stock pipeline: frozen VAE and text encoder, a LoRA on the transformer's attention.
    pipe = DiffusionPipeline.from_pretrained(args.pretrained_model_name_or_path)
    pipe.set_progress_bar_config(disable=True)
    transformer = pipe.transformer
    transformer.requires_grad_(False)
    transformer.add_adapter(LoraConfig(r=args.rank, lora_alpha=args.rank, init_lora_weights=True,
                                       target_modules=["to_q", "to_k", "to_v", "to_out.0"]))
    params = [p for p in transformer.parameters() if p.requires_grad]

    # Latents and prompt embeddings once, on the main process (motionguide.data's latent cache).
    backbone = backbone_for(pipe)
    videos = VideoDataset(args.data_root, num_frames=args.num_frames, height=args.height, width=args.width)
    cache_dir = args.latent_cache_dir or str(output_dir / "latent-cache")
    if accelerator.is_main_process:
        LatentCache.for_dataset(cache_dir, videos, backbone, args.max_sequence_length).build(
            videos, backbone, args.max_sequence_length)
    accelerator.wait_for_everyone()
    cache = LatentCache.for_dataset(cache_dir, videos, backbone, args.max_sequence_length)
    clips = CachedLatentDataset(cache, ids=sorted(cache.ids))

    # Motive: train only on the selected clips (or on all, drawn by weight, for a reweight selection).
    curated = CuratedDataset(clips, args.selection)
    sampler = curated.sampler(num_samples=args.max_train_steps * args.train_batch_size,
                              generator=torch.Generator().manual_seed(args.seed))
    loader = torch.utils.data.DataLoader(curated, batch_size=args.train_batch_size, sampler=sampler)

    # IMAP: fixed probe clips; the monitor keeps their noised latents and the words' text slots.
    monitor = IMAPMonitor(every=args.monitor_every, words=args.monitor_words)
    probes = [clips[i] for i in range(min(args.monitor_probes, len(clips)))]
    monitor.set_probes(pipe, [c["latents"] for c in probes], [c["prompt_embeds"] for c in probes],
                       [c["caption"] for c in probes], ids=[c["id"] for c in probes], device=accelerator.device)

    optimizer = torch.optim.AdamW(params, lr=args.learning_rate)
    transformer, optimizer, loader = accelerator.prepare(transformer, optimizer, loader)
    accelerator.init_trackers("bare-accelerate-loop")

    losses, drawn = [], []
    for step, batch in enumerate(loader, start=1):
        with accelerator.accumulate(transformer):
            latents, prompt_embeds = batch["latents"], batch["prompt_embeds"]
            noise = torch.randn_like(latents)
            sigmas = torch.rand(latents.shape[0], device=latents.device).view(-1, 1, 1, 1, 1)
            noisy = (1.0 - sigmas) * latents + sigmas * noise  # flow matching, as Wan was trained
            pred = transformer(hidden_states=noisy, timestep=sigmas.flatten() * 1000.0,
                               encoder_hidden_states=prompt_embeds, return_dict=False)[0]
            loss = F.mse_loss(pred.float(), (noise - latents).float())
            accelerator.backward(loss)
            optimizer.step()
            optimizer.zero_grad()
        losses.append(loss.item())
        drawn.append(list(batch["id"]))
        accelerator.log({"train/loss": loss.item()}, step=step)
        if step % monitor.every == 0 and accelerator.is_main_process:
            monitor.probe(accelerator.unwrap_model(transformer), step, autocast=accelerator.autocast)
            monitor.log(accelerator, step)

    accelerator.wait_for_everyone()
    summary = {"losses": losses, "drawn_ids": drawn, "selected_ids": curated.ids,
               "monitor": {"steps": monitor.steps_logged, "history": monitor.history}}
    if accelerator.is_main_process:
        unwrapped = accelerator.unwrap_model(transformer)
        type(pipe).save_lora_weights(output_dir, transformer_lora_layers=get_peft_model_state_dict(unwrapped),
                                     transformer_lora_adapter_metadata=unwrapped.peft_config["default"].to_dict())
        (output_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    accelerator.end_training()
    return summary


if __name__ == "__main__":
    main()
