"""VGG16 perceptual distance and the band filter for generated positives.

Features: torchvision's VGG16 ``features`` (architecture ``cfgs["D"]``, identical to
``torchvision.models.vgg16().features``) up to ``relu4_3``; activations after ``relu1_2``,
``relu2_2``, ``relu3_3`` and ``relu4_3``. Weights come only from a local file
(``<weights_dir>/vgg16.pth`` or ``.safetensors``: a full torchvision VGG16 ``state_dict`` or just
its ``features``), read with ``torch.load(weights_only=True)``. Without one, a *seeded* random
initialisation (torchvision's VGG init: Kaiming-normal fan-out, zero bias) is used and reported
as ``pretrained_vgg: 0`` — random features are a weaker perceptual measure.

Distance (LPIPS-style, no learned linear weights): every layer's activation is normalised to unit
L2 norm over channels at each position; ``d(x, y)`` is the mean over layers of the spatial mean of
the squared difference summed over channels. Identical images have ``d = 0``; each layer term
lies in ``[0, 4]``.

Nearest real positive: features are flattened per layer, so the distance matrix of a batch of
candidates to all real positives is ``|a|² + |b|² − 2 a·b`` (one matmul per layer); the nearest
neighbour's distance is then recomputed from the difference (no cancellation error: ``0`` for a
copy, up to the last bits by which a batch's other images can change a CPU convolution). Real
positives' features are computed once and kept in memory (≈ 2 MB per image at 64 px);
candidates stream through one batch at a time.

Band: ``R`` = each real train positive's distance to its nearest OTHER real train positive. A
candidate at distance ``d`` from its nearest real train positive is

    too_close  if d <  low_factor  · Q_R(low_quantile)    (a near-duplicate of a real image)
    too_far    if d >  high_factor · Q_R(high_quantile)   (unlike any real melanoma)
    kept       otherwise (bounds inclusive).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from numpy.typing import NDArray
from torch import nn
from torchvision.models.vgg import cfgs, make_layers
from tqdm import tqdm

from melanoma_kd.data.cache import resize_shorter_center_crop
from melanoma_kd.errors import UserError
from melanoma_kd.models.build import IMAGENET_MEAN, IMAGENET_STD, local_weights

Image = NDArray[np.uint8]

VGG_ARCH = "vgg16"
RELU_LAYERS = {"relu1_2": 3, "relu2_2": 8, "relu3_3": 15, "relu4_3": 22}  # index in .features
EPS = 1e-10
DECISIONS = ("kept", "too_close", "too_far")
QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)


# ----------------------------------------------------------------------------------- network


def _vgg16_features() -> nn.Sequential:
    return make_layers(cfgs["D"], batch_norm=False)


def _seeded_init(features: nn.Sequential, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    for module in features:
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(
                module.weight, mode="fan_out", nonlinearity="relu", generator=gen
            )
            nn.init.zeros_(module.bias)


def _read_state(path: Path) -> dict[str, torch.Tensor]:
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch/safetensors raise many kinds on a bad file
        raise UserError(f"{path}: not a readable VGG16 weights file ({exc})") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise UserError(f"{path}: expected a state_dict, got {type(state).__name__}")
    return state


def _load_features(features: nn.Sequential, path: Path) -> None:
    state = _read_state(path)
    if any(k.startswith("features.") for k in state):
        state = {
            k.removeprefix("features."): v for k, v in state.items() if k.startswith("features.")
        }
    wanted = features.state_dict()
    missing = [k for k in wanted if k not in state]
    if missing:
        raise UserError(f"{path}: not VGG16 weights (missing {missing[0]})")
    bad = [k for k in wanted if tuple(state[k].shape) != tuple(wanted[k].shape)]
    if bad:
        raise UserError(
            f"{path}: {bad[0]} has shape {tuple(state[bad[0]].shape)}, "
            f"VGG16 needs {tuple(wanted[bad[0]].shape)}"
        )
    features.load_state_dict({k: state[k] for k in wanted})


class VGGFeatures(nn.Module):
    """VGG16 ``features`` truncated after the last tapped ReLU; returns normalised activations."""

    def __init__(self, features: nn.Sequential, taps: Sequence[int] = tuple(RELU_LAYERS.values())):
        super().__init__()
        self.taps = tuple(sorted(taps))
        self.body = features[: self.taps[-1] + 1]  # a tap is copied (normalised) at once, so
        # torchvision's in-place ReLUs are safe
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))
        self.eval().requires_grad_(False)

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        """``images``: uint8 N×H×W×3. Returns per tap N×C×h×w, unit L2 norm over channels."""
        x = images.permute(0, 3, 1, 2).float().div(255.0)
        x = (x - self.mean) / self.std
        out = []
        for i, module in enumerate(self.body):
            x = module(x)
            if i in self.taps:
                out.append(x / (x.norm(dim=1, keepdim=True) + EPS))
        return out


def build_vgg(
    weights_dir: str | Path | None, seed: int, num_threads: int | None = None
) -> tuple[VGGFeatures, bool]:
    """``(model, pretrained)``: local VGG16 weights if present, else seeded random init.
    ``num_threads`` sets torch's (process-wide) intra-op thread count it will run on."""
    if num_threads is not None:
        torch.set_num_threads(num_threads)
    features = _vgg16_features()[: max(RELU_LAYERS.values()) + 1]  # layers after relu4_3 unused
    path = local_weights(VGG_ARCH, weights_dir)
    if path is None:
        _seeded_init(features, seed)
        return VGGFeatures(features), False
    _load_features(features, path)
    return VGGFeatures(features), True


# ------------------------------------------------------------------------------ features


@dataclass
class Features:
    """Flattened per-layer features of a set of images: ``flat[l]`` is N×(C·h·w)."""

    flat: list[torch.Tensor]
    positions: list[int]  # h·w of each layer

    def __len__(self) -> int:
        return self.flat[0].shape[0] if self.flat else 0

    def rows(self, index: torch.Tensor | slice) -> Features:
        return Features([f[index] for f in self.flat], self.positions)


def prepare(images: Sequence[Image], size: int) -> torch.Tensor:
    """Shorter-side resize + centre crop to ``size`` (as the cache does); uint8 N×S×S×3."""
    batch = np.stack([resize_shorter_center_crop(img, size) for img in images])
    return torch.from_numpy(batch)


class LazyImages(Sequence[Image]):
    """Images by id, decoded only when sliced (so one batch at a time is in memory)."""

    def __init__(self, load: Callable[[str], Image], ids: Sequence[str]) -> None:
        self.load, self.ids = load, list(ids)

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index):  # type: ignore[override]
        if isinstance(index, slice):
            return [self.load(i) for i in self.ids[index]]
        return self.load(self.ids[index])


@dataclass
class Timer:
    """Seconds spent in the network and images passed through it."""

    seconds: float = 0.0
    images: int = 0

    @property
    def images_per_s(self) -> float:
        return self.images / self.seconds if self.seconds > 0 else 0.0


def iter_features(
    model: VGGFeatures,
    images: Sequence[Image],
    size: int,
    batch_size: int,
    desc: str = "vgg16",
    timer: Timer | None = None,
) -> Iterator[Features]:
    """Features of ``images`` batch by batch under ``torch.inference_mode()``, with a bar.

    ``images`` only needs ``len`` and slicing, so a lazy loader keeps memory to one batch.
    """
    timer = timer if timer is not None else Timer()
    starts = range(0, len(images), batch_size)
    for start in tqdm(starts, desc=desc, unit="batch", disable=None):
        x = prepare(images[start : start + batch_size], size)
        with torch.inference_mode():
            t0 = time.perf_counter()
            feats = model(x)
            timer.seconds += time.perf_counter() - t0
        timer.images += x.shape[0]
        yield Features([f.flatten(1) for f in feats], [f.shape[2] * f.shape[3] for f in feats])


def extract(
    model: VGGFeatures,
    images: Sequence[Image],
    size: int,
    batch_size: int,
    desc: str = "vgg16",
    timer: Timer | None = None,
) -> Features:
    """All features of ``images`` in memory (used once, for the real positives)."""
    parts = list(iter_features(model, images, size, batch_size, desc, timer))
    if not parts:
        return Features([], [])
    flat = [torch.cat([p.flat[k] for p in parts]) for k in range(len(parts[0].flat))]
    return Features(flat, parts[0].positions)


def paired_distance(a: Features, b: Features) -> torch.Tensor:
    """Distance between row ``i`` of ``a`` and row ``i`` of ``b`` (exact difference form)."""
    terms = [
        ((fa - fb) ** 2).sum(1) / p for fa, fb, p in zip(a.flat, b.flat, a.positions, strict=True)
    ]
    return torch.stack(terms).mean(0)


def distance_matrix(a: Features, b: Features) -> torch.Tensor:
    """All-pairs distances (len(a)×len(b)) via ``|a|² + |b|² − 2a·b``; clamped at 0."""
    terms = [
        ((fa * fa).sum(1, keepdim=True) + (fb * fb).sum(1)[None, :] - 2.0 * fa @ fb.T) / p
        for fa, fb, p in zip(a.flat, b.flat, a.positions, strict=True)
    ]
    return torch.stack(terms).mean(0).clamp_min(0.0)


def nearest(
    queries: Features, bank: Features, exclude: torch.Tensor | None = None, batch_size: int = 64
) -> tuple[NDArray[np.int64], NDArray[np.float64]]:
    """Index in ``bank`` of each query's nearest neighbour and its exact distance.

    ``exclude[i]`` (optional) is a bank index that query ``i`` may not match (itself).
    """
    if len(bank) == 0 or (exclude is not None and len(bank) < 2):
        raise UserError("perceptual_filter: too few real train positives to compare against")
    idx, dist = [], []
    for start in range(0, len(queries), batch_size):
        q = queries.rows(slice(start, start + batch_size))
        d = distance_matrix(q, bank)
        if exclude is not None:
            rows = torch.arange(d.shape[0])
            d[rows, exclude[start : start + batch_size]] = float("inf")
        best = d.argmin(1)
        idx.append(best)
        dist.append(paired_distance(q, bank.rows(best)))
    if not idx:
        return np.zeros(0, np.int64), np.zeros(0, np.float64)
    return torch.cat(idx).numpy().astype(np.int64), torch.cat(dist).double().numpy()


# ---------------------------------------------------------------------------------------- band


@dataclass(frozen=True)
class Band:
    """Accepted distance interval ``[low, high]`` (inclusive)."""

    low: float
    high: float


def band_bounds(
    reference: NDArray[np.floating],
    low_quantile: float,
    low_factor: float,
    high_quantile: float,
    high_factor: float,
) -> Band:
    """Band from the real-to-real nearest-neighbour distances (see module doc)."""
    if len(reference) == 0:
        raise UserError("perceptual_filter: no real-to-real distances to set the band from")
    lo, hi = np.quantile(np.asarray(reference, np.float64), [low_quantile, high_quantile])
    return Band(float(low_factor * lo), float(high_factor * hi))


def classify(distances: NDArray[np.floating], band: Band) -> NDArray[np.str_]:
    """``kept`` / ``too_close`` / ``too_far`` for each distance."""
    d = np.asarray(distances, np.float64)
    out = np.full(d.shape, "kept", dtype=object)
    out[d < band.low] = "too_close"
    out[d > band.high] = "too_far"
    return out.astype(str)


# ------------------------------------------------------------------------------------- filter


@dataclass
class FilterResult:
    """Everything the stage writes: per-image distances, band, decisions, counts."""

    candidates: pd.DataFrame  # candidate table + nearest_real_id, distance, decision
    reals: pd.DataFrame  # image_id, nearest_real_id, distance (real-to-real)
    band: Band
    pretrained: bool
    images_per_s: float
    metrics: dict


def _quantiles(prefix: str, values: NDArray[np.floating]) -> dict[str, float]:
    if len(values) == 0:
        return {f"{prefix}_q{round(q * 100):02d}": 0.0 for q in QUANTILES}
    qs = np.quantile(values, QUANTILES)
    return {
        f"{prefix}_q{round(q * 100):02d}": round(float(v), 6)
        for q, v in zip(QUANTILES, qs, strict=True)
    }


def perceptual_filter(
    candidates: pd.DataFrame,
    candidate_images: Sequence[Image],
    real_ids: Sequence[str],
    real_images: Sequence[Image],
    model: VGGFeatures,
    pretrained: bool,
    *,
    image_size: int,
    batch_size: int,
    low_quantile: float,
    low_factor: float,
    high_quantile: float,
    high_factor: float,
) -> FilterResult:
    """Distance of each candidate to its nearest real train positive and its band decision."""
    if len(candidates) != len(candidate_images):
        raise ValueError("one image per candidate row expected")
    timer = Timer()
    real = extract(model, real_images, image_size, batch_size, "vgg16 real positives", timer)
    r_idx, r_dist = nearest(real, real, exclude=torch.arange(len(real)), batch_size=batch_size)
    band = band_bounds(r_dist, low_quantile, low_factor, high_quantile, high_factor)
    c_idx, c_dist = [np.zeros(0, np.int64)], [np.zeros(0, np.float64)]
    for batch in iter_features(
        model, candidate_images, image_size, batch_size, "vgg16 candidates", timer
    ):
        idx, dist = nearest(batch, real, batch_size=batch_size)
        c_idx.append(idx)
        c_dist.append(dist)
    c_idx, c_dist = np.concatenate(c_idx), np.concatenate(c_dist)
    decision = classify(c_dist, band)
    real_ids = list(real_ids)
    table = candidates.reset_index(drop=True).copy()
    table["nearest_real_id"] = [real_ids[i] for i in c_idx]
    table["distance"] = c_dist
    table["decision"] = decision
    reals = pd.DataFrame(
        {
            "image_id": real_ids,
            "nearest_real_id": [real_ids[i] for i in r_idx],
            "distance": r_dist,
        }
    )
    ips = timer.images_per_s
    counts = {k: int((decision == k).sum()) for k in DECISIONS}
    donor_nn = (
        float((table["nearest_real_id"] == table["source_image_id"]).mean()) if len(table) else 0.0
    )
    metrics = {
        "candidates": len(table),
        "kept": counts["kept"],
        "rejected_too_close": counts["too_close"],
        "rejected_too_far": counts["too_far"],
        "kept_fraction": round(counts["kept"] / len(table), 4) if len(table) else 0.0,
        "real_positives": len(real),
        "band_low": round(band.low, 6),
        "band_high": round(band.high, 6),
        "low_quantile": low_quantile,
        "low_factor": low_factor,
        "high_quantile": high_quantile,
        "high_factor": high_factor,
        "nearest_is_donor_fraction": round(donor_nn, 4),
        "pretrained_vgg": int(pretrained),
        "image_size": image_size,
        "vgg_images": timer.images,
        "images_per_s": round(ips, 1),
        **_quantiles("candidate_distance", c_dist),
        **_quantiles("real_distance", r_dist),
    }
    return FilterResult(table, reals, band, pretrained, ips, metrics)


DISTANCE_COLUMNS = [
    "kind",
    "image_id",
    "source_image_id",
    "nearest_real_id",
    "distance",
    "decision",
]


def distance_table(result: FilterResult) -> pd.DataFrame:
    """One row per candidate (``kind=candidate``) and per real positive (``kind=real``)."""
    cand = result.candidates.assign(kind="candidate")
    real = result.reals.assign(kind="real", source_image_id="", decision="reference")
    return pd.concat([cand[DISTANCE_COLUMNS], real[DISTANCE_COLUMNS]], ignore_index=True)


# -------------------------------------------------------------------------------------- plots


def _save(fig: object, path: str | Path) -> None:
    import matplotlib.pyplot as plt

    from melanoma_kd.io import atomic_path

    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100, metadata={"Software": None})  # type: ignore[attr-defined]
    plt.close(fig)  # type: ignore[arg-type]


def plot_distances(result: FilterResult, path: str | Path) -> None:
    """Histogram of candidate and real-to-real nearest-neighbour distances, band shaded."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cand = result.candidates["distance"].to_numpy(np.float64)
    real = result.reals["distance"].to_numpy(np.float64)
    both = np.concatenate([cand, real, [result.band.low, result.band.high]])
    bins = np.linspace(0.0, max(float(both.max()), 1e-6) * 1.05, 41)
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.axvspan(result.band.low, result.band.high, color="#009E73", alpha=0.15, label="kept band")
    for x in (result.band.low, result.band.high):
        ax.axvline(x, color="#009E73", lw=1.5)
    ax.hist(real, bins=bins, density=True, alpha=0.6, color="#0072B2",
            label=f"real → nearest other real (n={len(real)})")  # fmt: skip
    if len(cand):
        ax.hist(cand, bins=bins, density=True, alpha=0.6, color="#E69F00",
                label=f"candidate → nearest real (n={len(cand)})")  # fmt: skip
    vgg = "pretrained VGG16" if result.pretrained else "RANDOM-init VGG16 (no local weights)"
    m = result.metrics
    ax.set_title(
        f"Perceptual distance, {vgg}\nkept {m['kept']}, too close {m['rejected_too_close']}, "
        f"too far {m['rejected_too_far']}",
        fontsize=10,
    )
    ax.set_xlabel("LPIPS-style VGG16 distance")
    ax.set_ylabel("density")
    ax.legend(fontsize=8)
    fig.tight_layout()
    _save(fig, path)


def _pick(df: pd.DataFrame, k: int) -> pd.DataFrame:
    """Up to ``k`` rows spread evenly over the distance range (deterministic)."""
    df = df.sort_values(["distance", "image_id"], kind="stable")
    if len(df) <= k:
        return df
    return df.iloc[np.linspace(0, len(df) - 1, k).round().astype(int)]


def plot_examples(
    result: FilterResult, load: Callable[[str], Image], path: str | Path, per_row: int = 6
) -> None:
    """Grid: one row per decision (kept, too close, too far), spread over the distance range."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(3, per_row, figsize=(1.6 * per_row, 5.4), squeeze=False)
    for r, decision in enumerate(DECISIONS):
        rows = _pick(result.candidates[result.candidates["decision"] == decision], per_row)
        for c in range(per_row):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            if c < len(rows):
                row = rows.iloc[c]
                ax.imshow(load(row["image_id"]))
                ax.set_title(f"d={row['distance']:.3f}", fontsize=8)
            else:
                for spine in ax.spines.values():
                    spine.set_visible(False)
                if c == 0:
                    ax.text(0.5, 0.5, "none", ha="center", va="center", transform=ax.transAxes)
        axes[r, 0].set_ylabel(decision.replace("_", " "), fontsize=10)
    fig.suptitle(
        f"Generated positives: band [{result.band.low:.3f}, {result.band.high:.3f}]", fontsize=10
    )
    fig.tight_layout()
    _save(fig, path)
