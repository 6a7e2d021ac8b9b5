"""img2dataset's Downloader reading URLs out of a local blob instead of the network (`make-pool --direct`).

Defined at module level so img2dataset's spawned workers can unpickle it; in each worker the first call swaps
img2dataset's fetch function for a blob reader. Resizing, encoding, writers and stats stay img2dataset's own.
The blob sits at $SFCOMP_LOCAL_BLOB with a sibling `<blob>.routes.json` mapping each url to [offset, length];
a url not in the routes answers like a dead link ("HTTP Error 404: Not Found").
"""
from __future__ import annotations

import io
import json
import mmap
import os

from img2dataset import downloader as D


def local_fetch_factory(blob_path: str):
    with open(blob_path + ".routes.json") as f:
        routes = json.load(f)
    fh = open(blob_path, "rb")
    mm = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)

    def download_image(row, timeout, user_agent_token, disallowed_header_directives):
        key, url = row
        hit = routes.get(url)
        if hit is None:
            return key, None, "HTTP Error 404: Not Found"
        off, n = hit
        return key, io.BytesIO(mm[off : off + n]), None

    return download_image


class LocalBlobDownloader(D.Downloader):
    def __call__(self, row):
        if not getattr(D, "_sfcomp_local_blob", None):
            D.download_image = local_fetch_factory(os.environ["SFCOMP_LOCAL_BLOB"])
            D._sfcomp_local_blob = True
        return super().__call__(row)
