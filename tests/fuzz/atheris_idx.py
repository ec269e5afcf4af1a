"""Coverage-guided fuzzing of the idx parser with atheris (libFuzzer), run by hand; pytest does not
collect it (the file name does not start with test_). Every input is read as a raw idx file and, gzipped,
as a .gz one, and converted by the element-type rules: each must give an array or raise DataError. Any
other exception, a crash, or the memory limit ends the run and leaves the input in ./crash-*.

    pip install atheris                       # a wheel exists for CPython 3.11 on Linux x86-64
    python tests/fuzz/atheris_idx.py -atheris_runs=200000 -rss_limit_mb=1024 [CORPUS_DIR]

The hypothesis tests in tests/reliability/test_fuzz_parsers.py check the same property in the suite.
"""

from __future__ import annotations

import gzip
import sys
import tempfile
from pathlib import Path

import atheris

with atheris.instrument_imports():
    from trainlab.data import formats
from trainlab.errors import DataError

WORKDIR = Path(tempfile.mkdtemp(prefix="atheris-idx-"))


def one_input(data: bytes) -> None:
    for path, content in (
        (WORKDIR / "x-idx3-ubyte", data),
        (WORKDIR / "x-idx3-ubyte.gz", gzip.compress(data)),
    ):
        path.write_bytes(content)
        try:
            array = formats.read_idx(path)
            formats.idx_pixels(array, path)
            formats.idx_labels(array, path)
        except DataError as error:
            assert "\n" not in str(error) and str(path) in str(error), error


if __name__ == "__main__":
    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()
