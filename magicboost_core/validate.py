"""Shared checks for untrusted input: files to read, numbers, devices, output folders and output names.

Every entry point (the CLI, the workflow runner, the ComfyUI nodes) uses these instead of ad-hoc checks,
so that one kind of bad input gets one kind of clear error everywhere. The errors are ``ValueError``
subclasses whose message names the input (a file, an option, a node input) and the fix; those of the
engine derive from :class:`InputError`, whose ``field`` names the setting or input concerned (so callers
such as the nodes map an error to their own inputs without reading its message).

* **Files to read** (:func:`open_regular_file`, :func:`read_limited`, :func:`load_json_file`): regular
  files only (a FIFO, a device such as ``/dev/zero`` or a folder is refused without being read; the
  file is opened non-blocking and checked with ``fstat``, so a path swapped after the check cannot
  slip through), with a size cap per kind of file (:data:`SIZE_LIMITS`, overridable with the
  environment variables ``MAGICBOOST_MAX_<KIND>_BYTES``).
* **Numbers** (:func:`finite_number`, :func:`number_list`): finite, inside the stated bounds.
* **Output folders** (:func:`prepare_output_dir`, :func:`output_dir_for_run`): created if needed, must be a
  writable folder; checked *before* the work starts; a failed command removes the empty folders it made.
  :func:`output_subfolder` resolves symlinks and refuses a sub-folder that leads outside the output root.
* **Output names** (:func:`check_filename_prefix`, :func:`claim_unique_path`): no NUL bytes or control
  characters, relative, inside the output folder; names are claimed with ``O_CREAT | O_EXCL`` so
  parallel runs writing into one folder never pick the same name (each writer then replaces its own
  placeholder atomically with ``os.replace``).
* **Devices and threads** (:func:`resolve_device`, :func:`threads_from_env`).
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import re
import stat
import tempfile
from pathlib import Path

__all__ = [
    "InputError", "InputFileError", "InvalidValueError", "OutputPathError", "readable_error", "SIZE_LIMITS", "size_limit",
    "open_regular_file", "check_regular_file", "read_limited", "load_json_file", "finite_number", "number_list",
    "prepare_output_dir", "output_dir_for_run", "output_subfolder", "check_filename_prefix", "claim_unique_path",
    "resolve_device", "threads_from_env", "OutputExistsError", "refuse_existing", "write_bytes_atomic",
]


def readable_error(cls):
    """Class decorator: show the exception as ``Name`` instead of ``package.module.Name``.

    ComfyUI's error dialog prints ``module.qualname`` of the exception type unless the module is
    ``builtins``; the pack is imported under a path-derived package name, which made our errors read
    ``custom_nodes.ComfyUI-MagicBoost.nodes.common.NodeInputError``.
    """
    cls.__module__ = "builtins"
    return cls


class InputError(ValueError):
    """Bad input. ``field``: the setting or input it concerns (e.g. a RefineConfig field such as ``"steps"``
    or ``"aiu.strength"``, or ``"mesh"``), or None when no single one is to blame."""

    def __init__(self, message: str = "", field: str | None = None):
        super().__init__(message)
        self.field = field


@readable_error
class InputFileError(InputError):
    """A file to read is missing, not a regular file, too large, or not in the expected format."""


@readable_error
class InvalidValueError(InputError):
    """A number or option is NaN/infinite, out of range, or not one of the accepted values."""


@readable_error
class OutputPathError(InputError):
    """An output folder or file name cannot be used (not writable, outside the output folder, bad chars)."""


# ------------------------------------------------------------------------------------------ files to read
_MiB = 1 << 20
#: Default size caps in bytes per kind of input file (``MAGICBOOST_MAX_<KIND>_BYTES`` overrides one).
SIZE_LIMITS = {
    "mesh": 1024 * _MiB,      # OBJ / PLY / GLB / glTF
    "material": 16 * _MiB,    # OBJ .mtl
    "image": 256 * _MiB,      # PNG / JPG / WEBP view images and textures
    "workflow": 64 * _MiB,    # API / UI workflow JSON
    "config": 4 * _MiB,       # model config.json
}


def size_limit(kind: str) -> int:
    """The size cap in bytes for a kind of file (see :data:`SIZE_LIMITS`); env override wins."""
    env = os.environ.get(f"MAGICBOOST_MAX_{kind.upper()}_BYTES", "").strip()
    if env:
        try:
            return max(1, int(env))
        except ValueError:
            raise InvalidValueError(f"MAGICBOOST_MAX_{kind.upper()}_BYTES={env!r} is not a whole number of bytes; "
                                    "unset it or give e.g. 1073741824.") from None
    return SIZE_LIMITS[kind]


def _size_text(n: int) -> str:
    return f"{n / _MiB:.0f} MiB" if n >= _MiB else f"{n} bytes"


def open_regular_file(path, what: str = "file", kind: str | None = None) -> int:
    """Open ``path`` for reading and return the OS file descriptor (caller closes it).

    Refuses (:class:`InputFileError`, naming ``what`` and the path) a missing path, a folder, a FIFO,
    a device or socket, and — when ``kind`` is given — a file larger than :func:`size_limit`. The open
    is non-blocking, so a FIFO with no writer cannot hang; the type check uses ``fstat`` on the open
    descriptor.
    """
    path = os.fspath(path)
    if "\x00" in path:
        raise InputFileError(f"{what}: the path {path!r} contains a NUL byte; give a normal file name.")
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        raise InputFileError(f"{what} not found: '{path}'. Check the path.") from None
    except IsADirectoryError:
        raise InputFileError(f"{what}: '{path}' is a folder; give the file itself.") from None
    except PermissionError:
        raise InputFileError(f"{what}: '{path}' cannot be read (permission denied); check its permissions.") from None
    except OSError as e:
        raise InputFileError(f"{what}: '{path}' cannot be opened ({e.strerror or e}); check the path.") from None
    try:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            raise InputFileError(f"{what}: '{path}' is a folder; give the file itself.")
        if not stat.S_ISREG(st.st_mode):
            kind_name = ("a device" if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode) else
                         "a FIFO (named pipe)" if stat.S_ISFIFO(st.st_mode) else "not a regular file")
            raise InputFileError(f"{what}: '{path}' is {kind_name}, not a regular file; only ordinary files are "
                                 "read. Give the path of a file on disk.")
        if kind is not None and st.st_size > size_limit(kind):
            cap = size_limit(kind)
            raise InputFileError(
                f"{what}: '{path}' is {_size_text(st.st_size)}, more than the {_size_text(cap)} allowed for a "
                f"{kind} file. Use a smaller file, or raise the cap with MAGICBOOST_MAX_{kind.upper()}_BYTES.")
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd


def check_regular_file(path, what: str = "file", kind: str | None = None) -> Path:
    """Like :func:`open_regular_file` but only checks (for readers that open the file themselves)."""
    os.close(open_regular_file(path, what, kind))
    return Path(path)


def read_limited(path, what: str = "file", kind: str = "mesh") -> bytes:
    """All bytes of a regular file of at most :func:`size_limit` (``kind``) bytes.

    The cap also holds while reading (a file that grows after the check is cut off with an error).
    """
    fd = open_regular_file(path, what, kind)
    cap = size_limit(kind)
    with os.fdopen(fd, "rb") as f:
        data = f.read(cap + 1)
    if len(data) > cap:
        raise InputFileError(f"{what}: '{path}' grew past the {_size_text(cap)} allowed for a {kind} file while "
                             f"being read; use a smaller file or raise MAGICBOOST_MAX_{kind.upper()}_BYTES.")
    return data


def load_json_file(path, what: str = "JSON file", kind: str = "workflow"):
    """Parse a UTF-8 JSON file (regular file, size-capped). Errors name the file, the line and the fix."""
    data = read_limited(path, what, kind)
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise InputFileError(f"{what} '{path}' is not UTF-8 text (byte {e.start} is 0x{data[e.start]:02x}); "
                             "save it as UTF-8 JSON.") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise InputFileError(f"{what} '{path}' is not valid JSON (line {e.lineno}, column {e.colno}: {e.msg}); "
                             "fix the file or export it again.") from None
    except RecursionError:
        raise InputFileError(f"{what} '{path}' is nested too deeply to be a valid file; export it again.") from None


# ------------------------------------------------------------------------------------------ numbers
def finite_number(value, name: str, lo: float | None = None, hi: float | None = None, integer: bool = False,
                  fix: str = ""):
    """``value`` as a float (or int when ``integer``), finite and within [lo, hi]; else
    :class:`InvalidValueError` naming ``name`` (e.g. ``"--target-az"``) and the allowed range."""
    rng = (f" between {lo:g} and {hi:g}" if lo is not None and hi is not None else
           f" >= {lo:g}" if lo is not None else f" <= {hi:g}" if hi is not None else "")
    hint = f" {fix}" if fix else f" Give a finite number{rng}."
    if isinstance(value, bool):
        raise InvalidValueError(f"{name}: expected a number, got {value!r}.{hint}")
    try:
        num = float(value)
    except (TypeError, ValueError):
        raise InvalidValueError(f"{name}: {value!r} is not a number.{hint}") from None
    if not math.isfinite(num):
        raise InvalidValueError(f"{name}: {value!r} is not a finite number.{hint}")
    if integer:
        if num != int(num):
            raise InvalidValueError(f"{name}: {value!r} is not a whole number.{hint}")
        num = int(num)
    if (lo is not None and num < lo) or (hi is not None and num > hi):
        raise InvalidValueError(f"{name}: {value!r} is outside the allowed range{rng}.{hint}")
    return num


def number_list(text, name: str, lo: float | None = None, hi: float | None = None) -> list[float]:
    """'0,90,180' / '0 90 180' / '0;90' / a sequence -> finite floats; errors name ``name`` and the bad item."""
    if isinstance(text, (list, tuple)):
        items = list(text)
    else:
        items = [p for p in re.split(r"[,;\s]+", str(text or "")) if p]
    out = []
    for item in items:
        out.append(finite_number(item, name, lo, hi, fix="Write numbers separated by commas, e.g. '0, 90, 180, 270'."))
    return out


# ------------------------------------------------------------------------------------------ devices, threads
def resolve_device(text, option: str = "--device"):
    """'auto' | 'cpu' | 'cuda' | 'cuda:N' | 'mps' -> ``torch.device`` that exists on this machine."""
    import torch

    raw = "auto" if text is None else str(text).strip().lower()
    if raw in ("", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(raw)
    except (RuntimeError, ValueError):
        raise InvalidValueError(f"{option} {text!r} is not a device; use auto, cpu, cuda or cuda:N.") from None
    if dev.type == "cpu":
        return dev
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise InvalidValueError(f"{option} {text!r}: no CUDA GPU is available on this machine (or torch was "
                                    "installed without CUDA); use --device cpu or auto.")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise InvalidValueError(f"{option} {text!r}: there are only {torch.cuda.device_count()} CUDA device(s); "
                                    "use cuda:0 or auto.")
        return dev
    if dev.type == "mps" and getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return dev
    raise InvalidValueError(f"{option} {text!r} is not available here; use auto, cpu or cuda.")


def threads_from_env(value: str | None, name: str = "OMP_NUM_THREADS", default: int = 1) -> int:
    """Thread count from an environment value. OpenMP allows a list per nesting level ('4,2'): the first
    entry is the outer level, which is what torch uses."""
    if value is None or not str(value).strip():
        return default
    first = re.split(r"[,\s]+", str(value).strip())[0]
    try:
        n = int(first)
    except ValueError:
        raise InvalidValueError(f"{name}={value!r} is not a thread count; unset it or give a whole number such "
                                "as 4.") from None
    if n < 1:
        raise InvalidValueError(f"{name}={value!r}: the thread count must be at least 1.")
    return n


# ------------------------------------------------------------------------------------------ outputs
def prepare_output_dir(path, what: str = "--out") -> Path:
    """Create ``path`` if needed and make sure it is a writable folder; run this before the work.

    Raises :class:`OutputPathError` naming ``what`` when the path is an existing file, cannot be
    created, or is not writable (checked by creating and removing a probe file).
    """
    p = Path(os.fspath(path))
    if "\x00" in str(p):
        raise OutputPathError(f"{what}: the path {str(p)!r} contains a NUL byte; give a normal folder name.")
    if p.exists() and not p.is_dir():
        raise OutputPathError(f"{what} '{p}' is an existing file, not a folder; choose a folder path.")
    try:
        p.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OutputPathError(f"{what} '{p}' cannot be created ({e.strerror or e}); choose a folder you can "
                              "write to.") from None
    try:
        fd = os.open(p / f".magicboost-write-test-{os.getpid()}", os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
        os.close(fd)
        os.unlink(p / f".magicboost-write-test-{os.getpid()}")
    except FileExistsError:
        pass
    except OSError as e:
        raise OutputPathError(f"{what} '{p}' is not writable ({e.strerror or e}); choose a folder you can "
                              "write to.") from None
    return p


@contextlib.contextmanager
def output_dir_for_run(path, what: str = "--out"):
    """:func:`prepare_output_dir` for one command: yields the folder, and when the command fails, removes the
    folders it created for it again if they are still empty (a failed call leaves no empty folder behind;
    folders that existed before, and anything written into them, are never touched)."""
    p = Path(os.fspath(path)).absolute()
    first_new = None
    for folder in (p, *p.parents):
        if folder.exists():
            break
        first_new = folder
    out = prepare_output_dir(p, what)
    try:
        yield out
    except BaseException:
        folder = p
        while first_new is not None and folder.is_relative_to(first_new):
            try:
                folder.rmdir()  # only empty folders go
            except OSError:
                break
            folder = folder.parent
        raise


_BAD_NAME_CHARS = re.compile(r'[\x00-\x1f\x7f<>:"|?*]')


def check_filename_prefix(prefix, name: str = "filename_prefix") -> str:
    """A file name prefix relative to the output folder (may contain '/'): no NUL or control characters,
    none of ``<>:"|?*``, not absolute, no '..' leaving the folder. Returns it normalised with '/'."""
    if not isinstance(prefix, str):
        raise OutputPathError(f"{name}: expected text, got {type(prefix).__name__}; give e.g. 'magicboost/mesh'.")
    text = prefix.strip()
    bad = _BAD_NAME_CHARS.search(text)
    if bad:
        raise OutputPathError(f"{name} {prefix!r} contains the character {bad.group()!r}, which cannot be part of a "
                              "file name; use letters, digits, '-', '_' and '/' for sub-folders.")
    text = text.replace("\\", "/")
    if not text or text.endswith("/"):
        raise OutputPathError(f"{name} {prefix!r} has no file name part; give e.g. 'magicboost/mesh'.")
    if text.startswith("/") or re.match(r"^[A-Za-z]:", text):
        raise OutputPathError(f"{name} {prefix!r} is an absolute path; give a prefix relative to the output folder, "
                              "e.g. 'magicboost/mesh'.")
    parts = [p for p in text.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise OutputPathError(f"{name} {prefix!r} points outside the output folder ('..'); give a prefix relative to "
                              "the output folder, e.g. 'magicboost/mesh'.")
    return "/".join(parts)


def output_subfolder(root, subfolder: str, name: str = "filename_prefix") -> Path:
    """``root/subfolder`` created if needed, with symlinks resolved; refuses (:class:`OutputPathError`) a
    sub-folder that — through '..' or a symlink — lands outside ``root``."""
    root_real = Path(os.path.realpath(root))
    target = Path(os.path.realpath(os.path.join(root_real, subfolder or ".")))
    if os.path.commonpath([root_real, target]) != str(root_real):
        raise OutputPathError(f"{name}: the sub-folder {subfolder!r} leads outside the output folder {root_real} "
                              f"(to {target}, through a symlink or '..'); choose another sub-folder.")
    if target.exists() and not target.is_dir():
        raise OutputPathError(f"{name}: '{target}' is a file, not a folder; choose another sub-folder name.")
    target.mkdir(parents=True, exist_ok=True)
    if os.path.realpath(target) != str(target):  # replaced by a symlink meanwhile
        raise OutputPathError(f"{name}: the sub-folder {subfolder!r} changed while being created; try again.")
    return target


def claim_unique_path(folder, name_for, start: int = 1, limit: int = 100000) -> tuple[Path, int]:
    """Reserve a new file name in ``folder``: tries ``name_for(counter)`` for counter = start, start + 1, ...
    and creates the first free one exclusively (``O_CREAT | O_EXCL``, an empty placeholder).

    Returns (path, counter). Parallel processes never get the same name. The caller writes the real file
    with a temporary file + ``os.replace`` onto the placeholder, or removes it on failure.
    """
    folder = Path(folder)
    for counter in range(start, start + limit):
        path = folder / name_for(counter)
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY | getattr(os, "O_NOFOLLOW", 0), 0o644)
        except FileExistsError:
            continue
        except OSError as e:
            raise OutputPathError(f"cannot create '{path}' ({e.strerror or e}); check that the output folder is "
                                  "writable.") from None
        os.close(fd)
        return path, counter
    raise OutputPathError(f"no free file name in '{folder}' after {limit} tries; clean up the folder or use "
                          "another prefix.")


# ---------------------------------------------------------------------------------------------------
# safe writing: never replace a file unasked, never leave a half-written one
class OutputExistsError(ValueError):
    """An output file already exists and ``overwrite`` was not requested."""


def refuse_existing(paths, overwrite: bool) -> None:
    """Raise :class:`OutputExistsError` naming the first of ``paths`` that exists, unless ``overwrite``."""
    if overwrite:
        return
    for p in paths:
        if Path(p).exists():
            raise OutputExistsError(f"'{p}' already exists; pass overwrite=True to replace it, or choose another name.")


def write_bytes_atomic(path, data: bytes, overwrite: bool = False) -> Path:
    """Write ``data`` to ``path`` through a temporary file in the same folder and an atomic rename.

    Creates missing parent folders. Raises :class:`OutputExistsError` if ``path`` exists and
    ``overwrite`` is False.
    """
    path = Path(path)
    refuse_existing([path], overwrite)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; give the file the usual permissions
        if not overwrite and path.exists():  # appeared meanwhile
            raise OutputExistsError(f"'{path}' already exists; pass overwrite=True to replace it.")
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path
