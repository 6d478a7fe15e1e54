"""Configuration: accounts from TOML, everything else from the environment.

Accounts live in the TOML file named by ``SMSQ_CONFIG`` (default ``./smsq.toml``)::

    [accounts.shop-dxt]
    provider = "dxt"
    base_url = "http://127.0.0.1:8801/"
    username = "demo"
    password_env = "SHOP_DXT_PASSWORD"   # or password_file = "/run/secrets/dxt", or password = "..."
    charset = "gbk"
    signature = "【某某科技】"
    rate_limit = "20/s"
    optout_keywords = ["TD", "退订"]     # replies that put the number on the blocked list
    daily_quota = 50000                  # numbers sent to per Beijing day (default: no quota)

    [accounts.shop-dxt.kinds.marketing]  # this account's own rules for a kind (only narrower windows)
    send_window = "09:00-20:00"

Message kinds (``[kinds.NAME]``, see worker/kinds.py) set the rules of each kind for
every account: ``Settings.kind_rules(account, kind)`` resolves them.

Failover routes (``[routes.NAME]``, see worker/route_config.py) name accounts in order
of preference; a route's name is accepted wherever an account's is.

Every mistake is reported at start-up with the account and the key it concerns,
and so is a database or broker URL smsq cannot use. A password named by
``password_env`` or ``password_file`` is read only when a vendor client needs it
(``Credential``): a command that only reads the database runs without the vendors'
passwords, and the commands that call vendors check them first
(``Settings.require_credentials``). Passwords are wrapped in ``Secret``, so they
never show in a repr, a log line or an exception.

A running process reads the accounts file again when it changed on disk
(``refresh()``: a worker meeting an account it does not know, and every worker's
relay timer): accounts and routes only, validated as at start-up; a file that
does not validate leaves the process on the accounts it has, said in one log
line. The environment's settings (database, broker, timeouts) are read once.
"""

from __future__ import annotations

import codecs
import hashlib
import logging
import os
import re
import threading
import tomllib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError

from smsq.providers import PROVIDERS, Account, Secret, provider_class

from . import logs
from .kinds import DEFAULTS as KIND_DEFAULTS
from .kinds import KindRules, check_kind, check_narrows, kind_defaults, parse_daily_quota, parse_kind_tables, resolve
from .logs import safe_url
from .route_config import Route, parse_routes

log = logging.getLogger("smsq.config")

COMMON_KEYS = {
    "provider",
    "base_url",
    "username",
    "password",
    "password_env",
    "password_file",
    "charset",
    "signature",
    "rate_limit",
    "timeout",
    "poll_interval",
    "balance_alert",
    "optout_keywords",
    "daily_quota",
    "kinds",
}
_RATE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*/\s*(s|sec|second|m|min|minute|h|hour)\s*$")
_PER = {"s": 1, "sec": 1, "second": 1, "m": 60, "min": 60, "minute": 60, "h": 3600, "hour": 3600}


class ConfigError(Exception):
    """The configuration is wrong; the message names the account and the key."""


class UnknownAccountError(ConfigError, KeyError):
    def __str__(self) -> str:  # KeyError would quote the whole message
        return self.args[0]


class Credential(Secret):
    """A password kept elsewhere (an environment variable, a file), read the first time
    it is revealed: when a vendor client is built. ``source`` says where, for equality
    and messages; reading raises ConfigError naming the account and the key."""

    __slots__ = ("source", "_read", "_resolved")

    def __init__(self, source: str, read: Callable[[], str]):
        super().__init__("")  # the password itself is read when first revealed
        self.source, self._read, self._resolved = source, read, False

    @property
    def resolved(self) -> bool:
        return self._resolved

    def reveal(self) -> str:
        if not self._resolved:
            value = self._read()
            logs.remember_secret(value)  # masked from the moment it exists in this process
            self._value = value
            self._resolved = True  # after the value: a thread that sees it resolved sees the value
        return self._value

    def __eq__(self, other: object) -> bool:
        # Read or not, the same source is the same password: an account read again from an
        # unchanged file stays the object in use (and its client), see ``refresh``.
        return isinstance(other, Credential) and other.source == self.source

    def __hash__(self) -> int:
        return hash(self.source)

    def __bool__(self) -> bool:
        return True  # a source is named, whether or not it has been read


@dataclass(frozen=True)
class ConfigVersion:
    """Which accounts file a process runs on: its content's hash and when it was written."""

    digest: str  # the first hex digits of the file's SHA-256 ("" no file)
    modified: datetime | None = None  # the file's mtime, UTC

    def __str__(self) -> str:
        if not self.digest:
            return "no file"
        when = f" of {self.modified:%Y-%m-%d %H:%M:%S} UTC" if self.modified else ""
        return f"{self.digest}{when}"


@dataclass(frozen=True)
class Settings:
    config_path: Path
    database_url: str
    broker_url: str
    redis_url: str | None  # the shared rate limiter; None = in-process limiter
    accounts: Mapping[str, Account] = field(repr=False)
    priority_max: int = 100  # batches up to this many numbers take the priority lane
    send_timeout: float = 300.0  # a chunk 'sending' longer than this becomes 'unknown'
    retry_for: float = 3600.0  # transient failures are retried this long after the chunk's first call
    retry_backoff_max: float = 300.0  # the longest wait between two retries
    max_attempts: int = 0  # an extra cap on vendor calls per chunk; 0: only the time budget counts
    db_retry_for: float = 30.0  # a worker retries writing a vendor's answer this long before spooling it
    # extra vendor calls narrowing one refused chunk may make (tasks/narrowing.py); past them,
    # the numbers still unplaced fail with the vendor's code
    narrow_max_calls: int = 100
    state_dir: Path | None = None  # where smsq writes its own files (spool, local beat schedule)
    spool_dir: Path | None = None  # where answers wait for the database; None: spool/ beside the config
    spool_replay_interval: float = 10.0  # seconds between replays of the spool while the worker runs
    account_hold: float = 300.0  # after an auth/balance failure, the account's other chunks wait this long
    republish_after: float = 600.0  # a pending chunk queued this long ago is published again
    relay_interval: float = 10.0  # seconds between outbox relay runs
    # how long delivery reports are awaited to tell which numbers a vendor refused by count
    # only (dxt b, qxs successCounts): those no report placed by then end failed
    report_wait: float = 172800.0
    config_found: bool = True  # False: SMSQ_CONFIG names no file (commands that send or poll refuse to run)
    home: Path | None = None  # where embedded mode keeps its files
    routes: Mapping[str, Route] = field(default_factory=dict)  # failover routes by name
    config_version: ConfigVersion | None = None  # the accounts file these accounts were read from
    # each kind's rules from the file's [kinds.NAME] tables (worker/kinds.py); accounts' own in their options
    kinds: Mapping[str, KindRules] = field(default_factory=lambda: dict(KIND_DEFAULTS))

    @property
    def embedded(self) -> bool:
        return self.broker_url.startswith("sqla+")

    def require_accounts(self) -> None:
        """Commands that send or poll cannot do anything without the accounts file."""
        if not self.config_found:
            raise ConfigError(
                f"no accounts file at {self.config_path}: set SMSQ_CONFIG to your smsq.toml (see README, Configuration)"
            )
        if not self.accounts:
            raise ConfigError(f"{self.config_path} configures no account: add an [accounts.NAME] table")

    def describe_storage(self) -> str:
        """Where this process keeps its data, said on start-up (passwords hidden)."""
        db = make_url(self.database_url).render_as_string(hide_password=True)
        if self.embedded:
            return (
                f"embedded mode: database {db.removeprefix('sqlite:///')}, broker "
                f"{self.broker_url.removeprefix('sqla+sqlite:///')} (SMSQ_HOME {self.home})"
            )
        broker = (
            make_url(self.broker_url).render_as_string(hide_password=True)
            if "://" in self.broker_url
            else self.broker_url
        )
        return f"distributed mode: database {db}, broker {broker}"

    def account(self, name: str) -> Account:
        try:
            return self.accounts[name]
        except KeyError:
            known = ", ".join(sorted(self.accounts)) or "none configured"
            raise UnknownAccountError(f"unknown account {name!r} (configured in {self.config_path}: {known})") from None

    def route_or_account(self, name: str) -> Route:
        """What a send names: a route, or a single account as a route of one (``cooloff`` None).
        UnknownAccountError lists both accounts and routes."""
        if name in self.routes:
            return self.routes[name]
        if name in self.accounts:
            return Route(name, (name,))
        known = ", ".join(sorted(self.accounts)) or "none configured"
        routes = f"; routes: {', '.join(sorted(self.routes))}" if self.routes else ""
        raise UnknownAccountError(
            f"unknown account or route {name!r} (configured in {self.config_path}: accounts: {known}{routes})"
        )

    def kind_rules(self, account: str, kind: str) -> KindRules:
        """The rules a send of ``kind`` through ``account`` is held to: the kind's, with the
        account's ``[accounts.NAME.kinds.KIND]`` applied. UnknownAccountError for an account
        not configured (a route's name included: ask for the account the batch goes to),
        ValueError for an unknown kind."""
        overrides = self.account(account).options.get("kinds", {})
        return resolve(self.kinds[check_kind(kind)], overrides.get(kind, {}))

    def daily_quota(self, account: str) -> int | None:
        """Numbers ``account`` may send to per Beijing day (None: no quota)."""
        return self.account(account).options.get("daily_quota")

    def cooloff(self, account: str) -> float:
        """Seconds a failed account rests before a probe: the shortest ``cooloff`` of the
        routes naming it, else ``account_hold``."""
        given = [r.cooloff for r in self.routes.values() if account in r.accounts and r.cooloff is not None]
        return min(given) if given else self.account_hold

    def require_credentials(self, names: Iterable[str] | None = None) -> None:
        """Read the passwords of the accounts ``names`` (default: all) now, so that a process
        that will call their vendors stops at start-up on one it cannot read."""
        global _credentials_required
        if names is None:
            _credentials_required = True  # and so of every account a changed file adds (``refresh``)
        for name in self.accounts if names is None else names:
            self.account(name).password.reveal()

    def secrets(self) -> list[str]:
        """The passwords read so far (the others are masked as they are read)."""
        return [
            a.password.reveal()
            for a in self.accounts.values()
            if a.password and (not isinstance(a.password, Credential) or a.password.resolved)
        ]


def parse_rate(value: Any, where: str) -> float:
    """``"20/s"``, ``"600/m"`` or a number (per second) -> calls per second."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0:
        return float(value)
    if isinstance(value, str):
        m = _RATE_RE.match(value)
        if m and float(m.group(1)) > 0:
            return float(m.group(1)) / _PER[m.group(2)]
    raise ConfigError(f'{where}: rate_limit must look like "20/s" or "600/m", not {value!r}')


def _password(name: str, table: Mapping[str, Any], base_dir: Path) -> Secret:
    """The account's credential: written in the file (read now), or a ``Credential`` read
    when first needed. Only the key's shape is checked here."""
    where = f"account {name!r}"
    given = [k for k in ("password", "password_env", "password_file") if k in table]
    if len(given) > 1:
        raise ConfigError(f"{where}: give only one of {', '.join(given)}")
    if not given:
        raise ConfigError(f"{where}: no credential: set password_env (an environment variable) or password_file")
    key = given[0]
    value = table[key]
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{where}: {key} must be a non-empty string")
    if key == "password":
        log.warning("account %r: password is written in the config file; prefer password_env or password_file", name)
        return Secret(value)
    if key == "password_env":

        def from_env() -> str:
            secret = os.environ.get(value)
            if not secret:
                raise ConfigError(f"{where}: password_env names {value}, which is not set in the environment")
            return secret

        return Credential(f"password_env {value}", from_env)
    path = Path(value) if Path(value).is_absolute() else base_dir / value

    def from_file() -> str:
        try:
            secret = path.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(f"{where}: password_file {path} cannot be read: {exc.strerror}") from None
        if not secret:
            raise ConfigError(f"{where}: password_file {path} is empty")
        return secret

    return Credential(f"password_file {path}", from_file)


def _smsq_options(where: str, table: Mapping[str, Any]) -> dict[str, Any]:
    """The account keys smsq itself reads, any provider: polling, balance alert, opt-out."""
    options: dict[str, Any] = {}
    if "poll_interval" in table:
        interval = table["poll_interval"]
        if not isinstance(interval, (int, float)) or interval < 30:
            raise ConfigError(f"{where}: poll_interval must be a number of seconds, at least 30")
        options["poll_interval"] = float(interval)
    if "balance_alert" in table:
        alert = table["balance_alert"]
        if not isinstance(alert, (int, float)) or isinstance(alert, bool) or alert < 0:
            raise ConfigError(f"{where}: balance_alert must be a number (warn when the balance is under it)")
        options["balance_alert"] = float(alert)
    if "optout_keywords" in table:
        keywords = table["optout_keywords"]
        if not isinstance(keywords, list) or not all(isinstance(k, str) and k.strip() for k in keywords):
            raise ConfigError(
                f'{where}: optout_keywords must be a list of words, e.g. ["TD", "退订"] '
                f"(an empty list turns opt-out off)"
            )
        options["optout_keywords"] = tuple(keywords)
    return options


def _account_kinds(
    name: str, table: Mapping[str, Any], kinds: Mapping[str, KindRules], source: Path | None
) -> dict[str, Any]:
    """The account's ``daily_quota`` and its own rules per kind ``[accounts.NAME.kinds.KIND]``
    (only what it sets: an account keeps the file's later changes to the other rules)."""
    where = f"{source}: account {name!r}" if source else f"account {name!r}"
    options: dict[str, Any] = {}
    try:
        if "daily_quota" in table:
            options["daily_quota"] = parse_daily_quota(table["daily_quota"], f"[accounts.{name}] daily_quota")
        if "kinds" in table:
            overrides = parse_kind_tables(table["kinds"], f"accounts.{name}.kinds")
            check_narrows(kinds, overrides, f"accounts.{name}.kinds")
            options["kinds"] = overrides
    except ValueError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    return options


def parse_account(
    name: str,
    table: Mapping[str, Any],
    base_dir: Path,
    *,
    kinds: Mapping[str, KindRules] = KIND_DEFAULTS,
    source: Path | None = None,
) -> Account:
    """One ``[accounts.NAME]`` table. ``kinds``: the file's rules per kind, which the account's
    own may only narrow; ``source``: the file, named in the messages about them."""
    where = f"account {name!r}"
    if not isinstance(table, Mapping):
        raise ConfigError(f"{where}: must be a table ([accounts.{name}])")
    provider = table.get("provider")
    if provider not in PROVIDERS:
        raise ConfigError(f"{where}: provider {provider!r} is unknown; one of: {', '.join(sorted(PROVIDERS))}")
    cls = provider_class(provider)
    allowed = COMMON_KEYS | set(cls.option_keys)
    for key in table:
        if key not in allowed:
            raise ConfigError(
                f"{where}: unknown key {key!r} for provider {provider!r}; allowed: {', '.join(sorted(allowed))}"
            )
    for key in ("base_url", "username"):
        if not isinstance(table.get(key), str) or not table[key]:
            raise ConfigError(f"{where}: {key} is required")
    if not table["base_url"].startswith(("http://", "https://")):
        raise ConfigError(f"{where}: base_url must start with http:// or https://")
    charset = table.get("charset")
    if charset is not None:
        try:
            codecs.lookup(charset)
        except (LookupError, TypeError):
            raise ConfigError(f"{where}: charset {charset!r} is not a known encoding") from None
    signature = table.get("signature")
    if signature is not None and not re.fullmatch(r"【[^【】]{1,20}】", str(signature)):
        raise ConfigError(f"{where}: signature must look like 【某某科技】, not {signature!r}")
    timeout = table.get("timeout", 15)
    if not isinstance(timeout, (int, float)) or timeout <= 0:
        raise ConfigError(f"{where}: timeout must be a positive number of seconds")
    options = {k: v for k, v in table.items() if k in cls.option_keys}
    try:
        cls.validate_options(options)
    except ValueError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    options.update(_smsq_options(where, table))
    options.update(_account_kinds(name, table, kinds, source))
    return Account(
        name=name,
        provider=provider,
        base_url=table["base_url"],
        username=table["username"],
        password=_password(name, table, base_dir),
        charset=charset,
        signature=signature,
        rate_limit=parse_rate(table.get("rate_limit", "10/s"), where),
        timeout=float(timeout),
        options=options,
    )


def _read_config(path: Path, raw: bytes | None = None) -> dict[str, Any]:
    """The file's tables (``raw``: its bytes, already read)."""
    if raw is None:
        if not path.exists():
            return {}
        raw = path.read_bytes()
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    unknown = set(data) - {"accounts", "routes", "kinds"}
    if unknown:
        raise ConfigError(
            f"{path}: unknown top-level table(s) {', '.join(sorted(unknown))}; accounts go under "
            f"[accounts.NAME], failover routes under [routes.NAME], message kinds under [kinds.NAME]"
        )
    return data


def _kinds_of(path: Path, data: Mapping[str, Any]) -> dict[str, KindRules]:
    """Every kind's rules: the defaults with the file's ``[kinds.NAME]`` tables applied."""
    try:
        return kind_defaults(parse_kind_tables(data.get("kinds"), "kinds"))
    except ValueError as exc:
        raise ConfigError(f"{path}: {exc}") from None


def _accounts_of(path: Path, data: Mapping[str, Any], kinds: Mapping[str, KindRules]) -> dict[str, Account]:
    return {
        name: parse_account(name, table, path.parent, kinds=kinds, source=path)
        for name, table in (data.get("accounts") or {}).items()
    }


def load_accounts(path: Path) -> dict[str, Account]:
    data = _read_config(path)
    return _accounts_of(path, data, _kinds_of(path, data))


@dataclass(frozen=True)
class _FileContent:
    """What the accounts file configures, parsed once."""

    accounts: dict[str, Account]
    routes: dict[str, Route]
    kinds: dict[str, KindRules]


def _parse_file(path: Path, raw: bytes) -> _FileContent:
    """Accounts, routes and kinds from the file's bytes, parsed once."""
    data = _read_config(path, raw)
    kinds = _kinds_of(path, data)
    accounts = _accounts_of(path, data, kinds)
    return _FileContent(accounts, parse_routes(data.get("routes"), accounts, ConfigError), kinds)


def _file_state(path: Path) -> tuple | None:
    """What tells cheaply that the file may have changed (None: no file)."""
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_mtime_ns, st.st_size, st.st_ino


def _read_file(path: Path) -> tuple[bytes | None, ConfigVersion]:
    """The accounts file's bytes (None: no file) and their version."""
    try:
        raw = path.read_bytes()
        modified = datetime.fromtimestamp(path.stat().st_mtime, UTC).replace(microsecond=0)
    except FileNotFoundError:
        return None, ConfigVersion("")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot be read: {exc.strerror}") from None
    return raw, ConfigVersion(hashlib.sha256(raw).hexdigest()[:12], modified)


def _load_file(path: Path) -> tuple[_FileContent, ConfigVersion]:
    """Accounts, routes and kinds from one read of the file, and its version."""
    raw, version = _read_file(path)
    content = _parse_file(path, raw) if raw is not None else _FileContent({}, {}, kind_defaults({}))
    return content, version


def env_secret(name: str) -> str | None:
    """``name`` from the environment, or else the content of the file ``name_FILE``
    names (a Docker secret: a URL or password that must not sit in the
    environment, where ``docker inspect`` and crash reports show it)."""
    value = os.environ.get(name)
    if value:
        return value
    path = os.environ.get(f"{name}_FILE")
    if not path:
        return None
    try:
        value = Path(path).read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigError(f"{name}_FILE: {path} cannot be read: {exc.strerror}") from None
    if not value:
        raise ConfigError(f"{name}_FILE: {path} is empty")
    return value


# The bulk paths (COPY, ON CONFLICT DO NOTHING) are written for these two.
DATABASES = {"postgresql": "PostgreSQL (postgresql://user@host/db)", "sqlite": "SQLite (sqlite:///path/smsq.db)"}
BROKERS = ("redis://", "rediss://", "amqp://", "amqps://", "pyamqp://")  # and sqla+<database URL>: embedded
REDIS_SCHEMES = ("redis://", "rediss://", "unix://")


def check_database_url(url: str, name: str) -> None:
    """A URL smsq can open: it parses, names PostgreSQL or SQLite, and its driver imports.
    Otherwise ConfigError, the URL shown without its password: a mistake, not an outage."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise ConfigError(
            f"{name} is not a database URL: {safe_url(url)!r}; e.g. {' or '.join(DATABASES.values())}"
        ) from None
    kind = parsed.get_backend_name()
    if kind not in DATABASES:
        raise ConfigError(
            f"{name} {safe_url(url)}: smsq keeps its data in {' or '.join(DATABASES.values())}, not {kind!r}"
        )
    try:
        parsed.get_dialect().import_dbapi()
    except (NoSuchModuleError, ImportError) as exc:
        raise ConfigError(
            f"{name} {safe_url(url)}: its driver {parsed.drivername!r} cannot be loaded ({exc}); "
            f"postgresql:// uses psycopg 3, which smsq installs"
        ) from None


def check_broker_url(url: str) -> None:
    """A broker smsq runs on; a misspelt scheme is a mistake, never taken for a broker outage."""
    if url.startswith("sqla+"):
        check_database_url(url[len("sqla+") :], "SMSQ_BROKER_URL (after sqla+)")
    elif not url.startswith(BROKERS):
        raise ConfigError(
            f"SMSQ_BROKER_URL {safe_url(url)!r} is not a broker smsq knows: use "
            f"{', '.join(BROKERS)} or sqla+sqlite:///FILE (embedded)"
        )


def _redis_url(broker_url: str) -> str | None:
    explicit = env_secret("SMSQ_REDIS_URL")
    if explicit:
        if not explicit.startswith(REDIS_SCHEMES):
            raise ConfigError(
                f"SMSQ_REDIS_URL {safe_url(explicit)!r} is not a Redis URL: use {', '.join(REDIS_SCHEMES)}"
            )
        return explicit
    return broker_url if broker_url.startswith(("redis://", "rediss://")) else None


def _number(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number, not {raw!r}") from None


def smsq_home(config_path: Path) -> Path:
    """Embedded mode's files live in ``SMSQ_HOME``, or next to the config file: never in
    whatever directory a command happens to be run from (a send from elsewhere would
    land in a database no worker reads)."""
    home = os.environ.get("SMSQ_HOME")
    return Path(home).expanduser().resolve() if home else config_path.parent


def _state_dir(home: Path) -> Path:
    """Where smsq writes the files it keeps besides the embedded database (a worker's
    spool, beat's local schedule): ``SMSQ_STATE_DIR``; else the directory systemd made
    for the unit (``StateDirectory=`` sets ``$STATE_DIRECTORY``), since the config's
    directory is read-only under ``ProtectSystem=strict``; else ``SMSQ_HOME``."""
    given = os.environ.get("SMSQ_STATE_DIR") or os.environ.get("STATE_DIRECTORY", "").split(":")[0]
    return Path(given).expanduser().resolve() if given else home


def _spool_dir(state_dir: Path) -> Path:
    """Where a worker keeps vendor answers the database could not take: ``SMSQ_SPOOL_DIR``,
    or ``spool/`` in the state directory."""
    given = os.environ.get("SMSQ_SPOOL_DIR")
    return Path(given).expanduser().resolve() if given else state_dir / "spool"


def load_settings() -> Settings:
    path = Path(os.environ.get("SMSQ_CONFIG", "smsq.toml")).expanduser().resolve()
    home = smsq_home(path)
    database_url = env_secret("SMSQ_DATABASE_URL") or f"sqlite:///{home / 'smsq.db'}"
    if database_url.startswith("postgresql://"):
        database_url = "postgresql+psycopg://" + database_url[len("postgresql://") :]
    broker_url = env_secret("SMSQ_BROKER_URL") or f"sqla+sqlite:///{home / 'smsq-broker.db'}"
    check_database_url(database_url, "SMSQ_DATABASE_URL")
    check_broker_url(broker_url)
    content, version = _load_file(path)
    state_dir = _state_dir(home)
    return Settings(
        config_found=path.is_file(),
        home=home,
        config_path=path,
        database_url=database_url,
        broker_url=broker_url,
        redis_url=_redis_url(broker_url),
        accounts=content.accounts,
        routes=content.routes,
        kinds=content.kinds,
        config_version=version,
        priority_max=int(_number("SMSQ_PRIORITY_MAX", 100)),
        send_timeout=_number("SMSQ_SEND_TIMEOUT", 300),
        retry_for=_number("SMSQ_RETRY_FOR", 3600),
        retry_backoff_max=_number("SMSQ_RETRY_BACKOFF_MAX", 300),
        max_attempts=int(_number("SMSQ_MAX_ATTEMPTS", 0)),
        db_retry_for=_number("SMSQ_DB_RETRY_FOR", 30),
        narrow_max_calls=int(_number("SMSQ_NARROW_MAX_CALLS", 100)),
        state_dir=state_dir,
        spool_dir=_spool_dir(state_dir),
        spool_replay_interval=_number("SMSQ_SPOOL_REPLAY_INTERVAL", 10),
        account_hold=_number("SMSQ_ACCOUNT_HOLD", 300),
        republish_after=_number("SMSQ_REPUBLISH_AFTER", 600),
        relay_interval=_number("SMSQ_RELAY_INTERVAL", 10),
        report_wait=_number("SMSQ_REPORT_WAIT", 172800),
    )


_lock = threading.Lock()
_current: Settings | None = None
_UNREAD = ("unread",)  # no stat taken with the read: the first refresh compares the file's hash
_seen: tuple | None = _UNREAD  # the file's stat when it was last read or found unchanged (None: no file)
_credentials_required = False  # this process calls every account's vendor (worker, beat)
_refused: str | None = None  # the digest of a changed file that did not validate, said once


def settings() -> Settings:
    """The process's settings, read once; ``refresh()`` reads the accounts again. Tests
    call ``settings.cache_clear()`` after changing env."""
    current = _current
    if current is None:
        with _lock:
            current = _current
            if current is None:
                current = _install(load_settings())
    return current


def _install(conf: Settings, seen: tuple | None = _UNREAD) -> Settings:
    """``seen``: the file's stat taken before it was read."""
    global _current, _seen
    _current, _seen = conf, seen
    return conf


def forget_settings() -> None:
    """The next ``settings()`` reads the environment and the accounts file again."""
    global _current, _seen, _refused, _credentials_required
    with _lock:
        _current, _seen, _refused, _credentials_required = None, _UNREAD, None, False


# The name functools.lru_cache gives it, which the tests use; a function attribute mypy
# cannot see, so code of the package calls forget_settings().
settings.cache_clear = forget_settings  # type: ignore[attr-defined]


def _unchanged_kept(conf: Settings, accounts: dict[str, Account]) -> dict[str, Account]:
    """``accounts``, each unchanged one the very object in use, so nothing keyed on it is rebuilt."""
    return {
        name: conf.accounts[name] if conf.accounts.get(name) == account else account
        for name, account in accounts.items()
    }


def refresh() -> Settings:
    """The settings, with the accounts and routes read again if the accounts file changed
    on disk since (its stat, then its hash). The new file is validated whole, as at
    start-up; one that does not validate leaves the settings as they are (logged once
    per version of the file). Settings are immutable: a call in flight keeps the
    accounts it started with; an account that did not change stays the same object,
    so its HTTP client and rate limit carry on untouched."""
    global _refused
    conf = settings()
    if _file_state(conf.config_path) == _seen:  # the common case: one stat, no lock
        return conf
    with _lock:
        conf = _current or conf
        path, state = conf.config_path, _file_state(conf.config_path)
        if state == _seen:
            return conf
        try:
            raw, version = _read_file(path)
            if version.digest == (conf.config_version or ConfigVersion("")).digest:  # touched, not changed
                _refused = None
                _install(conf, state)
                return conf
            if raw is None:  # moved away, or being replaced: no reason to forget every account
                raise ConfigError(f"{path} is not there any more")
            content = _parse_file(path, raw)
            accounts = _unchanged_kept(conf, content.accounts)
            if _credentials_required:  # a worker or beat: a password it cannot read refuses the file, as at start
                for name, account in accounts.items():
                    if account is not conf.accounts.get(name):
                        account.password.reveal()
        except ConfigError as exc:
            if str(exc) != _refused:
                _refused = str(exc)
                log.error(
                    "%s changed but cannot be used: %s; this process keeps the accounts it read before (version %s)",
                    path,
                    exc,
                    conf.config_version,
                )
            return conf
        _refused = None
        new = replace(
            conf,
            accounts=accounts,
            routes=content.routes,
            kinds=content.kinds,
            config_version=version,
            config_found=True,
        )
        logs.keep_masking(new.secrets())
        _install(new, state)
    added = sorted(set(accounts) - set(conf.accounts))
    changed = sorted(n for n in set(accounts) & set(conf.accounts) if accounts[n] is not conf.accounts[n])
    removed = sorted(set(conf.accounts) - set(accounts))
    log.warning(
        "%s changed (version %s): accounts and routes read again; added: %s; changed: %s; removed: %s",
        path,
        version,
        ", ".join(added) or "none",
        ", ".join(changed) or "none",
        ", ".join(removed) or "none",
    )
    return new


def refused() -> str | None:
    """Why the accounts file, changed on disk, could not be read again (None: it could)."""
    return _refused


def knowing(name: str) -> Settings:
    """The settings, read again from the file first if they know no account or route
    ``name`` (one added to the file since this process read it)."""
    conf = settings()
    if not isinstance(name, str) or name in conf.accounts or name in conf.routes:
        return conf
    return refresh()
