"""Training CLIP-VG (and HiVG) with Accelerate: the official recipe on one process or many.

The command is ``clipvg-train`` (:mod:`clipvg_hf.commands.train`; also ``accelerate launch -m clipvg_hf.train`` and,
from a checkout, ``accelerate launch train.py``)::

    accelerate launch train.py --dataset DATA --dataset_config refcoco-unsup-single --output_dir runs/refcoco
    accelerate launch train.py --model_name_or_path runs/refcoco/best ...      # continue from a CLIP-VG folder

This module holds the training arguments (three dataclasses, each checked in ``__post_init__``), the building
blocks (model, optimizer, schedule, curriculum order, checkpoints) and :func:`train`, the loop.

Defaults follow the official release scripts: AdamW (lr 2.5e-4, weight decay 1e-4 on every trainable parameter), a
cosine schedule stepped once per epoch without warmup, 64 samples per device, the three augmentations on, no
gradient clipping, seed 13. Every epoch the model is validated (Acc@0.5, mean IoU) on the labelled validation split,
the best model is saved as a transformers folder (``<output_dir>/best``, with its processor and metrics), and the
full training state is checkpointed atomically (``<output_dir>/checkpoints``) for ``--resume_from_checkpoint``.
"""

import json
import math
import os
import pickle
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import DataLoaderConfiguration, ProjectConfiguration, set_seed
from accelerate.utils import load as load_accelerate_file
from torch.utils.data import DataLoader
from tqdm.auto import tqdm
from transformers import AutoConfig

from clipvg_hf.checks import check_model_source, check_number, check_output_dir, load_split_checked
from clipvg_hf.curriculum.sampler import POOLS, CurriculumSampler, check_scores_of_split, sampler_from_scores
from clipvg_hf.curriculum.selection import read_row_indices
from clipvg_hf.data import (
    EVAL_SPLITS,
    CLIPVGCollator,
    CLIPVGTrainTransform,
    GroundingDataset,
    ImageGroupedSampler,
    image_ids,
    load_split,
    row_indices,
    train_split_of,
)
from clipvg_hf.errors import UsageError, first_line, torch_load_reason
from clipvg_hf.evaluation import eval_loader, evaluate
from clipvg_hf.families import FAMILIES, family_of_config, family_of_model, family_of_model_type
from clipvg_hf.loading import load_grounding_model, load_processor
from clipvg_hf.modeling_clipvg import CLIPVGPreTrainedModel
from clipvg_hf.processing_clipvg import CLIPVGProcessor


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
    model_family: str = field(
        default="clipvg",
        metadata={
            "help": "clipvg or hivg: the family of a fresh model (CLIP checkpoint or "
            "--config_file); a saved model folder must be of this family."
        },
    )
    hilora_stage: int | None = field(
        default=None,
        metadata={
            "help": "HiVG: the HiLoRA stage to train (0 warm-up, 1-3: vision LoRA of blocks "
            "0-4/0-7/0-11 and the text LoRA); start each stage from the previous best."
        },
    )

    def __post_init__(self) -> None:
        if self.model_family not in FAMILIES:
            raise UsageError(f"--model_family must be {' or '.join(FAMILIES)}, got {self.model_family!r}")
        if self.hilora_stage is not None and (self.model_family != "hivg" or self.hilora_stage not in (0, 1, 2, 3)):
            raise UsageError(f"--hilora_stage {self.hilora_stage}: needs --model_family hivg and a stage 0-3")
        if self.trainable_clip not in (None, "official", "frozen", "all"):
            raise UsageError(f"--trainable_clip must be official, frozen or all, got {self.trainable_clip!r}")
        if self.config_file is not None and not Path(self.config_file).is_file():
            raise UsageError(f"--config_file {self.config_file}: file not found")
        if self.config_file is None:
            check_model_source(self.model_name_or_path)


@dataclass
class DataArguments:
    dataset: str = field(metadata={"help": "A converted dataset folder or Hub id."})
    dataset_config: str | None = field(
        default=None,
        metadata={
            "help": "Dataset config, e.g. refcoco-unsup-single; leave it out for a Hub REC layout "
            "(clipvg_hf.data.hub_layouts: splits named as the dataset names them, e.g. --val_split validation)."
        },
    )
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
        default=None,
        metadata={
            "help": "Train only on these expressions: a JSON list of row_index values (or one per "
            "line), e.g. a curriculum selection (clipvg_hf.curriculum)."
        },
    )
    aug_crop: bool = field(default=True, metadata={"help": "Random resize-and-crop branch (official --aug_crop)."})
    aug_scale: bool = field(default=True, metadata={"help": "Multi-scale resize (official --aug_scale)."})
    aug_translate: bool = field(default=True, metadata={"help": "Random placement on the canvas (--aug_translate)."})
    aug_color: bool = field(default=True, metadata={"help": "Colour jitter 0.4 with probability 0.8."})
    num_workers: int = field(default=2, metadata={"help": "DataLoader workers per process."})
    fast_augment: bool = field(
        default=False,
        metadata={
            "help": "Opt-in, changes pixels: decode JPEGs at a reduced DCT scale and crop-resize in one resampling "
            "(CLIPVGTrainTransform draft_decode + fused_crop_resize; same random draws, sizes and boxes)."
        },
    )
    group_by_image: int = field(
        default=0,
        metadata={
            "help": "Opt-in, changes batch composition: order each epoch in runs of up to N expressions of one image, "
            "each image decoded once per run (ImageGroupedSampler); 0 = independent shuffle (official)."
        },
    )
    curriculum_scores: str | None = field(
        default=None,
        metadata={
            "help": "Sample every epoch with CurriculumSampler from these reliabilities: scores.parquet of "
            "clipvg-curriculum score (or its folder), scoring every training row. The pool is chosen by "
            "--curriculum_pool; each epoch draws --curriculum_samples_per_epoch positions from it."
        },
    )
    curriculum_pool: str = field(
        default="threshold",
        metadata={
            "help": "threshold: every epoch the rows with reliability >= --curriculum_threshold (SSA's selection); "
            "easy_to_hard: the --curriculum_start_fraction most reliable rows, growing linearly to "
            "--curriculum_end_fraction at epoch --curriculum_full_at_epoch."
        },
    )
    curriculum_threshold: float = field(default=0.0, metadata={"help": "Reliability threshold h of the pool."})
    curriculum_start_fraction: float = field(default=0.5, metadata={"help": "easy_to_hard: pool fraction at epoch 0."})
    curriculum_end_fraction: float = field(default=1.0, metadata={"help": "easy_to_hard: final pool fraction."})
    curriculum_full_at_epoch: int = field(default=10, metadata={"help": "easy_to_hard: epoch the pool stops growing."})
    curriculum_samples_per_epoch: int | None = field(
        default=None,
        metadata={
            "help": "Positions drawn per epoch (constant, so the schedule and resumption stay exact); default: the size "
            "of the largest pool of the run (a pool smaller than this is repeated in fresh permutations)."
        },
    )

    def __post_init__(self) -> None:
        if self.group_by_image < 0:
            raise UsageError(f"--group_by_image must be 0 (off) or a positive run length, got {self.group_by_image}")
        check_number("--num_workers", self.num_workers, minimum=0, integer=True)
        check_number("--max_train_samples", self.max_train_samples, minimum=1, integer=True)
        if self.train_split is not None and (self.train_split == self.val_split or self.train_split in EVAL_SPLITS):
            raise UsageError(
                f"--train_split {self.train_split} is an evaluation split (validated with --val_split "
                f"{self.val_split}); train on train / train_pseudo or a custom split"
            )
        if self.train_row_indices is not None and not Path(self.train_row_indices).is_file():
            raise UsageError(f"--train_row_indices {self.train_row_indices}: file not found")
        self._check_curriculum()

    def _check_curriculum(self) -> None:
        if self.curriculum_scores is None:
            return
        if not Path(self.curriculum_scores).exists():
            raise UsageError(f"--curriculum_scores {self.curriculum_scores}: file not found")
        if self.group_by_image:
            raise UsageError("--curriculum_scores and --group_by_image both choose the sample order; use one")
        if self.curriculum_pool not in POOLS:
            raise UsageError(f"--curriculum_pool must be one of {', '.join(POOLS)}, got {self.curriculum_pool!r}")
        if not 0 < self.curriculum_start_fraction <= self.curriculum_end_fraction <= 1:
            raise UsageError(
                "need 0 < --curriculum_start_fraction <= --curriculum_end_fraction <= 1, got "
                f"{self.curriculum_start_fraction} and {self.curriculum_end_fraction}"
            )
        check_number("--curriculum_threshold", self.curriculum_threshold)
        check_number("--curriculum_full_at_epoch", self.curriculum_full_at_epoch, minimum=0, integer=True)
        check_number("--curriculum_samples_per_epoch", self.curriculum_samples_per_epoch, minimum=1, integer=True)


@dataclass
class TrainArguments:
    output_dir: str = field(metadata={"help": "Where checkpoints, the best model and logs go."})
    num_epochs: int = field(default=110, metadata={"help": "Epochs (110 in the release scripts, 90 in the paper)."})
    train_steps: int | None = field(
        default=None,
        metadata={
            "help": "Train for at least this many optimizer steps, rounded up to whole epochs (overrides --num_epochs): "
            "equal compute for training sets of different sizes."
        },
    )
    per_device_batch_size: int = field(default=64)
    eval_batch_size: int = field(default=128)
    learning_rate: float = field(default=2.5e-4)
    weight_decay: float = field(default=1e-4)
    lr_scheduler: str = field(default="cosine", metadata={"help": "cosine or constant."})
    scheduler_step: str = field(default="epoch", metadata={"help": "Step the schedule per epoch (official) or step."})
    warmup_steps: int = field(default=0, metadata={"help": "Linear warmup in optimizer steps (none officially)."})
    max_grad_norm: float = field(default=0.0, metadata={"help": "Clip gradients to this norm; 0 = off (official)."})
    optim: str = field(
        default="adamw_torch",
        metadata={
            "help": "adamw_torch (official: torch.optim.AdamW) or adamw_torch_fused (one fused kernel for all parameters: "
            "same update rule, far less per-tensor overhead, rounding may differ in the last bits)."
        },
    )
    gradient_accumulation_steps: int = field(default=1)
    seed: int = field(default=13)
    checkpointing_steps: int | None = field(default=None, metadata={"help": "Also checkpoint every N steps."})
    keep_checkpoints: int = field(default=2, metadata={"help": "How many checkpoints to keep."})
    resume_from_checkpoint: str | None = field(default=None, metadata={"help": "'latest' or a checkpoint folder."})
    overwrite_output_dir: bool = field(
        default=False,
        metadata={
            "help": "Start a new run in an --output_dir that holds an earlier one (its checkpoints, best model and log "
            "are deleted first). Without it such a folder is refused unless --resume_from_checkpoint is given."
        },
    )
    with_tracking: bool = field(default=False, metadata={"help": "Log to the installed trackers (TensorBoard, ...)."})
    log_sample_order: bool = field(
        default=False,
        metadata={
            "help": "Append the row_index of every sample each process trained on, one line per epoch, to "
            "<output_dir>/sample_order/rank<r>.jsonl (audits a curriculum and a resumed run)."
        },
    )
    cpu: bool = field(default=False, metadata={"help": "Train on the CPU (also with several processes)."})

    def __post_init__(self) -> None:  # bad values fail before any model or data is loaded
        if self.optim not in ("adamw_torch", "adamw_torch_fused"):
            raise UsageError(f"--optim must be adamw_torch or adamw_torch_fused, got {self.optim!r}")
        if self.train_steps is not None and self.train_steps <= 0:
            raise UsageError(f"--train_steps must be positive, got {self.train_steps}")
        if self.lr_scheduler not in ("cosine", "constant"):
            raise UsageError(f"--lr_scheduler must be cosine or constant, got {self.lr_scheduler!r}")
        if self.scheduler_step not in ("epoch", "step"):
            raise UsageError(f"--scheduler_step must be epoch or step, got {self.scheduler_step!r}")
        for name, minimum in (
            ("num_epochs", 1),
            ("per_device_batch_size", 1),
            ("eval_batch_size", 1),
            ("gradient_accumulation_steps", 1),
            ("checkpointing_steps", 1),
            ("warmup_steps", 0),
            ("keep_checkpoints", 0),
        ):
            check_number(f"--{name}", getattr(self, name), minimum=minimum, integer=True)
        check_number("--learning_rate", self.learning_rate, above=0)
        check_number("--weight_decay", self.weight_decay, minimum=0)
        check_number("--max_grad_norm", self.max_grad_norm, minimum=0)
        check_output_dir(self.output_dir)


# ---------------------------------------------------------------------------------------------------------------
# Building blocks
# ---------------------------------------------------------------------------------------------------------------
def build_model(args: ModelArguments) -> CLIPVGPreTrainedModel:
    """A CLIP-VG/HiVG folder/id as is, a CLIP checkpoint wrapped into a fresh model of ``--model_family``, or a
    config trained from scratch."""
    overrides = {"trainable_clip": args.trainable_clip} if args.trainable_clip else {}
    if args.hilora_stage is not None:
        overrides["hilora_stage"] = args.hilora_stage
    family = FAMILIES[args.model_family]
    config_class, model_class = family.config_class, family.model_class
    if args.config_file:
        config = config_class.from_json_file(args.config_file)
        for key, value in overrides.items():
            setattr(config, key, value)
        return model_class(config)
    config = AutoConfig.from_pretrained(args.model_name_or_path)
    if family_of_model_type(config.model_type) is not None:
        if family_of_config(config) is not family:
            raise UsageError(
                f"--model_name_or_path {args.model_name_or_path} holds a {config.model_type} model; "
                f"pass --model_family {family_of_config(config).name}"
            )
        model = load_grounding_model(args.model_name_or_path, **overrides)  # every weight present and finite
        model.apply_trainable_clip_policy()
        return model
    return model_class.from_clip_pretrained(args.model_name_or_path, **overrides)


def positions_of_rows(train_set: GroundingDataset, rows_file: str) -> list[int]:
    """Positions in ``train_set`` of the row indices listed in ``rows_file``; rows it lacks are an error."""
    wanted = read_row_indices(rows_file)
    position = {int(r): i for i, r in enumerate(train_set.row_index)}
    missing = [r for r in wanted if r not in position]
    if missing:
        raise UsageError(
            f"{rows_file}: {len(missing)} row indices are not in the training split "
            f"(or not of the chosen sources), e.g. {missing[:5]}"
        )
    return sorted(position[r] for r in wanted)


def check_curriculum_scores(args: DataArguments, split_name: str, split) -> None:
    """The scores must be of this dataset, config and split, one per expression (checked before the model loads)."""
    try:
        check_scores_of_split(args.curriculum_scores, args.dataset, args.dataset_config, split_name, split)
    except (OSError, ValueError) as error:  # another dataset / config / split / version, non-finite scores
        raise UsageError(f"--curriculum_scores {args.curriculum_scores}: {first_line(error)}") from error


def build_curriculum_sampler(args: DataArguments, rows: np.ndarray, seed: int) -> CurriculumSampler:
    """The --curriculum_* sampler over the training set whose positions hold ``rows``."""
    try:
        return sampler_from_scores(
            args.curriculum_scores,
            rows,
            pool=args.curriculum_pool,
            threshold=args.curriculum_threshold,
            start_fraction=args.curriculum_start_fraction,
            end_fraction=args.curriculum_end_fraction,
            full_at_epoch=args.curriculum_full_at_epoch,
            num_samples=args.curriculum_samples_per_epoch,
            seed=seed,
        )
    except (OSError, ValueError) as error:  # not a scores file, unscored rows, an empty pool
        raise UsageError(f"--curriculum_scores {args.curriculum_scores}: {first_line(error)}") from error


def log_sample_order(output_dir: Path, rank: int, epoch: int, skipped: int, rows: list[int]) -> None:
    """One JSON line per epoch: the rows this process trained on (after ``skipped`` batches when resumed)."""
    folder = output_dir / "sample_order"
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / f"rank{rank}.jsonl", "a") as handle:
        handle.write(json.dumps({"epoch": epoch, "skipped_batches": skipped, "rows": rows}) + "\n")


def cosine_factor(progress: float) -> float:
    """The official cosine factor 0.5 (1 + cos(pi * progress)), progress in [0, 1]."""
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def build_scheduler(optimizer: torch.optim.Optimizer, args: TrainArguments, steps_per_epoch: int):
    """LambdaLR stepped per epoch (official: cosine over epochs, full lr in epoch 0) or per optimizer step."""
    total = args.num_epochs if args.scheduler_step == "epoch" else args.num_epochs * steps_per_epoch

    def factor(count: int) -> float:
        warm = (
            min(1.0, (count + 1) / args.warmup_steps) if args.warmup_steps and args.scheduler_step == "step" else 1.0
        )
        decay = cosine_factor(count / total) if args.lr_scheduler == "cosine" else 1.0
        return warm * decay

    if args.lr_scheduler not in ("cosine", "constant") or args.scheduler_step not in ("epoch", "step"):
        raise ValueError(f"unknown schedule {args.lr_scheduler!r} / {args.scheduler_step!r}")
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def build_optimizer(parameters: list[torch.nn.Parameter], args: TrainArguments) -> torch.optim.Optimizer:
    """AdamW over the trainable parameters, the plain loop (official) or the fused kernel."""
    return torch.optim.AdamW(
        parameters, lr=args.learning_rate, weight_decay=args.weight_decay, fused=args.optim == "adamw_torch_fused"
    )


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
        (partial / "trainer_state.json").write_text(json.dumps(state, indent=2, default=float))
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
    """The checkpoint to resume from: a folder, the newest under ``output_dir`` (``latest``), None to start anew."""
    if spec != "latest":
        path = Path(spec)
        if not (path / "trainer_state.json").is_file():
            raise UsageError(f"--resume_from_checkpoint {path} is not a complete checkpoint (no trainer_state.json)")
        return path
    found = list_checkpoints(output_dir)
    if not found and previous_run(output_dir):
        raise UsageError(
            f"--resume_from_checkpoint latest: {output_dir} holds an earlier run "
            f"({', '.join(previous_run(output_dir))}) but no complete checkpoint; "
            "pass --overwrite_output_dir to start over"
        )
    return found[-1] if found else None


#: What a training run writes into its output folder.
RUN_FILES = ("checkpoints", "best", ".partial-best", "log.jsonl", "logs")


def previous_run(output_dir: Path) -> list[str]:
    """The files of an earlier run in ``output_dir`` (none for a new or unrelated folder)."""
    return [name for name in RUN_FILES if (output_dir / name).exists()]


def prepare_output_dir(args: "TrainArguments") -> None:
    """Refuse to mix a new run into an earlier one's folder; with --overwrite_output_dir, delete the earlier run."""
    output_dir = Path(args.output_dir)
    used = previous_run(output_dir)
    resume = args.resume_from_checkpoint
    if not used or (resume and is_own_checkpoint(resume, output_dir)):
        return
    if resume and not args.overwrite_output_dir:  # another run's checkpoint would mix two runs in this folder
        raise UsageError(
            f"--resume_from_checkpoint {resume} is not a checkpoint of --output_dir {output_dir}, which holds an "
            f"earlier run ({', '.join(used)}); resume into a new --output_dir, or pass --overwrite_output_dir to "
            "replace that run"
        )
    if not args.overwrite_output_dir:
        raise UsageError(
            f"--output_dir {output_dir} holds an earlier run ({', '.join(used)}); pass "
            "--resume_from_checkpoint latest to continue it or --overwrite_output_dir to replace it"
        )
    for name in used:  # every process gets here before any writes (they meet in Accelerator()); errors ignored
        path = output_dir / name
        shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)


def is_own_checkpoint(spec: str, output_dir: Path) -> bool:
    """Whether ``--resume_from_checkpoint`` continues the run in ``output_dir`` (``latest`` or one of its own)."""
    return spec == "latest" or (output_dir / "checkpoints").resolve() in Path(spec).resolve().parents


#: Settings a resumed run must share with its checkpoint: they shape the optimizer and the learning-rate schedule,
#: whose state the checkpoint restores (a changed value would be silently ignored).
RESUME_SETTINGS = (
    "learning_rate",
    "weight_decay",
    "num_epochs",
    "train_steps",
    "lr_scheduler",
    "scheduler_step",
    "warmup_steps",
)


def resume_settings(args: "TrainArguments") -> dict:
    """The values of :data:`RESUME_SETTINGS` as given on the command line (kept in ``trainer_state.json``)."""
    return {name: getattr(args, name) for name in RESUME_SETTINGS}


def check_resume_settings(checkpoint: Path, args: "TrainArguments") -> None:
    """Refuse to resume with other :data:`RESUME_SETTINGS` than the checkpoint's run (older checkpoints record only
    the learning rate, in the scheduler's ``base_lrs``)."""
    state = json.loads((checkpoint / "trainer_state.json").read_text())
    stored = state.get("settings")
    if not isinstance(stored, dict):
        base_lrs = (state.get("scheduler") or {}).get("base_lrs") or []
        stored = {"learning_rate": base_lrs[0]} if base_lrs else {}
    for name, value in resume_settings(args).items():
        if name in stored and stored[name] != value:
            raise UsageError(
                f"--{name} {value} differs from the {stored[name]} of the run in --resume_from_checkpoint "
                f"{checkpoint}, whose optimizer and schedule a resume restores; resume with --{name} {stored[name]}, "
                "or start a new run from its best model (--model_name_or_path)"
            )


def load_training_state(accelerator: Accelerator, checkpoint: Path, scheduler) -> dict:
    """Model, optimizer and RNG states (accelerate, ``weights_only=True``), the schedule and counters (JSON).

    Nothing is registered with ``register_for_checkpointing``: accelerate unpickles such custom states with
    ``weights_only=False``, which would run code from a crafted checkpoint.
    """
    state = json.loads((checkpoint / "trainer_state.json").read_text())
    pickles = sorted(p.name for p in checkpoint.glob("custom_checkpoint_*.pkl"))
    if pickles:  # accelerate would unpickle these with weights_only=False, i.e. run any code they hold
        raise UsageError(
            f"--resume_from_checkpoint {checkpoint}: holds {', '.join(pickles)}, a pickle that could run "
            "code; it is never loaded (this training keeps its schedule in trainer_state.json)"
        )
    if not isinstance(state.get("scheduler"), dict):
        raise UsageError(f"--resume_from_checkpoint {checkpoint}: trainer_state.json holds no scheduler state")
    rng_file = checkpoint / f"random_states_{accelerator.process_index}.pkl"
    try:  # accelerate skips an unreadable RNG file without a word: the resumed run would not be the same run
        load_accelerate_file(rng_file)
    except Exception as error:  # missing, cut off, or holding objects weights_only refuses (never unpickled)
        raise UsageError(
            f"--resume_from_checkpoint {checkpoint}: {rng_file.name} cannot be loaded safely: "
            f"{torch_load_reason(error) if rng_file.is_file() else 'the file is missing'}"
        ) from error
    try:
        accelerator.load_state(str(checkpoint))
    except (pickle.UnpicklingError, RuntimeError, OSError, ValueError, KeyError) as error:
        reason = first_line(error)
        if "weights_only" in reason or isinstance(error, pickle.UnpicklingError):
            reason = "a file holds objects other than tensors and plain values (refused, never unpickled)"
        raise UsageError(f"--resume_from_checkpoint {checkpoint}: cannot be loaded safely: {reason}") from error
    scheduler.load_state_dict(state.pop("scheduler"))
    return state


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
def train(model_args: ModelArguments, data_args: DataArguments, train_args: TrainArguments) -> dict:
    """Train with checked arguments, top to bottom: the output folder and the resume point, the Accelerator, data,
    model and processor, the loaders, optimizer and schedule, the resumed state, then per epoch the training loop,
    validation, the best model and a checkpoint. Returns the final counters (epoch, steps, best accuracy). A bad
    input is a :class:`~clipvg_hf.errors.UsageError`, raised before the first step."""
    output_dir = Path(train_args.output_dir)
    prepare_output_dir(train_args)
    checkpoint = None
    settings = resume_settings(train_args)  # as given (--train_steps overrides num_epochs later)
    if train_args.resume_from_checkpoint:  # resolved before any work, so a bad one fails at once
        checkpoint = resolve_checkpoint(train_args.resume_from_checkpoint, output_dir)
        if checkpoint is not None:
            check_resume_settings(checkpoint, train_args)
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

    # data (checked first: cheap), model, processor
    if data_args.dataset_config is None:  # a Hub REC layout, read as the project's rows (rejected rows reported)
        from clipvg_hf.data.hub_layouts import open_split

        train_split = data_args.train_split or "train"
        opened = [
            open_split(data_args.dataset, None, s, image_root=data_args.image_root)
            for s in (train_split, data_args.val_split)
        ]
        for line in (line for one in opened for line in one.lines):
            accelerator.print(line)
        raw_train, raw_val = (one.data for one in opened)
    else:
        train_split = data_args.train_split or train_split_of(data_args.dataset_config)
        raw_train = load_split_checked(data_args.dataset, data_args.dataset_config, train_split, load_split)
        raw_val = load_split_checked(data_args.dataset, data_args.dataset_config, data_args.val_split, load_split)
    if data_args.curriculum_scores:
        check_curriculum_scores(data_args, train_split, raw_train)
    try:
        model = build_model(model_args)
    except UsageError:
        raise
    except (OSError, ValueError) as error:  # not a model folder, unreachable Hub id, invalid config values
        reason = first_line(error)
        name = model_args.model_name_or_path
        raise UsageError(f"--model_name_or_path {name}: cannot load a model: {reason}") from error
    processor = load_processor(model_args.model_name_or_path, model.config.image_size)
    transform = CLIPVGTrainTransform(
        size=model.config.image_size,
        aug_scale=data_args.aug_scale,
        aug_crop=data_args.aug_crop,
        aug_color=data_args.aug_color,
        aug_translate=data_args.aug_translate,
        draft_decode=data_args.fast_augment,
        fused_crop_resize=data_args.fast_augment,
    )
    # HiVG's alignment and segmentation losses take the ground-truth box mask made at the original resolution
    base_train_set = GroundingDataset(
        raw_train,
        transform,
        seed=train_args.seed,
        sources=data_args.sources,
        image_root=data_args.image_root,
        object_masks=family_of_model(model).object_masks,
    )
    train_set = base_train_set
    if data_args.train_row_indices:
        train_set = torch.utils.data.Subset(train_set, positions_of_rows(base_train_set, data_args.train_row_indices))
    if data_args.max_train_samples is not None:
        train_set = torch.utils.data.Subset(train_set, range(min(data_args.max_train_samples, len(train_set))))
    order = {"shuffle": True, "generator": torch.Generator().manual_seed(train_args.seed)}
    if data_args.group_by_image:  # every rank builds the same order; accelerate shards its batches
        order = {"sampler": ImageGroupedSampler(image_ids(train_set), data_args.group_by_image, train_args.seed)}
    if data_args.curriculum_scores:  # likewise: one global order per (seed, epoch), sharded by accelerate
        order = {"sampler": build_curriculum_sampler(data_args, row_indices(train_set), train_args.seed)}
    # with grouped runs and a transform that gives every expression of an image the same pixels, a batch holds
    # each image once and the model encodes it once for all its expressions (same loss and gradients)
    share_images = bool(data_args.group_by_image) and transform.deterministic
    collator = CLIPVGCollator(
        processor.tokenizer, return_row_index=train_args.log_sample_order, group_images=share_images
    )
    train_loader = DataLoader(
        train_set,
        batch_size=train_args.per_device_batch_size,
        drop_last=True,
        num_workers=data_args.num_workers,
        collate_fn=collator,
        **order,
    )

    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = build_optimizer(trainable, train_args)
    model, optimizer, train_loader = accelerator.prepare(model, optimizer, train_loader)
    steps_per_epoch = math.ceil(len(train_loader) / train_args.gradient_accumulation_steps)
    if steps_per_epoch == 0:
        raise UsageError(
            f"{len(train_set)} training samples do not fill one batch of "
            f"{train_args.per_device_batch_size} x {accelerator.num_processes} processes"
        )
    if train_args.train_steps is not None:
        train_args.num_epochs = math.ceil(train_args.train_steps / steps_per_epoch)
    scheduler = build_scheduler(optimizer, train_args, steps_per_epoch)
    # not prepared (stepped exactly once per epoch / step) and not registered: its state goes to trainer_state.json
    val_loader = eval_loader(
        raw_val, processor, accelerator, batch_size=train_args.eval_batch_size, image_root=data_args.image_root
    )  # prepared once, before any state is loaded

    n_trainable = sum(p.numel() for p in trainable)
    if train_args.with_tracking:
        accelerator.init_trackers("clipvg", config={**asdict(model_args), **asdict(data_args), **asdict(train_args)})
    accelerator.print(
        f"{len(train_set)} training expressions, {len(raw_val)} validation images, "
        f"{n_trainable:,} trainable parameters, {accelerator.num_processes} process(es)"
    )
    if data_args.group_by_image or data_args.fast_augment:
        accelerator.print(
            f"opt-in data shortcuts: group_by_image={data_args.group_by_image}, fast_augment={data_args.fast_augment}"
            + (", each image encoded once per batch (no random augmentation)" if share_images else "")
        )
    if data_args.curriculum_scores:
        accelerator.print(
            f"curriculum: {data_args.curriculum_pool} pool from {data_args.curriculum_scores}, "
            f"{len(order['sampler'])} samples per epoch"
        )

    # resume
    state = {"epoch": 0, "step_in_epoch": 0, "global_step": 0, "micro_step": 0, "best_accuracy": -1.0}
    if checkpoint is not None:
        state = load_training_state(accelerator, checkpoint, scheduler)
        accelerator.print(f"resumed from {checkpoint}: epoch {state['epoch']}, step {state['step_in_epoch']}")
    elif train_args.resume_from_checkpoint:
        accelerator.print(
            f"--resume_from_checkpoint latest: no checkpoint in {output_dir / 'checkpoints'} yet; starting a new run"
        )
    state["settings"] = settings  # checkpointed with the counters: a resume must not change them

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
        seen: list[int] = []
        for batch in progress:
            if train_args.log_sample_order:
                seen += batch.pop("row_index").tolist()
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
                    save_checkpoint(
                        accelerator,
                        output_dir,
                        f"step_{state['global_step']}",
                        dict(state, epoch=epoch, scheduler=scheduler.state_dict()),
                        train_args.keep_checkpoints,
                    )
        lr = scheduler.get_last_lr()[0]
        if train_args.scheduler_step == "epoch":
            scheduler.step()
        if train_args.log_sample_order:
            log_sample_order(output_dir, accelerator.process_index, epoch, skip, seen)

        val = evaluate(accelerator.unwrap_model(model), val_loader, accelerator, desc=f"val {epoch}").compute()
        record = {
            "epoch": epoch,
            "train_lr": lr,
            **{f"train_{k}": v / max(n_batches, 1) for k, v in totals.items()},
            "validation_accuracy": val["accuracy"],
            "validation_miou": val["mean_iou"],
            "epoch_seconds": time.time() - started,
            "global_step": state["global_step"],
            "n_parameters": n_trainable,
        }
        improved = val["accuracy"] > state["best_accuracy"]
        state.update(epoch=epoch + 1, step_in_epoch=0, best_accuracy=max(val["accuracy"], state["best_accuracy"]))
        if improved:
            save_best(accelerator, model, processor, output_dir, {**val, "epoch": epoch, "split": data_args.val_split})
        save_checkpoint(
            accelerator,
            output_dir,
            f"epoch_{epoch}",
            dict(state, scheduler=scheduler.state_dict()),
            train_args.keep_checkpoints,
        )
        if accelerator.is_main_process:
            with open(log_path, "a") as handle:
                handle.write(json.dumps(record) + "\n")
        accelerator.log(record, step=state["global_step"])
        accelerator.print(json.dumps(record))

    accelerator.end_training()
    return state
