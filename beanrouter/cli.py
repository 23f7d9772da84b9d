"""The ``beanrouter`` command line: a thin click group over the library.

``beanrouter server [beanstalkd flags]`` and ``beanrouter cluster [beanstalkd flags] [--shards N]``
hand their arguments to beanstalkd-style parsers untouched (so they are drop-ins for
``beanstalkd``); they are dispatched before click is even imported, to keep start-up fast.
``beanrouter proxy --config FILE`` runs the proxy in front of a configured cluster.
"""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> None:
    """Entry point of ``beanrouter`` and ``python -m beanrouter``."""
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["server"]:
        from .server.cli import main as server_main

        server_main(args[1:], progname="beanrouter server")
        return
    if args[:1] == ["cluster"]:
        from .proxy.cluster import main as cluster_main

        cluster_main(args[1:], progname="beanrouter cluster")
        return
    _click_main(args)


def _click_main(args: list[str]) -> None:
    import json
    import time
    from collections.abc import Callable
    from typing import Any

    import click

    @click.group(context_settings={"help_option_names": ["-h", "--help"]})
    @click.version_option(package_name="beanrouter")
    def cli() -> None:
        """Make a set of independent beanstalkd servers behave like one big beanstalkd."""

    @cli.command(
        context_settings={"ignore_unknown_options": True, "help_option_names": []},
        add_help_option=False,
    )
    @click.argument("flags", nargs=-1, type=click.UNPROCESSED)
    def server(flags: tuple[str, ...]) -> None:
        """Run the bundled beanstalkd-compatible server (takes beanstalkd's flags; -h for help)."""
        from .server.cli import main as server_main

        server_main(list(flags), progname="beanrouter server")

    def tube_names(_ctx: click.Context, _param: click.Parameter, value: tuple[str, ...]) -> object:
        from .router import InvalidArgument
        from .router.summary import check_tube_names

        try:
            return check_tube_names(value)
        except InvalidArgument as exc:
            raise click.BadParameter(str(exc.__cause__ or exc)) from None

    @cli.command(
        context_settings={"ignore_unknown_options": True, "help_option_names": []},
        add_help_option=False,
    )
    @click.argument("flags", nargs=-1, type=click.UNPROCESSED)
    def cluster(flags: tuple[str, ...]) -> None:
        """Run N bundled shards and a proxy in front (beanstalkd's flags, --shards N; --help)."""
        from .proxy.cluster import main as cluster_main

        cluster_main(list(flags), progname="beanrouter cluster")

    @cli.command()
    @click.option(
        "-c", "--config", "config_path", required=True,
        type=click.Path(dir_okay=False), help="The cluster configuration (docs/config.md).",
    )  # fmt: skip
    @click.option("-l", "--listen", "addr", default="127.0.0.1", show_default=True,
                  help="Address to listen on; unix:PATH for a UNIX socket.")  # fmt: skip
    @click.option("-p", "--port", default=11300, show_default=True, type=click.IntRange(0, 65535))
    @click.option(
        "-z", "--max-job-size", default=65535, show_default=True,
        type=click.IntRange(0, 1_073_741_824), help="Largest job body accepted, in bytes.",
    )  # fmt: skip
    @click.option("--workers", default=1, show_default=True, type=click.IntRange(1, 256),
                  help="Proxy processes sharing the port (SO_REUSEPORT).")  # fmt: skip
    @click.option("--http-port", type=click.IntRange(0, 65535), default=None,
                  help="Serve the console, /healthz, /metrics, /route (worker i: +i).")  # fmt: skip
    @click.option("--http-addr", default="127.0.0.1", show_default=True)
    @click.option("--http-admin", is_flag=True,
                  help="Allow the console's admin actions (kick, delete, pause).")  # fmt: skip
    @click.option("--reuse-port", is_flag=True,
                  help="Bind with SO_REUSEPORT (share the port with others).")  # fmt: skip
    @click.option("--grace", default=10.0, show_default=True, type=click.FloatRange(0),
                  help="Seconds a graceful stop waits for clients.")  # fmt: skip
    def proxy(
        config_path: str,
        addr: str,
        port: int,
        max_job_size: int,
        workers: int,
        http_port: int | None,
        http_addr: str,
        http_admin: bool,
        reuse_port: bool,
        grace: float,
    ) -> None:
        """Serve the beanstalkd protocol in front of a cluster: one big beanstalkd."""
        if workers > 1:
            if port == 0 or addr.startswith("unix:"):
                raise click.UsageError("--workers needs a TCP port other than 0")
            from .proxy.workers import run_workers

            def worker_args(i: int) -> list[str]:
                args = ["proxy", "--config", config_path, "-l", addr, "-p", str(port)]
                args += ["-z", str(max_job_size), "--grace", str(grace), "--reuse-port"]
                if http_port is not None:
                    args += ["--http-addr", http_addr, "--http-port", str(http_port + i)]
                    args += ["--http-admin"] if http_admin else []
                return args

            sys.exit(run_workers(workers, worker_args, grace=grace))
        import logging

        from .proxy.run import run_proxy, setup_logging

        setup_logging(logging.INFO)
        sys.exit(
            run_proxy(
                config_path,
                addr,
                port,
                http_addr=http_addr,
                http_port=http_port,
                http_admin=http_admin,
                max_job_size=max_job_size,
                reuse_port=reuse_port,
                grace=grace,
            )
        )

    @cli.command("check-config")
    @click.argument("file", type=click.Path(dir_okay=False))
    @click.option(
        "--tube",
        "tubes",
        multiple=True,
        callback=tube_names,
        help="Also show where this tube goes.",
    )
    @click.option(
        "--against", "old_file", type=click.Path(dir_okay=False), default=None,
        help="The configuration in use now: say which tubes FILE moves, and how many jobs sit "
        "away from their owner under FILE (asks the shards unless --offline).",
    )  # fmt: skip
    @click.option("--offline", is_flag=True, help="With --against: do not ask the shards.")
    def check_config_cmd(
        file: str, tubes: tuple[str, ...], old_file: str | None, offline: bool
    ) -> None:
        """Validate a cluster configuration and print where tubes go."""
        from .router import ConfigError, check_config

        try:
            click.echo(check_config(file, ("default", *tubes)), nl=False)
        except ConfigError as exc:
            raise click.ClickException(str(exc)) from None
        if old_file is None:
            return
        from .core.rebalance import compare_text
        from .router import load_config
        from .router.rebalance import survey

        try:
            old, new = load_config(old_file), load_config(file)
        except ConfigError as exc:
            raise click.ClickException(str(exc)) from None
        plan, found = (None, frozenset[str]()) if offline else survey(new)
        click.echo(compare_text(old, new, {"default", *tubes, *found}, plan), nl=False)

    @cli.command()
    @click.option(
        "-c", "--config", "config_path", required=True,
        type=click.Path(dir_okay=False), help="The cluster configuration (docs/config.md).",
    )  # fmt: skip
    @click.option("--drain", "drain", multiple=True, metavar="NAME",
                  help="Empty this shard too, as if it were marked 'drain: true'.")  # fmt: skip
    @click.option("--dry-run", is_flag=True, help="Report what would move; move nothing.")
    @click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
    @click.option(
        "--journal", "journal_path", type=click.Path(dir_okay=False), default=None,
        help="The journal of moves (default: one per configuration file under "
        "$XDG_STATE_HOME/beanrouter).",
    )  # fmt: skip
    @click.option(
        "--metrics-file", "metrics_path", type=click.Path(dir_okay=False), default=None,
        help="Also write the report in Prometheus' text format here (node_exporter textfile).",
    )  # fmt: skip
    def rebalance(
        config_path: str,
        drain: tuple[str, ...],
        dry_run: bool,
        as_json: bool,
        journal_path: str | None,
        metrics_path: str | None,
    ) -> None:
        """Move jobs to their tube's owner after a configuration change (docs/rebalance.md).

        Exit status: 0 all moved, 1 some left (reserved...), 2 configuration or usage error,
        3 a shard did not answer.
        """
        import json

        from .core.rebalance import EXIT_USAGE
        from .router import ConfigError, load_config
        from .router.rebalance import JournalBusy, default_journal_path
        from .router.rebalance import rebalance as run_rebalance

        try:
            config = load_config(config_path)
        except ConfigError as exc:
            click.echo(f"Error: {exc}", err=True)
            sys.exit(EXIT_USAGE)
        journal = journal_path if journal_path is not None else default_journal_path(config_path)
        try:
            report = run_rebalance(config, drain=drain, dry_run=dry_run, journal_path=journal)
        except (ValueError, JournalBusy, OSError) as exc:
            click.echo(f"Error: {exc}", err=True)
            sys.exit(EXIT_USAGE)
        except KeyboardInterrupt:
            click.echo(
                "\ninterrupted: the journal keeps any open move; run again to finish", err=True
            )
            sys.exit(130)
        if metrics_path is not None and not dry_run:
            import os
            import time

            tmp = f"{metrics_path}.{os.getpid()}.tmp"
            try:
                with open(tmp, "w", encoding="utf-8") as f:
                    f.write(report.prometheus(time.time()))
                os.replace(tmp, metrics_path)
            except OSError as exc:
                click.echo(f"warning: cannot write {metrics_path}: {exc}", err=True)
        if as_json:
            click.echo(json.dumps(report.to_json(), indent=2))
        else:
            click.echo(report.render(), nl=False)
        sys.exit(report.exit_code())

    @cli.command()
    @click.option("-c", "--config", "config_path", type=click.Path(dir_okay=False),
                  help="Ask the shards of this cluster configuration.")  # fmt: skip
    @click.option("--url", help="Ask a running proxy's HTTP port (http://127.0.0.1:PORT).")
    @click.option("--json", "as_json", is_flag=True, help="Print JSON (one document a line).")
    @click.option("--watch", is_flag=True, help="Refresh until ^C.")
    @click.option("--interval", default=2.0, show_default=True, type=click.FloatRange(0.1),
                  help="Seconds between refreshes with --watch.")  # fmt: skip
    def status(
        config_path: str | None, url: str | None, as_json: bool, watch: bool, interval: float
    ) -> None:
        """Show the cluster: shards up or down, jobs by state, tubes and where they live."""
        from .proxy.console.status import ConfigStatus, StatusError, from_url, render

        if (config_path is None) == (url is None):
            raise click.UsageError("give either --config FILE or --url http://HOST:PORT")
        get: Callable[[], dict[str, Any]]
        if config_path is not None:
            from .router import ConfigError
            from .router.config import load_config

            try:
                config = load_config(config_path)
            except ConfigError as exc:
                raise click.ClickException(str(exc)) from None

            source = ConfigStatus(config)  # kept across refreshes: each shard's since, errors
            get = source.overview
        else:
            assert url is not None

            def get() -> dict[str, Any]:
                return from_url(url)

        def show() -> None:
            doc = get()
            if as_json:
                click.echo(json.dumps(doc, separators=(",", ":") if watch else None))
            else:
                if watch and sys.stdout.isatty():
                    click.echo("\x1b[H\x1b[2J", nl=False)
                click.echo(render(doc), nl=False)

        if not watch:
            try:
                show()
            except StatusError as exc:
                raise click.ClickException(str(exc)) from None
            return
        try:
            while True:
                try:
                    show()
                except StatusError as exc:
                    click.echo(f"beanrouter status: {exc}", err=True)
                time.sleep(interval)
        except KeyboardInterrupt:
            return

    cli.main(args=args, prog_name="beanrouter")
