"""Reading a transcript file: a malformed header is a MalformedMessage, never a crash (audit 14.7)."""

from __future__ import annotations

import msgpack
import pytest

from secagg.cli import main
from secagg.errors import MalformedMessage
from secagg.transcript import FORMAT, VERSION, read_transcript


@pytest.mark.parametrize("params", [[1, 2], 7, "params", None, b"\x00", True])
def test_a_header_whose_params_is_not_a_map_is_refused(tmp_path, params, capsys):
    path = tmp_path / "t.bin"
    path.write_bytes(msgpack.packb({"format": FORMAT, "version": VERSION, "params": params}))
    with pytest.raises(MalformedMessage, match="params must be a map"):
        read_transcript(path)
    # Before the fix, `secagg inspect` died with AttributeError ('list' object has no attribute 'get').
    assert main(["inspect", str(path)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("secagg inspect: malformed message") and "params must be a map" in err


def test_a_header_without_params_is_refused(tmp_path):
    path = tmp_path / "t.bin"
    path.write_bytes(msgpack.packb({"format": FORMAT, "version": VERSION}))
    with pytest.raises(MalformedMessage, match="params must be a map"):
        read_transcript(path)
