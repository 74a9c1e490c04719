"""Real-size attention footprints (meta device): what a full map would need vs what the instruments hold."""

from _common import write_results

from motionguide.backbones.shapes import footprint_table, real_size_footprints


def main() -> None:
    rows = real_size_footprints()
    write_results("attention_footprint", {"rows": [r.as_dict() for r in rows]}, footprint_table(rows))


if __name__ == "__main__":
    main()
