"""A running engine with the web console for the console tests: users of each role, a file
destination, and `Visitor`, a cookie-keeping HTTP client that does not follow redirects (so the
tests see each 302/303, its `Location` and its `Set-Cookie`)."""

from __future__ import annotations

import http.client
import re
import ssl
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any

import pytest
from enginectl import Engine, seed_users, write_config

USERS = (("vic", "viewer"), ("carol", "coordinator"), ("ops", "operator"))


def password(name: str) -> str:
    return f"{name} password"


@dataclass
class Console:
    """The engine, its web address, its database URL and a bearer token per user."""

    engine: Engine
    host: str
    port: int
    url: str
    tokens: dict[str, str]
    tls: ssl.SSLContext | None = None

    def visitor(self) -> Visitor:
        return Visitor(self)

    def stop(self) -> None:
        self.engine.stop()


def start_console(directory: Path, tls: dict[str, str] | None = None,
                  cafile: Path | None = None) -> Console:
    """A new engine (SQLite in `directory`) with the users of USERS and a `files` destination."""
    url = f"sqlite:///{directory / 'engine.db'}"
    tokens = seed_users(url, USERS, password)
    listen: dict[str, Any] = {"listen": {"host": "127.0.0.1", "port": 0}}
    if tls is not None:
        listen["tls"] = tls
    top = {"http": listen,
           "destinations": [{"name": "files", "type": "file", "directory": str(directory / "out")}],
           "routes": [{"name": "all", "from": "referrals", "to": ["files"]}]}
    engine = Engine(write_config(directory, url, top)).start()
    port = engine.wait_for("http.listening")[0]["port"]
    context = ssl.create_default_context(cafile=str(cafile)) if cafile else None
    return Console(engine, "127.0.0.1", port, url, tokens, context)


@dataclass
class Reply:
    status: int
    headers: http.client.HTTPMessage
    body: str

    @property
    def location(self) -> str | None:
        return self.headers.get("location")

    def cookies(self) -> dict[str, Any]:
        """The Set-Cookie headers by cookie name (http.cookies morsels)."""
        jar: SimpleCookie = SimpleCookie()
        for header in self.headers.get_all("set-cookie") or []:
            jar.load(header)
        return dict(jar)

    def set_cookie_header(self, name: str) -> str:
        found = [h for h in self.headers.get_all("set-cookie") or [] if h.startswith(name + "=")]
        assert len(found) == 1, self.headers.get_all("set-cookie")
        return found[0]

    def csrf(self) -> str:
        """The CSRF token of the page's first form."""
        match = re.search(r'name="csrf" value="([^"]+)"', self.body)
        assert match, self.body[:500]
        return match.group(1)


@dataclass
class Visitor:
    """One browser-like client: keeps cookies, never follows redirects."""

    console: Console
    cookies: dict[str, str] = field(default_factory=dict)

    def request(self, method: str, path: str, form: dict[str, str] | None = None,
                headers: dict[str, str] | None = None) -> Reply:
        c = self.console
        conn: http.client.HTTPConnection = (
            http.client.HTTPSConnection(c.host, c.port, context=c.tls, timeout=10) if c.tls
            else http.client.HTTPConnection(c.host, c.port, timeout=10))
        sent = dict(headers or {})
        if self.cookies:
            sent["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        body = None
        if form is not None:
            body = urllib.parse.urlencode(form).encode()
            sent.setdefault("Content-Type", "application/x-www-form-urlencoded")
        try:
            conn.request(method, path, body=body, headers=sent)
            response = conn.getresponse()
            reply = Reply(response.status, response.headers, response.read().decode())
        finally:
            conn.close()
        for name, morsel in reply.cookies().items():
            if morsel["max-age"] == "0":
                self.cookies.pop(name, None)
            else:
                self.cookies[name] = morsel.value
        return reply

    def get(self, path: str) -> Reply:
        return self.request("GET", path)

    def post(self, path: str, form: dict[str, str], headers: dict[str, str] | None = None
             ) -> Reply:
        return self.request("POST", path, form, headers)

    def login(self, name: str, secret: str | None = None, next_path: str = "/") -> Reply:
        """Open the login form, then send it."""
        token = self.get("/login").csrf()
        return self.post("/login", {"csrf": token, "name": name, "next": next_path,
                                    "password": password(name) if secret is None else secret})


@pytest.fixture(name="console", scope="module")
def console_fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Console]:
    """One engine for a test module (import this fixture into the module to use it)."""
    console = start_console(tmp_path_factory.mktemp("console"))
    try:
        yield console
    finally:
        console.stop()
