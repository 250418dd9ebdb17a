"""One scanner per original dataset layout. Each returns a ScannedDataset or raises one line.

- MVTec AD: `<cat>/train/good`, `<cat>/test/<type>` (any subset may be missing); PATH is a
  category folder or a root holding several categories. Binary good(0)/defect(1).
- NEU: NEU-DET (`IMAGES/<class>_<n>.jpg` beside `ANNOTATIONS/`, or `IMAGES/<class>/`) and the
  flat NEU-CLS folder (`Cr_1.bmp` ...). Six-class defect type; label = file-name prefix.
- DAGM 2007: `ClassN/{Train,Test}/*.PNG` with `Label/Labels.txt` (0 = good, 1 = defect);
  PATH is one `ClassN` folder or the root holding several. Binary, defect type = ClassN.
- folder: ImageFolder `PATH/<class>/*`. A class named good/ok/normal makes it binary
  (that class good, every other class a defect type); otherwise multi-class.
"""

from __future__ import annotations

import re
from pathlib import Path

from defectopt.data.records import BINARY_CLASSES, IMAGE_EXTS, Sample, ScannedDataset, list_images
from defectopt.errors import DefectoptError

GOOD_NAMES = {"good", "ok", "normal", "non_defective", "no_defect"}
NEU_CLASSES = ["crazing", "inclusion", "patches", "pitted_surface", "rolled-in_scale", "scratches"]
NEU_ABBREV = {"cr": "crazing", "in": "inclusion", "pa": "patches", "ps": "pitted_surface", "rs": "rolled-in_scale", "sc": "scratches"}


def _require_dir(path: Path, kind: str) -> Path:
    if not path.exists():
        raise DefectoptError(f"{kind} dataset folder {path} does not exist")
    if not path.is_dir():
        raise DefectoptError(f"{kind} dataset path {path} is not a folder")
    return path


def _rel(path: Path, root: Path) -> str:
    return path.relative_to(root).as_posix()


def _nonempty(ds: ScannedDataset) -> ScannedDataset:
    if not ds.samples:
        raise DefectoptError(f"{ds.kind} dataset folder {ds.root} contains no images in the expected layout")
    return ds


# --- MVTec AD -------------------------------------------------------------------------------

def _is_mvtec_category(folder: Path) -> bool:
    return (folder / "train").is_dir() or (folder / "test").is_dir()


def scan_mvtec(root: Path) -> ScannedDataset:
    root = _require_dir(root, "mvtec")
    if _is_mvtec_category(root):
        categories = [root]
    else:
        categories = sorted(d for d in root.iterdir() if d.is_dir() and _is_mvtec_category(d))
        if not categories:
            raise DefectoptError(
                f"{root} matches no MVTec AD layout: expected <category>/train/good or <category>/test/<type>"
            )
    multi = len(categories) > 1
    samples: list[Sample] = []
    for cat in categories:
        for split in ("train", "test"):
            split_dir = cat / split
            if not split_dir.is_dir():
                continue
            for type_dir in sorted(d for d in split_dir.iterdir() if d.is_dir()):
                label = 0 if type_dir.name == "good" else 1
                dtype = type_dir.name if not multi else f"{cat.name}/{type_dir.name}"
                if label == 0:
                    dtype = "good"
                samples.extend(Sample(_rel(p, root), label, dtype) for p in list_images(type_dir))
    return _nonempty(ScannedDataset("mvtec", root, list(BINARY_CLASSES), "binary", samples))


# --- NEU ------------------------------------------------------------------------------------

def _neu_class_of(stem: str) -> str | None:
    prefix = stem.rsplit("_", 1)[0] if "_" in stem else stem
    low = prefix.lower()
    if low in NEU_CLASSES:
        return low
    return NEU_ABBREV.get(low)


def scan_neu(root: Path) -> ScannedDataset:
    root = _require_dir(root, "neu")
    images_dir = next((root / n for n in ("IMAGES", "images", "Images") if (root / n).is_dir()), root)
    files: list[tuple[Path, str]] = []
    subdirs = sorted(d for d in images_dir.iterdir() if d.is_dir() and d.name.lower() in NEU_CLASSES)
    if subdirs:
        for d in subdirs:
            files.extend((p, d.name.lower()) for p in list_images(d))
    else:
        for p in list_images(images_dir):
            cls = _neu_class_of(p.stem)
            if cls is None:
                raise DefectoptError(
                    f"{p} does not follow the NEU naming <class>_<n> (classes: {', '.join(NEU_CLASSES)})"
                )
            files.append((p, cls))
    if not files:
        raise DefectoptError(
            f"{root} matches no NEU layout: expected IMAGES/<class>_<n>.jpg (NEU-DET) or <Cr|In|Pa|PS|RS|Sc>_<n> images (NEU-CLS)"
        )
    present = sorted({c for _, c in files}, key=NEU_CLASSES.index)
    index = {c: i for i, c in enumerate(present)}
    samples = [Sample(_rel(p, root), index[c], c) for p, c in files]
    return ScannedDataset("neu", root, present, "multiclass", samples)


# --- DAGM 2007 ------------------------------------------------------------------------------

_DAGM_CLASS = re.compile(r"^Class\d+$", re.IGNORECASE)


def _dagm_labels(label_file: Path) -> dict[str, int]:
    labels: dict[str, int] = {}
    for lineno, line in enumerate(label_file.read_text(errors="replace").splitlines(), 1):
        parts = line.split()
        if not parts or (len(parts) == 1 and parts[0].isdigit()):
            continue  # blank line or the count header
        if len(parts) < 3 or parts[1] not in ("0", "1"):
            raise DefectoptError(f"{label_file}:{lineno} is not a DAGM label line (index, 0/1, image file, ...)")
        labels[parts[2]] = int(parts[1])
    return labels


def scan_dagm(root: Path) -> ScannedDataset:
    root = _require_dir(root, "dagm")
    classes = [root] if _DAGM_CLASS.match(root.name) else sorted(d for d in root.iterdir() if d.is_dir() and _DAGM_CLASS.match(d.name))
    samples: list[Sample] = []
    for cls_dir in classes:
        for part in ("Train", "Test"):
            part_dir = cls_dir / part
            if not part_dir.is_dir():
                continue
            label_file = part_dir / "Label" / "Labels.txt"
            if not label_file.is_file():
                raise DefectoptError(f"DAGM folder {part_dir} has no Label/Labels.txt")
            labels = _dagm_labels(label_file)
            for p in list_images(part_dir):
                if p.name not in labels:
                    raise DefectoptError(f"DAGM image {p} is not listed in {label_file}")
                label = labels[p.name]
                samples.append(Sample(_rel(p, root), label, cls_dir.name if label else "good"))
    if not classes or not samples:
        raise DefectoptError(f"{root} matches no DAGM 2007 layout: expected ClassN/Train|Test with Label/Labels.txt")
    return ScannedDataset("dagm", root, list(BINARY_CLASSES), "binary", samples)


# --- ImageFolder ----------------------------------------------------------------------------

def scan_folder(root: Path) -> ScannedDataset:
    root = _require_dir(root, "folder")
    class_dirs = sorted(d for d in root.iterdir() if d.is_dir() and any(f.suffix.lower() in IMAGE_EXTS for f in d.iterdir()))
    if not class_dirs:
        raise DefectoptError(f"{root} matches no ImageFolder layout: expected <class>/<image> subfolders with images")
    good = [d for d in class_dirs if d.name.lower() in GOOD_NAMES]
    samples: list[Sample] = []
    if good:
        for d in class_dirs:
            label = 0 if d in good else 1
            samples.extend(Sample(_rel(p, root), label, "good" if label == 0 else d.name) for p in list_images(d))
        return ScannedDataset("folder", root, list(BINARY_CLASSES), "binary", samples)
    if len(class_dirs) < 2:
        raise DefectoptError(f"ImageFolder dataset {root} has only one class folder ({class_dirs[0].name}); need 2 or more")
    names = [d.name for d in class_dirs]
    for i, d in enumerate(class_dirs):
        samples.extend(Sample(_rel(p, root), i, d.name) for p in list_images(d))
    return ScannedDataset("folder", root, names, "multiclass", samples)


SCANNERS = {"mvtec": scan_mvtec, "neu": scan_neu, "dagm": scan_dagm, "folder": scan_folder}
