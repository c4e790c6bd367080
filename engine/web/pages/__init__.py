"""The web console's pages: the contract page modules are written against (core), the
framework that serves them (site), their templates (render) and the table of every page
(routes)."""

from engine.web.pages.core import ANONYMOUS, Handler, Html, Page, PageCall, Redirect, local_path

__all__ = ["ANONYMOUS", "Handler", "Html", "Page", "PageCall", "Redirect", "local_path"]
