"""The image cache build: the same bytes on one worker or several, and resumed where it stopped after an
interrupt (Ctrl-C) or a killed process, with the bytes of an uninterrupted build."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from kit.data import cached_images, open_source
from kit.data.cache import _CHUNK, cache_paths
from kit.data.common import Split

SIZE = 16


def test_workers_give_the_bytes_of_one_worker(tiny_competition, tmp_path):
    source = open_source(tiny_competition.cfg)
    one = cached_images(source.train, SIZE, tmp_path / "one", workers=1)
    two = cached_images(source.train, SIZE, tmp_path / "two", workers=2)
    assert np.array_equal(np.asarray(one.images), np.asarray(two.images))
    assert np.asarray(one.images).any()


def test_interrupted_build_resumes_where_it_stopped(tiny_competition, tmp_path, monkeypatch):
    source = open_source(tiny_competition.cfg)
    reference = np.asarray(cached_images(source.train, SIZE, tmp_path / "reference", workers=1).images).copy()
    real = Split.read_image
    calls = []

    def interrupted(self, i):
        if i == 150 and not calls:
            calls.append(i)
            raise KeyboardInterrupt
        return real(self, i)

    monkeypatch.setattr(Split, "read_image", interrupted)
    cache_dir = tmp_path / "cache"
    with pytest.raises(KeyboardInterrupt):
        cached_images(source.train, SIZE, cache_dir, workers=1)
    data_path, meta_path = cache_paths(source.train, SIZE, cache_dir)
    assert not data_path.exists() and not meta_path.exists()  # nothing half-built is ever used
    progress = json.loads(data_path.with_name(data_path.name + ".progress").read_text())
    assert progress["done"] == 2 * _CHUNK  # the chunks written before the interrupt

    read = []
    monkeypatch.setattr(Split, "read_image", lambda self, i: read.append(i) or real(self, i))
    resumed = cached_images(source.train, SIZE, cache_dir, workers=1)
    assert min(read) == 2 * _CHUNK and len(read) == len(source.train) - 2 * _CHUNK  # only the rest was decoded
    assert np.array_equal(np.asarray(resumed.images), reference)
    assert sorted(p.name for p in cache_dir.iterdir()) == sorted([data_path.name, meta_path.name])


_SLOW_BUILD = """
import sys, time
from kit.config import load_competition
from kit.data import cached_images, open_source
from kit.data.common import Split
real = Split.read_image
Split.read_image = lambda self, i: time.sleep(0.02) or real(self, i)
cached_images(open_source(load_competition(sys.argv[1])).train, int(sys.argv[2]), sys.argv[3], workers=1)
"""


def test_killed_build_resumes_with_the_bytes_of_an_uninterrupted_one(tiny_competition, tmp_path):
    source = open_source(tiny_competition.cfg)
    cache_dir = tmp_path / "cache"
    data_path, _ = cache_paths(source.train, SIZE, cache_dir)
    progress = data_path.with_name(data_path.name + ".progress")
    repo = Path(__file__).resolve().parents[1]
    process = subprocess.Popen(
        [sys.executable, "-c", _SLOW_BUILD, str(tiny_competition.config_path), str(SIZE), str(cache_dir)],
        cwd=repo, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 120
        while not progress.exists() and time.monotonic() < deadline and process.poll() is None:
            time.sleep(0.05)
        assert progress.exists(), "the build wrote no progress"
        os.kill(process.pid, signal.SIGKILL)
    finally:
        process.wait()
    done = json.loads(progress.read_text())["done"]
    assert 0 < done < len(source.train) and not data_path.exists()
    resumed = cached_images(source.train, SIZE, cache_dir, workers=1)
    reference = cached_images(source.train, SIZE, tmp_path / "reference", workers=1)
    assert np.array_equal(np.asarray(resumed.images), np.asarray(reference.images))
