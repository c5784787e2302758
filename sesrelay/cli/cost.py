"""`sesrelay cost`: what a deployment costs, from its synthesized template.

With -c env=NAME the command synthesizes the CDK app (`python app.py` in the project
directory, offline, into a temporary directory) and prices the template of that
environment; with --template it prices a template already synthesized (such as
cdk.out/SesRelay-NAME.template.json after `cdk synth`). Prices are the us-east-1 list
prices of sesrelay/prices.json; the requests per message come from the code path
(sesrelay.cost). See docs/COST.md.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from sesrelay import cost

# Synthesis bundles the Lambda code with pip; minutes on a slow machine.
SYNTH_TIMEOUT = 900


class CostError(Exception):
    """The template could not be had."""


def _context(pairs: list[str]) -> dict[str, str]:
    context = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise CostError(f"-c {pair}: expected KEY=VALUE, such as env=prod")
        context[key] = value
    return context


def synthesize(app_dir: Path, context: dict[str, str], outdir: Path) -> dict[str, Any]:
    """Run the CDK app in app_dir (plain python, as `cdk synth` would) with context, and
    return the environment's template."""
    if not (app_dir / "app.py").is_file() or not (app_dir / "cdk.json").is_file():
        raise CostError(f"{app_dir}: no app.py and cdk.json here: run in the project "
                        "directory, pass --app-dir, or price a template with --template")
    environ = {k: v for k, v in os.environ.items() if k != "CDK_CONTEXT_JSON"}
    # What the CDK CLI passes an app: its output directory and the -c context.
    environ |= {"CDK_OUTDIR": str(outdir), "CDK_CONTEXT_JSON": json.dumps(context)}
    result = subprocess.run([sys.executable, "app.py"], cwd=app_dir, env=environ,
                            capture_output=True, text=True, timeout=SYNTH_TIMEOUT,
                            check=False)
    if result.returncode != 0:
        raise CostError("synthesis failed:\n" + result.stderr.strip()[-3000:])
    template = outdir / f"SesRelay-{context['env']}.template.json"
    return dict(json.loads(template.read_text(encoding="utf-8")))


def _row(item: str, quantity: str, usd: float) -> str:
    return f"  {item:<58} {quantity:>14} {usd:>9.2f}"


def _verdict(total: float, target: float, lines: tuple[cost.Line, ...]) -> str:
    if total <= target:
        return f"target {target:.2f}: met"
    largest = sorted(lines, key=lambda line: line.usd, reverse=True)[:3]
    return (f"target {target:.2f}: missed; largest: "
            + ", ".join(f"{line.item} {line.usd:.2f}" for line in largest))


def report(estimate: cost.Estimate, name: str) -> str:
    """The estimate as text: each fixed and variable line, totals against the targets."""
    size = estimate.message_bytes / 1024
    carried = "inline in the SQS message" if estimate.inline else "through S3"
    out = [f"sesrelay cost: environment {name}, {cost.prices_region()} list prices "
           "(sesrelay/prices.json), no free tiers",
           "",
           f"Fixed, per month {'quantity':>56} {'USD':>9}"]
    out += [_row(line.item, line.quantity, line.usd) for line in estimate.fixed]
    out += [_row("total", "", estimate.fixed_total),
            f"  {_verdict(estimate.fixed_total, cost.FIXED_TARGET, estimate.fixed)}",
            "",
            f"Per million messages of {size:g} KB, one recipient each, {carried}",
            f"{'per message':>76} {'USD':>9}"]
    out += [_row(line.item, line.quantity, line.usd) for line in estimate.variable]
    out += [_row("total besides SES", "", estimate.variable_total),
            f"  {_verdict(estimate.variable_total, cost.VARIABLE_TARGET, estimate.variable)}",
            _row("SES", "1", estimate.ses_per_million)]
    if estimate.messages_per_day:
        out += ["", f"At {estimate.messages_per_day:,} messages a day: "
                f"{estimate.monthly_total:,.2f} USD a month (fixed, variable and SES)"]
    return "\n".join(out)


def cmd_cost(args: argparse.Namespace) -> int:
    """Price a deployment's template."""
    try:
        context = _context(args.context)
        if args.template:
            template = json.loads(Path(args.template).read_text(encoding="utf-8"))
            name = context.get("env") or Path(args.template).name
        elif "env" not in context:
            raise CostError("name the environment with -c env=NAME, or give --template")
        else:
            name = context["env"]
            with tempfile.TemporaryDirectory(prefix="sesrelay-cost-") as outdir:
                template = synthesize(Path(args.app_dir), context, Path(outdir))
    except (CostError, OSError, json.JSONDecodeError) as exc:
        print(f"sesrelay cost: {exc}", file=sys.stderr)
        return 1
    estimate = cost.estimate(template, messages_per_day=args.messages_per_day,
                             message_bytes=int(args.message_kb * 1024))
    print(report(estimate, name))
    return 0


def _non_negative(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value} is negative")
    return value


def register(commands: argparse._SubParsersAction) -> None:
    """Add `cost`."""
    parser = commands.add_parser(
        "cost", help="a deployment's monthly cost and its cost per million messages, "
        "from its synthesized template",
        description=__doc__.split("\n\n", 1)[1] if __doc__ else None)
    parser.add_argument("-c", "--context", action="append", default=[], metavar="KEY=VALUE",
                        help="CDK context, as with cdk synth: env=NAME chooses the "
                        "environment")
    parser.add_argument("--template", metavar="FILE",
                        help="price this synthesized template instead of synthesizing")
    parser.add_argument("--app-dir", default=".", metavar="DIR",
                        help="the project directory with app.py and cdk.json (default: "
                        "the current directory)")
    parser.add_argument("--messages-per-day", type=_non_negative, default=0, metavar="N",
                        help="add the month's total at this volume")
    parser.add_argument("--message-kb", type=float, default=20, metavar="KB",
                        help="average message size (default %(default)g)")
    parser.set_defaults(func=cmd_cost)
