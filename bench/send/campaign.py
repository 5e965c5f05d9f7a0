"""Send benchmark through the whole running stack: from the campaigns API's
`send` to the last message accepted by the stack's SMTP sink, with the
stack's own sender processes (SANDESH_SENDERS, SANDESH_SMTP_CONNECTIONS each),
its contacts fan-out, Kafka and FerretDB. In the same run, the ceiling: the
same number of pre-built messages pushed into the same sink over as many
SMTP connections as the senders have together.

    .venv/bin/python -m bench.send.campaign                      # 20,000 recipients
    SANDESH_SENDERS=2 make run && .venv/bin/python -m bench.send.campaign
    SANDESH_SENDERS=2 make run && .venv/bin/python -m bench.send.campaign --senders 1,2

The last runs one campaign with one sender, then one with two (the senders
restarted and the consumer group settled before each), and prints the 1-to-2
scaling. Each run prints the senders' peak memory (VmHWM).

run.py measures the senders alone (their own topics, jobs published by the
benchmark); this one adds what a user waits for between `send` and the
senders: the launch, the audience streamed from the database and one job
per recipient produced by contacts. Run it on a quiet stack: the count of
new files in the sink's Maildir is the clock's stop (read from the
directory's mtime, see run.wait_for_files).
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from bench.send import cpu  # noqa: E402
from bench.send.run import (HTML, ceiling, count_files, prebuilt_messages,  # noqa: E402
                            wait_for_files, wait_for_quiet)
from bench.send.senders import Senders  # noqa: E402
from devstack.env import load_stack_env  # noqa: E402
from services.campaigns.cli import Api  # noqa: E402
from services.campaigns.demo import create_account, import_list, sending_domain  # noqa: E402
from services.sender.settings import SETTINGS  # noqa: E402

SETTINGS_BY_NAME = {setting.name: setting for setting in SETTINGS}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--recipients", type=int, default=20_000)
    parser.add_argument("--timeout", type=float, default=1800)
    parser.add_argument("--senders", default="",
                        help="sender counts to run one after the other, e.g. 1,2 (the stack "
                             "must run at least the largest); default: the stack's as it is")
    args = parser.parse_args()
    env = load_stack_env()
    counts = [int(n) for n in args.senders.split(",") if n.strip()]
    stack_senders = Senders(env) if counts else None
    results = {}
    for n in counts or [int(env.get("SANDESH_SENDERS", "1"))]:
        if stack_senders:
            print(f"-- {n} sender(s): restarting them and waiting for the consumer group",
                  flush=True)
            stack_senders.use(n)
        results[n] = run_campaign(env, args, n)
    if stack_senders:
        stack_senders.use(stack_senders.configured)  # the stack as it was started
    if 1 in results and 2 in results:
        (rate1, ratio1), (rate2, ratio2) = results[1], results[2]
        # The machine's speed drifts between the two runs (see run.py): each
        # ratio is to the ceiling measured beside its own run.
        print(f"1 -> 2 sender scaling: {rate2 / rate1:.2f}x in msgs/s, "
              f"{ratio2 / ratio1:.2f}x in ratio to their ceilings")


def run_campaign(env: dict[str, str], args, senders: int) -> tuple[float, float]:
    """One campaign to a fresh account's list; prints its figures and returns
    (msgs/s, ratio to the ceiling)."""
    new_dir = Path(env["SANDESH_MAILDIR"]) / "new"
    marker = uuid.uuid4().hex[:8]
    deadline = time.monotonic() + args.timeout

    _, key = create_account(env["SANDESH_GATEWAY_URL"])
    api = Api(env["SANDESH_GATEWAY_URL"], key)
    print(f"importing {args.recipients:,} contacts through the API...", flush=True)
    list_id = import_list(api, args.recipients, marker, deadline)
    template = api.call("POST", "/templates", {"name": "Bench", "subject": "News for {{ name }}",
                                               "preheader": "This week", "html": HTML})
    campaign = api.call("POST", "/campaigns", {
        "name": f"Bench {marker}", "template_id": template["id"],
        "from_email": f"news@{sending_domain(env)}", "from_name": "Sandesh Bench",
        "audience": {"list_ids": [list_id]}, "postal_address": "1 Bench Road",
        "limits": {"per_domain_concurrency": 64}})
    assert campaign.get("tracking", True), "tracking must be on"

    connections = senders * int(env.get("SANDESH_SMTP_CONNECTIONS")
                                or SETTINGS_BY_NAME["SANDESH_SMTP_CONNECTIONS"].default)
    with tempfile.TemporaryDirectory(prefix="sandesh-bench-campaign-") as tmp:
        messages = prebuilt_messages(args.recipients, Path(tmp) / "dkim",
                                     env["SANDESH_TRACKING_KEYS"])
    # The ceiling right before and right after the campaign, the ratio to
    # their mean (this machine's speed drifts; see run.py).
    wait_for_quiet()  # the import's indexing, or a previous run's erasure
    roof_before, _ = ceiling(int(env["SANDESH_SMTP_PORT"]), messages, connections)

    before, quiet_since = count_files(new_dir), new_dir.stat().st_mtime_ns
    cpu_samples = cpu.Sampler(cpu.snapshot())
    started = time.time()
    api.call("POST", f"/campaigns/{campaign['id']}/send")
    first_at, last_at = wait_for_files(new_dir, before + args.recipients, deadline,
                                       check=cpu_samples.sample, since_mtime_ns=quiet_since)
    cpu_before, cpu_after = cpu_samples.samples[0], cpu_samples.at(last_at)
    elapsed = last_at - started
    rate = args.recipients / elapsed
    print(f"campaign through the stack ({senders} sender(s), {connections} SMTP connections): "
          f"{args.recipients:,} messages in {elapsed:.1f} s = {rate:,.0f} msgs/s "
          "(from the send call to the last message in the sink; the first arrived after "
          f"{first_at - started:.1f} s)", flush=True)
    print(cpu.report(cpu_before, cpu_after, args.recipients), flush=True)
    sender_pids = [pid for pid, (name, _) in cpu_after.processes.items()
                   if name == "sender worker"]
    peaks = cpu.peak_rss_mb(sender_pids)
    if peaks:
        print(f"sender peak RSS: {', '.join(f'{mb:.0f} MB' for mb in sorted(peaks))} "
              "(VmHWM, since each sender started)", flush=True)

    roof_after, _ = ceiling(int(env["SANDESH_SMTP_PORT"]), messages, connections)
    roof = (roof_before + roof_after) / 2
    print(f"ceiling (plain smtplib, {connections} connections, same sink): "
          f"{roof_before:,.0f} msgs/s before, {roof_after:,.0f} after")
    print(f"ratio to ceiling: {rate / roof:.2f} (target >= 0.5)", flush=True)
    # The benchmark's account and its contacts go, so the stack does not grow
    # with every run (FerretDB reads whole collections for most queries). The
    # erasure runs on in the services (~15 s of FerretDB for this account),
    # so the next run waits for a quiet machine before it measures.
    try:
        api.call("DELETE", "/account")
    except Exception as exc:  # the figures above stand; say what is left behind
        print(f"could not delete the benchmark's account ({exc}); `make clean-data` resets the stack")
    return rate, rate / roof


if __name__ == "__main__":
    main()
