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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="liveproxy emulator",
        description="A local stand-in for Google's Gemini Live API (BidiGenerateContent).",
    )
    listen = parser.add_argument_group("listening")
    listen.add_argument("--host", default="127.0.0.1", help="address to bind (127.0.0.1)")
    listen.add_argument("--port", type=int, default=DEFAULT_PORT, help="port (9000; 0: any)")
    listen.add_argument("--tls-cert", help="PEM certificate chain: serve wss://")
    listen.add_argument("--tls-key", help="PEM private key for --tls-cert")
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
    behave.add_argument("--speed", choices=["realtime", "fast"], default="realtime")
    behave.add_argument("--mode", choices=["conversation", "echo"], default="conversation")
    behave.add_argument("--lifetime", type=float, default=600.0, metavar="SECONDS")
    behave.add_argument("--go-away-lead", type=float, default=50.0, metavar="SECONDS")
    behave.add_argument("--handle-ttl", type=float, default=7200.0, metavar="SECONDS")
    behave.add_argument(
        "--text-frames", action="store_true", help="send text frames instead of binary ones"
    )
    behave.add_argument(
        "--record",
        action="store_true",
        help="keep every message of every connection in memory (for debugging)",
    )
    faults = parser.add_argument_group("faults (applied to every connection)")
    faults.add_argument("--reject-status", type=int, metavar="STATUS")
    faults.add_argument("--hang-upgrade", action="store_true")
    faults.add_argument("--setup-delay", type=float, default=0.0, metavar="SECONDS")
    faults.add_argument("--no-setup-complete", action="store_true")
    faults.add_argument("--close-after", type=int, metavar="N")
    faults.add_argument("--close-code", type=int, default=1011)
    faults.add_argument("--close-reason", default="Internal error encountered.")
    faults.add_argument("--drop-after", type=int, metavar="N")
    faults.add_argument("--stall-after", type=int, metavar="N")
    faults.add_argument("--malformed-after", type=int, metavar="N")
    faults.add_argument("--go-away-after", type=int, metavar="N")
    parser.add_argument("-v", "--verbose", action="store_true", help="log every connection")
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


def main(argv: Sequence[str] | None = None) -> int:
    """Run the emulator as ``argv`` asks; return 0 after SIGINT/SIGTERM, 2 on bad arguments."""
    parser = build_parser()
    args = parser.parse_args(sys.argv[1:] if argv is None else list(argv))
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
