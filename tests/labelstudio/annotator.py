"""A stand-in for a person in Label Studio, for the README journey (tests/test_readme.py): answers every task
of a ``tasks.json`` that ``creative-qa label-next --label-studio`` wrote and writes what Label Studio's JSON
export would hold. The real round trip, against a real server, is ``test_round_trip.py``.

    python annotator.py TASKS.json EXPORT.json

Each task: the pre-filled answers accepted, the first tag without one answered "no", the rest left unanswered.
"""

import json
import sys
from pathlib import Path


def main() -> None:
    tasks = json.loads(Path(sys.argv[1]).read_text())
    names = [
        c.split('"')[1] for c in Path(sys.argv[1]).with_name("label_config.xml").read_text().split("<Choices ")[1:]
    ]
    out = []
    for i, task in enumerate(tasks, 1):
        result = [dict(r) for p in task.get("predictions", []) for r in p["result"]]
        answered = {r["from_name"] for r in result}
        rest = [n for n in names if n not in answered]
        if rest:
            result.append({"from_name": rest[0], "to_name": "image", "type": "choices", "value": {"choices": ["no"]}})
        out.append({"id": i, "data": task["data"], "annotations": [{"id": i, "completed_by": 1, "result": result}]})
    Path(sys.argv[2]).write_text(json.dumps(out))


if __name__ == "__main__":
    main()
