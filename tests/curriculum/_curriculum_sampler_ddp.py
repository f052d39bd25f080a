"""Run under ``torchrun --nproc_per_node 2``: a sampler through accelerate's prepared loader, per rank.

``argv[2]`` picks it: ``curriculum`` (CurriculumSampler, easy to hard) or ``grouped`` (ImageGroupedSampler, all
positions every epoch, 3 expressions per image, runs of 2).

Writes ``<out>/rank<r>.json`` with, per epoch, the indices this rank saw, ``len(dl)`` and the global order, plus a
resumed pass of epoch 2 (``set_epoch`` then ``skip_first_batches``).
"""

import json
import sys
from pathlib import Path

import torch
from accelerate import Accelerator
from torch.utils.data import DataLoader

from clipvg_hf.curriculum import CurriculumSampler, easy_to_hard_pool
from clipvg_hf.data import ImageGroupedSampler

N, NUM_SAMPLES, BATCH, SKIP = 40, 16, 2, 2


def main(out: Path, kind: str) -> None:
    accelerator = Accelerator(cpu=True)
    assert accelerator.num_processes == 2, accelerator.num_processes  # not two silent single-process runs
    if kind == "grouped":
        sampler = ImageGroupedSampler([i // 3 for i in range(N)], max_per_image=2, seed=7)
        pool_for_epoch = lambda epoch: range(N)  # noqa: E731  (every position, every epoch)
    else:
        reliability = [(i * 37 % N) / N for i in range(N)]
        pool_for_epoch = easy_to_hard_pool(reliability, start_fraction=0.4, full_at_epoch=2)
        sampler = CurriculumSampler(pool_for_epoch, NUM_SAMPLES, seed=7)
    loader = accelerator.prepare(DataLoader(torch.arange(N), batch_size=BATCH, sampler=sampler))
    record = {"epochs": {}, "rank": accelerator.process_index}
    for epoch in range(3):
        loader.set_epoch(epoch)
        seen = [int(i) for batch in loader for i in batch]
        record["epochs"][epoch] = {
            "seen": seen,
            "len": len(loader),
            "order": sampler.indices(epoch),
            "pool": sorted(pool_for_epoch(epoch)),
        }
    loader.set_epoch(2)
    resumed = accelerator.skip_first_batches(loader, SKIP)
    record["resumed"] = [int(i) for batch in resumed for i in batch]
    (out / f"rank{accelerator.process_index}.json").write_text(json.dumps(record))
    accelerator.wait_for_everyone()


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2])
