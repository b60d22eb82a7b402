"""A violation's lifecycle: what people did about it (POST .../actions) and everything that happened to
it, the rule's changes and people's actions together (GET .../history). docs/api.md#violation-lifecycle."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException
from pydantic import BaseModel, ConfigDict, Field, model_validator

from api.access.deps import ViolationReader, require
from api.access.keys import ApiKey, Scope
from api.deps import StoreDep, ViolationActionsDep
from api.problems import (
    ALREADY_ACKNOWLEDGED,
    ALREADY_ASSIGNED,
    VIOLATION_DISMISSED,
    ProblemError,
    invalid,
    problem_response_doc,
)
from api.schemas import LifecycleEntryOut, ViolationHistoryOut
from api.violation_actions import Action, ActionRefused, Refusal
from core.models import LifecycleEntry, history_order
from store.base import Store

router = APIRouter(prefix="/v1/violations", tags=["violations"])

ViolationWriter = Annotated[ApiKey, Depends(require(Scope.VIOLATIONS_WRITE))]

_PROBLEM_OF_REFUSAL = {
    Refusal.ALREADY_ACKNOWLEDGED: ALREADY_ACKNOWLEDGED,
    Refusal.ALREADY_ASSIGNED: ALREADY_ASSIGNED,
    Refusal.DISMISSED: VIOLATION_DISMISSED,
}
_NO_VIOLATION: dict[int | str, dict[str, Any]] = {404: problem_response_doc("No violation with that id")}


class ActionIn(BaseModel):
    # An unknown key is refused with the closest known one (api/strict_input.py).
    model_config = ConfigDict(extra="forbid")

    action: Action = Field(description="acknowledge, assign (needs `assignee`), dismiss (as false; needs "
                                       "`note`, the reason) or note (needs `note`).")
    assignee: str | None = Field(None, min_length=1, max_length=200,
                                 description="Only with assign: the department or person.",
                                 examples=["sanitation-futian"])
    note: str | None = Field(None, min_length=1, max_length=2000,
                             description="A note; for dismiss, why it is false. Never put plates here: "
                                         "notes are shown to every reader of the violation.")

    @model_validator(mode="after")
    def _fields_of_the_action(self) -> ActionIn:
        if self.action is Action.ASSIGN and self.assignee is None:
            raise invalid("assignee", "required to assign", location="body")
        if self.action is not Action.ASSIGN and self.assignee is not None:
            raise invalid("assignee", f"only for assign, not {self.action.value}", location="body")
        if self.action in (Action.DISMISS, Action.NOTE) and self.note is None:
            raise invalid("note", f"required to {self.action.value}" + (
                " (the reason it is false)" if self.action is Action.DISMISS else ""), location="body")
        return self


def _entry_out(entry: LifecycleEntry) -> LifecycleEntryOut:
    return LifecycleEntryOut(change=entry.change, time_ms=entry.time_ms, actor=entry.actor,
                             actor_name=entry.actor_name, note=entry.note, assignee=entry.assignee)


def _known(store: Store, violation_id: str) -> None:
    if store.get_violation(violation_id) is None:
        raise HTTPException(404, f"no violation {violation_id!r}")


@router.post("/{violation_id}/actions", status_code=201, response_model=LifecycleEntryOut,
             summary="Acknowledge, assign, dismiss as false or annotate a violation",
             responses={**_NO_VIOLATION, 409: problem_response_doc(
                 "The violation's state does not allow it: already acknowledged, already assigned to that "
                 "assignee, or dismissed (only notes then)")})
def take_action(violation_id: str, body: ActionIn, key: ViolationWriter, store: StoreDep,
                actions: ViolationActionsDep) -> LifecycleEntryOut:
    _known(store, violation_id)
    try:
        entry = actions.record(violation_id, body.action, actor=f"key:{key.key_id}", actor_name=key.name,
                               note=body.note, assignee=body.assignee)
    except ActionRefused as exc:
        raise ProblemError(_PROBLEM_OF_REFUSAL[exc.reason], exc.detail) from exc
    return _entry_out(entry)


@router.get("/{violation_id}/history", response_model=ViolationHistoryOut,
            summary="Everything that happened to a violation, oldest first", responses=_NO_VIOLATION)
def violation_history(violation_id: str, _key: ViolationReader, store: StoreDep,
                      actions: ViolationActionsDep) -> ViolationHistoryOut:
    _known(store, violation_id)
    entries = history_order([*store.violation_history(violation_id), *actions.history(violation_id)])
    return ViolationHistoryOut(violation_id=violation_id, entries=[_entry_out(e) for e in entries])
