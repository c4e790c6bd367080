"""The queues page (`/queues`, viewer and up): each destination's queue as `hl7-engine queue`
shows it, with pause/resume/retry/release buttons for operators (each asks to confirm, carries
the CSRF token, and runs the API's action, engine.web.actions, so it is audited with the user's
name).  After an action the browser comes back to `/queues`, which says what was done."""

from __future__ import annotations

from dataclasses import replace
from typing import Any
from urllib.parse import urlencode

from engine.outbound.views import queue_state
from engine.web import actions
from engine.web.pages.core import Html, Page, PageCall, Redirect

VERBS = {"pause": ("paused", actions.pause), "resume": ("resumed", actions.resume),
         "retry": ("asked to retry now", actions.retry),
         "release": ("released (its head moved to the dead letters)", actions.release)}


def queues(page: PageCall) -> Html:
    """`GET /queues`: every destination's queue, and what the last action did."""
    call = page.call
    rows = queue_state(call.db, call.config.destinations, call.now)
    names = {str(r["destination"]) for r in rows}
    done, name = call.params.get("done", ""), call.params.get("destination", "")
    flash = f"{name}: {VERBS[done][0]}." if done in VERBS and name in names else None
    return Html("queues.html", {"queues": rows, "flash": flash, "verbs": tuple(VERBS),
                                "may_act": call.user.may("operator"),
                                "show_errors": call.user.may("operator")})


def _action(verb: str) -> Any:
    def act(page: PageCall) -> Redirect:
        call = page.call
        VERBS[verb][1](replace(call, body={}))
        query = urlencode({"done": verb, "destination": call.args[0]})
        return Redirect(f"/queues?{query}")

    act.__name__ = act.__qualname__ = verb
    act.__doc__ = f"`POST /queues/NAME/{verb}`: the API's {verb} action, audited."
    return act



PAGES: tuple[Page, ...] = (
    (("queues",), "GET", "viewer", queues),
    *((("queues", "*", verb), "POST", "operator", _action(verb)) for verb in VERBS),
)
