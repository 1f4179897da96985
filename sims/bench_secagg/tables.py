"""The benchmark's output: rich tables of the rows, summaries and verdicts against the goals."""

from __future__ import annotations

import statistics

from rich import box
from rich.table import Table

from secagg.params import element_bytes
from sims.bench_secagg.config import (
    DROP_ROUND, GOAL_D, GOAL_N, GOAL_RATIO, MALICIOUS_GOAL_N, MALICIOUS_GOAL_RATIO, MALICIOUS_ROUNDS, ROUNDS,
)


def fmt_bytes(x: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if x < 1000 or unit == "GB":
            return f"{x:.0f} {unit}" if unit == "B" else f"{x:.1f} {unit}"
        x /= 1000
    raise AssertionError


def fmt_d(d: int) -> str:
    return f"{d:.0e}".replace("e+0", "e")


WIDTH = 100  # columns every table fits: what a non-terminal stdout gets, and what the docs capture
KEY = ["n", "d", "dropout"]


def narrow_table(title: str, caption: str, columns: list[str], left: tuple[str, ...] = ()) -> Table:
    """A table readable at WIDTH columns: no vertical rules and shared padding (two spaces between columns),
    so numbers never shrink to "0.…"; columns right-justified except those in ``left``.  A newline in a column
    name splits its header over two lines."""
    t = Table(title=title, caption=caption, box=box.SIMPLE_HEAD, show_edge=False, collapse_padding=True)
    for name in columns:
        t.add_column(name, justify="left" if name in left else "right")
    return t


def round_header(name: str) -> str:
    """A round's name split after its first underscore, over two header lines: the rounds' columns stay narrow."""
    return name.replace("_", "_\n", 1)


def main_tables(rows: list[dict], args) -> list[Table]:
    """The in-memory rows as narrow tables (each readable at 100 columns): the session's seconds; masking and
    unmasking against the floor, with the bytes; in malicious-server mode, the cost against honest-but-curious."""
    title = (
        f"secagg, {rows[0]['transport']} transport, {args.graph} graph, "
        + ("malicious-server mode, " if args.malicious else "")
        + f"M = 2^{args.modulus_bits}, "
        + ("t = floor(2n/3)+1" if args.graph == "complete" else
           f"k, t sized for dropout {args.tolerated_dropout:g}, corrupt {args.tolerated_corrupt:g}")
        + f", dropouts leave at {DROP_ROUND}"
    )

    def table(subtitle: str, caption: str, columns: list[str]) -> Table:
        return narrow_table(subtitle, caption, KEY + columns)

    def key(r: dict, dropped: bool = False) -> list[str]:
        return [str(r["n"]), fmt_d(r["d"]), f"{r['dropout']:.1f}" + (f" ({r['dropped']})" if dropped else "")]

    seconds = table(
        f"{title}: seconds",
        "dropout (clients dropped); client s: all clients, all rounds (summed over the worker processes); "
        "per client s = client s / n",
        ["k", "t", "included", "workers", "wall s", "client s\n(all)", "per client s", "server s"],
    )
    floor = table(
        "the same sessions against the AES-CTR floor, and bytes",
        "masking = clients' masked_input round; unmasking = server's unmasking round;\n"
        "ratio = (masking + unmasking) / AES-CTR floor; session = (client s + server s) / the same floor "
        "(every round, share_keys included);\n"
        "bytes per client: mean over the included clients; expansion = bytes sent / (d * element bytes)",
        ["masking\ns", "unmasking\ns", "floor\ns", "ratio", "session", "sent/\nclient", "recv/\nclient", "expansion"],
    )
    for r in rows:
        ratio = f"{r['ratio']:.2f}"
        if r["n"] == GOAL_N and r["d"] == GOAL_D:
            ratio = f"[{'green' if r['ratio'] <= GOAL_RATIO else 'red'}]{ratio}[/]"
        seconds.add_row(
            *key(r, dropped=True),
            str(r["k"]),
            str(r["t"]),
            str(r["included"]) + ("" if r["correct"] else " [red]WRONG SUM[/]"),
            str(r["workers"]),
            f"{r['wall_s']:.2f}",
            f"{r['client_s']:.3f}",
            f"{r['client_s'] / r['n']:.4f}",
            f"{r['server_s']:.3f}",
        )
        floor.add_row(
            *key(r),
            f"{r['masking_s']:.3f}",
            f"{r['unmasking_s']:.3f}",
            f"{r['floor_s']:.3f}",
            ratio,
            f"{r['session_ratio']:.2f}",
            fmt_bytes(r["bytes_sent_per_client"]),
            fmt_bytes(r["bytes_received_per_client"]),
            f"{r['expansion']:.2f}",
        )
    if not args.malicious:
        return [seconds, floor]
    against = table(
        "the same sessions against honest-but-curious ones",
        "mal/HbC = this session's wall s (CPU s: user + system of this process and its workers, setup included) / "
        "the honest-but-curious session's (same n, d, dropouts, each graph sized for its mode)",
        ["wall s", "HbC\nwall s", "mal/HbC\nwall", "mal/HbC\nCPU"],
    )
    for r in rows:
        against.add_row(*key(r), f"{r['wall_s']:.2f}", f"{r['hbc_wall_s']:.2f}", f"{r['wall_s'] / r['hbc_wall_s']:.2f}",
                        f"{r['cpu_s'] / r['hbc_cpu_s']:.2f}")
    return [seconds, floor, against]


def speedup_table(rows: list[dict]) -> list[Table]:
    """The pool against the serial run: the wall times and whether both ran the same session; then the CPU
    seconds and the peak memory."""
    def key(r: dict) -> list[str]:
        return [str(r["n"]), fmt_d(r["d"]), f"{r['dropout']:.1f} ({r['dropped']})"]

    def peak(kb: int | None) -> str:
        return "-" if kb is None else fmt_bytes(kb * 1024)

    timing = narrow_table(
        f"the client pool against the serial run (same seeded session; {rows[0]['cores']} cores available): seconds",
        "dropout (clients dropped); s: wall time of simulate(), setup (parameters, client state machines) included; "
        "speedup = serial s / pool s, one per alternating pair; each run in a fresh process;\n"
        "same: byte-identical messages at the server in the same order, equal sums and survivors",
        KEY + ["k", "workers", "serial s", "pool s", "speedup", "same"],
    )
    memory = narrow_table(
        "the same runs: CPU seconds and peak memory",
        "CPU: user + system seconds, serial run | pool: the server's process + all workers;\n"
        "peak: the run's VmHWM (the server's process; imports included); worker peak: ru_maxrss of the largest "
        "worker, which counts the pages it shares with the server's process (the inputs);\n"
        "load: the 1-minute load average at the end (other work on the machine slows both runs)",
        KEY + ["serial\nCPU s", "pool CPU s", "serial\npeak", "pool\npeak", "worker\npeak", "load"],
    )
    for r in rows:
        timing.add_row(
            *key(r), str(r["k"]), str(r["workers"]), f"{r['serial_s']:.2f}", f"{r['pool_s']:.2f}",
            ", ".join(f"{x:.2f}" for x in r["speedups"]),
            ("[green]yes[/]" if r["same_session"] else "[red]NO[/]") + ("" if r["correct"] else " [red]WRONG SUM[/]"),
        )
        memory.add_row(
            *key(r), f"{r['serial_cpu_s']:.1f}", f"{r['pool_parent_cpu_s']:.1f} + {r['pool_workers_cpu_s']:.1f}",
            peak(r["serial_peak_kb"]), peak(r["pool_peak_kb"]), peak(r["worker_peak_kb"]), f"{r['load_average']:.1f}",
        )
    return [timing, memory]


def rounds_table(rows: list[dict]) -> Table:
    """Seconds per round, one line for all clients and one for the server per configuration (the rounds of
    malicious-server mode if any row has them), each beside its part of the floor."""
    rounds = MALICIOUS_ROUNDS if any(r["malicious"] for r in rows) else ROUNDS
    table = narrow_table(
        "seconds per round (clients: summed over all clients), and the floor split",
        "floor: the AES-CTR floor's streams of the clients (all of them) or of the server",
        KEY + ["who"] + [round_header(x) for x in rounds] + ["floor"], left=("who",),
    )
    for r in rows:
        for who, seconds, floor in (("clients", r["client_rounds_s"], r["floor_client_s"]),
                                    ("server", r["server_rounds_s"], r["floor_server_s"])):
            table.add_row(str(r["n"]), fmt_d(r["d"]), f"{r['dropout']:.1f}", who,
                          *(f"{seconds.get(x, 0.0):.3f}" for x in rounds), f"{floor:.3f}",
                          end_section=who == "server" and len(rows) > 1)
    return table


def loopback_table(pairs: list[tuple[dict | None, dict]], args) -> list[Table]:
    """The loopback sessions: wall and CPU seconds against the in-memory run; then server memory and bytes."""
    reset = all(t["peak_reset"] for _, t in pairs)
    timing = narrow_table(
        f"secagg over loopback TCP (server in its own process, the n clients in this one), "
        f"M = 2^{args.modulus_bits}, t = floor(2n/3)+1, dropouts leave at {DROP_ROUND}: seconds",
        "dropout (clients dropped); wall s: first message to the server's result; "
        "tcp/mem = TCP wall / in-memory wall (same session); server CPU: user + system s of the server process;\n"
        "same: byte-identical messages at the server, equal totals, equal message bytes, both = plaintext sum",
        KEY + ["t", "included", "mem\nwall s", "tcp\nwall s", "tcp/mem", "server\nCPU s", "same"],
    )
    memory = narrow_table(
        "the same TCP sessions: server memory and bytes on the wire",
        "server peak: VmHWM of the server process "
        + (
            "reset after its imports, minus its RSS then (baseline)"
            if reset
            else "[red](could not be reset: includes imports)[/] minus its RSS after imports"
        )
        + ";\n"
        "sent/client: bytes the server read per included client, all frames incl. 4-byte prefixes and the hello "
        "(framing = those two); expansion = sent / (d * element bytes)",
        KEY + ["server\npeak", "baseline", "sent/\nclient", "framing", "raw/\nclient", "expansion", "recv/\nclient"],
    )
    for m, t in pairs:
        if m is None:
            same = "-"
        else:
            same = "[green]yes[/]" if t["same_session"] else f"[red]NO: {', '.join(t['differences'])}[/]"
        key = [str(t["n"]), fmt_d(t["d"]), f"{t['dropout']:.1f} ({t['dropped']})"]
        timing.add_row(
            *key,
            str(t["t"]),
            str(t["included"]) + ("" if t["correct"] else " [red]WRONG SUM[/]"),
            "-" if m is None else f"{m['wall_s']:.3f}",
            f"{t['wall_s']:.3f}",
            "-" if m is None else f"{t['wall_s'] / m['wall_s']:.2f}",
            f"{t['server_cpu_s']:.2f}",
            same,
        )
        memory.add_row(
            *key,
            fmt_bytes(t["server_session_kb"] * 1024),
            fmt_bytes(t["server_baseline_kb"] * 1024),
            fmt_bytes(t["bytes_sent_per_client"]),
            f"{t['framing_bytes_per_client']:.0f} B",
            fmt_bytes(t["d"] * element_bytes(t["modulus_bits"])),
            f"{t['expansion']:.3f}",
            fmt_bytes(t["bytes_received_per_client"]),
        )
    return [timing, memory]


def loopback_rounds_table(pairs: list[tuple[dict | None, dict]]) -> Table:
    """Wall seconds per round, one line per transport of each configuration (the in-memory one only if run)."""
    table = narrow_table(
        "wall seconds per round: in memory (clients + server) | TCP (previous round's close to this one's)",
        "TCP advertise_keys includes connecting and the hello/params bootstrap",
        KEY + ["transport"] + [round_header(x) for x in ROUNDS], left=("transport",),
    )
    for m, t in pairs:
        runs = [("memory", m), ("tcp", t)] if m is not None else [("tcp", t)]
        for transport, row in runs:
            table.add_row(str(t["n"]), fmt_d(t["d"]), f"{t['dropout']:.1f}", transport,
                          *(f"{row['round_wall_s'].get(x, 0.0):.3f}" for x in ROUNDS),
                          end_section=transport == "tcp" and len(pairs) > 1)
    return table


def loopback_summary(pairs: list[tuple[dict | None, dict]]) -> list[str]:
    lines = []
    both = [(m, t) for m, t in pairs if m is not None]
    if both:
        ratios = [t["wall_s"] / m["wall_s"] for m, t in both]
        by_size: dict[tuple[int, int], list[str]] = {}
        for (m, t), x in zip(both, ratios):
            by_size.setdefault((t["n"], t["d"]), []).append(f"{x:.2f}")
        each = "; ".join(f"n={n} d={fmt_d(d)}: {', '.join(xs)}" for (n, d), xs in by_size.items())
        lines.append(
            f"TCP / in-memory wall time: min {min(ratios):.2f}, median {statistics.median(ratios):.2f}, "
            f"max {max(ratios):.2f} over {len(ratios)} configurations (by n, d, one per dropout rate: {each})"
        )
        same = sum(t["same_session"] for _, t in both)
        colour = "green" if same == len(both) else "red"
        lines.append(
            f"same session on both transports (identical messages, equal totals = plaintext sum of the included "
            f"inputs): [{colour}]{same} of {len(both)}[/]"
        )
    exp = [t["expansion"] for _, t in pairs]
    lines.append(
        f"measured expansion over TCP (wire bytes sent per client / raw input): {min(exp):.3f} .. {max(exp):.3f}"
    )
    worst = max(pairs, key=lambda p: p[1]["server_session_kb"])[1]
    lines.append(
        f"largest server peak: {fmt_bytes(worst['server_session_kb'] * 1024)} above a "
        f"{fmt_bytes(worst['server_baseline_kb'] * 1024)} baseline at n={worst['n']}, d={fmt_d(worst['d'])} "
        f"(the n masked inputs alone are {fmt_bytes(worst['n'] * worst['d'] * element_bytes(worst['modulus_bits']))})"
    )
    return lines


def verdict(rows: list[dict]) -> str:
    goal = [r for r in rows if r["n"] == GOAL_N and r["d"] == GOAL_D]
    if not goal:
        return f"goal (n={GOAL_N}, d=10^5, ratio <= {GOAL_RATIO:g}): not measured in this run"
    worst = max(r["ratio"] for r in goal)
    each = ", ".join(f"dropout {r['dropout']:g}: {r['ratio']:.2f}" for r in goal)
    status = "[green]met[/]" if worst <= GOAL_RATIO else "[red]not met[/]"
    return f"goal (n={GOAL_N}, d=10^5, ratio <= {GOAL_RATIO:g}): {status}, worst ratio {worst:.2f} ({each})"


def malicious_verdict(rows: list[dict]) -> str:
    """Malicious-server cost against the honest-but-curious session's, at every n measured."""
    each = ", ".join(f"n={r['n']} d={fmt_d(r['d'])}: {r['wall_s'] / r['hbc_wall_s']:.2f} wall, "
                     f"{r['cpu_s'] / r['hbc_cpu_s']:.2f} CPU" for r in rows)
    goal = [max(r["wall_s"] / r["hbc_wall_s"], r["cpu_s"] / r["hbc_cpu_s"]) for r in rows if r["n"] == MALICIOUS_GOAL_N]
    if not goal:
        status = "not measured in this run"
    else:
        status = "[green]met[/]" if max(goal) <= MALICIOUS_GOAL_RATIO else "[red]not met[/]"
    return (f"malicious / honest-but-curious session ({each}); goal at n = {MALICIOUS_GOAL_N}: "
            f"<= {MALICIOUS_GOAL_RATIO:g}: {status}")
