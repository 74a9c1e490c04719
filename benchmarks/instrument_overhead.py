"""Cost of the attention instruments as ratios to the stock forward, measured in one run.

Variants on a small Wan transformer (no grad): stock, instruments installed but idle, capture at every
block (consumer computes a frame-0 -> frame-1 matching cost per head, then drops it), and frame-local
attention at every block in both forms.
"""


import torch
from _common import interleaved_medians, machine, write_results

from motionguide.attention import AttentionController
from motionguide.cli_args import ArgumentParser
from motionguide.testing import tiny_wan_transformer


def matching_consumer(event) -> None:
    q, k = event.video_query(), event.video_key()
    p = event.grid.tokens_per_frame
    for h in range(q.shape[1]):
        cost = (q[0, h, :p] @ k[0, h, p : 2 * p].T).softmax(-1)
        cost.argmax(-1)


def measure(size: int, frames: int, repeats: int) -> dict:
    transformer = tiny_wan_transformer(num_layers=4, heads=4, head_dim=32)
    x = torch.randn(1, 16, frames, size, size)
    text = torch.randn(1, 16, 32)
    t = torch.tensor([500])
    controller = AttentionController(transformer)
    forward = lambda: transformer(hidden_states=x, timestep=t, encoder_hidden_states=text, return_dict=False)  # noqa

    def scoped(factory):
        def run():
            with factory():
                forward()
        return run

    variants = {
        "stock": forward,
        "installed_idle": scoped(lambda: controller.installed(attention=("self", "text"))),
        "capture_all_blocks": scoped(lambda: controller.capture(matching_consumer)),
        "frame_local_renorm": scoped(lambda: controller.frame_local(range(4), renormalize=True)),
        "frame_local_no_renorm": scoped(lambda: controller.frame_local(range(4), renormalize=False)),
    }
    with torch.no_grad():
        med = interleaved_medians(variants, repeats)
    grid = (frames, size // 2, size // 2)
    return {"token_grid": grid, "tokens": grid[0] * grid[1] * grid[2], "median_s": med,
            "ratio_to_stock": {k: v / med["stock"] for k, v in med.items()}}


def main() -> None:
    parser = ArgumentParser()
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()
    cases = [measure(16, 5, args.repeats), measure(32, 5, max(5, args.repeats // 3))]
    names = list(cases[0]["ratio_to_stock"])
    lines = ["| tokens (grid) | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for c in cases:
        f, h, w = c["token_grid"]
        ratios = " | ".join(f"{c['ratio_to_stock'][n]:.2f}x" for n in names)
        lines.append(f"| {c['tokens']} ({f}x{h}x{w}) | {ratios} |")
    lines.append("")
    lines.append(f"Ratios of median forward time to the stock forward, measured in one run ({machine()['threads']} "
                 "threads, CPU); Wan transformer 4 blocks x 4 heads x 32.")
    write_results("instrument_overhead", {"machine": machine(), "cases": cases}, "\n".join(lines))


if __name__ == "__main__":
    main()
