"""Named dependency types for the routes."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, HTTPException, Request

from creative_qa.scorer import Scorer
from serving.settings import Settings


def get_scorer(request: Request) -> Scorer:
    scorer = getattr(request.app.state, "scorer", None)
    if scorer is None:
        raise HTTPException(status_code=503, detail="no model is loaded")
    return scorer


def app_settings(request: Request) -> Settings:
    return request.app.state.settings


ScorerDep = Annotated[Scorer, Depends(get_scorer)]
SettingsDep = Annotated[Settings, Depends(app_settings)]
