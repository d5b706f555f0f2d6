"""Session stores: where a session's state (session-file bytes, see `codec.py`) lives between requests.

- `DiskStore`: a folder (made at the first write), one file per session (`OWNER/ID.session`, written atomically: a
  temporary file renamed into place, so a reader sees the old file or the new one, never half of one), with an
  in-memory LRU in front bounded in bytes. Each cached entry is checked against the file's (mtime, size), so several
  processes may share the folder.
- `RedisStore`: a Redis database (`redis://HOST:PORT/DB`), so several server processes share sessions. A SET is
  atomic.

Ids come from `secrets` (`new_session_id`); an owner is a digest of the API key that made the session ("public"
without keys), so a session is only found with the key that made it.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import threading
from abc import ABC, abstractmethod
from collections import OrderedDict
from pathlib import Path
from typing import Any

from ..atomic import atomic_write

SESSION_ID = re.compile(r"^sess_[A-Za-z0-9_-]{16,64}$")


def new_session_id() -> str:
    """An unguessable session id (144 random bits)."""
    return "sess_" + secrets.token_urlsafe(18)


def owner_of(api_key: str | None) -> str:
    """The owner name of sessions made with `api_key` (None: no keys configured)."""
    return "public" if api_key is None else "k" + hashlib.sha256(api_key.encode()).hexdigest()[:24]


class SessionStore(ABC):
    """Session bytes by (owner, id). Implementations are thread-safe."""

    @abstractmethod
    def get(self, owner: str, sid: str) -> bytes | None:
        """The stored bytes, or None when there is no such session for this owner."""

    @abstractmethod
    def put(self, owner: str, sid: str, data: bytes) -> None:
        """Store `data` atomically (replacing an older version)."""

    @abstractmethod
    def delete(self, owner: str, sid: str) -> bool:
        """Remove the session; False when there was none."""

    @abstractmethod
    def count(self) -> int:
        """Number of sessions stored (all owners)."""

    def describe(self) -> str:
        """A short description for the start-up banner."""
        return type(self).__name__


class DiskStore(SessionStore):
    """Sessions as files under `root`, with an LRU of at most `cache_bytes` bytes in memory."""

    def __init__(self, root: str | os.PathLike, cache_bytes: int = 256 << 20) -> None:
        # the folder is made by the first `put` (a server whose sessions are never used leaves no folder behind)
        self.root = Path(root)
        if self.root.exists() and not self.root.is_dir():
            raise ValueError(f"--session-store {self.root} exists and is not a folder")
        self.cache_bytes = cache_bytes
        self._lru: OrderedDict[tuple[str, str], tuple[tuple[int, int], bytes]] = OrderedDict()
        self._held = 0
        self._lock = threading.Lock()

    def _path(self, owner: str, sid: str) -> Path:
        return self.root / owner / f"{sid}.session"

    def _remember(self, key: tuple[str, str], stamp: tuple[int, int], data: bytes) -> None:
        with self._lock:
            old = self._lru.pop(key, None)
            if old is not None:
                self._held -= len(old[1])
            if len(data) > self.cache_bytes:
                return
            self._lru[key] = (stamp, data)
            self._held += len(data)
            while self._held > self.cache_bytes:
                _, (_, dropped) = self._lru.popitem(last=False)
                self._held -= len(dropped)

    def get(self, owner: str, sid: str) -> bytes | None:
        path = self._path(owner, sid)
        try:
            st = path.stat()
        except FileNotFoundError:
            return None
        stamp = (st.st_mtime_ns, st.st_size)
        with self._lock:
            hit = self._lru.get((owner, sid))
            if hit is not None and hit[0] == stamp:
                self._lru.move_to_end((owner, sid))
                return hit[1]
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        self._remember((owner, sid), stamp, data)
        return data

    def put(self, owner: str, sid: str, data: bytes) -> None:
        path = atomic_write(self._path(owner, sid), data, fsync=True)
        st = path.stat()
        self._remember((owner, sid), (st.st_mtime_ns, st.st_size), data)

    def delete(self, owner: str, sid: str) -> bool:
        with self._lock:
            old = self._lru.pop((owner, sid), None)
            if old is not None:
                self._held -= len(old[1])
        try:
            self._path(owner, sid).unlink()
        except FileNotFoundError:
            return False
        return True

    def count(self) -> int:
        return sum(1 for _ in self.root.glob("*/*.session"))

    def describe(self) -> str:
        return f"disk folder {self.root} (LRU {self.cache_bytes / 2**20:.0f} MiB)"


class RedisStore(SessionStore):
    """Sessions in Redis at `url` (redis://HOST:PORT/DB), under keys `PREFIX:OWNER:ID`."""

    def __init__(self, url: str, prefix: str = "ttt:session") -> None:
        import redis

        self.url, self.prefix = url, prefix
        self._client: Any = redis.Redis.from_url(url)
        self._client.ping()

    def _key(self, owner: str, sid: str) -> str:
        return f"{self.prefix}:{owner}:{sid}"

    def get(self, owner: str, sid: str) -> bytes | None:
        data = self._client.get(self._key(owner, sid))
        return None if data is None else bytes(data)

    def put(self, owner: str, sid: str, data: bytes) -> None:
        self._client.set(self._key(owner, sid), data)

    def delete(self, owner: str, sid: str) -> bool:
        return bool(self._client.delete(self._key(owner, sid)))

    def count(self) -> int:
        return sum(1 for _ in self._client.scan_iter(match=f"{self.prefix}:*", count=1000))

    def describe(self) -> str:
        return f"redis {self.url}"


def open_store(url: str, cache_bytes: int = 256 << 20) -> SessionStore:
    """A store from `--session-store`: `redis://HOST:PORT/DB`, or a folder path (`file://PATH` or `PATH`).

    Raises ValueError for another URL scheme or a path that is a file, and redis' ConnectionError when Redis cannot
    be reached."""
    if url.startswith(("redis://", "rediss://", "unix://")):
        return RedisStore(url)
    if "://" in url and not url.startswith("file://"):
        raise ValueError(f"--session-store must be a folder, file://PATH or redis://HOST:PORT/DB, got {url!r}")
    return DiskStore(url.removeprefix("file://"), cache_bytes)
