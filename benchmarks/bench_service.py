"""Load test of the service on loopback: concurrent predict requests against a real uvicorn server.

    python benchmarks/bench_service.py [--requests 200] [--size 64]

Starts ``medveil serve`` on 127.0.0.1 with a fresh data folder, uploads 200 obfuscated Br35H images,
trains for one epoch, then fires ``--requests`` single-image predict requests all at once and
prints the error count and latency percentiles. Baseline measured in the same run: the same
prediction in-process (obfuscation excluded on both sides), so the ratio is the service's overhead.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
import torch
from PIL import Image

import medveil
from medveil.data import load_br35h
from medveil.data.pipeline import ImageTensors
from medveil.nn import build_classifier
from medveil.service.client import Client
from medveil.service.server import local_server
from medveil.service.store import Store


async def burst(url: str, token: str, model_id: str, png: bytes, n: int) -> tuple[list[int], list[float]]:
    async def one(http):
        start = time.perf_counter()
        response = await http.post(f"/models/{model_id}/predict", files=[("files", ("x.png", png, "image/png"))])
        return response.status_code, time.perf_counter() - start

    limits = httpx.Limits(max_connections=n, max_keepalive_connections=n)
    async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=120,
                                 limits=limits) as http:
        results = await asyncio.gather(*[one(http) for _ in range(n)])
    return [r[0] for r in results], [r[1] for r in results]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--size", type=int, default=64)
    args = parser.parse_args()
    data = load_br35h(args.size)
    data = data.subset(np.arange(len(data)) % 15 == 0)
    key = medveil.generate_key("intensity", levels=50)
    with tempfile.TemporaryDirectory() as tmp:
        token = Store(Path(tmp)).create_token("bench")
        with local_server(tmp) as url, Client(url, token, key) as client:
            dataset = client.upload(data)
            model_id = client.wait(client.train(dataset["id"], epochs=1)["id"], poll=0.5)["model_id"]
            image = client.obfuscate(data.images[:1])[0]
            buffer = io.BytesIO()
            Image.fromarray(image).save(buffer, "PNG")
            asyncio.run(burst(url, token, model_id, buffer.getvalue(), 4))  # warm up: model loaded once
            start = time.perf_counter()
            codes, latencies = asyncio.run(burst(url, token, model_id, buffer.getvalue(), args.requests))
            wall = time.perf_counter() - start

    model = build_classifier("cnn", args.size).eval()
    x = ImageTensors(image[None], np.zeros(1))[0][0][None]
    with torch.no_grad():
        model(x)
        runs = 50
        start = time.perf_counter()
        for _ in range(runs):
            model(x)
        local = (time.perf_counter() - start) / runs

    p50, p90, p99 = np.percentile(np.array(latencies) * 1000, [50, 90, 99])
    errors = sum(code != 200 for code in codes)
    print(f"service predict, {args.requests} concurrent single-image requests on loopback ({args.size}x{args.size})")
    print(f"  errors: {errors}   throughput: {args.requests / wall:.0f} requests/s")
    print(f"  latency ms: p50 {p50:.1f}  p90 {p90:.1f}  p99 {p99:.1f}  max {max(latencies) * 1000:.1f}")
    print(f"  in-process prediction of the same image: {local * 1000:.2f} ms; "
          f"ratio of median request latency under load: {p50 / 1000 / local:.0f}x")


if __name__ == "__main__":
    main()
