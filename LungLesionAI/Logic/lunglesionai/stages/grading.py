"""Nodule grading for the pipeline: the trained DenseSharp network on one or many nodules of a CT.

Inference (each step a named function; the resampling's inverse is :func:`lunglesionai.datasets.lidc_crops.crop_to_volume`):
centre (k, j, i) -> LPS -> isotropic crop of the volume around it (the model's ``spacing_mm`` and
``crop_size``, padded with air) -> HU window -> network on the crop and its left-right mirror (averaged) ->
mask probability resampled back onto the volume's own grid (linear), thresholded at 0.5, the connected
component at the centre (else the largest) kept -> :class:`GradeResult`.

The malignancy probability is sigmoid(z / T): z is the stacked logit, a logistic regression fit on the LIDC
training split over the given diameter and the network's own outputs (:func:`stacked_logit`; the raw network
logit when the model has no stacker), T the temperature fitted on LIDC ``val`` (see the model card).
Texture probabilities are the network's texture head; invasiveness probabilities come from its
invasiveness-surrogate head (ground-glass ~ pre-invasive, part-solid ~ minimally-invasive, solid ~ invasive):
a radiological surrogate learned from LIDC texture ratings, NOT pathology.

LIDC attribute heads (graders trained with them; older graders give None): spiculation, lobulation, margin and
sphericity as cumulative probabilities P(rating > k) of the radiologists' 1-5 majority rating, reported as the
expected rating, the median rating and the probability of each binary cut of :data:`ATTRIBUTE_CUTS` (e.g.
"spiculated" = P(spiculation >= 3), the yes/no spiculation Brock's model uses); calcification as the six LIDC
patterns, reported as the probability of a benign pattern (popcorn, laminated, solid, central). These imitate
radiologists' ratings of LIDC-IDRI nodules, not pathology.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import torch
from scipy import ndimage as ndi

from lunglesionai.core.findings import FindingMask
from lunglesionai.core.hu_windows import window_hu
from lunglesionai.core.vocabulary import (
    INVASIVENESS_CLASSES,
    LIDC_BENIGN_CALCIFICATION_PATTERNS,
    LIDC_CALCIFICATION_PATTERNS,
    LIDC_RATED_ATTRIBUTES,
    TEXTURE_CLASSES,
)
from lunglesionai.core.volume import Volume
from lunglesionai.datasets.lidc_crops import crop_geometry, crop_to_volume, extract_crop
from lunglesionai.nets.densesharp import DenseSharpConfig, DenseSharpNet
from lunglesionai.nets.model_store import MODELS_ENV, ModelFileError, load_model, model_dir, save_model

__all__ = [
    "ATTRIBUTE_CUTS",
    "AttributeCut",
    "MODELS_ENV",
    "attribute_cut_probability",
    "GraderModelError",
    "GradeResult",
    "NoduleGrader",
    "default_model_dir",
    "save_grader",
    "predict_crops",
    "stacking_features",
    "stacked_logit",
]

logger = logging.getLogger(__name__)

GRADER_SUBDIR = "grader"
WEIGHTS_FILE = "grader.pt"
GRADER_FORMAT = "lunglesionai-grader/1"
MASK_THRESHOLD = 0.5
"""Mask probability at or above which a voxel belongs to the nodule."""
DEFAULT_BATCH = 4
"""Nodules per network call in :meth:`NoduleGrader.grade_many` (4 was fastest per nodule on one CPU thread)."""


@dataclass(frozen=True)
class AttributeCut:
    """A yes/no reading of a 1-5 LIDC rating: ``rating >= level`` (``at_least``) or ``rating <= level``.

    Attributes:
        attribute: one of :data:`LIDC_RATED_ATTRIBUTES`.
        level: the cut's rating, 2..4.
        at_least: True for ``rating >= level``, False for ``rating <= level``.
    """

    attribute: str
    level: int
    at_least: bool

    def holds(self, rating: int) -> bool:
        """Whether a 1-5 rating falls on the "yes" side of the cut."""
        return rating >= self.level if self.at_least else rating <= self.level


ATTRIBUTE_CUTS = {
    "spiculated": AttributeCut("spiculation", 3, True),
    "lobulated": AttributeCut("lobulation", 3, True),
    "poorly_defined_margin": AttributeCut("margin", 2, False),
    "elongated": AttributeCut("sphericity", 2, False),
}
"""Binary cuts of the LIDC ratings (project choices, stated in the model card): spiculated = spiculation >= 3
("medium" to "marked"; 1 none, 2 nearly none), for Brock's yes/no spiculation (McWilliams et al., NEJM 2013);
lobulated = lobulation >= 3; poorly defined margin = margin <= 2 (1 poorly defined, 2 near poorly defined);
elongated = sphericity <= 2 (1 linear, 2 ovoid/linear)."""
CUT_THRESHOLD = 0.5
"""A cut is called (e.g. ``GradeResult.spiculated``) when its probability is at least this."""


class GraderModelError(ModelFileError):
    """The grader's model folder is missing, incomplete, or its weights do not match the recorded SHA-256."""


def default_model_dir() -> Path:
    """The grader folder (:func:`lunglesionai.nets.model_store.model_dir` of "grader"): ``$LUNGLESIONAI_MODELS/grader``
    when set; else ``models/grader`` inside the package; else ``<repo>/models/grader``."""
    return model_dir(GRADER_SUBDIR)


def save_grader(
    net: DenseSharpNet,
    model_dir: str | os.PathLike,
    preprocessing: dict[str, Any],
    extra: Optional[dict[str, Any]] = None,
) -> str:
    """Write ``grader.pt`` (state_dict) and ``config.json`` into ``model_dir`` (inverse of :meth:`NoduleGrader.load`).

    Both are written atomically (:func:`lunglesionai.nets.model_store.save_model`). ``config.json`` records the format,
    the network config, the weights' SHA-256, ``preprocessing`` and the class names, plus ``extra`` (calibration,
    training config, ...).

    Args:
        net: the network.
        model_dir: folder (created when missing).
        preprocessing: ``{"spacing_mm", "crop_size", "hu_window", "pad_hu"}`` of the crops the network expects.
        extra: more top-level config entries (e.g. ``{"calibration": {"temperature": 1.3}}``).

    Returns:
        The weights' SHA-256 (hex).

    Raises:
        ValueError: ``preprocessing`` lacks a key.
    """
    missing = [k for k in ("spacing_mm", "crop_size", "hu_window", "pad_hu") if k not in preprocessing]
    if missing:
        raise ValueError(f"preprocessing lacks {missing}")
    return save_model(model_dir, net.state_dict(), WEIGHTS_FILE, {
        "format": GRADER_FORMAT,
        "network": net.config.to_dict(),
        "preprocessing": dict(preprocessing),
        "texture_classes": list(TEXTURE_CLASSES),
        "invasiveness_classes": list(INVASIVENESS_CLASSES),
        **(extra or {}),
    })


@dataclass(frozen=True)
class GradeResult:
    """The grading of one nodule.

    Attributes:
        mask: nodule mask on the graded volume's own grid (tight boolean crop + (k, j, i) offset), or None
            when no voxel reached the threshold.
        malignancy_probability: calibrated probability in [0, 1] that LIDC radiologists call it malignant
            (``Diagnosis_value`` = 1).
        malignancy_rating: expected LIDC malignancy rating, in [1, 5].
        rating_probabilities: {"1": p, ..., "5": p}.
        texture: most probable of "ground-glass", "part-solid", "solid".
        texture_probabilities: {texture: p}.
        invasiveness: {"pre-invasive": p, "minimally-invasive": p, "invasive": p}; a CT-texture surrogate,
            not pathology.
        attributes: expected LIDC rating in [1, 5] per attribute of ``LIDC_RATED_ATTRIBUTES`` (spiculation,
            lobulation, margin, sphericity); None for a grader without attribute heads.
        attribute_levels: median rating 1-5 per attribute (1 + the number of k with P(rating > k) >= 0.5), or None.
        attribute_probabilities: probability of each cut of :data:`ATTRIBUTE_CUTS` ("spiculated", ...), or None.
        spiculated: ``attribute_probabilities["spiculated"] >= 0.5`` (radiologists' majority spiculation >= 3),
            or None.
        calcified_probability: probability that radiologists rate a benign calcification pattern (popcorn,
            laminated, solid, central), or None.
        calcification_probabilities: {pattern: p} over ``LIDC_CALCIFICATION_PATTERNS`` (sums to 1), or None.
    """

    mask: Optional[FindingMask]
    malignancy_probability: float
    malignancy_rating: float
    rating_probabilities: dict[str, float]
    texture: str
    texture_probabilities: dict[str, float]
    invasiveness: dict[str, float]
    attributes: Optional[dict[str, float]] = None
    attribute_levels: Optional[dict[str, int]] = None
    attribute_probabilities: Optional[dict[str, float]] = None
    spiculated: Optional[bool] = None
    calcified_probability: Optional[float] = None
    calcification_probabilities: Optional[dict[str, float]] = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict without the mask (its voxel count is given as ``mask_voxels``); the attribute entries
        are None for a grader without attribute heads."""
        return {
            "attributes": None if self.attributes is None else dict(self.attributes),
            "attribute_levels": None if self.attribute_levels is None else dict(self.attribute_levels),
            "attribute_probabilities": (
                None if self.attribute_probabilities is None else dict(self.attribute_probabilities)
            ),
            "spiculated": self.spiculated,
            "calcified_probability": self.calcified_probability,
            "calcification_probabilities": (
                None if self.calcification_probabilities is None else dict(self.calcification_probabilities)
            ),
            "malignancy_probability": self.malignancy_probability,
            "malignancy_rating": self.malignancy_rating,
            "rating_probabilities": dict(self.rating_probabilities),
            "texture": self.texture,
            "texture_probabilities": dict(self.texture_probabilities),
            "invasiveness": dict(self.invasiveness),
            "mask_voxels": 0 if self.mask is None else self.mask.voxel_count,
        }


class NoduleGrader:
    """The trained DenseSharp grader (segmentation, malignancy, texture, invasiveness surrogate and, for graders
    trained with them, the LIDC attribute heads; an older grader loads too and leaves the attribute fields None).

    Build it with :meth:`load`. The network runs on CPU in evaluation mode.

    Example:
        >>> grader = NoduleGrader.load()  # doctest: +SKIP
        >>> result = grader.grade(volume, (40.0, 120.5, 300.0), diameter_mm=8.0)  # doctest: +SKIP
        >>> result.malignancy_probability, result.texture  # doctest: +SKIP
    """

    def __init__(self, net: DenseSharpNet, config: dict[str, Any], model_dir: Path, sha256: str) -> None:
        self.net = net.eval()
        self.config = config
        self.model_dir = Path(model_dir)
        self.sha256 = sha256
        prep = config["preprocessing"]
        self.spacing_mm = float(prep["spacing_mm"])
        self.crop_size = int(prep["crop_size"])
        self.hu_window = (float(prep["hu_window"][0]), float(prep["hu_window"][1]))
        self.pad_hu = float(prep["pad_hu"])
        self.temperature = float(config.get("calibration", {}).get("temperature", 1.0))

    @classmethod
    def load(cls, model_dir: str | os.PathLike | None = None, *, verify_sha256: bool = True) -> "NoduleGrader":
        """Read ``config.json`` and the weights it names from ``model_dir`` and check their SHA-256.

        Args:
            model_dir: folder written by ``lunglesionai train grader``; default :func:`default_model_dir`.
            verify_sha256: compare the weights' SHA-256 with ``config.json``'s ``weights_sha256``.

        Returns:
            The grader.

        Raises:
            GraderModelError: the folder, ``config.json`` or the weights are missing, the config is not a
                grader config, the checksum differs, or the weights do not fit the configured network.
        """
        folder = Path(model_dir) if model_dir is not None else default_model_dir()
        try:
            config, state, sha = load_model(folder, GRADER_FORMAT,
                                            f"lunglesionai train grader --data DIR --out {folder}",
                                            verify_sha256=verify_sha256)
        except GraderModelError:
            raise
        except ModelFileError as exc:
            raise GraderModelError(str(exc)) from exc
        network = config["network"]
        net = DenseSharpNet(DenseSharpConfig(**{**network, "block_layers": tuple(network["block_layers"]),
                                                "decoder_channels": tuple(network["decoder_channels"])}))
        try:
            net.load_state_dict(state)
        except (RuntimeError, KeyError) as exc:
            raise GraderModelError(f"{folder}: weights do not fit the network in its config.json: {exc}") from exc
        return cls(net, config, folder, sha)

    def model_info(self) -> dict[str, str]:
        """``{"name", "version", "sha256"}`` for ``Report.models``."""
        return {"name": "densesharp-grader", "version": str(self.config.get("format")), "sha256": self.sha256}

    def grade(self, volume: Volume, center_kji: Sequence[float], diameter_mm: float) -> GradeResult:
        """Segment and grade the nodule at ``center_kji``.

        Args:
            volume: CT in HU (any spacing and orientation; the result is on its grid).
            center_kji: (k, j, i) fractional array index of the nodule centre.
            diameter_mm: nodule diameter in mm as measured (the LIDC table's diameter in ``evaluate lidc-voi``,
                the pipeline's measurement in ``analyze``). The grading heads use it (malignancy ratings follow
                size closely; trained with ±10 % jitter); a warning is logged when the nodule is larger than the
                model's field of view, ``spacing_mm × crop_size``.

        Returns:
            :class:`GradeResult`.

        Raises:
            ValueError: ``center_kji`` is not 3 finite numbers or ``diameter_mm`` is not positive.
        """
        return self.grade_many(volume, [center_kji], [diameter_mm])[0]

    def grade_many(
        self,
        volume: Volume,
        centers_kji: Sequence[Sequence[float]],
        diameters_mm: Sequence[float],
        batch_size: int = DEFAULT_BATCH,
    ) -> list[GradeResult]:
        """:meth:`grade` for many nodules of one volume, ``batch_size`` nodules per network call.

        Args:
            volume: CT in HU.
            centers_kji: (N, 3) centres, (k, j, i).
            diameters_mm: (N,) approximate diameters in mm.
            batch_size: nodules per network call.

        Returns:
            N results in input order.

        Raises:
            ValueError: lengths differ, a centre is not 3 finite numbers, or a diameter is not positive.
        """
        centers = [np.asarray(c, dtype=float).reshape(-1) for c in centers_kji]
        diameters = [float(d) for d in diameters_mm]
        if len(centers) != len(diameters):
            raise ValueError(f"{len(centers)} centres but {len(diameters)} diameters")
        for c, d in zip(centers, diameters):
            if c.size != 3 or not np.all(np.isfinite(c)):
                raise ValueError(f"center_kji must be 3 finite numbers, got {c.tolist()}")
            if not d > 0:
                raise ValueError(f"diameter_mm must be > 0, got {d}")
            if d > self.spacing_mm * self.crop_size:
                logger.warning("nodule of %.1f mm exceeds the grader's %.0f mm field of view; its mask is cut",
                               d, self.spacing_mm * self.crop_size)
        results = []
        for first in range(0, len(centers), batch_size):
            chunk = slice(first, first + batch_size)
            results.extend(self._grade_batch(volume, centers[chunk], diameters[chunk]))
        return results

    def _grade_batch(self, volume: Volume, centers: list[np.ndarray], diameters: list[float]) -> list[GradeResult]:
        geometries = [
            crop_geometry(volume, volume.kji_to_lps(c)[0], self.spacing_mm, self.crop_size) for c in centers
        ]
        crops = np.stack([window_hu(extract_crop(volume, g, self.pad_hu), self.hu_window) for g in geometries])
        outputs = self._predict(crops, diameters)
        return [
            self._result(volume, g, c, {k: v[n] for k, v in outputs.items()})
            for n, (g, c) in enumerate(zip(geometries, centers))
        ]

    def _predict(self, crops: np.ndarray, diameters_mm: Sequence[float]) -> dict[str, np.ndarray]:
        """:func:`predict_crops`, then the malignancy stacker (when saved) and the temperature."""
        out = predict_crops(self.net, crops, diameters_mm)
        logit = out["malignancy_logit"]
        stacker = self.config.get("malignancy_stacker")
        if stacker:
            logit = stacked_logit(stacker, stacking_features(out, diameters_mm))
        out["malignancy"] = 1.0 / (1.0 + np.exp(-logit / self.temperature))
        return out

    def _result(self, volume: Volume, geometry, center_kji: np.ndarray, out: dict[str, np.ndarray]) -> GradeResult:
        rating = out["rating"].astype(float)
        texture = out["texture"].astype(float)
        return GradeResult(
            **_attribute_fields(out),
            mask=_mask_on_volume(out["mask"], geometry, volume, center_kji),
            malignancy_probability=float(out["malignancy"]),
            malignancy_rating=float(rating @ np.arange(1, rating.size + 1)),
            rating_probabilities={str(k + 1): float(p) for k, p in enumerate(rating)},
            texture=TEXTURE_CLASSES[int(np.argmax(texture))],
            texture_probabilities=dict(zip(TEXTURE_CLASSES, texture.tolist())),
            invasiveness=dict(zip(INVASIVENESS_CLASSES, out["invasiveness"].astype(float).tolist())),
        )


# ----------------------------------------------------------------------------------------------- calibration


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.asarray(z, dtype=float)))


@torch.no_grad()
def predict_crops(net: DenseSharpNet, crops: np.ndarray, diameters_mm: Sequence[float]) -> dict[str, np.ndarray]:
    """Run the network on windowed crops and on their mirror along x (test-time augmentation), averaged.

    Args:
        net: the network (set to evaluation mode here).
        crops: (N, S, S, S) windowed crops in [0, 1].
        diameters_mm: (N,) diameters given to the heads.

    Returns:
        {"mask": (N, S, S, S) probabilities, "malignancy_logit": (N,), "rating", "texture", "invasiveness":
        (N, classes) softmax probabilities}, float32 numpy arrays; a net with LIDC attribute heads adds
        "attribute_exceed" (N, 4, 4) P(rating > k), k = 1..4, per attribute of ``LIDC_RATED_ATTRIBUTES`` and
        "calcification" (N, 6) probabilities of ``LIDC_CALCIFICATION_PATTERNS``.
    """
    net.eval()
    x = torch.as_tensor(np.asarray(crops)[:, None], dtype=torch.float32)
    n = x.shape[0]
    diameters = torch.as_tensor(list(diameters_mm) * 2, dtype=torch.float32)
    out = net(torch.cat([x, torch.flip(x, dims=(4,))]), diameters)
    mask = torch.sigmoid(out.mask_logits[:, 0])

    def mean_softmax(logits: torch.Tensor) -> np.ndarray:
        p = torch.softmax(logits, dim=1)
        return (0.5 * (p[:n] + p[n:])).numpy()

    return {
        "mask": (0.5 * (mask[:n] + torch.flip(mask[n:], dims=(3,)))).numpy(),
        "malignancy_logit": (0.5 * (out.malignancy_logit[:n] + out.malignancy_logit[n:])).numpy(),
        "rating": mean_softmax(out.rating_logits),
        "texture": mean_softmax(out.texture_logits),
        "invasiveness": mean_softmax(out.invasiveness_logits),
        **_attribute_predictions(out, n),
    }


def _attribute_predictions(out, n: int) -> dict[str, np.ndarray]:
    """{"attribute_exceed": (N, A, 4) P(rating > k), "calcification": (N, 6)} averaged over the mirror; {} without
    attribute heads."""
    if out.attribute_cut_logits is None or out.calcification_logits is None:
        return {}
    exceed = torch.sigmoid(out.attribute_cut_logits)
    calcification = torch.softmax(out.calcification_logits, dim=1)
    return {
        "attribute_exceed": (0.5 * (exceed[:n] + exceed[n:])).numpy(),
        "calcification": (0.5 * (calcification[:n] + calcification[n:])).numpy(),
    }


def attribute_cut_probability(exceed: np.ndarray, cut: AttributeCut) -> np.ndarray:
    """Probability of a cut from the cumulative probabilities of one attribute.

    Args:
        exceed: (..., 4) P(rating > k) for k = 1..4.
        cut: the cut.

    Returns:
        (...) P(rating >= level) = P(rating > level - 1), or P(rating <= level) = 1 - P(rating > level).

    Raises:
        ValueError: ``cut.level`` is not 2..4 or the last axis is not 4 long.

    Example:
        >>> float(attribute_cut_probability(np.array([0.9, 0.4, 0.2, 0.1]), ATTRIBUTE_CUTS["spiculated"]))
        0.4
    """
    exceed = np.asarray(exceed, dtype=float)
    if exceed.shape[-1] != 4 or not 2 <= cut.level <= 4:
        raise ValueError(f"need (..., 4) cumulative probabilities and a level in 2..4, got {exceed.shape}, {cut}")
    return exceed[..., cut.level - 2] if cut.at_least else 1.0 - exceed[..., cut.level - 1]


def _attribute_fields(out: dict[str, np.ndarray]) -> dict[str, Any]:
    """GradeResult's attribute fields from one nodule's predictions ({} without attribute heads)."""
    if "attribute_exceed" not in out:
        return {}
    exceed = out["attribute_exceed"].astype(float)
    calcification = out["calcification"].astype(float)
    cuts = {name: float(attribute_cut_probability(exceed[LIDC_RATED_ATTRIBUTES.index(cut.attribute)], cut))
            for name, cut in ATTRIBUTE_CUTS.items()}
    benign = [LIDC_CALCIFICATION_PATTERNS.index(p) for p in LIDC_BENIGN_CALCIFICATION_PATTERNS]
    return {
        "attributes": {a: float(1.0 + exceed[k].sum()) for k, a in enumerate(LIDC_RATED_ATTRIBUTES)},
        "attribute_levels": {a: int(1 + (exceed[k] >= 0.5).sum()) for k, a in enumerate(LIDC_RATED_ATTRIBUTES)},
        "attribute_probabilities": cuts,
        "spiculated": bool(cuts["spiculated"] >= CUT_THRESHOLD),
        "calcified_probability": float(calcification[benign].sum()),
        "calcification_probabilities": dict(zip(LIDC_CALCIFICATION_PATTERNS, calcification.tolist())),
    }


def stacking_features(predictions: dict[str, np.ndarray], diameters_mm: Sequence[float]) -> dict[str, np.ndarray]:
    """Candidate inputs of the malignancy stacker: {"log_diameter", "logit", "rating" (expected 1-5)}, each (N,).

    Args:
        predictions: output of :func:`predict_crops`.
        diameters_mm: (N,) the diameters given with the crops.
    """
    rating = np.asarray(predictions["rating"], dtype=float)
    return {
        "log_diameter": np.log(np.asarray(diameters_mm, dtype=float)),
        "logit": np.asarray(predictions["malignancy_logit"], dtype=float),
        "rating": rating @ np.arange(1, rating.shape[1] + 1),
    }


def stacked_logit(stacker: dict[str, Any], features: dict[str, np.ndarray]) -> np.ndarray:
    """Malignancy logit of a saved stacker: standardised ``stacker["features"]`` · weights + bias.

    Args:
        stacker: {"features": names, "mean", "std", "weights": per feature, "bias"} (see
            :func:`lunglesionai.training.grader.fit_malignancy_stacker`).
        features: from :func:`stacking_features`.

    Returns:
        (N,) float64 logits.

    Raises:
        KeyError: the stacker names a feature that ``features`` lacks.
    """
    x = np.column_stack([features[name] for name in stacker["features"]])
    z = (x - np.asarray(stacker["mean"])) / np.asarray(stacker["std"])
    return z @ np.asarray(stacker["weights"], dtype=float) + float(stacker["bias"])


def _mask_on_volume(prob: np.ndarray, geometry, volume: Volume, center_kji: np.ndarray) -> Optional[FindingMask]:
    """Resample the crop's mask probability onto the volume grid, threshold, keep the centre's component."""
    offset, prob_volume = crop_to_volume(prob, geometry, volume)
    mask = prob_volume >= MASK_THRESHOLD
    if not mask.any():
        return None
    labels, n = ndi.label(mask)
    if n > 1:
        local = np.clip(np.round(center_kji).astype(int) - np.asarray(offset), 0, np.asarray(mask.shape) - 1)
        keep = labels[tuple(local)]
        if keep == 0:
            keep = int(np.argmax(np.bincount(labels.ravel())[1:])) + 1
        mask = labels == keep
    return FindingMask.cropped(mask, offset)
