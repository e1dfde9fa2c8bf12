"""Load stage: any scalar 3D volume SimpleITK reads (NIfTI, NRRD, MHA, a DICOM series folder) or a 2D PNG/JPEG.

Only pixels and geometry are kept: no metadata (names, IDs, dates, institution) leaves this module.
"""

from __future__ import annotations

import gzip
import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from .errors import BrainXAIError
from .guard import not_an_mri

IMAGE_2D = {".png", ".jpg", ".jpeg"}
MIN_INPLANE_VOXELS = 32
MIN_EXTENT_MM = 60.0  # smaller than any adult brain in-plane
MAX_VOXEL_BYTES = 2 * 1024**3  # what a header may declare: refused before anything that size is allocated
MAX_CHROMA = 0.02  # greyscale saved as RGB (and its JPEG colour noise) stays well below
SHEAR_TOLERANCE = 1e-3  # |cos| between voxel axes above this: the grid is not orthogonal
_CHUNK = 16 * 1024**2


@dataclass(frozen=True)
class InputInfo:
    kind: str  # "volume" | "slice"
    format: str  # "NIfTI", "NRRD", "MetaImage", "DICOM", "PNG", "JPEG", ...
    warnings: tuple[str, ...] = ()  # what was repaired or assumed while reading; goes into the findings


def _format_of(path: Path) -> str:
    name = path.name.lower()
    for suffix, fmt in ((".nii.gz", "NIfTI"), (".nii", "NIfTI"), (".nrrd", "NRRD"), (".nhdr", "NRRD"),
                        (".mha", "MetaImage"), (".mhd", "MetaImage"), (".png", "PNG"), (".jpg", "JPEG"),
                        (".jpeg", "JPEG"), (".dcm", "DICOM")):
        if name.endswith(suffix):
            return fmt
    return "other"  # any other format SimpleITK reads; the findings schema allows only known names


# A folder's other series with fewer files than this are localisers / scouts, not the volume to analyse.
MIN_SERIES_FILES = 10
MAX_TILT_DEGREES = 0.5  # below this a tilted series is read as if orthogonal (< 0.1 voxel across a head)
SPACING_TOLERANCE = 0.05  # slice steps may differ by 5 % (rounding in the scanner's positions)
_COLOUR = ("RGB", "YBR_FULL", "YBR_FULL_422", "YBR_PARTIAL_422", "YBR_ICT", "YBR_RCT", "PALETTE COLOR")


def _dicom_tags(path: str) -> dict[str, str]:
    reader = sitk.ImageFileReader()
    reader.SetFileName(path)
    reader.ReadImageInformation()  # the header only
    return {k: reader.GetMetaData(k).strip() for k in reader.GetMetaDataKeys()}


def _floats(value: str | None) -> np.ndarray | None:
    try:
        return np.array([float(v) for v in value.split("\\")]) if value else None
    except ValueError:
        return None


def _choose_series(folder: Path, series: str | None) -> tuple[list[str], list[str]]:
    ids = sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder))
    if not ids:
        raise BrainXAIError(f"no DICOM series in folder {folder}: give a folder of DICOM files or a volume file")
    files = {i: list(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), i)) for i in ids}
    if series is not None:
        if series not in files:
            raise BrainXAIError(f"no DICOM series {series} in {folder}: it holds {', '.join(files)}")
        return files[series], []
    volumes = [i for i in ids if len(files[i]) >= MIN_SERIES_FILES]
    if len(ids) == 1 or len(volumes) == 1:
        chosen = ids[0] if len(ids) == 1 else volumes[0]
        skipped = [i for i in ids if i != chosen]
        notes = [f"Input file: DICOM folder: {len(skipped)} other series with fewer than {MIN_SERIES_FILES} images (localisers) "
                 "ignored."] if skipped else []
        return files[chosen], notes

    def describe(i):
        tags = _dicom_tags(files[i][0])
        what = tags.get("0008|103e") or tags.get("0008|0060") or "no description"
        return f"{i} ({what}, {len(files[i])} file{'s' if len(files[i]) != 1 else ''})"

    raise BrainXAIError(f"{folder.name} holds {len(ids)} DICOM series: {'; '.join(describe(i) for i in ids)}; "
                        "choose one with --series UID")


def _read_dicom_series(folder: Path, series: str | None = None) -> tuple[sitk.Image, list[str]]:
    """One series of classic single-frame greyscale slices, uniformly spaced; a gantry tilt is resampled away."""
    files, notes = _choose_series(folder, series)
    tags = [_dicom_tags(f) for f in files]
    first = tags[0]
    if first.get("0028|0004", "").upper() in _COLOUR or int(first.get("0028|0002", "1") or 1) > 1:
        raise BrainXAIError(f"DICOM series in {folder.name} is a colour image ({first.get('0028|0004') or 'RGB'}; a "
                            "secondary capture or screenshot, not the scan): give the MRI series itself")
    frames = max(int(t.get("0028|0008", "1") or 1) for t in tags)
    declared = [int(first.get(k, "0") or 0) for k in ("0028|0011", "0028|0010", "0028|0100")]  # columns, rows, bits
    nbytes = float(np.prod(declared[:2], dtype=np.float64)) * len(files) * frames * max(declared[2], 8) / 8
    if nbytes > MAX_VOXEL_BYTES:
        raise BrainXAIError(f"DICOM series in {folder.name} declares {declared[0]}x{declared[1]} pixels x "
                            f"{len(files) * frames} images ({nbytes / 1024**3:.1f} GiB): more than any brain MRI "
                            "needs, so it was not read; check the files")
    if frames > 1:
        raise BrainXAIError(f"{Path(files[0]).name} in {folder.name} is a multi-frame (enhanced) DICOM object with "
                            f"{frames} frames: BrainXAI reads classic one-slice-per-file series; convert it to NIfTI "
                            "(dcm2niix, or Slicer's DICOM module) and give that")
    orientation, positions = _floats(first.get("0020|0037")), [_floats(t.get("0020|0032")) for t in tags]
    if len(files) < 2 or orientation is None or orientation.size != 6 or any(p is None or p.size != 3
                                                                             for p in positions):
        return sitk.ReadImage(files), notes  # one slice or no positions: nothing to check; later checks judge it
    row, col = orientation[:3], orientation[3:]
    normal = np.cross(row, col)
    pos = np.array(positions)
    order = np.argsort(pos @ normal, kind="stable")
    files, pos = [files[i] for i in order], pos[order]
    depth = pos @ normal
    steps = np.diff(depth)
    if np.any(steps < 1e-3):
        raise BrainXAIError(f"DICOM series in {folder.name} has two slices at the same position: it mixes "
                            "acquisitions (or echoes); export the single series to analyse")
    step = float(np.median(steps))
    if steps.max() > step * (1 + SPACING_TOLERANCE) or steps.min() < step * (1 - SPACING_TOLERANCE):
        gap = int(np.argmax(steps))
        missing = round(steps[gap] / step) - 1
        what = (f"{missing} slice{'s are' if missing > 1 else ' is'} missing after slice {gap + 1} of {len(files)} "
                f"(a {steps[gap]:.2f} mm gap where the others are {step:.2f} mm)" if missing >= 1 else
                f"the slice spacing is not uniform ({steps.min():.2f}-{steps.max():.2f} mm)")
        raise BrainXAIError(f"DICOM series in {folder.name}: {what}; the volume's geometry would be wrong: export "
                            "the complete, uniformly spaced series")
    img = sitk.ReadImage(files)  # a list of files: SimpleITK reads them as one series, in this order
    travel = pos[-1] - pos[0]
    along = float(travel @ normal)
    tilt = float(np.degrees(np.arctan2(np.linalg.norm(travel - along * normal), along)))
    if tilt <= MAX_TILT_DEGREES:
        return img, notes
    # Gantry tilt: the slices step along an oblique axis ITK cannot represent; resample onto an orthogonal grid.
    spacing = img.GetSpacing()
    lps = np.eye(4)
    lps[:3, 0], lps[:3, 1], lps[:3, 2] = row * spacing[0], col * spacing[1], travel / (len(files) - 1)
    lps[:3, 3] = pos[0]
    ras = np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps
    data = sitk.GetArrayFromImage(img).transpose(2, 1, 0).astype(np.float32)
    notes.append(f"Input file: DICOM series: a gantry tilt of {tilt:.1f} degrees: the volume was resampled onto an orthogonal "
                 "grid (trilinear).")
    return _resample_onto_orthogonal(data, ras), notes


def _to_gray_2d(img: sitk.Image, path: Path) -> sitk.Image:
    if img.GetNumberOfComponentsPerPixel() > 1:
        arr = sitk.GetArrayFromImage(img).astype(np.float32)[..., :3]
        chroma = float(np.mean(arr.max(-1) - arr.min(-1))) / max(float(np.ptp(arr)), 1e-6)
        if chroma > MAX_CHROMA:
            raise BrainXAIError(f"{path.name} is a colour image (mean chroma {chroma:.1%} of its range): MRI slices are "
                                "greyscale; give the scan itself, not a photograph or a coloured rendering")
        gray = sitk.GetImageFromArray(arr @ np.array([0.299, 0.587, 0.114], np.float32))
        gray.CopyInformation(img)
        img = gray
    if img.GetDimension() != 2:
        raise BrainXAIError(f"{path.name} is not a 2D image: PNG/JPEG inputs must be single slices")
    # One axial slice: image rows run anterior->posterior, columns patient right->left (radiological display).
    return sitk.JoinSeries(sitk.Cast(img, sitk.sitkFloat32))


def read_input(path: str | Path, assume_geometry: bool = False, series: str | None = None
               ) -> tuple[sitk.Image, InputInfo]:
    """Read and check an input; returns a float32 3D image with its geometry, or raises one clear BrainXAIError.
    assume_geometry: read a NIfTI whose header has no usable voxel size or orientation the way ITK defaults it,
    with a warning, instead of refusing it. series: the SeriesInstanceUID to read from a DICOM folder that holds
    several."""
    path = Path(path)
    if not path.exists():
        raise BrainXAIError(f"input not found: {path}")
    notes: list[str] = []
    fmt = "DICOM" if path.is_dir() else _format_of(path)
    try:
        if path.is_dir():
            img, notes = _read_dicom_series(path, series)
        else:
            sheared = False
            if fmt == "NIfTI":  # its own, stricter size check: before ITK reads (and warns about) the header
                notes, sheared = _check_nifti(path, assume_geometry)
            else:
                _check_declared_size(path)
            img = _read_sheared_nifti(path) if sheared else sitk.ReadImage(str(path))
    except BrainXAIError:
        raise
    except RuntimeError as exc:
        raise BrainXAIError(f"cannot read {path.name}: not an image SimpleITK understands (NIfTI, NRRD, MHA, DICOM folder, PNG, JPEG)") from exc
    kind = "volume"
    if path.suffix.lower() in IMAGE_2D:
        img, kind = _to_gray_2d(img, path), "slice"
    if img.GetDimension() == 4 and img.GetSize()[3] == 1:
        img = img[:, :, :, 0]
    if img.GetDimension() != 3:
        raise BrainXAIError(f"{path.name} is {img.GetDimension()}D: give a single 3D volume (split 4D series first)")
    if img.GetNumberOfComponentsPerPixel() != 1:
        raise BrainXAIError(f"{path.name} has {img.GetNumberOfComponentsPerPixel()} components per voxel (RGB/vector): give a scalar greyscale MRI volume")
    img = sitk.Cast(img, sitk.sitkFloat32)
    img, more = check_image(img, path.name)
    return img, InputInfo(kind, fmt, tuple(notes + more))


def _check_declared_size(path: Path) -> None:
    """A header can declare terabytes: refuse before the reader allocates them."""
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError:
        return  # not readable as an image: read_input says so
    size = np.array(reader.GetSize(), dtype=np.float64)
    nbytes = size.prod() * reader.GetNumberOfComponents() * _bytes_per_component(reader.GetPixelID())
    if nbytes > MAX_VOXEL_BYTES:
        raise BrainXAIError(f"{path.name} declares {'x'.join(str(int(v)) for v in size)} voxels "
                            f"({nbytes / 1024**3:.1f} GiB): more than the {MAX_VOXEL_BYTES / 1024**3:.0f} GiB any brain "
                            "MRI needs, so it was not read; check the file's header")


def _bytes_per_component(pixel_id: int) -> int:
    probe = sitk.Image([1] * 2, pixel_id)  # SimpleITK reports sizes per pixel type only through an image
    return max(1, probe.GetSizeOfPixelComponent())


def _nifti_header(f, name: str):
    import nibabel as nib

    magic = f.read(4)
    f.seek(0)
    sizes = {int.from_bytes(magic, "little"), int.from_bytes(magic, "big")}
    klass = nib.Nifti1Header if 348 in sizes else nib.Nifti2Header if 540 in sizes else None
    if klass is None:
        raise BrainXAIError(f"cannot read {name}: not a NIfTI file (its header size is not 348 or 540 bytes)")
    try:
        return klass.from_fileobj(f, check=False)  # unfixed: what the file says, not what nibabel would repair
    except Exception as exc:  # nibabel raises HeaderDataError, ValueError, struct errors
        raise BrainXAIError(f"{name} has a damaged NIfTI header ({exc}): copy the file again") from exc


def _check_nifti(path: Path, assume_geometry: bool) -> tuple[list[str], bool]:
    """What SimpleITK's NIfTI reader forgives and a diagnosis must not: a truncated or corrupt file (it pads with
    zeros), NaN/Inf voxels (it turns them into 0 silently), a zero/negative voxel size or no orientation (it
    assumes 1 mm and identity). Returns the warnings, and whether the grid is sheared (ITK cannot read it)."""
    name = path.name
    opener = gzip.open if name.lower().endswith(".gz") else open
    received = 0
    try:
        with opener(path, "rb") as f:
            try:
                hdr = _nifti_header(f, name)
            except (EOFError, OSError, zlib.error) as exc:
                raise BrainXAIError(f"cannot read {name}: not a NIfTI file ({exc})") from exc
            shape = tuple(int(n) for n in hdr.get_data_shape())
            dtype = hdr.get_data_dtype()
            if not shape or min(shape) < 1:
                raise BrainXAIError(f"{name}'s header declares {shape} voxels: it holds no image; check the file")
            nbytes = float(np.prod(shape, dtype=np.float64)) * dtype.itemsize
            if nbytes > MAX_VOXEL_BYTES:
                raise BrainXAIError(f"{name} declares {'x'.join(map(str, shape))} voxels ({nbytes / 1024**3:.1f} "
                                    f"GiB): more than the {MAX_VOXEL_BYTES / 1024**3:.0f} GiB any brain MRI needs, so "
                                    "it was not read; check the file's header")
            offset, need = int(hdr.get_data_offset()), int(nbytes)
            keep = offset + need if dtype.kind == "f" else 0  # only float voxels can be NaN/Inf: keep them to count
            f.seek(0)
            buf = bytearray()
            while chunk := f.read(_CHUNK):  # to the end: decompression must reach the end-of-stream and CRC
                received += len(chunk)
                if len(buf) < keep:
                    buf += chunk[: keep - len(buf)]
    except BrainXAIError:
        raise
    except (EOFError, OSError, zlib.error) as exc:
        raise BrainXAIError(f"{name} is truncated or corrupt ({exc}): copy the file again") from exc
    if received < offset + need:
        raise BrainXAIError(f"{name} is truncated: it holds {max(received - offset, 0):,} of the {need:,} bytes of "
                            "voxel data its header declares; copy the file again")
    notes: list[str] = []
    if dtype.kind == "f":
        data = np.frombuffer(buf, dtype=dtype, count=need // dtype.itemsize, offset=offset)
        bad = int(np.count_nonzero(~np.isfinite(data)))
        if bad == data.size:
            raise BrainXAIError(f"{name} has no finite voxel (all NaN or infinite): it holds no image")
        if bad:
            notes.append(_nonfinite_warning(bad, data.size))
    spatial = min(3, len(shape))
    pixdim = np.asarray(hdr["pixdim"][1:1 + spatial], dtype=np.float64)
    problems = []
    if not np.all(np.isfinite(pixdim) & (pixdim > 0)):
        problems.append(f"voxel size {[round(float(v), 4) for v in pixdim]} mm (zero, negative or not a number)")
    qcode, scode = int(hdr["qform_code"]), int(hdr["sform_code"])
    if qcode <= 0 and scode <= 0:
        problems.append("no orientation (qform and sform codes are both 0)")
    if problems:
        what = " and ".join(problems)
        if not assume_geometry:
            raise BrainXAIError(f"{name}'s header has {what}: positions, sizes and left/right cannot be trusted; fix "
                                "the header, or pass --assume-geometry to read it as ITK defaults it")
        notes.append(f"Input file: its header has {what}; it was read as ITK defaults it (--assume-geometry): volumes, "
                     "distances, atlas regions and left/right are unverified.")
    sheared = False
    if scode > 0:
        m = np.asarray(hdr.get_sform(), dtype=np.float64)[:3, :3]
        norms = np.linalg.norm(m, axis=0)
        if np.all(norms > 0):
            cosines = (m / norms).T @ (m / norms) - np.eye(3)
            shear = float(np.abs(cosines).max())
            if shear > SHEAR_TOLERANCE:
                sheared = True
                notes.append(f"Input file: its voxel grid is sheared (non-orthogonal axes, largest cosine "
                             f"{shear:.3f}): it was resampled onto an orthogonal grid of the same voxel size, on "
                             "which every output lies.")
    return notes, sheared


def _read_sheared_nifti(path: Path) -> sitk.Image:
    import nibabel as nib

    img = nib.load(str(path))
    return _resample_onto_orthogonal(np.nan_to_num(np.asanyarray(img.dataobj, dtype=np.float32)), img.affine)


def _resample_onto_orthogonal(data: np.ndarray, affine: np.ndarray) -> sitk.Image:
    """ITK reads only orthogonal grids: resample (nilearn, trilinear) the (i, j, k) array with its RAS affine onto
    the orthonormal grid nearest to it, with the same voxel sizes, covering the same field of view."""
    import nibabel as nib
    from nilearn.image import resample_img

    m = affine[:3, :3]
    u, _, vt = np.linalg.svd(m)
    rotation = u @ vt  # the nearest orthonormal axes (polar decomposition)
    target = rotation @ np.diag(np.linalg.norm(m, axis=0))
    out = resample_img(nib.Nifti1Image(data, affine), target_affine=target, interpolation="linear",
                       force_resample=True, copy_header=True)
    with tempfile.TemporaryDirectory(prefix="brainxai-shear-") as tmp:
        tmp_path = Path(tmp) / "resampled.nii"
        nib.save(nib.Nifti1Image(np.asarray(out.dataobj, dtype=np.float32), out.affine), tmp_path)
        return sitk.ReadImage(str(tmp_path))


def _nonfinite_warning(bad: int, total: int) -> str:
    voxels = "1 voxel was" if bad == 1 else f"{bad:,} voxels ({100 * bad / total:.2g} % of the volume) were"
    return f"Input file: {voxels} NaN or infinite: set to 0, so counted as background."


def check_image(img: sitk.Image, name: str) -> tuple[sitk.Image, list[str]]:
    """Checks every input passes; non-finite voxels are set to 0. Returns the image and the warnings."""
    notes = []
    arr = sitk.GetArrayViewFromImage(img)
    finite = np.isfinite(arr)
    if not finite.all():
        if not finite.any():
            raise BrainXAIError(f"{name} has no finite voxel (all NaN or infinite): it holds no image")
        notes.append(_nonfinite_warning(int(finite.size - finite.sum()), finite.size))
        fixed = sitk.GetImageFromArray(np.where(finite, arr, 0).astype(np.float32))
        fixed.CopyInformation(img)
        img = fixed
        arr = sitk.GetArrayViewFromImage(img)
    if float(arr.max()) == float(arr.min()):
        raise BrainXAIError(f"{name} is constant (all voxels {float(arr.min()):g}): it holds no image")
    size, spacing = np.array(img.GetSize()), np.array(img.GetSpacing())
    inplane = np.sort(size)[-2:]
    if inplane.min() < MIN_INPLANE_VOXELS:
        raise BrainXAIError(f"{name} is too small ({'x'.join(map(str, size))} voxels) to be a brain MRI: need at least {MIN_INPLANE_VOXELS} voxels in-plane")
    if size.min() > 1 and np.sort(size * spacing)[-2:].min() < MIN_EXTENT_MM:
        raise BrainXAIError(f"{name} covers only {np.round(size * spacing, 1).tolist()} mm: too small to be a brain; check its spacing")
    problem = not_an_mri(arr)
    if problem:
        raise BrainXAIError(f"{name} {problem}: give the MRI scan itself")
    return img, notes
