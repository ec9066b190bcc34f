"""Where each id's image file is: one pattern, several folders (a list or a glob), or class folders.

A `data.train_images` / `data.test_images` value is a pattern with `{id}` (`train/{id}.png`), a glob in its
folder part (`images_*/images/{id}.png`: every folder it matches), a list of such patterns, or, for the
training images only, a pattern with `{label}` as one folder (`train/{label}/{id}.png`: class folders, the
folder's name is the image's class). An id found in two folders stops with one line: a reader that picked
either would train on whichever came first.
"""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kit.data.common import first_items
from kit.errors import KitError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp", ".dcm")  # compared in lower case
LABEL = "{label}"


def is_image_name(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in IMAGE_SUFFIXES


def patterns_of(value: str | list[str]) -> list[str]:
    return [value] if isinstance(value, str) else list(value)


def is_plain(value: str | list[str]) -> bool:
    """One pattern with no glob and no {label}: every id's path is the pattern filled in (no listing needed)."""
    return isinstance(value, str) and not glob.has_magic(value) and LABEL not in value


def _split_pattern(pattern: str, key: str, where: str) -> tuple[str, str]:
    """(folder part, file template) of a pattern whose `{id}` is in its last component."""
    folder, _, name = pattern.rpartition("/")
    if "{id}" not in name or "{id}" in folder:
        raise KitError(f"{where}: data.{key} = '{pattern}': {{id}} must be in the file name (e.g. 'train/{{id}}.png')")
    return folder, name


def listed_names(folder: Path) -> set[str]:
    """The file names in `folder` (no stat per file: the directory entry's own type)."""
    try:
        with os.scandir(folder) as entries:
            return {e.name for e in entries if not e.name.startswith(".") and e.is_file()}
    except OSError:
        return set()


def concrete_folders(data_dir: Path, folder: str) -> list[str]:
    """The folders a folder part names: itself, or every folder its glob matches (sorted)."""
    if not glob.has_magic(folder):
        return [folder]
    return sorted(os.path.relpath(p, data_dir) for p in glob.glob(str(data_dir / folder)) if os.path.isdir(p))


def locate(data_dir: Path, value: str | list[str], ids: np.ndarray, key: str, where: str) -> np.ndarray:
    """(n,) path per id over every folder the patterns name (a missing id keeps the first pattern's path,
    so it is reported as missing); KitError naming the id and both folders when an id is in two."""
    found: dict[str, str] = {}
    first_path = None
    for pattern in patterns_of(value):
        folder, template = _split_pattern(pattern, key, where)
        folders = concrete_folders(data_dir, folder)
        if not folders:
            raise KitError(f"{where}: data.{key} = '{pattern}' matches no folder under {data_dir}; check data.{key}")
        for sub in folders:
            names = listed_names(data_dir / sub)
            for i in ids:
                name = template.format(id=i)
                if name in names:
                    path = str(data_dir / sub / name)
                    if i in found and found[i] != path:
                        raise KitError(
                            f"{data_dir}: id '{i}' has an image in two folders ({found[i]} and {path}); remove one, "
                            f"or set data.{key} to the folders that hold each id once"
                        )
                    found[i] = path
            if first_path is None:
                first_path = str(data_dir / sub / template)
    return np.array([found.get(i) or first_path.format(id=i) for i in ids], dtype=object)


@dataclass(frozen=True)
class ClassFolderImages:
    """Training images found in class folders: one id (the file name, less the template's suffix) per file."""

    ids: np.ndarray  # (n,) str
    labels: list[str]  # the folder name of each
    paths: np.ndarray  # (n,) str
    listing: str  # "label/name" lines: what the fingerprint reads instead of a CSV


def class_folder_images(data_dir: Path, pattern: str, where: str) -> ClassFolderImages:
    """Every image under `pattern`'s class folders (`train/{label}/{id}.png`), sorted by class then name;
    KitError when a folder holds no class folder or a file name is in two classes."""
    head, _, rest = pattern.partition(LABEL)
    if not rest.startswith("/") or "/" in rest[1:]:
        raise KitError(f"{where}: data.train_images = '{pattern}': {{label}} must be the folder just above the file (e.g. 'train/{{label}}/{{id}}.png')")
    template = rest[1:]
    prefix, _, suffix = template.partition("{id}")
    top = data_dir / head.rstrip("/") if head.strip("/") else data_dir
    try:
        with os.scandir(top) as entries:
            classes = sorted(e.name for e in entries if e.is_dir() and not e.name.startswith("."))
    except OSError:
        classes = []
    if not classes:
        raise KitError(f"{top}: no class folders (data.train_images = '{pattern}'); check data.train_images")
    ids, labels, paths, seen = [], [], [], {}
    for label in classes:
        for name in sorted(listed_names(top / label)):
            if not (is_image_name(name) and name.startswith(prefix) and name.endswith(suffix)):
                continue
            i = name[len(prefix): len(name) - len(suffix) if suffix else None]
            if i in seen:
                raise KitError(f"{top}: image '{name}' is in two class folders ('{seen[i]}' and '{label}'); remove one of them")
            seen[i] = label
            ids.append(i)
            labels.append(label)
            paths.append(str(top / label / name))
    if not ids:
        raise KitError(f"{top}: the class folders hold no image files named like '{template}'; check data.train_images")
    listing = "\n".join(f"{lab}/{os.path.basename(p)}" for lab, p in zip(labels, paths))
    return ClassFolderImages(np.array(ids, dtype=str), labels, np.array(paths, dtype=object), listing)


def describe(value: str | list[str]) -> str:
    return value if isinstance(value, str) else first_items(value, 3)
