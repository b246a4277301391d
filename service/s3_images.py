"""The image store on S3 (or any S3-compatible server): one object per distinct upload.

Objects are named ``<prefix>/<ref>``, the refs of service.image_store. `put` returns once the
PUT has returned, and S3 answers a PUT only once the object is stored durably; the request
carries the SHA-256 of the bytes, so the server refuses an upload that arrives altered. The
same bytes uploaded twice land on the same key with the same content. Credentials, region
and endpoint come from boto3's usual sources (environment, instance role, AWS_ENDPOINT_URL_S3).
"""

from __future__ import annotations

import base64
import hashlib
from urllib.parse import urlsplit

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from service.image_store import check_ref, content_ref

TIMEOUTS = Config(connect_timeout=3, read_timeout=10, retries={"max_attempts": 3})
MISSING = ("404", "NoSuchKey", "NotFound")


class S3UnavailableError(OSError):
    """The S3 server could not be reached or refused the request: nothing was stored or read."""


class S3ImageStore:
    """Uploaded images under one S3 prefix, addressed by their content hash."""

    def __init__(self, url: str, client=None):
        """Args:
        url: ``s3://bucket`` or ``s3://bucket/prefix``.
        client: a boto3 S3 client (default: one from boto3's configuration).
        """
        parts = urlsplit(url)
        if parts.scheme != "s3" or not parts.netloc:
            raise ValueError(f"an S3 image store is s3://bucket/prefix, not {url!r}")
        self.url, self.bucket = url.rstrip("/"), parts.netloc
        self.prefix = parts.path.strip("/")
        self.client = client or boto3.client("s3", config=TIMEOUTS)

    def key(self, ref: str) -> str:
        """The object key of a ref (ValueError: not a ref `put` returns)."""
        return f"{self.prefix}/{check_ref(ref)}" if self.prefix else check_ref(ref)

    def put(self, data: bytes, fmt: str) -> str:
        """Store an upload; its ref, once S3 has it.

        Raises:
            ValueError: unknown format or no bytes. S3UnavailableError (an OSError): not stored.
        """
        ref = content_ref(data, fmt)
        checksum = base64.b64encode(hashlib.sha256(data).digest()).decode()
        content_type = "image/jpeg" if fmt == "jpeg" else "image/png"
        try:
            self.client.put_object(
                Bucket=self.bucket, Key=self.key(ref), Body=data, ContentType=content_type,
                ChecksumAlgorithm="SHA256", ChecksumSHA256=checksum,
            )  # fmt: skip
        except (BotoCoreError, ClientError) as err:
            raise S3UnavailableError(f"image not stored in {self.url}: {err}") from err
        return ref

    def get(self, ref: str) -> bytes:
        """The stored bytes of a ref.

        Raises:
            ValueError: malformed ref. FileNotFoundError: nothing stored under it.
            S3UnavailableError: S3 could not be read.
        """
        try:
            return self.client.get_object(Bucket=self.bucket, Key=self.key(ref))["Body"].read()
        except ClientError as err:
            if _code(err) in MISSING:
                raise FileNotFoundError(f"no image stored under {ref} in {self.url}") from err
            raise S3UnavailableError(f"image not read from {self.url}: {err}") from err
        except BotoCoreError as err:
            raise S3UnavailableError(f"image not read from {self.url}: {err}") from err

    def exists(self, ref: str) -> bool:
        """True when an image is stored under a well-formed ref."""
        try:
            self.client.head_object(Bucket=self.bucket, Key=self.key(ref))
        except ClientError as err:
            if _code(err) in MISSING:
                return False
            raise S3UnavailableError(f"image not looked up in {self.url}: {err}") from err
        except BotoCoreError as err:
            raise S3UnavailableError(f"image not looked up in {self.url}: {err}") from err
        return True


def _code(err: ClientError) -> str:
    return str(err.response.get("Error", {}).get("Code", ""))
