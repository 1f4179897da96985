"""The server's side of the 2PRASHB vote over Flower (Yi et al., AAAI 2024, Algorithm 3, lines 6-10).

``SecureVote(grid, policy)(server_round, nodes, candidates)`` runs the voting
phase of one round, after the plaintext prepare phase has produced the two
candidate models [Inner, Outer]:

1. one "evaluate" message per node with ``op="vote"`` and both candidates;
   a node running ``client_mod.SecureVoteMod`` evaluates both with the
   ClientApp's own evaluate function, keeps its ballot and answers "ready";
2. the tally: one secure weighted average (``workflow.SecureAverage``, kind
   ``tally``, also "evaluate" messages) over the nodes that answered, each
   input the one-hot vector of a ballot with weight 1 under value and weight
   bounds 1 (``protocol.TallyPolicy``, the rules of ``rfa.voting.secure_tally``);
3. the counts are the average times the number of voters, and
   ``rfa.voting.elect`` picks the winner (ties, and an election without a
   tally, go to Inner).

The server learns the two counts, who was asked, who answered "ready" and
whose input is in the tally (so who abstained), and nothing else about who
voted for what.  A unanimous count reveals every ballot, as any exact tally
does.  Fewer than two voters get no tally at all (one voter's tally would be
its ballot): the election is then one without voters, won by Inner.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.serverapp import Grid

from rfa.voting import Election, elect
from secagg import AbortError
from secagg.rng import RandomSource

from .protocol import CANDIDATES, RECORD, SetupError, TallyPolicy, secagg_record
from .workflow import SecureAverage, StepRecord

log = logging.getLogger("flwr")


@dataclass(frozen=True)
class VoteRecord:
    """One round's vote: who was asked, who voted, the tally step and the election."""

    election: Election
    asked: tuple[int, ...]  # the nodes sent the candidates
    ready: tuple[int, ...]  # the nodes that answered "ready" (they hold a ballot)
    tally: StepRecord | None  # the secure average of the ballots; None if there was none
    stopped: str | None = None  # why there was no tally, if there was none

    def metrics(self) -> MetricRecord:
        e = self.election
        return MetricRecord({"vote-inner": e.inner_votes, "vote-outer": e.outer_votes,
                             "vote-abstained": e.abstained, "vote-winner": e.winner})

    def line(self) -> str:
        e = self.election
        text = (f"vote: {len(self.asked)} nodes asked, {len(self.ready)} ready, inner {e.inner_votes}, "
                f"outer {e.outer_votes}, abstained {e.abstained}: {e.winner_name} elected")
        if self.stopped is not None:
            text += f" (no tally: {self.stopped})"
        return text


def vote_content(candidates: Sequence[ArrayRecord], config: ConfigRecord | None = None) -> RecordDict:
    """A vote message: ``op="vote"`` and the candidates under ``CANDIDATES`` (Inner, then Outer)."""
    if len(candidates) != len(CANDIDATES):
        raise SetupError(f"a vote is between exactly {len(CANDIDATES)} candidates, got {len(candidates)}")
    records: dict = {RECORD: ConfigRecord({"op": "vote"}), "config": config or ConfigRecord()}
    records.update(zip(CANDIDATES, candidates))
    return RecordDict(records)


class SecureVote:
    """``SecureVote(grid, TallyPolicy())(server_round, nodes, [inner_model, outer_model])`` -> ``VoteRecord``."""

    def __init__(self, grid: Grid, policy: TallyPolicy, *, timeout: float = 60.0, rng: RandomSource | None = None):
        self.grid = grid
        self.policy = policy
        self.timeout = timeout
        self.rng = rng

    def __call__(
        self, server_round: int, nodes: Sequence[int], candidates: Sequence[ArrayRecord],
        config: ConfigRecord | None = None,
    ) -> VoteRecord:
        asked = tuple(sorted(set(nodes)))
        content = vote_content(candidates, config)
        messages = [Message(content, dst_node_id=n, message_type="evaluate") for n in asked]
        replies = self.grid.send_and_receive(messages, timeout=self.timeout)
        ready = tuple(sorted({
            r.metadata.src_node_id for r in replies
            if r.metadata.src_node_id in asked and not r.has_error()
            and (record := secagg_record(r)) is not None and record.get("op") == "ready"
        }))
        if len(ready) < 2:
            stopped = f"{len(ready)} node(s) voted; a tally of fewer than 2 ballots would reveal them"
            log.warning("round %d: %s, so Inner is elected", server_round, stopped)
            return VoteRecord(elect(0, 0, len(asked), round=server_round), asked, ready, None, stopped)
        average = SecureAverage(self.grid, self.policy, timeout=self.timeout, rng=self.rng, message_type="evaluate")
        try:
            step = average(ready, "tally", np.zeros(len(CANDIDATES)))
        except AbortError as exc:  # nothing revealed: an election without voters
            log.warning("round %d: the vote tally aborted, so Inner is elected: %s", server_round, exc)
            return VoteRecord(elect(0, 0, len(asked), round=server_round), asked, ready, None, f"aborted: {exc}")
        # Each input has weight 1: the average times the number of inputs is the vector of counts.
        inner, outer = (int(c) for c in np.rint(step.output * step.sum_weights))
        election = elect(inner, outer, len(asked) - len(step.included), round=server_round)
        return VoteRecord(election, asked, ready, step)
