"""The server's peak memory under hostile requests, against its idle footprint, in one run (Linux).

    python benchmarks/bench_service_memory.py

Starts ``medveil serve`` on loopback with a fresh data folder and the default limits, trains a tiny
model and predicts once (so the idle figure includes what predictions load), then sends,
one kind at a time, what broke the first version: a 1 MiB zip bomb, 1,000 blank 1024x1024 PNGs in a
small archive, anonymous predicts of 250 x 1 MiB, six concurrent honest uploads of 500 MiB decoded
each (which share one budget), and a predict of many wide images the model cannot take. Before each, the server's peak-RSS counter is reset (``/proc/PID/clear_refs``); after it, the
peak (VmHWM) is read. Prints each peak, the status codes, and the ratio to the goal
``2 x idle + one request's budget`` (``Limits.max_decoded_bytes``); a ratio <= 1 meets it.
"""

from __future__ import annotations

import io
import os
import tempfile
import time
import zipfile
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

from medveil.service.server import Limits, local_server
from medveil.service.store import Store

MiB = 1024**2


def server_pid() -> int:
    children = Path(f"/proc/{os.getpid()}/task/{os.getpid()}/children").read_text().split()
    return int(children[-1])


def status_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def png(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, "PNG")
    return buffer.getvalue()


def zipped(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def trained_model(http: httpx.Client, token: str) -> str:
    """A tiny model on 32x32 images, and one prediction, so the idle server has loaded what predict needs."""
    auth = {"Authorization": f"Bearer {token}"}
    rng = np.random.default_rng(0)
    archive = zipped({f"{c}/{i}.png": png(rng.integers(0, 50, (32, 32), dtype=np.uint8)) for c in "ab" for i in range(4)})
    dataset = http.post("/datasets", headers=auth, data={"fingerprint": "0" * 32},
                        files={"archive": ("d.zip", archive, "application/zip")}).json()
    job = http.post("/jobs", headers=auth, json={"dataset_id": dataset["id"], "epochs": 1}).json()
    while (state := http.get(f"/jobs/{job['id']}", headers=auth).json())["status"] not in ("done", "failed"):
        time.sleep(0.2)
    http.post(f"/models/{state['model_id']}/predict", headers=auth,
              files=[("files", ("x.png", png(np.zeros((32, 32), np.uint8)), "image/png"))]).raise_for_status()
    return state["model_id"]


def attacks(token: str, model_id: str):
    auth = {"Authorization": f"Bearer {token}"}
    blank = png(np.zeros((1024, 1024), np.uint8))
    bomb = zipped({"a/x.png": b"\x89PNG" + bytes(1024 * MiB), "b/y.png": blank})
    many = zipped({f"{c}/{i}.png": blank for c in ("a", "b") for i in range(500)})
    megabyte = os.urandom(MiB)
    wide = png(np.zeros((64, 1024), np.uint8))

    def upload(http, archive, headers):
        return http.post("/datasets", headers=headers, data={"fingerprint": "0" * 32},
                         files={"archive": ("d.zip", archive, "application/zip")}).status_code

    yield f"zip bomb ({len(bomb) // 1024} KiB -> 1 GiB member)", lambda http: [upload(http, bomb, auth)]
    yield f"1,000 blank 1024^2 PNGs ({len(many) // 1024} KiB)", lambda http: [upload(http, many, auth)]
    yield "4 anonymous predicts of 250 x 1 MiB", lambda http: [
        http.post(f"/models/{'0' * 32}/predict", files=[("files", (f"{i}.png", megabyte, "image/png")) for i in range(250)]
                  ).status_code for _ in range(4)]
    # six honest uploads of 500 MiB decoded at once: each fits one request's budget, together they do not
    honest = zipped({f"{c}/{i}.png": blank for c in ("a", "b") for i in range(250)})

    def six_at_once(http):
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(6) as pool:
            return list(pool.map(lambda _: upload(http, honest, auth), range(6)))

    yield f"6 concurrent uploads of 500 MiB decoded ({len(honest) // 1024} KiB each)", six_at_once
    yield f"predict of 200 wide PNGs ({200 * len(wide) // 1024} KiB)", lambda http: [
        http.post(f"/models/{model_id}/predict", headers=auth,
                  files=[("files", (f"{i}.png", wide, "image/png")) for i in range(200)]).status_code]


def main() -> None:
    budget = Limits().max_decoded_bytes
    with tempfile.TemporaryDirectory() as tmp:
        token = Store(Path(tmp) / "srv").create_token("bench")
        with local_server(Path(tmp) / "srv", options=["--quota-mb", "8192"]) as url, httpx.Client(base_url=url, timeout=300) as http:
            pid = server_pid()
            model_id = trained_model(http, token)
            idle = status_kib(pid, "VmRSS") * 1024
            goal = 2 * idle + budget
            print(f"server idle RSS {idle / MiB:.0f} MiB; goal: peak <= 2 x idle + budget "
                  f"({budget / MiB:.0f} MiB) = {goal / MiB:.0f} MiB")
            for name, send in attacks(token, model_id):
                Path(f"/proc/{pid}/clear_refs").write_text("5")  # reset the peak-RSS counter
                statuses = send(http)
                peak = status_kib(pid, "VmHWM") * 1024
                print(f"{name:45s} status {sorted(set(statuses))}  peak {peak / MiB:7.0f} MiB  "
                      f"({peak / goal:.2f}x the goal)")


if __name__ == "__main__":
    main()
