"""Bundle sequences (issue 12.5): one scheme for file and registry compiles, monotonic within a
stream whatever the source. Before, a file compile drew the Unix time and a registry compile
1, 2, ... after it, so every registry bundle looked older than the file-compiled one."""

from __future__ import annotations

from pathlib import Path

import pytest

from compiler.registry import next_sequence, record_compile

T = 1_750_000_000.7


def test_without_a_registry_the_sequence_is_the_compile_time() -> None:
    assert next_sequence("fridge", None, T) == int(T * 1000)  # milliseconds
    assert next_sequence("fridge", None, T + 0.002) > next_sequence("fridge", None, T)


@pytest.mark.integration
def test_a_registry_compile_after_a_file_compile_of_the_stream_is_newer(tmp_path: Path) -> None:
    """Real MLflow (SQLite): the registry holds two bundles of ``fridge`` (sequences 1 and 2, as the
    old counter gave them) and one of ``pantry`` far ahead; a file compile of ``fridge`` at T,
    then a registry compile 2 ms later must be newer (the CI run had them in the same second, and
    seconds gave both the same sequence); a stream ahead of the clock counts on."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tarball = tmp_path / "b.tar.gz"
    tarball.write_bytes(b"bundle")
    for name, stream_tag, seq in [("fridge--t1", None, 1), ("fridge--t2", "fridge", 2),
                                  ("pantry--t1", "pantry", int(T * 1000) + 10_000)]:
        tags = {"coldchain.source_model": name.split("--")[0], "coldchain.sequence": str(seq)}
        if stream_tag:
            tags["coldchain.stream"] = stream_tag
        record_compile(uri, name, "t", [], {}, tarball, name, tags)
    file_compiled = next_sequence("fridge", None, T)
    registry_compiled = next_sequence("fridge", uri, T + 0.002)
    assert registry_compiled > file_compiled
    assert next_sequence("pantry", uri, T) == int(T * 1000) + 10_001  # registered ahead of the clock: one more
    assert next_sequence("cellar", uri, T) == int(T * 1000)  # a new stream
