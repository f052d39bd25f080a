"""Train CLIP-VG with Accelerate: the official recipe on one process or many.

    accelerate launch train.py --dataset DATA --dataset_config refcoco-unsup-single --output_dir runs/refcoco
    accelerate launch train.py --model_name_or_path runs/refcoco/best ...      # continue from a CLIP-VG folder

Defaults follow the official release scripts: AdamW (lr 2.5e-4, weight decay 1e-4 on every trainable parameter), a
cosine schedule stepped once per epoch without warmup, 64 samples per device, the three augmentations on, no
gradient clipping, seed 13. Every epoch the model is validated (Acc@0.5, mean IoU) on the labelled validation split,
the best model is saved as a transformers folder (``<output_dir>/best``, with its processor and metrics), and the
full training state is checkpointed atomically (``<output_dir>/checkpoints``) for ``--resume_from_checkpoint``.
"""

import json
import math
import os
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import datasets
import torch
from accelerate import Accelerator
from accelerate.utils import DataLoaderConfiguration, ProjectConfiguration, set_seed
from torch.utils.data import DataLoader
from tqdm.auto import tqdm
from transformers import AutoConfig, AutoModel, HfArgumentParser

from clipvg_hf import CLIPVGConfig, CLIPVGForGrounding
from clipvg_hf.data import (
    CLIPVGCollator,
    CLIPVGTrainTransform,
    GroundingDataset,
    ImageGroupedSampler,
    image_ids,
    load_split,
)
from clipvg_hf.evaluate import eval_loader, evaluate_loader
from clipvg_hf.image_processing_clipvg import CLIPVGImageProcessor
from clipvg_hf.processing_clipvg import CLIPVGProcessor, build_clip_tokenizer


@dataclass
class ModelArguments:
    model_name_or_path: str = field(
        default="openai/clip-vit-base-patch16",
        metadata={"help": "A transformers CLIP checkpoint (a fresh CLIP-VG on its weights) or a CLIP-VG folder/id."},
    )
    config_file: str | None = field(
        default=None, metadata={"help": "A CLIPVGConfig JSON: train a model of this shape from scratch instead."}
    )
    trainable_clip: str | None = field(
        default=None, metadata={"help": "Override the trainable_clip policy: official, frozen or all."}
    )


@dataclass
class DataArguments:
    dataset: str = field(metadata={"help": "A converted dataset folder or Hub id."})
    dataset_config: str = field(metadata={"help": "Dataset config, e.g. refcoco-unsup-single."})
    train_split: str | None = field(
        default=None, metadata={"help": "Default: train_pseudo for unsupervised configs, train otherwise."}
    )
    val_split: str = field(default="val", metadata={"help": "Labelled split validated every epoch."})
    sources: list[str] | None = field(
        default=None, metadata={"help": "Train only on these pseudo-label sources (template, relation, caption)."}
    )
    image_root: str | None = field(default=None, metadata={"help": "Image root of a path-mode dataset."})
    max_train_samples: int | None = field(default=None, metadata={"help": "Use only the first N expressions."})
    train_row_indices: str | None = field(
        default=None, metadata={"help": "Train only on these expressions: a JSON list of row_index values (or one per "
                                "line), e.g. a curriculum selection (clipvg_hf.curriculum)."}
    )
    aug_crop: bool = field(default=True, metadata={"help": "Random resize-and-crop branch (official --aug_crop)."})
    aug_scale: bool = field(default=True, metadata={"help": "Multi-scale resize (official --aug_scale)."})
    aug_translate: bool = field(default=True, metadata={"help": "Random placement on the canvas (--aug_translate)."})
    aug_color: bool = field(default=True, metadata={"help": "Colour jitter 0.4 with probability 0.8."})
    num_workers: int = field(default=2, metadata={"help": "DataLoader workers per process."})
    fast_augment: bool = field(default=False, metadata={
        "help": "Opt-in, changes pixels: decode JPEGs at a reduced DCT scale and crop-resize in one resampling "
                "(CLIPVGTrainTransform draft_decode + fused_crop_resize; same random draws, sizes and boxes)."})
    group_by_image: int = field(default=0, metadata={
        "help": "Opt-in, changes batch composition: order each epoch in runs of up to N expressions of one image, "
                "each image decoded once per run (ImageGroupedSampler); 0 = independent shuffle (official)."})

    def __post_init__(self) -> None:
        if self.group_by_image < 0:
            raise ValueError(f"--group_by_image must be 0 (off) or a positive run length, got {self.group_by_image}")


@dataclass
class TrainArguments:
    output_dir: str = field(metadata={"help": "Where checkpoints, the best model and logs go."})
    num_epochs: int = field(default=110, metadata={"help": "Epochs (110 in the release scripts, 90 in the paper)."})
    train_steps: int | None = field(default=None, metadata={
        "help": "Train for at least this many optimizer steps, rounded up to whole epochs (overrides --num_epochs): "
                "equal compute for training sets of different sizes."})
    per_device_batch_size: int = field(default=64)
    eval_batch_size: int = field(default=128)
    learning_rate: float = field(default=2.5e-4)
    weight_decay: float = field(default=1e-4)
    lr_scheduler: str = field(default="cosine", metadata={"help": "cosine or constant."})
    scheduler_step: str = field(default="epoch", metadata={"help": "Step the schedule per epoch (official) or step."})
    warmup_steps: int = field(default=0, metadata={"help": "Linear warmup in optimizer steps (none officially)."})
    max_grad_norm: float = field(default=0.0, metadata={"help": "Clip gradients to this norm; 0 = off (official)."})
    optim: str = field(default="adamw_torch", metadata={
        "help": "adamw_torch (official: torch.optim.AdamW) or adamw_torch_fused (one fused kernel for all parameters: "
                "same update rule, far less per-tensor overhead, rounding may differ in the last bits)."})
    gradient_accumulation_steps: int = field(default=1)
    seed: int = field(default=13)
    checkpointing_steps: int | None = field(default=None, metadata={"help": "Also checkpoint every N steps."})
    keep_checkpoints: int = field(default=2, metadata={"help": "How many checkpoints to keep."})
    resume_from_checkpoint: str | None = field(default=None, metadata={"help": "'latest' or a checkpoint folder."})
    with_tracking: bool = field(default=False, metadata={"help": "Log to the installed trackers (TensorBoard, ...)."})
    cpu: bool = field(default=False, metadata={"help": "Train on the CPU (also with several processes)."})

    def __post_init__(self) -> None:  # bad values fail before any model or data is loaded
        if self.optim not in ("adamw_torch", "adamw_torch_fused"):
            raise ValueError(f"--optim must be adamw_torch or adamw_torch_fused, got {self.optim!r}")
        if self.train_steps is not None and self.train_steps <= 0:
            raise ValueError(f"--train_steps must be positive, got {self.train_steps}")


# ---------------------------------------------------------------------------------------------------------------
# Building blocks
# ---------------------------------------------------------------------------------------------------------------
def build_model(args: ModelArguments) -> CLIPVGForGrounding:
    """A CLIP-VG folder/id as is, a CLIP checkpoint wrapped into a fresh CLIP-VG, or a config trained from scratch."""
    overrides = {"trainable_clip": args.trainable_clip} if args.trainable_clip else {}
    if args.config_file:
        config = CLIPVGConfig.from_json_file(args.config_file)
        for key, value in overrides.items():
            setattr(config, key, value)
        return CLIPVGForGrounding(config)
    config = AutoConfig.from_pretrained(args.model_name_or_path)
    if isinstance(config, CLIPVGConfig):
        model = AutoModel.from_pretrained(args.model_name_or_path, **overrides)
        model.apply_trainable_clip_policy()
        return model
    return CLIPVGForGrounding.from_clip_pretrained(args.model_name_or_path, **overrides)


def build_processor(model: CLIPVGForGrounding, model_name_or_path: str) -> CLIPVGProcessor:
    """The model's own processor when it has one, else the official letterbox + OpenAI's CLIP tokenizer."""
    from transformers import AutoProcessor

    try:
        processor = AutoProcessor.from_pretrained(model_name_or_path)
        if isinstance(processor, CLIPVGProcessor):
            return processor
    except (OSError, ValueError, TypeError):
        pass
    return CLIPVGProcessor(CLIPVGImageProcessor(size={"longest_edge": model.config.image_size}), build_clip_tokenizer())


def default_train_split(config: str) -> str:
    return "train_pseudo" if "-unsup" in config else "train"


def positions_of_rows(train_set: GroundingDataset, rows_file: str) -> list[int]:
    """Positions in ``train_set`` of the row indices listed in ``rows_file``; rows it lacks are an error."""
    from clipvg_hf.curriculum.selection import read_row_indices

    wanted = read_row_indices(rows_file)
    position = {int(r): i for i, r in enumerate(train_set.row_index)}
    missing = [r for r in wanted if r not in position]
    if missing:
        raise ValueError(f"{rows_file}: {len(missing)} row indices are not in the training split "
                         f"(or not of the chosen sources), e.g. {missing[:5]}")
    return sorted(position[r] for r in wanted)


def cosine_factor(progress: float) -> float:
    """The official cosine factor 0.5 (1 + cos(pi * progress)), progress in [0, 1]."""
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def build_scheduler(optimizer: torch.optim.Optimizer, args: TrainArguments, steps_per_epoch: int):
    """LambdaLR stepped per epoch (official: cosine over epochs, full lr in epoch 0) or per optimizer step."""
    total = args.num_epochs if args.scheduler_step == "epoch" else args.num_epochs * steps_per_epoch

    def factor(count: int) -> float:
        warm = min(1.0, (count + 1) / args.warmup_steps) if args.warmup_steps and args.scheduler_step == "step" else 1.0
        decay = cosine_factor(count / total) if args.lr_scheduler == "cosine" else 1.0
        return warm * decay

    if args.lr_scheduler not in ("cosine", "constant") or args.scheduler_step not in ("epoch", "step"):
        raise ValueError(f"unknown schedule {args.lr_scheduler!r} / {args.scheduler_step!r}")
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def build_optimizer(parameters: list[torch.nn.Parameter], args: TrainArguments) -> torch.optim.Optimizer:
    """AdamW over the trainable parameters, the plain loop (official) or the fused kernel."""
    return torch.optim.AdamW(parameters, lr=args.learning_rate, weight_decay=args.weight_decay,
                             fused=args.optim == "adamw_torch_fused")


def step_seed(seed: int, step: int, rank: int) -> int:
    """The RNG seed of one batch: dropout draws depend on (seed, batch count, rank) only, so resuming is exact."""
    return (seed * 1_000_003 + step * 9_973 + rank) % (2**63 - 1)


# ---------------------------------------------------------------------------------------------------------------
# Checkpoints: written to a hidden folder, then renamed, so a crash never leaves a half checkpoint behind
# ---------------------------------------------------------------------------------------------------------------
def save_checkpoint(accelerator: Accelerator, output_dir: Path, name: str, state: dict, keep: int) -> Path:
    final = output_dir / "checkpoints" / name
    partial = output_dir / "checkpoints" / f".partial-{name}"
    if accelerator.is_main_process and partial.exists():
        shutil.rmtree(partial)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(partial))
    if accelerator.is_main_process:
        (partial / "trainer_state.json").write_text(json.dumps(state, indent=2))
        if final.exists():
            shutil.rmtree(final)
        os.replace(partial, final)
        for old in list_checkpoints(output_dir)[:-keep] if keep > 0 else []:
            shutil.rmtree(old)
    accelerator.wait_for_everyone()
    return final


def list_checkpoints(output_dir: Path) -> list[Path]:
    """Complete checkpoints, oldest first (by global step)."""
    root = output_dir / "checkpoints"
    found = [p for p in root.glob("*") if not p.name.startswith(".") and (p / "trainer_state.json").is_file()]
    def order(path: Path) -> tuple[int, bool]:  # at equal steps an end-of-epoch checkpoint is the later one
        return json.loads((path / "trainer_state.json").read_text())["global_step"], path.name.startswith("epoch_")

    return sorted(found, key=order)


def resolve_checkpoint(spec: str, output_dir: Path) -> Path | None:
    if spec != "latest":
        path = Path(spec)
        if not (path / "trainer_state.json").is_file():
            raise FileNotFoundError(f"{path} is not a complete checkpoint (no trainer_state.json)")
        return path
    found = list_checkpoints(output_dir)
    return found[-1] if found else None


def save_best(accelerator: Accelerator, model, processor: CLIPVGProcessor, output_dir: Path, metrics: dict) -> None:
    """The best model so far as a transformers folder (model + processor + metrics), replaced atomically."""
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        partial, final = output_dir / ".partial-best", output_dir / "best"
        if partial.exists():
            shutil.rmtree(partial)
        accelerator.unwrap_model(model).save_pretrained(partial)
        processor.save_pretrained(partial)
        (partial / "val_metrics.json").write_text(json.dumps(metrics, indent=2))
        if final.exists():
            shutil.rmtree(final)
        os.replace(partial, final)
    accelerator.wait_for_everyone()


# ---------------------------------------------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> dict:
    model_args, data_args, train_args = HfArgumentParser((ModelArguments, DataArguments, TrainArguments)).parse_args_into_dataclasses(argv)
    output_dir = Path(train_args.output_dir)
    accelerator = Accelerator(
        cpu=train_args.cpu,
        gradient_accumulation_steps=train_args.gradient_accumulation_steps,
        log_with="all" if train_args.with_tracking else None,
        project_config=ProjectConfiguration(project_dir=str(output_dir), logging_dir=str(output_dir / "logs")),
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True),
    )
    set_seed(train_args.seed)  # identical initialisation on every process
    if accelerator.is_main_process:
        output_dir.mkdir(parents=True, exist_ok=True)

    # model, processor, data
    model = build_model(model_args)
    processor = build_processor(model, model_args.model_name_or_path)
    train_split = data_args.train_split or default_train_split(data_args.dataset_config)
    raw_train = load_split(data_args.dataset, data_args.dataset_config, train_split)
    raw_val = load_split(data_args.dataset, data_args.dataset_config, data_args.val_split)
    transform = CLIPVGTrainTransform(size=model.config.image_size, aug_scale=data_args.aug_scale,
                                     aug_crop=data_args.aug_crop, aug_color=data_args.aug_color,
                                     aug_translate=data_args.aug_translate, draft_decode=data_args.fast_augment,
                                     fused_crop_resize=data_args.fast_augment)
    base_train_set = GroundingDataset(raw_train, transform, seed=train_args.seed, sources=data_args.sources,
                                      image_root=data_args.image_root)
    train_set = base_train_set
    if data_args.train_row_indices:
        train_set = torch.utils.data.Subset(train_set, positions_of_rows(base_train_set, data_args.train_row_indices))
    if data_args.max_train_samples is not None:
        train_set = torch.utils.data.Subset(train_set, range(min(data_args.max_train_samples, len(train_set))))
    order = {"shuffle": True, "generator": torch.Generator().manual_seed(train_args.seed)}
    if data_args.group_by_image:  # every rank builds the same order; accelerate shards its batches
        order = {"sampler": ImageGroupedSampler(image_ids(train_set), data_args.group_by_image, train_args.seed)}
    train_loader = DataLoader(train_set, batch_size=train_args.per_device_batch_size, drop_last=True,
                              num_workers=data_args.num_workers, collate_fn=CLIPVGCollator(processor.tokenizer),
                              **order)

    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = build_optimizer(trainable, train_args)
    model, optimizer, train_loader = accelerator.prepare(model, optimizer, train_loader)
    steps_per_epoch = math.ceil(len(train_loader) / train_args.gradient_accumulation_steps)
    if steps_per_epoch == 0:
        raise ValueError(f"{len(train_set)} training samples do not fill one batch of "
                         f"{train_args.per_device_batch_size} x {accelerator.num_processes} processes")
    if train_args.train_steps is not None:
        train_args.num_epochs = math.ceil(train_args.train_steps / steps_per_epoch)
    scheduler = build_scheduler(optimizer, train_args, steps_per_epoch)
    accelerator.register_for_checkpointing(scheduler)  # not prepared: stepped exactly once per epoch / step
    val_loader = eval_loader(raw_val, processor, accelerator, batch_size=train_args.eval_batch_size,
                             image_root=data_args.image_root)  # prepared once, before any state is loaded

    n_trainable = sum(p.numel() for p in trainable)
    if train_args.with_tracking:
        accelerator.init_trackers("clipvg", config={**asdict(model_args), **asdict(data_args), **asdict(train_args)})
    accelerator.print(f"{len(train_set)} training expressions, {len(raw_val)} validation images, "
                      f"{n_trainable:,} trainable parameters, {accelerator.num_processes} process(es)")
    if data_args.group_by_image or data_args.fast_augment:
        accelerator.print(f"opt-in data shortcuts: group_by_image={data_args.group_by_image}, "
                          f"fast_augment={data_args.fast_augment}")

    # resume
    state = {"epoch": 0, "step_in_epoch": 0, "global_step": 0, "micro_step": 0, "best_accuracy": -1.0}
    if train_args.resume_from_checkpoint:
        checkpoint = resolve_checkpoint(train_args.resume_from_checkpoint, output_dir)
        if checkpoint is not None:
            accelerator.load_state(str(checkpoint))
            state = json.loads((checkpoint / "trainer_state.json").read_text())
            accelerator.print(f"resumed from {checkpoint}: epoch {state['epoch']}, step {state['step_in_epoch']}")

    log_path = output_dir / "log.jsonl"
    for epoch in range(state["epoch"], train_args.num_epochs):
        model.train()
        train_loader.set_epoch(epoch)
        base_train_set.set_epoch(epoch)
        skip = state["step_in_epoch"] * train_args.gradient_accumulation_steps if epoch == state["epoch"] else 0
        loader = accelerator.skip_first_batches(train_loader, skip) if skip else train_loader
        totals = {"loss": 0.0, "loss_bbox": 0.0, "loss_giou": 0.0}
        n_batches, started = 0, time.time()
        progress = tqdm(loader, desc=f"epoch {epoch}", disable=not accelerator.is_local_main_process, leave=False)
        for batch in progress:
            with accelerator.accumulate(model):
                torch.manual_seed(step_seed(train_args.seed, state["micro_step"], accelerator.process_index))
                out = model(**batch)
                accelerator.backward(out.loss)
                if accelerator.sync_gradients and train_args.max_grad_norm > 0:
                    accelerator.clip_grad_norm_(trainable, train_args.max_grad_norm)
                optimizer.step()
                optimizer.zero_grad()
            for key in totals:
                totals[key] += (out.loss if key == "loss" else out.loss_dict[key]).item()
            n_batches += 1
            state["micro_step"] += 1
            if accelerator.sync_gradients:
                state["global_step"] += 1
                state["step_in_epoch"] += 1
                if train_args.scheduler_step == "step":
                    scheduler.step()
                progress.set_postfix(loss=f"{out.loss.item():.4f}", lr=f"{scheduler.get_last_lr()[0]:.2e}")
                if train_args.checkpointing_steps and state["global_step"] % train_args.checkpointing_steps == 0:
                    save_checkpoint(accelerator, output_dir, f"step_{state['global_step']}", dict(state, epoch=epoch),
                                    train_args.keep_checkpoints)
        lr = scheduler.get_last_lr()[0]
        if train_args.scheduler_step == "epoch":
            scheduler.step()

        val = evaluate_loader(accelerator.unwrap_model(model), val_loader, accelerator, desc=f"val {epoch}").compute()
        record = {"epoch": epoch, "train_lr": lr, **{f"train_{k}": v / max(n_batches, 1) for k, v in totals.items()},
                  "validation_accuracy": val["accuracy"], "validation_miou": val["mean_iou"],
                  "epoch_seconds": time.time() - started, "global_step": state["global_step"],
                  "n_parameters": n_trainable}
        improved = val["accuracy"] > state["best_accuracy"]
        state.update(epoch=epoch + 1, step_in_epoch=0, best_accuracy=max(val["accuracy"], state["best_accuracy"]))
        if improved:
            save_best(accelerator, model, processor, output_dir, {**val, "epoch": epoch, "split": data_args.val_split})
        save_checkpoint(accelerator, output_dir, f"epoch_{epoch}", state, train_args.keep_checkpoints)
        if accelerator.is_main_process:
            with open(log_path, "a") as handle:
                handle.write(json.dumps(record) + "\n")
        accelerator.log(record, step=state["global_step"])
        accelerator.print(json.dumps(record))

    accelerator.end_training()
    return state


if __name__ == "__main__":
    main(sys.argv[1:])
