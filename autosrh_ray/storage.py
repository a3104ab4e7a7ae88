"""Paths that may be URIs: local paths, ``file://``, ``s3://``, ``gs://`` (anything ``pyarrow.fs`` resolves).

Every read or write of the dataset, the prepared directory, Train storage and run outputs goes through these
helpers, so the same code serves a laptop's disk and a bucket. Credentials and endpoints come from the
environment, never from a config file (``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``, ``AWS_ENDPOINT_URL`` for
an S3-compatible server, ``GOOGLE_APPLICATION_CREDENTIALS``, ...); pyarrow reads them.

A ``file://`` URI becomes its plain local path; a local path is returned as given (relative paths stay relative).
"""
from __future__ import annotations

import fnmatch
import io
import posixpath
from functools import lru_cache
from pathlib import Path
from typing import IO

import pyarrow.fs as pafs

READ_BUFFER = 1 << 20


def is_uri(path: str | Path) -> bool:
    """Whether ``path`` names remote storage (``scheme://``, not ``file://``)."""
    text = str(path)
    return "://" in text and not text.startswith("file://")


def local_path(path: str | Path) -> str:
    """``file:///x`` → ``/x``; anything else unchanged."""
    text = str(path)
    return text[len("file://"):] if text.startswith("file://") else text


def absolute(path: str | Path) -> str:
    """A URI unchanged; a local path (or ``file://`` URI) made absolute (``~`` expanded)."""
    text = local_path(path)
    return text if is_uri(text) else str(Path(text).expanduser().absolute())


@lru_cache(maxsize=32)
def _remote(scheme_and_authority: str) -> pafs.FileSystem:
    return pafs.FileSystem.from_uri(scheme_and_authority + "/")[0]


def resolve(path: str | Path) -> tuple[pafs.FileSystem, str]:
    """(filesystem, path inside it) for ``path``; the filesystem object is cached per scheme and bucket."""
    text = local_path(path)
    if not is_uri(text):
        return pafs.LocalFileSystem(), absolute(text)
    scheme, rest = text.split("://", 1)
    bucket = rest.split("/", 1)[0]
    return _remote(f"{scheme}://{bucket}"), rest.rstrip("/")


def join(base: str | Path, *parts: str) -> str:
    """``base/part/...`` for a local path or a URI."""
    text = local_path(base)
    if is_uri(text):
        return posixpath.join(text.rstrip("/"), *parts)
    return str(Path(text).joinpath(*parts))


def info(path: str | Path) -> pafs.FileInfo:
    fs, p = resolve(path)
    return fs.get_file_info(p)


def exists(path: str | Path) -> bool:
    return info(path).type != pafs.FileType.NotFound


def is_file(path: str | Path) -> bool:
    return info(path).type == pafs.FileType.File


def is_dir(path: str | Path) -> bool:
    return info(path).type == pafs.FileType.Directory


def size(path: str | Path) -> int:
    return int(info(path).size)


def mtime_ns(path: str | Path) -> int:
    found = info(path).mtime_ns
    return int(found) if found is not None else 0


def list_dir(path: str | Path) -> list[str]:
    """Names directly in directory ``path`` (files and folders)."""
    fs, p = resolve(path)
    return [posixpath.basename(i.path) for i in fs.get_file_info(pafs.FileSelector(p, allow_not_found=True))]


def glob_files(pattern: str) -> list[str]:
    """Files matching a glob whose wildcards are in the last path component (``s3://b/day_*.gz``)."""
    text = local_path(pattern)
    directory, name = text.rsplit("/", 1) if "/" in text else (".", text)
    return [join(directory, n) for n in list_dir(directory) if fnmatch.fnmatch(n, name)]


def open_input(path: str | Path) -> IO[bytes]:
    """A buffered, seekable binary reader (``readline`` works on every filesystem)."""
    text = local_path(path)
    if not is_uri(text):
        return open(Path(text).expanduser(), "rb")
    fs, p = resolve(text)
    return io.BufferedReader(fs.open_input_file(p), buffer_size=READ_BUFFER)


def parquet_source(path: str | Path):
    """What ``pyarrow.parquet`` should open for ``path``: the local path itself, or a remote random-access file."""
    text = local_path(path)
    if not is_uri(text):
        return text
    fs, p = resolve(text)
    return fs.open_input_file(p)


def read_bytes(path: str | Path) -> bytes:
    with open_input(path) as fh:
        return fh.read()


def read_text(path: str | Path) -> str:
    return read_bytes(path).decode("utf-8")


def makedirs(path: str | Path) -> None:
    fs, p = resolve(path)
    fs.create_dir(p, recursive=True)


def write_bytes(path: str | Path, data: bytes) -> None:
    """Write a whole file; local writes go through a temporary name and a rename (readers never see half)."""
    text = local_path(path)
    if not is_uri(text):
        from . import atomic

        with atomic.atomic_path(Path(text)) as tmp:
            Path(tmp).write_bytes(data)
        return
    fs, p = resolve(text)
    with fs.open_output_stream(p) as out:  # an object store shows an object only once it is complete
        out.write(data)


def write_text(path: str | Path, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def remove(path: str | Path) -> None:
    """Delete a file or a directory tree; nothing if it is not there."""
    fs, p = resolve(path)
    found = fs.get_file_info(p).type
    if found == pafs.FileType.Directory:
        fs.delete_dir(p)
    elif found == pafs.FileType.File:
        fs.delete_file(p)


def copy_tree(source: str | Path, destination: str | Path) -> None:
    """Copy a directory tree between any two filesystems (a staged output to its bucket)."""
    src_fs, src = resolve(source)
    dst_fs, dst = resolve(destination)
    dst_fs.create_dir(dst, recursive=True)
    pafs.copy_files(src, dst, source_filesystem=src_fs, destination_filesystem=dst_fs)
