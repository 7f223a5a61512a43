"""Train a tuned lens on a text: minimise KL(p_final || p_row) for every lens row at once.

As in tuned-lens (Belrose et al. 2023): the model is frozen; each step runs it on a batch
of token sequences, takes its own final distribution ``p_final`` at every position and,
for every lens row but the last, the distribution read through that row's translator,
final norm and unembedding; the loss of each row is the mean KL over positions, and the
rows' losses are summed (their translators are independent, so each learns from its own).
Gradients are clipped to norm 1 and the learning rate decays linearly to zero. The
optimizer is Adam (AMSGrad, 20% warm-up) by default, SGD with Nesterov momentum (tuned-lens's
default) on request: at a CPU-sized budget Adam ended lower at every row (docs/lenses.md).

Training is resumable: the data order is a function of the seed and the step, so a
checkpoint holds only the step, the translators and the optimizer state.
"""

from __future__ import annotations

import hashlib
import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import nn

from .capture import ResidualCapture
from ..errors import EntropyLensError
from .logit import LogitLens
from ..models.loading import context_length
from .tuned import SAVE_DTYPES, ModelFingerprint, TunedLens

__all__ = ["TextSource", "TrainSettings", "checkpoint_path", "evaluate_kl", "kl_table", "read_text", "sequences_of",
           "split_data", "train_lens"]

#: Default learning rates: tuned-lens's (SGD: 1.0 x (1 - momentum), undoing torch's 1 / (1 - momentum) gain).
DEFAULT_LR = {"sgd": 0.1, "adam": 1e-3}
CHECKPOINT_FORMAT = "entropylens-tuned-lens-checkpoint"


@dataclass(frozen=True)
class TrainSettings:
    """How a tuned lens is trained; everything a checkpoint must agree with to resume."""

    steps: int = 100
    seq_len: int = 128
    batch_size: int = 8
    lr: float | None = None  # None: DEFAULT_LR of the optimizer
    optimizer: str = "adam"
    seed: int = 0
    held_out: float = 0.1  # fraction of the text's sequences (its end) kept for evaluation
    eval_tokens: int = 16384
    checkpoint_every: int = 25
    momentum: float = 0.9
    weight_decay: float = 1e-3

    def check(self) -> None:
        """One-line errors for values no training can use (checked before the model loads)."""
        for name in ("steps", "batch_size", "eval_tokens", "checkpoint_every"):
            if getattr(self, name) < 1:
                raise EntropyLensError(f"--{name.replace('_', '-')} {getattr(self, name)}: must be at least 1")
        if self.seq_len < 2:
            raise EntropyLensError(f"--seq-len {self.seq_len}: must be at least 2 tokens")
        if self.lr is not None and not (self.lr > 0 and math.isfinite(self.lr)):
            raise EntropyLensError(f"--lr {self.lr}: must be a positive number")
        if self.optimizer not in DEFAULT_LR:
            raise EntropyLensError(f"--optimizer {self.optimizer}: choose one of {', '.join(DEFAULT_LR)}")
        if not 0 < self.held_out < 1:
            raise EntropyLensError(f"--held-out {self.held_out}: must be a fraction between 0 and 1, e.g. 0.1")

    @property
    def learning_rate(self) -> float:
        return self.lr if self.lr is not None else DEFAULT_LR[self.optimizer]

    def lr_at(self, step: int) -> float:
        """Linear decay to zero; Adam warms up over the first 20% of the steps (as tuned-lens)."""
        warmup = self.steps // 5 if self.optimizer == "adam" else 0
        if step < warmup:
            return self.learning_rate * (step + 1) / warmup
        return self.learning_rate * max(0.0, 1 - (step - warmup) / max(1, self.steps - warmup))


# ---------------------------------------------------------------------- text


def read_text(path: str | os.PathLike, option: str = "--text") -> str:
    """The text of a UTF-8 file, refused in one line when missing, unreadable or empty."""
    path = Path(path)
    if not path.is_file():
        raise EntropyLensError(f"{option} {path}: no such file")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise EntropyLensError(f"{option} {path}: not UTF-8 text") from None
    except OSError as exc:
        raise EntropyLensError(f"{option} {path}: cannot read it ({exc.strerror})") from None
    if not text.strip():
        raise EntropyLensError(f"{option} {path}: the file is empty; give text in the model's language")
    return text


def sequences_of(tokenizer: Any, text: str, seq_len: int) -> torch.Tensor:
    """The text as one token stream cut into ``[n, seq_len]`` sequences (the tail that does not fill one is dropped).

    Tokenized in pieces of about 64 kB cut after a newline, so a long file never becomes one
    huge tokenizer call; byte-level tokenizers split at whitespace anyway.
    """
    pieces, start = [], 0
    while start < len(text):
        stop = text.find("\n", start + 65536)
        stop = len(text) if stop < 0 else stop + 1
        pieces.append(text[start:stop])
        start = stop
    ids = [i for encoded in tokenizer(pieces, add_special_tokens=False, verbose=False)["input_ids"] for i in encoded]
    n = len(ids) // seq_len
    return torch.tensor(ids[: n * seq_len], dtype=torch.long).view(n, seq_len)


# ---------------------------------------------------------------------- the objective


@dataclass(frozen=True)
class _Target:
    """The model's own final distribution at N positions: ``p`` ``[N, V]`` and ``sum p log p`` ``[N]``."""

    p: torch.Tensor
    neg_entropy: torch.Tensor

    def kl(self, logits_q: torch.Tensor) -> torch.Tensor:
        """KL(p || softmax(logits_q)) per position, nats.

        Written as ``sum p log p - (sum p z - logsumexp z)`` (``sum p = 1``): one pass over
        the vocabulary fewer than through ``log_softmax``, which matters at every row of every step.
        """
        return self.neg_entropy - ((self.p * logits_q).sum(-1) - torch.logsumexp(logits_q, dim=-1))


def _rows_and_final(model: nn.Module, lens: LogitLens, input_ids: torch.Tensor) -> tuple[list[torch.Tensor], _Target]:
    """Residuals of the lens rows but the last (each ``[B * T, d]``) and the model's final distribution."""
    with torch.no_grad(), ResidualCapture(lens.layers) as capture:
        logits = model(input_ids=input_ids.to(lens.device), use_cache=False).logits
        log_p = torch.log_softmax(logits.float().reshape(-1, logits.shape[-1]), dim=-1)
        p = log_p.exp()
        target = _Target(p, (p * log_p).sum(-1))
    rows = [r.reshape(-1, r.shape[-1]) for r in capture.residuals[:-1]]
    return rows, target


@torch.no_grad()
def evaluate_kl(
    model: nn.Module, tuned: TunedLens, sequences: torch.Tensor, *, batch_size: int = 8,
    lens: LogitLens | None = None,
) -> dict[str, Any]:
    """Mean KL to the final distribution per lens row, logit lens vs ``tuned``, over every position of ``sequences``.

    Returns ``{"tokens": n, "logit": [...], "tuned": [...]}`` with one value per lens row but
    the last (whose distribution is the model's own: KL 0 for both).
    """
    lens = lens if lens is not None else LogitLens.from_model(model)
    sums = np.zeros((2, tuned.num_rows - 1))
    count = 0
    for start in range(0, len(sequences), batch_size):
        rows, target = _rows_and_final(model, lens, sequences[start : start + batch_size])
        for i, h in enumerate(rows):
            sums[0, i] += float(target.kl(lens.logits(h)).sum())
            sums[1, i] += float(target.kl(lens.logits(tuned.translate_row(h, i))).sum())
        count += h.shape[0]
    means = sums / max(1, count)
    return {"tokens": count, "logit": means[0].tolist(), "tuned": means[1].tolist()}


# ---------------------------------------------------------------------- training


def _epoch_order(n: int, seed: int, epoch: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(n, generator=generator)


def batch_indices(n: int, batch_size: int, seed: int, step: int) -> torch.Tensor:
    """The training sequences of ``step``: a seeded permutation per epoch, so any step can be replayed."""
    positions = torch.arange(step * batch_size, (step + 1) * batch_size)
    epochs, offsets = positions // n, positions % n
    orders = {int(e): _epoch_order(n, seed, int(e)) for e in epochs.unique()}
    return torch.stack([orders[int(e)][int(o)] for e, o in zip(epochs, offsets)])


def _make_optimizer(params: list[nn.Parameter], settings: TrainSettings) -> torch.optim.Optimizer:
    if settings.optimizer == "sgd":  # tuned-lens's default; Nesterov momentum speeds convergence
        return torch.optim.SGD(params, lr=settings.learning_rate, momentum=settings.momentum, nesterov=True,
                               weight_decay=settings.weight_decay)
    return torch.optim.Adam(params, lr=settings.learning_rate, betas=(settings.momentum, 0.999), amsgrad=True,
                            weight_decay=settings.weight_decay)


class _FrozenModel:
    """The model's parameters without gradients for the block (the lens's unembedding is shared with it)."""

    def __init__(self, model: nn.Module):
        self.params = [p for p in model.parameters() if p.requires_grad]

    def __enter__(self) -> None:
        for p in self.params:
            p.requires_grad_(False)

    def __exit__(self, *exc: object) -> None:
        for p in self.params:
            p.requires_grad_(True)


@dataclass(frozen=True)
class TextSource:
    """A text to train or evaluate on: its name (shown and stored) and content."""

    name: str
    text: str
    sha256: str

    @classmethod
    def read(cls, path: str | os.PathLike, option: str = "--text") -> "TextSource":
        text = read_text(path, option)
        return cls(Path(path).name, text, hashlib.sha256(text.encode("utf-8")).hexdigest())


def split_data(
    tokenizer: Any, train: TextSource, held_out: TextSource | None, settings: TrainSettings
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(training sequences, evaluation sequences)``: ``held_out``'s, or the last fraction of ``train``'s."""
    sequences = sequences_of(tokenizer, train.text, settings.seq_len)
    if held_out is not None:
        evaluation = sequences_of(tokenizer, held_out.text, settings.seq_len)
        if len(evaluation) == 0:
            raise EntropyLensError(f"--eval-text {held_out.name}: shorter than one sequence of --seq-len "
                                   f"{settings.seq_len} tokens; give more text or a smaller --seq-len")
    else:
        n_eval = max(1, round(len(sequences) * settings.held_out))
        sequences, evaluation = sequences[:-n_eval], sequences[len(sequences) - n_eval :]
    if len(sequences) == 0:
        raise EntropyLensError(
            f"--text {train.name}: too short: it must give at least "
            f"{1 if held_out is not None else 2} sequence(s) of --seq-len {settings.seq_len} tokens "
            f"({'to train' if held_out is not None else 'one to train, one held out'}); give more text or a smaller --seq-len"
        )
    return sequences, evaluation[: math.ceil(settings.eval_tokens / settings.seq_len)]


def _checkpoint_key(settings: TrainSettings, fingerprint: ModelFingerprint, train: TextSource,
                    held_out: TextSource | None) -> dict[str, Any]:
    """What a checkpoint must agree with to be resumed: everything that changes the training's course."""
    key = {k: v for k, v in asdict(settings).items() if k not in ("checkpoint_every", "eval_tokens")}
    key.update(lr=settings.learning_rate, model=asdict(fingerprint), text_sha256=train.sha256,
               eval_text_sha256=held_out.sha256 if held_out is not None else "")
    return key


def _save_checkpoint(path: Path, key: dict, step: int, tuned: TunedLens, optimizer: torch.optim.Optimizer,
                     losses: list[float]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save({"format": CHECKPOINT_FORMAT, "key": key, "step": step, "lens": tuned.state_dict(),
                "optimizer": optimizer.state_dict(), "losses": losses}, tmp)
    os.replace(tmp, path)  # a Ctrl-C while writing leaves the previous checkpoint whole


def _load_checkpoint(path: Path, key: dict) -> dict[str, Any]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many kinds for a damaged file
        raise EntropyLensError(f"{path}: an unreadable training checkpoint ({str(exc).splitlines()[0]}); "
                               "delete it to start over") from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise EntropyLensError(f"{path}: not a train-lens checkpoint; move it away or choose another --out")
    if state["key"] != key:
        differs = ", ".join(f"{k} {state['key'].get(k)!r} there, {v!r} now" for k, v in key.items()
                            if state["key"].get(k) != v)
        raise EntropyLensError(f"{path}: a checkpoint of another training ({differs}); rerun with the same "
                               "settings to resume it, or delete it to start over")
    return state


def checkpoint_path(out: Path) -> Path:
    """Where ``train-lens --out OUT`` keeps its checkpoint: next to the lens, ``OUT.ckpt``."""
    return out.with_name(out.name + ".ckpt")


def train_lens(
    model: nn.Module,
    tokenizer: Any,
    train: TextSource,
    out: str | os.PathLike,
    *,
    held_out: TextSource | None = None,
    settings: TrainSettings = TrainSettings(),
    model_name: str = "",
    save_dtype: str = "float16",
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> TunedLens:
    """Train a tuned lens for ``model`` on ``train``, evaluate it on held-out text, write it to ``out``.

    A checkpoint (:func:`checkpoint_path`) is written every ``settings.checkpoint_every``
    steps and on Ctrl-C; calling again with the same arguments resumes from it. It is
    deleted once the lens is written. The lens's ``evaluation`` holds the held-out mean KL
    per row of the logit lens and of the tuned lens, measured with the weights as saved.
    """
    from tqdm.auto import tqdm

    settings.check()
    out = Path(out)
    ckpt = checkpoint_path(out)
    lens = LogitLens.from_model(model)
    context = context_length(model)
    if context is not None and settings.seq_len > context:
        raise EntropyLensError(f"--seq-len {settings.seq_len}: longer than the model's context of {context} positions")
    sequences, evaluation = split_data(tokenizer, train, held_out, settings)
    tuned = TunedLens.for_model(model, model_name=model_name).to(lens.device)
    optimizer = _make_optimizer(list(tuned.parameters()), settings)
    key = _checkpoint_key(settings, tuned.fingerprint, train, held_out)
    step, losses = _resume(ckpt, key, tuned, optimizer, settings, log)
    started = time.perf_counter()
    model.eval()
    bar = tqdm(total=settings.steps, initial=step, desc="train-lens", unit="step", disable=not progress,
               dynamic_ncols=True)
    try:
        with _FrozenModel(model):
            while step < settings.steps:
                losses.append(_train_step(model, lens, tuned, optimizer, sequences, settings, step))
                step += 1
                bar.update(1)
                bar.set_postfix(kl=f"{losses[-1]:.3f}")
                if step % settings.checkpoint_every == 0 or step == settings.steps:
                    _save_checkpoint(ckpt, key, step, tuned, optimizer, losses)
    except KeyboardInterrupt:
        if step > 0:
            _save_checkpoint(ckpt, key, step, tuned, optimizer, losses)  # the last finished step
        raise
    finally:
        bar.close()
    _evaluate_and_save(model, lens, tuned, evaluation, out, train=train, held_out=held_out, settings=settings,
                       train_sequences=len(sequences), losses=losses, trained_s=time.perf_counter() - started,
                       save_dtype=save_dtype)
    ckpt.unlink(missing_ok=True)
    return tuned


def _resume(ckpt: Path, key: dict[str, Any], tuned: TunedLens, optimizer: torch.optim.Optimizer,
            settings: TrainSettings, log: Callable[[str], None]) -> tuple[int, list[float]]:
    """The step and losses to go on from: the checkpoint's, loaded into ``tuned`` and ``optimizer``, else a fresh start."""
    if not ckpt.exists():
        return 0, []
    state = _load_checkpoint(ckpt, key)
    tuned.load_state_dict(state["lens"])
    optimizer.load_state_dict(state["optimizer"])
    log(f"resuming from {ckpt} at step {int(state['step'])} of {settings.steps}")
    return int(state["step"]), list(state["losses"])


def _train_step(model: nn.Module, lens: LogitLens, tuned: TunedLens, optimizer: torch.optim.Optimizer,
                sequences: torch.Tensor, settings: TrainSettings, step: int) -> float:
    """One optimizer step on the batch of ``step``; returns the mean KL over lens rows."""
    for group in optimizer.param_groups:
        group["lr"] = settings.lr_at(step)
    optimizer.zero_grad(set_to_none=True)
    batch = sequences[batch_indices(len(sequences), settings.batch_size, settings.seed, step)]
    rows, target = _rows_and_final(model, lens, batch)
    total = 0.0
    for i, h in enumerate(rows):  # one backward per row keeps one row's logits alive at a time
        loss = target.kl(lens.logits(tuned.translate_row(h, i))).mean()
        loss.backward()
        total += float(loss.detach())
    nn.utils.clip_grad_norm_(tuned.parameters(), 1.0)
    optimizer.step()
    return total / len(rows)


def _evaluate_and_save(model: nn.Module, lens: LogitLens, tuned: TunedLens, evaluation: torch.Tensor, out: Path, *,
                       train: TextSource, held_out: TextSource | None, settings: TrainSettings, train_sequences: int,
                       losses: list[float], trained_s: float, save_dtype: str) -> None:
    """Evaluate the weights as they will be stored, record how they were trained, write the lens file."""
    # Evaluate the weights as they will be stored.
    tuned.load_state_dict({k: v.to(SAVE_DTYPES[save_dtype]).float() for k, v in tuned.state_dict().items()})
    tuned.eval()
    result = evaluate_kl(model, tuned, evaluation, batch_size=settings.batch_size, lens=lens)
    tuned.training_settings = {
        **asdict(settings), "lr": settings.learning_rate, "text": train.name, "text_sha256": train.sha256,
        "eval_text": held_out.name if held_out is not None else "", "train_sequences": train_sequences,
        "tokens_seen": settings.steps * settings.batch_size * settings.seq_len,
        "final_train_kl_mean_last_20": float(np.mean(losses[-20:])) if losses else None,
        "train_seconds_this_run": round(trained_s, 1), "save_dtype": save_dtype, "torch": torch.__version__,
    }
    tuned.evaluation = {**result, "held_out": "eval text" if held_out is not None else f"last {settings.held_out:.0%} of the text"}
    tuned.save(out, dtype=save_dtype)


def kl_table(evaluation: dict[str, Any], row_names: Sequence[str]) -> str:
    """The held-out evaluation as a table: mean KL to the final layer per lens row, logit vs tuned lens."""
    lines = [f"held-out mean KL to the final layer (nats) over {evaluation['tokens']} tokens",
             f"  {'row':<12} {'logit lens':>10} {'tuned lens':>10}"]
    for name, logit, tuned in zip(row_names, evaluation["logit"], evaluation["tuned"]):
        lines.append(f"  {name:<12} {logit:>10.4f} {tuned:>10.4f}")
    lines.append(f"  {row_names[-1]:<12} {0:>10.4f} {0:>10.4f}  (the model's own distribution)")
    lines.append(f"  {'mean':<12} {np.mean(evaluation['logit']):>10.4f} {np.mean(evaluation['tuned']):>10.4f}  "
                 "(over the rows above the last)")
    return "\n".join(lines)
