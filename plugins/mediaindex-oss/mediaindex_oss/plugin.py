"""The ``oss`` storage backend: media in Alibaba Cloud OSS buckets, through ``alibabacloud-oss-v2``.

Credentials: ``OSS_ACCESS_KEY_ID`` / ``OSS_ACCESS_KEY_SECRET`` (``OSS_SESSION_TOKEN`` for STS),
or ``[oss] access_key_id`` / ``access_key_secret`` in config.toml (redacted from all output).
Where: ``[oss] region`` (``cn-hangzhou``) or ``OSS_REGION``; ``endpoint`` / ``OSS_ENDPOINT`` for
an internal, accelerated or other endpoint. ``[oss] bucket`` and ``prefix`` receive staging uploads.
"""
from __future__ import annotations

import contextlib
import datetime
import functools
import io
import os
import tempfile
from pathlib import Path
from typing import BinaryIO, Callable, Iterator

import alibabacloud_oss_v2 as oss
from alibabacloud_oss_v2 import exceptions as oss_errors

from mediaindex import hookimpl
from mediaindex.backends import (FatalError, ObjectInfo, PermanentError, StorageBackend, TransientError,
                                 list_partitioned, split_bucket_uri, version_stamp)

MB = 1 << 20
_DENIED = {"AccessDenied", "AccessForbidden"}
_BAD_KEYS = {"InvalidAccessKeyId", "SignatureDoesNotMatch", "SecurityTokenExpired", "InvalidSecurityToken",
             "RequestTimeTooSkewed"}


class BucketBroken(FatalError, OSError):
    """Every request would fail the same way (no such bucket, rejected credentials): work stops
    until the user acts. An OSError too: a watcher's stat keeps what it knows and goes on."""


class BucketUnavailable(TransientError, OSError):
    """OSS could not be reached or answered 5xx (after the SDK's own retries)."""


class BucketRefused(PermanentError, OSError):
    """OSS refused this object (access denied): retrying will not help."""


def _service_error(e: Exception) -> oss_errors.ServiceError | None:
    """The service's answer inside an SDK error, if the request got one."""
    while e is not None and not isinstance(e, oss_errors.ServiceError):
        e = e.unwrap() if hasattr(e, "unwrap") else None
    return e


def _missing(e: Exception) -> bool:
    se = _service_error(e)
    return se is not None and (se.status_code == 404 and se.code != "NoSuchBucket")


class _BodyReader(io.RawIOBase):
    """The SDK's response body (an iterator of chunks) as a file object, read as it arrives."""

    def __init__(self, body):
        self._body = body
        self._chunks = body.iter_bytes(block_size=1 << 16)
        self._left = b""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        while not self._left:
            self._left = next(self._chunks, None)
            if self._left is None:
                self._left = b""
                return 0
        n = min(len(buffer), len(self._left))
        buffer[:n] = self._left[:n]
        self._left = self._left[n:]
        return n

    def close(self) -> None:
        if not self.closed:
            self._body.close()
        super().close()


class OssStorage(StorageBackend):
    """Objects in OSS buckets, ``oss://bucket/key``. Reads only; writes and deletes nothing but
    its own staging uploads under ``[oss] bucket``/``prefix``."""

    scheme = "oss"

    def __init__(self, settings: dict | None = None,
                 credentials: tuple[str | None, str | None, str | None] = (None, None, None)):
        self.settings = dict(settings or {})
        self._credentials = credentials
        self._client = None

    # ---- the client ------------------------------------------------------------------------

    def _region(self) -> str:
        return self.settings.get("region") or os.environ.get("OSS_REGION") or ""

    def _endpoint(self) -> str:
        return self.settings.get("endpoint") or os.environ.get("OSS_ENDPOINT") or ""

    @property
    def client(self) -> oss.Client:
        if self._client is None:
            key_id, secret, token = self._credentials
            if not (key_id and secret):
                raise BucketBroken("no OSS credentials: set OSS_ACCESS_KEY_ID and OSS_ACCESS_KEY_SECRET (or [oss] "
                                   "access_key_id and access_key_secret in config.toml)")
            if not (self._region() or self._endpoint()):
                raise BucketBroken('OSS needs a region: set [oss] region (e.g. "cn-hangzhou") or OSS_REGION, '
                                   "or [oss] endpoint")
            cfg = oss.config.load_default()
            cfg.credentials_provider = oss.credentials.StaticCredentialsProvider(key_id, secret, token)
            cfg.region = self._region() or "cn-hangzhou"  # only signs when an endpoint is given
            if self._endpoint():
                cfg.endpoint = self._endpoint()
            cfg.use_path_style = self.settings.get("addressing_style") == "path"
            cfg.retry_max_attempts = int(self.settings.get("max_attempts", 5))
            cfg.connect_timeout = float(self.settings.get("connect_timeout", 10))
            cfg.readwrite_timeout = float(self.settings.get("read_timeout", 60))
            self._client = oss.Client(cfg)
        return self._client

    def _error(self, e: Exception, bucket: str, what: str) -> Exception:
        """A clear, typed error naming the bucket and the fix."""
        if isinstance(e, (FatalError, BucketUnavailable, BucketRefused)):  # made here already
            return e
        where = f"OSS bucket {bucket!r} ({self._endpoint() or self._region()})"
        se = _service_error(e)
        if se is None:
            if isinstance(e, oss_errors.CredentialsBaseError):
                return BucketBroken(f"{what}: no usable OSS credentials: set OSS_ACCESS_KEY_ID and "
                                    "OSS_ACCESS_KEY_SECRET")
            return BucketUnavailable(f"{what}: cannot reach {where}: {type(e).__name__}")
        code = se.code or str(se.status_code)
        if code == "NoSuchBucket":
            return BucketBroken(f"{what}: {where} does not exist: check the bucket name and [oss] region / endpoint")
        if code in _BAD_KEYS:
            return BucketBroken(f"{what}: {where} rejected the credentials ({code}): renew them (expired STS "
                                "token?) or check OSS_ACCESS_KEY_ID / OSS_ACCESS_KEY_SECRET")
        if code in _DENIED or se.status_code == 403:
            return BucketRefused(f"{what}: access denied by {where}: the RAM policy needs oss:ListObjects, "
                                 "oss:GetObject (and oss:PutObject, oss:DeleteObject to stage)")
        if se.status_code >= 500 or se.status_code == 429:
            return BucketUnavailable(f"{what}: {where} is busy or failing ({code}); retrying later")
        return BucketRefused(f"{what}: {where} answered {se.status_code} {code}: {se.message or ''}".rstrip())

    # ---- reading ---------------------------------------------------------------------------

    def _info(self, bucket: str, key: str, size: int, modified: datetime.datetime, etag: str | None) -> ObjectInfo:
        etag = etag.strip('"') if etag else None
        return ObjectInfo(f"oss://{bucket}/{key}", int(size), version_stamp(modified.timestamp(), etag), etag)

    def list(self, prefix: str, problems: list[tuple[str, str]] | None = None) -> Iterator[ObjectInfo]:
        """Every candidate object at or under ``prefix``: its folders listed side by side
        (``list_concurrency`` at once, see ``list_partitioned``), page by page.

        A listing that fails part way ends with the prefix (or the one folder that failed) in
        ``problems``: what was not listed is unknown, not deleted."""
        bucket, key = split_bucket_uri(prefix)

        def failed(folder: str, e: Exception) -> None:
            err = self._error(e, bucket, f"listing oss://{bucket}/{folder.rstrip('/')}")
            if problems is None:
                raise err from None
            problems.append((f"oss://{bucket}/{folder}".rstrip("/"), str(err)))

        s = self.settings
        listing = list_partitioned(functools.partial(self._pages, bucket), key, failed,
                                   concurrency=int(s.get("list_concurrency", 8)),
                                   max_partitions=int(s.get("list_partitions", 256)))
        try:
            for _, info in listing:
                yield info
        except Exception as e:  # the SDK's errors share no base but Exception
            err = self._error(e, bucket, f"listing {prefix}")
            if problems is None:
                raise err from None
            problems.append((prefix, str(err)))

    def _pages(self, bucket: str, prefix: str, delimiter: str | None,
               start_after: str | None) -> Iterator[tuple[list, list[str]]]:
        """One prefix, page by page: ([(key, ObjectInfo)], [common prefix])."""
        pages = self.client.list_objects_v2_paginator().iter_page(oss.ListObjectsV2Request(
            bucket=bucket, prefix=prefix, delimiter=delimiter, start_after=start_after,
            max_keys=int(self.settings.get("page_size", 1000))))
        for page in pages:
            yield ([(o.key, self._info(bucket, o.key, o.size, o.last_modified, o.etag)) for o in page.contents or ()],
                   [p.prefix for p in page.common_prefixes or ()])

    def stat(self, uri: str) -> ObjectInfo | None:
        bucket, key = split_bucket_uri(uri)
        if not key:
            return None
        try:
            head = self.client.head_object(oss.HeadObjectRequest(bucket=bucket, key=key))
        except Exception as e:
            if _missing(e):
                return None
            raise self._error(e, bucket, f"reading {uri}") from None
        return self._info(bucket, key, head.content_length, head.last_modified, head.etag)

    def open(self, uri: str) -> BinaryIO:
        return self._get(uri)

    def open_range(self, uri: str, start: int, length: int) -> BinaryIO:
        """One ranged GET (the web player's Range requests)."""
        return self._get(uri, range_header=f"bytes={start}-{start + max(1, length) - 1}", range_behavior="standard")

    def _get(self, uri: str, **kw) -> BinaryIO:
        bucket, key = split_bucket_uri(uri)
        try:
            body = self.client.get_object(oss.GetObjectRequest(bucket=bucket, key=key, **kw)).body
            return io.BufferedReader(_BodyReader(body), 1 << 20)
        except Exception as e:
            if _missing(e):
                raise FileNotFoundError(f"{uri}: no such object") from None
            raise self._error(e, bucket, f"reading {uri}") from None

    @contextlib.contextmanager
    def local_copy(self, uri: str) -> Iterator[Path]:
        """A temporary download (ranged GETs in parallel, streamed to disk: never the whole
        object in memory), deleted when the block ends."""
        bucket, key = split_bucket_uri(uri)
        fd, tmp = tempfile.mkstemp(prefix="mediaindex-", suffix=os.path.splitext(key)[1])
        os.close(fd)
        try:
            try:
                self.client.downloader(part_size=self._part(), parallel_num=self._parallel()).download_file(
                    oss.GetObjectRequest(bucket=bucket, key=key), filepath=tmp)
            except Exception as e:
                if _missing(e):
                    raise FileNotFoundError(f"{uri}: no such object") from None
                raise self._error(e, bucket, f"reading {uri}") from None
            yield Path(tmp)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)

    def offline_reason(self, root: str, has_known_files: Callable[[], bool]) -> str | None:
        """Why the bucket cannot be listed now (missing, refused, unreachable): its media stay."""
        bucket, _ = split_bucket_uri(root)
        try:
            if not self.client.is_bucket_exist(bucket):
                return f"OSS bucket {bucket!r} does not exist (check the name and [oss] region / endpoint)"
        except Exception as e:
            return str(self._error(e, bucket, f"listing {root}"))
        return None

    # ---- URLs and staging ------------------------------------------------------------------

    def public_url(self, uri: str, expires: int = 3600) -> str | None:
        """A presigned GET (V4 signature: at most 7 days)."""
        bucket, key = split_bucket_uri(uri)
        expires = max(1, min(int(expires), 7 * 24 * 3600))
        return self.client.presign(oss.GetObjectRequest(bucket=bucket, key=key),
                                   expires=datetime.timedelta(seconds=expires)).url

    def _part(self) -> int:
        return int(self.settings.get("part_mb", 16)) * MB

    def _parallel(self) -> int:
        return int(self.settings.get("concurrency", 4))

    def _staging(self, key: str) -> tuple[str, str]:
        bucket = self.settings.get("bucket")
        if not bucket:
            raise FatalError('stage_storage = "oss" needs a bucket: set [oss] bucket (and prefix) in config.toml')
        prefix = str(self.settings.get("prefix", "")).strip("/")
        return bucket, f"{prefix}/{key}" if prefix else key

    def stage(self, local_path: Path, key: str) -> str:
        """Upload in ``part_mb`` parts, ``concurrency`` at once (multipart above one part)."""
        bucket, full = self._staging(key)
        try:
            self.client.uploader(part_size=self._part(), parallel_num=self._parallel()).upload_file(
                oss.PutObjectRequest(bucket=bucket, key=full), filepath=str(local_path))
        except Exception as e:
            raise self._error(e, bucket, f"staging {local_path.name}") from None
        return f"oss://{bucket}/{full}"

    def unstage(self, key: str) -> None:
        bucket, full = self._staging(key)
        try:
            self.client.delete_object(oss.DeleteObjectRequest(bucket=bucket, key=full))  # fine when absent
        except Exception as e:
            raise self._error(e, bucket, f"deleting staged {full}") from None


def _credentials(config) -> tuple[str | None, str | None, str | None]:
    key_id = (config.secret("oss", "access_key_id", env="OSS_ACCESS_KEY_ID")
              or os.environ.get("ALIBABA_CLOUD_ACCESS_KEY_ID"))
    secret = (config.secret("oss", "access_key_secret", env="OSS_ACCESS_KEY_SECRET")
              or config.secret("oss", "access_key_secret", env="ALIBABA_CLOUD_ACCESS_KEY_SECRET"))
    token = config.secret("oss", "security_token", env="OSS_SESSION_TOKEN")
    return key_id, secret, token


@hookimpl
def register_storage_backends(register, config):
    register(OssStorage(config.section("oss"), _credentials(config)))
