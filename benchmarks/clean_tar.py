"""Clean-probe verification of FR models: TAR at FMR 1e-3 (and 1e-4) and 10-fold accuracy, the depth experiment's bar.

    python benchmarks/clean_tar.py grafiqs/assets/demo_iresnet.ckpt outputs/train/depth/bundled/backbone.ckpt

Held-out synthetic identities (default: the demo's 100 people at offset 1,000,000, and 400 more from 3,000,000),
one clean enrolment and `--probes` clean probes each, every probe against every enrolment; cosine of the
embeddings with the flipped image's added (as training validation does). Colour order from each checkpoint.
`--world wide`: the same people photographed in the wide world (harder pose, light, ageing, accessories).
"""
from __future__ import annotations

import argparse

import numpy as np
import torch

from grafiqs.data.decode import normalize, to_model_tensor
from grafiqs.lit.fr_module import kfold_accuracy, tar_at_fmr
from grafiqs.models.loading import load_backbone_and_metadata
from grafiqs.synthetic import make_verification_probes, verification_pairs
from grafiqs.synthetic.identities import WORLDS


@torch.no_grad()
def embed(model, images: list[np.ndarray], rgb: bool, batch_size: int = 64) -> torch.Tensor:
    rows = []
    for first in range(0, len(images), batch_size):
        chunk = [image[..., ::-1].copy() if rgb else image for image in images[first:first + batch_size]]
        batch = normalize(torch.stack([to_model_tensor(image) for image in chunk]))
        rows.append(torch.nn.functional.normalize(model(batch) + model(batch.flip(3)), dim=1))
    return torch.cat(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("weights", nargs="+")
    parser.add_argument("--identities", type=int, default=100)
    parser.add_argument("--offset", type=int, default=1_000_000)
    parser.add_argument("--probes", type=int, default=2)
    parser.add_argument("--world", default="standard", choices=WORLDS)
    args = parser.parse_args()
    records = make_verification_probes(args.identities, identity_offset=args.offset, severities=(0,),
                                       probes_per_identity=args.probes, world=args.world)
    probe, enrol, mated = verification_pairs(records)
    print(f"{args.identities} identities from {args.offset}, {args.world} world: {int(mated.sum())} mated, "
          f"{int((~mated).sum())} non-mated pairs")
    for weights in args.weights:
        model, metadata = load_backbone_and_metadata(None, weights)
        embeddings = embed(model.eval(), [r.image for r in records], rgb=(metadata or {}).get("colour_order") == "rgb")
        scores = (embeddings[probe] * embeddings[enrol]).sum(1).double().numpy()
        print(f"{weights}: TAR@FMR1e-3 {tar_at_fmr(scores, mated, 1e-3):.4f}, TAR@FMR1e-4 {tar_at_fmr(scores, mated, 1e-4):.4f}, "
              f"10-fold accuracy {kfold_accuracy(scores, mated):.4f}")


if __name__ == "__main__":
    main()
