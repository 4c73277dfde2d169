"""A burst of small uploads that declare huge images costs the web process no image memory.

Run in a fresh interpreter so its peak RSS says what the uploads cost, not what earlier
tests did: 16 concurrent 36-megapixel PNGs (a few kilobytes each, all one colour) would
need over 500 MB to decode; probing them must stay far below.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from demo.processes import ROOT

pytestmark = pytest.mark.e2e

SCRIPT = textwrap.dedent(
    """
    import io, json, resource, sys
    from concurrent.futures import ThreadPoolExecutor
    from PIL import Image
    from tests.api_helpers import api_app, make_owner

    database_url, redis_url = sys.argv[1], sys.argv[2]
    buffer = io.BytesIO()
    Image.new("L", (6000, 6000), 128).save(buffer, format="PNG", optimize=True)
    png = buffer.getvalue()

    def upload(client, headers):
        form = {"device_id": "test_device_001", "location": "porch", "mode": "security",
                "motion_score": "0.5", "image": (io.BytesIO(png), "big.png", "image/png")}
        return client.post("/events", data=form, headers=headers).status_code

    for app in api_app(database_url, redis_url, INGEST_DEVICE_BURST=100):
        client = app.test_client()
        owner = make_owner(app, client, "burst@example.com")
        upload(client, owner.headers)  # warm: imports, pools, first request
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        with ThreadPoolExecutor(16) as pool:
            codes = list(pool.map(lambda _: upload(app.test_client(), owner.headers), range(16)))
        after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        print(json.dumps({"codes": codes, "bytes": len(png), "peak_growth_kib": after - before}))
    """
)


def test_a_burst_of_huge_declared_images_is_probed_not_decoded(database_url, redis_url, db):
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, database_url, redis_url],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    assert figures["codes"] == [202] * 16 and figures["bytes"] < 200_000
    # Decoding one of them alone takes 36 MB (108 MB as RGB); the probe takes next to none.
    assert figures["peak_growth_kib"] < 64 * 1024, figures
