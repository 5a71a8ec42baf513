"""The ``s3`` storage backend: media in AWS S3 or an S3-compatible store (MinIO, R2, Ceph).

Credentials and endpoint come the standard AWS way (environment, ``~/.aws``, ``AWS_PROFILE``,
``AWS_ENDPOINT_URL``, instance roles); ``[s3]`` in config.toml can name an endpoint, a region, a
profile and the addressing style, and the bucket and prefix that staging uploads go to.
"""
from __future__ import annotations

import contextlib
import datetime
import functools
import os
import tempfile
from pathlib import Path
from typing import BinaryIO, Callable, Iterator

import boto3
import botocore.session
from boto3.s3.transfer import TransferConfig
from botocore.config import Config as BotoConfig
from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError
from botocore.utils import parse_timestamp

from mediaindex import hookimpl
from mediaindex.backends import (FatalError, ObjectInfo, PermanentError, StorageBackend, TransientError,
                                 list_partitioned, split_bucket_uri, version_stamp)

MB = 1 << 20
_MISSING = {"404", "NoSuchKey", "NotFound"}
_NO_BUCKET = {"NoSuchBucket"}
_DENIED = {"403", "AccessDenied", "AllAccessDisabled", "AccountProblem"}
_BAD_KEYS = {"InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken", "TokenRefreshRequired",
             "InvalidToken", "ExpiredTokenException", "RequestExpired"}


class BucketBroken(FatalError, OSError):
    """Every request would fail the same way (no such bucket, rejected credentials): work stops
    until the user acts. An OSError too: a watcher's stat keeps what it knows and goes on."""


class BucketUnavailable(TransientError, OSError):
    """The store could not be reached or answered 5xx (after botocore's own retries)."""


class BucketRefused(PermanentError, OSError):
    """The store refused this object (access denied): retrying will not help."""


def _timestamp(value) -> datetime.datetime:
    """A response's timestamp: ISO 8601 (every key of a listing) parsed fast, anything else
    (HEAD's RFC 1123 date) the botocore way. dateutil's parser was most of a listing's CPU."""
    if isinstance(value, str):
        with contextlib.suppress(ValueError):
            parsed = datetime.datetime.fromisoformat(value)
            if parsed.tzinfo is not None:
                return parsed
    return parse_timestamp(value)


def _code(e: ClientError) -> str:
    return str(e.response.get("Error", {}).get("Code") or e.response.get("ResponseMetadata", {}).get("HTTPStatusCode"))


class S3Storage(StorageBackend):
    """Objects in S3 buckets, ``s3://bucket/key``. Reads only; writes and deletes nothing but
    its own staging uploads under ``[s3] bucket``/``prefix``."""

    scheme = "s3"

    def __init__(self, settings: dict | None = None):
        self.settings = dict(settings or {})
        self._client = None

    # ---- the client ------------------------------------------------------------------------

    @property
    def client(self):
        if self._client is None:
            s = self.settings
            core = botocore.session.get_session()
            core.get_component("response_parser_factory").set_parser_defaults(timestamp_parser=_timestamp)
            session = boto3.session.Session(profile_name=s.get("profile") or None, botocore_session=core)
            config = BotoConfig(
                s3={"addressing_style": s.get("addressing_style", "auto")},
                retries={"mode": "standard", "max_attempts": int(s.get("max_attempts", 5))},
                connect_timeout=float(s.get("connect_timeout", 10)), read_timeout=float(s.get("read_timeout", 60)),
                signature_version="s3v4")
            self._client = session.client("s3", endpoint_url=s.get("endpoint_url") or None,
                                          region_name=s.get("region") or None, config=config)
        return self._client

    def _where(self) -> str:
        try:
            return self.client.meta.endpoint_url
        except Exception:  # no region, a broken profile: the error names it
            return "S3"

    def _error(self, e: Exception, bucket: str, what: str) -> Exception:
        """A clear, typed error naming the bucket and the fix."""
        where = f"bucket {bucket!r} at {self._where()}"
        if isinstance(e, NoCredentialsError):
            return BucketBroken(f"{what}: no AWS credentials for {where}: set AWS_ACCESS_KEY_ID and "
                                "AWS_SECRET_ACCESS_KEY, or AWS_PROFILE (or [s3] profile in config.toml)")
        if isinstance(e, ClientError):
            code = _code(e)
            if code in _NO_BUCKET:
                return BucketBroken(f"{what}: {where} does not exist: check the bucket name, [s3] region and "
                                    "AWS_ENDPOINT_URL / [s3] endpoint_url")
            if code in _BAD_KEYS:
                return BucketBroken(f"{what}: {where} rejected the credentials ({code}): renew them "
                                    "(expired session token?) or check AWS_ACCESS_KEY_ID / AWS_PROFILE")
            if code in _DENIED:
                return BucketRefused(f"{what}: access denied by {where}: the credentials need "
                                     "s3:ListBucket, s3:GetObject (and s3:PutObject, s3:DeleteObject to stage)")
            status = e.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
            if status >= 500 or code in ("SlowDown", "RequestTimeout", "Throttling"):
                return BucketUnavailable(f"{what}: {where} is busy or failing ({code}); retrying later")
            return BucketRefused(f"{what}: {where} answered {code}: {e}")
        if isinstance(e, BotoCoreError):
            return BucketUnavailable(f"{what}: cannot reach {where}: {e}")
        return e

    # ---- reading ---------------------------------------------------------------------------

    def _info(self, bucket: str, key: str, size: int, modified, etag: str | None) -> ObjectInfo:
        etag = etag.strip('"') if etag else None
        return ObjectInfo(f"s3://{bucket}/{key}", int(size), version_stamp(modified.timestamp(), etag), etag)

    def list(self, prefix: str, problems: list[tuple[str, str]] | None = None) -> Iterator[ObjectInfo]:
        """Every candidate object at or under ``prefix``: its folders listed side by side
        (``list_concurrency`` at once, see ``list_partitioned``), page by page.

        A listing that fails part way ends with the prefix (or the one folder that failed) in
        ``problems``: what was not listed is unknown, not deleted."""
        bucket, key = split_bucket_uri(prefix)

        def failed(folder: str, e: Exception) -> None:
            err = self._error(e, bucket, f"listing s3://{bucket}/{folder.rstrip('/')}")
            if problems is None or not isinstance(e, (ClientError, BotoCoreError)):
                raise err from None
            problems.append((f"s3://{bucket}/{folder}".rstrip("/"), str(err)))

        s = self.settings
        listing = list_partitioned(functools.partial(self._pages, bucket), key, failed,
                                   concurrency=int(s.get("list_concurrency", 8)),
                                   max_partitions=int(s.get("list_partitions", 256)))
        try:
            for _, info in listing:
                yield info
        except (ClientError, BotoCoreError) as e:
            err = self._error(e, bucket, f"listing {prefix}")
            if problems is None:
                raise err from None
            problems.append((prefix, str(err)))

    def _pages(self, bucket: str, prefix: str, delimiter: str | None,
               start_after: str | None) -> Iterator[tuple[list, list[str]]]:
        """One prefix, page by page: ([(key, ObjectInfo)], [common prefix])."""
        kw = {"Delimiter": delimiter} if delimiter else {}
        if start_after:
            kw["StartAfter"] = start_after
        pages = self.client.get_paginator("list_objects_v2").paginate(
            Bucket=bucket, Prefix=prefix, PaginationConfig={"PageSize": int(self.settings.get("page_size", 1000))}, **kw)
        for page in pages:
            yield ([(o["Key"], self._info(bucket, o["Key"], o["Size"], o["LastModified"], o.get("ETag")))
                    for o in page.get("Contents", ())],
                   [p["Prefix"] for p in page.get("CommonPrefixes", ())])

    def stat(self, uri: str) -> ObjectInfo | None:
        bucket, key = split_bucket_uri(uri)
        if not key:
            return None
        try:
            head = self.client.head_object(Bucket=bucket, Key=key)
        except ClientError as e:
            if _code(e) in _MISSING:
                return None
            raise self._error(e, bucket, f"reading {uri}") from None
        except BotoCoreError as e:
            raise self._error(e, bucket, f"reading {uri}") from None
        return self._info(bucket, key, head["ContentLength"], head["LastModified"], head.get("ETag"))

    def open(self, uri: str) -> BinaryIO:
        return self._get(uri)

    def open_range(self, uri: str, start: int, length: int) -> BinaryIO:
        """One ranged GET (the web player's Range requests)."""
        return self._get(uri, Range=f"bytes={start}-{start + max(1, length) - 1}")

    def _get(self, uri: str, **kw) -> BinaryIO:
        bucket, key = split_bucket_uri(uri)
        try:
            return self.client.get_object(Bucket=bucket, Key=key, **kw)["Body"]
        except ClientError as e:
            if _code(e) in _MISSING:
                raise FileNotFoundError(f"{uri}: no such object") from None
            raise self._error(e, bucket, f"reading {uri}") from None
        except BotoCoreError as e:
            raise self._error(e, bucket, f"reading {uri}") from None

    @contextlib.contextmanager
    def local_copy(self, uri: str) -> Iterator[Path]:
        """A temporary download (ranged GETs in parallel, retried, streamed to disk: never the
        whole object in memory), deleted when the block ends."""
        bucket, key = split_bucket_uri(uri)
        fd, tmp = tempfile.mkstemp(prefix="mediaindex-", suffix=os.path.splitext(key)[1])
        os.close(fd)
        try:
            try:
                self.client.download_file(bucket, key, tmp, Config=self._transfer())
            except ClientError as e:
                if _code(e) in _MISSING:
                    raise FileNotFoundError(f"{uri}: no such object") from None
                raise self._error(e, bucket, f"reading {uri}") from None
            except BotoCoreError as e:
                raise self._error(e, bucket, f"reading {uri}") from None
            yield Path(tmp)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)

    def offline_reason(self, root: str, has_known_files: Callable[[], bool]) -> str | None:
        """Why the bucket cannot be listed now (missing, refused, unreachable): its media stay."""
        bucket, _ = split_bucket_uri(root)
        try:
            self.client.head_bucket(Bucket=bucket)
        except ClientError as e:
            code = _code(e)
            if code in _MISSING or code in _NO_BUCKET:  # HEAD has no body: 404 is the bucket
                return (f"bucket {bucket!r} does not exist at {self._where()} (check the name, [s3] region "
                        "and AWS_ENDPOINT_URL / [s3] endpoint_url)")
            return str(self._error(e, bucket, f"listing {root}"))
        except (BotoCoreError, ValueError) as e:
            return str(self._error(e, bucket, f"listing {root}"))
        return None

    # ---- URLs and staging ------------------------------------------------------------------

    def public_url(self, uri: str, expires: int = 3600) -> str | None:
        """A presigned GET (SigV4: at most 7 days)."""
        bucket, key = split_bucket_uri(uri)
        expires = max(1, min(int(expires), 7 * 24 * 3600))
        return self.client.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": key},
                                                  ExpiresIn=expires)

    def _transfer(self) -> TransferConfig:
        """Multipart above ``part_mb`` MB, ``concurrency`` parts at once: memory stays bounded."""
        part = int(self.settings.get("part_mb", 16)) * MB
        return TransferConfig(multipart_threshold=part, multipart_chunksize=part,
                              max_concurrency=int(self.settings.get("concurrency", 4)), max_io_queue=8)

    def _staging(self, key: str) -> tuple[str, str]:
        bucket = self.settings.get("bucket")
        if not bucket:
            raise FatalError('stage_storage = "s3" needs a bucket: set [s3] bucket (and prefix) in config.toml')
        prefix = str(self.settings.get("prefix", "")).strip("/")
        return bucket, f"{prefix}/{key}" if prefix else key

    def stage(self, local_path: Path, key: str) -> str:
        bucket, full = self._staging(key)
        try:
            self.client.upload_file(str(local_path), bucket, full, Config=self._transfer())
        except (ClientError, BotoCoreError) as e:
            raise self._error(e, bucket, f"staging {local_path.name}") from None
        except Exception as e:  # s3transfer wraps failures of a multipart upload
            cause = e.__cause__ or e.__context__
            if isinstance(cause, (ClientError, BotoCoreError)):
                raise self._error(cause, bucket, f"staging {local_path.name}") from None
            raise
        return f"s3://{bucket}/{full}"

    def unstage(self, key: str) -> None:
        bucket, full = self._staging(key)
        try:
            self.client.delete_object(Bucket=bucket, Key=full)  # no error when it is not there
        except (ClientError, BotoCoreError) as e:
            raise self._error(e, bucket, f"deleting staged {full}") from None


@hookimpl
def register_storage_backends(register, config):
    register(S3Storage(config.section("s3")))
