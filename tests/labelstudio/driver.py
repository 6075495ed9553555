"""Drives a real Label Studio server with its own SDK, as a team would: run by Label Studio's virtual environment
(``make label-studio``), not the project's, so its pins never meet ours.

    python driver.py PLAN.json

PLAN: ``base_url``, ``token``, ``label_config`` and ``tasks`` (files ``creative-qa label-next`` wrote),
``answers``: ``[{"task": i, "user": "owner"|"annotator", "choices": {tag: "yes"|"no"}, "quality": q|null}]``
(``task`` is the index in the tasks file), and ``export``: where the project's JSON export goes. Prints a JSON
line: the project id, the task ids, and how many tasks came back with pre-annotations.
"""

import json
import sys
from pathlib import Path

from label_studio_sdk import LabelStudio


def main() -> None:
    plan = json.loads(Path(sys.argv[1]).read_text())
    ls = LabelStudio(base_url=plan["base_url"], api_key=plan["token"])
    project = ls.projects.create(title="creative-qa round trip", label_config=Path(plan["label_config"]).read_text())
    tasks = json.loads(Path(plan["tasks"]).read_text())
    ls.projects.import_tasks(id=project.id, request=tasks)
    ids = [t.id for t in ls.tasks.list(project=project.id)]
    annotator = ls.users.create(username="annotator", email="annotator@example.com", password="annotator-pass-1")
    users = {"owner": ls.users.whoami().id, "annotator": annotator.id}
    for a in plan["answers"]:
        result = [
            {"from_name": tag, "to_name": "image", "type": "choices", "value": {"choices": [choice]}}
            for tag, choice in a["choices"].items()
        ]
        if a.get("quality") is not None:
            result.append(
                {"from_name": "quality", "to_name": "image", "type": "number", "value": {"number": a["quality"]}}
            )
        ls.annotations.create(id=ids[a["task"]], result=result, completed_by=users[a["user"]])
    exported = ls.projects.exports.as_json(project.id)
    Path(plan["export"]).write_text(json.dumps(exported, default=str))
    with_predictions = sum(1 for t in exported if t.get("predictions"))
    print(json.dumps({"project": project.id, "tasks": ids, "users": users, "with_predictions": with_predictions}))


if __name__ == "__main__":
    main()
