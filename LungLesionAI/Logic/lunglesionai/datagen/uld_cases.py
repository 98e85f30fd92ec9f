"""Training and validation cases of the universal lesion detector: real and phantom CTs with known lesions.

**Composite cases, not clinical scans.** No annotated whole-body CT is available offline. A case is a host CT —
the real contrast chest crop or the real upper-abdomen series of ``../shared/data/ct``, or a procedural phantom
(:mod:`lunglesionai.synth`) — with

* lung lesions: real LIDC-IDRI nodules of one ``lidc_voi`` split pasted into its lungs
  (:func:`lunglesionai.datagen.composites.compose`), plus a phantom's own nodules;
* synthetic lesions of the other DeepLesion classes painted where they belong (:mod:`lunglesionai.datagen.synthetic_lesions`).

Every case is resampled to the ULD grid (:func:`lunglesionai.stages.universal_lesions.grid.slice_grid`); each lesion's mask goes onto
the same grid, giving a 2-D box on every slice whose cross-section is at least ``min_area_fraction`` of the
largest (the slice of largest cross-section is the lesion's key slice, as in DeepLesion).

Training and validation never share a lesion: training sets use the ``train`` LIDC split and the seed stream
``[seed, 0]``, validation sets the ``val`` split and the stream ``[seed, 1]`` (other lesion draws, positions and
phantoms). The two real hosts are the same CTs in both, so validation numbers on them measure new lesions in
known anatomy, not new patients.

Samples (:func:`sample_slabs`): slabs of ``n_slices`` slices centred on a slice; positives on each lesion's key
slice and on other slices it crosses, negatives on slices no lesion touches.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from lunglesionai.core.output_folder import write_file_atomic, write_json_atomic
from lunglesionai.core.volume import Volume
from lunglesionai.nets.mp3d import ULDConfig
from lunglesionai.stages.universal_lesions.grid import SliceGrid, label_grid, mask_boxes_per_slice, slice_grid

__all__ = [
    "HOST_FILES",
    "HOST_KINDS",
    "DEFAULT_HOSTS",
    "GridLesion",
    "SlabSample",
    "ULDCase",
    "ULDDataConfig",
    "build_case",
    "build_cases",
    "case_lesion_classes",
    "sample_slabs",
    "validation_config",
]

logger = logging.getLogger(__name__)

#: Real host CTs under ``--data-ct`` (``../shared/data/ct``).
HOST_FILES = {"chest": "chest_ct_crop_1p5mm.nii.gz", "abdomen": "abdomen_lung_base_dicom",
              "whole_body": "tcga_thca_whole_body_ct.nii.gz", "pancreas": "pancreas_ct_abdomen.nii.gz"}
HOST_KINDS = ("chest", "abdomen", "phantom", "whole_body", "pancreas")
DEFAULT_HOSTS = ("chest", "abdomen", "phantom")
"""The hosts of the first release (the others: the whole-body CT (neck to thigh) and the pancreas abdomen CT)."""
SPLIT_STREAMS = {"train": 0, "val": 1}
MIN_LUNG_ML_FOR_NODULES = 50.0
CACHE_VERSION = 1


@dataclass(frozen=True)
class ULDDataConfig:
    """Settings of :func:`build_cases` and :func:`sample_slabs`.

    Args:
        n_cases: number of cases (>= 1); hosts cycle through ``hosts``.
        seed: seed of the set (lesion draws, positions, phantoms, LIDC choice).
        split: "train" or "val": the LIDC split and the seed stream (see the module docstring).
        hosts: host kinds to cycle through ("chest", "abdomen", "phantom").
        lesions_per_case: synthetic lesions drawn per case (classes uniformly among those the host has room for).
        nodules_per_case: LIDC nodules pasted into hosts with lungs (0: none).
        phantom_preset: "small" or "clinical".
        min_area_fraction: a lesion's slice gets a box when its cross-section is at least this share of the
            largest.
        positives_per_lesion, negatives_per_case: slabs drawn per lesion (its key slice first) and per case.
        host_window_mm: real hosts longer than this along z are cut to a random window of this length per case
            (varied anatomy per case, and a whole-body CT stays fast to paint); None: the whole host.
        scanner_augmentation: re-render each case (after the lesions are in) as another scanner would
            (:func:`lunglesionai.datagen.scanner_augmentation.augment_scan`, default ranges).
        real_texture: lesions carry the host's own tissue residual as noise and may have necrotic centres
            (:class:`lunglesionai.datagen.lesion_appearance.LesionAppearance`).
        network: the grid and classes (``pixel_spacing_mm``, ``slice_spacing_mm``, ``lesion_types``).

    Raises:
        ValueError: a field is out of range.
    """

    n_cases: int = 60
    seed: int = 0
    split: str = "train"
    hosts: tuple[str, ...] = DEFAULT_HOSTS
    lesions_per_case: int = 8
    nodules_per_case: int = 3
    phantom_preset: str = "small"
    min_area_fraction: float = 0.25
    positives_per_lesion: int = 3
    negatives_per_case: int = 6
    host_window_mm: float | None = None
    scanner_augmentation: bool = False
    real_texture: bool = False
    network: ULDConfig = field(default_factory=ULDConfig)

    def __post_init__(self) -> None:
        checks = {
            "n_cases": self.n_cases >= 1,
            "split": self.split in SPLIT_STREAMS,
            "hosts": len(self.hosts) >= 1 and set(self.hosts) <= set(HOST_KINDS),
            "lesions_per_case": self.lesions_per_case >= 0,
            "nodules_per_case": self.nodules_per_case >= 0,
            "phantom_preset": self.phantom_preset in ("small", "clinical"),
            "min_area_fraction": 0.0 < self.min_area_fraction <= 1.0,
            "positives_per_lesion": self.positives_per_lesion >= 1,
            "negatives_per_case": self.negatives_per_case >= 0,
            "host_window_mm": self.host_window_mm is None or self.host_window_mm >= 20.0,
        }
        for name, ok in checks.items():
            if not ok:
                raise ValueError(f"ULDDataConfig.{name} is out of range: {getattr(self, name)!r}")

    def key(self) -> str:
        """Short hash of everything that decides the cases (cache file names)."""
        data = asdict(self)
        for unused in ("positives_per_lesion", "negatives_per_case", "n_cases"):
            data.pop(unused)
        for new_field in ("host_window_mm", "scanner_augmentation", "real_texture"):  # first-release keys unchanged
            if not data[new_field]:
                data.pop(new_field)
        text = json.dumps({"v": CACHE_VERSION, **data}, sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:12]


def validation_config(config: ULDDataConfig, n_cases: int | None = None) -> ULDDataConfig:
    """The held-out twin of a training config: split "val" (other LIDC patients, other seed stream)."""
    return replace(config, split="val", n_cases=config.n_cases if n_cases is None else n_cases)


@dataclass(frozen=True)
class GridLesion:
    """One lesion of a case on the ULD grid.

    Args:
        lesion_id: unique within the case.
        lesion_class: synthetic class name, "lidc_nodule" or "phantom_nodule".
        lesion_type: DeepLesion coarse type; label: its index in ``ULDConfig.lesion_types``.
        key_slice: slice index of the largest cross-section.
        boxes: slice index → (4,) box (x0, y0, x1, y1) in grid pixels.
        bbox_lps_mm: 3-D voxel-edge box of the mask on the host grid, LPS mm.
    """

    lesion_id: str
    lesion_class: str
    lesion_type: str
    label: int
    key_slice: int
    boxes: dict[int, np.ndarray]
    bbox_lps_mm: tuple[tuple[float, ...], tuple[float, ...]]


@dataclass(frozen=True)
class ULDCase:
    """A case on the ULD grid: ``grid`` (int16 HU), its lesions, and ``touched`` (Z,) bool: slices any lesion's
    mask touches (never used as negatives)."""

    case_id: str
    host: str
    grid: SliceGrid
    lesions: list[GridLesion]
    touched: np.ndarray

    def targets(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Boxes (N, 4) float32 and labels (N,) int64 of the lesions with a box on slice ``k``."""
        boxes = [les.boxes[k] for les in self.lesions if k in les.boxes]
        labels = [les.label for les in self.lesions if k in les.boxes]
        return np.asarray(boxes, np.float32).reshape(-1, 4), np.asarray(labels, np.int64)


@dataclass(frozen=True)
class SlabSample:
    """One training slab: case index, centre slice, and whether it holds a lesion box."""

    case_index: int
    slice_index: int
    positive: bool


def case_lesion_classes(available: list[str], n: int, rng: np.random.Generator) -> list[str]:
    """``n`` class names drawn uniformly (with replacement) from ``available`` ([] when none is available)."""
    return [] if not available else [str(c) for c in rng.choice(available, size=n)]


def build_cases(config: ULDDataConfig, data_ct: str | os.PathLike, lidc_dir: str | os.PathLike | None = None,
                cache_dir: str | os.PathLike | None = None, *, host_cache: dict | None = None) -> list[ULDCase]:
    """Cases 0…n_cases−1 of ``config`` (deterministic; case ``i`` does not depend on ``n_cases``).

    Args:
        config: the set's settings.
        data_ct: folder with the real host CTs (:data:`HOST_FILES`); needed when ``hosts`` names a real host.
        lidc_dir: ``lidc_voi`` folder; None pastes no LIDC nodules (phantom nodules stay lung lesions).
        cache_dir: when given, each case is stored there (``.npz`` + JSON) and reused by later calls.
        host_cache: a dict reused between calls for the loaded real hosts and their regions (a whole-body host
            takes minutes to prepare); None: a fresh one.

    Returns:
        The cases, in order. Logs "case i/N".

    Raises:
        FileNotFoundError: a real host CT is missing under ``data_ct``.
    """
    from lunglesionai.datagen.composites import NoduleSource

    source = NoduleSource(lidc_dir, config.split) if lidc_dir is not None and config.nodules_per_case else None
    hosts: dict[str, tuple] = {} if host_cache is None else host_cache
    children = np.random.SeedSequence([config.seed, SPLIT_STREAMS[config.split]]).spawn(config.n_cases)
    cases = []
    for i, child in enumerate(children):
        kind = config.hosts[i % len(config.hosts)]
        case_id = f"uld-{config.split}-{config.seed}-{i:04d}-{kind}"
        cached = _cache_path(cache_dir, case_id, config)
        case = _read_case(cached) if cached is not None and cached.with_suffix(".json").is_file() else None
        if case is None:
            case = build_case(case_id, kind, child, config, data_ct, source, hosts)
            if cached is not None:
                _write_case(cached, case)
        logger.info("case %d/%d: %s (%d lesions)", i + 1, config.n_cases, case_id, len(case.lesions))
        cases.append(case)
    return cases


def build_case(case_id: str, kind: str, seed: np.random.SeedSequence, config: ULDDataConfig, data_ct,
               source, hosts: dict) -> ULDCase:
    """One case (see the module docstring); ``hosts`` caches loaded real hosts and their regions between calls.

    Raises:
        FileNotFoundError: the real host CT is missing.
    """
    from lunglesionai.datagen.composites import CompositeConfig, compose
    from lunglesionai.datagen.synthetic_lesions import LESION_CLASSES, place_lesions

    rng = np.random.default_rng(seed)
    volume, lung, truth, masks, regions = _host(kind, rng, config, data_ct, hosts)
    lesions = [("phantom_nodule", "lung", t["bbox_lps_mm"], m) for t, m in zip(truth, masks) if m is not None]
    occupied = [(np.asarray(t["center_lps_mm"], float), 0.5 * float(t["diameter_mm"]) + 2.0) for t in truth]
    lung_ml = float(np.count_nonzero(lung)) * volume.voxel_volume_mm3 * 1e-3
    if source is not None and lung_ml >= MIN_LUNG_ML_FOR_NODULES:
        composite = compose(volume, lung, source, CompositeConfig(n_nodules=config.nodules_per_case,
                                                                  seed=int(rng.integers(2**31)),
                                                                  split=config.split))
        volume = composite.volume
        for t, m in zip(composite.truth, composite.masks):
            lesions.append(("lidc_nodule", "lung", t["bbox_lps_mm"], m))
            occupied.append((np.asarray(t["center_lps_mm"], float), 0.5 * float(t["diameter_mm"]) + 2.0))
    available = [n for n, c in LESION_CLASSES.items() if regions[c.region].any()
                 and (not c.relative_to_liver or regions.liver_hu is not None)]
    appearance = None
    if config.real_texture:
        from lunglesionai.datagen.lesion_appearance import LesionAppearance

        appearance = LesionAppearance()
    volume, placed = place_lesions(volume, regions, case_lesion_classes(available, config.lesions_per_case, rng),
                                   rng, occupied=occupied, appearance=appearance)
    lesions += [(t.lesion_class, t.lesion_type, t.bbox_lps_mm, t.mask) for t in placed]
    image = volume
    if config.scanner_augmentation:
        from lunglesionai.datagen.scanner_augmentation import augment_scan

        image, _, _ = augment_scan(volume, lung, rng)
    return _on_grid(case_id, kind, volume, lesions, config, image=image)


def _host(kind: str, rng: np.random.Generator, config: ULDDataConfig, data_ct, hosts: dict):
    """(LPS-ordered volume, lung mask, phantom truth, phantom masks, regions) of a host."""
    from lunglesionai.core.orientation import reorient_to_lps
    from lunglesionai.datagen.composite_sets import _phantom_host_retrying, real_host
    from lunglesionai.datagen.lesion_regions import anatomy_regions

    if kind == "phantom":
        host = _phantom_host_retrying([int(s) for s in rng.integers(0, 2**31, size=3)], config.phantom_preset)
        return host.volume, host.lung_mask, host.truth, host.masks, anatomy_regions(host.volume, host.lung_mask)
    if kind not in hosts:
        path = Path(data_ct) / HOST_FILES[kind]
        if not path.exists():
            raise FileNotFoundError(f"{path}: real host CT {kind!r} not found under --data-ct {data_ct}")
        host = real_host(path)
        volume, permutation = reorient_to_lps(host.volume)
        lung = permutation.apply(host.lung_mask) if not permutation.is_identity else host.lung_mask
        hosts[kind] = (volume, lung, anatomy_regions(volume, lung))
    volume, lung, regions = hosts[kind]
    if config.host_window_mm is not None:
        volume, lung, regions = _z_window(volume, lung, regions, config.host_window_mm, rng)
    return volume, lung, (), (), regions


def _z_window(volume: Volume, lung: np.ndarray, regions, length_mm: float, rng: np.random.Generator):
    """A random window of ``length_mm`` along z (LPS-ordered host) of the volume, its lung mask and regions;
    hosts not longer than that are returned whole. One random number is drawn either way."""
    from lunglesionai.datagen.lesion_regions import AnatomyRegions

    n = int(round(length_mm / volume.spacing_mm[2]))
    start = rng.random()
    if n >= volume.shape_zyx[0]:
        return volume, lung, regions
    k0 = int(start * (volume.shape_zyx[0] - n + 1))
    window = slice(k0, k0 + n)
    origin = volume.kji_to_lps([[k0, 0, 0]])[0]
    cut = Volume(volume.hu[window], volume.spacing_mm, tuple(float(v) for v in origin), volume.direction,
                 volume.source)
    masks = {name: mask[window] for name, mask in regions.masks.items()}
    liver_hu = regions.liver_hu if masks["liver"].any() else None
    return cut, lung[window], AnatomyRegions(masks, liver_hu, regions.spacing_zyx_mm, regions.volumes_ml)


def _on_grid(case_id: str, host: str, volume: Volume, lesions: list, config: ULDDataConfig,
             image: Volume | None = None) -> ULDCase:
    """The case on the ULD grid; ``image`` (default ``volume``) is what the grid shows (e.g. the scanner-augmented
    CT, same LPS geometry), the lesion masks are on ``volume``'s grid."""
    network = config.network
    grid = slice_grid(volume if image is None else image, network)
    labels = np.zeros(volume.shape_zyx, np.uint16)
    for n, (_, _, _, mask) in enumerate(lesions, start=1):
        mask.paste_into(labels, n)
    on_grid = label_grid(labels, volume, grid)
    touched = np.zeros(grid.shape_zyx[0], bool)
    out = []
    for n, (lesion_class, lesion_type, bbox, _) in enumerate(lesions, start=1):
        mask = on_grid == n
        touched |= mask.any(axis=(1, 2))
        boxes = mask_boxes_per_slice(mask, config.min_area_fraction)
        if not boxes or lesion_type not in network.lesion_types:
            continue
        key = max(boxes, key=lambda k: boxes[k][1])
        out.append(GridLesion(f"{case_id}/{n}", lesion_class, lesion_type, network.lesion_types.index(lesion_type),
                              key, {k: b for k, (b, _) in boxes.items()},
                              tuple(tuple(float(v) for v in c) for c in bbox)))
    hu = np.clip(np.rint(grid.hu), -1024, 3071).astype(np.int16)
    return ULDCase(case_id, host, replace(grid, hu=hu), out, touched)


def sample_slabs(cases: list[ULDCase], config: ULDDataConfig, rng: np.random.Generator) -> list[SlabSample]:
    """Positive slabs (each lesion's key slice plus up to ``positives_per_lesion − 1`` other slices it crosses)
    and negative slabs (``negatives_per_case`` slices no lesion touches) of every case."""
    samples = []
    for index, case in enumerate(cases):
        for lesion in case.lesions:
            others = [k for k in lesion.boxes if k != lesion.key_slice]
            picked = rng.permutation(others)[:config.positives_per_lesion - 1] if others else []
            samples += [SlabSample(index, int(k), True) for k in [lesion.key_slice, *picked]]
        free = np.flatnonzero(~case.touched)
        for k in rng.permutation(free)[:config.negatives_per_case]:
            samples.append(SlabSample(index, int(k), False))
    return samples


def _cache_path(cache_dir, case_id: str, config: ULDDataConfig) -> Path | None:
    if cache_dir is None:
        return None
    folder = Path(cache_dir)
    folder.mkdir(parents=True, exist_ok=True)
    return folder / f"{case_id}-{config.key()}.npz"


def _write_case(path: Path, case: ULDCase) -> None:
    """Write the grid (.npz) and the lesions (.json), each atomically; the JSON last (it marks completeness)."""
    write_file_atomic(path, lambda tmp: np.savez_compressed(
        tmp, hu=case.grid.hu, origin=case.grid.origin_lps_mm, spacing=case.grid.spacing_mm, touched=case.touched))
    meta = {"case_id": case.case_id, "host": case.host, "lesions": [
        {**{k: v for k, v in asdict(les).items() if k != "boxes"},
         "boxes": {str(k): [float(v) for v in b] for k, b in les.boxes.items()}} for les in case.lesions]}
    write_json_atomic(path.with_suffix(".json"), meta, indent=None, trailing_newline=False)


def _read_case(path: Path) -> ULDCase:
    meta = json.loads(path.with_suffix(".json").read_text(encoding="utf-8"))
    with np.load(path) as data:
        grid = SliceGrid(data["hu"], data["origin"], tuple(float(v) for v in data["spacing"]))
        touched = data["touched"]
    lesions = [GridLesion(d["lesion_id"], d["lesion_class"], d["lesion_type"], int(d["label"]), int(d["key_slice"]),
                          {int(k): np.asarray(b, np.float32) for k, b in d["boxes"].items()},
                          tuple(tuple(c) for c in d["bbox_lps_mm"])) for d in meta["lesions"]]
    return ULDCase(meta["case_id"], meta["host"], grid, lesions, touched)
