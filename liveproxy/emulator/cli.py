"""``liveproxy emulator``: run the Gemini Live emulator until SIGINT or SIGTERM."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from collections.abc import Sequence

import trio

from liveproxy.emulator.config import EmulatorConfig, Faults
from liveproxy.emulator.server import serve

DEFAULT_PORT = 9000


#: ``liveproxy emulator --help`` starts with this.
DESCRIPTION = (
    "A local stand-in for Google's Gemini Live API (BidiGenerateContent): the official "
    "google-genai SDK holds sessions with it. It needs no key and no network. It prints "
    "'emulator listening on ws://HOST:PORT' and runs until SIGINT or SIGTERM (exit status 0); "
    "a bad argument exits 2, an address it cannot bind or a certificate it cannot load exits 1. "
    "See docs/emulator.md."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare the emulator's options on ``parser`` (``liveproxy emulator`` is the subcommand
    parser :mod:`liveproxy.cli` gives it)."""
    listen = parser.add_argument_group("listening")
    listen.add_argument("--host", default="127.0.0.1", help="address to bind (127.0.0.1)")
    listen.add_argument("--port", type=int, default=DEFAULT_PORT, help="port (9000; 0: any)")
    listen.add_argument("--tls-cert", metavar="PEM", help="PEM certificate chain: serve wss://")
    listen.add_argument("--tls-key", metavar="PEM", help="PEM private key for --tls-cert")
    behave = parser.add_argument_group("behaviour")
    behave.add_argument(
        "--api-key",
        action="append",
        default=[],
        metavar="KEY",
        help="accept only this credential (repeatable; default: any)",
    )
    behave.add_argument(
        "--model",
        action="append",
        default=[],
        metavar="NAME",
        help="serve this model too, besides Google's Live models (repeatable)",
    )
    behave.add_argument(
        "--any-model",
        action="store_true",
        help="serve every well-formed model name, not only Google's Live models",
    )
    behave.add_argument(
        "--speed",
        choices=["realtime", "fast"],
        default="realtime",
        help="pace the model's audio in real time, or not at all (realtime)",
    )
    behave.add_argument(
        "--mode",
        choices=["conversation", "echo"],
        default="conversation",
        help="the conversation partner, or the benchmark's echo (conversation)",
    )
    behave.add_argument(
        "--lifetime",
        type=float,
        default=600.0,
        metavar="SECONDS",
        help="connection lifetime: goAway, then close 1011 (600)",
    )
    behave.add_argument(
        "--go-away-lead",
        type=float,
        default=50.0,
        metavar="SECONDS",
        help="how long before the end of its lifetime a connection gets goAway (50)",
    )
    behave.add_argument(
        "--handle-ttl",
        type=float,
        default=7200.0,
        metavar="SECONDS",
        help="how long a session resumption handle stays valid (7200)",
    )
    behave.add_argument(
        "--text-frames", action="store_true", help="send text frames instead of binary ones"
    )
    behave.add_argument(
        "--record",
        action="store_true",
        help="keep every message of every connection in memory (for debugging)",
    )
    faults = parser.add_argument_group(
        "faults (applied to every connection; N counts client messages after the setup)"
    )
    faults.add_argument(
        "--reject-status", type=int, metavar="STATUS", help="refuse the upgrade with this status"
    )
    faults.add_argument(
        "--hang-upgrade", action="store_true", help="read the upgrade request, never answer it"
    )
    faults.add_argument(
        "--setup-delay",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="wait this long before setupComplete",
    )
    faults.add_argument("--no-setup-complete", action="store_true", help="never send setupComplete")
    faults.add_argument(
        "--close-after",
        type=int,
        metavar="N",
        help="close with --close-code and --close-reason after N messages",
    )
    faults.add_argument(
        "--close-code", type=int, default=1011, metavar="CODE", help="for --close-after (1011)"
    )
    faults.add_argument(
        "--close-reason",
        default="Internal error encountered.",
        metavar="REASON",
        help="for --close-after (%(default)s)",
    )
    faults.add_argument(
        "--drop-after", type=int, metavar="N", help="drop TCP, no close frame, after N messages"
    )
    faults.add_argument(
        "--stall-after",
        type=int,
        metavar="N",
        help="stop reading and writing (pongs too) after N messages",
    )
    faults.add_argument(
        "--malformed-after",
        type=int,
        metavar="N",
        help="send one frame that is not JSON after N messages, then carry on",
    )
    faults.add_argument(
        "--go-away-after",
        type=int,
        metavar="N",
        help="send goAway after N messages, close 1011 when its time is up",
    )
    faults.add_argument(
        "--repeat-usage",
        action="store_true",
        help="send each turn's usageMetadata again, alone, after its turnComplete",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log every connection")


def build_parser() -> argparse.ArgumentParser:
    """The emulator's command line on its own (``liveproxy emulator`` without the rest)."""
    parser = argparse.ArgumentParser(prog="liveproxy emulator", description=DESCRIPTION)
    add_arguments(parser)
    return parser


def config_from_args(args: argparse.Namespace) -> EmulatorConfig:
    """The :class:`EmulatorConfig` the parsed command line asks for.

    Raises:
        ValueError: inconsistent values (e.g. --tls-cert without --tls-key).
    """
    faults = Faults(
        reject_status=args.reject_status,
        hang_upgrade=args.hang_upgrade,
        setup_complete_delay=args.setup_delay,
        withhold_setup_complete=args.no_setup_complete,
        close_after=args.close_after,
        close_code=args.close_code,
        close_reason=args.close_reason,
        drop_after=args.drop_after,
        stall_after=args.stall_after,
        malformed_after=args.malformed_after,
        go_away_after=args.go_away_after,
        repeat_usage=args.repeat_usage,
    )
    return EmulatorConfig(
        host=args.host,
        port=args.port,
        api_keys=args.api_key,
        extra_models=args.model,
        any_model=args.any_model,
        speed=args.speed,
        mode=args.mode,
        lifetime_seconds=args.lifetime,
        go_away_lead_seconds=args.go_away_lead,
        handle_ttl_seconds=args.handle_ttl,
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
        send_binary=not args.text_frames,
        record_messages=args.record,
        faults=faults,
    )


async def _run(config: EmulatorConfig) -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            emulator = await nursery.start(serve, config)
            print(f"emulator listening on {emulator.url}", flush=True)
            async for _signal in signals:
                nursery.cancel_scope.cancel()
                break


def run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """Run the emulator ``args`` (parsed by ``parser``) ask for; return 0 after SIGINT/SIGTERM,
    1 when it cannot listen, and exit 2 (``parser.error``) on inconsistent arguments."""
    try:
        config = config_from_args(args)
    except ValueError as exc:
        parser.error(str(exc))
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    failure: BaseException | None = None
    try:
        trio.run(_run, config)
    except* OSError as group:
        failure = group.exceptions[0]
    if failure is not None:
        print(f"liveproxy emulator: {failure}", file=sys.stderr)
        return 1
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the emulator as ``argv`` asks; return 0 after SIGINT/SIGTERM, 2 on bad arguments."""
    parser = build_parser()
    args = parser.parse_args(sys.argv[1:] if argv is None else list(argv))
    return run(args, parser)
