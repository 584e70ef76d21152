"""Download and upload behind lazy imports: aiohttp's client and aioftp cost start time on a
small board (aioftp alone about 60 ms here); a charger that never transfers a file does not
load them."""

from __future__ import annotations

from typing import Any

from controller.maintenance.transfers import Downloaded, UploadOutcome


async def download(*args: Any, **kwargs: Any) -> Downloaded:
    """controller.maintenance.download.download, imported when a download starts."""
    from controller.maintenance import download as impl

    return await impl.download(*args, **kwargs)


async def upload_file(*args: Any, **kwargs: Any) -> UploadOutcome:
    """controller.maintenance.upload.upload_file, imported when an upload starts."""
    from controller.maintenance import upload as impl

    return await impl.upload_file(*args, **kwargs)
