"""The ``beanrouter`` command line: a thin click group over the library.

``beanrouter server [beanstalkd flags]`` hands its arguments to the server's own beanstalkd-style
parser untouched (so it is a drop-in for ``beanstalkd``); it is dispatched before click is even
imported, to keep the server's start-up fast.
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
    _click_main(args)


def _click_main(args: list[str]) -> None:
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

    @cli.command("check-config")
    @click.argument("file", type=click.Path(dir_okay=False))
    @click.option(
        "--tube",
        "tubes",
        multiple=True,
        callback=tube_names,
        help="Also show where this tube goes.",
    )
    def check_config_cmd(file: str, tubes: tuple[str, ...]) -> None:
        """Validate a cluster configuration and print where tubes go."""
        from .router import ConfigError, check_config

        try:
            click.echo(check_config(file, ("default", *tubes)), nl=False)
        except ConfigError as exc:
            raise click.ClickException(str(exc)) from None

    cli.main(args=args, prog_name="beanrouter")
