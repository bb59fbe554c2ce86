"""``POST /bundles``: a signed bundle tarball as the request body (``application/gzip``), streamed
to the configured folder (``bundles.dir``) up to ``bundles.max_upload_bytes``, named by its
sha256, then verified server-side exactly as ``coldchain cloud add-bundle`` does (signature, then
every file's size and hash, against ``bundles.trusted_keys``) and added to the catalogue. A
tarball that fails is deleted and the answer says why (422); the attempt is audited either way.

(No ``from __future__ import annotations`` here: FastAPI reads the annotations at runtime.)
"""

import hashlib
import os
import secrets
from collections.abc import Callable
from typing import Annotated

import anyio.to_thread
from fastapi import APIRouter, Depends, HTTPException, Request

from cloud.config import Bundles
from cloud.errors import BundleImportError
from cloud.operations import Operations
from cloud.queries.models import BundleView
from contract.errors import ContractError
from contract.signing import TrustStore

BODY = {"requestBody": {"required": True, "description": "The bundle tarball (.tar.gz) as it is",
                        "content": {"application/gzip": {"schema": {"type": "string", "format": "binary"}}}}}


def upload_routes(config: Bundles, operations: Callable[[Request], Operations]) -> APIRouter:
    router = APIRouter()

    @router.post("/bundles", status_code=201, openapi_extra=BODY)
    async def upload(request: Request, operator: Annotated[Operations, Depends(operations)]) -> BundleView:
        if config.dir is None or not config.trusted_keys:
            why = ("bundle uploads are not configured: set bundles.dir and bundles.trusted_keys in the cloud's "
                   "configuration")
            operator.refused("bundle.upload", None, why)
            raise HTTPException(409, why)
        return await _receive(request, config, operator)

    return router


async def _receive(request: Request, config: Bundles, operator: Operations) -> BundleView:
    folder = config.dir
    if folder is None:
        raise HTTPException(409, "bundle uploads are not configured")
    try:  # before the body is read: nothing is kept that could not be verified
        trust = TrustStore.from_paths(config.trusted_keys)
    except ContractError as exc:
        operator.refused("bundle.upload", None, f"the trusted keys cannot be read: {exc}")
        raise HTTPException(503, f"the cloud's bundles.trusted_keys cannot be read: {exc}") from exc
    await anyio.to_thread.run_sync(lambda: folder.mkdir(parents=True, exist_ok=True))
    partial = folder / f".upload-{secrets.token_hex(8)}.tar.gz"
    digest, size = hashlib.sha256(), 0
    created = False  # whether this request put the file at its final name (an upload of bytes already
    try:             # stored must never delete the stored bundle, whatever its verification says now)
        with partial.open("wb") as out:
            async for chunk in request.stream():
                size += len(chunk)
                if size > config.max_upload_bytes:
                    operator.refused("bundle.upload", None, f"larger than {config.max_upload_bytes} bytes")
                    raise HTTPException(413, f"the bundle is larger than {config.max_upload_bytes} bytes "
                                             "(bundles.max_upload_bytes)")
                digest.update(chunk)
                out.write(chunk)
        if size == 0:
            operator.refused("bundle.upload", None, "empty body")
            raise HTTPException(400, "send the bundle tarball (.tar.gz) as the request body")
        final = folder / f"{digest.hexdigest()}.tar.gz"  # the same bytes, the same name: idempotent
        if not final.exists():
            os.replace(partial, final)
            created = True
    finally:
        partial.unlink(missing_ok=True)
    try:
        return await anyio.to_thread.run_sync(lambda: operator.add_bundle(final, trust))
    except BundleImportError as exc:
        if created:
            final.unlink(missing_ok=True)  # a valid bundle of these bytes would have verified
        raise HTTPException(422, str(exc).replace(str(final.name), "the upload")) from exc
