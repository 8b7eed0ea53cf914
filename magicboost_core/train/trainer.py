"""Training loop of the small multi-view model (official schedule and frame layout).

One training example = one object: frame 0 is a random target view, noised to a random timestep t
of the official schedule; frames 1..A are the A Instant3D anchor views, passed as clean latents at
t = 0 (reference §2.2). The loss is the MSE between the UNet's output on frame 0 and what it should
predict, per the UNet config's ``prediction_type`` (:mod:`~magicboost_core.model.prediction`): the noise
("epsilon", official), ``v = sqrt(ᾱ_t) ε − sqrt(1 − ᾱ_t) x0`` ("v_prediction") or x0 ("sample"); a
per-timestep weight makes it the v-space loss (default) or the eps-space loss whatever the output.

Conditioning per sample (reference §2):

* camera codes from :func:`~magicboost_core.geometry.camera_vector.camera_vectors` (target domain
  (1, 0), anchors (0, 1), azimuth relative to anchor 0, radius 0);
* image tokens from the parameter-free patch encoder applied to the clean anchor 0 view (the IP path
  gets the reference view for every frame, as in refinement);
* text: zeros (the demo model has no text encoder);
* augmentations of side anchors with their condition-strength labels (:mod:`.augment`);
* classifier-free dropout: with probability ``cfg_dropout`` the sample is trained unconditionally,
  exactly like the official unconditional branch: zero anchor latents, zero image features (through
  the resampler), zero labels, same camera.

Randomness of step ``s`` comes from a generator seeded with ``(seed, s)``, so a resumed run repeats
an uninterrupted run exactly. Checkpoints (``checkpoint.pt`` in the output folder) hold the UNet,
its EMA copy, the optimizer and the step. The shipped weights are the EMA weights.
"""
from __future__ import annotations

import copy
import json
import logging
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from ..geometry.camera_vector import camera_vectors
from ..geometry.presets import get_preset
from ..model.bundle import build_demo_model, default_demo_unet_config
from ..model.config import MultiViewUNetConfig
from ..model.prediction import loss_weights_to_match, training_target
from ..model.schedule import alphas_cumprod
from ..validate import readable_error
from .augment import AugmentConfig, augment_conditions, cfg_dropout_mask
from .dataset import DataConfig, MultiViewData

__all__ = ["TrainConfig", "Trainer", "CheckpointError", "read_checkpoint", "checkpoint_unet_config", "condition_batch",
           "export_checkpoint", "model_from_checkpoint"]

log = logging.getLogger(__name__)


@dataclass
class TrainConfig:
    """Everything one training run needs (saved inside checkpoints and the model card)."""

    steps: int = 1500
    batch_size: int = 8
    lr: float = 1.5e-3
    min_lr_ratio: float = 0.1
    warmup_steps: int = 50
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    ema_decay: float = 0.995
    cfg_dropout: float = 0.1
    loss_weighting: str = "v"  # loss measured as "v": ||v_hat - v||^2, or "eps": ||eps_hat - eps||^2 (normalised)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    data: DataConfig = field(default_factory=DataConfig)
    unet: dict = field(default_factory=dict)  # overrides of the demo architecture (model.bundle.DEMO_UNET)
    seed: int = 0
    init_from: str = ""   # model folder whose UNet weights start the run (same architecture), "" = random
    checkpoint_every: int = 250
    device: str = "auto"  # "auto" = CUDA when present, else CPU
    bf16: bool = True     # bf16 autocast, CUDA only

    def __post_init__(self):
        if isinstance(self.augment, dict):
            self.augment = AugmentConfig(**self.augment)
        if isinstance(self.data, dict):
            d = dict(self.data)
            if isinstance(d.get("procedural"), dict):
                from .procedural import ProceduralConfig

                d["procedural"] = ProceduralConfig(**d["procedural"])
            for k in ("elevation_range",):
                if k in d:
                    d[k] = tuple(d[k])
            self.data = DataConfig(**d)
        if self.steps < 0 or self.batch_size < 1:
            raise ValueError(f"TrainConfig: steps must be >= 0 and batch_size >= 1 (got {self.steps}, {self.batch_size}).")
        if not 0.0 <= self.cfg_dropout < 1.0:
            raise ValueError(f"TrainConfig.cfg_dropout must be in [0, 1), got {self.cfg_dropout}.")
        if self.loss_weighting not in ("v", "eps"):
            raise ValueError(f"TrainConfig.loss_weighting must be 'v' or 'eps', got {self.loss_weighting!r}.")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"TrainConfig.ema_decay must be in [0, 1), got {self.ema_decay}.")

    def resolved_device(self) -> torch.device:
        if self.device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        return torch.device(self.device)

    def to_dict(self) -> dict:
        return json.loads(json.dumps(asdict(self), default=list))


def condition_batch(elevation: torch.Tensor, azimuth: torch.Tensor, preset_name: str = "instant3d") -> torch.Tensor:
    """Camera codes (B, 1 + A, 10) for targets at (elevation, azimuth) (B,) degrees + the preset's anchors."""
    preset = get_preset(preset_name)
    b, a = elevation.shape[0], preset.num_views
    el = torch.cat([elevation.double()[:, None], torch.tensor(preset.elevations, dtype=torch.float64).expand(b, a)], 1)
    az = torch.cat([azimuth.double()[:, None], torch.tensor(preset.azimuths, dtype=torch.float64).expand(b, a)], 1)
    is_t = torch.zeros(b, 1 + a, dtype=torch.bool)
    is_t[:, 0] = True
    ref = (preset.elevations[0], preset.azimuths[0], 0.0)
    cam = camera_vectors(el.reshape(-1), az.reshape(-1), None, is_t.reshape(-1), reference=ref)
    return cam.reshape(b, 1 + a, 10)


@readable_error
class CheckpointError(ValueError):
    """A training checkpoint is unreadable, not one of ours, or carries code/objects (refused)."""


def read_checkpoint(path: str | Path, device="cpu") -> dict:
    """Load a ``checkpoint.pt`` written by :meth:`Trainer.save_checkpoint` **without running code from it**.

    ``torch.load(weights_only=True)`` only rebuilds tensors, numbers, strings, lists, tuples and dicts; a
    pickle that names any other global (``os.system``, a class, ...) is refused before anything runs.
    Returns the state dict with keys ``step, unet, ema, optim, config, history`` (and ``unet_config``); raises
    :class:`CheckpointError` naming the file and the fix otherwise.
    """
    import pickle

    from ..validate import check_regular_file

    path = Path(path)
    check_regular_file(path, "training checkpoint")
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except pickle.UnpicklingError as e:
        first = str(e).splitlines()[0] if str(e) else "UnpicklingError"
        raise CheckpointError(
            f"{path} is not a plain training checkpoint: it refers to code or objects other than tensors and "
            f"numbers, which are refused for safety ({first[:160]}). Delete it and train again without --resume, "
            "or resume from a checkpoint written by 'magicboost train'.") from None
    except (RuntimeError, EOFError, OSError, ValueError) as e:
        raise CheckpointError(f"{path} is not a readable training checkpoint ({type(e).__name__}: "
                              f"{str(e).splitlines()[0] if str(e) else ''}); it may be truncated. Delete it and "
                              "train again without --resume.") from None
    need = ("step", "unet", "ema", "optim", "config")
    if not isinstance(state, dict) or any(k not in state for k in need):
        have = sorted(state) if isinstance(state, dict) else type(state).__name__
        raise CheckpointError(f"{path} is not a 'magicboost train' checkpoint (expected the keys {list(need)}, found "
                              f"{have}); resume from the checkpoint.pt of a training run.")
    return state


class Trainer:
    """Trains ``model.unet`` of a :class:`~magicboost_core.model.MultiViewModel` on ``data``."""

    def __init__(self, config: TrainConfig, data: MultiViewData, out_dir: str | Path, model=None):
        self.config = config
        self.data = data
        self.out_dir = Path(out_dir)
        self.device = config.resolved_device()
        torch.manual_seed(config.seed)
        self.model = model if model is not None else build_demo_model(default_demo_unet_config(**config.unet))
        if config.init_from:
            self._init_weights(config.init_from)
        self.model.to(self.device)
        self.unet = self.model.unet
        self.ema = copy.deepcopy(self.unet).eval().requires_grad_(False)
        decay, no_decay = [], []
        for n, p in self.unet.named_parameters():
            (no_decay if p.ndim <= 1 else decay).append(p)
        self.optim = torch.optim.AdamW(
            [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
            lr=config.lr, betas=(0.9, 0.999),
        )
        self.alphas_cumprod = alphas_cumprod()
        self.prediction_type = self.unet.config.prediction_type
        # "v": ||v_hat - v||^2 = ||eps_hat - eps||^2 / alpha-bar_t. With eps-MSE the high-noise steps, where the
        # layout of the view is decided, carry almost no weight (SD's schedule ends at alpha-bar = 0.0047).
        w = loss_weights_to_match(self.alphas_cumprod, self.prediction_type, config.loss_weighting)
        self.loss_weights = w / w.mean()
        self.step = 0
        self.history: list[dict] = []

    def _init_weights(self, folder: str) -> None:
        """Start from the UNet weights of a saved model (e.g. the shipped eps demo model, to fine-tune it to v)."""
        from ..model import MultiViewModel

        src = MultiViewModel.from_pretrained(folder)
        mine, theirs = self.model.unet.config.to_dict(), src.unet.config.to_dict()
        mine.pop("prediction_type"), theirs.pop("prediction_type")
        if mine != theirs:
            diff = sorted(k for k in mine if mine[k] != theirs.get(k))
            raise ValueError(f"init_from {folder}: its UNet differs from the configured one in {diff}; start from a "
                             "model of the same architecture or train from scratch (no --init-from).")
        self.model.unet.load_state_dict(src.unet.state_dict())

    # ----------------------------------------------------------------- schedule / batch
    def lr_at(self, step: int) -> float:
        c = self.config
        if step < c.warmup_steps:
            return c.lr * (step + 1) / c.warmup_steps
        p = (step - c.warmup_steps) / max(1, c.steps - c.warmup_steps)
        p = min(max(p, 0.0), 1.0)
        return c.lr * (c.min_lr_ratio + (1 - c.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * p)))

    def make_batch(self, step: int) -> dict:
        """The (deterministic) inputs of training step ``step``; tensors on the training device."""
        c = self.config
        g = torch.Generator().manual_seed(c.seed * 1_000_003 + step)
        b = c.batch_size
        obj = torch.randint(0, len(self.data), (b,), generator=g)
        view = torch.randint(0, self.data.targets_per_object, (b,), generator=g)
        raw = self.data.batch(obj, view)
        dev = self.device
        codec, enc = self.model.codec, self.model.image_encoder
        with torch.no_grad():
            x0 = codec.encode(raw["target"].to(dev))
            anchors, a_labels, drop = augment_conditions(
                raw["anchors"].to(dev), codec.encode, self.alphas_cumprod, c.augment, g)
            tokens = enc(raw["anchors"][:, 0].to(dev))
        a = anchors.shape[1]
        labels = torch.cat([torch.zeros(b, 1, 2), a_labels], 1).to(dev)
        camera = condition_batch(raw["elevation"], raw["azimuth"], c.data.preset).to(dev)
        uncond = cfg_dropout_mask(b, c.cfg_dropout, g).to(dev)
        keep = (~uncond).float()
        anchors = anchors * keep.view(b, 1, 1, 1, 1)
        tokens = tokens * keep.view(b, 1, 1)
        labels = labels * keep.view(b, 1, 1)
        if drop is not None:
            drop = (drop.to(dev) * keep.view(b, 1))
        t = torch.randint(0, len(self.alphas_cumprod), (b,), generator=g)
        eps = torch.randn(x0.shape, generator=g).to(dev)
        ab = self.alphas_cumprod[t].float().to(dev).view(b, 1, 1, 1)
        xt = ab.sqrt() * x0 + (1 - ab).sqrt() * eps
        text = self._text(b)
        weight = self.loss_weights[t].float().to(dev)
        target = training_target(x0, eps, self.alphas_cumprod[t], self.prediction_type)
        return dict(sample=xt, timestep=t.to(dev), anchors=anchors, text=text, image_tokens=tokens,
                    camera=camera, labels=labels, drop_mask=drop, eps=eps, target=target, weight=weight)

    def _text(self, b: int) -> torch.Tensor:
        """(B, L, D) text embeddings: the model's fixed prompt embedding (zeros for the demo model)."""
        return self.model.text_cond.to(self.device).unsqueeze(0).expand(b, -1, -1)

    def loss_on(self, batch: dict, unet=None) -> torch.Tensor:
        unet = unet if unet is not None else self.unet
        use_bf16 = self.config.bf16 and self.device.type == "cuda"
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=use_bf16):
            pred = unet(batch["sample"], batch["timestep"], batch["anchors"], batch["text"], batch["image_tokens"],
                        batch["camera"], batch["labels"], drop_mask=batch["drop_mask"])
        per_sample = (pred.float() - batch["target"]).pow(2).flatten(1).mean(1)
        return (per_sample * batch["weight"]).mean()

    # ----------------------------------------------------------------- optimisation
    @torch.no_grad()
    def _update_ema(self):
        d = min(self.config.ema_decay, (1 + self.step) / (10 + self.step))
        for pe, p in zip(self.ema.parameters(), self.unet.parameters()):
            pe.lerp_(p.detach(), 1 - d)
        for be, b in zip(self.ema.buffers(), self.unet.buffers()):
            be.copy_(b)

    def train_step(self) -> float:
        """One optimisation step (step number ``self.step``); returns the loss."""
        self.unet.train()
        for grp in self.optim.param_groups:
            grp["lr"] = self.lr_at(self.step)
        batch = self.make_batch(self.step)
        loss = self.loss_on(batch)
        self.optim.zero_grad(set_to_none=True)
        loss.backward()
        if self.config.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.unet.parameters(), self.config.grad_clip)
        self.optim.step()
        self.step += 1
        self._update_ema()
        return float(loss.detach())

    # ----------------------------------------------------------------- checkpoints
    @property
    def checkpoint_path(self) -> Path:
        return self.out_dir / "checkpoint.pt"

    def save_checkpoint(self) -> Path:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        state = {"step": self.step, "unet": self.unet.state_dict(), "ema": self.ema.state_dict(),
                 "optim": self.optim.state_dict(), "config": self.config.to_dict(), "history": self.history,
                 "unet_config": self.unet.config.to_dict()}
        tmp = self.checkpoint_path.with_suffix(".tmp")
        torch.save(state, tmp)
        tmp.replace(self.checkpoint_path)
        return self.checkpoint_path

    def load_checkpoint(self) -> int:
        if not self.checkpoint_path.exists():
            raise FileNotFoundError(f"No checkpoint to resume at {self.checkpoint_path}; run without --resume first.")
        state = read_checkpoint(self.checkpoint_path, self.device)
        saved = checkpoint_unet_config(state).prediction_type
        if saved != self.prediction_type:
            raise ValueError(f"{self.checkpoint_path} was trained with prediction_type {saved!r}, this run is "
                             f"configured for {self.prediction_type!r}; resume with --prediction-type {saved}.")
        self.unet.load_state_dict(state["unet"])
        self.ema.load_state_dict(state["ema"])
        self.optim.load_state_dict(state["optim"])
        self.step = int(state["step"])
        self.history = list(state.get("history", []))
        return self.step

    def fit(self, resume: bool = False, progress: bool = True, max_seconds: float | None = None) -> dict:
        """Train up to ``config.steps`` (or until ``max_seconds`` of wall time); returns a summary."""
        from tqdm.auto import tqdm

        if resume:
            self.load_checkpoint()
        c = self.config
        t0 = time.time()
        bar = tqdm(total=c.steps, initial=self.step, desc="train", disable=not progress, dynamic_ncols=True)
        window: list[float] = []
        while self.step < c.steps:
            loss = self.train_step()
            window.append(loss)
            bar.update(1)
            if self.step % 10 == 0 or self.step == c.steps:
                avg = sum(window) / len(window)
                bar.set_postfix(loss=f"{avg:.4f}", lr=f"{self.lr_at(self.step - 1):.2e}")
                self.history.append({"step": self.step, "loss": avg, "time": time.time() - t0})
                window = []
            if c.checkpoint_every and self.step % c.checkpoint_every == 0:
                self.save_checkpoint()
            if max_seconds is not None and time.time() - t0 > max_seconds:
                log.info("time budget reached at step %d", self.step)
                break
        bar.close()
        if window:  # stopped by the time budget between two log points
            self.history.append({"step": self.step, "loss": sum(window) / len(window), "time": time.time() - t0})
        self.save_checkpoint()
        return {"steps": self.step, "seconds": time.time() - t0,
                "final_loss": self.history[-1]["loss"] if self.history else float("nan")}

    def export(self, out_dir: str | Path, use_ema: bool = True, overwrite: bool = False) -> Path:
        """Save the (EMA) model with ``MultiViewModel.save_pretrained``; returns the folder. A folder that
        already holds files is refused unless ``overwrite``."""
        export = copy.deepcopy(self.model).cpu()
        if use_ema:
            export.unet.load_state_dict(self.ema.state_dict())
        export.save_pretrained(str(out_dir), overwrite=overwrite)
        return Path(out_dir)


def checkpoint_unet_config(state: dict):
    """The UNet config a checkpoint (:func:`read_checkpoint`'s dict) was trained with.

    Checkpoints record it whole (``unet_config``); older ones hold only the run's overrides of
    :data:`~magicboost_core.model.bundle.DEMO_UNET`, written when the demo architecture was an eps model, so
    a missing ``prediction_type`` there means ``"epsilon"``.
    """
    if "unet_config" in state:
        return MultiViewUNetConfig.from_dict(state["unet_config"])
    overrides = TrainConfig(**state["config"]).unet
    return default_demo_unet_config(**{"prediction_type": "epsilon", **overrides})


def model_from_checkpoint(checkpoint: str | Path, use_ema: bool = True):
    """``(model, step)``: the demo model of a training ``checkpoint.pt`` with its EMA (or raw) weights, on the CPU."""
    path = Path(checkpoint)
    if not path.is_file():
        raise FileNotFoundError(f"No training checkpoint at {path}.")
    state = read_checkpoint(path, "cpu")
    model = build_demo_model(checkpoint_unet_config(state))
    model.unet.load_state_dict(state["ema" if use_ema else "unet"])
    return model.eval(), int(state["step"])


def export_checkpoint(checkpoint: str | Path, out_dir: str | Path, use_ema: bool = True, notes: str = "",
                      dtype: torch.dtype | None = None) -> tuple[Path, int]:
    """Rebuild the model of a training ``checkpoint.pt`` and save its (EMA) weights with ``save_pretrained``
    (``dtype``: store the floating-point weights in that type, e.g. float16; None = as trained).
    Returns (the model folder, the checkpoint's step)."""
    model, step = model_from_checkpoint(checkpoint, use_ema)
    if notes:
        model.info.notes = notes
    model.save_pretrained(str(out_dir), dtype=dtype)  # refuses a folder that already holds files
    return Path(out_dir), step
