"""LIDC-IDRI as distributed: one DICOM CT series plus its reader XML, every radiologist mark in LPS mm.

The LIDC XML (``LidcReadMessage``, namespace ``http://www.nih.gov``; files without the namespace are read too) holds
one ``readingSession`` per radiologist (Armato et al., "The Lung Image Database Consortium (LIDC) and Image Database
Resource Initiative (IDRI)", Med Phys 38(2):915-931, 2011, doi:10.1118/1.3528204):

* ``unblindedReadNodule`` **with** ``characteristics``: a nodule >= 3 mm, outlined on each slice (``roi``: the
  slice's ``imageZposition`` / ``imageSOP_UID``, ``inclusion`` TRUE/FALSE and the outline's ``edgeMap`` pixel
  points), rated on the nine characteristics of :data:`RATING_NAMES`;
* ``unblindedReadNodule`` **without** characteristics: a nodule < 3 mm, one point;
* ``nonNodule``: something a reader judged not a nodule, one point (``locus``).

Coordinates: ``xCoord``/``yCoord`` are the pixel column/row on the slice; LPS mm = ImagePositionPatient +
column · column spacing · row direction + row · row spacing · column direction (DICOM PS3.3 C.7.6.2.1.1). A mark is
placed on the series slice whose SOPInstanceUID is its ``imageSOP_UID``, else whose z is its ``imageZposition``
(within :data:`Z_TOLERANCE_FRACTION` of the slice gap); marks on slices the series lacks (a slab of a longer scan)
keep ``slice_index`` None and are placed at ``imageZposition`` on the series' in-plane grid.

Clustering across readers follows pylidc's convention (Hancock and Magnan, pylidc, ``Scan.cluster_annotations``)
with an overlap test in place of its contour-distance test: each >= 3 mm mark is rasterised on its slices (each
``inclusion`` TRUE outline filled, boundary pixels included; exclusion outlines are kept in the data but not
subtracted), two marks of different readers whose voxels overlap are linked, and links are merged greedily by
decreasing IoU so that **one reader contributes at most one mark per nodule**. A nodule's consensus mask is the set
of voxels marked by at least half of its readers (pylidc ``consensus(clevel=0.5)``); its centre is the mean LPS of
those voxels, its equivalent diameter (6 V / pi)^(1/3) with each marked slice one slice gap thick.

Entry points: :func:`read_lidc_scan` (a folder holding one series and its XML), :func:`find_lidc_scans` (folders
of such scans) and :func:`luna16_rows` (LUNA16-style annotation and excluded rows: Setio et al., Med Image Anal
42:1-13, 2017, doi:10.1016/j.media.2017.06.015).
"""

from __future__ import annotations

import logging
import math
import os
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
from skimage.draw import polygon, polygon_perimeter

from lunglesionai.core.findings import equivalent_diameter_mm
from lunglesionai.core.volume import Volume
from lunglesionai.io.ct_files import list_dicom_series, load_volume
from lunglesionai.io.dicom_checks import read_header

__all__ = [
    "LIDC_NAMESPACE",
    "RATING_NAMES",
    "Z_TOLERANCE_FRACTION",
    "LidcNodule",
    "LidcNoduleMark",
    "LidcOutline",
    "LidcPointMark",
    "LidcScan",
    "LidcXmlError",
    "find_lidc_scans",
    "luna16_rows",
    "read_lidc_scan",
]

logger = logging.getLogger(__name__)

LIDC_NAMESPACE = "http://www.nih.gov"
"""XML namespace of the LIDC reader messages."""
RATING_NAMES = ("subtlety", "internalStructure", "calcification", "sphericity", "margin", "lobulation",
                "spiculation", "texture", "malignancy")
"""The nine characteristics a reader rates for each nodule >= 3 mm (LIDC XML element names)."""
Z_TOLERANCE_FRACTION = 0.25
"""A mark's ``imageZposition`` matches a series slice when within this fraction of the slice gap of its z."""
CONSENSUS_LEVEL = 0.5
"""Fraction of a nodule's readers that must mark a voxel for the consensus mask (pylidc's default ``clevel``)."""


class LidcXmlError(ValueError):
    """An LIDC XML file that cannot be read, or that does not belong to the DICOM series beside it."""


@dataclass(frozen=True, eq=False)
class LidcOutline:
    """One reader's outline of a nodule on one slice.

    Attributes:
        z_mm: the slice's ``imageZposition`` (LPS z, mm).
        sop_uid: the slice's ``imageSOP_UID``.
        inclusion: True for the nodule's outline, False for an excluded region (a hole) inside it.
        points_cr: (P, 2) float pixel (column, row) of the outline's points.
        points_lps_mm: (P, 3) the same points in LPS mm.
        slice_index: k of the slice in the series (``LidcScan.load_volume()``'s (Z, Y, X) array), None when the
            series lacks the slice.
    """

    z_mm: float
    sop_uid: str
    inclusion: bool
    points_cr: np.ndarray
    points_lps_mm: np.ndarray
    slice_index: Optional[int]


@dataclass(frozen=True, eq=False)
class LidcNoduleMark:
    """One reader's mark of a nodule >= 3 mm.

    Attributes:
        reader: index of the reading session in the XML (0, 1, ...).
        reader_id: the session's ``servicingRadiologistID`` ("" when absent).
        mark_id: the reader's ``noduleID``.
        ratings: characteristic name (:data:`RATING_NAMES`) -> rating (int), None where the reader gave none.
        outlines: the outlines, one per slice and region.
        center_lps_mm: (3,) mean LPS position of the filled inclusion outlines' voxels.
        volume_mm3: those voxels' volume (each slice one slice gap thick).
        voxels: (V,) int64 linear indices of those voxels on the scan's marking grid (private to clustering).
    """

    reader: int
    reader_id: str
    mark_id: str
    ratings: dict
    outlines: tuple
    center_lps_mm: np.ndarray
    volume_mm3: float
    voxels: np.ndarray

    @property
    def diameter_mm(self) -> float:
        """Equivalent-sphere diameter (6 V / pi)^(1/3) of the mark, mm."""
        return equivalent_diameter_mm(self.volume_mm3)


@dataclass(frozen=True, eq=False)
class LidcPointMark:
    """A reader's point mark: a nodule < 3 mm (``kind`` "small_nodule") or a non-nodule (``kind`` "non_nodule").

    Attributes:
        kind: "small_nodule" or "non_nodule".
        reader, reader_id: as :class:`LidcNoduleMark`.
        mark_id: ``noduleID`` or ``nonNoduleID``.
        z_mm, sop_uid, slice_index: the slice, as :class:`LidcOutline`.
        point_cr: (2,) pixel (column, row); several edgeMap points of a small nodule are averaged.
        point_lps_mm: (3,) LPS mm.
    """

    kind: str
    reader: int
    reader_id: str
    mark_id: str
    z_mm: float
    sop_uid: str
    point_cr: np.ndarray
    point_lps_mm: np.ndarray
    slice_index: Optional[int]


@dataclass(frozen=True, eq=False)
class LidcNodule:
    """A nodule >= 3 mm: the marks of different readers that overlap (module docstring), at most one per reader.

    Attributes:
        marks: the readers' marks.
        consensus_lps_mm: (M, 3) LPS centres of the consensus voxels (marked by >= half of the readers); they may
            lie on slices the series lacks.
        center_lps_mm: (3,) mean of ``consensus_lps_mm``.
        volume_mm3: consensus volume (each slice one slice gap thick).
        ratings: characteristic -> mean rating over the readers who gave one (None when nobody did).
    """

    marks: tuple
    consensus_lps_mm: np.ndarray
    center_lps_mm: np.ndarray
    volume_mm3: float
    ratings: dict

    @property
    def n_readers(self) -> int:
        """Number of readers who marked the nodule."""
        return len(self.marks)

    @property
    def diameter_mm(self) -> float:
        """Equivalent-sphere diameter of the consensus mask, mm."""
        return equivalent_diameter_mm(self.volume_mm3)


@dataclass(frozen=True, eq=False)
class LidcScan:
    """One LIDC scan: its DICOM series (not loaded; :meth:`load_volume`) and every reader's marks.

    Attributes:
        folder: the folder of the series and the XML.
        xml_path: the LIDC XML.
        series_uid: SeriesInstanceUID of the series.
        n_sessions: number of reading sessions (readers) in the XML.
        marks: every nodule >= 3 mm mark of every reader.
        small_nodules: every nodule < 3 mm mark.
        non_nodules: every non-nodule mark.
        clusters: the >= 3 mm marks clustered into nodules (most readers first).
    """

    folder: Path
    xml_path: Path
    series_uid: str
    n_sessions: int
    marks: tuple
    small_nodules: tuple
    non_nodules: tuple
    clusters: tuple

    def nodules(self, min_readers: int = 1) -> list:
        """The nodules >= 3 mm marked by at least ``min_readers`` readers.

        Raises:
            ValueError: ``min_readers`` < 1.
        """
        if min_readers < 1:
            raise ValueError(f"min_readers must be >= 1, got {min_readers}")
        return [n for n in self.clusters if n.n_readers >= min_readers]

    def load_volume(self) -> Volume:
        """The CT (:func:`lunglesionai.io.ct_files.load_volume` of the series; Volume ``hu`` (Z, Y, X), LPS).

        Raises:
            lunglesionai.io.ct_files.CTInputError: the series cannot be read.
        """
        return load_volume(self.folder, series_uid=self.series_uid or None)

    def consensus_mask(self, nodule: LidcNodule, volume: Volume) -> np.ndarray:
        """(Z, Y, X) bool consensus mask of ``nodule`` on ``volume``'s grid (voxels on slices it lacks dropped)."""
        mask = np.zeros(volume.shape_zyx, dtype=bool)
        kji = np.rint(volume.lps_to_kji(nodule.consensus_lps_mm)).astype(int) if len(nodule.consensus_lps_mm) else \
            np.zeros((0, 3), int)
        inside = np.all((kji >= 0) & (kji < np.asarray(volume.shape_zyx)), axis=1)
        mask[tuple(kji[inside].T)] = True
        return mask


def luna16_rows(scan: LidcScan, min_readers: int = 1, seriesuid: Optional[str] = None) -> tuple[list, list]:
    """LUNA16-style rows ``(seriesuid, x, y, z, diameter_mm)`` (LPS mm) of a scan: (annotations, excluded).

    Annotations are the nodules marked by >= ``min_readers`` readers (consensus centre and equivalent diameter).
    Excluded, as LUNA16's ``annotations_excluded.csv``: nodules of fewer readers (their centre and diameter), every
    nodule < 3 mm and every non-nodule mark (diameter -1: unknown, which the LUNA16 rule reads as 10 mm).

    Args:
        scan: the scan.
        min_readers: fewest readers of a reference nodule (LUNA16 used 3 of 4).
        seriesuid: the first column (default ``scan.series_uid``).

    Raises:
        ValueError: ``min_readers`` < 1.

    Example:
        >>> annotations, excluded = luna16_rows(read_lidc_scan("LIDC-IDRI-0001"), min_readers=3)  # doctest: +SKIP
    """
    uid = scan.series_uid if seriesuid is None else seriesuid
    kept = scan.nodules(min_readers)
    annotations = [(uid, *map(float, n.center_lps_mm), float(n.diameter_mm)) for n in kept]
    excluded = [(uid, *map(float, n.center_lps_mm), float(n.diameter_mm)) for n in scan.clusters if n not in kept]
    excluded += [(uid, *map(float, p.point_lps_mm), -1.0) for p in (*scan.small_nodules, *scan.non_nodules)]
    return annotations, excluded


def find_lidc_scans(root: str | os.PathLike) -> list[Path]:
    """The LIDC scan folders under ``root``: ``root`` itself when it holds an ``*.xml``, else each sub-folder
    holding one (sorted by name).

    Raises:
        FileNotFoundError: ``root`` is not a folder, or no folder holds an XML.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: not a folder")
    if any(root.glob("*.xml")):
        return [root]
    found = sorted(p for p in root.iterdir() if p.is_dir() and any(p.glob("*.xml")))
    if not found:
        raise FileNotFoundError(f"{root}: no LIDC scan (a folder holding a DICOM series and its *.xml)")
    return found


def read_lidc_scan(folder: str | os.PathLike, xml_path: Optional[str | os.PathLike] = None) -> LidcScan:
    """Read the LIDC XML of a folder with the headers of its DICOM series (pixels are not read).

    Args:
        folder: a folder holding one CT series (top level) and its LIDC XML.
        xml_path: the XML (default: the one ``*.xml`` in ``folder``).

    Returns:
        :class:`LidcScan`: every reader's marks in LPS mm and the >= 3 mm marks clustered into nodules.

    Raises:
        LidcXmlError: no or several XML files; malformed XML; a rating that is not an integer; the XML names
            another series; a mark lies between the series' slices; none of the XML's marked slices is in the
            series; the series is not axial. The message names the file.
        lunglesionai.io.ct_files.CTInputError: the DICOM folder cannot be listed or read.

    Example:
        >>> scan = read_lidc_scan("../shared/data/lidc_slabs/LIDC-IDRI-0001")  # doctest: +SKIP
        >>> [(n.n_readers, round(n.diameter_mm)) for n in scan.nodules(min_readers=3)]  # doctest: +SKIP
    """
    folder = Path(folder)
    xml = Path(xml_path) if xml_path is not None else _the_xml(folder)
    root = _parse(xml)
    xml_uid = _text(root.find("ResponseHeader/SeriesInstanceUid"))
    grid = _SeriesGrid.read(folder, xml, xml_uid)
    sessions = root.findall("readingSession")
    marks, small, non = [], [], []
    for reader, session in enumerate(sessions):
        reader_id = _text(session.find("servicingRadiologistID"))
        for element in session.findall("unblindedReadNodule"):
            mark = _nodule_mark(xml, grid, element, reader, reader_id)
            (marks if isinstance(mark, LidcNoduleMark) else small).append(mark)
        for element in session.findall("nonNodule"):
            non.append(_point_mark(xml, grid, element, "non_nodule", reader, reader_id, element.findall("locus")))
    grid.check_some_in_series(xml, [o for m in marks for o in m.outlines] + small + non)
    return LidcScan(folder, xml, grid.series_uid, len(sessions), tuple(marks), tuple(small), tuple(non),
                    tuple(_cluster(marks, grid)))


# --- XML ------------------------------------------------------------------------------------------------------------

def _the_xml(folder: Path) -> Path:
    if not folder.is_dir():
        raise LidcXmlError(f"{folder}: not a folder")
    xmls = sorted(folder.glob("*.xml"))
    if len(xmls) != 1:
        raise LidcXmlError(f"{folder}: needs exactly one LIDC *.xml beside the DICOM series, found {len(xmls)}"
                           + (f" ({', '.join(p.name for p in xmls[:4])})" if xmls else ""))
    return xmls[0]


def _parse(path: Path) -> ET.Element:
    """The XML's root element with namespaces stripped from every tag."""
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as exc:
        raise LidcXmlError(f"{path}: not well-formed XML ({exc})") from exc
    except OSError as exc:
        raise LidcXmlError(f"{path}: cannot be read ({exc.strerror or exc})") from exc
    for element in root.iter():
        if isinstance(element.tag, str) and element.tag.startswith("{"):
            element.tag = element.tag.split("}", 1)[1]
    if root.tag != "LidcReadMessage":
        raise LidcXmlError(f"{path}: not an LIDC reader XML (root element <{root.tag}>, expected <LidcReadMessage>)")
    return root


def _text(element: Optional[ET.Element]) -> str:
    return (element.text or "").strip() if element is not None else ""


def _number(xml: Path, element: Optional[ET.Element], what: str) -> float:
    text = _text(element)
    try:
        value = float(text)
    except ValueError:
        raise LidcXmlError(f"{xml}: {what} is {text!r}, not a number") from None
    if not math.isfinite(value):
        raise LidcXmlError(f"{xml}: {what} is {text!r}, not a finite number")
    return value


def _ratings(xml: Path, element: Optional[ET.Element], mark_id: str) -> dict:
    ratings = {}
    for name in RATING_NAMES:
        text = _text(element.find(name)) if element is not None else ""
        if text and not text.lstrip("-").isdigit():
            raise LidcXmlError(f"{xml}: nodule {mark_id!r}: rating {name} is {text!r}, not an integer")
        ratings[name] = int(text) if text else None
    return ratings


def _points(xml: Path, parents: list, what: str) -> np.ndarray:
    points = [(_number(xml, p.find("xCoord"), f"{what} xCoord"), _number(xml, p.find("yCoord"), f"{what} yCoord"))
              for p in parents]
    if not points:
        raise LidcXmlError(f"{xml}: {what} has no point (edgeMap/locus with xCoord, yCoord)")
    return np.asarray(points, dtype=float)


def _nodule_mark(xml: Path, grid: "_SeriesGrid", element: ET.Element, reader: int, reader_id: str):
    mark_id = _text(element.find("noduleID"))
    what = f"reader {reader + 1} nodule {mark_id!r}"
    characteristics = element.find("characteristics")
    ratings = _ratings(xml, characteristics, mark_id)
    rois = element.findall("roi")
    if not rois:
        raise LidcXmlError(f"{xml}: {what} has no roi")
    if all(v is None for v in ratings.values()):  # < 3 mm: one point (edgeMaps of all rois averaged)
        return _point_mark(xml, grid, element, "small_nodule", reader, reader_id,
                           [e for roi in rois for e in roi.findall("edgeMap")], roi=rois[0])
    outlines = []
    for roi in rois:
        z = _number(xml, roi.find("imageZposition"), f"{what} imageZposition")
        uid = _text(roi.find("imageSOP_UID"))
        k = grid.slice_of(xml, uid, z, what)
        points = _points(xml, roi.findall("edgeMap"), f"{what} roi at z={z:g}")
        inclusion = _text(roi.find("inclusion")).upper() != "FALSE"
        outlines.append(LidcOutline(z, uid, inclusion, points, grid.to_lps(points, z), k))
    filled = [o for o in outlines if o.inclusion] or outlines  # only exclusion outlines: take them as drawn
    voxels = np.unique(np.concatenate([grid.rasterise(o) for o in filled]))
    centre = grid.lps_of(voxels).mean(axis=0)
    return LidcNoduleMark(reader, reader_id, mark_id, ratings, tuple(outlines), centre,
                          voxels.size * grid.voxel_mm3, voxels)


def _point_mark(xml: Path, grid: "_SeriesGrid", element: ET.Element, kind: str, reader: int, reader_id: str,
                point_elements: list, roi: Optional[ET.Element] = None) -> LidcPointMark:
    holder = element if roi is None else roi
    mark_id = _text(element.find("nonNoduleID" if kind == "non_nodule" else "noduleID"))
    what = f"reader {reader + 1} {kind.replace('_', '-')} {mark_id!r}"
    z = _number(xml, holder.find("imageZposition"), f"{what} imageZposition")
    uid = _text(holder.find("imageSOP_UID"))
    k = grid.slice_of(xml, uid, z, what)
    point = _points(xml, point_elements, what).mean(axis=0)
    return LidcPointMark(kind, reader, reader_id, mark_id, z, uid, point, grid.to_lps(point[None], z)[0], k)


# --- series geometry and the marking grid ---------------------------------------------------------------------------

@dataclass
class _SeriesGrid:
    """The series' in-plane geometry, its slices (ascending along the normal) and the marking grid's layers: the
    series' slice positions plus the z of every marked slice the series lacks."""

    series_uid: str
    origin: np.ndarray  # (3,) ImagePositionPatient of the first slice
    col_step: np.ndarray  # (3,) LPS mm per column
    row_step: np.ndarray  # (3,) LPS mm per row
    normal: np.ndarray  # (3,) unit slice normal
    shape_rc: tuple
    slice_z: np.ndarray  # (K,) LPS z of the slices, ascending
    slice_uids: dict  # SOPInstanceUID -> k
    gap_mm: float
    layers: dict  # rounded z (mm) -> layer index

    @classmethod
    def read(cls, folder: Path, xml: Path, xml_uid: str) -> "_SeriesGrid":
        series = [s for s in list_dicom_series(folder) if s.is_ct]
        chosen = [s for s in series if s.uid == xml_uid] if xml_uid else series
        if xml_uid and not chosen:
            found = ", ".join(s.uid for s in series) or "no CT series"
            raise LidcXmlError(f"{xml}: belongs to series {xml_uid}, but {folder} holds {found}")
        if len(chosen) != 1:
            raise LidcXmlError(f"{xml}: names no SeriesInstanceUid and {folder} holds {len(chosen)} CT series")
        headers = [read_header(f) for f in chosen[0].files]
        iop = np.asarray([float(v) for v in headers[0].ImageOrientationPatient])
        normal = np.cross(iop[:3], iop[3:])
        if abs(normal[2]) < 0.99:
            raise LidcXmlError(f"{xml}: series {chosen[0].uid} is not axial; LIDC marks are placed by z")
        positions = np.asarray([[float(v) for v in h.ImagePositionPatient] for h in headers])
        order = np.argsort(positions @ normal)
        row_mm, col_mm = (float(v) for v in headers[0].PixelSpacing)
        z = positions[order, 2]
        gap = float(np.median(np.abs(np.diff(z)))) if len(z) > 1 else float(headers[0].get("SliceThickness", 1) or 1)
        grid = cls(chosen[0].uid, positions[order[0]], iop[:3] * col_mm, iop[3:] * row_mm, normal,
                   (int(headers[0].Rows), int(headers[0].Columns)), z,
                   {str(headers[n].SOPInstanceUID): k for k, n in enumerate(order)}, gap, {})
        for value in z:
            grid._layer(value)
        return grid

    @property
    def voxel_mm3(self) -> float:
        return float(np.linalg.norm(self.col_step) * np.linalg.norm(self.row_step) * self.gap_mm)

    def _layer(self, z: float) -> int:
        return self.layers.setdefault(round(float(z), 3), len(self.layers))

    def slice_of(self, xml: Path, uid: str, z: float, what: str) -> Optional[int]:
        """k of the series slice the mark lies on (by SOPInstanceUID, else z), None when the series lacks it."""
        if uid in self.slice_uids:
            return self.slice_uids[uid]
        nearest = int(np.argmin(np.abs(self.slice_z - z)))
        if abs(self.slice_z[nearest] - z) <= Z_TOLERANCE_FRACTION * self.gap_mm:
            return nearest
        if self.slice_z[0] < z < self.slice_z[-1]:
            raise LidcXmlError(f"{xml}: {what} lies on z={z:g} mm, between the slices of series {self.series_uid} "
                               f"(a slice is missing, or the XML belongs to another series)")
        return None

    def check_some_in_series(self, xml: Path, items: list) -> None:
        """At least one marked slice must be in the series (else the XML is not this series')."""
        if items and all(item.slice_index is None for item in items):
            zs = sorted({round(item.z_mm, 2) for item in items})
            raise LidcXmlError(f"{xml}: none of its marked slices (z {zs[0]:g}..{zs[-1]:g} mm) is in series "
                               f"{self.series_uid} (z {self.slice_z[0]:g}..{self.slice_z[-1]:g} mm)")

    def to_lps(self, points_cr: np.ndarray, z: float) -> np.ndarray:
        """(P, 2) pixel (column, row) on the slice at LPS z -> (P, 3) LPS mm."""
        in_plane = self.origin + points_cr[:, :1] * self.col_step + points_cr[:, 1:2] * self.row_step
        return in_plane + ((z - in_plane[:, 2]) / self.normal[2])[:, None] * self.normal

    def rasterise(self, outline: LidcOutline) -> np.ndarray:
        """Linear indices (layer, row, column) of the outline filled, boundary pixels included."""
        rows, cols = self.shape_rc
        r, c = outline.points_cr[:, 1], outline.points_cr[:, 0]
        rr, cc = polygon(r, c, shape=self.shape_rc)
        pr, pc = polygon_perimeter(np.rint(r).astype(int), np.rint(c).astype(int), shape=self.shape_rc)
        flat = np.concatenate([rr * cols + cc, pr * cols + pc]).astype(np.int64)
        return np.unique(flat) + self._layer(outline.z_mm) * rows * cols

    def lps_of(self, voxels: np.ndarray) -> np.ndarray:
        """(V,) linear indices on the marking grid -> (V, 3) LPS mm of the voxel centres."""
        rows, cols = self.shape_rc
        z_of_layer = np.empty(len(self.layers))
        z_of_layer[list(self.layers.values())] = list(self.layers.keys())
        layer, rest = np.divmod(voxels, rows * cols)
        points = np.stack([rest % cols, rest // cols], axis=1).astype(float)
        in_plane = self.origin + points[:, :1] * self.col_step + points[:, 1:2] * self.row_step
        return in_plane + ((z_of_layer[layer] - in_plane[:, 2]) / self.normal[2])[:, None] * self.normal


# --- clustering -----------------------------------------------------------------------------------------------------

def _cluster(marks: list, grid: _SeriesGrid) -> list:
    """Greedy merging of overlapping marks by decreasing IoU, never two marks of one reader in a nodule."""
    groups = [{i} for i in range(len(marks))]
    owner = list(range(len(marks)))
    links = []
    for a in range(len(marks)):
        for b in range(a + 1, len(marks)):
            if marks[a].reader == marks[b].reader:
                continue
            shared = np.intersect1d(marks[a].voxels, marks[b].voxels, assume_unique=True).size
            if shared:
                links.append((shared / (marks[a].voxels.size + marks[b].voxels.size - shared), a, b))
    for _, a, b in sorted(links, key=lambda t: (-t[0], t[1], t[2])):
        ga, gb = owner[a], owner[b]
        if ga == gb or {marks[i].reader for i in groups[ga]} & {marks[i].reader for i in groups[gb]}:
            continue
        groups[ga] |= groups[gb]
        for i in groups[gb]:
            owner[i] = ga
        groups[gb] = set()
    nodules = [_nodule([marks[i] for i in sorted(g)], grid) for g in groups if g]
    return sorted(nodules, key=lambda n: (-n.n_readers, float(n.center_lps_mm[2])))


def _nodule(marks: list, grid: _SeriesGrid) -> LidcNodule:
    voxels, votes = np.unique(np.concatenate([m.voxels for m in marks]), return_counts=True)
    consensus = voxels[votes >= min(CONSENSUS_LEVEL * len(marks), votes.max())]  # never empty
    lps = grid.lps_of(consensus)
    ratings = {}
    for name in RATING_NAMES:
        given = [m.ratings[name] for m in marks if m.ratings.get(name) is not None]
        ratings[name] = float(np.mean(given)) if given else None
    return LidcNodule(tuple(marks), lps, lps.mean(axis=0), consensus.size * grid.voxel_mm3, ratings)
