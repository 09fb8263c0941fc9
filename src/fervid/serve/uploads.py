"""Reading a photo upload (the multipart field ``file``) into memory, under a size limit.

Hand-written on Starlette's MultiPartParser rather than taken as FastAPI's ``UploadFile`` parameter:
FastAPI parses the whole form, with no size limit, before the endpoint runs, and spools a file over
1 MB to a temporary file on disk. Here the limit is enforced while the body arrives (an oversized
upload gets 413 without being read to the end) and the file stays in memory: nothing a client sends is
written anywhere. Each way a client can get the form wrong gets its own status and a message that says
how to send it right.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator

from fastapi import HTTPException, Request
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import ClientDisconnect

DEFAULT_MAX_UPLOAD_BYTES = 10 * 1000 * 1000
MULTIPART_OVERHEAD = 16 * 1024  # boundaries and part headers around the file in an upload
SEND_AS_FILE = "curl -F file=@photo.jpg"
MAX_FIELDS = 8  # text fields a form may carry beside the photo (a browser form's hidden inputs); more is a flood
TEXT_FIELD = f"the field 'file' came as a text field (no filename); send it as a file: {SEND_AS_FILE}"


async def _limited(stream: AsyncIterator[bytes], limit: int, message: str) -> AsyncGenerator[bytes, None]:
    """The request body, cut off with 413 once it passes ``limit`` bytes (for bodies without Content-Length)."""
    received = 0
    async for chunk in stream:
        received += len(chunk)
        if received > limit:
            raise HTTPException(413, message)
        yield chunk


async def read_upload(request: Request, max_bytes: int) -> bytes:
    """The bytes of the multipart field ``file``, held in memory only; 413, 415 or 422 with a clear message."""
    too_big = f"the upload is larger than the limit of {max_bytes:,} bytes; send a smaller photo, or start the server with a larger --max-upload-mb"
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()  # media types ignore case
    if media_type != "multipart/form-data":  # not a prefix: multipart/form-datax is another type
        raise HTTPException(415, f"send the image as multipart/form-data in the field 'file' ({SEND_AS_FILE})")
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_bytes + MULTIPART_OVERHEAD:
        raise HTTPException(413, too_big)
    body = _limited(request.stream(), max_bytes + MULTIPART_OVERHEAD, too_big)
    parser = MultiPartParser(request.headers, body, max_files=1, max_fields=MAX_FIELDS)
    parser.spool_max_size = max_bytes + MULTIPART_OVERHEAD  # keep the file in memory: never spooled to disk
    try:
        form = await parser.parse()
    except ClientDisconnect:  # the client left mid-upload: nobody to answer, and nothing to log as a crash
        raise HTTPException(400, "the upload ended before its last byte") from None
    except MultiPartException as error:
        if error.message.startswith("Part exceeded maximum size"):  # a part without a filename is a text field, limited to 1 MB
            raise HTTPException(422, f"a text field (no filename) is over 1 MB; send the photo as a file: {SEND_AS_FILE}") from None
        if error.message.startswith("Too many files"):  # a form's other file input counts, even left empty
            raise HTTPException(422, f"more than one file in the form; send one photo per request, in the field 'file': {SEND_AS_FILE}") from None
        if error.message.startswith("Too many fields"):  # well formed, but more text fields than a photo upload needs
            raise HTTPException(422, f"more than {MAX_FIELDS} text fields in the form; send only the photo, in the field 'file': {SEND_AS_FILE}") from None
        raise HTTPException(422, f"malformed multipart body ({error.message.rstrip('.')}); send the photo as one file field: {SEND_AS_FILE}") from None
    try:
        if len(form.getlist("file")) > 1:  # a text and a file field both named 'file': decided by their order
            raise HTTPException(422, f"the field 'file' is given more than once; send the photo in it once: {SEND_AS_FILE}")
        upload = form.get("file")
        if upload is None:
            raise HTTPException(422, f"no multipart field 'file' (or the body ended before it); send the photo in it: {SEND_AS_FILE}")
        if not isinstance(upload, UploadFile):
            raise HTTPException(422, TEXT_FIELD)
        data = await upload.read()
    finally:
        await form.close()
    if len(data) > max_bytes:
        raise HTTPException(413, too_big)
    if not data:
        raise HTTPException(422, f"the uploaded file is empty; send the photo's bytes: {SEND_AS_FILE}")
    return data
