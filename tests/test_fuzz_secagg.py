"""sims.fuzz_secagg: a quick fuzz of the client, server and bootstrap paths finds no crash, hang,
state change on refusal or wrong total, and reaches past decoding (frames accepted and refused)."""

from __future__ import annotations

import numpy as np
import pytest

from secagg.client import ClientState
from sims import fuzz_secagg as fz


def test_quick_fuzz_finds_nothing_and_every_party_accepts_and_refuses_frames(capsys):
    code = fz.main(["--quick", "--quiet"])
    out = capsys.readouterr().out
    report = fz.LAST_REPORT
    assert report is not None
    failures = [f for f in report.findings if f.kind != "deviated"]
    assert code == 0 and not failures, "\n".join(fz.findings_text(report, None))
    assert "0 failure(s)" in out
    for party in fz.PARTIES:
        tallies = [t for (p, _), t in report.tallies.items() if p == party]
        total = fz.Tally()
        for t in tallies:
            total.add(t)
        assert len(tallies) == len(fz.configs_of(party))
        assert total.frames == fz.QUICK_FRAMES
        assert (total.crashes, total.hangs, total.state_changes, total.wrong_totals) == (0, 0, 0, 0)
        assert total.accepted > 0 and total.refused > 0, party
        assert total.structured >= total.frames / 2, party  # most frames get past msgpack decoding
    # the session parties were finished live after accepted frames, and refusals came from deep checks too
    for party in ("client", "server"):
        total = fz.Tally()
        for (p, _), t in report.tallies.items():
            if p == party:
                total.add(t)
        assert total.finished_live > 0
        assert total.by_class["ProtocolViolation"] > 0


def test_the_mutator_is_reproducible_and_changes_every_frame():
    sess = fz.build_session(fz.SESSION_CONFIGS[1], 7)  # mal/complete/dropouts
    frames = sess.server_frames[:10] + [d for _, d in sess.client_frames[:10]]
    for i, frame in enumerate(frames):
        a = fz.mutate(frame, np.random.default_rng([1, i]), sess.ctx)
        b = fz.mutate(frame, np.random.default_rng([1, i]), sess.ctx)
        assert a == b and a[0] != frame


def test_the_writer_reads_back_as_msgpack_and_writes_what_packb_cannot():
    import msgpack

    tree = [3, b"\x00" * 32, "share_keys", {1: [b"ab", None, True]}, -5, 1.5]
    assert fz.pack(tree) == msgpack.packb(tree, use_bin_type=True)
    assert msgpack.unpackb(fz.pack(fz.Forced(7, "u64"))) == 7 and len(fz.pack(fz.Forced(7, "u64"))) == 9
    repeated = fz.pack(fz.Pairs([fz.Pair([1, "a"]), fz.Pair([1, "b"])]))
    assert repeated == b"\x82\x01\xa1a\x01\xa1b"  # a map with a repeated key


def test_a_copied_client_is_independent_of_its_original():
    sess = fz.build_session(fz.SESSION_CONFIGS[0], 3)  # hbc/complete/plain
    snap = next(s for s in sess.client_snaps if s.state == "advertised")
    u = sorted(snap.frames)[0]
    original = snap.world.parties[u].client
    copy = fz.clone_client(original)
    copy.receive(snap.frames[u])
    assert copy.state is ClientState.SHARED and original.state is ClientState.ADVERTISED
    assert fz.state_diff(original, fz.clone_client(original)) == ([], False)


@pytest.mark.parametrize("party", fz.PARTIES)
def test_replay_runs_one_frame(party, capsys):
    config = fz.configs_of(party)[-1].name
    assert fz.main(["--quick", "--replay", f"{party}:{config}:3"]) == 0
    assert "mutated:" in capsys.readouterr().out


def test_the_state_oracle_sees_a_changed_attribute_of_either_party():
    sess = fz.build_session(fz.SESSION_CONFIGS[3], 5)  # mal/complete/plain
    snap = sess.server_snaps[1]
    server = fz.clone_server(snap.world.server)
    assert fz.state_diff(snap.world.server, server) == ([], False)
    server._received[snap.inbox[0][0]] = None  # as if a refused frame had been recorded
    assert fz.state_diff(snap.world.server, server)[0] == ["_received"]
    client = next(iter(snap.world.parties.values())).client
    copy = fz.clone_client(client)
    copy._rng.bytes(1)
    assert fz.state_diff(client, copy) == ([], True)  # the random source moved: reported apart
    copy.abort_reason = "changed"
    assert fz.view_diff(fz.CLIENT_VIEW, fz.client_view(client), fz.client_view(copy)) == ["abort_reason"]
