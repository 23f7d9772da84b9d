"""Make sure the reference server (Debian's beanstalkd) and the other-language clients are
installed, if that can be done.

Run by ``make test`` before pytest. The real beanstalkd is the oracle of the conformance,
differential and peer tests. When ``/usr/bin/beanstalkd`` is missing and ``$BEANSTALKD_BIN`` is not
set, this installs Debian's package with apt-get, as root or through passwordless sudo, and stops
the service the package may start (tests use their own ports; ``make run`` wants 11300). When that
is not possible it says so in one line and exits 0: tests/conftest.py then skips the reference
comparisons, except under ``CI``, where they fail.

The same goes for the clients in other languages that tests/clients drives through beanrouter:
PHP's pheanstalk and Ruby's beaneater, from Debian (``CLIENT_PACKAGES``), and Node.js's jackd, from
the npm registry (pinned by tests/clients/node/package-lock.json, installed there by ``npm ci``;
Node.js and npm themselves from Debian's ``nodejs`` package when missing).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

DEFAULT = "/usr/bin/beanstalkd"
CLIENT_PACKAGES = ("php-cli", "php-pda-pheanstalk", "ruby", "ruby-beaneater")
PHEANSTALK = "/usr/share/php/Pheanstalk/autoload.php"
NODE_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "clients", "node")
NODE_CLIENTS = ("jackd",)


def clients_present() -> bool:
    """PHP with pheanstalk and Ruby with beaneater, as tests/clients needs them."""
    if shutil.which("php") is None or not os.path.exists(PHEANSTALK):
        return False
    if shutil.which("ruby") is None:
        return False
    probe = subprocess.run(["ruby", "-e", "require 'beaneater'"], capture_output=True, check=False)
    return probe.returncode == 0


def node_clients_present() -> bool:
    """Node.js, with the npm packages of tests/clients/node installed there."""
    if shutil.which("node") is None:
        return False
    modules = os.path.join(NODE_DIR, "node_modules")
    return all(os.path.exists(os.path.join(modules, m, "package.json")) for m in NODE_CLIENTS)


def install_node_clients() -> str | None:
    """``npm ci`` in tests/clients/node (Debian's nodejs first, if npm is missing): None when
    done, else why not."""
    if shutil.which("npm") is None or shutil.which("node") is None:
        failed = _apt_install(("nodejs", "npm"))
        if failed is not None and _apt_install(("nodejs",)) is not None:
            return failed
        if shutil.which("npm") is None:
            return "npm is still missing"
    argv = ["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"]
    done = subprocess.run(
        argv, cwd=NODE_DIR, stdin=subprocess.DEVNULL, capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        return f"npm ci failed: {(done.stderr or done.stdout).strip()[-300:]}"
    return None if node_clients_present() else "npm ci did not install them"


def _root_prefix() -> list[str] | None:
    """How to run a command as root here: [], ["sudo", "-n"], or None (not possible)."""
    if os.geteuid() == 0:
        return []
    if shutil.which("sudo") is None:
        return None
    probe = subprocess.run(["sudo", "-n", "true"], capture_output=True, check=False)
    return ["sudo", "-n"] if probe.returncode == 0 else None


def _quiet(argv: list[str]) -> bool:
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    done = subprocess.run(
        argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, env=env, check=False
    )
    return done.returncode == 0


def _apt_install(packages: tuple[str, ...]) -> str | None:
    """Install Debian packages if possible: None when done, else why not."""
    if shutil.which("apt-get") is None:
        return "no apt-get on this machine"
    root = _root_prefix()
    if root is None:
        return "installing it needs root or passwordless sudo"
    install = [*root, "apt-get", "install", "-y", "-q", "--no-install-recommends", *packages]
    if not _quiet(install) and not (_quiet([*root, "apt-get", "update", "-q"]) and _quiet(install)):
        return f"apt-get install {' '.join(packages)} failed"
    return None


def install() -> str:
    """Install beanstalkd if possible; returns a one-line account of what happened."""
    failed = _apt_install(("beanstalkd",))
    if failed is not None:
        return failed
    root = _root_prefix() or []
    # The package may start a service on 127.0.0.1:11300: stop it, as .ci/run does.
    if os.path.isdir("/run/systemd/system"):
        _quiet([*root, "systemctl", "disable", "--now", "beanstalkd.service", "beanstalkd.socket"])
    elif os.access("/etc/init.d/beanstalkd", os.X_OK):
        _quiet([*root, "/etc/init.d/beanstalkd", "stop"])
    return "installed" if os.access(DEFAULT, os.X_OK) else "apt-get did not install it"


def main() -> int:
    if not clients_present():
        print("make test: installing the PHP and Ruby clients (" + " ".join(CLIENT_PACKAGES) + ")")
        failed = _apt_install(CLIENT_PACKAGES)
        if failed is not None or not clients_present():
            why = failed or "still missing"
            print(f"make test: clients not installed ({why}); tests/clients will skip")
    if not node_clients_present():
        print("make test: installing the Node.js clients (npm ci in tests/clients/node)")
        failed = install_node_clients()
        if failed is not None:
            print(f"make test: Node.js clients not installed ({failed}); their tests will skip")
    chosen = os.environ.get("BEANSTALKD_BIN")
    if chosen:  # the user picked a binary: use it or not, never install over it
        return 0
    if os.access(DEFAULT, os.X_OK):
        return 0
    print("make test: the reference server beanstalkd is missing; installing Debian's package")
    outcome = install()
    if outcome == "installed":
        print(f"make test: installed {DEFAULT}")
    else:
        print(f"make test: beanstalkd not installed ({outcome}); reference comparisons will skip")
    return 0


if __name__ == "__main__":
    sys.exit(main())
